"""Distributed queues on RabbitMQ (aio-pika), with Redis for the few facts a broker cannot keep.

Topology (``P`` is ``QUEUE_PREFIX``, ``N`` is ``QUEUE_SHARDS``; every queue durable, every
message persistent, every publish confirmed by the broker before the call returns)::

    P.inbound.0 .. P.inbound.N-1     customer messages, TTL 24 h, single-active-consumer
    P.outbox.0  .. P.outbox.N-1      replies, TTL 7 days, single-active-consumer
    P.retry.1s / 2s / 4s / 300s      fanout exchange -> P.outbox.retry.<d> (TTL d, dead-letter
                                     exchange "" with the original routing key: back to the
                                     reply's own outbox shard)
    P.dead_letter                    what could not be sent or processed (listed, replayed,
                                     purged by ``orderbot dlq``)

Per-client order across processes. A client always maps to the same shard (CRC32 of
``channel:client_id``, stable across processes and Python versions). Single-active-consumer
means one process at a time receives a shard, in queue order; inside it the worker's per-client
lanes keep order while different clients run concurrently. When that process dies its unacked
messages go back to the queue in their original order before the standby consumer takes over.

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

Replies in order, with retries that leave the sender. The outbox hands a sender at most one
reply per client at a time (the next one only after the previous is sent, dead-lettered or
parked), so a client's replies cannot overtake each other even with several senders. A failed
reply is *parked*: ``hold:<client>`` is set in Redis to its key, a copy with the new attempt
count goes through the delayed-retry queue for its wait (1 s, 2 s, 4 s, then 300 s; longer waits
such as a 429's ``Retry-After`` hop through the largest queue that fits), and the original is
acked. Until the parked reply comes back, the client's later replies stay unacked in this
process (blocked); other clients go on. The hold lives in Redis, not in memory, because a sender
that restarts (or a standby that takes over the shard) would otherwise send the later replies
first. Holding the lane in memory alone would also have kept the failing reply unacked for
hours, which RabbitMQ's ``consumer_timeout`` (30 min by default) does not allow. Blocked
followers of a reply that keeps failing do stay unacked: raise ``consumer_timeout`` above the
longest retry span (about 4 hours; ``compose.yaml`` sets 6 hours).

Sent once. After a send succeeds ``sent:<key>`` is set (7 days) before the ack; a reply whose key
is already marked (republished by a step redone after a crash, or redelivered after a crash
between send and ack) is acked and dropped without a call.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import aio_pika
import aiormq
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from orderbot.errors import BackendUnavailable, StorageError
from orderbot.loggers import storage as log
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.msglog import MessageLogWriter
from orderbot.queues.base import (
    DeadLetter,
    DeadLetterQueue,
    InboundDelivery,
    InboundQueue,
    Outbox,
    OutboxItem,
    QueueDepths,
)
from orderbot.redisbatch import RedisBatcher

__all__ = [
    "RETRY_DELAYS",
    "RabbitBroker",
    "RabbitDeadLetterQueue",
    "RabbitInboundQueue",
    "RabbitOutbox",
    "RedisKeys",
    "shard_of",
]

INBOUND_TTL_MS = 24 * 3600 * 1000
OUTBOX_TTL_MS = 7 * 24 * 3600 * 1000
KEEP_SECONDS = 7 * 24 * 3600
RETRY_DELAYS: tuple[int, ...] = (1, 2, 4, 300)
# A reply handed back by a retry queue this close to its time is given to the sender (whose
# lane sleeps the rest); further away it is parked again.
_PARK_SLACK = 1.0
_RECHECK_BLOCKED = 30.0
# A parked reply not back this long after its time is taken as lost (a broker restart can drop
# a message the retry queue dead-letters while the target queue is still recovering): it is
# published again from its copy in Redis (a second copy coming back later is dropped as sent).
_PARKED_LOST_AFTER = 20.0
_RECOVER_EVERY = 10.0

_PERSISTENT_MODE = int(aio_pika.DeliveryMode.PERSISTENT)

# Mark a reply sent (or given up), forget its send in progress, and release its client's hold
# if the hold is this reply.
_FINISH_REPLY = """
if ARGV[3] == '1' then redis.call('SET', KEYS[1], '1', 'EX', ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[3])
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[4])
return 1
"""


def shard_of(client_key: str, shards: int) -> int:
    """The shard of a client: stable across processes (``hash()`` is salted per process)."""
    return zlib.crc32(client_key.encode()) % shards


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Names of the Redis keys of one deployment (``prefix`` keeps test runs apart)."""

    prefix: str

    def deliveries(self, dedupe_key: str) -> str:
        return f"{self.prefix}:deliveries:{dedupe_key}"

    def processed(self, dedupe_key: str) -> str:
        return f"{self.prefix}:processed:{dedupe_key}"

    def state(self, client_key: str) -> str:
        return f"{self.prefix}:state:{client_key}"

    def sent(self, reply_key: str) -> str:
        return f"{self.prefix}:sent:{reply_key}"

    def sending(self, reply_key: str) -> str:
        return f"{self.prefix}:sending:{reply_key}"

    def parked(self, reply_key: str) -> str:
        return f"{self.prefix}:parked:{reply_key}"

    @property
    def parked_index(self) -> str:
        """Sorted set of ``<client>\t<reply key>`` by the time each parked reply is due."""
        return f"{self.prefix}:parked"

    def hold(self, client_key: str) -> str:
        return f"{self.prefix}:hold:{client_key}"

    def rate_limit(self, name: str) -> str:
        return f"{self.prefix}:ratelimit:{name}"

    def handoff(self, client_key: str) -> str:
        """Set while the client is with an operator: the cheap check of every message (the
        ``handoffs`` row in PostgreSQL decides; see ``orderbot.desk.postgres``)."""
        return f"{self.prefix}:handoff:{client_key}"

    def pending_notifications(self) -> str:
        """Status changes whose notification may not be published yet: a sorted set of
        ``<order id>:<time>`` by time (``orderbot.desk.postgres``)."""
        return f"{self.prefix}:notify-pending"


