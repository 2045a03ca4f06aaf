"""Backends for the contract suite: the embedded one (SQLite) and the distributed one (RabbitMQ,
Redis, PostgreSQL), behind one small harness so every contract test runs against both.

Each distributed test gets its own namespace (queue prefix and Redis key prefix, client ids),
and removes its queues, exchanges and keys afterwards.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from orderbot.channels.base import Channel
from orderbot.config import Settings, load_settings
from orderbot.errors import ServerError
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.queues.base import DeadLetterQueue, InboundDelivery, InboundQueue, Outbox
from orderbot.queues.sqlite import SqliteDeadLetterQueue, SqliteInboundQueue, SqliteOutbox, Wakeup
from orderbot.ratelimit import LocalRateLimiter
from orderbot.retry import CircuitBreaker, RetryPolicy
from orderbot.sender import Sender
from orderbot.state.base import StepStore
from orderbot.state.sqlite import SqliteStepStore
from orderbot.storage import sql as db
from orderbot.storage.schema import dialog_outcomes, message_logs, orders
from orderbot.storage.sqlite import SqliteDatabase
from tests.conftest import require_service

PG_URL = os.environ.get("ORDERBOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ORDERBOT_TEST_REDIS", "redis://127.0.0.1:6379/0")
RABBIT_URL = os.environ.get("ORDERBOT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")


def require_services() -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    require_service("RabbitMQ", "127.0.0.1", 5672)


_migrated: set[str] = set()


async def migrate_postgres() -> None:
    if PG_URL not in _migrated:
        await db.upgrade_async(PG_URL)
        _migrated.add(PG_URL)


def distributed_settings(namespace: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": PG_URL,
        "redis_url": REDIS_URL,
        "rabbitmq_url": RABBIT_URL,
        "queue_prefix": namespace,
        "queue_shards": 2,
        "chat2desk_api_url": "http://127.0.0.1:9/v1",
        "chat2desk_api_token": "test-token",
        "outbound_rate_limit": 600_000,
        "shutdown_timeout": 3.0,
        "database_pool_min": 1,
        "database_pool_max": 4,
    }
    values.update(overrides)
    return load_settings(**values)


async def remove_namespace(namespace: str, shards: int = 2) -> None:
    """Delete the queues, exchanges and Redis keys of a test namespace."""
    import aio_pika
    from redis.asyncio import Redis

    from orderbot.queues.rabbitmq.broker import RETRY_DELAYS, RabbitBroker

    names = RabbitBroker(RABBIT_URL, prefix=namespace, shards=shards)
    connection = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await connection.channel()
        for name in names.all_queues():
            await channel.queue_delete(name)
        for delay in RETRY_DELAYS:
            await channel.exchange_delete(names.retry_exchange(delay))
    finally:
        await connection.close()
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{namespace}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


class RecordingChannel(Channel):
    """A channel that records sends and fails chosen reply keys a given number of times."""

    name = "chat2desk"

    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []
        self.failures: dict[str, int] = {}
        self.attempts: dict[str, int] = {}

    def parse_webhook(self, payload: Any, *, received_at: float) -> InboundMessage | None:
        return None

    async def send(self, message: OutboundMessage) -> None:
        self.attempts[message.key] = self.attempts.get(message.key, 0) + 1
        left = self.failures.get(message.key, 0)
        if left:
            self.failures[message.key] = left - 1
            raise ServerError("500 from the fake")
        self.sent.append(message)

    def keys(self, client_id: str) -> list[str]:
        return [m.key for m in self.sent if m.client_id == client_id]


class Backend:
    """The parts of one profile a contract test drives."""

    name: str
    namespace: str
    inbound: InboundQueue
    outbox: Outbox
    dead_letters: DeadLetterQueue
    store: StepStore

    async def restart(self) -> None:
        """As after a crash: new instances, nothing in hand acknowledged."""
        raise NotImplementedError

    async def outcomes(self, client_id: str) -> list[tuple[str, str, int]]:
        """``dialog_outcomes`` of a client: outcome, last step, messages."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def count_orders(self, client_id: str) -> int:
        raise NotImplementedError

    async def count_inbound_logs(self, client_id: str) -> int:
        raise NotImplementedError

    def sender(self, channel: Channel, policy: RetryPolicy) -> Sender:
        return Sender(
            self.outbox,
            {"chat2desk": channel},
            rate_limiter=LocalRateLimiter(600_000),
            policy=policy,
            breaker_factory=lambda name: CircuitBreaker(name, failure_threshold=100),
            poll_interval=0.05,
            drain_timeout=2.0,
        )

    async def fetch_n(self, n: int, timeout: float = 10.0) -> list[InboundDelivery]:
        found: list[InboundDelivery] = []
        deadline = time.monotonic() + timeout
        while len(found) < n and time.monotonic() < deadline:
            got = await self.inbound.fetch(n - len(found))
            if got:
                found.extend(got)
            else:
                await self.inbound.wait(0.05)
        return found


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, database: SqliteDatabase, namespace: str) -> None:
        self.db = database
        self.namespace = namespace
        self._build()

    def _build(self) -> None:
        wakeup = Wakeup()
        self.inbound = SqliteInboundQueue(self.db)
        self.outbox = SqliteOutbox(self.db, wakeup=wakeup)
        self.dead_letters = SqliteDeadLetterQueue(self.db, outbox_wakeup=wakeup)
        self.store = SqliteStepStore(self.db, outbox_wakeup=wakeup)

    async def restart(self) -> None:
        self._build()

    async def close(self) -> None:
        pass

    async def count_orders(self, client_id: str) -> int:
        return int(
            await self.db.run(
                lambda c: c.execute(
                    "SELECT count(*) FROM orders WHERE client_id = ?", (client_id,)
                ).fetchone()[0]
            )
        )

    async def count_inbound_logs(self, client_id: str) -> int:
        return int(
            await self.db.run(
                lambda c: c.execute(
                    "SELECT count(*) FROM message_logs WHERE direction = 'in' AND client_id = ?",
                    (client_id,),
                ).fetchone()[0]
            )
        )

    async def outcomes(self, client_id: str) -> list[tuple[str, str, int]]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT outcome, last_step, message_count FROM dialog_outcomes"
                " WHERE client_id = ? ORDER BY id",
                (client_id,),
            ).fetchall()
        )
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


