"""Order administration on the distributed profile (admin API of ``orderbot serve``, the CLI,
the workers' housekeeping): PostgreSQL for orders and handoffs, Redis for dialog states and
handoff flags (see :mod:`orderbot.desk.postgres`), the RabbitMQ outbox for what the customer is
told.

**Notifications survive a crash between PostgreSQL and RabbitMQ.**

* A status change first adds ``<order id>:<time>`` to ``<prefix>:notify-pending`` (a Redis
  sorted set), then commits the order and its ``order_status_history`` row in one transaction
  (the order row locked, so concurrent changes see each other), publishes the customer's
  notification under ``status:<order id>:<history id>`` and removes the pending entry. An
  entry older than :data:`NOTIFY_GRACE` seconds is one whose publish never happened (a crash,
  RabbitMQ down): housekeeping finds its history row (none if the change never committed),
  publishes the notification and removes the entry. A republished key the sender already sent
  is dropped there, so a crash after the publish but before the removal costs nothing either.
  The pending set is per ``QUEUE_PREFIX``, so deployments (and test runs) sharing a database
  never publish each other's notifications.
* A handback publishes the bot's comeback first, under ``handback:<client>:<since>`` (known
  from the row before anything changes), and deletes the ``handoffs`` row after the confirm. A
  crash in between leaves the conversation handed off; the next handback, or the timeout,
  publishes the same key again (dropped by the sender if sent) and deletes the row. If the
  publish fails nothing changed and the caller is told (the API answers 503). Lost Redis
  handoff flags are restored from the ``handoffs`` rows.

Orders as operators read them: the columns read from PostgreSQL, the dictionary an order becomes
(the same shape as the embedded store), and one order's details with its items, files and status
history.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orderbot import outbound
from orderbot.desk.base import HandoffNotFound, OrderAdmin, OrderNotFound
from orderbot.desk.postgres import handoff_flag
from orderbot.desk.texts import comeback, status_notification
from orderbot.dialog.flow import Flow
from orderbot.dialog.models import DialogOptions, DialogState
from orderbot.errors import BackendUnavailable, StorageError
from orderbot.loggers import storage as log
from orderbot.messages import OutboundMessage
from orderbot.orders.status import WINDOW_MARK, check_transition, outside_window
from orderbot.outbound import pending_notification_member, status_notification_key
from orderbot.queues.rabbitmq.outbox import RabbitOutbox
from orderbot.storage.redis import RedisKeys
from orderbot.storage.schema import (
    handoffs,
    message_logs,
    order_files,
    order_items,
    order_status_history,
    orders,
)
from orderbot.storage.sql import refused_data

__all__ = ["NOTIFY_GRACE", "PostgresOrderAdmin"]


NOTIFY_GRACE = 30.0


"""Seconds a status change may wait for its own publish before housekeeping republishes it."""


def _flag_route(raw: bytes | str | None) -> dict[str, str]:
    if raw is None:
        return {}
    try:
        route = orjson.loads(raw).get("route") or {}
        return {str(k): str(v) for k, v in route.items()}
    except (orjson.JSONDecodeError, AttributeError):
        return {}


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
                order_status_history.c.note_public,
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
            "note_public": bool(h.note_public),
        }
        for h in history
    ]
    return order


class PostgresOrderAdmin(OrderAdmin):
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
        window_transports: tuple[str, ...] = (),
    ) -> None:
        self._window_transports = window_transports
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
        self,
        order_id: int,
        status: str,
        *,
        note: str = "",
        actor: str = "",
        note_public: bool = False,
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
                marked = note
                reach = {str(k): str(v) for k, v in orjson.loads(row.route or "{}").items()}
                if reach.get("transport") in self._window_transports:
                    last = (
                        await conn.execute(
                            select(func.max(message_logs.c.created_at)).where(
                                message_logs.c.channel == row.channel,
                                message_logs.c.client_id == row.client_id,
                                message_logs.c.direction == "in",
                            )
                        )
                    ).scalar_one_or_none()
                    if outside_window(reach, last, now, self._window_transports):
                        marked = note + WINDOW_MARK
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
                            note=marked,
                            actor=actor,
                            created_at=now,
                            note_public=note_public,
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
            note_public=note_public,
        )
        await self._notify([notification], [pending])
        found = await self.get(order_id)
        assert found is not None
        return found

    def _status_message(
        self,
        order_id: int,
        history_id: int,
        status: str,
        note: str,
        at: float,
        *,
        channel: str,
        client_id: str,
        language: str,
        route: str | None,
        note_public: bool = False,
    ) -> OutboundMessage:
        return OutboundMessage(
            key=status_notification_key(order_id, history_id),
            channel=channel,
            client_id=client_id,
            text=status_notification(
                self._flow,
                status,
                language,
                order_id=order_id,
                note=note,
                note_public=note_public,
            ),
            route={str(k): str(v) for k, v in orjson.loads(route or "{}").items()},
            created_at=at,
        )

    async def _notify(self, messages: Sequence[OutboundMessage], pending: Sequence[str]) -> None:
        """Publish status notifications, then forget their ``pending`` entries; on failure the
        entries stay and housekeeping publishes them later (:meth:`republish_notifications`)."""
        try:
            await self._outbox.put(messages)
        except StorageError as exc:
            log.warning(
                "%d status notification(s) not published yet (%s); housekeeping retries",
                len(messages),
                exc,
            )
            return
        try:
            await self._redis.zrem(self._keys.pending_notifications(), *pending)
        except RedisError as exc:  # published again later, and dropped by the sender as sent
            log.warning("cannot clear pending notifications: %s", type(exc).__name__)

    async def republish_notifications(self) -> int:
        """Publish the notifications of status changes that were committed (or not) more than
        :data:`NOTIFY_GRACE` seconds ago and never cleared from the pending set; how many."""
        pending = self._keys.pending_notifications()
        try:
            due = await self._redis.zrangebyscore(pending, "-inf", self._clock() - NOTIFY_GRACE)
        except RedisError as exc:
            raise _unavailable("Redis", exc) from None
        if not due:
            return 0
        messages: builtins.list[OutboundMessage] = []
        for member in due:
            text = member.decode() if isinstance(member, bytes) else str(member)
            order_id, _, at = text.partition(":")
            try:
                row = await self._changed_at(int(order_id), float(at))
            except ValueError:
                row = None  # not ours
            if row is not None:  # None: the change never committed (refused, or a crash)
                messages.append(
                    self._status_message(
                        row.order_id,
                        row.id,
                        row.to_status,
                        row.note.removesuffix(WINDOW_MARK),  # the mark is for operators
                        row.created_at,
                        channel=row.channel,
                        client_id=row.client_id,
                        language=row.language,
                        route=row.route,
                        note_public=bool(row.note_public),
                    )
                )
        if messages:
            log.info("publishing %d status notification(s) again", len(messages))
            await self._outbox.put(messages)  # raises when RabbitMQ is down: tried next time
        try:
            await self._redis.zrem(pending, *due)
        except RedisError as exc:
            raise _unavailable("Redis", exc) from None
        return len(messages)

    async def _changed_at(self, order_id: int, at: float) -> Any:
        """The history row (with the order's channel, client, language and route) of the
        status change of ``order_id`` made at ``at``, or None."""
        query = (
            select(
                order_status_history.c.id,
                order_status_history.c.order_id,
                order_status_history.c.to_status,
                order_status_history.c.note,
                order_status_history.c.note_public,
                order_status_history.c.created_at,
                orders.c.channel,
                orders.c.client_id,
                orders.c.language,
                orders.c.route,
            )
            .join(orders, orders.c.id == order_status_history.c.order_id)
            .where(
                and_(
                    order_status_history.c.order_id == order_id,
                    order_status_history.c.created_at == at,
                )
            )
        )
        try:
            async with self._engine.connect() as conn:
                return (await conn.execute(query)).first()
        except (SQLAlchemyError, OSError) as exc:
            if refused_data(exc):
                # An id no order can have (a change refused for it left its entry): it never
                # committed, and must not stop the entries after it for ever.
                log.warning("dropping a pending notification of an impossible order id")
                return None
            raise _unavailable("PostgreSQL", exc) from None

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
