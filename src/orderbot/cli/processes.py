"""The ``orderbot`` commands that run the bot as long-lived processes: everything in one process
on SQLite (``run``), the distributed profile's server, workers and senders (``serve``,
``worker``, ``sender``), and a conversation in the terminal (``chat``).

``run`` and ``serve`` share the uvicorn server that ends with exit code 0 after a graceful
SIGTERM; ``run`` first brings the SQLite schema up to date in a child process, so that the
long-running server never loads Alembic. :mod:`orderbot.cli` registers these commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from orderbot.cli.common import fail, read_settings, require_sqlite, run_async
from orderbot.config import (
    Settings,
    require_distributed,
    require_distributed_packages,
)

__all__ = ["chat", "run", "sender", "serve", "worker"]


# -- run -------------------------------------------------------------------------------------


def run(
    host: Annotated[str | None, typer.Option(help="Listen address [env HOST, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [env PORT, 3000].")] = None,
) -> None:
    """Run everything in one process on SQLite: webhook server, workers and sender.

    Migrations are applied on start. SIGTERM or Ctrl-C stops taking webhooks, finishes what is
    in flight within SHUTDOWN_TIMEOUT seconds and exits; nothing acknowledged is lost.
    """
    import uvicorn

    from orderbot.logconfig import setup_logging
    from orderbot.runtime.embedded import EmbeddedRuntime
    from orderbot.web.app import create_app
    from orderbot.web.server import http_options

    settings = read_settings(host=host, port=port)
    require_sqlite(settings)
    setup_logging(settings.log_level, settings.log_format)
    _migrate_in_child(settings)
    if not settings.chat2desk_api_token:
        logging.getLogger("orderbot").warning(
            "CHAT2DESK_API_TOKEN is not set: webhooks are taken, but replies to Chat2Desk will "
            "fail and wait in the outbox; try the bot locally with `orderbot chat`"
        )
    # The SQLite thread needs the GIL for a few microseconds per job; with the default 5 ms
    # switch interval a busy event loop makes every commit wait up to 5 ms for it.
    sys.setswitchinterval(0.0005)
    runtime = EmbeddedRuntime(settings)
    config = uvicorn.Config(
        # One cached webhook check, shared by /health, /status and the operators' alerts.
        create_app(runtime, webhook_watch=runtime.webhook_watch),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_timeout) or None,
        backlog=4096,
        proxy_headers=False,  # nothing here reads the client address; saves work per request
        **http_options(settings),  # deadlines for headers and bodies, a cap on connections
    )
    server = _server_class()(config)
    server.run()
    if not server.started:
        raise fail(f"could not start the server on {settings.host}:{settings.port}")


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process would
        end "killed by SIGTERM". We finished cleanly, so we exit 0 instead."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    return Server


def _migrate_in_child(settings: Settings) -> None:
    """Apply migrations in a child process: Alembic and SQLAlchemy then never load into the
    long-running server (about 30 MB it would keep for nothing)."""
    import subprocess

    from orderbot.storage import sql as db

    if db.schema_is_current(settings.database_url):
        return
    result = subprocess.run(
        [sys.executable, "-m", "orderbot", "db", "upgrade"],
        env={**os.environ, "DATABASE_URL": settings.database_url},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise fail("database migration failed:\n" + (result.stderr or result.stdout).strip())


# -- distributed profile: serve, worker, sender ----------------------------------------------


def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [env HOST, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [env PORT, 3000].")] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, metavar="N", help="uvicorn processes.")
    ] = 1,
) -> None:
    """Distributed profile: webhook and API server only (RABBITMQ_URL, REDIS_URL, PostgreSQL).

    Every 200 is confirmed by RabbitMQ; run `orderbot worker` and `orderbot sender` beside it.
    The admin API (/api, ADMIN_TOKEN) is served here.
    With --workers N, metrics are summed over the processes through PROMETHEUS_MULTIPROC_DIR
    (a fresh temporary directory unless set).
    """
    import os
    import tempfile

    import uvicorn

    from orderbot.logconfig import setup_logging

    settings = read_settings(host=host, port=port)
    require_distributed(settings)
    require_distributed_packages()
    from orderbot.runtime.processes import create_server_app
    from orderbot.web.server import http_options

    setup_logging(settings.log_level, settings.log_format)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "timeout_graceful_shutdown": int(settings.shutdown_timeout) or None,
        "backlog": 4096,
        "proxy_headers": False,  # nothing here reads the client address; saves work per request
        **http_options(settings),  # deadlines for headers and bodies, a cap on connections
    }
    if workers > 1:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="orderbot-metrics-")
        # The processes build their app from the environment, as this one did.
        uvicorn.run(
            "orderbot.runtime.processes:create_server_app", factory=True, workers=workers, **options
        )
        return
    server = _server_class()(uvicorn.Config(create_server_app(settings), **options))
    server.run()
    if not server.started:
        raise fail(f"could not start the server on {settings.host}:{settings.port}")


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=1000, metavar="N", help="Steps at once [env WORKER_CONCURRENCY]."),
    ] = None,
) -> None:
    """Distributed profile: run dialog steps from RabbitMQ. Start as many as you like: a client's
    messages are handled by one process at a time, in order. Each also runs the housekeeping
    (handoff timeouts, notifications left unpublished, unused model files); UPLOAD_DIR must be
    shared by all of them. SIGTERM finishes in-flight steps (within SHUTDOWN_TIMEOUT) and returns
    the rest to RabbitMQ."""
    from orderbot.logconfig import setup_logging

    settings = read_settings(worker_concurrency=concurrency)
    require_distributed(settings)
    require_distributed_packages()
    from orderbot.runtime.processes import run_process

    setup_logging(settings.log_level, settings.log_format)
    run_process(settings, ("worker",))


def sender() -> None:
    """Distributed profile: send replies from RabbitMQ through the channel APIs. Any number at
    once; they share OUTBOUND_RATE_LIMIT through Redis. SIGTERM finishes in-flight sends."""
    from orderbot.logconfig import setup_logging

    settings = read_settings()
    require_distributed(settings)
    require_distributed_packages()
    from orderbot.runtime.processes import run_process

    setup_logging(settings.log_level, settings.log_format)
    run_process(settings, ("sender",))


# -- chat ------------------------------------------------------------------------------------


def chat(
    client: Annotated[str, typer.Option(help="Client id to talk as.")] = "terminal",
) -> None:
    """Talk to the bot in this terminal, through the same dialog engine and store.

    Type messages; the bot's replies are printed. Buttons appear as numbered lines: answer with
    the number or the text. Ctrl-D or /quit leaves (the dialog state is kept).
    """
    from orderbot.channels.local import LocalChannel
    from orderbot.runtime.embedded import EmbeddedRuntime

    settings = read_settings()
    require_sqlite(settings)
    channel = LocalChannel(lambda text: typer.echo(typer.style("bot> ", fg="green") + text))

    async def session() -> None:
        from orderbot.messages import InboundMessage

        async with EmbeddedRuntime(settings, channels={"local": channel}) as runtime:
            runtime.start()
            typer.echo("Talking to orderbot (Ctrl-D or /quit to leave). Say hello.")
            while True:
                try:
                    line = await asyncio.to_thread(input, "you> ")
                except EOFError:
                    break
                if line.strip() == "/quit":
                    break
                if not line.strip():
                    continue
                channel.replied.clear()
                await runtime.inbound.put(
                    InboundMessage(
                        channel="local",
                        client_id=client,
                        message_id=uuid.uuid4().hex,
                        text=line,
                        received_at=time.time(),
                    )
                )
                await _quiet(channel)

    run_async(session())


async def _quiet(channel: Any) -> None:
    """Wait for the first reply, then until replies stop coming for a moment."""
    try:
        await asyncio.wait_for(channel.replied.wait(), 10)
    except TimeoutError:
        typer.echo("(no reply yet; it will appear when ready)")
        return
    while True:
        channel.replied.clear()
        try:
            await asyncio.wait_for(channel.replied.wait(), 0.15)
        except TimeoutError:
            return
