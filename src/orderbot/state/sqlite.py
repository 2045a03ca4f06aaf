"""Embedded dialog state and step commits: one SQLite transaction per handled message
(order, its operator alerts, replies, handoff flag, state and processed mark together)."""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterable
from decimal import Decimal

import orjson

from orderbot.messages import OutboundMessage
from orderbot.orders.models import ORDER_ID_PLACEHOLDER, OrderRecord
from orderbot.queues.sqlite import Wakeup
from orderbot.state.base import (
    IdleDialog,
    NewOrderAlerts,
    OutcomeRecord,
    StepCommit,
    StepStore,
)
from orderbot.storage.sqlite import SqliteDatabase

__all__ = ["SqliteStepStore"]

_MISSING = object()


class SqliteStepStore(StepStore):
    """Dialog states in ``dialog_states``; a step commits order, replies, outcomes, message log,
    new state and the processed mark in one transaction.

    In the embedded profile this process is the only one that runs a client's steps, so the
    states it wrote are cached (bounded LRU) and a step costs one round trip to the database.
    """

    def __init__(
        self,
        db: SqliteDatabase,
        *,
        outbox_wakeup: Wakeup | None = None,
        cache_size: int = 4096,
        alerts: NewOrderAlerts | None = None,
    ) -> None:
        self._db = db
        # Messages to operators about each new order, queued in the order's transaction.
        self._alerts = alerts
        self._outbox_wakeup = outbox_wakeup
        self._cache: OrderedDict[str, bytes | None] = OrderedDict()
        self._cache_size = cache_size

    async def load_state(self, client_key: str) -> bytes | None:
        cached = self._cache.get(client_key, _MISSING)
        if cached is not _MISSING:
            self._cache.move_to_end(client_key)
            return cached  # type: ignore[return-value]

        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT state FROM dialog_states WHERE client_key = ?", (client_key,)
            ).fetchone()
            return None if row is None else bytes(row[0])

        state = await self._db.run(read)
        self._remember(client_key, state)
        return state

    def _remember(self, client_key: str, state: bytes | None) -> None:
        self._cache[client_key] = state
        self._cache.move_to_end(client_key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def idle_states(
        self, older_than: float, limit: int = 1000
    ) -> list[tuple[str, bytes, float]]:
        """Dialogs not touched since ``older_than`` (unix time): client key, state, updated_at."""

        def read(conn: sqlite3.Connection) -> list[tuple[str, bytes, float]]:
            rows = conn.execute(
                "SELECT client_key, state, updated_at FROM dialog_states WHERE updated_at < ?"
                " ORDER BY updated_at LIMIT ?",
                (older_than, limit),
            ).fetchall()
            return [(r[0], bytes(r[1]), r[2]) for r in rows]

        return await self._db.run(read)

    async def abandon_idle(self, older_than: float, now: float, limit: int = 1000) -> int:
        from orderbot.dialog.models import DialogState

        count = 0
        for client_key, raw, updated_at in await self.idle_states(older_than, limit):
            try:
                state = DialogState.from_json(raw)
            except ValueError:
                last_step, messages, started = "-", 0, updated_at
            else:
                last_step, messages, started = state.step, state.message_count, state.started_at
            outcome = OutcomeRecord("abandoned", last_step, messages, started, now)
            count += await self.abandon(client_key, updated_at, outcome)
        return count

    async def abandon(self, client_key: str, updated_at: float, outcome: OutcomeRecord) -> bool:
        """Forget an idle dialog and record it as abandoned, unless a message moved it on since
        it was read (``updated_at`` changed). True when it was abandoned."""
        channel, _, client_id = client_key.partition(":")

        def expire(conn: sqlite3.Connection) -> bool:
            gone = conn.execute(
                "DELETE FROM dialog_states WHERE client_key = ? AND updated_at = ?",
                (client_key, updated_at),
            ).rowcount
            if not gone:
                return False
            conn.execute(
                "INSERT INTO dialog_outcomes (channel, client_id, outcome, last_step,"
                " message_count, duration_seconds, started_at, ended_at, order_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    channel,
                    client_id,
                    outcome.outcome,
                    outcome.last_step,
                    outcome.message_count,
                    max(0.0, outcome.ended_at - outcome.started_at),
                    outcome.started_at,
                    outcome.ended_at,
                ),
            )
            return True

        abandoned = await self._db.run(expire)
        if abandoned:
            self._cache.pop(client_key, None)
        return abandoned

    async def idle_dialogs(
        self, since: float, before: float, limit: int = 1000
    ) -> list[IdleDialog]:
        def read(conn: sqlite3.Connection) -> list[IdleDialog]:
            rows = conn.execute(
                "SELECT s.client_key, s.state, s.updated_at FROM dialog_states s"
                " WHERE s.updated_at >= ? AND s.updated_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM handoffs h WHERE h.client_key = s.client_key)"
                " ORDER BY s.updated_at LIMIT ?",
                (since, before, limit),
            ).fetchall()
            return [IdleDialog(r[0], bytes(r[1]), r[2]) for r in rows]

        return await self._db.run(read)

    async def commit_reminder(
        self, dialog: IdleDialog, state: bytes, reminder: OutboundMessage
    ) -> bool:
        now = time.time()

        def write(conn: sqlite3.Connection) -> bool:
            # The same updated_at: the dialog's idle time (abandonment, the next reminder key)
            # still counts from the customer's last message.
            changed = conn.execute(
                "UPDATE dialog_states SET state = ? WHERE client_key = ? AND updated_at = ?",
                (state, dialog.client_key, dialog.last_step),
            ).rowcount
            if changed:
                _insert_outbox(conn, (reminder,), now)
            return bool(changed)

        queued = await self._db.run(write)
        if queued:
            self._remember(dialog.client_key, state)
            if self._outbox_wakeup is not None:
                self._outbox_wakeup.set()
        return queued

    async def commit_step(self, commit: StepCommit) -> int | None:
        now = time.time()
        result = await self._db.run(lambda conn: _commit(conn, commit, now, self._alerts))
        if result is _ALREADY_DONE:
            return None
        self._remember(commit.delivery.message.client_key, commit.state)
        if (commit.replies or commit.order) and self._outbox_wakeup is not None:
            self._outbox_wakeup.set()
        return result  # type: ignore[return-value]


