"""Customer notifications of status changes on the distributed profile, and how they survive a
crash between PostgreSQL and RabbitMQ.

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

Separate from :mod:`orderbot.desk.postgres_admin` (which makes the status change itself): a
part of :class:`~orderbot.desk.postgres_admin.PostgresOrderAdmin`, mixed in.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import and_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from orderbot.desk.postgres_orders import _unavailable
from orderbot.desk.texts import status_notification
from orderbot.dialog.flow import Flow
from orderbot.errors import StorageError
from orderbot.loggers import storage as log
from orderbot.messages import OutboundMessage
from orderbot.outbound import status_notification_key
from orderbot.queues.rabbitmq.outbox import RabbitOutbox
from orderbot.storage.redis import RedisKeys
from orderbot.storage.schema import order_status_history, orders

__all__ = ["NOTIFY_GRACE", "PostgresNotifications"]

NOTIFY_GRACE = 30.0
"""Seconds a status change may wait for its own publish before housekeeping republishes it."""


class PostgresNotifications:
    """Publishing status notifications and republishing the ones a crash left pending; mixed
    into :class:`~orderbot.desk.postgres_admin.PostgresOrderAdmin`, which sets the attributes."""

    _engine: AsyncEngine
    _redis: Redis
    _outbox: RabbitOutbox
    _flow: Flow
    _keys: RedisKeys
    _clock: Callable[[], float]

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
    ) -> OutboundMessage:
        return OutboundMessage(
            key=status_notification_key(order_id, history_id),
            channel=channel,
            client_id=client_id,
            text=status_notification(self._flow, status, language, order_id=order_id, note=note),
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
                        row.note,
                        row.created_at,
                        channel=row.channel,
                        client_id=row.client_id,
                        language=row.language,
                        route=row.route,
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
            raise _unavailable("PostgreSQL", exc) from None
