"""Orders as operators read them on the distributed profile: the columns read from PostgreSQL,
the dictionary an order becomes (the same shape as the embedded store), and one order's details
with its items, files and status history.

Separate from :mod:`orderbot.desk.postgres_admin` (the admin class and its status changes) so
that the row shapes can be read on their own; also holds the ``BackendUnavailable`` translation
every part of the admin uses.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from orderbot.errors import BackendUnavailable
from orderbot.storage.schema import order_files, order_items, order_status_history, orders

__all__: list[str] = []


def _unavailable(what: str, exc: BaseException) -> BackendUnavailable:
    return BackendUnavailable(f"{what}: {type(exc).__name__}")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _money(value: Any) -> str | None:
    return None if value is None else f"{Decimal(str(value)):.2f}"


_ORDER_COLUMNS = (
    orders.c.id,
    orders.c.client_id,
    orders.c.channel,
    orders.c.source,
    orders.c.phone,
    orders.c.address,
    orders.c.quantity,
    orders.c.status,
    orders.c.language,
    orders.c.data,
    orders.c.created_at,
    orders.c.updated_at,
    orders.c.total,
    orders.c.currency,
)


def _order_dict(row: Any) -> dict[str, Any]:
    """An order as the admin API and the CLI show it (the same shape as the embedded store)."""
    return {
        "id": row.id,
        "client_id": row.client_id,
        "channel": row.channel,
        "source": row.source,
        "phone": row.phone,
        "address": row.address,
        "quantity": row.quantity,
        "status": row.status,
        "language": row.language,
        "data": orjson.loads(row.data or "{}"),
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "total": _money(row.total),
        "currency": row.currency,
    }


async def _details(conn: AsyncConnection, order_id: int) -> dict[str, Any] | None:
    row = (await conn.execute(select(*_ORDER_COLUMNS).where(orders.c.id == order_id))).first()
    if row is None:
        return None
    order = _order_dict(row)
    items = (
        await conn.execute(
            select(
                order_items.c.item_id,
                order_items.c.name,
                order_items.c.quantity,
                order_items.c.unit,
                order_items.c.unit_price,
                order_items.c.amount,
            )
            .where(order_items.c.order_id == order_id)
            .order_by(order_items.c.position)
        )
    ).all()
    order["items"] = [
        {
            "item_id": i.item_id,
            "name": i.name,
            "quantity": i.quantity,
            "unit": i.unit,
            "unit_price": _money(i.unit_price),
            "amount": _money(i.amount),
        }
        for i in items
    ]
    files = (
        await conn.execute(
            select(
                order_files.c.name, order_files.c.checksum, order_files.c.size, order_files.c.format
            )
            .where(order_files.c.order_id == order_id)
            .order_by(order_files.c.position)
        )
    ).all()
    order["files"] = [
        {"name": f.name, "checksum": f.checksum, "size": f.size, "format": f.format} for f in files
    ]
    history = (
        await conn.execute(
            select(
                order_status_history.c.id,
                order_status_history.c.from_status,
                order_status_history.c.to_status,
                order_status_history.c.note,
                order_status_history.c.actor,
                order_status_history.c.created_at,
            )
            .where(order_status_history.c.order_id == order_id)
            .order_by(order_status_history.c.id)
        )
    ).all()
    order["history"] = [
        {
            "id": h.id,
            "from": h.from_status,
            "to": h.to_status,
            "note": h.note,
            "actor": h.actor,
            "at": _iso(h.created_at),
        }
        for h in history
    ]
    return order
