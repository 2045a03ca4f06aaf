"""On RabbitMQ, a reply parked for a slow retry while the channel was down goes out as soon as
the circuit breaker's probe succeeds, not at its retry time (issue 17, point 8)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from orderbot.messages import OutboundMessage
from orderbot.ratelimit import LocalRateLimiter
from orderbot.retry import CircuitBreaker, RetryPolicy
from orderbot.runtime.distributed import DistributedRuntime
from orderbot.sender import Sender
from tests.distributed.conftest import (
    RecordingChannel,
    distributed_settings,
    eventually,
    migrate_postgres,
    remove_namespace,
    require_services,
)

pytestmark = [pytest.mark.timeout(60)]


def _reply(client: str, n: int) -> OutboundMessage:
    return OutboundMessage(
        key=f"{client}:{n}", channel="chat2desk", client_id=client, text=f"reply {n}"
    )


async def test_a_parked_reply_goes_out_when_the_probe_succeeds() -> None:
    require_services()
    await migrate_postgres()
    namespace = "t" + uuid.uuid4().hex[:10]
    settings = distributed_settings(namespace, queue_shards=1)
    runtime = DistributedRuntime(settings, channels={}, flow=None)
    await runtime.open()
    stop = asyncio.Event()
    running: asyncio.Task[None] | None = None
    try:
        first, second = f"{namespace}-a", f"{namespace}-b"
        channel = RecordingChannel()
        channel.failures[f"{first}:0"] = 2  # then the breaker opens and it waits 60 s
        sender = Sender(
            runtime.outbox,
            {"chat2desk": channel},
            rate_limiter=LocalRateLimiter(600_000),
            policy=RetryPolicy(quick_delays=(0.05,), slow_delay=60, max_attempts=50),
            breaker_factory=lambda name: CircuitBreaker(name, failure_threshold=2, cooldown=0.3),
            poll_interval=0.05,
            drain_timeout=2.0,
        )
        await runtime.outbox.put([_reply(first, 0), _reply(first, 1)])
        running = asyncio.create_task(sender.run(stop))
        await eventually(lambda: channel.attempts.get(f"{first}:0") == 2, timeout=10)
        await runtime.outbox.put([_reply(second, 0)])  # the probe, once the breaker half-opens
        await eventually(lambda: len(channel.sent) == 3, timeout=15)
        assert channel.keys(first) == [f"{first}:0", f"{first}:1"]  # in order
        assert channel.attempts[f"{first}:0"] == 3  # sent once, not twice
        await asyncio.sleep(0.5)
        assert len(channel.sent) == 3
    finally:
        stop.set()
        if running is not None:
            await running
        await runtime.aclose()
        await remove_namespace(namespace, shards=1)
