"""Embedded queues: tables in the orderbot SQLite file, accessed through one SqliteDatabase.

``inbound_queue`` rows stay (``done = 1``) for a week after processing so that a redelivered
message id is recognised; ``outbox`` rows likewise keep their key once sent or dead.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import sqlite3
import time
from collections.abc import Iterable

import orjson

from orderbot.loggers import storage as log
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.queues.base import (
    DeadLetter,
    DeadLetterQueue,
    InboundDelivery,
    InboundQueue,
    Outbox,
    OutboxItem,
    QueueDepths,
)
from orderbot.storage.sqlite import SqliteDatabase

__all__ = ["SqliteDeadLetterQueue", "SqliteInboundQueue", "SqliteOutbox", "Wakeup", "queue_depths"]

KEEP_PROCESSED_SECONDS = 7 * 24 * 3600


class Wakeup:
    """Tells one waiting consumer in this process that new work was committed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


def _in_clause(values: Iterable[object]) -> str:
    return ",".join("?" for _ in values)


def queue_depths(conn: sqlite3.Connection) -> QueueDepths:
    inbound = conn.execute("SELECT count(*) FROM inbound_queue WHERE done = 0").fetchone()[0]
    pending = conn.execute(
        "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')"
    ).fetchone()[0]
    dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    return QueueDepths(inbound=inbound, outbox=pending, dead_letter=dead)


class SqliteInboundQueue(InboundQueue):
    """Inbound messages in the ``inbound_queue`` table, handed out in id (arrival) order."""

    def __init__(
        self,
        db: SqliteDatabase,
        *,
        channels: Iterable[str] | None = None,
        wakeup: Wakeup | None = None,
    ) -> None:
        self._db = db
        self._channels = tuple(channels) if channels is not None else None
        self.wakeup = wakeup or Wakeup()
        self._last_id = 0  # everything at or below was handed out by this process

    async def put(self, message: InboundMessage) -> bool:
        params = (
            message.dedupe_key,
            message.channel,
            message.client_key,
            message.to_json(),
            message.received_at,
        )

        def insert(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO inbound_queue"
                " (dedupe_key, channel, client_key, payload, created_at, done, deliveries)"
                " VALUES (?, ?, ?, ?, ?, 0, 0)",
                params,
            )
            return cur.rowcount == 1

        stored = await self._db.run(insert, savepoint=False)
        if stored:
            self.wakeup.set()
        return stored

    async def fetch(self, limit: int) -> list[InboundDelivery]:
        channels = self._channels
        last_id = self._last_id

        def take(conn: sqlite3.Connection) -> list[InboundDelivery]:
            sql = "SELECT id, payload, deliveries FROM inbound_queue WHERE done = 0 AND id > ?"
            args: list[object] = [last_id]
            if channels is not None:
                sql += f" AND channel IN ({_in_clause(channels)})"
                args.extend(channels)
            rows = conn.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
            if not rows:
                return []
            ids = [r[0] for r in rows]
            marks = _in_clause(ids)  # only "?" placeholders; the values are bound
            conn.execute(
                f"UPDATE inbound_queue SET deliveries = deliveries + 1 WHERE id IN ({marks})",  # noqa: S608
                ids,
            )
            return [
                InboundDelivery(
                    handle=r[0], message=InboundMessage.from_json(r[1]), deliveries=r[2] + 1
                )
                for r in rows
            ]

        deliveries = await self._db.run(take)
        if deliveries:
            self._last_id = deliveries[-1].handle
        return deliveries

    async def wait(self, timeout: float) -> None:
        await self.wakeup.wait(timeout)

    async def dead_letter(self, delivery: InboundDelivery, error: str) -> None:
        message = delivery.message
        now = time.time()

        def move(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO dead_letters"
                " (kind, key, channel, client_id, payload, attempts, last_error, created_at)"
                " VALUES ('inbound', ?, ?, ?, ?, ?, ?, ?)",
                (
                    message.dedupe_key,
                    message.channel,
                    message.client_id,
                    message.to_json(),
                    delivery.deliveries,
                    error,
                    now,
                ),
            )
            conn.execute("UPDATE inbound_queue SET done = 1 WHERE id = ?", (delivery.handle,))

        await self._db.run(move)

    async def depth(self) -> QueueDepths:
        return await self._db.run(queue_depths)

    async def prune(self, older_than: float = KEEP_PROCESSED_SECONDS) -> int:
        """Forget processed ids older than ``older_than`` seconds (redeliveries end long before)."""
        cutoff = time.time() - older_than

        def prune(conn: sqlite3.Connection) -> int:
            a = conn.execute(
                "DELETE FROM inbound_queue WHERE done = 1 AND created_at < ?", (cutoff,)
            ).rowcount
            b = conn.execute(
                "DELETE FROM outbox WHERE status = 'sent' AND created_at < ?", (cutoff,)
            ).rowcount
            return int(a + b)

        return await self._db.run(prune)


