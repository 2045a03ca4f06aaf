"""What both profiles' runtimes share: the lifecycle and the wiring built the same way.

:class:`Runtime` owns the settings, the flow and the channels, runs background tasks until
:meth:`Runtime.stop`, and closes in reverse order (:meth:`Runtime.aclose`: stop, channels, file
downloads, then the backends of the profile). The parts built the same way on both profiles (the
dialog options, the channels, the file receiver, the operator alerts, the front desk, the worker,
the webhook ingress) are built here, once. The profiles are :mod:`orderbot.runtime.embedded` and
:mod:`orderbot.runtime.distributed`.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self

from orderbot.alerting import OperationsAlerts, PutAlert
from orderbot.channels.base import Channel
from orderbot.channels.chat2desk import Chat2DeskChannel, WebhookWatch, webhook_watch
from orderbot.channels.order_webhook import ORDER_WEBHOOK, OrderWebhookChannel
from orderbot.config import Settings
from orderbot.desk.base import DeskStore, OperatorTopics, OrderAdmin
from orderbot.desk.front import FrontDesk
from orderbot.dialog.flow import Flow
from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import DialogOptions
from orderbot.files.fetchers import TelegramFileFetcher
from orderbot.files.receiver import FileReceiver
from orderbot.loggers import storage as log
from orderbot.metrics import HOUSEKEEPING_FAILURES
from orderbot.orders.alerts import OperatorAlerts
from orderbot.queues.base import InboundQueue, QueueDepths
from orderbot.state.base import StepStore
from orderbot.web.ingress import SignatureCheck, WebhookIngress
from orderbot.worker import Worker

__all__ = ["Runtime", "build_channels", "build_file_receiver", "dialog_options"]


async def run_housekeeping_job(name: str, job: Callable[[], Awaitable[object]]) -> bool:
    """Run one housekeeping job on its own: a failure is logged and counted in
    ``orderbot_housekeeping_failures_total{job=name}`` and never skips the other jobs. False when
    it failed (the caller may try it again sooner)."""
    try:
        await job()
    except Exception:
        HOUSEKEEPING_FAILURES.labels(job=name).inc()
        log.exception("housekeeping job %s failed", name)
        return False
    return True


def dialog_options(settings: Settings) -> DialogOptions:
    return DialogOptions(
        default_language=settings.default_language,
        detect_language=settings.detect_language,
        phone_region=settings.default_phone_region,
        idle_timeout=settings.dialog_idle_timeout,
        shop_timezone=settings.shop_timezone,
    )


def build_file_receiver(settings: Settings) -> FileReceiver:
    """Model-file downloads: links (Chat2Desk) always, Telegram files when a bot is set up."""
    receiver = FileReceiver.with_http(
        settings.upload_dir,
        max_bytes=settings.max_upload_mb * 1024 * 1024,
        policy=settings.link_policy,
        download_timeout=settings.download_timeout,
        min_rate=settings.download_min_rate,
        max_downloads=settings.download_concurrency,
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
            reply_type=settings.chat2desk_reply_type,
            open_dialog=settings.chat2desk_open_dialog,
            window_transports=settings.window_transports,
        )
    }
    if settings.telegram_bot_token:
        from orderbot.channels.telegram.client import TelegramChannel

        channels["telegram"] = TelegramChannel(
            token=settings.telegram_bot_token,
            api_url=settings.telegram_api_url,
            webhook_secret=settings.telegram_webhook_secret,
            timeout=settings.telegram_timeout,
            operator_chat=settings.operator_chat_id.strip(),
        )
    if settings.order_webhook_url:
        channels[ORDER_WEBHOOK] = OrderWebhookChannel(settings.order_webhook_url)
    return channels


def operator_chat(channels: Mapping[str, Channel]) -> str:
    """``OPERATOR_CHAT_ID`` when the Telegram adapter runs with it, else ""."""
    from orderbot.channels.telegram.client import TelegramChannel

    telegram = channels.get("telegram")
    return telegram.operator_chat if isinstance(telegram, TelegramChannel) else ""


def operator_topics(
    channels: Mapping[str, Channel], topics: OperatorTopics
) -> OperatorTopics | None:
    """``topics`` given to the Telegram adapter, when it has an operators' chat
    (``OPERATOR_CHAT_ID``); None without one."""
    from orderbot.channels.telegram.client import TelegramChannel

    telegram = channels.get("telegram")
    if not isinstance(telegram, TelegramChannel) or not telegram.operator_chat:
        return None
    telegram.topics = topics
    return topics


class Runtime(ABC):
    """The lifecycle of one process's parts: ``async with`` opens, :meth:`start` runs the
    background tasks, :meth:`stop` lets them finish within their bounds, :meth:`aclose` closes
    everything once."""

    admin: OrderAdmin  # each profile's, set by its constructor

    def __init__(
        self,
        settings: Settings,
        *,
        channels: Mapping[str, Channel] | None = None,
        flow: Flow | None = None,
    ) -> None:
        self.settings = settings
        self.flow = flow or load_flow(settings.flow)
        self.channels: dict[str, Channel] = (
            dict(channels) if channels is not None else build_channels(settings)
        )
        self.options = dialog_options(settings)
        # Model files: in the distributed profile UPLOAD_DIR is one volume every worker shares.
        self.files = build_file_receiver(settings)
        # Telegram admins are alerted only when the Telegram channel is configured.
        self.admin_chats = settings.admin_chats if "telegram" in self.channels else ()
        # orderbot's Chat2Desk webhook as Chat2Desk reports it (cached): /health, /status and
        # the sender's alerts.
        self.webhook_watch: WebhookWatch | None = webhook_watch(
            self.channels, settings.chat2desk_api_token
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._opened = False
        self._closed = False

    # -- wiring shared by the profiles

    def operator_alerts(self) -> OperatorAlerts:
        """New orders told to operators (Telegram admins; the order webhook when its URL is set;
        the customer's topic in the operators' chat, with every detail in the shop's language)."""
        return OperatorAlerts(
            admin_chats=self.admin_chats,
            webhook=ORDER_WEBHOOK in self.channels,
            operator_chat=operator_chat(self.channels),
            flow=self.flow,
            language=self.settings.default_language,
        )

    def operations_alerts(self, put: PutAlert) -> OperationsAlerts:
        """What needs a person, told to the admin chats (and the operators' chat, in its
        General topic) through ``put`` (the outbox), at most once per ``ALERT_INTERVAL``."""
        chats = list(self.admin_chats)
        topic_chat = operator_chat(self.channels)
        if topic_chat and topic_chat not in chats:
            chats.append(topic_chat)
        return OperationsAlerts(put, chats=chats, interval=self.settings.alert_interval)

    async def _handback_by_operator(self, channel: str, client_id: str) -> None:
        """``/back`` in the operators' chat: the handback as from the CLI or the admin API."""
        await self.admin.handback(channel, client_id)

    async def _status_by_operator(self, order_id: int, status: str, actor: str) -> object:
        """A status button pressed in the operators' chat: the change as that operator."""
        return await self.admin.set_status(order_id, status, actor=actor)

    def build_worker(
        self,
        inbound: InboundQueue,
        store: StepStore,
        desk: DeskStore,
        *,
        topics: OperatorTopics | None = None,
        **extra: Any,
    ) -> Worker:
        settings = self.settings
        return Worker(
            inbound,
            store,
            self.flow,
            options=self.options,
            concurrency=settings.worker_concurrency,
            max_deliveries=settings.max_inbound_deliveries,
            shutdown_timeout=settings.shutdown_timeout,
            files=self.files,
            front_desk=FrontDesk(
                desk,
                self.flow,
                self.options,
                admin_chats=self.admin_chats,
                chat2desk_operator_id=settings.chat2desk_operator_id,
                chat2desk_group_id=settings.chat2desk_group_id,
                handoff_timeout=settings.handoff_timeout,
                operator_chat=operator_chat(self.channels),
                topics=topics,
                handback=self._handback_by_operator,
                set_status=self._status_by_operator,
            ),
            **extra,
        )

    def build_ingress(self, inbound: InboundQueue) -> WebhookIngress:
        settings = self.settings
        signatures = {}
        if settings.webhook_signature_header:
            signatures["chat2desk"] = SignatureCheck.for_token(
                settings.chat2desk_api_token,
                settings.webhook_signature_header,
                settings.webhook_timestamp_header,
                tolerance=settings.webhook_timestamp_tolerance,
            )
        return WebhookIngress(
            inbound,
            {
                name: ch
                for name, ch in self.channels.items()
                if name not in ("local", ORDER_WEBHOOK)  # outbound only
            },
            secret=settings.webhook_secret,
            signatures=signatures,
        )

    # -- lifecycle

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abstractmethod
    async def open(self) -> None:
        """Connect what must be there before work starts. Idempotent."""

    @abstractmethod
    def start(self) -> None:
        """Run this process's background tasks (into ``self._tasks``)."""

    @abstractmethod
    async def depths(self) -> QueueDepths: ...

    @abstractmethod
    async def close_backends(self) -> None:
        """Close the profile's own resources, after the tasks, channels and downloads."""

    async def stop(self) -> None:
        """Stop taking work; let in-flight steps and sends finish within their bounds."""
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
        """Stop background work, close channels and downloads, then the backends. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.stop()
        for channel in self.channels.values():
            with contextlib.suppress(Exception):
                await channel.aclose()
        await self.files.aclose()
        await self.close_backends()

    async def wait_stopped(self) -> None:
        """Return when a background task ends by itself (a crash of the worker loop)."""
        if self._tasks:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not self._stop.is_set()
