"""The distributed profile as real processes: ``orderbot serve``, two ``orderbot worker`` and one
``orderbot sender`` against RabbitMQ, Redis, PostgreSQL and a fake Chat2Desk."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from orderbot.dialog.engine import step
from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import DialogOptions
from orderbot.storage import sql as db
from orderbot.storage.schema import orders
from orderbot.worker import merge_replies
from tests.distributed.conftest import (
    PG_URL,
    RABBIT_URL,
    REDIS_URL,
    migrate_postgres,
    remove_namespace,
    require_services,
)
from tests.fakes.chat2desk import ThreadedFakeChat2Desk
from tests.support.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CONVERSATION = ["Hello", "Chui avenue 120, apt 5", "my number is 0555 123 456", "3 bottles", "yes"]
SHARDS = 4


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        log = log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "orderbot", *args], env=env, stdout=log, stderr=log
        )
        log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


@pytest.fixture
def fake() -> Iterator[ThreadedFakeChat2Desk]:
    with ThreadedFakeChat2Desk(token="dist-token") as fake:
        yield fake


@pytest.fixture
def namespace() -> Iterator[str]:
    require_services()
    ns = "p" + uuid.uuid4().hex[:10]
    yield ns
    asyncio.run(remove_namespace(ns, shards=SHARDS))


def environment(namespace: str, fake: ThreadedFakeChat2Desk, port: int) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT2DESK_", "WEBHOOK_"))}
    return {
        **keep,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": PG_URL,
        "REDIS_URL": REDIS_URL,
        "RABBITMQ_URL": RABBIT_URL,
        "QUEUE_PREFIX": namespace,
        "QUEUE_SHARDS": str(SHARDS),
        "CHAT2DESK_API_URL": fake.url,
        "CHAT2DESK_API_TOKEN": "dist-token",
        "OUTBOUND_RATE_LIMIT": "600000",
        "WORKER_CONCURRENCY": "20",
        "SHUTDOWN_TIMEOUT": "5",
        "DATABASE_POOL_MIN": "2",
        "DATABASE_POOL_MAX": "5",
        "LOG_LEVEL": "WARNING",
    }


def expected_texts() -> list[str]:
    """What the engine answers to CONVERSATION, order numbers blanked."""
    flow = load_flow("water")
    state = None
    texts: list[str] = []
    for text in CONVERSATION:
        result = step(flow, state, text, time.time(), options=DialogOptions(default_language="ru"))
        state = result.state
        texts.extend(r.text for r in merge_replies(result.replies))
    return [_blank(t) for t in texts]


def _blank(text: str) -> str:
    return re.sub(r"\d+", "#", text.replace("{order_id}", "0"))


async def wait_ready(url: str, procs: list[Process], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            for p in procs:
                assert p.popen.poll() is None, f"{p.args} exited:\n{p.log()}"
            try:
                if (await client.get(url + "/ready", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the server did not become ready:\n" + procs[0].log())


async def converse(client: httpx.AsyncClient, url: str, client_id: str) -> None:
    """One customer's messages, each sent after the previous one was acknowledged."""
    for i, text in enumerate(CONVERSATION):
        payload = {
            "message_id": f"{client_id}-{i}",
            "client_id": client_id,
            "text": text,
            "type": "from_client",
            "transport": "whatsapp",
            "channel_id": 7,
        }
        r = await client.post(url + "/webhook/chat2desk", json=payload, timeout=10)
        assert r.status_code == 200, r.text
        await asyncio.sleep(random.random() * 0.01)


