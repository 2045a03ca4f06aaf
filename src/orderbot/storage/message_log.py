"""The message log on PostgreSQL, written in batches.

Outbound (:class:`MessageLogWriter`). Each reply the sender delivers (or gives up on) gets a
``message_logs`` row. Written one transaction per reply, that insert was the largest cost of a
sender process (three database round trips per reply, more than the API call itself). Rows
now wait here at most ``delay`` seconds and go in one multi-row insert per batch.

The log is a record, not the source of truth: whether a reply was sent is the ``sent:<key>``
mark in Redis, set before the message is acknowledged. So a batch that cannot be written is
logged and dropped (as the single-row insert did), and a crash loses at most the rows of the
last ``delay`` seconds; ``aclose()`` writes what is waiting. A batch PostgreSQL refuses for
its values (:func:`~orderbot.storage.sql.refused_data`: an over-long client id, say) is
written again row by row, so only the bad row is dropped (logged with its key's length, not
its values).

Inbound (:class:`InboundLogBatcher`). A worker step's log row is its "rows written" mark, so
the step waits for it. Rows go in one conditional insert per batch (a row already there, from a
redo of the step, is skipped and its step told so), at most ``max_in_flight`` statements at a
time: rows that come while they are all out wait for the next one, so batches grow with the
load and a lone row goes at once. A batch refused for its values is written again row by row:
each step gets its own row's outcome, so one message's bad data never fails the steps of other
clients.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orderbot.loggers import storage as log
from orderbot.storage.batching import Batcher
from orderbot.storage.schema import message_logs
from orderbot.storage.sql import driver_error_name, refused_data

__all__ = ["InboundLogBatcher", "MessageLogWriter", "log_inbound"]

# One statement for many steps: insert each row unless its message is logged already.
_INSERT_INBOUND = text(
    "INSERT INTO message_logs (direction, channel, client_id, message_key, text, dialog_state,"
    " success, error, created_at)"
    " SELECT 'in', r.channel, r.client_id, r.message_key, r.text, r.dialog_state, r.success,"
    " r.error, r.created_at"
    " FROM unnest(CAST(:channel AS VARCHAR[]), CAST(:client_id AS VARCHAR[]),"
    " CAST(:message_key AS VARCHAR[]), CAST(:text AS TEXT[]), CAST(:dialog_state AS VARCHAR[]),"
    " CAST(:success AS BOOLEAN[]), CAST(:error AS TEXT[]),"
    " CAST(:created_at AS DOUBLE PRECISION[]))"
    " AS r(channel, client_id, message_key, text, dialog_state, success, error, created_at)"
    " WHERE NOT EXISTS (SELECT 1 FROM message_logs m WHERE m.channel = r.channel"
    " AND m.client_id = r.client_id AND m.direction = 'in' AND m.message_key = r.message_key)"
    " RETURNING channel, client_id, message_key"
)
_INBOUND_COLUMNS = (
    "channel",
    "client_id",
    "message_key",
    "text",
    "dialog_state",
    "success",
    "error",
    "created_at",
)


class MessageLogWriter:
    """Collects ``message_logs`` rows and inserts them in batches (see the module docstring)."""

    def __init__(self, engine: AsyncEngine, *, delay: float = 0.05, max_batch: int = 500) -> None:
        if delay < 0 or max_batch < 1:
            raise ValueError("delay must be >= 0 and max_batch >= 1")
        self._engine = engine
        self._delay = delay
        self._max_batch = max_batch
        self._rows: list[dict[str, Any]] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.written = 0

    def add(self, row: dict[str, Any]) -> None:
        """Queue one row (the columns of ``message_logs`` but its id)."""
        if self._closed:
            log.warning("message log closed; a row was not written")
            return
        self._rows.append(row)
        if len(self._rows) >= self._max_batch:
            self._full.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write_soon(), name="orderbot-message-log")

    async def _write_soon(self) -> None:
        while self._rows:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._delay)
            self._full.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what is waiting now."""
        while self._rows:
            batch, self._rows = self._rows[: self._max_batch], self._rows[self._max_batch :]
            try:
                await self._insert(batch)
            except Exception as exc:  # the log must not hold up delivery
                if len(batch) > 1 and refused_data(exc):
                    await self._insert_each(batch)
                    continue
                log.warning(
                    "cannot write %d outbound message log rows: %s", len(batch), type(exc).__name__
                )
            else:
                self.written += len(batch)

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(message_logs), rows)

    async def _insert_each(self, rows: list[dict[str, Any]]) -> None:
        """Rows of a batch PostgreSQL refused, one at a time: only the bad ones are dropped."""
        for row in rows:
            try:
                await self._insert([row])
            except Exception as exc:
                log.warning(
                    "dropped an outbound message log row (channel %s, client id of %d chars,"
                    " key of %d chars): %s",
                    row.get("channel"),
                    len(str(row.get("client_id", ""))),
                    len(str(row.get("message_key", ""))),
                    driver_error_name(exc),
                )
            else:
                self.written += 1

    async def aclose(self) -> None:
        """Write what is waiting and stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            self._full.set()
            with contextlib.suppress(Exception):
                await task
        await self.flush()


class InboundLogBatcher(Batcher[dict[str, Any], bool]):
    """Writes the inbound log rows of concurrent steps together (see the module docstring).
    Database errors reach every step of the batch (they retry their commit)."""

    def __init__(
        self, engine: AsyncEngine, *, max_batch: int = 500, max_in_flight: int = 2
    ) -> None:
        super().__init__(max_batch=max_batch, max_in_flight=max_in_flight)
        # Autocommit: the one statement is its own transaction.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def statements(self) -> int:
        """Statements sent so far."""
        return self.batches

    async def write(self, row: dict[str, Any]) -> bool:
        """Log one inbound message (``row`` has the columns of ``_INBOUND_COLUMNS``); False
        when it was logged before (a redo)."""
        return await self.submit(row)

    async def _send_batch(self, items: list[dict[str, Any]]) -> list[bool | BaseException]:
        try:
            async with self._engine.connect() as conn:
                return list(await log_inbound(conn, items))
        except Exception as exc:
            if len(items) == 1 or not refused_data(exc):
                raise
        # One row's values were refused: each row alone, each step told its own outcome.
        results: list[bool | BaseException] = []
        for item in items:
            try:
                async with self._engine.connect() as conn:
                    (written,) = await log_inbound(conn, [item])
            except Exception as exc:
                results.append(exc)
            else:
                results.append(written)
        return results


async def log_inbound(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[bool]:
    """Insert inbound log rows (the columns of ``_INBOUND_COLUMNS``) in ``conn``, each unless
    its message is logged already; for each row, whether it was written (False: a redo)."""
    params = {column: [row[column] for row in rows] for column in _INBOUND_COLUMNS}
    inserted = {tuple(r) for r in await conn.execute(_INSERT_INBOUND, params)}
    return [(row["channel"], row["client_id"], row["message_key"]) in inserted for row in rows]
