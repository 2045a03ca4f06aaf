"""What the console works with, built once from the running profile: the SQL runner on its
database, accounts, sessions, the login throttle, the board's reads, the order admin (status
changes, handbacks), the dead-letter queue, and how an operator's reply reaches the outbox.

Embedded: the runtime's :class:`~orderbot.storage.sqlite.SqliteDatabase` and SQLite outbox (no
SQLAlchemy loaded). Distributed: the runtime's ``AsyncEngine`` and RabbitMQ outbox.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from orderbot.config import Settings
from orderbot.desk.base import OrderAdmin
from orderbot.messages import OutboundMessage
from orderbot.queues.base import DeadLetterQueue
from orderbot.storage.sqlite import SqliteDatabase
from orderbot.web.console.accounts import OperatorAccounts
from orderbot.web.console.board import OrderBoard
from orderbot.web.console.sessions import ConsoleSessions, LoginThrottle
from orderbot.web.console.shoptime import ShopTime
from orderbot.web.console.sql.base import SqlRunner
from orderbot.web.console.sql.sqlite import SqliteRunner
from orderbot.web.console.stats import StepsOfFlow

__all__ = ["ConsoleServices", "runner_for", "services_for"]

SendReply = Callable[[OutboundMessage], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ConsoleServices:
    settings: Settings
    flow: StepsOfFlow
    runner: SqlRunner
    accounts: OperatorAccounts
    sessions: ConsoleSessions
    throttle: LoginThrottle
    board: OrderBoard
    admin: OrderAdmin
    dead_letters: DeadLetterQueue
    send_reply: SendReply
    shop: ShopTime
    profile: str
    clock: Callable[[], float] = time.time


def runner_for(runtime: Any) -> SqlRunner:
    """The SQL runner on ``runtime``'s database: its SQLite connection or its engine."""
    db = getattr(runtime, "db", None)
    if isinstance(db, SqliteDatabase):
        return SqliteRunner(db)
    from orderbot.web.console.sql.postgres import PostgresRunner

    return PostgresRunner(runtime.engine)


def _reply_sender(runtime: Any) -> SendReply:
    db = getattr(runtime, "db", None)
    if isinstance(db, SqliteDatabase):
        from orderbot.desk.sqlite import insert_outbox

        wakeup = getattr(runtime.outbox, "wakeup", None)

        async def put_sqlite(message: OutboundMessage) -> None:
            await db.run(lambda conn: insert_outbox(conn, message, message.created_at))
            if wakeup is not None:
                wakeup.set()

        return put_sqlite

    async def put_rabbit(message: OutboundMessage) -> None:
        await runtime.outbox.put([message])

    return put_rabbit


def services_for(runtime: Any, settings: Settings) -> ConsoleServices:
    """The console's services on an opened runtime (``EmbeddedRuntime`` or
    ``DistributedRuntime``)."""
    runner = runner_for(runtime)
    return ConsoleServices(
        settings=settings,
        flow=runtime.flow,
        runner=runner,
        accounts=OperatorAccounts(runner),
        sessions=ConsoleSessions(
            runner,
            idle_timeout=settings.console_idle_timeout,
            lifetime=settings.console_session_lifetime,
        ),
        throttle=LoginThrottle(runner),
        board=OrderBoard(runner),
        admin=runtime.admin,
        dead_letters=runtime.dead_letters,
        send_reply=_reply_sender(runtime),
        shop=ShopTime(settings.shop_timezone),
        profile=str(getattr(runtime, "profile", "embedded")),
    )
