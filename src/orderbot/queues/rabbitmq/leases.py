"""Shard leases in Redis: the processes of one role (workers, senders) share the shard queues.

Every live process of a role is a *member*: it registers in ``P:members:<role>`` (a sorted set
scored by the unix time its registration lapses) and holds ``P:lease:<role>:<shard>`` = its id,
with a TTL, for each shard it consumes. Every ``interval`` it renews both and compares what it
holds with its fair share, ``ceil(shards / members)``: it takes free shards up to that share and
gives back what it holds above it. So a process that joins receives shards from the others,
and the shards of one that stops (or dies: its registration and leases lapse) go to the rest.

A process consumes only the shards it leases. The lease says *who subscribes*; per-client order
does not rest on it. That stays with single-active-consumer: a process gives a shard back by
finishing what it has in hand of it and then closing the shard's channel, which returns the
unacked rest to the queue, in order, before any other subscriber becomes active. A lease that
lapses too early (a Redis restart, a stalled process) therefore costs balance for a moment,
never order or a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
import zlib
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from orderbot.loggers import storage as log
from orderbot.queues.rabbitmq.shards import ShardConsumer

__all__ = ["ShardHolder", "ShardLeases"]

# KEYS: lease keys; ARGV[1] member id, ARGV[2] ttl ms. Renews the leases that are this
# member's, takes back the ones that vanished (Redis restarted), reports who holds each.
_RENEW = """
local out = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  elseif not holder then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS: lease keys; ARGV[1] member id. Deletes those still held by this member.
_RELEASE = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key); n = n + 1 end
end
return n
"""


class ShardHolder(Protocol):
    """What consumes shards: the inbound queue (workers) or the outbox (senders), each with its
    :class:`~orderbot.queues.rabbitmq.shards.ShardConsumer`."""

    @property
    def consumer(self) -> ShardConsumer:
        """Consumes the shards: ``consuming`` now, ``take_shard`` to start one."""

    async def give_back_shard(self, shard: int) -> None:
        """Finish what is in hand of ``shard``, then stop consuming it so that its unacked
        messages return to the queue in order."""


class ShardLeases:
    """Leases ``shards`` shards of ``role`` for ``holder``; :meth:`run` keeps them balanced."""

    def __init__(
        self,
        redis: Redis,
        holder: ShardHolder,
        *,
        prefix: str,
        role: str,
        shards: int,
        ttl: float = 6.0,
        interval: float = 1.0,
        member: str | None = None,
    ) -> None:
        if not 0 < interval < ttl:
            raise ValueError("interval must be positive and shorter than ttl")
        self._redis = redis
        self._holder = holder
        self._prefix = prefix
        self._role = role
        self.shards = shards
        self.ttl = ttl
        self.interval = interval
        self.member = member or uuid.uuid4().hex[:12]
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self.held: set[int] = set()  # consuming (leased, or being given back)
        self._leaving: dict[int, asyncio.Task[None]] = {}
        # Start looking for free shards at a place of our own, so that members joining at
        # once do not all race for shard 0.
        self._offset = zlib.crc32(self.member.encode()) % shards

    @property
    def members_key(self) -> str:
        return f"{self._prefix}:members:{self._role}"

    def lease_key(self, shard: int) -> str:
        return f"{self._prefix}:lease:{self._role}:{shard}"

    @property
    def active(self) -> set[int]:
        """Shards leased and consumed, not being given back."""
        return self.held - set(self._leaving)

    async def run(self, stop: asyncio.Event) -> None:
        """Balance until ``stop`` is set. The leases stay held (and the shards consumed) after
        that: :meth:`release` gives them up once the consumers are closed."""
        while not stop.is_set():
            try:
                await self.balance()
            except RedisError as exc:
                # Keep consuming what we have: single-active-consumer keeps order meanwhile.
                log.warning("shard leases (%s): Redis unavailable: %s", self._role, exc)
            except Exception:
                log.exception("shard leases (%s): balancing failed", self._role)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
        for task in list(self._leaving.values()):
            task.cancel()

    async def balance(self) -> None:
        """One round: register, renew, then take or give back shards toward the fair share."""
        now = time.time()
        ttl_ms = int(self.ttl * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.members_key, {self.member: now + self.ttl})
            pipe.zremrangebyscore(self.members_key, "-inf", now)
            pipe.zcard(self.members_key)
            pipe.expire(self.members_key, int(self.ttl * 10))
            pipe.mget([self.lease_key(s) for s in range(self.shards)])
            _, _, members, _, holders = await pipe.execute()
        renewing = sorted(self.held)
        if renewing:
            kept = await self._renew(
                keys=[self.lease_key(s) for s in renewing], args=[self.member, ttl_ms]
            )
            for shard, ok in zip(renewing, kept, strict=True):
                if not ok and shard not in self._leaving:
                    log.warning("shard %s lease (%s) lost; giving it back", shard, self._role)
                    self._give_back(shard, release=False)
        consuming = set(self._holder.consumer.consuming)
        for shard in sorted(self.active - consuming):
            # Leased but not consumed (its channel could not be reopened after a reconnect).
            try:
                await self._holder.consumer.take_shard(shard)
            except Exception as exc:
                log.warning("cannot consume shard %s (%s) again: %s", shard, self._role, exc)
        fair = math.ceil(self.shards / max(1, int(members)))
        active = sorted(self.active)
        for shard in active[fair:]:
            self._give_back(shard, release=True)
        want = fair - min(len(active), fair)
        for i in range(self.shards):
            if want <= 0:
                break
            shard = (self._offset + i) % self.shards
            if shard in self.held or holders[shard] is not None:
                continue
            if not await self._redis.set(self.lease_key(shard), self.member, nx=True, px=ttl_ms):
                continue
            try:
                await self._holder.consumer.take_shard(shard)
            except Exception as exc:
                log.warning("cannot consume shard %s (%s): %s", shard, self._role, exc)
                await self._release(keys=[self.lease_key(shard)], args=[self.member])
                continue
            self.held.add(shard)
            want -= 1
            log.info("%s %s took shard %s", self._role, self.member, shard)

    def _give_back(self, shard: int, *, release: bool) -> None:
        if shard in self._leaving:
            return

        async def give_back() -> None:
            try:
                await self._holder.give_back_shard(shard)
                if release:
                    await self._release(keys=[self.lease_key(shard)], args=[self.member])
            except Exception:
                log.exception("giving back shard %s (%s) failed", shard, self._role)
            finally:
                self.held.discard(shard)
                self._leaving.pop(shard, None)
            log.info("%s %s gave back shard %s", self._role, self.member, shard)

        self._leaving[shard] = asyncio.create_task(give_back(), name=f"orderbot-give-back-{shard}")

    async def release(self) -> None:
        """Give up every lease and the membership (after the consumers are closed)."""
        try:
            if self.held:
                await self._release(
                    keys=[self.lease_key(s) for s in sorted(self.held)], args=[self.member]
                )
            await self._redis.zrem(self.members_key, self.member)
        except RedisError as exc:
            log.warning(
                "cannot release shard leases (%s): %s; they lapse by themselves", self._role, exc
            )
        self.held.clear()
