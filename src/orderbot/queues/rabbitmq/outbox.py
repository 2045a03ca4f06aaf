"""The outbox on RabbitMQ: replies on ``P.outbox.<shard>`` (the topology and the broker are in
:mod:`orderbot.queues.rabbitmq.broker`).

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

What the outbox keeps in Redis about a reply:

* A send starts: ``sending:<key>`` (:meth:`RabbitOutbox.begin_send`), so that a copy handed out
  again after a crash mid-call comes back in doubt instead of being sent twice.
* A reply is sent or given up: ``sent:<key>`` when sent, its client's ``hold:<client>`` released
  if the hold is this reply, its ``sending:`` mark and parked copy forgotten, in one script.
* A failed reply is parked: ``hold:<client>``, its copy in ``parked:<key>`` and the parked index,
  then the copy goes through the delayed-retry queue and the original is acked.
* A parked reply that does not come back (lost by a broker restart) is published again from its
  copy in Redis (``claim`` looks for such replies every ``_RECOVER_EVERY`` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from orderbot import outbound
from orderbot.errors import BackendUnavailable
from orderbot.loggers import storage as log
from orderbot.messages import OutboundMessage
from orderbot.queues.base import Outbox, OutboxItem
from orderbot.queues.rabbitmq.broker import RabbitBroker, ack_message, broker_unavailable, shard_of
from orderbot.queues.rabbitmq.shards import ShardConsumer
from orderbot.storage.message_log import MessageLogWriter
from orderbot.storage.redis import KEEP_SECONDS, RedisBatcher, RedisKeys

__all__ = ["RabbitOutbox", "header_int", "reply_headers"]

# A reply handed back by a retry queue this close to its time is given to the sender (whose
# lane sleeps the rest); further away it is parked again.
_PARK_SLACK = 1.0
_RECHECK_BLOCKED = 30.0
_RECOVER_EVERY = 10.0


def header_int(value: object) -> int:
    """A message header read as a whole number (0 when absent or not a number)."""
    try:
        return int(str(value)) if value is not None else 0
    except ValueError:
        return 0


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


def reply_headers(attempts: int, not_before: float, error: str) -> dict[str, Any]:
    """The headers a reply carries through the outbox queues: its attempts, when it may go, why
    it last failed."""
    return {
        "x-orderbot-attempts": attempts,
        "x-orderbot-not-before": repr(not_before),
        "x-orderbot-error": error[:2000],
    }


class RabbitOutbox(Outbox):
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
        # Which shards this process consumes (all, or what shard leases hand over).
        self.consumer = ShardConsumer(broker, broker.outbox_queue, prefetch, self._on_message)
        self._shards = self.consumer.channels
        broker.on_reconnect(self._forget_lines)

    # producing (the worker's step store)

    async def put(self, replies: Sequence[OutboundMessage]) -> None:
        """Publish replies in order, each confirmed before the next (a client's replies must
        reach its shard in this order)."""
        for reply in replies:
            shard = shard_of(
                outbound.client_key(reply.channel, reply.client_id), self._broker.shards
            )
            await self._broker.publish(
                reply.to_json(),
                self._broker.outbox_queue(shard),
                message_id=reply.key,
                headers=reply_headers(0, 0.0, ""),
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
            attempts=header_int(headers.get("x-orderbot-attempts")),
            not_before=float(str(headers.get("x-orderbot-not-before", "0") or 0)),
            last_error=str(headers.get("x-orderbot-error", "") or ""),
        )
        client = outbound.client_key(message.channel, message.client_id)
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
        await ack_message(raw)

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
        await self.consumer.start()
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
            except Exception as exc:
                for client in reversed(clients):
                    if client not in self._queued:
                        self._queued.add(client)
                        self._ready.appendleft(client)
                if handed:
                    # What an earlier round handed out is marked busy: it must reach the
                    # sender, or those clients would wait forever.
                    log.warning("outbox claim cut short: %s", exc)
                    return handed
                if isinstance(exc, RedisError):
                    raise broker_unavailable("Redis unavailable for the outbox", exc) from None
                raise
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
            await ack_message(p.raw)
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
        self._release(p)
        self._after(p.client)

    def _release(self, p: _Parcel) -> None:
        """``p`` is no longer in hand nor at the head of its client's line."""
        self._out.pop(p.handle, None)
        self._settled.set()
        if self._busy.get(p.client) is p:
            del self._busy[p.client]
        line = self._lines.get(p.client)
        if line and line[0] is p:
            line.popleft()

    def give_back(self, handle: int) -> None:
        """The sender dropped ``handle`` without an outcome: it stays first in its client's
        line and is handed out again (in doubt, if its send had started)."""
        p = self._out.pop(handle, None)
        if p is None:
            return
        self._settled.set()
        if self._busy.get(p.client) is p:
            del self._busy[p.client]
        self._schedule(p.client)
        self._wakeup.set()

    async def mark_sent(self, handle: int) -> None:
        p = self._parcel(handle)
        if p is None:
            return
        await self._finish_in_redis(p, mark_sent=True)
        await self._log(p, success=True, error=None)
        await ack_message(p.raw)
        self._settle(p)

    async def reschedule(self, handle: int, attempts: int, not_before: float, error: str) -> None:
        p = self._parcel(handle)
        if p is None:
            return
        await self._park(p, attempts, not_before, error)
        self._release(p)
        line = self._lines.get(p.client)
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
        await ack_message(p.raw)
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
            raise broker_unavailable("Redis unavailable for the outbox", exc) from None

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
            raise broker_unavailable("Redis unavailable for the outbox", exc) from None

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
            raise broker_unavailable("Redis unavailable for the outbox", exc) from None
        self._blocked[p.client] = message.key
        shard = shard_of(p.client, self._broker.shards)
        await self._broker.publish_retry(
            body,
            self._broker.outbox_queue(shard),
            message_id=message.key,
            headers=reply_headers(attempts, not_before, error),
            wait=max(0.0, not_before - time.time()),
        )
        await ack_message(p.raw)

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
                    headers=reply_headers(int(copy["attempts"]), 0.0, str(copy["error"])),
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