class DistributedBackend(Backend):
    name = "distributed"

    def __init__(self, namespace: str) -> None:
        from orderbot.runtime.distributed import DistributedRuntime

        self.namespace = namespace
        self.settings = distributed_settings(namespace)
        self._factory = DistributedRuntime
        self.runtime: Any = None

    async def open(self) -> None:
        self.runtime = self._factory(self.settings, channels={}, flow=None)
        await self.runtime.open()
        self.inbound = self.runtime.inbound
        self.outbox = self.runtime.outbox
        self.dead_letters = self.runtime.dead_letters
        self.store = self.runtime.store

    async def restart(self) -> None:
        await self.runtime.aclose()
        await self.open()

    async def close(self) -> None:
        if self.runtime is not None:
            await self.runtime.aclose()

    async def _count(self, query: Any) -> int:
        async with self.runtime.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def count_orders(self, client_id: str) -> int:
        return await self._count(
            select(func.count()).select_from(orders).where(orders.c.client_id == client_id)
        )

    async def count_inbound_logs(self, client_id: str) -> int:
        return await self._count(
            select(func.count())
            .select_from(message_logs)
            .where(message_logs.c.client_id == client_id, message_logs.c.direction == "in")
        )

    async def outcomes(self, client_id: str) -> list[tuple[str, str, int]]:
        query = (
            select(
                dialog_outcomes.c.outcome,
                dialog_outcomes.c.last_step,
                dialog_outcomes.c.message_count,
            )
            .where(dialog_outcomes.c.client_id == client_id)
            .order_by(dialog_outcomes.c.id)
        )
        async with self.runtime.engine.connect() as conn:
            return [(str(r[0]), str(r[1]), int(r[2])) for r in await conn.execute(query)]


@pytest.fixture(params=["sqlite", "distributed"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    namespace = "t" + uuid.uuid4().hex[:10]
    if request.param == "sqlite":
        path = tmp_path / "orderbot.db"
        await db.upgrade_async(f"sqlite:///{path}")
        async with SqliteDatabase(path) as database:
            yield SqliteBackend(database, namespace)
        return
    require_services()
    await migrate_postgres()
    found = DistributedBackend(namespace)
    await found.open()
    try:
        yield found
    finally:
        await found.close()
        await remove_namespace(namespace)


async def eventually(condition: Any, timeout: float = 15.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(interval)
    assert condition(), "condition not met in time"
