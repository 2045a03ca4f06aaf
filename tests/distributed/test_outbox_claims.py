"""The outbox on RabbitMQ hands out replies in rounds; Redis (or the sender) failing part-way
through must not leave a client marked busy with a reply nobody sends.

A reply handed out is marked busy in the outbox's memory until the sender reports on it (sent,
rescheduled, dead-lettered). If the reply never reaches the sender, or the sender drops it
without a report, nothing clears the mark, and every later reply of that client (a parked
reply republished from Redis included) waits unsent until the sender process restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from orderbot.messages import OutboundMessage
from orderbot.queues.rabbitmq.broker import shard_of
from orderbot.queues.rabbitmq.leases import ShardLeases
from orderbot.ratelimit import LocalRateLimiter
from orderbot.retry import RetryPolicy
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


class _BrokenPipeline:
    """A pipeline whose ``execute`` fails as a Redis restart makes it fail."""

    async def __aenter__(self) -> _BrokenPipeline:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None

    async def execute(self) -> list[Any]:
        raise RedisConnectionError("Connection closed by server.")


class _FailingPipelines:
    """Redis, with the pipelines numbered ``fail`` broken (counted from 1)."""

    def __init__(self, redis: Any, fail: set[int]) -> None:
        self._redis = redis
        self._fail = fail
        self.pipelines = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        self.pipelines += 1
        if self.pipelines in self._fail:
            return _BrokenPipeline()
        return self._redis.pipeline(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)


def _reply(client: str, n: int) -> OutboundMessage:
    return OutboundMessage(
        key=f"{client}:{n}", channel="chat2desk", client_id=client, text=f"reply {n}"
    )


def _sender(runtime: DistributedRuntime, channel: RecordingChannel) -> Sender:
    return Sender(
        runtime.outbox,
        {"chat2desk": channel},
        rate_limiter=LocalRateLimiter(600_000),
        policy=RetryPolicy(quick_delays=(0.2, 0.2, 0.2), slow_delay=1, max_attempts=50),
        poll_interval=0.05,
        drain_timeout=2.0,
    )


async def test_replies_handed_out_before_redis_fails_in_the_same_claim_are_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One claim, two rounds: the first drops a copy already sent (its client's next reply is
    scheduled again) and hands out another client's reply; the second round's Redis call fails.
    The reply handed out in the first round must still reach the sender."""
    require_services()
    await migrate_postgres()
    namespace = "t" + uuid.uuid4().hex[:10]
    settings = distributed_settings(namespace, queue_shards=1)
    runtime = DistributedRuntime(settings, channels={}, flow=None)
    await runtime.open()
    stop = asyncio.Event()
    running: asyncio.Task[None] | None = None
    try:
        outbox = runtime.outbox
        copied, other = f"{namespace}-a", f"{namespace}-b"
        assert shard_of(f"chat2desk:{copied}", 1) == shard_of(f"chat2desk:{other}", 1)
        # The first reply of ``copied`` was sent already (a copy left by a redone step).
        await runtime.redis.set(outbox._keys.sent(f"{copied}:0"), "1", ex=60)
        await outbox.put([_reply(copied, 0), _reply(copied, 1)])
        await outbox.put([_reply(other, 0), _reply(other, 1)])
        await outbox.consumer.start()
        await eventually(lambda: sum(len(line) for line in outbox._lines.values()) == 4)
        failing = _FailingPipelines(outbox._redis, fail={2})
        monkeypatch.setattr(outbox, "_redis", failing)
        channel = RecordingChannel()
        running = asyncio.create_task(_sender(runtime, channel).run(stop))
        with contextlib.suppress(AssertionError):
            await eventually(lambda: len(channel.sent) >= 3, timeout=10)
        assert failing.pipelines >= 2, "the claim never reached its second round"
        assert channel.keys(other) == [f"{other}:0", f"{other}:1"], (
            "the reply handed out before Redis failed was never sent: its client stays busy"
        )
        assert channel.keys(copied) == [f"{copied}:1"]
    finally:
        stop.set()
        if running is not None:
            await running
        await runtime.aclose()
        await remove_namespace(namespace, shards=1)


async def test_a_reply_dropped_by_a_failed_lane_is_handed_out_again() -> None:
    """The sender's last line of defence (a lane that fails outside any send) gives its reply
    back: the outbox hands it out again, and the client's later replies follow it."""
    require_services()
    await migrate_postgres()
    namespace = "t" + uuid.uuid4().hex[:10]
    settings = distributed_settings(namespace, queue_shards=1)
    runtime = DistributedRuntime(settings, channels={}, flow=None)
    await runtime.open()
    stop = asyncio.Event()
    running: asyncio.Task[None] | None = None
    try:
        client = f"{namespace}-a"
        await runtime.outbox.put([_reply(client, n) for n in range(3)])
        channel = RecordingChannel()
        sender = _sender(runtime, channel)
        process = sender._process
        failed: list[str] = []

        async def fails_once(item: Any) -> Any:
            if not failed:
                failed.append(item.message.key)
                raise RuntimeError("a bug outside the send")
            return await process(item)

        sender._process = fails_once  # type: ignore[method-assign]
        running = asyncio.create_task(sender.run(stop))
        with contextlib.suppress(AssertionError):
            await eventually(lambda: len(channel.sent) >= 3, timeout=10)
        assert failed == [f"{client}:0"]
        assert channel.keys(client) == [f"{client}:{n}" for n in range(3)]
    finally:
        stop.set()
        if running is not None:
            await running
        await runtime.aclose()
        await remove_namespace(namespace, shards=1)


@pytest.mark.parametrize("leased", [False, True], ids=["all-shards", "leased"])
async def test_a_channel_the_broker_closes_is_consumed_again(leased: bool) -> None:
    """RabbitMQ closes a channel on its own (a consumer timeout, a channel error) while the
    connection stays up. Nothing reopened it: the shard had no consumer until a restart."""
    require_services()
    await migrate_postgres()
    namespace = "t" + uuid.uuid4().hex[:10]
    settings = distributed_settings(namespace, queue_shards=1)
    runtime = DistributedRuntime(settings, channels={}, flow=None)
    await runtime.open()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        outbox = runtime.outbox
        if leased:
            outbox.consumer.leased = True
            leases = ShardLeases(
                runtime.redis, outbox, prefix=namespace, role="outbox", shards=1, interval=0.2
            )
            tasks.append(asyncio.create_task(leases.run(stop)))
        client = f"{namespace}-a"
        await outbox.put([_reply(client, 0)])
        channel = RecordingChannel()
        tasks.append(asyncio.create_task(_sender(runtime, channel).run(stop)))
        await eventually(lambda: len(channel.sent) == 1, timeout=10)
        consumer = outbox._shards._channels[0]
        underlay = await consumer.get_underlay_channel()
        # An ack of a delivery tag the channel never had: RabbitMQ closes the channel (406).
        await underlay.basic_ack(delivery_tag=10**6)
        await eventually(lambda: consumer.is_closed, timeout=10)
        await outbox.put([_reply(client, 1)])
        with contextlib.suppress(AssertionError):
            await eventually(lambda: len(channel.sent) == 2, timeout=10)
        assert channel.keys(client) == [f"{client}:0", f"{client}:1"]
        assert outbox.consumer.consuming == [0]
    finally:
        stop.set()
        for task in tasks:
            await task
        await runtime.aclose()
        await remove_namespace(namespace, shards=1)
