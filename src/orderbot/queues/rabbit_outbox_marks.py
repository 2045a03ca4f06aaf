"""What the outbox on RabbitMQ keeps in Redis about a reply, and parking a failed one.

* A send starts: ``sending:<key>`` (:meth:`OutboxMarks.begin_send`), so that a copy handed out
  again after a crash mid-call comes back in doubt instead of being sent twice.
* A reply is sent or given up: ``sent:<key>`` when sent, its client's ``hold:<client>`` released
  if the hold is this reply, its ``sending:`` mark and parked copy forgotten, in one script.
* A failed reply is parked: ``hold:<client>``, its copy in ``parked:<key>`` and the parked index,
  then the copy goes through the delayed-retry queue and the original is acked.
* A parked reply that does not come back (lost by a broker restart) is published again from its
  copy in Redis (``claim`` looks for such replies every ``_RECOVER_EVERY`` seconds).

Why holds live in Redis and how a client's replies keep their order is in the docstring of
:mod:`orderbot.queues.rabbit_outbox`. A part of
:class:`~orderbot.queues.rabbit_outbox.RabbitOutbox`, mixed in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from orderbot.errors import BackendUnavailable
from orderbot.loggers import storage as log
from orderbot.queues.base import OutboxItem
from orderbot.queues.broker import (
    KEEP_SECONDS,
    RabbitBroker,
    RedisKeys,
    _ack,
    _unavailable,
    shard_of,
)
from orderbot.queues.shards import _ShardChannels
from orderbot.redisbatch import RedisBatcher

__all__ = ["OutboxMarks"]

# A parked reply not back this long after its time is taken as lost (a broker restart can drop
# a message the retry queue dead-letters while the target queue is still recovering): it is
# published again from its copy in Redis (a second copy coming back later is dropped as sent).
_PARKED_LOST_AFTER = 20.0

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


@dataclass(eq=False, slots=True)
class _Parcel:
    handle: int
    client: str
    item: OutboxItem
    raw: AbstractIncomingMessage
    shard: int = 0


def _reply_headers(attempts: int, not_before: float, error: str) -> dict[str, Any]:
    return {
        "x-orderbot-attempts": attempts,
        "x-orderbot-not-before": repr(not_before),
        "x-orderbot-error": error[:2000],
    }


class OutboxMarks:
    """The Redis marks of a reply and parking; mixed into
    :class:`~orderbot.queues.rabbit_outbox.RabbitOutbox`, which sets the attributes."""

    _broker: RabbitBroker
    _redis: Redis
    _keys: RedisKeys
    _batch: RedisBatcher
    _finish: AsyncScript
    _out: dict[int, _Parcel]
    _blocked: dict[str, str]
    _shards: _ShardChannels

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

    async def release_waiting(self, channel: str, errors: tuple[str, ...]) -> int:
        """Publish again now, from their copies in Redis, the parked replies of ``channel`` in
        this process's shards that wait because the channel was down (last error starting
        with one of ``errors``). The copy still in its retry queue comes back later and is
        dropped as sent, or handed out again if this one failed too: never sent twice."""
        consumed = set(self._shards.open_shards)
        now = time.time()
        try:
            waiting = await self._redis.zrangebyscore(
                self._keys.parked_index, now, "+inf", start=0, num=1000
            )
        except RedisError as exc:
            log.warning("cannot read parked replies: %s", exc)
            return 0
        released = 0
        for found in waiting:
            member = found.decode() if isinstance(found, bytes) else str(found)
            client, _, key = member.partition("\t")
            shard = shard_of(client, self._broker.shards)
            if not client.startswith(f"{channel}:") or shard not in consumed:
                continue
            try:
                raw, sent = await self._redis.mget(self._keys.parked(key), self._keys.sent(key))
                if raw is None or sent is not None:
                    continue
                copy = orjson.loads(raw)
                if not str(copy["error"]).startswith(errors):
                    continue  # a wait the API asked for (429, quota) is kept
                await self._broker.publish(
                    copy["body"].encode(),
                    self._broker.outbox_queue(shard),
                    message_id=key,
                    headers=_reply_headers(int(copy["attempts"]), 0.0, str(copy["error"])),
                )
                await self._redis.zadd(self._keys.parked_index, {member: now})
                released += 1
            except (BackendUnavailable, RedisError) as exc:
                log.warning("cannot release parked reply %s: %s", key, exc)
                break
        return released

    def _parcel(self, handle: int) -> _Parcel | None:
        p = self._out.get(handle)
        if p is None:
            log.warning("outbox handle %s is not in hand (already settled?)", handle)
        return p
