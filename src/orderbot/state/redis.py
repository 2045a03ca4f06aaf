"""Distributed dialog state and step commits: Redis for state and processed ids, PostgreSQL for
orders and logs, RabbitMQ for replies.

There is no transaction across the three, so a step commits in an order where every prefix is
safe to redo (the worker acks the inbound message only after all of it):

1. PostgreSQL, one transaction: the order (``ON CONFLICT (idempotency_key) DO NOTHING``, then its
   id is read back, so a redo finds the same order), the dialog outcomes, the operator handoff
   started or ended by the message (``handoffs``) and the inbound message log. The log row
   doubles as the "this step's rows are written" mark: a redo that finds it writes no second
   outcome, handoff change or log row.
2. The replies, published with confirms, each under its deterministic key (the sender drops a
   key it already sent), then the new-order alerts for operators (``new-order:<id>:...``; built
   again by a redo, same keys).
3. One Redis ``MULTI``: the new dialog state (TTL 24 h, refreshed by every step), the handoff
   flag of the client when the step changed it (see ``orderbot.desk.postgres``) and the
   processed mark of the message id (TTL 7 days). A redelivered message whose mark is set is
   acknowledged and dropped before anything else.

A crash between any two steps redoes the step from the old state, which yields the same order
key and reply keys, so nothing happens twice.
"""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import and_, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orderbot.desk.postgres import handoff_flag
from orderbot.errors import BackendUnavailable
from orderbot.queues.rabbitmq import KEEP_SECONDS, RabbitOutbox, RedisKeys
from orderbot.schema import (
    dialog_outcomes,
    handoffs,
    message_logs,
    order_files,
    order_items,
    orders,
)
from orderbot.state.base import (
    ORDER_ID_PLACEHOLDER,
    NewOrderAlerts,
    OrderRecord,
    StepCommit,
    StepStore,
)

__all__ = ["STATE_TTL_SECONDS", "RedisStepStore"]

STATE_TTL_SECONDS = 24 * 3600


class RedisStepStore(StepStore):
    """Dialog states in Redis (``<prefix>:state:<client>``), effects in PostgreSQL and the
    outbox; see the module docstring for the commit order."""

    def __init__(
        self,
        redis: Redis,
        engine: AsyncEngine,
        outbox: RabbitOutbox,
        *,
        keys: RedisKeys,
        state_ttl: int = STATE_TTL_SECONDS,
        processed_ttl: int = KEEP_SECONDS,
        alerts: NewOrderAlerts | None = None,
    ) -> None:
        self._redis = redis
        self._engine = engine
        self._outbox = outbox
        self._keys = keys
        self._state_ttl = state_ttl
        self._processed_ttl = processed_ttl
        # Messages to operators about each new order, published after the step's replies.
        self._alerts = alerts

    async def load_state(self, client_key: str) -> bytes | None:
        try:
            raw = await self._redis.get(self._keys.state(client_key))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis: {type(exc).__name__}: {exc}") from None
        return None if raw is None else raw if isinstance(raw, bytes) else raw.encode()

    async def is_processed(self, dedupe_key: str) -> bool:
        try:
            return bool(await self._redis.exists(self._keys.processed(dedupe_key)))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis: {type(exc).__name__}: {exc}") from None

    async def commit_step(self, commit: StepCommit) -> int | None:
        message = commit.delivery.message
        if await self.is_processed(message.dedupe_key):
            return None
        now = time.time()
        try:
            async with self._engine.begin() as conn:
                order_id = await _write_rows(conn, commit, now)
        except (SQLAlchemyError, OSError) as exc:
            raise BackendUnavailable(f"PostgreSQL: {type(exc).__name__}") from None

        replies = commit.replies
        if order_id is not None:
            replies = tuple(
                replace(r, text=r.text.replace(ORDER_ID_PLACEHOLDER, str(order_id)))
                if ORDER_ID_PLACEHOLDER in r.text
                else r
                for r in replies
            )
            if self._alerts is not None and commit.order is not None:
                # Also when a redo found the order: the first try may have stopped before
                # publishing them; their keys are the same, so the sender sends each once.
                replies += self._alerts.messages(order_id, commit.order, now)
        await self._outbox.put(replies)

        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                state_key = self._keys.state(message.client_key)
                if commit.state is None:
                    pipe.delete(state_key)
                else:
                    pipe.set(state_key, commit.state, ex=self._state_ttl)
                if commit.handoff is not None:
                    flag = self._keys.handoff(message.client_key)
                    if commit.handoff.start:
                        value, ttl = handoff_flag(commit.handoff.until, message.route, now)
                        pipe.set(flag, value, ex=ttl)
                    else:
                        pipe.delete(flag)
                pipe.set(self._keys.processed(message.dedupe_key), b"1", ex=self._processed_ttl)
                await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable(f"Redis: {type(exc).__name__}: {exc}") from None
        return order_id


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


async def _write_rows(conn: AsyncConnection, commit: StepCommit, now: float) -> int | None:
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
            await _write_lines(conn, int(new_id), o, now)
        order_id = (
            await conn.execute(
                select(orders.c.id).where(orders.c.idempotency_key == o.idempotency_key)
            )
        ).scalar_one()

    logged = (
        await conn.execute(
            select(message_logs.c.id)
            .where(
                and_(
                    message_logs.c.channel == message.channel,
                    message_logs.c.client_id == message.client_id,
                    message_logs.c.direction == "in",
                    message_logs.c.message_key == message.message_id,
                )
            )
            .limit(1)
        )
    ).first()
    if logged is not None:
        return order_id  # a redo: this step's rows are already there

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
                    "order_id": order_id if outcome.outcome == "completed" else None,
                }
                for outcome in commit.outcomes
            ],
        )
    if commit.handoff is not None:
        await _change_handoff(conn, commit, now)
    await conn.execute(
        insert(message_logs).values(
            direction="in",
            channel=message.channel,
            client_id=message.client_id,
            message_key=message.message_id,
            text=message.text,
            dialog_state=commit.state_name,
            success=commit.error is None,
            error=commit.error,
            created_at=now,
        )
    )
    return order_id


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
