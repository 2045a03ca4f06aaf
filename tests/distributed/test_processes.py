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

from orderbot import db
from orderbot.dialog import DialogOptions, load_flow, step
from orderbot.schema import orders
from tests.distributed.conftest import (
    PG_URL,
    RABBIT_URL,
    REDIS_URL,
    migrate_postgres,
    remove_namespace,
    require_services,
)
from tests.fakes.chat2desk import ThreadedFakeChat2Desk
from tests.servers import free_port

pytestmark = pytest.mark.slow

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
        texts.extend(r.text for r in result.replies)
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