class SqliteOutbox(Outbox):
    """Replies in the ``outbox`` table. ``channels`` limits this process to the channels it can
    send through (``orderbot chat`` sends only its own local replies)."""

    def __init__(
        self,
        db: SqliteDatabase,
        *,
        channels: Iterable[str] | None = None,
        wakeup: Wakeup | None = None,
    ) -> None:
        self._db = db
        self._channels = tuple(channels) if channels is not None else None
        self.wakeup = wakeup or Wakeup()
        self._marked: set[int] = set()  # claimed and marked 'sending', not yet tried

    async def claim(self, limit: int, exclude: set[int]) -> list[OutboxItem]:
        channels = self._channels
        skip = set(exclude)

        def take(conn: sqlite3.Connection) -> tuple[list[OutboxItem], list[int]]:
            sql = (
                "SELECT id, payload, attempts, not_before, last_error, status, sent_at FROM outbox"
                " WHERE status IN ('pending', 'sending')"
            )
            args: list[object] = []
            if channels is not None:
                sql += f" AND channel IN ({_in_clause(channels)})"
                args.extend(channels)
            rows = conn.execute(sql + " ORDER BY id LIMIT ?", (*args, limit + len(skip))).fetchall()
            items = [
                OutboxItem(
                    handle=r[0],
                    message=OutboundMessage.from_json(r[1]),
                    attempts=r[2],
                    not_before=r[3],
                    last_error=r[4],
                    in_doubt_since=r[6] if r[5] == "sending" else None,
                )
                for r in rows
                if r[0] not in skip
            ][:limit]
            # Marked "sending" now, in the claim's own transaction, so the first send of each
            # needs no write of its own; after a crash they come back in doubt and are checked.
            fresh = [i.handle for i in items if i.in_doubt_since is None and i.not_before <= now]
            if fresh:
                conn.execute(
                    "UPDATE outbox SET status = 'sending', sent_at = ?"  # noqa: S608 - "?" marks only
                    f" WHERE id IN ({_in_clause(fresh)}) AND status = 'pending'",
                    (now, *fresh),
                )
            return items, fresh

        now = time.time()
        items, fresh = await self._db.run(take)
        self._marked.update(fresh)
        return items

    async def begin_send(self, handle: int) -> None:
        if handle in self._marked:  # marked when claimed; this is its first send
            self._marked.discard(handle)
            return
        now = time.time()
        # sent_at holds when the last send started while the status is 'sending'
        await self._db.run(
            lambda conn: conn.execute(
                "UPDATE outbox SET status = 'sending', sent_at = ?"
                " WHERE id = ? AND status IN ('pending', 'sending')",
                (now, handle),
            )
        )

    async def mark_sent(self, handle: int) -> None:
        self._marked.discard(handle)
        now = time.time()

        def sent(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "UPDATE outbox SET status = 'sent', sent_at = ?"
                " WHERE id = ? AND status IN ('pending', 'sending')"
                " RETURNING channel, client_id, key, payload",
                (now, handle),
            ).fetchone()
            if row is not None:
                _log_outbound(conn, row, success=True, error=None, now=now)

        await self._db.run(sent)

    async def reschedule(self, handle: int, attempts: int, not_before: float, error: str) -> None:
        self._marked.discard(handle)
        await self._db.run(
            lambda conn: conn.execute(
                "UPDATE outbox SET status = 'pending', attempts = ?, not_before = ?,"
                " last_error = ? WHERE id = ? AND status IN ('pending', 'sending')",
                (attempts, not_before, error, handle),
            )
        )

    async def dead_letter(self, handle: int, attempts: int, error: str) -> None:
        self._marked.discard(handle)
        now = time.time()

        def move(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "UPDATE outbox SET status = 'dead', attempts = ?, last_error = ?"
                " WHERE id = ? AND status IN ('pending', 'sending')"
                " RETURNING channel, client_id, key, payload",
                (attempts, error, handle),
            ).fetchone()
            if row is None:
                return
            conn.execute(
                "INSERT INTO dead_letters"
                " (kind, key, channel, client_id, payload, attempts, last_error, created_at)"
                " VALUES ('outbox', ?, ?, ?, ?, ?, ?, ?)",
                (row[2], row[0], row[1], row[3], attempts, error, now),
            )
            _log_outbound(conn, row, success=False, error=error, now=now)

        await self._db.run(move)

    async def wait(self, timeout: float) -> None:
        await self.wakeup.wait(timeout)


