"""Reading orders for operators (CLI and admin API), on any database, through SQLAlchemy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from orderbot.orders.models import Order
from orderbot.storage.schema import orders

__all__ = ["OrderRepository"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _order(row: Any) -> Order:
    return Order(
        id=row.id,
        client_id=row.client_id,
        channel=row.channel,
        source=row.source,
        phone=row.phone,
        address=row.address,
        quantity=row.quantity,
        status=row.status,
        language=row.language,
        created_at=_iso(row.created_at),
        updated_at=_iso(row.updated_at),
        data=orjson.loads(row.data or "{}"),
    )


class OrderRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def list(self, *, status: str | None = None, limit: int = 50) -> list[Order]:
        """Newest first."""
        query = select(orders).order_by(orders.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(orders.c.status == status)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_order(r) for r in rows]

    async def get(self, order_id: int) -> Order | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(orders).where(orders.c.id == order_id))).first()
        return None if row is None else _order(row)
