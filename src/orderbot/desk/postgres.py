"""The front desk's reads on the distributed profile: PostgreSQL (orders,
``order_status_history``, ``handoffs``, ``message_logs``) and a Redis flag per handed-off client.

**Is this client with an operator?** Asked for every message, by many worker processes, while
a handback may come from any other process (CLI, admin API, another worker's housekeeping), so
no process may trust a memory of its own. The ``handoffs`` row decides; ``<prefix>:handoff:
<client>`` in Redis is the cheap hint: one ``EXISTS`` per message (pipelined with those of the
other steps running at the time), and PostgreSQL is asked only when the flag is set. The flag
is written in the step's Redis script after the row (``RedisStepStore``), deleted after the row on a
handback, and repaired both ways: a flag without a row is deleted by the next message that
sees it, a row without a flag (Redis lost its data) gets it back from housekeeping.

The operators' side (status changes, handbacks, housekeeping) is
:mod:`orderbot.desk.postgres_admin`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import and_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from orderbot.desk.base import DeskStore, HandoffWindow
from orderbot.desk.requests import TRACK_LIMIT
from orderbot.errors import BackendUnavailable
from orderbot.loggers import storage as log
from orderbot.orders.models import HistoryEntry, OrderSummary
from orderbot.storage.redis import KEEP_SECONDS, RedisBatcher, RedisKeys
from orderbot.storage.schema import handoffs, message_logs, order_status_history, orders

__all__ = ["PostgresDeskStore", "handoff_flag"]


def handoff_flag(until: float, route: dict[str, str], now: float) -> tuple[bytes, int]:
    """The Redis flag of a handoff (value and TTL in seconds): ``until`` and how the customer
    wrote (for the comeback message), kept a week past ``until``."""
    value = orjson.dumps({"until": until, "route": route})
    return value, max(1, int(until - now)) + KEEP_SECONDS


_LAST_ORDER_DATA = (
    "SELECT data FROM orders WHERE channel = $1 AND client_id = $2 AND status <> 'cancelled'"
    " ORDER BY id DESC LIMIT 1"
)


def _unavailable(what: str, exc: BaseException) -> BackendUnavailable:
    return BackendUnavailable(f"{what}: {type(exc).__name__}")


def _summary(row: Any) -> OrderSummary:
    return OrderSummary(
        id=row.id,
        created_at=row.created_at,
        status=row.status,
        total=None if row.total is None else Decimal(str(row.total)),
        currency=row.currency,
        quantity=row.quantity,
    )


_SUMMARY_COLUMNS = (
    orders.c.id,
    orders.c.created_at,
    orders.c.status,
    orders.c.total,
    orders.c.currency,
    orders.c.quantity,
)


class PostgresDeskStore(DeskStore):
    """The front desk's reads: the Redis flag first, PostgreSQL when it is set (see the module
    docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        *,
        keys: RedisKeys,
        batcher: RedisBatcher | None = None,
    ) -> None:
        self._engine = engine
        self._redis = redis
        self._batch = batcher or RedisBatcher(
            redis
        )  # the flag checks of concurrent steps: one pipeline
        self._keys = keys

    async def handoff(self, client_key: str) -> HandoffWindow | None:
        flag = self._keys.handoff(client_key)
        try:
            if not await self._batch.call(lambda pipe: pipe.exists(flag)):
                return None
        except RedisError as exc:
            raise _unavailable("Redis", exc) from None
        try:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(handoffs.c.since, handoffs.c.until).where(
                            handoffs.c.client_key == client_key
                        )
                    )
                ).first()
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None
        if row is None:  # handed back elsewhere, and the flag outlived the row
            try:
                await self._redis.delete(flag)
            except RedisError:
                log.warning("cannot clear a stale handoff flag; the next message will")
            return None
        return HandoffWindow(since=float(row.since), until=float(row.until))

    async def last_order_data(self, channel: str, client_id: str) -> dict[str, Any] | None:
        # Asked for every message that begins a dialog: straight through asyncpg on a pooled
        # connection (about a quarter of the CPU of a SQLAlchemy Core select, measured).
        try:
            async with self._engine.connect() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                assert driver is not None  # an open pooled connection always has one
                raw = await driver.fetchval(_LAST_ORDER_DATA, channel, client_id)
        except (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None
        try:
            data = orjson.loads(raw) if isinstance(raw, str | bytes) else None
        except orjson.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    async def customer_orders(self, channel: str, client_id: str) -> list[OrderSummary]:
        query = (
            select(*_SUMMARY_COLUMNS)
            .where(and_(orders.c.channel == channel, orders.c.client_id == client_id))
            .order_by(orders.c.id.desc())
            .limit(TRACK_LIMIT)
        )
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None
        return [_summary(r) for r in rows]

    async def customer_order(
        self, channel: str, client_id: str, order_id: int
    ) -> tuple[OrderSummary, list[HistoryEntry]] | None:
        try:
            async with self._engine.connect() as conn:
                # One query decides: someone else's order and no order take the same path.
                row = (
                    await conn.execute(
                        select(*_SUMMARY_COLUMNS).where(
                            and_(
                                orders.c.id == order_id,
                                orders.c.channel == channel,
                                orders.c.client_id == client_id,
                            )
                        )
                    )
                ).first()
                if row is None:
                    return None
                history = (
                    await conn.execute(
                        select(
                            order_status_history.c.created_at,
                            order_status_history.c.from_status,
                            order_status_history.c.to_status,
                        )
                        .where(order_status_history.c.order_id == order_id)
                        .order_by(order_status_history.c.id)
                    )
                ).all()
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None
        return _summary(row), [HistoryEntry(h[0], h[1], h[2], "") for h in history]

    async def recent_messages(
        self, channel: str, client_id: str, limit: int
    ) -> list[tuple[str, str]]:
        query = (
            select(message_logs.c.direction, message_logs.c.text)
            .where(and_(message_logs.c.channel == channel, message_logs.c.client_id == client_id))
            .order_by(message_logs.c.id.desc())
            .limit(limit)
        )
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None
        return [(str(r[0]), str(r[1])) for r in reversed(rows)]
