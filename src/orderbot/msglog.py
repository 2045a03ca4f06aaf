"""The outbound message log on PostgreSQL, written in batches.

Each reply the sender delivers (or gives up on) gets a ``message_logs`` row. Written one
transaction per reply, that insert was the largest cost of a sender process (three database
round trips per reply, more than the API call itself). Rows now wait here at most ``delay``
seconds and go in one multi-row insert per batch.

The log is a record, not the source of truth: whether a reply was sent is the ``sent:<key>``
mark in Redis, set before the message is acknowledged. So a batch that cannot be written is
logged and dropped (as the single-row insert did), and a crash loses at most the rows of the
last ``delay`` seconds; ``aclose()`` writes what is waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from orderbot.loggers import storage as log
from orderbot.schema import message_logs

__all__ = ["MessageLogWriter"]


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
                async with self._engine.begin() as conn:
                    await conn.execute(insert(message_logs), batch)
            except Exception as exc:  # the log must not hold up delivery
                log.warning(
                    "cannot write %d outbound message log rows: %s", len(batch), type(exc).__name__
                )
            else:
                self.written += len(batch)

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
