"""The ``orderbot chat2desk`` and ``orderbot telegram`` commands: setting up the chat channels'
APIs (webhooks, the command menu, what the API reports) and, for Telegram, running the bot by
long polling where there is no public URL.

Each command opens the channel adapter the service itself uses, so what it registers or checks
is what the bot will run with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
import typer

from orderbot.cli.common import fail, read_settings, require_sqlite, run_async
from orderbot.config import Settings
from orderbot.errors import ConfigError

__all__ = [
    "chat2desk_app",
    "chat2desk_info",
    "chat2desk_set_webhook",
    "telegram_app",
    "telegram_delete_webhook",
    "telegram_poll",
    "telegram_set_webhook",
]

T = TypeVar("T")

chat2desk_app = typer.Typer(help="Talk to the Chat2Desk API.", no_args_is_help=True)
telegram_app = typer.Typer(help="Telegram Bot API: webhook, long polling.", no_args_is_help=True)


# -- chat2desk -------------------------------------------------------------------------------


async def _with_chat2desk(fn: Callable[[Any], Awaitable[T]]) -> T:
    from orderbot.channels.chat2desk import Chat2DeskChannel

    settings = read_settings()
    if not settings.chat2desk_api_token:
        raise ConfigError("CHAT2DESK_API_TOKEN: not set (the token from Chat2Desk's API settings)")
    channel = Chat2DeskChannel(
        api_url=settings.chat2desk_api_url,
        token=settings.chat2desk_api_token,
        timeout=settings.chat2desk_timeout,
        reply_type=settings.chat2desk_reply_type,
        open_dialog=settings.chat2desk_open_dialog,
        window_transports=settings.window_transports,
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
    """Register orderbot's webhook with Chat2Desk, idempotently: the hook named "orderbot" is
    updated in place (a new URL or WEBHOOK_SECRET replaces the old one; a disabled hook is
    enabled again), created only when missing. Events: inbox, outbox, close_request,
    close_dialog, dialog_transferred."""
    if not url.startswith(("http://", "https://")):
        raise fail("URL must start with http:// or https://", 2)
    answer = run_async(_with_chat2desk(lambda c: c.set_webhook(url)))
    typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())


@chat2desk_app.command("info")
def chat2desk_info() -> None:
    """What the Chat2Desk API reports about this token (requests used this month, limits),
    the registered webhooks with their state and errors, and whether orderbot's own hook is
    ok, disabled (Chat2Desk stops a hook after 5 hours of failed deliveries) or missing."""
    from orderbot.channels.chat2desk import describe_webhook

    async def gather(channel: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await channel.api_info()
        hooks = await channel.webhooks()
        answer["webhooks"] = hooks
        answer["orderbot_webhook"] = describe_webhook(hooks)
        return answer

    answer = run_async(_with_chat2desk(gather))
    typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())


# -- telegram --------------------------------------------------------------------------------


def _telegram_settings() -> Settings:
    settings = read_settings()
    if not settings.telegram_bot_token:
        raise fail("TELEGRAM_BOT_TOKEN: not set (the token @BotFather gave your bot)", 2)
    return settings


async def _with_telegram(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    from orderbot.channels.telegram.client import TelegramChannel

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

    run_async(_with_telegram(settings, register))
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
    run_async(
        _with_telegram(
            settings, lambda c: c.delete_webhook(drop_pending_updates=drop_pending_updates)
        )
    )
    typer.echo("webhook deleted")


@telegram_app.command("poll")
def telegram_poll(
    timeout: Annotated[
        int, typer.Option(min=1, max=50, metavar="SECONDS", help="Long-poll wait in seconds.")
    ] = 25,
) -> None:
    """Run the bot on Telegram without a public URL (development): long polling (getUpdates)
    feeds the inbound queue; worker and sender run in this process on SQLite.

    Needs no webhook set (see delete-webhook). Ctrl-C or SIGTERM stops: polling ends, work in
    flight finishes within SHUTDOWN_TIMEOUT; nothing acknowledged is lost.
    """
    import signal

    from orderbot.channels.telegram.client import TelegramChannel
    from orderbot.channels.telegram.updates import poll_updates
    from orderbot.logconfig import setup_logging
    from orderbot.runtime.embedded import EmbeddedRuntime

    settings = _telegram_settings()
    require_sqlite(settings)
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

    queued = run_async(session())
    typer.echo(f"stopped; {queued} message(s) taken")
