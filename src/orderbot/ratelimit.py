"""Outbound rate limiting: at most ``OUTBOUND_RATE_LIMIT`` replies a minute, all clients together.

:class:`RateLimiter` is the interface the sender uses; :class:`LocalRateLimiter` is an in-process
token bucket (embedded profile); :class:`RedisRateLimiter` shares the budget across sender
processes (distributed profile).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from orderbot import metrics

if TYPE_CHECKING:  # redis is an optional dependency (the distributed profile)
    from redis.asyncio import Redis

    from orderbot.storage.redis import RedisBatcher

__all__ = ["LocalRateLimiter", "RateLimiter", "RedisRateLimiter"]


class RateLimiter(ABC):
    """Grants one send at a time, within a rate."""

    @abstractmethod
    async def acquire(self) -> float:
        """Wait until one send is allowed; return the seconds waited (0.0 when none)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook; the local limiter owns nothing
        """Release what the limiter holds (connections of a shared implementation)."""

    async def __aenter__(self) -> RateLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class LocalRateLimiter(RateLimiter):
    """A token bucket in this process.

    Tokens refill at ``rate_per_minute / 60`` a second up to ``burst`` (default: one second's
    worth, at least 1). A caller that finds the bucket empty reserves the next token by taking
    the bucket into debt, then sleeps until that token exists: waiters are served in arrival
    order without a lock, and the limiter costs one subtraction per send when not limiting.
    """

    def __init__(
        self,
        rate_per_minute: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        self._rate = rate_per_minute / 60.0
        self._burst = max(1.0, self._rate) if burst is None else burst
        if self._burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock = clock
        self._sleep = sleep
        self._tokens = self._burst
        self._updated = clock()

    @property
    def rate_per_second(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    async def acquire(self) -> float:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self._rate
        metrics.RATE_LIMIT_WAITS.inc()
        try:
            await self._sleep(wait)
        except BaseException:
            # The reserved token goes unused; hand it back so cancelled waiters do not slow
            # everyone behind them.
            self._tokens += 1.0
            raise
        return wait


# Token bucket in one Redis hash, refilled by the server's clock (all senders share one time).
# A caller that finds it empty takes it into debt and is told how long to sleep, so waiters
# across processes are served in arrival order. Returns the wait in microseconds.
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1]) or burst
local ts = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate) - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
if tokens >= 0 then return 0 end
return math.ceil(-tokens / rate * 1000000)
"""


class RedisRateLimiter(RateLimiter):
    """The token bucket of :class:`LocalRateLimiter`, kept in Redis and shared by every sender
    process (one bucket per ``key``, e.g. per Chat2Desk token). Redis errors propagate: the
    sender then defers the reply without spending an attempt."""

    def __init__(
        self,
        redis: Redis,
        key: str,
        rate_per_minute: float,
        *,
        burst: float | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        batcher: RedisBatcher | None = None,
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        self._redis = redis
        self._key = key
        self._rate = rate_per_minute / 60.0
        self._burst = max(1.0, self._rate) if burst is None else burst
        if self._burst < 1:
            raise ValueError("burst must be at least 1")
        self._sleep = sleep
        from orderbot.storage.redis import RedisBatcher

        self._take = redis.register_script(_BUCKET_LUA)
        self._batch = batcher or RedisBatcher(redis)  # concurrent sends share a pipeline

    async def acquire(self) -> float:
        micros = int(
            await self._batch.script(
                self._take, keys=(self._key,), args=(repr(self._rate), repr(self._burst))
            )
        )
        if micros <= 0:
            return 0.0
        wait = micros / 1_000_000
        metrics.RATE_LIMIT_WAITS.inc()
        try:
            await self._sleep(wait)
        except BaseException:
            # Hand the reserved token back (best effort) so others are not slowed by it.
            with contextlib.suppress(Exception):
                await self._redis.hincrbyfloat(self._key, "tokens", 1.0)
            raise
        return wait
