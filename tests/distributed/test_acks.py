"""Acks when the connection to RabbitMQ dies under them, against the real broker through a TCP
proxy the test cuts.

aiormq writes every frame through a write queue of 10. When the connection is lost, the acks
issued before its channels are marked closed fill that queue, and every later one waits on it
forever: nothing reads a dead connection's queue again. A reply lane (or a worker's lane) in such
an ack held up its client's later messages until the process restarted. ``_ack`` gives up after
``ACK_TIMEOUT``, as it does for an ack that fails: the message comes back and is recognised.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aio_pika.abc import AbstractIncomingMessage

from orderbot.queues import broker as broker_module
from orderbot.queues.broker import RabbitBroker, _ack
from tests.distributed.conftest import RABBIT_URL, require_service
from tests.distributed.faults import TcpProxy

pytestmark = [pytest.mark.timeout(120)]

RABBIT_PORT = int(RABBIT_URL.rsplit(":", 1)[1].split("/")[0])
MESSAGES = 2000
ACKERS = 200


async def test_acks_cut_off_by_a_lost_connection_all_return(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_service("RabbitMQ", "127.0.0.1", RABBIT_PORT)
    monkeypatch.setattr(broker_module, "ACK_TIMEOUT", 1.0)
    queue_name = f"t{uuid.uuid4().hex[:10]}.acks"
    with TcpProxy(RABBIT_PORT) as proxy:
        broker = RabbitBroker(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", prefix="unused")
        # Only the connection is wanted: no topology for this test.
        monkeypatch.setattr(broker, "_declare", _declare_nothing)
        await broker.open()
        try:
            publisher = await broker.connection.channel()
            await publisher.declare_queue(queue_name, auto_delete=True)
            for n in range(MESSAGES):
                await broker.publish(b"x", queue_name, message_id=str(n))
            channel = await broker.consumer_channel(prefetch=MESSAGES)
            consumed = await channel.get_queue(queue_name, ensure=False)
            arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

            async def keep(raw: AbstractIncomingMessage) -> None:
                arrived.put_nowait(raw)

            await consumed.consume(keep)
            deadline = time.monotonic() + 30
            while arrived.qsize() < MESSAGES and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert arrived.qsize() == MESSAGES

            async def acker() -> int:
                done = 0
                while not arrived.empty():
                    await _ack(arrived.get_nowait())
                    done += 1
                return done

            ackers = [asyncio.ensure_future(acker()) for _ in range(ACKERS)]
            await asyncio.sleep(0.02)  # acks are being written
            proxy.cut()
            # Each acker goes on with the next message after an ack gives up: with the ack
            # bounded, all are done well before every remaining message was waited on.
            finished, waiting = await asyncio.wait(ackers, timeout=30)
            for task in waiting:
                task.cancel()
            assert not waiting, f"{len(waiting)} of {ACKERS} ackers still wait in an ack"
            assert sum(t.result() for t in finished) == MESSAGES
        finally:
            proxy.restore()
            await broker.aclose()


async def _declare_nothing(channel: object) -> None:
    return None
