"""The batching helpers of the distributed hot path against the real Redis and PostgreSQL:
commands of concurrent tasks share one pipeline / statement, and each caller still gets its own
result or its own error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from orderbot.storage import sql as db
from orderbot.storage.message_log import InboundLogBatcher, MessageLogWriter
from orderbot.storage.redis import RedisBatcher
from orderbot.storage.schema import message_logs
from tests.distributed.conftest import PG_URL, REDIS_URL, migrate_postgres, require_services

pytestmark = pytest.mark.usefixtures("services")


@pytest.fixture
def services() -> None:
    require_services()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    await migrate_postgres()
    engine = db.create_engine(PG_URL, pool_size=4, max_overflow=0)
    yield engine
    await engine.dispose()


async def test_concurrent_commands_share_one_pipeline(redis: Redis) -> None:
    prefix = f"batchtest:{uuid.uuid4().hex}"
    batcher = RedisBatcher(redis)
    try:
        await asyncio.gather(
            *(batcher.call(lambda p, i=i: p.set(f"{prefix}:{i}", i)) for i in range(50))
        )
        assert batcher.pipelines == 1
        got = await asyncio.gather(
            *(batcher.call(lambda p, i=i: p.get(f"{prefix}:{i}")) for i in range(50))
        )
        assert got == [str(i).encode() for i in range(50)]
        assert batcher.pipelines == 2
    finally:
        await redis.delete(*[f"{prefix}:{i}" for i in range(50)])


async def test_a_failing_command_fails_only_its_caller(redis: Redis) -> None:
    key = f"batchtest:{uuid.uuid4().hex}"
    batcher = RedisBatcher(redis)
    try:
        await redis.set(key, "not a number")
        results = await asyncio.gather(
            batcher.call(lambda p: p.get(key)),
            batcher.call(lambda p: p.incr(key)),
            batcher.call(lambda p: p.strlen(key)),
            return_exceptions=True,
        )
        assert results[0] == b"not a number"
        assert isinstance(results[1], ResponseError)
        assert results[2] == len("not a number")
    finally:
        await redis.delete(key)


async def test_a_lost_connection_fails_every_caller_of_the_batch() -> None:
    dead = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=1)
    batcher = RedisBatcher(dead)
    results = await asyncio.gather(
        *(batcher.call(lambda p: p.get("x")) for _ in range(3)), return_exceptions=True
    )
    assert [type(r) for r in results] == [RedisConnectionError] * 3
    await dead.aclose()


async def test_scripts_run_batched_and_survive_a_script_flush(redis: Redis) -> None:
    key = f"batchtest:{uuid.uuid4().hex}"
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    batcher = RedisBatcher(redis)
    try:
        await redis.script_flush()  # Redis forgot every script: EVALSHA answers NOSCRIPT
        got = await asyncio.gather(*(batcher.script(script, (key,), (1,)) for _ in range(5)))
        assert sorted(got) == [1, 2, 3, 4, 5]
        assert int(await redis.get(key) or 0) == 5
    finally:
        await redis.delete(key)


def _row(client: str, key: str) -> dict[str, object]:
    return {
        "channel": "batchtest",
        "client_id": client,
        "message_key": key,
        "text": "hello",
        "dialog_state": "ADDRESS",
        "success": True,
        "error": None,
        "created_at": 1.0,
    }


async def _count(engine: AsyncEngine, client_prefix: str) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count()).where(message_logs.c.client_id.like(client_prefix + "%"))
                )
            ).scalar_one()
        )


async def test_inbound_log_rows_of_concurrent_steps_go_in_one_statement(
    engine: AsyncEngine,
) -> None:
    client = uuid.uuid4().hex[:12]
    batcher = InboundLogBatcher(engine)
    try:
        first = await asyncio.gather(
            *(batcher.write(_row(f"{client}-{i}", f"m{i}")) for i in range(20))
        )
        assert first == [True] * 20
        assert batcher.statements == 1
        # A redo of some steps, with new ones: only the new rows are written.
        again = await asyncio.gather(
            *(batcher.write(_row(f"{client}-{i}", f"m{i}")) for i in range(15, 25))
        )
        assert again == [False] * 5 + [True] * 5
        assert await _count(engine, client) == 25
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                delete(message_logs).where(message_logs.c.client_id.like(client + "%"))
            )


async def test_outbound_log_rows_are_written_by_close(engine: AsyncEngine) -> None:
    client = uuid.uuid4().hex[:12]
    writer = MessageLogWriter(engine, delay=60)  # only the close writes them
    try:
        for i in range(7):
            writer.add({**_row(client, f"r{i}"), "direction": "out", "dialog_state": None})
        await asyncio.sleep(0.05)
        assert await _count(engine, client) == 0
        await writer.aclose()
        assert await _count(engine, client) == 7
        assert writer.written == 7
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                delete(message_logs).where(message_logs.c.client_id.like(client + "%"))
            )
