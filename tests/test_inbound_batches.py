"""Ingress batching on the distributed profile, without services: the webhooks of one shard that
arrive while its publish waits for a confirm go together in the next AMQP message."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from orderbot.errors import BackendUnavailable
from orderbot.messages import InboundMessage
from orderbot.queues.rabbitmq import inbound as rabbitmq
from orderbot.queues.rabbitmq.inbound import BATCH_CONTENT_TYPE, _ShardPublisher


class FakeBroker:
    """Records publishes; each waits on ``gate`` (the broker's confirm) when it is set."""

    shards = 4

    def __init__(self) -> None:
        self.published: list[tuple[bytes, str, str, str]] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    def inbound_queue(self, shard: int) -> str:
        return f"p.inbound.{shard}"

    async def publish(
        self, body: bytes, routing_key: str, *, message_id: str, content_type: str = ""
    ) -> None:
        self.published.append((body, routing_key, message_id, content_type))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail


def webhook(n: int, text: str = "hi") -> InboundMessage:
    return InboundMessage(
        channel="chat2desk",
        client_id=f"c{n % 3}",
        message_id=f"m{n}",
        text=text,
        received_at=1700000000.0,
    )


def publisher(broker: FakeBroker) -> _ShardPublisher:
    return _ShardPublisher(broker, 2)  # type: ignore[arg-type]


async def test_a_lone_webhook_goes_at_once_as_a_plain_message() -> None:
    broker = FakeBroker()
    await publisher(broker).submit(webhook(1))
    ((body, queue, message_id, content_type),) = broker.published
    assert InboundMessage.from_json(body) == webhook(1)
    assert (queue, message_id, content_type) == ("p.inbound.2", "chat2desk:m1", "")


async def test_webhooks_arriving_during_a_publish_go_together_in_order() -> None:
    broker = FakeBroker()
    broker.gate = asyncio.Event()
    shard = publisher(broker)
    first = asyncio.ensure_future(shard.submit(webhook(0)))
    await asyncio.sleep(0.01)
    assert len(broker.published) == 1  # waits for its confirm
    rest = [asyncio.ensure_future(shard.submit(webhook(n))) for n in range(1, 8)]
    await asyncio.sleep(0.01)
    assert len(broker.published) == 1 and not any(f.done() for f in rest)
    broker.gate.set()
    await asyncio.gather(first, *rest)
    assert len(broker.published) == 2
    body, _, message_id, content_type = broker.published[1]
    assert content_type == BATCH_CONTENT_TYPE
    assert message_id == "batch:chat2desk:m1"
    assert [InboundMessage.from_dict(d).message_id for d in orjson.loads(body)] == [
        f"m{n}" for n in range(1, 8)
    ]


async def test_a_failed_publish_fails_every_webhook_it_held() -> None:
    broker = FakeBroker()
    broker.gate = asyncio.Event()
    shard = publisher(broker)
    first = asyncio.ensure_future(shard.submit(webhook(0)))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(shard.submit(webhook(n))) for n in range(1, 4)]
    await asyncio.sleep(0.01)
    broker.fail = BackendUnavailable("RabbitMQ did not confirm in time", retry_after=5.0)
    broker.gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) for r in results)


async def test_a_batch_over_the_byte_bound_is_split_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rabbitmq, "_BATCH_MAX_BYTES", 600)
    broker = FakeBroker()
    broker.gate = asyncio.Event()
    shard = publisher(broker)
    first = asyncio.ensure_future(shard.submit(webhook(0)))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(shard.submit(webhook(n, "x" * 150))) for n in range(1, 10)]
    await asyncio.sleep(0.01)
    broker.gate.set()
    await asyncio.gather(first, *rest)
    ids: list[str] = []
    for body, _, _, content_type in broker.published[1:]:
        assert len(body) <= 600 or content_type != BATCH_CONTENT_TYPE
        parts: list[Any] = (
            orjson.loads(body) if content_type == BATCH_CONTENT_TYPE else [orjson.loads(body)]
        )
        ids += [p["message_id"] for p in parts]
    assert len(broker.published) > 2
    assert ids == [f"m{n}" for n in range(1, 10)]
