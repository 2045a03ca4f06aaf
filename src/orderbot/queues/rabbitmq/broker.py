"""Distributed queues on RabbitMQ (aio-pika), with Redis for the few facts a broker cannot keep.

This module holds what the queues share: the broker (one connection, the topology, publishing)
and the shard of a client; the names of the Redis keys are in :mod:`orderbot.storage.redis`.
The queues themselves are in :mod:`orderbot.queues.rabbitmq.inbound` (inbound),
:mod:`orderbot.queues.rabbitmq.outbox` (replies) and :mod:`orderbot.queues.rabbitmq.dead_letters`;
consuming shard queues is in :mod:`orderbot.queues.rabbitmq.shards`.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from orderbot.errors import BackendUnavailable, StorageError
from orderbot.loggers import storage as log
from orderbot.queues.base import QueueDepths

__all__ = [
    "INBOUND_TTL_MS",
    "OUTBOX_TTL_MS",
    "RETRY_DELAYS",
    "RabbitBroker",
    "ack_message",
    "broker_unavailable",
    "shard_of",
]

INBOUND_TTL_MS = 24 * 3600 * 1000
OUTBOX_TTL_MS = 7 * 24 * 3600 * 1000
RETRY_DELAYS: tuple[int, ...] = (1, 2, 4, 300)

_PERSISTENT_MODE = int(aio_pika.DeliveryMode.PERSISTENT)


def shard_of(client_key: str, shards: int) -> int:
    """The shard of a client: stable across processes (``hash()`` is salted per process)."""
    return zlib.crc32(client_key.encode()) % shards


def broker_unavailable(what: str, exc: BaseException) -> BackendUnavailable:
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
            connection = None
            try:
                connection = await aio_pika.connect_robust(
                    self.url,
                    timeout=5,
                    reconnect_interval=1.0,
                    client_properties={"connection_name": f"orderbot {self.prefix}"},
                )
                # The connection can drop between connecting and declaring too: start over.
                publisher = await connection.channel(publisher_confirms=True)
                await self._declare(publisher)
                break
            except Exception as exc:  # aio-pika raises several unrelated types here
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
                if time.monotonic() + delay > deadline:
                    raise broker_unavailable("cannot connect to RabbitMQ", exc) from None
                log.warning("RabbitMQ unreachable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._connection = connection
        connection.reconnect_callbacks.add(self._on_reconnect)
        self._publisher = publisher

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
        content_type: str = "application/json",
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
            content_type=content_type,
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
            raise broker_unavailable("RabbitMQ did not confirm in time", exc) from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise broker_unavailable("RabbitMQ publish failed", exc) from None

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

    async def stranded_shards(self) -> dict[str, int]:
        """Shard queues left by a larger ``QUEUE_SHARDS`` that still hold messages (name ->
        ready messages): no process reads them any more. Lowering the setting always leaves
        shard ``shards`` behind, so that shard (inbound and outbox) is the one looked at."""
        found: dict[str, int] = {}
        for name in (self.inbound_queue(self.shards), self.outbox_queue(self.shards)):
            # One channel each: asking for a queue that does not exist closes the channel.
            channel = await self.connection.channel()
            try:
                underlay = await channel.get_underlay_channel()
                ok = await underlay.queue_declare(queue=name, passive=True)
                if ok.message_count:
                    found[name] = int(ok.message_count)
            except aiormq.exceptions.ChannelNotFoundEntity:
                pass  # never declared: the setting was not lowered
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
        return found

    def describe_stranded(self, stranded: dict[str, int]) -> str:
        """What to tell an operator about :meth:`stranded_shards`' answer."""
        held = ", ".join(f"{name} holds {count}" for name, count in sorted(stranded.items()))
        return (
            f"QUEUE_SHARDS={self.shards} is lower than the shards in use: {held} message(s) "
            "that no process would read. Set QUEUE_SHARDS back to its previous value "
            "everywhere, stop the server, let those queues drain, then lower it "
            "(docs/deployment.md: Choosing and changing QUEUE_SHARDS)"
        )

    async def depths(self) -> QueueDepths:
        try:
            counts = await asyncio.wait_for(self.message_counts(self.all_queues()), 5.0)
        except Exception as exc:
            raise broker_unavailable("cannot read queue depths", exc) from None
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


# How long an ack may take before it is given up like a failed one. An ack is one frame put on
# the connection's write queue (aiormq keeps 10). When the connection dies, the acks issued
# before its channels are marked closed fill that queue and every later one waits on it forever:
# nothing reads a dead connection's queue again (tests/distributed/test_acks.py shows it). Such
# a wait held up a reply lane, and with it its client's later replies, until a restart.
ACK_TIMEOUT = 5.0


async def ack_message(message: AbstractIncomingMessage) -> None:
    """Ack, ignoring a channel that is gone or an ack that cannot be written within
    ``ACK_TIMEOUT``: the message comes back and is recognised (processed, or sent)."""
    try:
        async with asyncio.timeout(ACK_TIMEOUT):
            await message.ack()
    except TimeoutError:
        log.warning(
            "ack not written within %.0fs (connection lost?); the message will be redelivered "
            "and dropped",
            ACK_TIMEOUT,
        )
    except Exception as exc:
        log.debug("ack failed (%s); the message will be redelivered and dropped", exc)