_ALREADY_DONE = object()


def _insert_lines(conn: sqlite3.Connection, order_id: int, order: OrderRecord, now: float) -> None:
    """The order's line items and model files, in the order's transaction."""
    for position, item in enumerate(order.items):
        amount = Decimal(item.unit_price) * item.quantity
        conn.execute(
            "INSERT INTO order_items (order_id, position, item_id, name, quantity, unit,"
            " unit_price, amount) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                order_id,
                position,
                item.item_id,
                item.name,
                item.quantity,
                item.unit,
                item.unit_price,
                str(amount),
            ),
        )
    for position, file in enumerate(order.files):
        conn.execute(
            "INSERT INTO order_files (order_id, position, name, checksum, size, format, path,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (order_id, position, file.name, file.checksum, file.size, file.format, file.path, now),
        )


def _insert_outbox(
    conn: sqlite3.Connection, messages: Iterable[OutboundMessage], now: float
) -> None:
    for message in messages:
        conn.execute(
            "INSERT OR IGNORE INTO outbox (key, channel, client_id, payload, status, attempts,"
            " not_before, last_error, created_at) VALUES (?, ?, ?, ?, 'pending', 0, 0, '', ?)",
            (message.key, message.channel, message.client_id, message.to_json(), now),
        )


def _change_handoff(conn: sqlite3.Connection, commit: StepCommit, now: float) -> None:
    change = commit.handoff
    if change is None:
        return
    message = commit.delivery.message
    if change.start:
        conn.execute(
            "INSERT INTO handoffs (client_key, channel, client_id, reason, since, until)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (client_key) DO UPDATE SET"
            " reason = excluded.reason, since = excluded.since, until = excluded.until",
            (
                message.client_key,
                message.channel,
                message.client_id,
                change.reason,
                now,
                change.until,
            ),
        )
    else:
        conn.execute("DELETE FROM handoffs WHERE client_key = ?", (message.client_key,))


