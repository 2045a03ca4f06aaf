"""The distributed profile's runtime: :class:`DistributedRuntime` builds the RabbitMQ queues,
Redis state and rate limit, PostgreSQL orders, worker and sender of one process from settings,
and opens, starts, stops and closes them (see :mod:`orderbot.runtime.processes` for how shutdown
keeps per-client order). The workers' housekeeping is
:class:`~orderbot.runtime.housekeeping.Housekeeping`; the lifecycle and the wiring both profiles
share are in :mod:`orderbot.runtime.base`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy import text

from orderbot.channels.base import Channel
from orderbot.config import Settings, require_distributed
from orderbot.desk.postgres import PostgresDeskStore
from orderbot.desk.postgres_admin import PostgresOrderAdmin
from orderbot.desk.redis_topics import RedisOperatorTopics
from orderbot.dialog.flow import Flow
from orderbot.errors import ConfigError
from orderbot.loggers import storage as log
from orderbot.messages import OutboundMessage
from orderbot.queues.base import QueueDepths
from orderbot.queues.rabbitmq.broker import RETRY_DELAYS, RabbitBroker
from orderbot.queues.rabbitmq.dead_letters import RabbitDeadLetterQueue
from orderbot.queues.rabbitmq.inbound import RabbitInboundQueue
from orderbot.queues.rabbitmq.leases import ShardLeases
from orderbot.queues.rabbitmq.outbox import RabbitOutbox
from orderbot.ratelimit import RedisRateLimiter
from orderbot.retry import CircuitBreaker, RetryPolicy
from orderbot.runtime.base import Runtime, operator_topics
from orderbot.runtime.housekeeping import Housekeeping
from orderbot.sender import Sender
from orderbot.state.redis import RedisStepStore
from orderbot.storage import sql as database
from orderbot.storage.redis import RedisBatcher, RedisKeys

__all__ = ["REDIS_POOL_SIZE", "SENDER_STATE_TTL", "DistributedRuntime"]

REDIS_POOL_SIZE = 64  # connections per process


# Seconds a sender's published state lives: three of its looks (every 10 s) missed.
SENDER_STATE_TTL = 30


class DistributedRuntime(Runtime):
    """Everything one distributed process needs. ``roles`` says what ``start()`` runs:
    ``worker``, ``sender``, both, or neither (the HTTP server only publishes)."""

    profile = "distributed"

    def __init__(
        self,
        settings: Settings,
        *,
        roles: Collection[str] = (),
        channels: Mapping[str, Channel] | None = None,
        flow: Flow | None = None,
        retry_delays: Sequence[int] | None = None,
        policy: RetryPolicy | None = None,
        sender_concurrency: int = 100,
        poll_interval: float = 1.0,
        lease_ttl: float = 6.0,
        lease_interval: float = 1.0,
    ) -> None:
        require_distributed(settings)
        unknown = set(roles) - {"worker", "sender"}
        if unknown:
            raise ValueError(f"unknown roles: {sorted(unknown)}")
        super().__init__(settings, channels=channels, flow=flow)
        self.roles = frozenset(roles)
        # A bounded pool that waits for a free connection: the default pool raises "Too many
        # connections" past 100 commands in flight, which a busy ingress or worker reaches.
        self.redis: Redis = Redis.from_pool(
            BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=REDIS_POOL_SIZE,
                timeout=5,
                socket_timeout=5,
                socket_connect_timeout=5,
                health_check_interval=30,
                retry_on_timeout=True,
            )
        )
        # Connections are kept up to DATABASE_POOL_MAX (SQLAlchemy closes "overflow" ones on
        # return, which under steady load meant a new connection for most steps: measured as
        # the largest single cost of a worker). DATABASE_POOL_MIN are opened at start.
        self.engine = database.create_engine(
            settings.database_url,
            pool_size=max(settings.database_pool_max, settings.database_pool_min),
            max_overflow=0,
        )
        self.keys = RedisKeys(settings.queue_prefix)
        # The hot-path Redis commands of this process go through one batcher: those of
        # concurrent steps and sends share pipelines.
        self.redis_batch = RedisBatcher(self.redis)
        self.broker = RabbitBroker(
            settings.rabbitmq_url,
            prefix=settings.queue_prefix,
            shards=settings.queue_shards,
            retry_delays=retry_delays or (*RETRY_DELAYS[:-1], settings.send_retry_slow_delay),
        )
        self.inbound = RabbitInboundQueue(
            self.broker,
            self.redis,
            keys=self.keys,
            prefetch=max(100, settings.worker_concurrency * 20),
        )
        self.outbox = RabbitOutbox(
            self.broker, self.redis, keys=self.keys, engine=self.engine, batcher=self.redis_batch
        )
        self.dead_letters = RabbitDeadLetterQueue(self.broker, self.redis, keys=self.keys)
        # New orders are told to operators with the step's replies.
        alerts = self.operator_alerts()
        self.store = RedisStepStore(
            self.redis,
            self.engine,
            self.outbox,
            keys=self.keys,
            alerts=alerts if alerts else None,
            batcher=self.redis_batch,
        )
        self.admin = PostgresOrderAdmin(
            self.engine,
            self.redis,
            self.outbox,
            self.flow,
            self.options,
            keys=self.keys,
            window_transports=settings.window_transports,
        )
        topics = operator_topics(self.channels, RedisOperatorTopics(self.redis, self.keys))
        self.worker = self.build_worker(
            self.inbound,
            self.store,
            PostgresDeskStore(self.engine, self.redis, keys=self.keys, batcher=self.redis_batch),
            poll_interval=poll_interval,
            topics=topics,
        )
        # One budget per API token: every sender process shares it.
        token_id = hashlib.sha256(settings.chat2desk_api_token.encode()).hexdigest()[:16]
        self.rate_limiter = RedisRateLimiter(
            self.redis,
            self.keys.rate_limit(f"chat2desk:{token_id}"),
            settings.outbound_rate_limit,
            batcher=self.redis_batch,
        )
        sender_options: dict[str, Any] = {
            "policy": policy or RetryPolicy(slow_delay=float(settings.send_retry_slow_delay)),
            "breaker_factory": lambda name: CircuitBreaker(
                name,
                failure_threshold=settings.circuit_failure_threshold,
                cooldown=settings.circuit_cooldown,
            ),
        }
        self.sender = Sender(
            self.outbox,
            self.channels,
            rate_limiter=self.rate_limiter,
            concurrency=sender_concurrency,
            drain_timeout=settings.shutdown_timeout,
            poll_interval=poll_interval,
            **sender_options,
            alerts=self.operations_alerts(self._queue_alert),
            webhook_status=self.webhook_watch.status if self.webhook_watch else None,
            report=self._publish_sender_state,
        )
        self.ingress = self.build_ingress(self.inbound)
        # Workers share the inbound shards, senders the outbox shards (evenly, rebalanced as
        # processes come and go); a process that runs neither role consumes nothing.
        self.leases: list[ShardLeases] = [
            ShardLeases(
                self.redis,
                holder,
                prefix=settings.queue_prefix,
                role=kind,
                shards=settings.queue_shards,
                ttl=lease_ttl,
                interval=lease_interval,
            )
            for role, kind, holder in (
                ("worker", "inbound", self.inbound),
                ("sender", "outbox", self.outbox),
            )
            if role in self.roles
        ]
        # Consume only leased shards (without leases, a queue consumes every shard).
        self.inbound.consumer.leased = "worker" in self.roles
        self.outbox.consumer.leased = "sender" in self.roles
        self.housekeeping = Housekeeping(
            self.settings,
            broker=self.broker,
            engine=self.engine,
            admin=self.admin,
            store=self.store,
            files=self.files,
            flow=self.flow,
            options=self.options,
        )

    async def open(self) -> None:
        """Connect to RabbitMQ and declare the topology (Redis and PostgreSQL connect lazily
        and reconnect by themselves)."""
        if self._opened:
            return
        await self.broker.open()
        self._opened = True
        if self.roles:
            await self._refuse_stranded_shards()
            await self._warm_pool(self.settings.database_pool_min)

    async def _refuse_stranded_shards(self) -> None:
        """A worker or sender does not start while QUEUE_SHARDS is lower than the shards that
        still hold messages: those would wait unread (docs/deployment.md,
        "Choosing and changing QUEUE_SHARDS")."""
        stranded = await self.broker.stranded_shards()
        if stranded:
            raise ConfigError(self.broker.describe_stranded(stranded))

    async def _warm_pool(self, count: int) -> None:
        """Open ``count`` database connections now rather than on the first steps (best
        effort: a database that is down is waited for by the steps themselves)."""

        async def one() -> Any:
            return await self.engine.connect()

        opened = await asyncio.gather(
            *(asyncio.wait_for(one(), 5.0) for _ in range(count)), return_exceptions=True
        )
        for conn in opened:
            if isinstance(conn, BaseException):
                log.warning("cannot open a database connection yet: %s", type(conn).__name__)
            else:
                await conn.close()

    def start(self) -> None:
        """Run this process's roles in the background."""
        self._stop.clear()
        self._tasks = []
        if "worker" in self.roles:
            self._tasks.append(
                asyncio.create_task(self.worker.run(self._stop), name="orderbot-worker")
            )
            self._tasks.append(
                asyncio.create_task(self.housekeeping.run(self._stop), name="orderbot-housekeeping")
            )
        if "sender" in self.roles:
            self._tasks.append(
                asyncio.create_task(self.sender.run(self._stop), name="orderbot-sender")
            )
        for lease in self.leases:
            self._tasks.append(asyncio.create_task(lease.run(self._stop), name="orderbot-leases"))

    async def close_backends(self) -> None:
        """After the tasks, channels and downloads: the broker (unacked messages return to their
        queues), the leases, Redis and the database pool."""
        await self.broker.aclose()
        for lease in self.leases:  # after the close returned what was unacked
            await lease.release()
        await self.outbox.aclose()  # the outbound message log rows still waiting
        if self.redis_batch.pipelines:
            log.info(
                "Redis: %d commands in %d pipelines",
                self.redis_batch.commands,
                self.redis_batch.pipelines,
            )
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        with contextlib.suppress(Exception):
            await self.engine.dispose()

    async def depths(self) -> QueueDepths:
        return await self.broker.depths()

    async def _queue_alert(self, message: OutboundMessage) -> None:
        """An operations alert into the outbox: its key makes it once per interval."""
        await self.outbox.put([message])

    async def _publish_sender_state(self, state: dict[str, Any]) -> None:
        """This sender's circuits and alerts for ``GET /status`` (served by ``orderbot serve``),
        expiring unless renewed: a sender that stopped is not shown."""
        process = f"{socket.gethostname()}:{os.getpid()}"
        body = orjson.dumps({**state, "process": process, "at": time.time()})
        await self.redis.set(self.keys.sender_state(process), body, ex=SENDER_STATE_TTL)

    async def sender_states(self) -> list[dict[str, Any]]:
        """What every live sender process published (:meth:`_publish_sender_state`)."""
        found: list[dict[str, Any]] = []
        keys = [key async for key in self.redis.scan_iter(match=self.keys.sender_state("*"))]
        for raw in await self.redis.mget(keys) if keys else []:
            if raw is None:
                continue  # expired between the scan and the read
            with contextlib.suppress(orjson.JSONDecodeError):
                state = orjson.loads(raw)
                if isinstance(state, dict):
                    found.append(state)
        return found

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, checks)`` in the shape of ``GET /health``: each backing service, and
        the queue depths when RabbitMQ answers."""
        checks: dict[str, Any] = {
            "redis": False,
            "postgres": False,
            "rabbitmq": self.broker.connected,
            "queues": None,
        }

        async def redis_ok() -> None:
            checks["redis"] = bool(await self.redis.ping())

        async def postgres_ok() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["postgres"] = True

        async def queues() -> None:
            checks["queues"] = (await self.broker.depths()).to_dict()

        probes = [redis_ok(), postgres_ok()]
        if checks["rabbitmq"]:
            probes.append(queues())
        results = await asyncio.gather(
            *(asyncio.wait_for(p, 3.0) for p in probes), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("health check failed: %s", type(result).__name__)
        if checks["queues"] is None:
            checks["rabbitmq"] = False
        if self.roles:
            checks["running"] = self.running
        healthy = all(checks[name] for name in ("redis", "postgres", "rabbitmq"))
        return healthy and (not self.roles or self.running), checks
