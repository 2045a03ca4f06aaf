"""The dead-letter queue on RabbitMQ (``P.dead_letter``, declared by
:class:`~orderbot.queues.rabbitmq.broker.RabbitBroker`): what could not be sent or processed,
listed, replayed onto the queue each came from, and purged by ``orderbot dlq``.
"""

from __future__ import annotations

import builtins
import contextlib

import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from redis.asyncio import Redis

from orderbot import outbound
from orderbot.loggers import storage as log
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.queues.base import DeadLetter, DeadLetterQueue
from orderbot.queues.rabbitmq.broker import RabbitBroker, ack_message, shard_of
from orderbot.queues.rabbitmq.outbox import header_int, reply_headers
from orderbot.storage.redis import RedisKeys

__all__ = ["RabbitDeadLetterQueue"]

# What parsing a stored message body raises when the body is not one (JSON errors are ValueErrors).
_UNREADABLE = (ValueError, KeyError, TypeError)


def _letter(raw: AbstractIncomingMessage) -> DeadLetter:
    h = raw.headers or {}
    kind = str(h.get("x-orderbot-kind", "outbox"))
    return DeadLetter(
        id=header_int(h.get("x-orderbot-id")),
        kind="inbound" if kind == "inbound" else "outbox",
        key=str(h.get("x-orderbot-key", "")),
        channel=str(h.get("x-orderbot-channel", "")),
        client_id=str(h.get("x-orderbot-client", "")),
        payload=bytes(raw.body),
        attempts=header_int(h.get("x-orderbot-attempts")),
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
                try:
                    await self._replay_one(letter)
                except _UNREADABLE:
                    # Nothing to put back: it stays (unacked, so back in the queue) for a look.
                    log.warning("dead letter %s is unreadable; kept in the queue", letter.id)
                    continue
                # Bounded: a letter whose ack is lost stays and is replayed again next time
                # (its copies are recognised: processed ids, sent marks).
                await ack_message(raw)
                count += 1
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return count

    async def _replay_one(self, letter: DeadLetter) -> None:
        """Put ``letter`` back on its queue; raises one of ``_UNREADABLE`` before publishing
        anything when its payload cannot be read."""
        if letter.kind == "inbound":
            # A whole batch is dead-lettered when a worker could not read it (one older than
            # batching, during a rolling upgrade): its webhooks go back one by one, in order.
            data = orjson.loads(letter.payload)
            parts = [
                InboundMessage.from_dict(d) for d in (data if isinstance(data, list) else [data])
            ]
            for message in parts:
                await self._redis.delete(
                    self._keys.processed(message.dedupe_key),
                    self._keys.deliveries(message.dedupe_key),
                )
                shard = shard_of(message.client_key, self._broker.shards)
                await self._broker.publish(
                    message.to_json(),
                    self._broker.inbound_queue(shard),
                    message_id=message.dedupe_key,
                )
        else:
            reply = OutboundMessage.from_json(letter.payload)
            shard = shard_of(
                outbound.client_key(reply.channel, reply.client_id), self._broker.shards
            )
            await self._broker.publish(
                letter.payload,
                self._broker.outbox_queue(shard),
                message_id=reply.key,
                headers=reply_headers(0, 0.0, ""),
            )

    async def delete(self, ids: builtins.list[int] | None) -> int:
        """Take dead letters ``ids`` off the queue for good (all when None)."""
        if ids is None:
            return await self.purge()
        wanted = set(ids)
        channel, taken = await self._browse(None)
        count = 0
        try:
            for raw in taken:
                if _letter(raw).id in wanted:
                    await ack_message(raw)
                    count += 1
        finally:
            with contextlib.suppress(Exception):
                await channel.close()  # the rest, unacked, go back in order
        return count

    async def purge(self) -> int:
        channel = await self._broker.connection.channel()
        try:
            queue = await channel.get_queue(self._broker.dead_letter_queue, ensure=False)
            result = await queue.purge()
            return int(result.message_count or 0)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
