"""The housekeeping of worker processes on the distributed profile: handoff timeouts,
notifications a crash left unpublished, lost handoff flags, idle dialogs (reminded once,
then abandoned), uploaded files no
order uses and stranded shards, each job on its own (one failing never skips the others). A
collaborator of :class:`~orderbot.runtime.distributed.DistributedRuntime` with its own
constructor; it runs in worker processes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from orderbot.config import Settings
from orderbot.desk.postgres_admin import PostgresOrderAdmin
from orderbot.dialog.flow import Flow
from orderbot.dialog.models import DialogOptions
from orderbot.files.receiver import FileReceiver, remove_unlinked_files
from orderbot.loggers import storage as log
from orderbot.queues.rabbitmq.broker import RabbitBroker
from orderbot.runtime.base import run_housekeeping_job
from orderbot.runtime.reminders import send_reminders
from orderbot.state.redis import RedisStepStore
from orderbot.storage.schema import order_files

__all__ = ["FILE_CLEANUP_INTERVAL", "HOUSEKEEPING_INTERVAL", "Housekeeping"]

HOUSEKEEPING_INTERVAL = 60.0  # handoff timeouts, unpublished notifications, handoff flags
FILE_CLEANUP_INTERVAL = 3600.0


class Housekeeping:
    """The periodic housekeeping a worker process runs (see :meth:`run`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        broker: RabbitBroker,
        engine: AsyncEngine,
        admin: PostgresOrderAdmin,
        store: RedisStepStore,
        files: FileReceiver,
        flow: Flow,
        options: DialogOptions,
    ) -> None:
        self.settings = settings
        self.flow = flow
        self.options = options
        self.broker = broker
        self.engine = engine
        self.admin = admin
        self.store = store
        self.files = files

    async def run(self, stop: asyncio.Event) -> None:
        """Worker processes, every minute (or a quarter of HANDOFF_TIMEOUT): give back
        conversations whose handoff timed out, publish status notifications a crash left
        unpublished, restore handoff flags Redis lost, record dialogs idle past
        DIALOG_IDLE_TIMEOUT as abandoned, send the one reminder of dialogs idle past
        REMINDER_AFTER, log shards a lower QUEUE_SHARDS leaves unread; hourly,
        delete uploaded files no order uses. Several workers may run it at once: each part is
        safe to run twice. Each job runs and fails on its own: a failure is logged and counted
        (``orderbot_housekeeping_failures_total{job=...}``) and the other jobs still run."""
        interval = min(HOUSEKEEPING_INTERVAL, self.settings.handoff_timeout / 4)
        files_due = 0.0
        while not stop.is_set():
            await run_housekeeping_job("handoff_timeouts", self._expire_handoffs)
            await run_housekeeping_job(
                "unpublished_notifications", self.admin.republish_notifications
            )
            await run_housekeeping_job("handoff_flags", self.admin.restore_handoff_flags)
            await run_housekeeping_job("idle_dialogs", self._abandon_idle_dialogs)
            await run_housekeeping_job("reminders", self.send_reminders)
            # Hourly; a failed run is tried again the next round.
            if time.monotonic() >= files_due and await run_housekeeping_job(
                "upload_cleanup", self.remove_unlinked_files
            ):
                files_due = time.monotonic() + FILE_CLEANUP_INTERVAL
            await run_housekeeping_job("stranded_shards", self._report_stranded_shards)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def _expire_handoffs(self) -> int:
        resumed = await self.admin.expire_handoffs()
        if resumed:
            log.info("%d conversation(s) back with the bot after the handoff timeout", resumed)
        return resumed

    async def _abandon_idle_dialogs(self) -> int:
        now = time.time()
        abandoned = await self.store.abandon_idle(now - self.settings.dialog_idle_timeout, now)
        if abandoned:
            log.info("%d idle dialogs recorded as abandoned", abandoned)
        return abandoned

    async def send_reminders(self) -> int:
        """The one reminder of each unfinished order due now (REMINDER_AFTER), found in the
        active-dialog index the abandonment uses (:mod:`orderbot.runtime.reminders`)."""
        return await send_reminders(
            self.store, self.flow, self.options, time.time(), after=self.settings.reminder_after
        )

    async def _report_stranded_shards(self) -> None:
        # A server still running with a larger QUEUE_SHARDS (the start checked once).
        stranded = await self.broker.stranded_shards()
        if stranded:
            log.error("%s", self.broker.describe_stranded(stranded))

    async def remove_unlinked_files(self) -> int:
        async with self.engine.connect() as conn:
            linked = set((await conn.execute(select(order_files.c.checksum).distinct())).scalars())
        removed = await asyncio.to_thread(
            remove_unlinked_files,
            self.files.upload_dir,
            linked,
            older_than=self.settings.upload_retention,
        )
        if removed:
            log.info("removed %d uploaded files no order uses", len(removed))
        return len(removed)
