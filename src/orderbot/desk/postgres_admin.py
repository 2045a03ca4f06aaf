"""Order administration on the distributed profile (admin API of ``orderbot serve``, the CLI,
the workers' housekeeping): PostgreSQL for orders and handoffs, Redis for dialog states and
handoff flags (see :mod:`orderbot.desk.postgres`), the RabbitMQ outbox for what the customer is
told.

**Notifications survive a crash between PostgreSQL and RabbitMQ.**

How: status notifications in :mod:`orderbot.desk.postgres_notifications`, handbacks in
:mod:`orderbot.desk.postgres_handbacks` (both mixed into :class:`PostgresOrderAdmin`); the
order rows and details in :mod:`orderbot.desk.postgres_orders`.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from orderbot.desk.base import OrderAdmin, OrderNotFound
from orderbot.desk.postgres_handbacks import PostgresHandbacks
from orderbot.desk.postgres_notifications import PostgresNotifications
from orderbot.desk.postgres_orders import _ORDER_COLUMNS, _details, _iso, _order_dict, _unavailable
from orderbot.dialog.flow import Flow
from orderbot.dialog.models import DialogOptions
from orderbot.orders.status import check_transition
from orderbot.outbound import pending_notification_member
from orderbot.queues.rabbitmq.outbox import RabbitOutbox
from orderbot.storage.redis import RedisKeys
from orderbot.storage.schema import handoffs, order_status_history, orders

__all__ = ["PostgresOrderAdmin"]


class PostgresOrderAdmin(PostgresNotifications, PostgresHandbacks, OrderAdmin):
    """Operators' view and actions on the distributed profile (admin API of ``orderbot serve``,
    the CLI, the workers' housekeeping). See the module docstring for how notifications
    survive crashes."""

    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        outbox: RabbitOutbox,
        flow: Flow,
        options: DialogOptions,
        *,
        keys: RedisKeys,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._redis = redis
        self._outbox = outbox
        self._flow = flow
        self._options = options
        self._keys = keys
        self._clock = clock

    # -- reading -------------------------------------------------------------------------

    async def list(
        self, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> builtins.list[dict[str, Any]]:
        query = select(*_ORDER_COLUMNS).order_by(orders.c.id.desc()).limit(limit).offset(offset)
        if status is not None:
            query = query.where(orders.c.status == status)
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None
        return [_order_dict(r) for r in rows]

    async def get(self, order_id: int) -> dict[str, Any] | None:
        try:
            async with self._engine.connect() as conn:
                return await _details(conn, order_id)
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None

    async def handoffs(self) -> builtins.list[dict[str, Any]]:
        query = select(
            handoffs.c.channel,
            handoffs.c.client_id,
            handoffs.c.reason,
            handoffs.c.since,
            handoffs.c.until,
        ).order_by(handoffs.c.since)
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None
        return [
            {
                "channel": r.channel,
                "client_id": r.client_id,
                "reason": r.reason,
                "since": _iso(r.since),
                "until": _iso(r.until),
            }
            for r in rows
        ]

    # -- status changes ------------------------------------------------------------------

    async def set_status(
        self, order_id: int, status: str, *, note: str = "", actor: str = ""
    ) -> dict[str, Any]:
        now = self._clock()
        # Before the change: a crash after its commit leaves this entry for housekeeping.
        pending = pending_notification_member(order_id, now)
        try:
            await self._redis.zadd(self._keys.pending_notifications(), {pending: now})
        except RedisError as exc:
            raise _unavailable("Redis", exc) from None
        try:
            async with self._engine.begin() as conn:
                row = (
                    await conn.execute(
                        select(
                            orders.c.status,
                            orders.c.channel,
                            orders.c.client_id,
                            orders.c.language,
                            orders.c.route,
                        )
                        .where(orders.c.id == order_id)
                        .with_for_update()
                    )
                ).first()
                if row is None:
                    raise OrderNotFound(f"no order {order_id}")
                check_transition(row.status, status)
                await conn.execute(
                    update(orders)
                    .where(orders.c.id == order_id)
                    .values(status=status, updated_at=now)
                )
                history_id = (
                    await conn.execute(
                        insert(order_status_history)
                        .values(
                            order_id=order_id,
                            from_status=row.status,
                            to_status=status,
                            note=note,
                            actor=actor,
                            created_at=now,
                        )
                        .returning(order_status_history.c.id)
                    )
                ).scalar_one()
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None
        notification = self._status_message(
            order_id,
            int(history_id),
            status,
            note,
            now,
            channel=row.channel,
            client_id=row.client_id,
            language=row.language,
            route=row.route,
        )
        await self._notify([notification], [pending])
        found = await self.get(order_id)
        assert found is not None
        return found
