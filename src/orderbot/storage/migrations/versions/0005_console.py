"""the web console: operator accounts, sessions, failed logins, order notes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

``operators`` are named console accounts (role admin or operator, an argon2id hash);
``console_sessions`` the signed-in browsers (the SHA-256 of the cookie's token, the CSRF token,
created and last seen, for the absolute and idle timeouts); ``login_failures`` the failed logins
counted per account and per address for throttling; ``order_notes`` operators' internal notes;
``order_status_history.note_public``: the change's note was told to the customer.
``ix_orders_status_id`` serves the board filtered by status; two indexes on
``dialog_outcomes`` cover the console's numbers for a period (counts per
outcome and step; the median time to order).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
        sa.UniqueConstraint("name", name=op.f("uq_operators_name")),
    )
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("operator_id", sa.BigInteger(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), server_default="", nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_console_sessions_operator_id_operators"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_console_sessions")),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_console_sessions_operator_id"), ["operator_id"], unique=False
        )
    op.create_table(
        "login_failures",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_failures_scope_created_at"), ["scope", "created_at"], unique=False
        )
    op.create_table(
        "order_notes",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_notes_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_notes")),
    )
    with op.batch_alter_table("order_notes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_order_notes_order_id_id"), ["order_id", "id"], unique=False
        )

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_status_id", ["status", "id"], unique=False)
    with op.batch_alter_table("order_status_history", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("note_public", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("dialog_outcomes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_dialog_outcomes_steps", ["outcome", "last_step", "ended_at"], unique=False
        )
        batch_op.create_index(
            "ix_dialog_outcomes_durations",
            ["outcome", "duration_seconds", "ended_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("dialog_outcomes", schema=None) as batch_op:
        batch_op.drop_index("ix_dialog_outcomes_durations")
        batch_op.drop_index("ix_dialog_outcomes_steps")
    with op.batch_alter_table("order_status_history", schema=None) as batch_op:
        batch_op.drop_column("note_public")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_status_id")
    with op.batch_alter_table("order_notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_notes_order_id_id"))
    op.drop_table("order_notes")
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_failures_scope_created_at"))
    op.drop_table("login_failures")
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_console_sessions_operator_id"))
    op.drop_table("console_sessions")
    op.drop_table("operators")