async def count_orders(client_ids: list[str]) -> dict[str, int]:
    engine = db.create_engine(PG_URL, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            query = select(orders.c.client_id).where(orders.c.client_id.in_(client_ids))
            rows = (await conn.execute(query)).all()
    finally:
        await engine.dispose()
    counts = dict.fromkeys(client_ids, 0)
    for (cid,) in rows:
        counts[cid] += 1
    return counts


def lease_holders(namespace: str, kind: str) -> dict[int, str | None]:
    """Who holds each ``kind`` (inbound/outbox) shard lease now."""
    from redis import Redis

    with Redis.from_url(REDIS_URL) as redis:
        values = redis.mget([f"{namespace}:lease:{kind}:{s}" for s in range(SHARDS)])
    return {s: (v.decode() if v is not None else None) for s, v in enumerate(values)}


async def wait_balanced(namespace: str, kind: str, members: int, procs: list[Process]) -> None:
    """Until ``members`` processes hold the ``kind`` shards evenly."""
    deadline = time.monotonic() + 45
    holders: dict[int, str | None] = {}
    while time.monotonic() < deadline:
        for p in procs:
            assert p.popen.poll() is None, f"{p.args} exited:\n{p.log()}"
        holders = lease_holders(namespace, kind)
        counts = [list(holders.values()).count(m) for m in set(holders.values())]
        if (
            None not in holders.values()
            and len(counts) == members
            and max(counts) - min(counts) <= 1
        ):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{kind} shards not shared by {members} processes: {holders}")


def handled(proc: Process) -> int:
    """Steps a worker process logged (LOG_LEVEL=INFO)."""
    return proc.log().count(" handled chat2desk ")


async def wait_replies(
    fake: ThreadedFakeChat2Desk, total: int, procs: list[Process], timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while len(fake.received) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # anything extra (a duplicate) would show up now


def check_replies(fake: ThreadedFakeChat2Desk, clients: list[str], procs: list[Process]) -> None:
    """Every client got exactly the conversation's replies, once each, in order."""
    expected = expected_texts()
    by_client: dict[str, list[str]] = {c: [] for c in clients}
    for body in fake.received:
        by_client[str(body["client_id"])].append(_blank(body["text"]))
    logs = "\n".join(p.log()[-3000:] for p in procs)
    assert len(fake.received) == len(expected) * len(clients), logs
    for c in clients:
        # Buttons arrive appended as numbered lines (Chat2Desk has no buttons).
        got = by_client[c]
        assert len(got) == len(expected), (c, got)
        assert all(g.startswith(e) for g, e in zip(got, expected, strict=True)), (c, got)


async def test_workers_and_senders_share_the_shards_and_keep_order(
    fake: ThreadedFakeChat2Desk, namespace: str, tmp_path: Path
) -> None:
    await migrate_postgres()
    port = free_port()
    env = {**environment(namespace, fake, port), "LOG_LEVEL": "INFO"}
    url = f"http://127.0.0.1:{port}"
    procs = [Process(["serve"], env, tmp_path / "serve.log")]
    try:
        await wait_ready(url, procs)  # the server declares the topology first
        workers = [Process(["worker"], env, tmp_path / f"worker{n}.log") for n in (1, 2)]
        senders = [Process(["sender"], env, tmp_path / f"sender{n}.log") for n in (1, 2)]
        procs += [*workers, *senders]
        await wait_balanced(namespace, "inbound", 2, procs)
        await wait_balanced(namespace, "outbox", 2, procs)
        base = random.randrange(10**8, 10**9)
        clients = [str(base + n) for n in range(40)]
        async with httpx.AsyncClient() as http:
            health = (await http.get(url + "/health")).json()
            assert set(health["checks"]) >= {"redis", "postgres", "rabbitmq", "queues"}
            # Bursts: every client talks at once, five messages each.
            await asyncio.gather(*(converse(http, url, c) for c in clients))
        await wait_replies(fake, len(expected_texts()) * len(clients), procs)
        check_replies(fake, clients, procs)
        assert set((await count_orders(clients)).values()) == {1}
        # Both workers did part of the work; together, each message once.
        counts = [handled(w) for w in workers]
        assert all(n > 0 for n in counts), counts
        assert sum(counts) == len(clients) * len(CONVERSATION), counts
        assert all(p.popen.poll() is None for p in procs)
    finally:
        codes = [p.terminate() for p in reversed(procs)]
        for p in procs:
            p.kill()
    assert codes == [0] * len(procs), "\n".join(p.log()[-2000:] for p in procs)


async def test_a_killed_worker_hands_its_shards_to_the_other(
    fake: ThreadedFakeChat2Desk, namespace: str, tmp_path: Path
) -> None:
    await migrate_postgres()
    port = free_port()
    env = {**environment(namespace, fake, port), "LOG_LEVEL": "INFO"}
    url = f"http://127.0.0.1:{port}"
    procs = [Process(["serve"], env, tmp_path / "serve.log")]
    try:
        await wait_ready(url, procs)
        victim = Process(["worker"], env, tmp_path / "victim.log")
        survivor = Process(["worker"], env, tmp_path / "survivor.log")
        procs += [victim, survivor, Process(["sender"], env, tmp_path / "sender.log")]
        await wait_balanced(namespace, "inbound", 2, procs)
        base = random.randrange(10**8, 10**9)
        clients = [str(base + n) for n in range(60)]

        async def kill_when_busy() -> None:
            while handled(victim) < 20:
                await asyncio.sleep(0.02)
            victim.kill()  # SIGKILL: its unacked messages return to their queues

        async with httpx.AsyncClient() as http:
            killer = asyncio.ensure_future(kill_when_busy())

            async def slow(c: str) -> None:
                for text_index in range(len(CONVERSATION)):
                    await converse_one(http, url, c, text_index)
                    await asyncio.sleep(0.2)

            await asyncio.gather(*(slow(c) for c in clients))
            await asyncio.wait_for(killer, 30)
        procs.remove(victim)
        await wait_replies(fake, len(expected_texts()) * len(clients), procs)
        check_replies(fake, clients, procs)
        assert set((await count_orders(clients)).values()) == {1}
        # The survivor took every shard once the victim's leases lapsed.
        assert set(lease_holders(namespace, "inbound").values()) == {survivor_member(survivor)}
        assert handled(survivor) > 0
    finally:
        codes = [p.terminate() for p in reversed(procs)]
        for p in procs:
            p.kill()
        victim.kill()
    assert codes == [0] * len(procs), "\n".join(p.log()[-2000:] for p in procs)


def survivor_member(proc: Process) -> str:
    found = re.findall(r"inbound (\w+) took shard", proc.log())
    assert found, proc.log()[-2000:]
    return str(found[-1])


async def converse_one(client: httpx.AsyncClient, url: str, client_id: str, i: int) -> None:
    payload = {
        "message_id": f"{client_id}-{i}",
        "client_id": client_id,
        "text": CONVERSATION[i],
        "type": "from_client",
        "transport": "whatsapp",
        "channel_id": 7,
    }
    r = await client.post(url + "/webhook/chat2desk", json=payload, timeout=10)
    assert r.status_code == 200, r.text


async def test_two_workers_keep_each_clients_order_and_answer_once(
    fake: ThreadedFakeChat2Desk, namespace: str, tmp_path: Path
) -> None:
    await migrate_postgres()
    port = free_port()
    env = environment(namespace, fake, port)
    url = f"http://127.0.0.1:{port}"
    procs = [Process(["serve"], env, tmp_path / "serve.log")]
    try:
        await wait_ready(url, procs)  # the server declares the topology first
        procs += [
            Process(["worker"], env, tmp_path / "worker1.log"),
            Process(["worker"], env, tmp_path / "worker2.log"),
            Process(["sender"], env, tmp_path / "sender.log"),
        ]
        base = random.randrange(10**8, 10**9)
        clients = [str(base + n) for n in range(40)]
        async with httpx.AsyncClient() as http:
            health = (await http.get(url + "/health")).json()
            assert set(health["checks"]) >= {"redis", "postgres", "rabbitmq", "queues"}
            # Bursts: every client talks at once, five messages each.
            await asyncio.gather(*(converse(http, url, c) for c in clients))

        expected = expected_texts()
        total = len(expected) * len(clients)
        deadline = time.monotonic() + 60
        while len(fake.received) < total and time.monotonic() < deadline:
            for p in procs:
                assert p.popen.poll() is None, f"{p.args} exited:\n{p.log()}"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # anything extra (a duplicate) would show up now

        by_client: dict[str, list[str]] = {c: [] for c in clients}
        for body in fake.received:
            by_client[str(body["client_id"])].append(_blank(body["text"]))
        assert len(fake.received) == total, "\n".join(p.log()[-3000:] for p in procs)
        for c in clients:
            # Buttons arrive appended as numbered lines (Chat2Desk has no buttons).
            got = by_client[c]
            assert len(got) == len(expected), c
            assert all(g.startswith(e) for g, e in zip(got, expected, strict=True)), (c, got)
        assert set((await count_orders(clients)).values()) == {1}
        # Both workers are up; each one either handled work or stands by for its shards.
        assert all(p.popen.poll() is None for p in procs)
    finally:
        codes = [p.terminate() for p in reversed(procs)]
        for p in procs:
            p.kill()
    assert codes == [0] * len(procs), "\n".join(p.log()[-2000:] for p in procs)