def _unavailable(what: str, exc: BaseException) -> BackendUnavailable:
    return BackendUnavailable(f"{what}: {type(exc).__name__}: {exc}", retry_after=5.0)


class RabbitBroker:
    """One robust connection (reconnects with backoff), the topology, and a publishing channel
    with publisher confirms. Shared by the queues of one process."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "orderbot",
        shards: int = 8,
        retry_delays: Sequence[int] = RETRY_DELAYS,
        publish_timeout: float = 5.0,
        connect_timeout: float = 30.0,
    ) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self.url = url
        self.prefix = prefix
        self.shards = shards
        self.retry_delays = tuple(sorted(retry_delays))
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._retry_exchanges: dict[int, AbstractExchange] = {}
        self._closed = False
        # Bumped on every reconnect: deliveries of an older generation cannot be acked.
        self.generation = 0
        self._reconnect_hooks: list[Any] = []

    # names

    def inbound_queue(self, shard: int) -> str:
        return f"{self.prefix}.inbound.{shard}"

    def outbox_queue(self, shard: int) -> str:
        return f"{self.prefix}.outbox.{shard}"

    def retry_exchange(self, delay: int) -> str:
        return f"{self.prefix}.retry.{delay}s"

    def retry_queue(self, delay: int) -> str:
        return f"{self.prefix}.outbox.retry.{delay}s"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dead_letter"

    def all_queues(self) -> list[str]:
        return [
            *(self.inbound_queue(i) for i in range(self.shards)),
            *(self.outbox_queue(i) for i in range(self.shards)),
            *(self.retry_queue(d) for d in self.retry_delays),
            self.dead_letter_queue,
        ]

    # lifecycle

    async def __aenter__(self) -> RabbitBroker:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Connect (retrying with backoff for up to ``connect_timeout`` seconds) and declare
        the topology. Raises BackendUnavailable when the broker stays unreachable."""
        if self._connection is not None:
            return
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.2
        while True:
            try:
                connection = await aio_pika.connect_robust(
                    self.url,
                    timeout=5,
                    reconnect_interval=1.0,
                    client_properties={"connection_name": f"orderbot {self.prefix}"},
                )
                break
            except Exception as exc:  # aio-pika raises several unrelated types here
                if time.monotonic() + delay > deadline:
                    raise _unavailable("cannot connect to RabbitMQ", exc) from None
                log.warning("RabbitMQ unreachable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._connection = connection
        connection.reconnect_callbacks.add(self._on_reconnect)
        self._publisher = await connection.channel(publisher_confirms=True)
        await self._declare(self._publisher)

    def _on_reconnect(self, *_: object) -> None:
        self.generation += 1
        log.warning("reconnected to RabbitMQ (generation %d)", self.generation)
        for hook in list(self._reconnect_hooks):
            hook()

    def on_reconnect(self, hook: Any) -> None:
        self._reconnect_hooks.append(hook)

    async def _declare(self, channel: AbstractChannel) -> None:
        sac = {"x-single-active-consumer": True}
        for i in range(self.shards):
            await channel.declare_queue(
                self.inbound_queue(i),
                durable=True,
                arguments={**sac, "x-message-ttl": INBOUND_TTL_MS},
            )
            await channel.declare_queue(
                self.outbox_queue(i),
                durable=True,
                arguments={**sac, "x-message-ttl": OUTBOX_TTL_MS},
            )
        for delay in self.retry_delays:
            exchange = await channel.declare_exchange(
                self.retry_exchange(delay), aio_pika.ExchangeType.FANOUT, durable=True
            )
            queue = await channel.declare_queue(
                self.retry_queue(delay),
                durable=True,
                arguments={"x-message-ttl": delay * 1000, "x-dead-letter-exchange": ""},
            )
            await queue.bind(exchange)
            self._retry_exchanges[delay] = exchange
        await channel.declare_queue(self.dead_letter_queue, durable=True)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    @property
    def connected(self) -> bool:
        c = self._connection
        return c is not None and not c.is_closed and not c.reconnecting and self._transport_ok()

    def _transport_ok(self) -> bool:
        c = self._connection
        transport = getattr(c, "transport", None)
        return transport is not None and not transport.connection.is_closed

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise StorageError("the broker is not open")
        return self._connection

    # publishing

    async def publish(
        self,
        body: bytes,
        routing_key: str,
        *,
        message_id: str,
        headers: dict[str, Any] | None = None,
        exchange: AbstractExchange | None = None,
    ) -> None:
        """Publish persistently and return once the broker confirmed; BackendUnavailable
        when it cannot (down, reconnecting, no confirm in time)."""
        channel = self._publisher
        if channel is None or not self.connected:
            raise BackendUnavailable("RabbitMQ is not connected", retry_after=5.0)
        # Straight to aiormq: aio-pika's Message and Exchange.publish cost more per message
        # than the frames themselves (a third of a busy server's publishing time).
        properties = aiormq.spec.Basic.Properties(
            delivery_mode=_PERSISTENT_MODE,
            message_id=message_id,
            content_type="application/json",
            headers=headers or {},
        )
        try:
            async with asyncio.timeout(self.publish_timeout):
                underlay = await channel.get_underlay_channel()
                await underlay.basic_publish(
                    body,
                    exchange=exchange.name if exchange is not None else "",
                    routing_key=routing_key,
                    properties=properties,
                )
        except TimeoutError as exc:
            raise _unavailable("RabbitMQ did not confirm in time", exc) from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _unavailable("RabbitMQ publish failed", exc) from None

    async def publish_retry(
        self,
        body: bytes,
        routing_key: str,
        *,
        message_id: str,
        headers: dict[str, Any],
        wait: float,
    ) -> None:
        """Publish through the delayed-retry queue whose delay fits ``wait`` (the largest not
        above it, at least the smallest): it comes back to ``routing_key`` after that delay."""
        fitting = [d for d in self.retry_delays if d <= wait + 0.001]
        delay = fitting[-1] if fitting else self.retry_delays[0]
        await self.publish(
            body,
            routing_key,
            message_id=message_id,
            headers=headers,
            exchange=self._retry_exchanges[delay],
        )

    async def consumer_channel(self, prefetch: int) -> AbstractChannel:
        """A plain (not robust) channel: after a reconnect its owner opens a new one itself.
        A robust channel that aio-pika restores behind our back could come back as a second
        consumer of the shard that nobody reads."""
        channel = aio_pika.Channel(self.connection, publisher_confirms=False)
        await channel.initialize()
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def message_counts(self, names: Iterable[str]) -> dict[str, int]:
        """Ready messages per queue (unacked ones are not counted by RabbitMQ)."""
        channel = await self.connection.channel()
        try:
            underlay = await channel.get_underlay_channel()
            counts = {}
            for name in names:
                ok = await underlay.queue_declare(queue=name, passive=True)
                counts[name] = int(ok.message_count or 0)
            return counts
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def depths(self) -> QueueDepths:
        try:
            counts = await asyncio.wait_for(self.message_counts(self.all_queues()), 5.0)
        except Exception as exc:
            raise _unavailable("cannot read queue depths", exc) from None
        inbound = sum(counts[self.inbound_queue(i)] for i in range(self.shards))
        outbox = sum(counts[self.outbox_queue(i)] for i in range(self.shards)) + sum(
            counts[self.retry_queue(d)] for d in self.retry_delays
        )
        return QueueDepths(
            inbound=inbound, outbox=outbox, dead_letter=counts[self.dead_letter_queue]
        )

    async def publish_dead_letter(
        self,
        *,
        kind: Literal["outbox", "inbound"],
        key: str,
        channel: str,
        client_id: str,
        payload: bytes,
        attempts: int,
        error: str,
    ) -> None:
        letter_id = time.time_ns() // 1000  # unique enough, sortable, no shared counter needed
        await self.publish(
            payload,
            self.dead_letter_queue,
            message_id=f"dead:{letter_id}",
            headers={
                "x-orderbot-id": letter_id,
                "x-orderbot-kind": kind,
                "x-orderbot-key": key,
                "x-orderbot-channel": channel,
                "x-orderbot-client": client_id,
                "x-orderbot-attempts": attempts,
                "x-orderbot-error": error[:2000],
                "x-orderbot-created": repr(time.time()),
            },
        )


async def _ack(message: AbstractIncomingMessage) -> None:
    """Ack, ignoring a channel that is gone: the message comes back and is recognised."""
    try:
        await message.ack()
    except Exception as exc:
        log.debug("ack failed (%s); the message will be redelivered and dropped", exc)


class _ShardChannels:
    """One consumer channel per shard queue, so that a shard can be given up alone: closing
    its channel returns exactly that shard's unacked messages to the queue, in order."""

    def __init__(
        self,
        broker: RabbitBroker,
        queue_name: Callable[[int], str],
        prefetch: int,
        on_message: Callable[[int, AbstractIncomingMessage], None],
    ) -> None:
        self._broker = broker
        self._queue_name = queue_name
        self._prefetch = prefetch
        self._on_message = on_message
        self._channels: dict[int, AbstractChannel] = {}
        self.leaving: set[int] = set()
        self.lost: set[int] = set()  # consumed before a reconnect, not again yet
        self._locks: dict[int, asyncio.Lock] = {}
        self._reopening: asyncio.Task[None] | None = None
        broker.on_reconnect(self._reconnected)

    @property
    def open_shards(self) -> list[int]:
        return sorted(self._channels)

    def _lock(self, shard: int) -> asyncio.Lock:
        return self._locks.setdefault(shard, asyncio.Lock())

    async def start(self, shard: int) -> None:
        # One at a time per shard: a reopen after a reconnect and a lease round could otherwise
        # both open a channel, and the one left behind would be a consumer nobody reads.
        async with self._lock(shard):
            await self._start(shard)

    async def _start(self, shard: int) -> None:
        if shard in self._channels:
            return
        channel = await self._broker.consumer_channel(self._prefetch)
        try:
            queue = await channel.get_queue(self._queue_name(shard), ensure=False)

            async def deliver(raw: AbstractIncomingMessage) -> None:
                # Only the shard's current channel delivers: a channel aio-pika restored
                # after a reconnect, and that we replace, may still hand over a few.
                if self._channels.get(shard) is channel:
                    self._on_message(shard, raw)

            self._channels[shard] = channel
            await queue.consume(deliver)
        except BaseException:
            self._channels.pop(shard, None)
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        self.lost.discard(shard)

    async def close(self, shard: int) -> None:
        async with self._lock(shard):
            channel = self._channels.pop(shard, None)
            if channel is not None:
                with contextlib.suppress(Exception):
                    await channel.close()

    def _reconnected(self) -> None:
        # aio-pika restores robust channels by itself, but not reliably after the broker
        # closed the connection (a restart): open every shard's channel afresh.
        if self._reopening is None or self._reopening.done():
            self._reopening = asyncio.create_task(self._reopen())

    async def _reopen(self) -> None:
        for shard in self.open_shards:
            try:
                async with self._lock(shard):
                    channel = self._channels.pop(shard, None)
                    if channel is not None:
                        with contextlib.suppress(Exception):
                            await channel.close()
                    if shard in self.leaving:
                        continue
                    await self._start(shard)
            except Exception as exc:
                # Shard leases (or the next reconnect) try again.
                log.warning("cannot consume %s again: %s", self._queue_name(shard), exc)
                self.lost.add(shard)


# -- inbound ---------------------------------------------------------------------------------


class _ShardConsumer:
    """What the inbound queue and the outbox share: consume every shard (no leases), or only the
    shards a :class:`~orderbot.queues.leases.ShardLeases` hands over."""

    _broker: RabbitBroker
    _shards: _ShardChannels
    _starting: asyncio.Lock
    _all_started: bool
    leased: bool

    async def _start(self) -> None:
        if self.leased or (self._all_started and not self._shards.lost):
            return
        async with self._starting:
            try:
                for shard in range(self._broker.shards):
                    await self._shards.start(shard)
            except Exception as exc:
                raise _unavailable("cannot consume from RabbitMQ", exc) from None
            self._shards.lost.clear()
            self._all_started = True

    async def take_shard(self, shard: int) -> None:
        """Consume ``shard`` (its own channel; see :class:`~orderbot.queues.leases.ShardLeases`)."""
        self.leased = True
        await self._shards.start(shard)


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
        batcher: RedisBatcher | None = None,
    ) -> None:
        self._broker = broker
        self._redis = redis
        self._batch = batcher or RedisBatcher(redis)
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


