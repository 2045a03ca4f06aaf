"""Work items of concurrent tasks handled together, in batches that grow with the load.

Many tasks each want one small round trip at about the same moment (a Redis command, a log
row). :class:`Batcher` sends them in batches, at most ``max_in_flight`` at a time: an item
submitted while they are all out waits for the next batch, together with everything else
submitted meanwhile. An idle process sends a lone item at once (no added latency); a busy one
sends few, large batches. Each caller gets its own result or its own error.

Subclasses say how one batch is sent (:meth:`Batcher._send_batch`): one result per item, in
order, where an exception instance is that item's error.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class Batcher(ABC, Generic[ItemT, ResultT]):
    """``max_batch`` bounds one batch (more pending items make several)."""

    def __init__(self, *, max_batch: int, max_in_flight: int) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._scheduled = False
        self._in_flight = 0
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0  # sent so far (tests and benchmarks read these)
        self.items = 0

    async def submit(self, item: ItemT) -> ResultT:
        """Add ``item`` to the next batch and return its result (or raise its error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled and self._in_flight < self._max_in_flight:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    @abstractmethod
    async def _send_batch(self, items: list[ItemT]) -> Sequence[ResultT | BaseException]:
        """Send ``items``; one result (or error) per item, in order. An exception raised here
        fails every item of the batch (see :meth:`_batch_error`)."""

    def _batch_error(self, exc: BaseException) -> BaseException:
        """The error given to each caller when a whole batch failed with ``exc``."""
        return exc

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and self._in_flight < self._max_in_flight:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._in_flight += 1
            task = asyncio.ensure_future(self._send(batch))
            self._running.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._in_flight -= 1
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _send(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._send_batch([item for item, _ in batch])
        except BaseException as exc:
            error = self._batch_error(exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
