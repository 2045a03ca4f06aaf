"""QUEUE_SHARDS lowered while the shards above it still hold messages: workers and senders refuse
to start (those messages would wait unread), with a one-line error and exit code 2; a shard
stranded after the start is reported by the workers' housekeeping."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from orderbot.errors import ConfigError
from orderbot.queues.rabbitmq.broker import RabbitBroker
from orderbot.runtime.distributed import DistributedRuntime
from tests.distributed.conftest import (
    PG_URL,
    RABBIT_URL,
    REDIS_URL,
    distributed_settings,
    eventually,
    remove_namespace,
    require_services,
)

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def namespace() -> Iterator[str]:
    require_services()
    ns = "s" + uuid.uuid4().hex[:10]
    yield ns
    asyncio.run(remove_namespace(ns, shards=3))


async def _declare_three_shards(namespace: str, *, message_in: str | None) -> None:
    """What a deployment with QUEUE_SHARDS=3 leaves: its queues, and a message in one."""
    broker = RabbitBroker(RABBIT_URL, prefix=namespace, shards=3)
    await broker.open()
    try:
        if message_in == "inbound":
            await broker.publish(b"{}", broker.inbound_queue(2), message_id="left-behind")
        elif message_in == "outbox":
            await broker.publish(b"{}", broker.outbox_queue(2), message_id="left-behind")
    finally:
        await broker.aclose()


@pytest.mark.parametrize("queue", ["inbound", "outbox"])
async def test_a_worker_or_sender_refuses_to_start_below_shards_holding_messages(
    namespace: str, queue: str
) -> None:
    await _declare_three_shards(namespace, message_in=queue)
    for role in ("worker", "sender"):
        runtime = DistributedRuntime(distributed_settings(namespace), roles=(role,))
        try:
            with pytest.raises(ConfigError) as raised:
                await runtime.open()
        finally:
            await runtime.aclose()
        assert f"{namespace}.{queue}.2 holds 1 message(s)" in str(raised.value)
        assert "QUEUE_SHARDS=2" in str(raised.value)


async def test_empty_leftover_shards_and_the_server_do_not_stop_a_start(namespace: str) -> None:
    await _declare_three_shards(namespace, message_in=None)
    runtime = DistributedRuntime(distributed_settings(namespace), roles=("worker", "sender"))
    try:
        await runtime.open()  # shard 2 exists but is empty: nothing is stranded
    finally:
        await runtime.aclose()

    await _declare_three_shards(namespace, message_in="inbound")
    server = DistributedRuntime(distributed_settings(namespace), roles=())
    try:
        await server.open()  # the server only publishes to shards 0 and 1: it may run
        assert server.broker.connected
    finally:
        await server.aclose()


async def test_housekeeping_reports_a_shard_stranded_after_the_start(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A server not yet restarted still publishes with the old, larger QUEUE_SHARDS.
    runtime = DistributedRuntime(distributed_settings(namespace), roles=("worker",))
    try:
        await runtime.open()  # nothing stranded yet
        await _declare_three_shards(namespace, message_in="inbound")
        with caplog.at_level(logging.ERROR, logger="orderbot"):
            runtime.start()  # the housekeeping runs at once, then every minute
            await eventually(lambda: f"{namespace}.inbound.2 holds 1 message(s)" in caplog.text)
    finally:
        await runtime.aclose()


def test_the_worker_command_says_why_it_will_not_start(namespace: str) -> None:
    asyncio.run(_declare_three_shards(namespace, message_in="inbound"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHAT2DESK_")},
        "DATABASE_URL": PG_URL,
        "REDIS_URL": REDIS_URL,
        "RABBITMQ_URL": RABBIT_URL,
        "QUEUE_PREFIX": namespace,
        "QUEUE_SHARDS": "2",
        "CHAT2DESK_API_TOKEN": "test-token",
    }
    done = subprocess.run(
        [sys.executable, "-m", "orderbot", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"error: QUEUE_SHARDS=2 is lower than the shards in use: {namespace}.inbound.2" in (
        done.stderr
    )
