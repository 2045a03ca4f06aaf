"""Handoffs on the distributed profile, from the operators' side: handing a conversation back
to the bot (by an operator, or at the timeout) and restoring lost Redis handoff flags.

* A handback publishes the bot's comeback first, under ``handback:<client>:<since>`` (known
  from the row before anything changes), and deletes the ``handoffs`` row after the confirm. A
  crash in between leaves the conversation handed off; the next handback, or the timeout,
  publishes the same key again (dropped by the sender if sent) and deletes the row. If the
  publish fails nothing changed and the caller is told (the API answers 503).

Separate from :mod:`orderbot.desk.postgres_admin` (orders and status changes): a part of
:class:`~orderbot.desk.postgres_admin.PostgresOrderAdmin`, mixed in.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import and_, delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from orderbot import outbound
from orderbot.desk.base import HandoffNotFound
from orderbot.desk.front import comeback
from orderbot.desk.postgres import handoff_flag
from orderbot.desk.postgres_orders import _unavailable
from orderbot.dialog.flow import Flow
from orderbot.dialog.models import DialogOptions, DialogState
from orderbot.loggers import storage as log
from orderbot.queues.rabbitmq.outbox import RabbitOutbox
from orderbot.storage.redis import RedisKeys
from orderbot.storage.schema import handoffs

__all__ = ["PostgresHandbacks"]


def _flag_route(raw: bytes | str | None) -> dict[str, str]:
    if raw is None:
        return {}
    try:
        route = orjson.loads(raw).get("route") or {}
        return {str(k): str(v) for k, v in route.items()}
    except (orjson.JSONDecodeError, AttributeError):
        return {}


class PostgresHandbacks:
    """Handbacks, handoff timeouts and handoff flag repair; mixed into
    :class:`~orderbot.desk.postgres_admin.PostgresOrderAdmin`, which sets the attributes."""

    _engine: AsyncEngine
    _redis: Redis
    _outbox: RabbitOutbox
    _flow: Flow
    _options: DialogOptions
    _keys: RedisKeys
    _clock: Callable[[], float]

    # -- handoffs ------------------------------------------------------------------------

    async def handback(self, channel: str, client_id: str) -> None:
        key = outbound.client_key(channel, client_id)
        if not await self._hand_back(key, self._clock(), expired_only=False):
            raise HandoffNotFound(f"{key} is not with an operator")

    async def expire_handoffs(self) -> int:
        now = self._clock()
        try:
            async with self._engine.connect() as conn:
                keys = (
                    await conn.execute(select(handoffs.c.client_key).where(handoffs.c.until <= now))
                ).scalars()
                due = builtins.list(keys)
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None
        resumed = 0
        for client_key in due:
            resumed += await self._hand_back(client_key, now, expired_only=True)
        return resumed

    async def _hand_back(self, client_key: str, now: float, *, expired_only: bool) -> bool:
        try:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(
                            handoffs.c.channel,
                            handoffs.c.client_id,
                            handoffs.c.since,
                            handoffs.c.until,
                        ).where(handoffs.c.client_key == client_key)
                    )
                ).first()
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None
        if row is None or (expired_only and row.until > now):
            return False
        flag = self._keys.handoff(client_key)
        try:
            raw_state, raw_flag = await self._redis.mget([self._keys.state(client_key), flag])
        except RedisError as exc:
            raise _unavailable("Redis", exc) from None
        state = None
        if raw_state is not None:
            try:
                state = DialogState.from_json(raw_state)
            except ValueError:
                log.warning("unreadable dialog state for %s at handback", row.client_id)
        back = comeback(
            self._flow,
            self._options,
            state,
            channel=row.channel,
            client_id=row.client_id,
            since=float(row.since),
            route=_flag_route(raw_flag),
            now=now,
        )
        # Published before the row goes (confirmed by RabbitMQ): see the module docstring.
        await self._outbox.put([back])
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    delete(handoffs).where(
                        and_(handoffs.c.client_key == client_key, handoffs.c.since == row.since)
                    )
                )
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None
        try:
            await self._redis.delete(flag)
        except RedisError:
            log.warning("cannot clear the handoff flag; the client's next message will")
        return True

    async def restore_handoff_flags(self) -> int:
        """Set the Redis flag of every handoff whose flag is missing (Redis lost its data);
        how many were set."""
        now = self._clock()
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(select(handoffs.c.client_key, handoffs.c.until))).all()
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable("PostgreSQL", exc) from None
        if not rows:
            return 0
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for client_key, until in rows:
                    value, ttl = handoff_flag(float(until), {}, now)
                    pipe.set(self._keys.handoff(client_key), value, ex=ttl, nx=True)
                results = await pipe.execute()
        except RedisError as exc:
            raise _unavailable("Redis", exc) from None
        restored = sum(1 for r in results if r)
        if restored:
            log.warning("restored %d handoff flag(s) missing in Redis", restored)
        return restored