def _commit(
    conn: sqlite3.Connection, commit: StepCommit, now: float, alerts: NewOrderAlerts | None = None
) -> object:
    delivery = commit.delivery
    message = delivery.message
    row = conn.execute("SELECT done FROM inbound_queue WHERE id = ?", (delivery.handle,)).fetchone()
    if row is not None and row[0]:
        return _ALREADY_DONE

    order_id: int | None = None
    if commit.order is not None:
        o = commit.order
        inserted = conn.execute(
            "INSERT OR IGNORE INTO orders (idempotency_key, client_id, channel, source, phone,"
            " address, quantity, status, language, data, created_at, updated_at, total, currency,"
            " route) VALUES (?, ?, ?, ?, ?, ?, ?, 'new', ?, ?, ?, ?, ?, ?, ?)",
            (
                o.idempotency_key,
                o.client_id,
                o.channel,
                o.source,
                o.phone,
                o.address,
                o.quantity,
                o.language,
                orjson.dumps(o.data).decode(),
                now,
                now,
                o.total,
                o.currency,
                orjson.dumps(o.route).decode(),
            ),
        ).rowcount
        order_id = conn.execute(
            "SELECT id FROM orders WHERE idempotency_key = ?", (o.idempotency_key,)
        ).fetchone()[0]
        if inserted:  # a step redone after a crash must not list the items twice
            _insert_lines(conn, order_id, o, now)
            if alerts is not None:  # operators hear of the order in its own transaction
                _insert_outbox(conn, alerts.messages(order_id, o, now), now)

    for reply in commit.replies:
        if order_id is not None and ORDER_ID_PLACEHOLDER in reply.text:
            reply = type(reply)(
                key=reply.key,
                channel=reply.channel,
                client_id=reply.client_id,
                text=reply.text.replace(ORDER_ID_PLACEHOLDER, str(order_id)),
                buttons=reply.buttons,
                route=reply.route,
                created_at=reply.created_at,
            )
        conn.execute(
            "INSERT OR IGNORE INTO outbox (key, channel, client_id, payload, status, attempts,"
            " not_before, last_error, created_at) VALUES (?, ?, ?, ?, 'pending', 0, 0, '', ?)",
            (reply.key, reply.channel, reply.client_id, reply.to_json(), now),
        )

    for outcome in commit.outcomes:
        conn.execute(
            "INSERT INTO dialog_outcomes (channel, client_id, outcome, last_step, message_count,"
            " duration_seconds, started_at, ended_at, order_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.channel,
                message.client_id,
                outcome.outcome,
                outcome.last_step,
                outcome.message_count,
                max(0.0, outcome.ended_at - outcome.started_at),
                outcome.started_at,
                outcome.ended_at,
                order_id if outcome.outcome in ("completed", "recovered") else None,
            ),
        )

    _change_handoff(conn, commit, now)
    client_key = message.client_key
    if commit.state is None:
        conn.execute("DELETE FROM dialog_states WHERE client_key = ?", (client_key,))
    else:
        conn.execute(
            "INSERT INTO dialog_states (client_key, state, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (client_key) DO UPDATE SET state = excluded.state,"
            " updated_at = excluded.updated_at",
            (client_key, commit.state, now),
        )

    conn.execute(
        "INSERT INTO message_logs (direction, channel, client_id, message_key, text,"
        " dialog_state, success, error, created_at) VALUES ('in', ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            message.channel,
            message.client_id,
            message.message_id,
            message.text,
            commit.state_name,
            commit.error is None,
            commit.error,
            now,
        ),
    )
    conn.execute("UPDATE inbound_queue SET done = 1 WHERE id = ?", (delivery.handle,))
    return order_id
