"""The inbound queue and the dead-letter queue on RabbitMQ.

The broker, the topology and the Redis keys are in :mod:`orderbot.queues.broker`, the outbox in
:mod:`orderbot.queues.rabbit_outbox`; their public names are re-exported here for existing
importers.

Manual acks. The worker acks an inbound message only after its step is committed
(:meth:`RabbitInboundQueue.ack`); a crash before that redelivers it, and the step store
recognises a message already processed. Redeliveries are counted in Redis (the broker's own
``redelivered`` flag says only "at least once before"); after ``MAX_INBOUND_DELIVERIES`` the
worker moves the message to the dead-letter queue instead of looping on it.

Duplicates. Ingress publishes every webhook it accepts, a messenger's redelivery included; the
worker reads the message's processed mark (``processed:<id>``, set by its step for 7 days)
together with the dialog state, and acknowledges a copy of a processed message without a
step. So a 200 is never given for a message that was not stored, no message is processed
twice, and a webhook costs no Redis command at all. (A lookup at ingress was measured at 14 %
of a server's time, to spare the queue the rare copy.)
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
from collections import deque

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orderbot.loggers import storage as log
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.queues.base import (
    DeadLetter,
    DeadLetterQueue,
    InboundDelivery,
    InboundQueue,
    QueueDepths,
)
from orderbot.queues.broker import (
    INBOUND_TTL_MS,
    KEEP_SECONDS,
    OUTBOX_TTL_MS,
    RETRY_DELAYS,
    RabbitBroker,
    RedisKeys,
    _ack,
    shard_of,
)
from orderbot.queues.rabbit_outbox import RabbitOutbox, _int, _reply_headers
from orderbot.queues.shards import _ShardChannels, _ShardConsumer

__all__ = [
    "INBOUND_TTL_MS",
    "KEEP_SECONDS",
    "OUTBOX_TTL_MS",
    "RETRY_DELAYS",
    "RabbitBroker",
    "RabbitDeadLetterQueue",
    "RabbitInboundQueue",
    "RabbitOutbox",
    "RedisKeys",
    "shard_of",
]


# -- inbound ---------------------------------------------------------------------------------


class RabbitInboundQueue(_ShardConsumer, InboundQueue):
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
        self._buffer: deque[tuple[int, AbstractIncomingMessage]] = deque()
        self._unacked: dict[int, tuple[int, AbstractIncomingMessage]] = {}
        self._in_hand: dict[int, int] = {}  # per shard: fetched, not yet acked
        self._handles = itertools.count(1)
        self._arrived = asyncio.Event()
        self._settled = asyncio.Event()
        self._shards = _ShardChannels(broker, broker.inbound_queue, prefetch, self._on_message)
        self._all_started = False
        self._starting: asyncio.Lock = asyncio.Lock()
        # Set when shard leases decide what this process consumes (``take_shard``).
        self.leased = False
        broker.on_reconnect(self._forget_buffered)

    async def put(self, message: InboundMessage) -> bool:
        """Publish ``message`` to its client's shard; True once the broker confirmed it. A copy
        is published like any message: the worker drops it by its processed mark (see the
        module docstring), so this never answers False."""
        shard = shard_of(message.client_key, self._broker.shards)
        await self._broker.publish(
            message.to_json(),
            self._broker.inbound_queue(shard),
            message_id=message.dedupe_key,
        )
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

    @property
    def consuming(self) -> list[int]:
        """The shards this process consumes now."""
        return self._shards.open_shards

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
        await self._start()
        taken: list[tuple[int, AbstractIncomingMessage]] = []
        while self._buffer and len(taken) < limit:
            taken.append(self._buffer.popleft())
        if not taken:
            return []
        counts = await self._count_redeliveries([raw for _, raw in taken])
        deliveries = []
        for (shard, raw), count in zip(taken, counts, strict=True):
            try:
                message = InboundMessage.from_json(raw.body)
            except Exception:
                log.exception("unreadable inbound message; dead-lettering it")
                await self._broker.publish_dead_letter(
                    kind="inbound",
                    key=raw.message_id or "?",
                    channel="?",
                    client_id="?",
                    payload=raw.body,
                    attempts=count,
                    error="unreadable message body",
                )
                await _ack(raw)
                continue
            handle = next(self._handles)
            self._unacked[handle] = (shard, raw)
            self._in_hand[shard] = self._in_hand.get(shard, 0) + 1
            deliveries.append(InboundDelivery(handle=handle, message=message, deliveries=count))
        return deliveries

    async def _count_redeliveries(self, taken: list[AbstractIncomingMessage]) -> list[int]:
        """Deliveries of each message as the worker sees them: 1 for a first delivery; for a
        redelivery, the attempts started before (counted by :meth:`begin`; the first delivery
        is assumed started) plus this one. A redelivery that never reached a step (it waited
        in a worker that died) is not counted, so killing workers does not dead-letter it."""
        redelivered = [m for m in taken if m.redelivered]
        if not redelivered:
            return [1] * len(taken)
        counted: dict[int, int] = {}
        try:
            values = await self._redis.mget(
                [self._keys.deliveries(m.message_id or "") for m in redelivered]
            )
            for m, n in zip(redelivered, values, strict=True):
                counted[id(m)] = max(int(n or 0), 1) + 1
        except RedisError as exc:
            log.warning("cannot count redeliveries (%s)", exc)
        return [counted.get(id(m), 2) if m.redelivered else 1 for m in taken]

    async def begin(self, delivery: InboundDelivery) -> None:
        """Count a started attempt of a redelivered message (a first delivery is counted as
        started when it comes back; no Redis call on the common path)."""
        found = self._unacked.get(delivery.handle)
        if found is None or not found[1].redelivered:
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
            shard, raw = found
            try:
                await _ack(raw)
            finally:
                self._in_hand[shard] -= 1
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


# -- dead letters ----------------------------------------------------------------------------


def _letter(raw: AbstractIncomingMessage) -> DeadLetter:
    h = raw.headers or {}
    kind = str(h.get("x-orderbot-kind", "outbox"))
    return DeadLetter(
        id=_int(h.get("x-orderbot-id")),
        kind="inbound" if kind == "inbound" else "outbox",
        key=str(h.get("x-orderbot-key", "")),
        channel=str(h.get("x-orderbot-channel", "")),
        client_id=str(h.get("x-orderbot-client", "")),
        payload=bytes(raw.body),
        attempts=_int(h.get("x-orderbot-attempts")),
        last_error=str(h.get("x-orderbot-error", "")),
        created_at=float(str(h.get("x-orderbot-created", "0") or 0)),
    )


class RabbitDeadLetterQueue(DeadLetterQueue):
    """``P.dead_letter``: read without consuming (get, then close the channel so what was not
    taken goes back in order), replayed onto the queue each came from."""

    def __init__(
        self, broker: RabbitBroker, redis: Redis, *, keys: RedisKeys | None = None
    ) -> None:
        self._broker = broker
        self._redis = redis
        self._keys = keys or RedisKeys(broker.prefix)

    async def _browse(
        self, limit: int | None
    ) -> tuple[AbstractChannel, list[AbstractIncomingMessage]]:
        channel = await self._broker.connection.channel()
        queue = await channel.get_queue(self._broker.dead_letter_queue, ensure=False)
        taken: list[AbstractIncomingMessage] = []
        while limit is None or len(taken) < limit:
            raw = await queue.get(no_ack=False, fail=False, timeout=5)
            if raw is None:
                break
            taken.append(raw)
        return channel, taken

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        channel, taken = await self._browse(limit)
        try:
            return [_letter(raw) for raw in taken]
        finally:
            with contextlib.suppress(Exception):
                await channel.close()  # unacked: back to the queue, in order

    async def replay(self, ids: builtins.list[int] | None) -> int:
        wanted = None if ids is None else set(ids)
        channel, taken = await self._browse(None)
        count = 0
        try:
            for raw in taken:
                letter = _letter(raw)
                if wanted is not None and letter.id not in wanted:
                    continue
                await self._replay_one(letter)
                await raw.ack()
                count += 1
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return count

    async def _replay_one(self, letter: DeadLetter) -> None:
        if letter.kind == "inbound":
            message = InboundMessage.from_json(letter.payload)
            await self._redis.delete(
                self._keys.processed(message.dedupe_key), self._keys.deliveries(message.dedupe_key)
            )
            shard = shard_of(message.client_key, self._broker.shards)
            await self._broker.publish(
                letter.payload, self._broker.inbound_queue(shard), message_id=message.dedupe_key
            )
        else:
            reply = OutboundMessage.from_json(letter.payload)
            shard = shard_of(f"{reply.channel}:{reply.client_id}", self._broker.shards)
            await self._broker.publish(
                letter.payload,
                self._broker.outbox_queue(shard),
                message_id=reply.key,
                headers=_reply_headers(0, 0.0, ""),
            )

    async def purge(self) -> int:
        channel = await self._broker.connection.channel()
        try:
            queue = await channel.get_queue(self._broker.dead_letter_queue, ensure=False)
            result = await queue.purge()
            return int(result.message_count or 0)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
