"""Assembles the distributed profile from settings: RabbitMQ queues, Redis state and rate limit,
PostgreSQL orders. Each process (``orderbot serve``, ``worker``, ``sender``) builds one
:class:`DistributedRuntime` and starts only its own role.

The surface matches :class:`~orderbot.runtime.embedded.EmbeddedRuntime` (``ingress``, ``inbound``,
``store``, ``outbox``, ``dead_letters``, ``worker``, ``sender``, ``admin``, ``files``,
``depths()``, ``open/start/stop/aclose``, ``running``), so the HTTP app, the CLI and the tests
drive either one. Tracking, operator handoff, the admin API and new-order alerts work as in the
embedded profile, on PostgreSQL, Redis and RabbitMQ (:mod:`orderbot.desk.postgres`); worker
processes also run the housekeeping (handoff timeouts, notifications a crash left unpublished,
uploaded files no order uses). Model files are stored under ``UPLOAD_DIR``, which every worker
process must share (one volume).

Shutdown keeps per-client order: the consumers are *not* cancelled first. With
single-active-consumer, cancelling hands the shard to a standby process at once, which could
then handle a client's next message while this process still finishes the previous one. So:
stop taking work from the buffers, finish what is in hand (bounded by ``SHUTDOWN_TIMEOUT``),
then close the connection; whatever was delivered but not handled goes back to its queue, in
order, and the standby starts after it.

This module holds the entry points of those processes (and of ``orderbot dlq``);
:class:`DistributedRuntime` is in :mod:`orderbot.runtime.distributed`, the workers' housekeeping
in :mod:`orderbot.runtime.housekeeping`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any, Literal

from redis.asyncio import Redis

from orderbot.config import Settings
from orderbot.loggers import storage as log
from orderbot.queues.rabbitmq.broker import RabbitBroker
from orderbot.queues.rabbitmq.dead_letters import RabbitDeadLetterQueue
from orderbot.runtime.distributed import DistributedRuntime
from orderbot.storage.redis import RedisKeys

__all__ = ["Role", "create_server_app", "open_rabbit_dead_letters", "run_process", "serve_roles"]

Role = Literal["worker", "sender"]


@contextlib.asynccontextmanager
async def open_rabbit_dead_letters(settings: Settings) -> AsyncIterator[RabbitDeadLetterQueue]:
    """The dead-letter queue alone (``orderbot dlq`` on the distributed profile)."""
    redis: Redis = Redis.from_url(settings.redis_url)
    broker = RabbitBroker(
        settings.rabbitmq_url,
        prefix=settings.queue_prefix,
        shards=settings.queue_shards,
        connect_timeout=5.0,
    )
    try:
        await broker.open()
        yield RabbitDeadLetterQueue(broker, redis, keys=RedisKeys(settings.queue_prefix))
    finally:
        await broker.aclose()
        await redis.aclose()


def create_server_app(settings: Settings | None = None) -> Any:
    """The ASGI app of ``orderbot serve`` (also the uvicorn factory of ``--workers N``, which
    reads the settings from the environment in each process)."""
    from orderbot.config import load_settings
    from orderbot.logconfig import setup_logging
    from orderbot.web.app import create_app

    if settings is None:
        settings = load_settings()
        setup_logging(settings.log_level, settings.log_format)
    runtime = DistributedRuntime(settings)
    # One cached check for /health and /status.
    return create_app(
        runtime,
        run_background=False,
        webhook_watch=runtime.webhook_watch,
    )


async def serve_roles(
    settings: Settings,
    roles: Collection[str],
    *,
    stop: asyncio.Event | None = None,
    heartbeat: Path | None = None,
) -> None:
    """Run ``roles`` until ``stop`` is set (by SIGTERM/SIGINT when not given), then shut down
    gracefully. ``heartbeat`` is touched every few seconds while the roles run and RabbitMQ is
    connected (a container health check reads its age)."""
    stop = stop or _signal_event()
    runtime = DistributedRuntime(settings, roles=roles)
    beating: asyncio.Task[None] | None = None
    try:
        await runtime.open()
        runtime.start()
        if heartbeat is not None:
            beating = asyncio.create_task(_beat(runtime, heartbeat))
        log.info("orderbot %s started (distributed profile)", "+".join(sorted(roles)))
        waiter = asyncio.ensure_future(stop.wait())
        ended = asyncio.ensure_future(runtime.wait_stopped())
        await asyncio.wait({waiter, ended}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        ended.cancel()
        log.info("stopping: finishing in-flight work (at most %.0fs)", settings.shutdown_timeout)
    finally:
        if beating is not None:
            beating.cancel()
        await runtime.aclose()


async def _beat(runtime: DistributedRuntime, path: Path, interval: float = 5.0) -> None:
    while True:
        if runtime.running and runtime.broker.connected:
            with contextlib.suppress(OSError):
                path.touch()  # noqa: ASYNC240 - one tiny metadata write per 5 s
        await asyncio.sleep(interval)


def _signal_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_process(settings: Settings, roles: Collection[str]) -> None:
    """Entry point of ``orderbot worker`` / ``orderbot sender``; the heartbeat file is
    ``$TMPDIR/orderbot-<role>.alive``."""
    heartbeat = Path(tempfile.gettempdir()) / f"orderbot-{'-'.join(sorted(roles))}.alive"
    main = serve_roles(settings, roles, heartbeat=heartbeat)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(main)
    else:
        uvloop.run(main)
