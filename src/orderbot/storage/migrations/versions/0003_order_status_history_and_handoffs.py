"""order status history, the customer's route on orders, operator handoffs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

``order_status_history`` records every status change (from, to, note, who, when), so tracking
answers and operators see how an order moved. ``orders.route`` keeps what the channel needs to
reach the customer again (Chat2Desk transport and channel id) for status notifications.
``handoffs`` holds the conversations an operator has taken over: while a row exists the bot
stays silent for that client; ``until`` is when it takes the conversation back by itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("route", sa.Text(), server_default="{}", nullable=False))

    op.create_table(
        "order_status_history",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=True),
        sa.Column("to_status", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("actor", sa.String(length=100), server_default="", nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_status_history_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_status_history")),
    )
    with op.batch_alter_table("order_status_history", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_order_status_history_order_id_id"), ["order_id", "id"], unique=False
        )

    op.create_table(
        "handoffs",
        sa.Column("client_key", sa.String(length=150), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.Column("until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("client_key", name=op.f("pk_handoffs")),
    )
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_handoffs_until"), ["until"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_handoffs_until"))
    op.drop_table("handoffs")
    with op.batch_alter_table("order_status_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_status_history_order_id_id"))
    op.drop_table("order_status_history")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("route")