def _log_outbound(
    conn: sqlite3.Connection,
    row: tuple[str, str, str, bytes],
    *,
    success: bool,
    error: str | None,
    now: float,
) -> None:
    text = orjson.loads(row[3]).get("text", "")
    conn.execute(
        "INSERT INTO message_logs"
        " (direction, channel, client_id, message_key, text, success, error, created_at)"
        " VALUES ('out', ?, ?, ?, ?, ?, ?, ?)",
        (row[0], row[1], row[2], text, success, error, now),
    )


class SqliteDeadLetterQueue(DeadLetterQueue):
    def __init__(
        self,
        db: SqliteDatabase,
        *,
        outbox_wakeup: Wakeup | None = None,
        inbound_wakeup: Wakeup | None = None,
    ) -> None:
        self._db = db
        self._outbox_wakeup = outbox_wakeup
        self._inbound_wakeup = inbound_wakeup

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        def read(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                "SELECT id, kind, key, channel, client_id, payload, attempts, last_error,"
                " created_at FROM dead_letters ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [DeadLetter(*r) for r in rows]

        return await self._db.run(read)

    async def replay(self, ids: builtins.list[int] | None) -> int:
        """Send dead replies again (fresh attempts) and put dead inbound messages back on the
        inbound queue (as new rows, so a running worker sees them)."""

        def replay(conn: sqlite3.Connection) -> int:
            sql = "SELECT id, kind, key, payload FROM dead_letters"
            args: list[object] = []
            if ids is not None:
                sql += f" WHERE id IN ({_in_clause(ids)})"
                args = list(ids)
            count = 0
            for dl_id, kind, key, payload in conn.execute(sql, args).fetchall():
                if kind == "outbox":
                    conn.execute(
                        "UPDATE outbox SET status = 'pending', attempts = 0, not_before = 0,"
                        " last_error = '' WHERE key = ?",
                        (key,),
                    )
                else:
                    try:
                        message = InboundMessage.from_json(payload)
                    except (ValueError, KeyError, TypeError):
                        log.warning("dead letter %s is unreadable; kept in the queue", dl_id)
                        continue
                    conn.execute("DELETE FROM inbound_queue WHERE dedupe_key = ?", (key,))
                    conn.execute(
                        "INSERT INTO inbound_queue"
                        " (dedupe_key, channel, client_key, payload, created_at, done, deliveries)"
                        " VALUES (?, ?, ?, ?, ?, 0, 0)",
                        (key, message.channel, message.client_key, payload, time.time()),
                    )
                conn.execute("DELETE FROM dead_letters WHERE id = ?", (dl_id,))
                count += 1
            return count

        count = await self._db.run(replay)
        for wakeup in (self._outbox_wakeup, self._inbound_wakeup):
            if wakeup is not None and count:
                wakeup.set()
        return count

    async def delete(self, ids: builtins.list[int] | None) -> int:
        """Delete the dead letters ``ids`` (all when None); a deleted reply is never sent."""
        if ids is None:
            return await self.purge()

        def delete(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                f"DELETE FROM dead_letters WHERE id IN ({_in_clause(ids)})"  # noqa: S608
                " RETURNING kind, key",
                list(ids),
            ).fetchall()
            return len(rows)

        return await self._db.run(delete) if ids else 0

    async def purge(self) -> int:
        return await self._db.run(lambda conn: conn.execute("DELETE FROM dead_letters").rowcount)
