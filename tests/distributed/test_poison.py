"""Messages whose data PostgreSQL refuses, on the distributed profile: an over-long id (from a
message queued before ingress refused them) or a NUL character. The step fails the same way
every time, so it counts toward MAX_INBOUND_DELIVERIES and ends in the dead-letter queue instead
of holding up its client for ever (as on the embedded profile); the client's next message is
handled. One refused row never sinks a batch of message log rows (inbound or outbound), and NUL
characters never reach PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from orderbot.messages import InboundMessage
from orderbot.runtime.distributed import DistributedRuntime
from orderbot.storage.message_log import InboundLogBatcher, MessageLogWriter
from orderbot.storage.schema import message_logs
from tests.distributed.conftest import (
    distributed_settings,
    migrate_postgres,
    remove_namespace,
    require_services,
)

pytestmark = [pytest.mark.timeout(90)]

TOO_LONG_CLIENT_ID = "7" * 120  # message_logs.client_id is VARCHAR(100)


@pytest.fixture
async def runtime() -> AsyncIterator[DistributedRuntime]:
    require_services()
    await migrate_postgres()
    namespace = "p" + uuid.uuid4().hex[:10]
    found = DistributedRuntime(
        distributed_settings(namespace, max_inbound_deliveries=2),
        roles=("worker",),
        channels={},
    )
    await found.open()
    try:
        yield found
    finally:
        await found.aclose()
        await remove_namespace(namespace)


def message(client_id: str, message_id: str, text: str = "привет") -> InboundMessage:
    return InboundMessage(
        channel="chat2desk",
        client_id=client_id,
        message_id=message_id,
        text=text,
        received_at=time.time(),
        route={"transport": "whatsapp", "channel_id": "3"},
    )


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def counted(name: str, channel: str = "chat2desk") -> float:
    return REGISTRY.get_sample_value(name, {"channel": channel}) or 0.0


async def logged_texts(runtime: DistributedRuntime, client_id: str) -> list[str]:
    async with runtime.engine.connect() as conn:
        rows = await conn.execute(
            select(message_logs.c.text).where(
                message_logs.c.client_id == client_id, message_logs.c.direction == "in"
            )
        )
        return [str(r[0]) for r in rows]


async def test_a_message_the_database_refuses_is_dead_lettered_and_its_client_goes_on(
    runtime: DistributedRuntime,
) -> None:
    prefix = runtime.settings.queue_prefix + "-"
    ann = prefix + "ann"
    refused = message(ann, prefix + "x" * 220)  # message_logs.message_key is VARCHAR(200)
    after = message(ann, prefix + "after", "здравствуйте")
    long_client = message(TOO_LONG_CLIENT_ID, prefix + "long-client")
    nul = message(prefix + "bob", prefix + "nul", "при\x00вет")
    failures = counted("orderbot_step_failures_total")
    dead = counted("orderbot_inbound_dead_letters_total")
    for m in (refused, after, long_client, nul):
        await runtime.inbound.put(m)
    runtime.start()

    async def settled() -> bool:
        letters = {letter.key for letter in await runtime.dead_letters.list()}
        return {refused.dedupe_key, long_client.dedupe_key} <= letters and all(
            [await runtime.store.is_processed(m.dedupe_key) for m in (after, nul)]
        )

    await until(settled)
    letters = {letter.key: letter for letter in await runtime.dead_letters.list()}
    letter = letters[refused.dedupe_key]
    assert letter.kind == "inbound" and letter.attempts == 3
    assert "delivered 3 times" in letter.last_error
    assert "DataRejected: PostgreSQL refused the data" in letter.last_error
    assert InboundMessage.from_json(letter.payload) == refused  # nothing the customer sent is lost
    assert not await runtime.store.is_processed(refused.dedupe_key)
    # The client's later message was handled, and the refused one did not stop anyone else.
    assert await logged_texts(runtime, ann) == ["здравствуйте"]
    assert await logged_texts(runtime, prefix + "bob") == ["привет"]  # NUL dropped, not refused
    assert counted("orderbot_step_failures_total") - failures == 4  # two tries of each
    assert counted("orderbot_inbound_dead_letters_total") - dead == 2


async def test_one_refused_row_does_not_fail_the_other_steps_of_its_batch(
    runtime: DistributedRuntime,
) -> None:
    prefix = runtime.settings.queue_prefix + "-"
    batcher = InboundLogBatcher(runtime.engine)

    def row(client_id: str, key: str) -> dict[str, Any]:
        return {
            "channel": "chat2desk",
            "client_id": client_id,
            "message_key": prefix + key,
            "text": "привет",
            "dialog_state": "start",
            "success": True,
            "error": None,
            "created_at": time.time(),
        }

    results = await asyncio.gather(
        batcher.write(row(prefix + "a", "1")),
        batcher.write(row(TOO_LONG_CLIENT_ID, "2")),
        batcher.write(row(prefix + "c", "3")),
        return_exceptions=True,
    )
    assert batcher.statements == 1  # the three went as one batch
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], DBAPIError)
    assert await logged_texts(runtime, prefix + "a") == ["привет"]
    assert await logged_texts(runtime, prefix + "c") == ["привет"]


async def test_one_refused_outbound_log_row_is_dropped_alone(
    runtime: DistributedRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = runtime.settings.queue_prefix + "-"
    writer = MessageLogWriter(runtime.engine, delay=60)

    def row(client_id: str, key: str, text: str) -> dict[str, Any]:
        return {
            "direction": "out",
            "channel": "chat2desk",
            "client_id": client_id,
            "message_key": prefix + key,
            "text": text,
            "dialog_state": None,
            "success": True,
            "error": None,
            "created_at": time.time(),
        }

    writer.add(row(prefix + "a", "1", "Ваш адрес?"))
    writer.add(row(TOO_LONG_CLIENT_ID, "2", "Ваш адрес?"))
    writer.add(row(prefix + "c", "3", "Ваш\x00 телефон?"))
    with caplog.at_level(logging.WARNING, logger="orderbot"):
        await writer.aclose()
    assert writer.written == 2
    async with runtime.engine.connect() as conn:
        rows = await conn.execute(
            select(message_logs.c.client_id, message_logs.c.text)
            .where(message_logs.c.message_key.like(prefix + "%"))
            .order_by(message_logs.c.id)
        )
        assert [tuple(r) for r in rows] == [
            (prefix + "a", "Ваш адрес?"),
            (prefix + "c", "Ваш телефон?"),
        ]
    assert "dropped an outbound message log row" in caplog.text
    assert TOO_LONG_CLIENT_ID not in caplog.text  # masked: only its length


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_refused_data_tells_a_writes_values_from_an_outage() -> None:
    from sqlalchemy.exc import DBAPIError as Wrapped
    from sqlalchemy.exc import OperationalError, StatementError

    from orderbot.storage.sql import refused_data

    assert refused_data(Wrapped("INSERT", {}, _DriverError("22001")))  # too long for its column
    assert refused_data(Wrapped("INSERT", {}, _DriverError("22021")))  # NUL in text
    assert refused_data(StatementError("bind", "INSERT", {}, TypeError("not a number")))
    assert not refused_data(OperationalError("INSERT", {}, _DriverError("08006")))  # link lost
    assert not refused_data(Wrapped("INSERT", {}, _DriverError("57P01")))  # server shutting down
    assert not refused_data(OSError("connection refused"))
