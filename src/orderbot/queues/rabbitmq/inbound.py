"""The inbound queue on RabbitMQ.

The broker and the topology are in :mod:`orderbot.queues.rabbitmq.broker`, the outbox in
:mod:`orderbot.queues.rabbitmq.outbox`, the dead-letter queue in
:mod:`orderbot.queues.rabbitmq.dead_letters`, the Redis keys in :mod:`orderbot.storage.redis`.

Manual acks. The worker acks an inbound message only after its step is committed
(:meth:`RabbitInboundQueue.ack`); a crash before that redelivers it, and the step store
recognises a message already processed. Redeliveries are counted in Redis (the broker's own
``redelivered`` flag says only "at least once before"); after ``MAX_INBOUND_DELIVERIES`` the
worker moves the message to the dead-letter queue instead of looping on it.

Webhooks that arrive together share an AMQP message. Ingress publishes through one
:class:`_ShardPublisher` per shard: while a publish to a shard waits for its confirm, the
webhooks for that shard that arrive meanwhile are collected and go as one message (a JSON array,
content type ``BATCH_CONTENT_TYPE``) with the next publish; each webhook still gets its 200 only
after the message holding it is confirmed. A lone webhook on an idle server goes at once, as a
plain message. Per-client order holds: a shard's messages, and the webhooks inside each, keep
the order they were accepted in. The worker hands out each part of a message as its own
delivery and acks the message when all its parts are acked; a part of a redelivered message
that was processed already is dropped by its processed mark like any copy. Queue depths count
AMQP messages, so under load ``queues.inbound`` can be below the number of webhooks waiting.
(Measured: a publish and its confirm cost the server and RabbitMQ more than everything else a
webhook needs.)

Duplicates. Ingress publishes every webhook it accepts, a messenger's redelivery included; the
worker reads the message's processed mark (``processed:<id>``, set by its step for 7 days)
together with the dialog state, and acknowledges a copy of a processed message without a
step. So a 200 is never given for a message that was not stored, no message is processed
twice, and a webhook costs no Redis command at all. (A lookup at ingress was measured at 14 %
of a server's time, to spare the queue the rare copy.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from aio_pika.abc import AbstractIncomingMessage
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orderbot.loggers import storage as log
from orderbot.messages import InboundMessage
from orderbot.queues.base import (
    InboundDelivery,
    InboundQueue,
    QueueDepths,
)
from orderbot.queues.rabbitmq.broker import (
    RabbitBroker,
    ack_message,
    shard_of,
)
from orderbot.queues.rabbitmq.shards import ShardConsumer
from orderbot.storage.batching import Batcher
from orderbot.storage.redis import KEEP_SECONDS, RedisKeys

__all__ = ["BATCH_CONTENT_TYPE", "RabbitInboundQueue"]


# -- inbound ---------------------------------------------------------------------------------

# The content type of an inbound message that holds several webhooks (a JSON array of them).
BATCH_CONTENT_TYPE = "application/vnd.orderbot.inbound-batch+json"
# Bounds of one batched message: webhooks, and bytes of their JSON.
_BATCH_MAX = 128
_BATCH_MAX_BYTES = 1 << 20


class _ShardPublisher(Batcher[InboundMessage, None]):
    """Publishes one shard's webhooks: one message at a time in flight (so a shard's messages
    reach the queue in the order they were accepted), the webhooks that arrive meanwhile
    together in the next one."""

    def __init__(self, broker: RabbitBroker, shard: int) -> None:
        super().__init__(max_batch=_BATCH_MAX, max_in_flight=1)
        self._broker = broker
        self._queue = broker.inbound_queue(shard)

    async def _send_batch(self, items: list[InboundMessage]) -> Sequence[None]:
        bodies = [m.to_json() for m in items]
        start = 0
        while start < len(bodies):
            end, size = start + 1, len(bodies[start])
            while end < len(bodies) and size + len(bodies[end]) <= _BATCH_MAX_BYTES:
                size += len(bodies[end])
                end += 1
            if end - start == 1:
                await self._broker.publish(
                    bodies[start], self._queue, message_id=items[start].dedupe_key
                )
            else:
                await self._broker.publish(
                    b"[" + b",".join(bodies[start:end]) + b"]",
                    self._queue,
                    message_id=f"batch:{items[start].dedupe_key}",
                    content_type=BATCH_CONTENT_TYPE,
                )
            start = end
        return [None] * len(items)


@dataclass(eq=False, slots=True)
class _Received:
    """An AMQP message in hand: acked when the last of its ``parts`` is."""

    shard: int
    raw: AbstractIncomingMessage
    parts: int


def _parts(raw: AbstractIncomingMessage) -> list[InboundMessage]:
    """The webhooks ``raw`` holds (ValueError/KeyError/TypeError when it is unreadable)."""
    if raw.content_type == BATCH_CONTENT_TYPE:
        items = orjson.loads(raw.body)
        if not isinstance(items, list) or not items:
            raise ValueError("an inbound batch must be a non-empty JSON array")
        return [InboundMessage.from_dict(item) for item in items]
    return [InboundMessage.from_json(raw.body)]


class RabbitInboundQueue(InboundQueue):
    """Customer messages on ``P.inbound.<shard>``. Consuming starts at the first ``fetch`` (a
    server process only publishes)."""

    def __init__(
        self,
        broker: RabbitBroker,
        redis: Redis,
        *,
        keys: RedisKeys | None = None,
        prefetch: int = 500,
    ) -> None:
        self._broker = broker
        self._redis = redis
        self._keys = keys or RedisKeys(broker.prefix)
        self._prefetch = prefetch
        self._publishers = [_ShardPublisher(broker, n) for n in range(broker.shards)]
        self._buffer: deque[tuple[int, AbstractIncomingMessage]] = deque()
        self._unacked: dict[int, _Received] = {}
        self._in_hand: dict[int, int] = {}  # per shard: parts fetched, not yet acked
        self._handles = itertools.count(1)
        self._arrived = asyncio.Event()
        self._settled = asyncio.Event()
        # Which shards this process consumes (all, or what shard leases hand over).
        self.consumer = ShardConsumer(broker, broker.inbound_queue, prefetch, self._on_message)
        self._shards = self.consumer.channels
        broker.on_reconnect(self._forget_buffered)

    async def put(self, message: InboundMessage) -> bool:
        """Publish ``message`` to its client's shard (with the others arriving meanwhile, see
        the module docstring); True once the broker confirmed it. A copy is published like any
        message: the worker drops it by its processed mark, so this never answers False."""
        shard = shard_of(message.client_key, self._broker.shards)
        await self._publishers[shard].submit(message)
        return True

    async def give_back_shard(self, shard: int) -> None:
        """Stop handing out ``shard``, wait until what was handed out of it is acked, then close
        its channel: the rest returns to the queue in order, before another consumer starts."""
        self._shards.leaving.add(shard)
        try:
            self._buffer = deque(entry for entry in self._buffer if entry[0] != shard)
            while self._in_hand.get(shard, 0) > 0:
                self._settled.clear()
                await self._settled.wait()
            await self._shards.close(shard)
        finally:
            self._shards.leaving.discard(shard)

    def _on_message(self, shard: int, message: AbstractIncomingMessage) -> None:
        # No awaits here: callbacks may run as tasks, and arrival order must be kept.
        if shard in self._shards.leaving:
            return  # returns to the queue when the shard's channel closes
        self._buffer.append((shard, message))
        self._arrived.set()

    def _forget_buffered(self) -> None:
        # Deliveries of a dead channel come again on the new one.
        self._buffer.clear()

    async def fetch(self, limit: int) -> list[InboundDelivery]:
        """Up to about ``limit`` deliveries (a message's parts are never split)."""
        await self.consumer.start()
        taken: list[tuple[int, AbstractIncomingMessage, list[InboundMessage]]] = []
        count = 0
        while self._buffer and count < limit:
            shard, raw = self._buffer.popleft()
            try:
                parts = _parts(raw)
            except Exception:
                log.exception("unreadable inbound message; dead-lettering it")
                try:
                    await self._broker.publish_dead_letter(
                        kind="inbound",
                        key=raw.message_id or "?",
                        channel="?",
                        client_id="?",
                        payload=raw.body,
                        attempts=1,
                        error="unreadable message body",
                    )
                except Exception:
                    # Kept for the next fetch; what was taken already is handed out.
                    self._buffer.appendleft((shard, raw))
                    if not taken:
                        raise
                    break
                await ack_message(raw)
                continue
            taken.append((shard, raw, parts))
            count += len(parts)
        if not taken:
            return []
        counts = await self._count_redeliveries(
            [part for _, raw, parts in taken if raw.redelivered for part in parts]
        )
        deliveries = []
        for shard, raw, parts in taken:
            received = _Received(shard, raw, len(parts))
            self._in_hand[shard] = self._in_hand.get(shard, 0) + len(parts)
            for part in parts:
                handle = next(self._handles)
                self._unacked[handle] = received
                seen = counts.get(part.dedupe_key, 2) if raw.redelivered else 1
                deliveries.append(InboundDelivery(handle=handle, message=part, deliveries=seen))
        return deliveries

    async def _count_redeliveries(self, redelivered: list[InboundMessage]) -> dict[str, int]:
        """Deliveries of each redelivered message as the worker sees them: the attempts
        started before (counted by :meth:`begin`; the first delivery is assumed started) plus
        this one. A redelivery that never reached a step (it waited in a worker that died) is
        not counted, so killing workers does not dead-letter it. (A first delivery is 1.)"""
        if not redelivered:
            return {}
        counted: dict[str, int] = {}
        try:
            values = await self._redis.mget(
                [self._keys.deliveries(m.dedupe_key) for m in redelivered]
            )
            for m, n in zip(redelivered, values, strict=True):
                counted[m.dedupe_key] = max(int(n or 0), 1) + 1
        except RedisError as exc:
            log.warning("cannot count redeliveries (%s)", exc)
        return counted

    async def begin(self, delivery: InboundDelivery) -> None:
        """Count a started attempt of a redelivered message (a first delivery is counted as
        started when it comes back; no Redis call on the common path)."""
        found = self._unacked.get(delivery.handle)
        if found is None or not found.raw.redelivered:
            return
        key = self._keys.deliveries(delivery.message.dedupe_key)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, KEEP_SECONDS)
                n, _ = await pipe.execute()
            if int(n) == 1:  # the first delivery was started too (assumed)
                await self._redis.incr(key)
        except RedisError as exc:
            log.warning("cannot count an attempt of %s (%s)", delivery.message.message_id, exc)

    async def wait(self, timeout: float) -> None:
        if not self._buffer:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        self._arrived.clear()

    async def ack(self, delivery: InboundDelivery) -> None:
        found = self._unacked.pop(delivery.handle, None)
        if found is not None:
            found.parts -= 1
            try:
                if found.parts == 0:
                    await ack_message(found.raw)
            finally:
                self._in_hand[found.shard] -= 1
                self._settled.set()

    async def dead_letter(self, delivery: InboundDelivery, error: str) -> None:
        message = delivery.message
        await self._broker.publish_dead_letter(
            kind="inbound",
            key=message.dedupe_key,
            channel=message.channel,
            client_id=message.client_id,
            payload=message.to_json(),
            attempts=delivery.deliveries,
            error=error,
        )
        await self.ack(delivery)

    async def depth(self) -> QueueDepths:
        return await self._broker.depths()
