"""The in-flight batching behind the Redis and message-log batchers, without services."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from orderbot.storage.batching import Batcher


class Doubler(Batcher[int, int]):
    """Doubles numbers; a batch waits on ``gate``; 13 fails by itself, 666 fails the batch."""

    def __init__(self, max_in_flight: int = 1) -> None:
        super().__init__(max_batch=100, max_in_flight=max_in_flight)
        self.gate = asyncio.Event()
        self.gate.set()
        self.sent: list[list[int]] = []

    async def _send_batch(self, items: list[int]) -> Sequence[int | BaseException]:
        self.sent.append(list(items))
        await self.gate.wait()
        if 666 in items:
            raise OSError("connection lost")
        return [ValueError("unlucky") if i == 13 else i * 2 for i in items]


async def test_a_lone_item_goes_at_once_and_gets_its_result() -> None:
    doubler = Doubler()
    assert await doubler.submit(21) == 42
    assert doubler.sent == [[21]]


async def test_items_that_come_while_a_batch_is_out_wait_for_the_next_one_together() -> None:
    doubler = Doubler(max_in_flight=1)
    doubler.gate.clear()
    first = asyncio.create_task(doubler.submit(1))
    await asyncio.sleep(0.01)  # the first batch is out, blocked
    later = [asyncio.create_task(doubler.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert doubler.sent == [[1]]
    doubler.gate.set()
    assert await first == 2
    assert [await t for t in later] == [4, 6, 8]
    assert doubler.sent == [[1], [2, 3, 4]]
    assert (doubler.batches, doubler.items) == (2, 4)


async def test_more_batches_in_flight_when_allowed() -> None:
    doubler = Doubler(max_in_flight=2)
    doubler.gate.clear()
    first = asyncio.create_task(doubler.submit(1))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(doubler.submit(2))
    await asyncio.sleep(0.01)
    assert doubler.sent == [[1], [2]]  # the second did not wait for the first
    doubler.gate.set()
    assert (await first, await second) == (2, 4)


async def test_an_item_error_fails_only_its_caller_and_a_batch_error_fails_all() -> None:
    doubler = Doubler()
    results = await asyncio.gather(
        doubler.submit(1), doubler.submit(13), doubler.submit(2), return_exceptions=True
    )
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], ValueError)
    failed = await asyncio.gather(doubler.submit(5), doubler.submit(666), return_exceptions=True)
    assert [type(r) for r in failed] == [OSError, OSError]
    assert await doubler.submit(7) == 14  # and the batcher goes on


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        Doubler(max_in_flight=0)
