"""Outages of RabbitMQ and Redis, with real processes. RabbitMQ is made unreachable through a
TCP proxy the test owns (connections cut, connection refused while it is down); Redis is a
private ``redis-server`` the test stops and starts again. The shared services are untouched."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from tests.distributed.conftest import RABBIT_URL
from tests.distributed.faults import PrivateRedis, TcpProxy
from tests.distributed.test_processes import (
    CONVERSATION,
    SHARDS,
    Process,
    check_replies,
    converse_one,
    count_orders,
    environment,
    expected_texts,
    fake,  # noqa: F401 - fixture
    migrate_postgres,
    namespace,  # noqa: F401 - fixture
    wait_ready,
    wait_replies,
)
from tests.fakes.chat2desk import ThreadedFakeChat2Desk
from tests.support.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

RABBIT_PORT = int(RABBIT_URL.rsplit(":", 1)[1].split("/")[0])


def via(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/"


def payload(client_id: str, i: int) -> dict[str, Any]:
    return {
        "message_id": f"{client_id}-{i}",
        "client_id": client_id,
        "text": CONVERSATION[i % len(CONVERSATION)],
        "type": "from_client",
        "transport": "whatsapp",
        "channel_id": 7,
    }


async def inbound_count(prefix: str) -> int:
    connection = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await connection.channel()
        total = 0
        for shard in range(SHARDS):
            queue = await channel.declare_queue(f"{prefix}.inbound.{shard}", passive=True)
            total += int(queue.declaration_result.message_count or 0)
        return total
    finally:
        await connection.close()


async def test_webhook_answers_503_while_rabbitmq_is_unreachable_and_200_after(
    fake: ThreadedFakeChat2Desk,  # noqa: F811
    namespace: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    await migrate_postgres()
    port = free_port()
    with TcpProxy(RABBIT_PORT) as proxy:
        env = {**environment(namespace, fake, port), "RABBITMQ_URL": via(proxy.port)}
        url = f"http://127.0.0.1:{port}"
        server = Process(["serve"], env, tmp_path / "serve.log")
        try:
            await wait_ready(url, [server])
            stored: set[str] = set()
            statuses: list[int] = []
            base = random.randrange(10**8, 10**9)
            async with httpx.AsyncClient(timeout=15) as http:

                async def post(n: int) -> httpx.Response:
                    r = await http.post(url + "/webhook/chat2desk", json=payload(str(base + n), 0))
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        stored.add(str(base + n))
                    return r

                assert (await post(0)).status_code == 200
                assert (await http.get(url + "/health")).status_code == 200

                proxy.cut()
                n = 1
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    r = await post(n)
                    n += 1
                    if r.status_code == 503:
                        break
                    await asyncio.sleep(0.05)
                assert r.status_code == 503, statuses
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"] == "unavailable"
                health = await http.get(url + "/health")
                assert health.status_code == 503
                assert health.json()["status"] == "unhealthy"
                assert health.json()["checks"]["rabbitmq"] is False
                for _ in range(5):  # it stays so while the broker is away
                    r = await post(n)
                    n += 1
                    assert r.status_code == 503

                proxy.restore()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    r = await post(n)
                    n += 1
                    if r.status_code == 200:
                        break
                    await asyncio.sleep(0.2)
                assert r.status_code == 200, statuses
                for _ in range(5):
                    assert (await post(n)).status_code == 200
                    n += 1
                assert (await http.get(url + "/health")).status_code == 200

            assert set(statuses) <= {200, 503}, statuses  # never a 500
            # Every 200 is in RabbitMQ (no worker runs): nothing answered 200 was lost.
            assert await inbound_count(namespace) == len(stored)
            assert "reconnected to RabbitMQ" in server.log() or "RabbitMQ" in server.log()
        finally:
            code = server.terminate()
            server.kill()
    assert code == 0, server.log()[-3000:]


async def test_workers_and_senders_reconnect_after_a_broker_outage(
    fake: ThreadedFakeChat2Desk,  # noqa: F811
    namespace: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    await migrate_postgres()
    port = free_port()
    with TcpProxy(RABBIT_PORT) as proxy:
        env = environment(namespace, fake, port)
        behind = {**env, "RABBITMQ_URL": via(proxy.port)}
        url = f"http://127.0.0.1:{port}"
        procs = [Process(["serve"], env, tmp_path / "serve.log")]
        try:
            await wait_ready(url, procs)
            procs += [
                Process(["worker"], behind, tmp_path / "worker.log"),
                Process(["sender"], behind, tmp_path / "sender.log"),
            ]
            base = random.randrange(10**8, 10**9)
            clients = [str(base + n) for n in range(20)]
            async with httpx.AsyncClient(timeout=15) as http:
                # First half of each conversation, then the broker goes away for the workers
                # and senders (the server still takes webhooks), then the rest.
                for i in range(2):
                    await asyncio.gather(*(converse_one(http, url, c, i) for c in clients))
                await asyncio.sleep(1.0)
                proxy.cut()
                for i in range(2, len(CONVERSATION)):
                    await asyncio.gather(*(converse_one(http, url, c, i) for c in clients))
                await asyncio.sleep(3.0)
                proxy.restore()
            await wait_replies(fake, len(expected_texts()) * len(clients), procs, timeout=90)
            check_replies(fake, clients, procs)
            assert set((await count_orders(clients)).values()) == {1}
            assert all(p.popen.poll() is None for p in procs)
        finally:
            codes = [p.terminate() for p in reversed(procs)]
            for p in procs:
                p.kill()
    assert codes == [0] * len(procs), "\n".join(p.log()[-2000:] for p in procs)


@pytest.mark.skipif(not PrivateRedis.available(), reason="redis-server is not installed")
async def test_a_redis_restart_loses_nothing(
    fake: ThreadedFakeChat2Desk,  # noqa: F811
    namespace: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    await migrate_postgres()
    port = free_port()
    with PrivateRedis() as redis:
        env = {**environment(namespace, fake, port), "REDIS_URL": redis.url}
        url = f"http://127.0.0.1:{port}"
        procs = [Process(["serve"], env, tmp_path / "serve.log")]
        try:
            await wait_ready(url, procs)
            procs += [
                Process(["worker"], env, tmp_path / "worker1.log"),
                Process(["worker"], env, tmp_path / "worker2.log"),
                Process(["sender"], env, tmp_path / "sender.log"),
            ]
            base = random.randrange(10**8, 10**9)
            clients = [str(base + n) for n in range(20)]
            async with httpx.AsyncClient(timeout=15) as http:
                for i in range(2):
                    await asyncio.gather(*(converse_one(http, url, c, i) for c in clients))
                redis.stop()
                # Webhooks are still taken (the dedupe check is skipped); steps wait.
                await asyncio.gather(*(converse_one(http, url, c, 2) for c in clients))
                await asyncio.sleep(3.0)
                redis.start()
                for i in range(3, len(CONVERSATION)):
                    await asyncio.gather(*(converse_one(http, url, c, i) for c in clients))
            await wait_replies(fake, len(expected_texts()) * len(clients), procs, timeout=90)
            check_replies(fake, clients, procs)
            assert set((await count_orders(clients)).values()) == {1}
        finally:
            codes = [p.terminate() for p in reversed(procs)]
            for p in procs:
                p.kill()
    assert codes == [0] * len(procs), "\n".join(p.log()[-2000:] for p in procs)


async def test_broker_open_starts_over_when_the_connection_drops_while_declaring(
    namespace: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A worker starting while RabbitMQ goes away: connected, then lost mid-declare.
    import aiormq

    from orderbot.queues.rabbitmq.broker import RabbitBroker

    real = RabbitBroker._declare
    calls = 0

    async def flaky(self: RabbitBroker, channel: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise aiormq.exceptions.AMQPConnectionError("Server connection unexpectedly closed")
        await real(self, channel)

    monkeypatch.setattr(RabbitBroker, "_declare", flaky)
    broker = RabbitBroker(RABBIT_URL, prefix=namespace, shards=2, connect_timeout=20)
    try:
        await broker.open()
        assert calls == 2
        assert broker.connected
        await broker.publish(b"{}", broker.inbound_queue(0), message_id="x")
    finally:
        await broker.aclose()
