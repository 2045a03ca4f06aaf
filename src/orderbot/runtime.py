"""Assembles the embedded profile from settings: one SQLite file, one event loop.

:class:`EmbeddedRuntime` is an async context manager that opens the database (after applying
migrations), builds queues, store, channels, worker and sender, and closes them in reverse order.
``start()`` runs worker, sender and housekeeping as background tasks; ``stop()`` asks them to
finish in-flight work within the shutdown bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from types import TracebackType

from orderbot import db as database
from orderbot.channels.base import Channel
from orderbot.channels.chat2desk import Chat2DeskChannel
from orderbot.config import Settings
from orderbot.desk.sqlite import SqliteDeskStore
from orderbot.dialog import DialogOptions, Flow, load_flow
from orderbot.files import FileReceiver, TelegramFileFetcher, cleanup_unlinked_files
from orderbot.frontdesk import FrontDesk
from orderbot.loggers import storage as log
from orderbot.notify import ORDER_WEBHOOK, OperatorAlerts, OrderWebhookChannel
from orderbot.order_admin import SqliteOrderAdmin
from orderbot.queues.base import QueueDepths
from orderbot.queues.sqlite import (
    SqliteDeadLetterQueue,
    SqliteInboundQueue,
    SqliteOutbox,
    Wakeup,
    queue_depths,
)
from orderbot.ratelimit import LocalRateLimiter
from orderbot.sender import Sender
from orderbot.sqlite import SqliteDatabase
from orderbot.state.sqlite import SqliteStepStore
from orderbot.web.ingress import SignatureCheck, WebhookIngress
from orderbot.worker import Worker

__all__ = ["EmbeddedRuntime", "build_channels", "build_file_receiver", "dialog_options"]

PRUNE_INTERVAL = 3600.0
HANDOFF_CHECK_INTERVAL = 60.0


def dialog_options(settings: Settings) -> DialogOptions:
    return DialogOptions(
        default_language=settings.default_language,
        detect_language=settings.detect_language,
        phone_region=settings.default_phone_region,
        idle_timeout=settings.dialog_idle_timeout,
    )


def build_file_receiver(settings: Settings) -> FileReceiver:
    """Model-file downloads: links (Chat2Desk) always, Telegram files when a bot is set up."""
    receiver = FileReceiver.with_http(
        settings.upload_dir, max_bytes=settings.max_upload_mb * 1024 * 1024
    )
    if settings.telegram_bot_token:
        receiver.add_fetcher(
            TelegramFileFetcher(settings.telegram_bot_token, api_url=settings.telegram_api_url)
        )
    return receiver


def build_channels(settings: Settings) -> dict[str, Channel]:
    channels: dict[str, Channel] = {
        "chat2desk": Chat2DeskChannel(
            api_url=settings.chat2desk_api_url,
            token=settings.chat2desk_api_token,
            timeout=settings.chat2desk_timeout,
        )
    }
    if settings.telegram_bot_token:
        from orderbot.channels.telegram import TelegramChannel

        channels["telegram"] = TelegramChannel(
            token=settings.telegram_bot_token,
            api_url=settings.telegram_api_url,
            webhook_secret=settings.telegram_webhook_secret,
            timeout=settings.telegram_timeout,
        )
    if settings.order_webhook_url:
        channels[ORDER_WEBHOOK] = OrderWebhookChannel(settings.order_webhook_url)
    return channels


class EmbeddedRuntime:
    """Everything ``orderbot run`` needs, on SQLite, in this process."""

    def __init__(
        self,
        settings: Settings,
        *,
        channels: Mapping[str, Channel] | None = None,
        flow: Flow | None = None,
        migrate: bool = True,
    ) -> None:
        self.settings = settings
        self.flow = flow or load_flow(settings.flow)
        self.channels: dict[str, Channel] = (
            dict(channels) if channels is not None else build_channels(settings)
        )
        self._migrate = migrate
        self.db = SqliteDatabase(settings.sqlite_path, synchronous=settings.sqlite_synchronous)
        inbound_wakeup, outbox_wakeup = Wakeup(), Wakeup()
        names = tuple(self.channels)
        self.inbound = SqliteInboundQueue(self.db, channels=names, wakeup=inbound_wakeup)
        self.outbox = SqliteOutbox(self.db, channels=names, wakeup=outbox_wakeup)
        self.dead_letters = SqliteDeadLetterQueue(
            self.db, outbox_wakeup=outbox_wakeup, inbound_wakeup=inbound_wakeup
        )
        # New orders are told to operators in the order's transaction (Telegram admins only
        # when the Telegram channel is configured; the order webhook when its URL is).
        alerts = OperatorAlerts(
            admin_chats=settings.admin_chats if "telegram" in self.channels else (),
            webhook=ORDER_WEBHOOK in self.channels,
        )
        self.store = SqliteStepStore(
            self.db, outbox_wakeup=outbox_wakeup, alerts=alerts if alerts else None
        )
        self.admin = SqliteOrderAdmin(
            self.db, self.flow, dialog_options(settings), outbox_wakeup=outbox_wakeup
        )
        self.files = build_file_receiver(settings)
        # Kept: a handoff the console starts must be noted by it (it remembers who may be with
        # an operator, so the common message costs no query).
        self.desk = SqliteDeskStore(self.db)
        self.worker = Worker(
            self.inbound,
            self.store,
            self.flow,
            options=dialog_options(settings),
            concurrency=settings.worker_concurrency,
            max_deliveries=settings.max_inbound_deliveries,
            shutdown_timeout=settings.shutdown_timeout,
            files=self.files,
            front_desk=FrontDesk(
                self.desk,
                self.flow,
                dialog_options(settings),
                admin_chats=settings.admin_chats if "telegram" in self.channels else (),
                chat2desk_operator_id=settings.chat2desk_operator_id,
                chat2desk_group_id=settings.chat2desk_group_id,
                handoff_timeout=settings.handoff_timeout,
            ),
        )
        self.sender = Sender(
            self.outbox,
            self.channels,
            rate_limiter=LocalRateLimiter(settings.outbound_rate_limit),
        )
        signatures = {}
        if settings.webhook_signature_header:
            signatures["chat2desk"] = SignatureCheck.for_token(
                settings.chat2desk_api_token,
                settings.webhook_signature_header,
                settings.webhook_timestamp_header,
            )
        self.ingress = WebhookIngress(
            self.inbound,
            {
                name: ch
                for name, ch in self.channels.items()
                if name not in ("local", ORDER_WEBHOOK)  # outbound only
            },
            secret=settings.webhook_secret,
            signatures=signatures,
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._opened = False
        self._closed = False

    async def __aenter__(self) -> EmbeddedRuntime:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        if self._opened:
            return
        if self._migrate and not database.schema_is_current(self.settings.database_url):
            await database.upgrade_async(self.settings.database_url)
        await self.db.open()
        self._opened = True

    def start(self) -> None:
        """Run worker, sender and housekeeping in the background."""
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self.worker.run(self._stop), name="orderbot-worker"),
            asyncio.create_task(self.sender.run(self._stop), name="orderbot-sender"),
            asyncio.create_task(self._housekeeping(), name="orderbot-housekeeping"),
            asyncio.create_task(self._handoff_timeouts(), name="orderbot-handoffs"),
        ]

    async def stop(self) -> None:
        """Stop taking work, let worker and sender finish within their bounds."""
        self._stop.set()
        if self._tasks:
            done, _ = await asyncio.wait(self._tasks)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error(
                        "background task %s failed", task.get_name(), exc_info=task.exception()
                    )
            self._tasks = []

    async def aclose(self) -> None:
        """Stop background work, close channels, then the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.stop()
        for channel in self.channels.values():
            with contextlib.suppress(Exception):
                await channel.aclose()
        await self.files.aclose()
        await self.db.aclose()

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not self._stop.is_set()

    async def depths(self) -> QueueDepths:
        return await self.db.run(queue_depths)

    async def _abandon_idle_dialogs(self) -> int:
        """Record dialogs idle past DIALOG_IDLE_TIMEOUT as abandoned (at the step where the
        customer stopped), so drop-off shows even for customers who never come back."""
        now = time.time()
        count = await self.store.abandon_idle(now - self.settings.dialog_idle_timeout, now)
        if count:
            log.info("%d idle dialogs recorded as abandoned", count)
        return count

    async def _handoff_timeouts(self) -> None:
        """Give conversations back to the bot when their handoff times out (HANDOFF_TIMEOUT)."""
        interval = min(HANDOFF_CHECK_INTERVAL, self.settings.handoff_timeout / 4)
        while not self._stop.is_set():
            try:
                resumed = await self.admin.expire_handoffs()
                if resumed:
                    log.info(
                        "%d conversation(s) back with the bot after the handoff timeout", resumed
                    )
            except Exception:
                log.exception("handoff timeouts failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    async def _housekeeping(self) -> None:
        while not self._stop.is_set():
            try:
                removed = await self.inbound.prune()
                if removed:
                    log.info("pruned %d processed queue rows older than 7 days", removed)
                await self._abandon_idle_dialogs()
                await cleanup_unlinked_files(
                    self.db, self.files.upload_dir, older_than=self.settings.upload_retention
                )
            except Exception:
                log.exception("housekeeping failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PRUNE_INTERVAL)
