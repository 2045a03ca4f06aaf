"""order line items, order total, stored model files

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Line items get their own table (queryable: sales per catalog item) while ``orders.data`` keeps
the whole conversation as JSON; ``orders.total`` and ``orders.currency`` make the sum visible
to SQL and to operators without parsing JSON. Money is NUMERIC(12, 2), never a float.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("total", sa.Numeric(12, 2), nullable=True))
        batch_op.add_column(sa.Column("currency", sa.String(length=3), nullable=True))

    op.create_table(
        "order_items",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit", sa.String(length=32), server_default="", nullable=False),
        sa.Column("unit_price", sa.Numeric(12, 2), nullable=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_items_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_items")),
        sa.UniqueConstraint("order_id", "position", name=op.f("uq_order_items_order_id_position")),
    )
    with op.batch_alter_table("order_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_order_items_item_id"), ["item_id"], unique=False)

    op.create_table(
        "order_files",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_files_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_files")),
        sa.UniqueConstraint("order_id", "position", name=op.f("uq_order_files_order_id_position")),
    )
    with op.batch_alter_table("order_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_order_files_checksum"), ["checksum"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("order_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_files_checksum"))
    op.drop_table("order_files")
    with op.batch_alter_table("order_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_items_item_id"))
    op.drop_table("order_items")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("currency")
        batch_op.drop_column("total")
