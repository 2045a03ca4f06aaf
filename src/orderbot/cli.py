"""The ``orderbot`` command. Settings are read here, once, and passed down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, TypeVar

import orjson
import typer

from orderbot import __version__
from orderbot.config import (
    Settings,
    load_settings,
    require_distributed,
    require_distributed_packages,
)
from orderbot.errors import ChannelError, ConfigError, FlowError, OrderbotError

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="orderbot",
    help="Takes shop orders through chat (Chat2Desk, Telegram, a terminal). Settings come from the "
    "environment and .env; see README.md.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
orders_app = typer.Typer(
    help="See the orders the bot took and change their status (SQLite, or PostgreSQL with "
    "RABBITMQ_URL and REDIS_URL set: the distributed profile).",
    no_args_is_help=True,
)
dlq_app = typer.Typer(
    help="Replies that could not be sent, and messages that kept failing.", no_args_is_help=True
)
chat2desk_app = typer.Typer(help="Talk to the Chat2Desk API.", no_args_is_help=True)
telegram_app = typer.Typer(help="Telegram Bot API: webhook, long polling.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
flow_app = typer.Typer(help="Dialog flows.", no_args_is_help=True)
app.add_typer(orders_app, name="orders")
app.add_typer(dlq_app, name="dlq")
app.add_typer(chat2desk_app, name="chat2desk")
app.add_typer(telegram_app, name="telegram")
app.add_typer(db_app, name="db")
app.add_typer(flow_app, name="flow")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(_wrap(coro))


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orderbot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """orderbot: takes shop orders through chat."""


# -- run -------------------------------------------------------------------------------------


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="Listen address [env HOST, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [env PORT, 3000].")] = None,
) -> None:
    """Run everything in one process on SQLite: webhook server, workers and sender.

    Migrations are applied on start. SIGTERM or Ctrl-C stops taking webhooks, finishes what is
    in flight within SHUTDOWN_TIMEOUT seconds and exits; nothing acknowledged is lost.
    """
    import uvicorn

    from orderbot.logs import setup_logging
    from orderbot.runtime import EmbeddedRuntime
    from orderbot.web.app import create_app

    settings = _settings(host=host, port=port)
    _require_sqlite(settings)
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
        create_app(runtime),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_timeout) or None,
        backlog=4096,
        proxy_headers=False,  # nothing here reads the client address; saves work per request
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

    from orderbot import db

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


def _require_sqlite(settings: Settings) -> None:
    if not settings.is_sqlite:
        raise ConfigError(
            "DATABASE_URL: `orderbot run` is the embedded profile and needs sqlite:///FILE"
        )


# -- distributed profile: serve, worker, sender ----------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [env HOST, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [env PORT, 3000].")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn processes.")] = 1,
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

    from orderbot.logs import setup_logging

    settings = _settings(host=host, port=port)
    require_distributed(settings)
    require_distributed_packages()
    from orderbot.distributed import create_server_app

    setup_logging(settings.log_level, settings.log_format)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "timeout_graceful_shutdown": int(settings.shutdown_timeout) or None,
        "backlog": 4096,
        "proxy_headers": False,  # nothing here reads the client address; saves work per request
    }
    if workers > 1:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="orderbot-metrics-")
        # The processes build their app from the environment, as this one did.
        uvicorn.run(
            "orderbot.distributed:create_server_app", factory=True, workers=workers, **options
        )
        return
    server = _server_class()(uvicorn.Config(create_server_app(settings), **options))
    server.run()
    if not server.started:
        raise fail(f"could not start the server on {settings.host}:{settings.port}")


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=1000, help="Steps at once [env WORKER_CONCURRENCY].")
    ] = None,
) -> None:
    """Distributed profile: run dialog steps from RabbitMQ. Start as many as you like: a client's
    messages are handled by one process at a time, in order. Each also runs the housekeeping
    (handoff timeouts, notifications left unpublished, unused model files); UPLOAD_DIR must be
    shared by all of them. SIGTERM finishes in-flight steps (within SHUTDOWN_TIMEOUT) and returns
    the rest to RabbitMQ."""
    from orderbot.logs import setup_logging

    settings = _settings(worker_concurrency=concurrency)
    require_distributed(settings)
    require_distributed_packages()
    from orderbot.distributed import run_process

    setup_logging(settings.log_level, settings.log_format)
    run_process(settings, ("worker",))


@app.command()
def sender() -> None:
    """Distributed profile: send replies from RabbitMQ through the channel APIs. Any number at
    once; they share OUTBOUND_RATE_LIMIT through Redis. SIGTERM finishes in-flight sends."""
    from orderbot.logs import setup_logging

    settings = _settings()
    require_distributed(settings)
    require_distributed_packages()
    from orderbot.distributed import run_process

    setup_logging(settings.log_level, settings.log_format)
    run_process(settings, ("sender",))


# -- chat ------------------------------------------------------------------------------------


@app.command()
def chat(
    client: Annotated[str, typer.Option(help="Client id to talk as.")] = "terminal",
) -> None:
    """Talk to the bot in this terminal, through the same dialog engine and store.

    Type messages; the bot's replies are printed. Buttons appear as numbered lines: answer with
    the number or the text. Ctrl-D or /quit leaves (the dialog state is kept).
    """
    from orderbot.channels.local import LocalChannel
    from orderbot.runtime import EmbeddedRuntime

    settings = _settings()
    _require_sqlite(settings)
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

    _run(session())


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


# -- orders ----------------------------------------------------------------------------------


async def _with_repository(fn: Callable[[Any], Awaitable[T]]) -> T:
    from orderbot.db import create_engine
    from orderbot.repository import OrderRepository

    settings = _settings()
    _require_database(settings)
    engine = create_engine(settings.database_url)
    try:
        return await fn(OrderRepository(engine))
    finally:
        await engine.dispose()


def _require_database(settings: Settings) -> None:
    if settings.is_sqlite and not settings.sqlite_path.exists():
        raise fail(
            f"no database at {settings.sqlite_path} (run `orderbot run` or `orderbot db upgrade`)"
        )


@orders_app.command("list")
def orders_list(
    status: Annotated[
        str | None, typer.Option(help="Only orders with this status, e.g. new.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=10000, help="At most this many, newest first.")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List orders, newest first."""
    found = _run(_with_repository(lambda repo: repo.list(status=status, limit=limit)))
    if as_json:
        typer.echo(orjson.dumps([o.to_dict() for o in found], option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        typer.echo("no orders")
        return
    typer.echo(
        f"{'ID':>6}  {'CREATED (UTC)':<19}  {'STATUS':<10} {'QTY':>4}  {'PHONE':<16} ADDRESS"
    )
    for o in found:
        typer.echo(
            f"{o.id:>6}  {o.created_at[:19].replace('T', ' '):<19}  {o.status:<10} "
            f"{o.quantity if o.quantity is not None else '-':>4}  "
            f"{o.phone or '-':<16} {o.address or '-'}"
        )


@orders_app.command("show")
def orders_show(
    order_id: Annotated[int, typer.Argument(metavar="ID", help="Order number.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one order, with its status history."""
    order = _run(_with_repository(lambda repo: repo.get(order_id)))
    if order is None:
        raise fail(f"no order {order_id}")
    shown = order.to_dict()
    settings = _settings()
    if settings.is_sqlite or settings.is_distributed:
        details = _run(_with_order_admin(settings, lambda admin: admin.get(order_id)))
        if details is not None:
            shown["history"] = details["history"]
    if as_json:
        typer.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return
    history = shown.pop("history", None)
    for key, value in shown.items():
        typer.echo(f"{key + ':':<12} {value}")
    if history is not None:
        typer.echo(f"{'history:':<12} {order.created_at} new")
        for entry in history:
            note = f"  ({entry['note']})" if entry["note"] else ""
            typer.echo(f"{'':<12} {entry['at']} {entry['from']} -> {entry['to']}{note}")


async def _with_order_admin(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``fn`` with the order admin of the configured profile: PostgreSQL + RabbitMQ +
    Redis when all three are set (the notification is published at once), else SQLite."""
    from orderbot.dialog import load_flow
    from orderbot.order_admin import SqliteOrderAdmin
    from orderbot.runtime import dialog_options
    from orderbot.sqlite import SqliteDatabase

    if settings.is_distributed:
        require_distributed_packages()
        from orderbot.distributed import DistributedRuntime

        async with DistributedRuntime(settings, channels={}) as runtime:
            return await fn(runtime.admin)
    if not settings.is_sqlite:
        raise ConfigError(
            "DATABASE_URL is PostgreSQL: set RABBITMQ_URL and REDIS_URL as well (the customer's "
            "notification goes out through RabbitMQ), or use sqlite:///FILE"
        )
    _require_database(settings)
    flow = load_flow(settings.flow)
    async with SqliteDatabase(settings.sqlite_path, synchronous=settings.sqlite_synchronous) as db:
        return await fn(SqliteOrderAdmin(db, flow, dialog_options(settings)))


@orders_app.command("set-status")
def orders_set_status(
    order_id: Annotated[int, typer.Argument(metavar="ID", help="Order number.")],
    status: Annotated[
        str,
        typer.Argument(
            metavar="STATUS",
            help="new, confirmed, in_progress, ready, delivered or cancelled.",
        ),
    ],
    note: Annotated[str, typer.Option(help="Why (kept in the history; internal).")] = "",
) -> None:
    """Change an order's status and notify the customer (through the outbox).

    Statuses go new -> confirmed -> in_progress -> ready -> delivered, one step at a time, or
    to cancelled from any but delivered/cancelled. Exit codes: 1 no such order, 2 unknown
    status, 3 the change is not allowed from the order's status. Works on both profiles (with
    RABBITMQ_URL, REDIS_URL and a PostgreSQL DATABASE_URL, the distributed one).
    """
    from orderbot.order_admin import OrderNotFound
    from orderbot.tracking import STATUSES, InvalidTransition

    if status not in STATUSES:
        raise fail(f"unknown status {status!r} (statuses: {', '.join(STATUSES)})", 2)
    settings = _settings()
    try:
        order = _run(
            _with_order_admin(
                settings,
                lambda admin: admin.set_status(order_id, status, note=note, actor="cli"),
            )
        )
    except OrderNotFound:
        raise fail(f"no order {order_id}", 1) from None
    except InvalidTransition as exc:
        raise fail(f"order {order_id}: {exc}", 3) from None
    typer.echo(f"order {order_id}: {order['history'][-1]['from']} -> {status}; customer notified")


@app.command()
def handback(
    client: Annotated[str, typer.Argument(metavar="CLIENT", help="The customer's client id.")],
    channel: Annotated[str, typer.Option(help="chat2desk, telegram, ...")] = "chat2desk",
) -> None:
    """Give a conversation an operator took over back to the bot. The customer is told and
    asked the question the dialog was at. Exit code 1 when it was not handed off. Works on both
    profiles (with RABBITMQ_URL, REDIS_URL and a PostgreSQL DATABASE_URL, the distributed one)."""
    from orderbot.order_admin import HandoffNotFound

    settings = _settings()
    try:
        _run(_with_order_admin(settings, lambda admin: admin.handback(channel, client)))
    except HandoffNotFound as exc:
        raise fail(str(exc), 1) from None
    typer.echo(f"{channel}:{client} is back with the bot")


# -- dead letters ----------------------------------------------------------------------------


async def _with_dead_letters(fn: Callable[[Any], Awaitable[T]]) -> T:
    from orderbot.queues.sqlite import SqliteDeadLetterQueue
    from orderbot.sqlite import SqliteDatabase

    settings = _settings()
    if settings.is_distributed:
        require_distributed_packages()
        from orderbot.distributed import open_dead_letters

        async with open_dead_letters(settings) as queue:
            return await fn(queue)
    _require_sqlite(settings)
    _require_database(settings)
    async with SqliteDatabase(settings.sqlite_path, synchronous=settings.sqlite_synchronous) as db:
        return await fn(SqliteDeadLetterQueue(db))


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="At most this many, oldest first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """What could not be sent (or processed), with the last error."""
    letters = _run(_with_dead_letters(lambda q: q.list(limit)))
    if as_json:
        rows = [
            {
                "id": d.id,
                "kind": d.kind,
                "key": d.key,
                "channel": d.channel,
                "client_id": d.client_id,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "created_at": d.created_at,
            }
            for d in letters
        ]
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not letters:
        typer.echo("the dead-letter queue is empty")
        return
    for d in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.created_at))
        typer.echo(
            f"{d.id:>6}  {when}  {d.kind:<7} {d.channel}:{d.client_id}  "
            f"attempts={d.attempts}  {d.last_error}"
        )


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[
        list[int] | None, typer.Argument(metavar="[ID]...", help="Dead letters to replay.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Send dead replies again (fresh retries) and requeue dead inbound messages."""
    if not ids and not all_:
        raise fail("give one or more IDs, or --all", 2)
    if ids and all_:
        raise fail("give IDs or --all, not both", 2)
    count = _run(_with_dead_letters(lambda q: q.replay(None if all_ else list(ids or []))))
    if ids and count < len(ids):
        typer.echo(f"replayed {count} of {len(ids)} (the others were not in the queue)")
    else:
        typer.echo(f"replayed {count}")


@dlq_app.command("purge")
def dlq_purge(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete every dead letter for good."""
    if not yes and not typer.confirm("Delete every dead letter?"):
        raise typer.Exit(1)
    count = _run(_with_dead_letters(lambda q: q.purge()))
    typer.echo(f"purged {count}")


# -- chat2desk -------------------------------------------------------------------------------


async def _with_chat2desk(fn: Callable[[Any], Awaitable[T]]) -> T:
    from orderbot.channels.chat2desk import Chat2DeskChannel

    settings = _settings()
    if not settings.chat2desk_api_token:
        raise ConfigError("CHAT2DESK_API_TOKEN: not set (the token from Chat2Desk's API settings)")
    channel = Chat2DeskChannel(
        api_url=settings.chat2desk_api_url,
        token=settings.chat2desk_api_token,
        timeout=settings.chat2desk_timeout,
    )
    try:
        return await fn(channel)
    finally:
        await channel.aclose()


@chat2desk_app.command("set-webhook")
def chat2desk_set_webhook(
    url: Annotated[
        str, typer.Argument(help="Public URL of /webhook/chat2desk (or /webhook/chat2desk/SECRET).")
    ],
) -> None:
    """Register the webhook with Chat2Desk (POST /v1/webhooks, events: inbox)."""
    if not url.startswith(("http://", "https://")):
        raise fail("URL must start with http:// or https://", 2)
    answer = _run(_with_chat2desk(lambda c: c.set_webhook(url)))
    typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())


@chat2desk_app.command("info")
def chat2desk_info() -> None:
    """What the Chat2Desk API reports about this token (requests used this month, limits)."""
    answer = _run(_with_chat2desk(lambda c: c.api_info()))
    typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())


# -- telegram --------------------------------------------------------------------------------


def _telegram_settings() -> Settings:
    settings = _settings()
    if not settings.telegram_bot_token:
        raise fail("TELEGRAM_BOT_TOKEN: not set (the token @BotFather gave your bot)", 2)
    return settings


async def _with_telegram(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    from orderbot.channels.telegram import TelegramChannel

    async with TelegramChannel(
        token=settings.telegram_bot_token,
        api_url=settings.telegram_api_url,
        timeout=settings.telegram_timeout,
    ) as channel:
        return await fn(channel)


@telegram_app.command("set-webhook")
def telegram_set_webhook(
    url: Annotated[str, typer.Argument(help="Public HTTPS URL of /webhook/telegram.")],
    drop_pending_updates: Annotated[
        bool, typer.Option(help="Forget updates Telegram holds for the bot.")
    ] = False,
) -> None:
    """Register the webhook (setWebhook with TELEGRAM_WEBHOOK_SECRET and allowed updates
    message, callback_query) and the command menu (setMyCommands)."""
    if not url.startswith("https://"):
        raise fail("URL must start with https:// (Telegram only calls HTTPS webhooks)", 2)
    settings = _telegram_settings()

    async def register(channel: Any) -> None:
        if drop_pending_updates:
            await channel.delete_webhook(drop_pending_updates=True)
        await channel.set_webhook(url, secret_token=settings.telegram_webhook_secret)
        await channel.set_my_commands()

    _run(_with_telegram(settings, register))
    typer.echo(f"webhook set to {url}; commands registered")
    if not settings.telegram_webhook_secret:
        typer.echo(
            "warning: TELEGRAM_WEBHOOK_SECRET is not set, so anyone who knows the URL can post "
            "updates",
            err=True,
        )


@telegram_app.command("delete-webhook")
def telegram_delete_webhook(
    drop_pending_updates: Annotated[
        bool, typer.Option(help="Forget updates Telegram holds for the bot.")
    ] = False,
) -> None:
    """Remove the webhook (deleteWebhook), e.g. before `orderbot telegram poll`."""
    settings = _telegram_settings()
    _run(
        _with_telegram(
            settings, lambda c: c.delete_webhook(drop_pending_updates=drop_pending_updates)
        )
    )
    typer.echo("webhook deleted")


@telegram_app.command("poll")
def telegram_poll(
    timeout: Annotated[int, typer.Option(min=1, max=50, help="Long-poll wait in seconds.")] = 25,
) -> None:
    """Run the bot on Telegram without a public URL (development): long polling (getUpdates)
    feeds the inbound queue; worker and sender run in this process on SQLite.

    Needs no webhook set (see delete-webhook). Ctrl-C or SIGTERM stops: polling ends, work in
    flight finishes within SHUTDOWN_TIMEOUT; nothing acknowledged is lost.
    """
    import signal

    from orderbot.channels.telegram import TelegramChannel, poll_updates
    from orderbot.logs import setup_logging
    from orderbot.runtime import EmbeddedRuntime

    settings = _telegram_settings()
    _require_sqlite(settings)
    setup_logging(settings.log_level, settings.log_format)

    async def session() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        try:
            async with EmbeddedRuntime(settings) as runtime:
                channel = runtime.channels["telegram"]
                assert isinstance(channel, TelegramChannel)
                await channel.set_my_commands()
                runtime.start()
                typer.echo("polling Telegram for updates (Ctrl-C to stop)")
                return await poll_updates(channel, runtime.inbound.put, stop, timeout=timeout)
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)

    queued = _run(session())
    typer.echo(f"stopped; {queued} message(s) taken")


# -- db, flow --------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply database migrations (Alembic) to DATABASE_URL."""
    from orderbot import db

    settings = _settings()
    db.upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@flow_app.command("check")
def flow_check(
    file: Annotated[str, typer.Argument(help="Flow YAML file, or a shipped flow name.")],
) -> None:
    """Load and validate a flow file; print its steps."""
    from orderbot.dialog import load_flow

    flow = load_flow(file)
    typer.echo(f"flow {flow.name}: ok")
    for name in flow.steps:
        typer.echo(f"  {name}")


def main() -> None:
    """Entry point: errors a user can fix are one line and an exit code, never a traceback."""
    try:
        app()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (FlowError, ChannelError, OrderbotError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
