"""Acks when the connection to RabbitMQ dies under them, against the real broker (and Redis and
PostgreSQL for the sender) through a TCP proxy the test cuts.

aiormq writes every frame through a write queue of 10. When the connection is lost, the acks
issued before its channels are marked closed fill that queue, and every later one waits on it
forever: nothing reads a dead connection's queue again. A reply lane (or a worker's lane) in such
an ack held up its client's later messages until the process restarted. ``ack_message`` gives up after
``ACK_TIMEOUT``, as it does for an ack that fails: the message comes back and is recognised.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from aio_pika.abc import AbstractIncomingMessage

from orderbot.messages import OutboundMessage
from orderbot.queues.rabbitmq import broker as broker_module
from orderbot.queues.rabbitmq.broker import RabbitBroker, ack_message
from orderbot.ratelimit import LocalRateLimiter
from orderbot.retry import RetryPolicy
from orderbot.runtime.distributed import DistributedRuntime
from orderbot.sender import Sender
from tests.distributed.conftest import (
    RABBIT_URL,
    RecordingChannel,
    distributed_settings,
    eventually,
    remove_namespace,
    require_service,
    require_services,
)
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
            await eventually(lambda: arrived.qsize() == MESSAGES, timeout=30)
            assert arrived.qsize() == MESSAGES

            async def acker() -> int:
                done = 0
                while not arrived.empty():
                    await ack_message(arrived.get_nowait())
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


class SlowChannel(RecordingChannel):
    """Sends take a few milliseconds, so that many replies are in flight (and acked) at once."""

    async def send(self, message: OutboundMessage) -> None:
        await asyncio.sleep(0.005)
        await super().send(message)


async def test_replies_acked_as_the_connection_is_lost_do_not_hold_up_their_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The symptom the bound removes: a sender whose acks were caught by the connection's loss
    sent nothing more to those clients. Every client's replies must all arrive, in order."""
    require_services()
    monkeypatch.setattr(broker_module, "ACK_TIMEOUT", 1.0)
    namespace = "t" + uuid.uuid4().hex[:10]
    clients = [f"{namespace}-{n}" for n in range(300)]
    with TcpProxy(RABBIT_PORT) as proxy:
        settings = distributed_settings(
            namespace, rabbitmq_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        )
        runtime = DistributedRuntime(settings, channels={}, flow=None)
        await runtime.open()
        stop = asyncio.Event()
        running: asyncio.Task[None] | None = None
        try:
            for n in range(3):  # each client's first reply, then its second, then its third
                await asyncio.gather(
                    *(
                        runtime.outbox.put(
                            [
                                OutboundMessage(
                                    key=f"{client}:{n}",
                                    channel="chat2desk",
                                    client_id=client,
                                    text=f"reply {n}",
                                )
                            ]
                        )
                        for client in clients
                    )
                )
            channel = SlowChannel()
            sender = Sender(
                runtime.outbox,
                {"chat2desk": channel},
                rate_limiter=LocalRateLimiter(600_000),
                policy=RetryPolicy(quick_delays=(0.2, 0.2, 0.2), slow_delay=1, max_attempts=50),
                poll_interval=0.05,
                drain_timeout=2.0,
            )
            running = asyncio.create_task(sender.run(stop))
            await eventually(lambda: len(channel.sent) >= 100, timeout=30)
            proxy.cut()  # while replies are being sent and acked
            await asyncio.sleep(2.0)
            proxy.restore()

            def all_in() -> bool:
                return all(len(set(channel.keys(c))) == 3 for c in clients)

            with contextlib.suppress(AssertionError):
                await eventually(all_in, timeout=60, interval=0.2)
            short = [c for c in clients if len(set(channel.keys(c))) < 3]
            assert not short, f"{len(short)} of {len(clients)} clients are short of replies"
            for client in clients:
                keys = list(dict.fromkeys(channel.keys(client)))  # a copy sent twice counts once
                assert keys == [f"{client}:{n}" for n in range(3)], keys
        finally:
            stop.set()
            if running is not None:
                await running
            await runtime.aclose()
            await remove_namespace(namespace)
