"""Consuming the shard queues of RabbitMQ, shared by the inbound queue and the outbox.

Each shard queue gets its own consumer channel, so that a shard can be given up alone (see
"Per-client order across processes" in :mod:`orderbot.queues.rabbitmq.broker`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from orderbot.loggers import storage as log
from orderbot.queues.rabbitmq.broker import RabbitBroker, broker_unavailable

__all__ = ["ShardChannels", "ShardConsumer"]


class ShardChannels:
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

    def dropped(self) -> list[int]:
        """Shards whose channel the broker closed while the connection stayed up (a consumer
        timeout, a channel error): nothing else would open them again. After a lost
        connection, the reconnect opens every channel afresh instead."""
        if not self._broker.connected:
            return []
        return sorted(shard for shard, ch in self._channels.items() if ch.is_closed)

    def _lock(self, shard: int) -> asyncio.Lock:
        return self._locks.setdefault(shard, asyncio.Lock())

    async def start(self, shard: int) -> None:
        # One at a time per shard: a reopen after a reconnect and a lease round could otherwise
        # both open a channel, and the one left behind would be a consumer nobody reads.
        async with self._lock(shard):
            await self._start(shard)

    async def _start(self, shard: int) -> None:
        current = self._channels.get(shard)
        if current is not None:
            if shard not in self.dropped():
                return
            log.warning(
                "the broker closed the channel of %s; consuming it again", self._queue_name(shard)
            )
            del self._channels[shard]
            with contextlib.suppress(Exception):
                await current.close()
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


class ShardConsumer:
    """What the inbound queue and the outbox share: consume every shard (no leases), or only the
    shards a :class:`~orderbot.queues.rabbitmq.leases.ShardLeases` hands over. Each queue owns
    one, built with the queue's shard names and its message callback."""

    def __init__(
        self,
        broker: RabbitBroker,
        queue_name: Callable[[int], str],
        prefetch: int,
        on_message: Callable[[int, AbstractIncomingMessage], None],
    ) -> None:
        self._broker = broker
        self.channels = ShardChannels(broker, queue_name, prefetch, on_message)
        self._starting = asyncio.Lock()
        self._all_started = False
        # Set when shard leases decide what this process consumes (``take_shard``).
        self.leased = False

    async def start(self) -> None:
        """Consume every shard, unless leases decide (idempotent; again after a loss)."""
        if self.leased or (
            self._all_started and not self.channels.lost and not self.channels.dropped()
        ):
            return
        async with self._starting:
            try:
                for shard in range(self._broker.shards):
                    await self.channels.start(shard)
            except Exception as exc:
                raise broker_unavailable("cannot consume from RabbitMQ", exc) from None
            self.channels.lost.clear()
            self._all_started = True

    @property
    def consuming(self) -> list[int]:
        """The shards this process consumes now (a channel the broker closed is not)."""
        dropped = self.channels.dropped()
        return [shard for shard in self.channels.open_shards if shard not in dropped]

    async def take_shard(self, shard: int) -> None:
        """Consume ``shard`` (its own channel; see
        :class:`~orderbot.queues.rabbitmq.leases.ShardLeases`)."""
        self.leased = True
        await self.channels.start(shard)
