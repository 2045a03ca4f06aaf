"""Webhooks that share an AMQP message, against the real RabbitMQ and Redis: each is handed out
as its own delivery, in its client's order, and the message is acked only with its last part."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest

from orderbot.errors import BackendUnavailable
from orderbot.messages import InboundMessage
from orderbot.queues.rabbitmq.broker import shard_of
from orderbot.queues.rabbitmq.inbound import BATCH_CONTENT_TYPE
from tests.distributed.conftest import (
    DistributedBackend,
    eventually,
    migrate_postgres,
    remove_namespace,
    require_services,
)


@pytest.fixture
async def bot() -> AsyncIterator[DistributedBackend]:
    require_services()
    await migrate_postgres()
    found = DistributedBackend("t" + uuid.uuid4().hex[:10])
    await found.open()
    try:
        yield found
    finally:
        await found.close()
        await remove_namespace(found.namespace)


def webhook(bot: DistributedBackend, client: str, n: int) -> InboundMessage:
    return InboundMessage(
        channel="chat2desk",
        client_id=f"{bot.namespace}-{client}",
        message_id=f"{bot.namespace}-{client}-{n}",
        text=f"{client}/{n}",
        received_at=time.time(),
    )


def clients_of_one_shard(bot: DistributedBackend, count: int) -> list[str]:
    shards = bot.runtime.broker.shards
    names = (str(i) for i in range(1000))
    found = [c for c in names if shard_of(f"chat2desk:{bot.namespace}-{c}", shards) == 0]
    return found[:count]


async def test_webhooks_accepted_together_share_messages_and_keep_client_order(
    bot: DistributedBackend,
) -> None:
    clients = [str(i) for i in range(6)]
    sent = [webhook(bot, clients[n % 6], n) for n in range(60)]
    assert await asyncio.gather(*(bot.inbound.put(m) for m in sent)) == [True] * 60
    publishers = bot.inbound._publishers
    assert sum(p.items for p in publishers) == 60
    assert sum(p.batches for p in publishers) < 60  # several webhooks per AMQP message
    got = await bot.fetch_n(60)
    assert sorted(d.message.message_id for d in got) == sorted(m.message_id for m in sent)
    assert all(d.deliveries == 1 for d in got)
    order: dict[str, list[str]] = defaultdict(list)
    for d in got:
        order[d.message.client_id].append(d.message.message_id)
    for client in clients:
        mine = [m.message_id for m in sent if m.client_id.endswith(f"-{client}")]
        assert order[f"{bot.namespace}-{client}"] == mine
    for d in got:
        await bot.inbound.ack(d)
    await bot.restart()
    assert await bot.fetch_n(1, timeout=0.5) == []  # every message was acked


async def test_a_message_is_acked_with_its_last_part_and_redelivered_whole(
    bot: DistributedBackend,
) -> None:
    a, b, c = clients_of_one_shard(bot, 3)
    batch = [webhook(bot, a, 1), webhook(bot, b, 1), webhook(bot, c, 1)]
    await asyncio.gather(*(bot.inbound.put(m) for m in batch))
    assert bot.inbound._publishers[0].batches == 1  # all three in one message
    got = await bot.fetch_n(3)
    assert [d.message.message_id for d in got] == [m.message_id for m in batch]
    await bot.inbound.ack(got[0])  # a and c done; b's step did not finish: the worker dies
    await bot.inbound.ack(got[2])
    await bot.restart()
    again = await bot.fetch_n(3)
    assert [d.message.message_id for d in again] == [m.message_id for m in batch]
    assert [d.deliveries for d in again] == [2, 2, 2]  # the first delivery counts as started
    await bot.inbound.begin(again[1])  # b's step starts again (a and c are found processed)
    await bot.restart()
    again = await bot.fetch_n(3)
    # only b's attempts are counted: a copy of a or c is no attempt of theirs
    assert [d.deliveries for d in again] == [2, 3, 2]
    for d in again:
        await bot.inbound.ack(d)
    await bot.restart()
    assert await bot.fetch_n(1, timeout=0.5) == []


async def test_an_unreadable_batch_is_dead_lettered(bot: DistributedBackend) -> None:
    broker = bot.runtime.broker
    await broker.publish(
        b'[{"channel": "chat2desk"}]',
        broker.inbound_queue(0),
        message_id="batch:bad",
        content_type=BATCH_CONTENT_TYPE,
    )
    assert await bot.fetch_n(1, timeout=1.0) == []
    (letter,) = await bot.dead_letters.list()
    assert letter.kind == "inbound" and letter.key == "batch:bad"
    assert letter.last_error == "unreadable message body"


async def test_an_unreadable_message_met_while_the_broker_is_down_is_kept_for_later(
    bot: DistributedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dead-lettering it fails: the messages taken before it still reach the worker, and it
    # stays in the buffer to be dead-lettered by a later fetch (not lost in memory, unacked).
    broker = bot.runtime.broker
    (client,) = clients_of_one_shard(bot, 1)
    good = webhook(bot, client, 1)
    shard = shard_of(f"{good.channel}:{good.client_id}", bot.settings.queue_shards)
    await bot.inbound.put(good)
    await broker.publish(
        b'[{"channel": "chat2desk"}]',
        broker.inbound_queue(shard),
        message_id="batch:bad",
        content_type=BATCH_CONTENT_TYPE,
    )
    publish_dead_letter = broker.publish_dead_letter
    failures: list[str] = []

    async def down_once(**fields: object) -> None:
        if not failures:
            failures.append(str(fields["key"]))
            raise BackendUnavailable("RabbitMQ unavailable")
        await publish_dead_letter(**fields)  # type: ignore[arg-type]

    monkeypatch.setattr(broker, "publish_dead_letter", down_once)
    await bot.inbound.consumer.start()
    await eventually(lambda: len(bot.inbound._buffer) == 2)
    got = await bot.inbound.fetch(10)
    assert [d.message.message_id for d in got] == [good.message_id]
    assert failures == ["batch:bad"]
    assert await bot.inbound.fetch(10) == []
    (letter,) = await bot.dead_letters.list()
    assert letter.key == "batch:bad" and letter.last_error == "unreadable message body"


async def test_a_processed_copy_that_keeps_coming_back_is_not_dead_lettered(
    bot: DistributedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The siblings of a part that keeps crashing workers come back with every redelivery of
    # their message; only started steps count toward MAX_INBOUND_DELIVERIES, and a copy of a
    # processed message is not a started step.
    async def ack_lost(delivery: object) -> None:
        return None  # the worker dies before its ack reaches RabbitMQ

    await bot.inbound.put(webhook(bot, "p", 1))
    seen = []
    for _ in range(bot.settings.max_inbound_deliveries + 2):
        (delivery,) = await bot.fetch_n(1)
        seen.append(delivery.deliveries)
        monkeypatch.setattr(bot.inbound, "ack", ack_lost)
        await bot.runtime.worker.handle(delivery)
        await bot.restart()
    assert seen == [1] + [2] * (bot.settings.max_inbound_deliveries + 1)
    assert await bot.dead_letters.list() == []
    (last,) = await bot.fetch_n(1)
    await bot.runtime.worker.handle(last)  # acked this time
    await bot.restart()
    assert await bot.fetch_n(1, timeout=0.5) == []


async def test_a_dead_lettered_batch_is_replayed_as_its_webhooks(bot: DistributedBackend) -> None:
    # A worker older than batching cannot read a batch and dead-letters it whole (a rolling
    # upgrade that started with the servers); `orderbot dlq replay` puts back each webhook.
    a, b = clients_of_one_shard(bot, 2)
    batch = [webhook(bot, a, 1), webhook(bot, b, 1), webhook(bot, a, 2)]
    await bot.runtime.broker.publish_dead_letter(
        kind="inbound",
        key="batch:old-worker",
        channel="?",
        client_id="?",
        payload=b"[" + b",".join(m.to_json() for m in batch) + b"]",
        attempts=1,
        error="unreadable inbound message",
    )
    assert await bot.dead_letters.replay(None) == 1
    got = await bot.fetch_n(3)
    assert [d.message for d in got] == batch
    assert await bot.dead_letters.list() == []


async def test_a_replay_whose_acks_hang_still_returns(
    bot: DistributedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `orderbot dlq replay` on a connection that dies under it: the acks are bounded (the
    # letters come back to the queue and are replayed again next time, as copies).
    from aio_pika.message import IncomingMessage

    from orderbot.queues.rabbitmq import broker as broker_module

    for n in range(2):
        await bot.runtime.broker.publish_dead_letter(
            kind="inbound",
            key=f"m{n}",
            channel="chat2desk",
            client_id="c",
            payload=webhook(bot, "c", n).to_json(),
            attempts=1,
            error="crashed",
        )

    async def hangs(self: IncomingMessage, multiple: bool = False) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(broker_module, "ACK_TIMEOUT", 0.2)
    monkeypatch.setattr(IncomingMessage, "ack", hangs)
    assert await asyncio.wait_for(bot.dead_letters.replay(None), 10) == 2
    assert len(await bot.fetch_n(2)) == 2