# -- outbox ----------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Parcel:
    handle: int
    client: str
    item: OutboxItem
    raw: AbstractIncomingMessage
    shard: int = 0


def _int(value: object) -> int:
    try:
        return int(str(value)) if value is not None else 0
    except ValueError:
        return 0


def _reply_headers(attempts: int, not_before: float, error: str) -> dict[str, Any]:
    return {
        "x-orderbot-attempts": attempts,
        "x-orderbot-not-before": repr(not_before),
        "x-orderbot-error": error[:2000],
    }


class RabbitOutbox(_ShardConsumer, Outbox):
    """Replies on ``P.outbox.<shard>``; see the module docstring for order and retries.
    ``engine`` (PostgreSQL) receives the outbound message log when given."""

    parks_retries = True

    def __init__(
        self,
        broker: RabbitBroker,
        redis: Redis,
        *,
        keys: RedisKeys | None = None,
        engine: AsyncEngine | None = None,
        prefetch: int = 1000,
        batcher: RedisBatcher | None = None,
    ) -> None:
        self._broker = broker
        self._redis = redis
        self._keys = keys or RedisKeys(broker.prefix)
        self._batch = batcher or RedisBatcher(redis)
        self._message_log = MessageLogWriter(engine) if engine is not None else None
        self._prefetch = prefetch
        self._finish = redis.register_script(_FINISH_REPLY)
        self._handles = itertools.count(1)
        self._lines: dict[str, deque[_Parcel]] = {}
        self._ready: deque[str] = deque()
        self._queued: set[str] = set()
        self._busy: dict[str, _Parcel] = {}
        self._out: dict[int, _Parcel] = {}
        self._blocked: dict[str, str] = {}
        self._rechecked = time.monotonic()
        self._recovered = time.monotonic()
        self._wakeup = asyncio.Event()
        self._settled = asyncio.Event()
        self._shards = _ShardChannels(broker, broker.outbox_queue, prefetch, self._on_message)
        self._all_started = False
        self._starting = asyncio.Lock()
        # Set when shard leases decide what this process consumes (``take_shard``).
        self.leased = False
        broker.on_reconnect(self._forget_lines)

    # producing (the worker's step store)

    async def put(self, replies: Sequence[OutboundMessage]) -> None:
        """Publish replies in order, each confirmed before the next (a client's replies must
        reach its shard in this order)."""
        for reply in replies:
            shard = shard_of(f"{reply.channel}:{reply.client_id}", self._broker.shards)
            await self._broker.publish(
                reply.to_json(),
                self._broker.outbox_queue(shard),
                message_id=reply.key,
                headers=_reply_headers(0, 0.0, ""),
            )

    # consuming

    async def give_back_shard(self, shard: int) -> None:
        """Hand out no more replies of ``shard``, wait for the sender to report on those in
        hand, then close its channel: the rest returns to the queue in order."""
        shards = self._broker.shards
        self._shards.leaving.add(shard)
        try:
            self._ready = deque(c for c in self._ready if shard_of(c, shards) != shard)
            self._queued = {c for c in self._queued if shard_of(c, shards) != shard}
            for client in [c for c in self._blocked if shard_of(c, shards) == shard]:
                del self._blocked[client]
            while any(p.shard == shard for p in self._out.values()):
                self._settled.clear()
                await self._settled.wait()
            await self._shards.close(shard)
            for client in [c for c in self._lines if shard_of(c, shards) == shard]:
                if client not in self._busy:
                    del self._lines[client]
        finally:
            self._shards.leaving.discard(shard)

    @property
    def consuming(self) -> list[int]:
        """The shards this process consumes now."""
        return self._shards.open_shards

    def _on_message(self, shard: int, raw: AbstractIncomingMessage) -> None:
        # No awaits: arrival order per shard is the order replies must keep.
        if shard in self._shards.leaving:
            return  # returns to the queue when the shard's channel closes
        try:
            message = OutboundMessage.from_json(raw.body)
        except Exception:
            log.exception("unreadable reply in the outbox; dropping it to the dead-letter queue")
            task = asyncio.ensure_future(self._drop_unreadable(raw))
            task.add_done_callback(lambda t: t.exception())
            return
        headers = raw.headers or {}
        item = OutboxItem(
            handle=next(self._handles),
            message=message,
            attempts=_int(headers.get("x-orderbot-attempts")),
            not_before=float(str(headers.get("x-orderbot-not-before", "0") or 0)),
            last_error=str(headers.get("x-orderbot-error", "") or ""),
        )
        client = f"{message.channel}:{message.client_id}"
        parcel = _Parcel(item.handle, client, item, raw, shard)
        line = self._lines.setdefault(client, deque())
        line.append(parcel)
        if self._blocked.get(client) == message.key:
            # The parked reply is back: it goes before the ones that waited for it.
            line.remove(parcel)
            line.appendleft(parcel)
            del self._blocked[client]
            self._schedule(client)
        elif len(line) == 1:
            self._schedule(client)
        self._wakeup.set()

    async def _drop_unreadable(self, raw: AbstractIncomingMessage) -> None:
        await self._broker.publish_dead_letter(
            kind="outbox",
            key=raw.message_id or "?",
            channel="?",
            client_id="?",
            payload=raw.body,
            attempts=0,
            error="unreadable reply body",
        )
        await _ack(raw)

    def _schedule(self, client: str) -> None:
        if client in self._busy or client in self._blocked or client in self._queued:
            return
        if self._shards.leaving and shard_of(client, self._broker.shards) in self._shards.leaving:
            return
        if self._lines.get(client):
            self._queued.add(client)
            self._ready.append(client)

    def _forget_lines(self) -> None:
        # Everything not handed out comes again on the new channel, in order. Handed-out
        # replies stay busy: their client waits until the sender reports on them.
        self._lines.clear()
        self._ready.clear()
        self._queued.clear()
        self._blocked.clear()

    async def claim(self, limit: int, exclude: set[int]) -> list[OutboxItem]:
        await self._start()
        now = time.monotonic()
        if self._blocked and now - self._rechecked > _RECHECK_BLOCKED:
            # A hold may have been released elsewhere (dead letter replayed, TTL).
            self._rechecked = now
            blocked = list(self._blocked)
            self._blocked.clear()
            for client in blocked:
                self._schedule(client)
        if now - self._recovered > _RECOVER_EVERY:
            # Safety net: any client with replies waiting that nothing will hand out.
            for client in list(self._lines):
                self._schedule(client)
        if now - self._recovered > _RECOVER_EVERY:
            self._recovered = now
            await self._recover_parked()
        handed: list[OutboxItem] = []
        while self._ready and len(handed) < limit:
            clients: list[str] = []
            while self._ready and len(clients) < limit - len(handed):
                client = self._ready.popleft()
                self._queued.discard(client)
                if self._lines.get(client) and client not in self._busy:
                    clients.append(client)
            if not clients:
                break
            heads = [self._lines[c][0] for c in clients]
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for p in heads:
                        pipe.get(self._keys.hold(p.client))
                        pipe.exists(self._keys.sent(p.item.message.key))
                        pipe.get(self._keys.sending(p.item.message.key))
                    found = await pipe.execute()
            except RedisError as exc:
                for client in reversed(clients):
                    self._queued.add(client)
                    self._ready.appendleft(client)
                raise _unavailable("Redis unavailable for the outbox", exc) from None
            for n, (p, hold_raw, sent, sending) in enumerate(
                zip(heads, found[::3], found[1::3], found[2::3], strict=True)
            ):
                if sending is not None and p.item.in_doubt_since is None:
                    # A send of it started before and its outcome was never recorded (a sender
                    # died mid-call, or the call timed out): the API may have it already.
                    p.item = replace(p.item, in_doubt_since=float(sending))
                try:
                    await self._consider(p, hold_raw, bool(sent), handed)
                except Exception as exc:
                    # Redis or the broker failed mid-way: the clients not looked at yet (this
                    # one included) stay scheduled, and what was already handed out (marked
                    # busy here) must reach the sender, or those clients would wait forever.
                    for q in heads[n:]:
                        self._schedule(q.client)
                    if not handed:
                        raise
                    log.warning("outbox claim cut short: %s", exc)
                    return handed
        return handed

    async def _consider(
        self, p: _Parcel, hold_raw: bytes | None, sent: bool, handed: list[OutboxItem]
    ) -> None:
        key = p.item.message.key
        hold = hold_raw.decode() if hold_raw is not None else None
        line = self._lines.get(p.client)
        if not line or line[0] is not p:
            self._schedule(p.client)  # the line changed meanwhile (a reconnect)
            return
        if sent:
            # Delivered before (a redone step republished it, or a crash came before the ack).
            log.info("reply %s was already sent; dropping the copy", key)
            if hold == key:
                await self._finish_in_redis(p, mark_sent=False)
            line.popleft()
            await _ack(p.raw)
            self._after(p.client)
            return
        if hold is not None and hold != key:
            # An earlier reply of this client is parked: it goes first.
            for other in line:
                if other.item.message.key == hold:
                    line.remove(other)
                    line.appendleft(other)
                    self._schedule(p.client)
                    return
            self._blocked[p.client] = hold
            return
        wait = p.item.not_before - time.time()
        if wait > _PARK_SLACK:
            # Back from a retry queue early (a long wait hops through the largest queue).
            await self._park(p, p.item.attempts, p.item.not_before, p.item.last_error)
            line.popleft()
            if not line:
                del self._lines[p.client]
            return
        self._busy[p.client] = p
        self._out[p.handle] = p
        handed.append(p.item)

    def _after(self, client: str) -> None:
        line = self._lines.get(client)
        if line is not None and not line:
            del self._lines[client]
        self._schedule(client)
        self._wakeup.set()

    def _settle(self, p: _Parcel) -> None:
        """The sender is done with ``p``: its client's next reply may go."""
        self._out.pop(p.handle, None)
        self._settled.set()
        if self._busy.get(p.client) is p:
            del self._busy[p.client]
        line = self._lines.get(p.client)
        if line and line[0] is p:
            line.popleft()
        self._after(p.client)

    async def begin_send(self, handle: int) -> None:
        """``sending:<key>`` = now, before the call: a copy handed out again later (after a
        crash mid-call, or a timeout) comes ``in_doubt_since`` that time, and the sender asks
        the channel whether it arrived instead of sending it twice."""
        p = self._parcel(handle)
        if p is None:
            return
        key = self._keys.sending(p.item.message.key)
        try:
            # NX: the first start is the safe bound for "delivered since".
            now = repr(time.time())
            await self._batch.call(lambda pipe: pipe.set(key, now, nx=True, ex=KEEP_SECONDS))
        except RedisError as exc:
            raise _unavailable("Redis unavailable for the outbox", exc) from None

    async def _finish_in_redis(self, p: _Parcel, *, mark_sent: bool) -> None:
        try:
            await self._batch.script(
                self._finish,
                keys=[
                    self._keys.sent(p.item.message.key),
                    self._keys.hold(p.client),
                    self._keys.sending(p.item.message.key),
                    self._keys.parked(p.item.message.key),
                    self._keys.parked_index,
                ],
                args=[
                    p.item.message.key,
                    KEEP_SECONDS,
                    "1" if mark_sent else "0",
                    f"{p.client}\t{p.item.message.key}",
                ],
            )
        except RedisError as exc:
            raise _unavailable("Redis unavailable for the outbox", exc) from None

    async def _park(self, p: _Parcel, attempts: int, not_before: float, error: str) -> None:
        message = p.item.message
        body = message.to_json()
        parked = orjson.dumps(
            {"body": body.decode(), "attempts": attempts, "not_before": not_before, "error": error}
        )
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._keys.hold(p.client), message.key, ex=KEEP_SECONDS)
                pipe.set(self._keys.parked(message.key), parked, ex=KEEP_SECONDS)
                pipe.zadd(self._keys.parked_index, {f"{p.client}\t{message.key}": not_before})
                await pipe.execute()
        except RedisError as exc:
            raise _unavailable("Redis unavailable for the outbox", exc) from None
        self._blocked[p.client] = message.key
        shard = shard_of(p.client, self._broker.shards)
        await self._broker.publish_retry(
            body,
            self._broker.outbox_queue(shard),
            message_id=message.key,
            headers=_reply_headers(attempts, not_before, error),
            wait=max(0.0, not_before - time.time()),
        )
        await _ack(p.raw)

    async def _recover_parked(self) -> None:
        """Publish again, from their copies in Redis, the parked replies of this process's
        shards that are overdue (lost on the way back from a retry queue)."""
        consumed = set(self._shards.open_shards)
        try:
            overdue = await self._redis.zrangebyscore(
                self._keys.parked_index, "-inf", time.time() - _PARKED_LOST_AFTER, start=0, num=500
            )
        except RedisError as exc:
            log.warning("cannot check parked replies: %s", exc)
            return
        for found in overdue:
            member = found.decode() if isinstance(found, bytes) else str(found)
            client, _, key = member.partition("\t")
            if shard_of(client, self._broker.shards) not in consumed:
                continue
            try:
                raw, sent = await self._redis.mget(self._keys.parked(key), self._keys.sent(key))
                if raw is None or sent is not None:
                    await self._redis.zrem(self._keys.parked_index, member)
                    continue
                copy = orjson.loads(raw)
                log.warning("parked reply %s did not come back; publishing it again", key)
                await self._broker.publish(
                    copy["body"].encode(),
                    self._broker.outbox_queue(shard_of(client, self._broker.shards)),
                    message_id=key,
                    headers=_reply_headers(int(copy["attempts"]), 0.0, str(copy["error"])),
                )
                await self._redis.zadd(self._keys.parked_index, {member: time.time()})
            except (BackendUnavailable, RedisError) as exc:
                log.warning("cannot publish parked reply %s again: %s", key, exc)
                return

    def _parcel(self, handle: int) -> _Parcel | None:
        p = self._out.get(handle)
        if p is None:
            log.warning("outbox handle %s is not in hand (already settled?)", handle)
        return p

    async def mark_sent(self, handle: int) -> None:
        p = self._parcel(handle)
        if p is None:
            return
        await self._finish_in_redis(p, mark_sent=True)
        await self._log(p, success=True, error=None)
        await _ack(p.raw)
        self._settle(p)

    async def reschedule(self, handle: int, attempts: int, not_before: float, error: str) -> None:
        p = self._parcel(handle)
        if p is None:
            return
        await self._park(p, attempts, not_before, error)
        self._out.pop(p.handle, None)
        self._settled.set()
        if self._busy.get(p.client) is p:
            del self._busy[p.client]
        line = self._lines.get(p.client)
        if line and line[0] is p:
            line.popleft()
        if line is not None and not line:
            del self._lines[p.client]
        self._wakeup.set()

    async def dead_letter(self, handle: int, attempts: int, error: str) -> None:
        p = self._parcel(handle)
        if p is None:
            return
        message = p.item.message
        await self._broker.publish_dead_letter(
            kind="outbox",
            key=message.key,
            channel=message.channel,
            client_id=message.client_id,
            payload=message.to_json(),
            attempts=attempts,
            error=error,
        )
        await self._finish_in_redis(p, mark_sent=False)
        await self._log(p, success=False, error=error)
        await _ack(p.raw)
        self._settle(p)

    async def _log(self, p: _Parcel, *, success: bool, error: str | None) -> None:
        if self._message_log is None:
            return
        message = p.item.message
        self._message_log.add(
            {
                "direction": "out",
                "channel": message.channel,
                "client_id": message.client_id,
                "message_key": message.key,
                "text": message.text,
                "dialog_state": None,
                "success": success,
                "error": error,
                "created_at": time.time(),
            }
        )

    async def aclose(self) -> None:
        """Write the outbound message log rows still waiting. Idempotent."""
        if self._message_log is not None:
            await self._message_log.aclose()

    async def wait(self, timeout: float) -> None:
        if not self._ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
        self._wakeup.clear()

    @property
    def blocked_clients(self) -> int:
        return len(self._blocked)


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
