"""The two profiles' runtimes: embedded (one SQLite file, one process) and distributed
(PostgreSQL, Redis, RabbitMQ).

The profile is picked here, once, from the settings (``Settings.is_distributed``): the CLI asks
for the order admin or the dead-letter queue and gets the one of the configured profile. Each
profile's modules are imported only when picked, so the embedded side never loads the
distributed packages.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orderbot.config import Settings
    from orderbot.desk.base import OrderAdmin
    from orderbot.queues.base import DeadLetterQueue

__all__ = ["open_dead_letters", "open_order_admin"]


@contextlib.asynccontextmanager
async def open_order_admin(settings: Settings) -> AsyncIterator[OrderAdmin]:
    """The order admin of the configured profile: PostgreSQL + RabbitMQ + Redis (a customer's
    notification is published at once), or the SQLite file (it must exist)."""
    if settings.is_distributed:
        from orderbot.config import require_distributed_packages

        require_distributed_packages()
        from orderbot.runtime.distributed import DistributedRuntime

        async with DistributedRuntime(settings, channels={}) as runtime:
            yield runtime.admin
        return
    from orderbot.desk.sqlite import SqliteOrderAdmin
    from orderbot.dialog.loader import load_flow
    from orderbot.runtime.base import dialog_options
    from orderbot.storage.sqlite import SqliteDatabase

    flow = load_flow(settings.flow)
    async with SqliteDatabase(settings.sqlite_path, synchronous=settings.sqlite_synchronous) as db:
        yield SqliteOrderAdmin(db, flow, dialog_options(settings))


@contextlib.asynccontextmanager
async def open_dead_letters(settings: Settings) -> AsyncIterator[DeadLetterQueue]:
    """The dead-letter queue of the configured profile (``orderbot dlq``)."""
    if settings.is_distributed:
        from orderbot.config import require_distributed_packages

        require_distributed_packages()
        from orderbot.runtime.processes import open_rabbit_dead_letters

        async with open_rabbit_dead_letters(settings) as queue:
            yield queue
        return
    from orderbot.queues.sqlite import SqliteDeadLetterQueue
    from orderbot.storage.sqlite import SqliteDatabase

    async with SqliteDatabase(settings.sqlite_path, synchronous=settings.sqlite_synchronous) as db:
        yield SqliteDeadLetterQueue(db)
