"""operators' chat: a Telegram forum topic per handed-off customer

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

``operator_topics`` maps a customer (``client_key``) to the topic of the operators' Telegram
supergroup (``OPERATOR_CHAT_ID``) that holds their conversation, and back (``thread_id``), with
the route to reach the customer again. Written by the sender when it creates the topic; the
topic is reused at the customer's next handoff. (The distributed profile keeps the same map in
Redis; the table exists there too, unused.)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "operator_topics",
        sa.Column("client_key", sa.String(length=150), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=False),
        sa.Column("route", sa.Text(), server_default="{}", nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("client_key", name=op.f("pk_operator_topics")),
        sa.UniqueConstraint("thread_id", name=op.f("uq_operator_topics_thread_id")),
    )


def downgrade() -> None:
    op.drop_table("operator_topics")
