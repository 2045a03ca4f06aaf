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

from orderbot.channels.base import Channel
from orderbot.config import Settings
from orderbot.desk.sqlite import SqliteDeskStore, SqliteOrderAdmin, insert_outbox
from orderbot.desk.sqlite_topics import SqliteOperatorTopics
from orderbot.dialog.flow import Flow
from orderbot.files.receiver import cleanup_unlinked_files
from orderbot.loggers import storage as log
from orderbot.messages import OutboundMessage
from orderbot.queues.base import QueueDepths
from orderbot.queues.sqlite import (
    SqliteDeadLetterQueue,
    SqliteInboundQueue,
    SqliteOutbox,
    Wakeup,
    queue_depths,
)
from orderbot.ratelimit import LocalRateLimiter
from orderbot.runtime.base import Runtime, dialog_options, operator_topics, run_housekeeping_job
from orderbot.runtime.reminders import send_reminders
from orderbot.sender import Sender
from orderbot.state.sqlite import SqliteStepStore
from orderbot.storage import sql as database
from orderbot.storage.sqlite import SqliteDatabase

__all__ = ["EmbeddedRuntime"]

PRUNE_INTERVAL = 3600.0
HANDOFF_CHECK_INTERVAL = 60.0


class EmbeddedRuntime(Runtime):
    """Everything ``orderbot run`` needs, on SQLite, in this process."""

    def __init__(
        self,
        settings: Settings,
        *,
        channels: Mapping[str, Channel] | None = None,
        flow: Flow | None = None,
        migrate: bool = True,
    ) -> None:
        super().__init__(settings, channels=channels, flow=flow)
        self._migrate = migrate
        self.db = SqliteDatabase(settings.sqlite_path, synchronous=settings.sqlite_synchronous)
        inbound_wakeup, outbox_wakeup = Wakeup(), Wakeup()
        names = tuple(self.channels)
        self.inbound = SqliteInboundQueue(self.db, channels=names, wakeup=inbound_wakeup)
        self.outbox = SqliteOutbox(self.db, channels=names, wakeup=outbox_wakeup)
        self.dead_letters = SqliteDeadLetterQueue(
            self.db, outbox_wakeup=outbox_wakeup, inbound_wakeup=inbound_wakeup
        )
        # New orders are told to operators in the order's transaction.
        alerts = self.operator_alerts()
        self.store = SqliteStepStore(
            self.db, outbox_wakeup=outbox_wakeup, alerts=alerts if alerts else None
        )
        self.admin = SqliteOrderAdmin(
            self.db,
            self.flow,
            dialog_options(settings),
            outbox_wakeup=outbox_wakeup,
            window_transports=settings.window_transports,
        )
        topics = operator_topics(self.channels, SqliteOperatorTopics(self.db))
        # Kept: a handoff the console starts must be noted by it (it remembers who may be with
        # an operator, so the common message costs no query).
        self.desk = SqliteDeskStore(self.db)
        self.worker = self.build_worker(self.inbound, self.store, self.desk, topics=topics)
        self.sender = Sender(
            self.outbox,
            self.channels,
            rate_limiter=LocalRateLimiter(settings.outbound_rate_limit),
            drain_timeout=settings.shutdown_timeout,
            alerts=self.operations_alerts(self._queue_alert),
            webhook_status=self.webhook_watch.status if self.webhook_watch else None,
        )
        self.ingress = self.build_ingress(self.inbound)

    async def _queue_alert(self, message: OutboundMessage) -> None:
        """An operations alert into the outbox (once per key), then wake the sender."""
        await self.db.run(lambda conn: insert_outbox(conn, message, message.created_at))
        self.outbox.wakeup.set()

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

    async def close_backends(self) -> None:
        await self.db.aclose()

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

    async def send_reminders(self) -> int:
        """The one reminder of each unfinished order due now (REMINDER_AFTER; see
        :mod:`orderbot.runtime.reminders`)."""
        return await send_reminders(
            self.store, self.flow, self.options, time.time(), after=self.settings.reminder_after
        )

    async def _handoff_timeouts(self) -> None:
        """Every minute (or a quarter of HANDOFF_TIMEOUT): give conversations back to the bot
        when their handoff times out (HANDOFF_TIMEOUT) and send the reminders due."""
        interval = min(HANDOFF_CHECK_INTERVAL, self.settings.handoff_timeout / 4)
        while not self._stop.is_set():
            await run_housekeeping_job("handoff_timeouts", self._expire_handoffs)
            await run_housekeeping_job("reminders", self.send_reminders)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    async def _expire_handoffs(self) -> int:
        resumed = await self.admin.expire_handoffs()
        if resumed:
            log.info("%d conversation(s) back with the bot after the handoff timeout", resumed)
        return resumed

    async def _prune_inbound(self) -> int:
        removed = await self.inbound.prune()
        if removed:
            log.info("pruned %d processed queue rows older than 7 days", removed)
        return removed

    async def _remove_unlinked_files(self) -> int:
        return await cleanup_unlinked_files(
            self.db, self.files.upload_dir, older_than=self.settings.upload_retention
        )

    async def _housekeeping(self) -> None:
        # Each job on its own, as on the distributed profile: one failing skips no other.
        while not self._stop.is_set():
            await run_housekeeping_job("inbound_prune", self._prune_inbound)
            await run_housekeeping_job("idle_dialogs", self._abandon_idle_dialogs)
            await run_housekeeping_job("upload_cleanup", self._remove_unlinked_files)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PRUNE_INTERVAL)
