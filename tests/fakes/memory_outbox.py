"""An in-memory :class:`~orderbot.queues.base.Outbox` for sender tests.

It keeps the contract of the durable outboxes: ``claim`` returns pending items in creation order
(``not_before`` is carried, not filtered: the sender decides when to send), skips ``exclude``,
and leaves items pending until marked sent or dead-lettered. It also records the order of
operations, so tests can assert on what the sender did.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, replace

from orderbot.messages import OutboundMessage
from orderbot.queues.base import Outbox, OutboxItem

__all__ = ["MemoryDeadLetter", "MemoryOutbox"]


@dataclass(frozen=True)
class MemoryDeadLetter:
    handle: int
    message: OutboundMessage
    attempts: int
    last_error: str


class MemoryOutbox(Outbox):
    """Pending replies in a dict ordered by handle (creation order)."""

    def __init__(self) -> None:
        self._handles = itertools.count(1)
        self.pending: dict[int, OutboxItem] = {}
        self.sent: list[OutboxItem] = []
        self.dead: list[MemoryDeadLetter] = []
        self.reschedules: list[tuple[int, int, float, str]] = []
        self.claims = 0
        self._keys: set[str] = set()
        self._new_work = asyncio.Event()

    def put(self, message: OutboundMessage, *, not_before: float = 0.0) -> int | None:
        """Add a reply; None when its key is already known (the outboxes dedupe by key)."""
        if message.key in self._keys:
            return None
        self._keys.add(message.key)
        handle = next(self._handles)
        self.pending[handle] = OutboxItem(
            handle=handle, message=message, attempts=0, not_before=not_before
        )
        self._new_work.set()
        return handle

    def add(
        self, channel: str, client_id: str, text: str, *, not_before: float = 0.0, **fields: object
    ) -> int:
        """Shorthand for tests: a reply with a fresh key."""
        handle = self.put(
            OutboundMessage(
                key=f"k{len(self._keys) + 1}",
                channel=channel,
                client_id=client_id,
                text=text,
                created_at=time.time(),
                **fields,  # type: ignore[arg-type]  # tests pass buttons/route
            ),
            not_before=not_before,
        )
        assert handle is not None
        return handle

    async def claim(self, limit: int, exclude: set[int]) -> list[OutboxItem]:
        # Cleared before reading, so an item added after this claim wakes the next wait().
        self._new_work.clear()
        self.claims += 1
        found: list[OutboxItem] = []
        for handle, item in self.pending.items():
            if len(found) >= limit:
                break
            if handle not in exclude:
                found.append(item)
        return found

    async def mark_sent(self, handle: int) -> None:
        item = self.pending.pop(handle, None)
        if item is not None:
            self.sent.append(item)

    async def reschedule(self, handle: int, attempts: int, not_before: float, error: str) -> None:
        item = self.pending.get(handle)
        if item is None:
            return
        self.reschedules.append((handle, attempts, not_before, error))
        self.pending[handle] = replace(
            item, attempts=attempts, not_before=not_before, last_error=error
        )

    async def dead_letter(self, handle: int, attempts: int, error: str) -> None:
        item = self.pending.pop(handle, None)
        if item is not None:
            self.dead.append(MemoryDeadLetter(handle, item.message, attempts, error))

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._new_work.wait(), timeout)
