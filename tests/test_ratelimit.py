"""The in-process token bucket, on a fake clock whose sleep advances time."""

from __future__ import annotations

import asyncio

import pytest

from orderbot.ratelimit import LocalRateLimiter, RateLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_burst_then_steady_rate() -> None:
    t = FakeTime()
    limiter = LocalRateLimiter(300, clock=t.clock, sleep=t.sleep)  # 5/s, burst 5
    assert limiter.burst == 5
    waits = [await limiter.acquire() for _ in range(5)]
    assert waits == [0.0] * 5
    for _ in range(10):
        assert await limiter.acquire() == pytest.approx(0.2)
    assert t.now == pytest.approx(2.0)


async def test_rate_over_a_long_run_is_respected() -> None:
    t = FakeTime()
    limiter = LocalRateLimiter(120, clock=t.clock, sleep=t.sleep)  # 2/s, burst 2
    for _ in range(1000):
        await limiter.acquire()
    # 2 free from the burst, then 998 at 2/s.
    assert t.now == pytest.approx(499.0)


async def test_idle_time_refills_up_to_the_burst_only() -> None:
    t = FakeTime()
    limiter = LocalRateLimiter(60, burst=3, clock=t.clock, sleep=t.sleep)  # 1/s
    for _ in range(3):
        await limiter.acquire()
    t.now += 100
    assert [await limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await limiter.acquire() == pytest.approx(1.0)


async def test_concurrent_waiters_are_spaced_in_arrival_order() -> None:
    t = FakeTime()

    async def sleep_without_advancing(seconds: float) -> None:
        t.sleeps.append(seconds)

    # All four ask at the same instant: each reserves the next token in turn.
    limiter = LocalRateLimiter(60, burst=1, clock=t.clock, sleep=sleep_without_advancing)
    waits = await asyncio.gather(*(limiter.acquire() for _ in range(4)))
    assert waits == pytest.approx([0.0, 1.0, 2.0, 3.0])


async def test_high_rate_is_not_a_bottleneck() -> None:
    t = FakeTime()
    limiter = LocalRateLimiter(60_000, clock=t.clock, sleep=t.sleep)
    assert limiter.burst == 1000
    for _ in range(1000):
        assert await limiter.acquire() == 0.0


async def test_a_cancelled_waiter_gives_its_token_back() -> None:
    limiter = LocalRateLimiter(60, burst=1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter._tokens == pytest.approx(0.0, abs=0.05)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        LocalRateLimiter(0)
    with pytest.raises(ValueError):  # noqa: PT011
        LocalRateLimiter(60, burst=0.5)


async def test_is_a_rate_limiter_and_a_context_manager() -> None:
    async with LocalRateLimiter(60) as limiter:
        assert isinstance(limiter, RateLimiter)
