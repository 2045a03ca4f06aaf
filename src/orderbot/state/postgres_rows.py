"""The PostgreSQL rows of one dialog step on the distributed profile: the order with its line
items and files, the inbound message log row (the "this step's rows are written" mark), the
operator handoff started or ended and the dialog outcomes. Written by
:class:`~orderbot.state.redis.RedisStepStore` (see :mod:`orderbot.state.redis` for the commit
order).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from orderbot.orders.models import OrderRecord
from orderbot.state.base import StepCommit
from orderbot.storage.message_log import log_inbound
from orderbot.storage.schema import dialog_outcomes, handoffs, order_files, order_items, orders

__all__ = ["inbound_row", "write_rows"]


async def _write_lines(conn: AsyncConnection, order_id: int, o: OrderRecord, now: float) -> None:
    """Line items and model files of a newly inserted order, in its transaction."""
    if o.items:
        await conn.execute(
            insert(order_items),
            [
                {
                    "order_id": order_id,
                    "position": position,
                    "item_id": item.item_id,
                    "name": item.name,
                    "quantity": item.quantity,
                    "unit": item.unit,
                    "unit_price": Decimal(item.unit_price),
                    "amount": Decimal(item.unit_price) * item.quantity,
                }
                for position, item in enumerate(o.items)
            ],
        )
    if o.files:
        await conn.execute(
            insert(order_files),
            [
                {
                    "order_id": order_id,
                    "position": position,
                    "name": f.name,
                    "checksum": f.checksum,
                    "size": f.size,
                    "format": f.format,
                    "path": f.path,
                    "created_at": now,
                }
                for position, f in enumerate(o.files)
            ],
        )


async def write_rows(conn: AsyncConnection, commit: StepCommit, now: float) -> int | None:
    message = commit.delivery.message
    order_id: int | None = None
    if commit.order is not None:
        o = commit.order
        inserted = await conn.execute(
            pg_insert(orders)
            .values(
                idempotency_key=o.idempotency_key,
                client_id=o.client_id,
                channel=o.channel,
                source=o.source,
                phone=o.phone,
                address=o.address,
                quantity=o.quantity,
                status="new",
                language=o.language,
                data=orjson.dumps(o.data).decode(),
                created_at=now,
                updated_at=now,
                total=Decimal(o.total) if o.total is not None else None,
                currency=o.currency,
                route=orjson.dumps(o.route).decode(),
            )
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(orders.c.id)
        )
        new_id = inserted.scalar_one_or_none()
        if new_id is not None:  # a redo finds the order and must not list its lines twice
            order_id = int(new_id)
            await _write_lines(conn, order_id, o, now)
        else:
            order_id = (
                await conn.execute(
                    select(orders.c.id).where(orders.c.idempotency_key == o.idempotency_key)
                )
            ).scalar_one()

    if not await _log_inbound(conn, commit, now):
        return order_id  # a redo: this step's rows are already there
    if commit.handoff is not None:
        await _change_handoff(conn, commit, now)
    if commit.outcomes:
        await conn.execute(
            insert(dialog_outcomes),
            [
                {
                    "channel": message.channel,
                    "client_id": message.client_id,
                    "outcome": outcome.outcome,
                    "last_step": outcome.last_step,
                    "message_count": outcome.message_count,
                    "duration_seconds": max(0.0, outcome.ended_at - outcome.started_at),
                    "started_at": outcome.started_at,
                    "ended_at": outcome.ended_at,
                    "order_id": order_id if outcome.outcome in ("completed", "recovered") else None,
                }
                for outcome in commit.outcomes
            ],
        )
    return order_id


def inbound_row(commit: StepCommit, now: float) -> dict[str, Any]:
    message = commit.delivery.message
    return {
        "channel": message.channel,
        "client_id": message.client_id,
        "message_key": message.message_id,
        "text": message.text,
        "dialog_state": commit.state_name,
        "success": commit.error is None,
        "error": commit.error,
        "created_at": now,
    }


async def _log_inbound(conn: AsyncConnection, commit: StepCommit, now: float) -> bool:
    """Write the step's inbound message log row in ``conn``'s transaction (the row is the
    "this step's rows are written" mark); False when a redo of the step wrote it."""
    (written,) = await log_inbound(conn, [inbound_row(commit, now)])
    return written


async def _change_handoff(conn: AsyncConnection, commit: StepCommit, now: float) -> None:
    """Start or end the operator handoff of the message's client, in the step's transaction."""
    change = commit.handoff
    assert change is not None
    message = commit.delivery.message
    if not change.start:
        await conn.execute(delete(handoffs).where(handoffs.c.client_key == message.client_key))
        return
    values = {"reason": change.reason, "since": now, "until": change.until}
    await conn.execute(
        pg_insert(handoffs)
        .values(
            client_key=message.client_key,
            channel=message.channel,
            client_id=message.client_id,
            **values,
        )
        .on_conflict_do_update(index_elements=["client_key"], set_=values)
    )
