"""A worker with a front desk and an order admin, on either profile, for the tracking, handoff
and order-status tests: ``say`` runs messages through it and returns what went to the outbox.

Embedded: one SQLite file. Distributed: RabbitMQ inbound queue and outbox, Redis state,
PostgreSQL orders, in a namespace of the test's own (queue prefix, Redis keys, client ids:
PostgreSQL is shared, so every client id is prefixed); skipped when the services are down.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import orjson
from sqlalchemy import delete, select

from orderbot.channels.chat2desk import Chat2DeskChannel
from orderbot.desk.base import OperatorTopics, OrderAdmin
from orderbot.desk.front import FrontDesk
from orderbot.desk.postgres import PostgresDeskStore
from orderbot.desk.postgres_admin import PostgresOrderAdmin
from orderbot.desk.redis_topics import RedisOperatorTopics
from orderbot.desk.sqlite import SqliteDeskStore, SqliteOrderAdmin
from orderbot.desk.sqlite_topics import SqliteOperatorTopics
from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import DialogOptions
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.queues.base import InboundQueue
from orderbot.queues.sqlite import SqliteInboundQueue
from orderbot.state.base import StepStore
from orderbot.state.sqlite import SqliteStepStore
from orderbot.storage import sql as db
from orderbot.storage.schema import dialog_outcomes, handoffs, message_logs, orders
from orderbot.storage.sqlite import SqliteDatabase
from orderbot.worker import Worker
from tests.test_worker import run_until_idle

FLOW = load_flow("water")
OPTIONS = DialogOptions(default_language="ru")
PROFILES = ["embedded", "distributed"]
WINDOWED = ("wa_dialog",)  # the 24-hour window applies to clients who write over wa_dialog
CHAT2DESK = Chat2DeskChannel(api_url="http://unused.invalid/v1", token="t")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Bot:
    """What the tests drive; see the two implementations below."""

    profile: str
    clock: Clock
    admin: OrderAdmin
    worker: Worker
    queue: InboundQueue
    store: StepStore
    prefix: str = ""

    def __init__(self) -> None:
        self.count = 0

    def client(self, name: str) -> str:
        """The client id of ``name`` in this bot's namespace."""
        return self.prefix + name

    async def say(
        self, client: str, *texts: str, channel: str = "chat2desk"
    ) -> list[dict[str, Any]]:
        """Send ``texts`` as ``client`` (an id from :meth:`client`); return the outbox entries
        they produced, as dicts of the outbound message's JSON form."""
        before = len(await self.sent())
        for text in texts:
            self.count += 1
            await self.queue.put(
                InboundMessage(
                    channel=channel,
                    client_id=client,
                    message_id=f"{self.prefix}m{self.count}",
                    text=text,
                    received_at=time.time(),
                    route={"transport": "whatsapp", "channel_id": "3"}
                    if channel == "chat2desk"
                    else {},
                )
            )
        await run_until_idle(self.worker, self.queue, self.worker.handled + len(texts))  # type: ignore[arg-type]
        return (await self.sent())[before:]

    async def put(self, message: InboundMessage | None) -> list[dict[str, Any]]:
        """Run one parsed message through the worker; the outbox entries it produced."""
        if message is None:
            return []
        before = len(await self.sent())
        await self.queue.put(message)
        await run_until_idle(self.worker, self.queue, self.worker.handled + 1)  # type: ignore[arg-type]
        return (await self.sent())[before:]

    async def hear(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """A Chat2Desk webhook event, parsed as the ingress parses it and run through the
        worker; return the outbox entries it produced ([] for an event the adapter ignores)."""
        message = CHAT2DESK.parse_webhook(payload, received_at=time.time())
        if message is None:
            return []
        before = len(await self.sent())
        await self.queue.put(message)
        await run_until_idle(self.worker, self.queue, self.worker.handled + 1)  # type: ignore[arg-type]
        return (await self.sent())[before:]

    async def sent(self) -> list[dict[str, Any]]:
        """Everything put in the outbox so far, oldest first."""
        raise NotImplementedError

    async def state(self, client: str, channel: str = "chat2desk") -> bytes | None:
        raise NotImplementedError

    async def order_ids(self, client: str) -> list[int]:
        raise NotImplementedError

    async def inbound_log(self, client: str, limit: int) -> list[tuple[str, str]]:
        """The client's last inbound log rows, newest first: (text, dialog state)."""
        raise NotImplementedError

    async def outcomes(self, client: str) -> list[tuple[str, bool]]:
        """The client's ``dialog_outcomes``, oldest first: (outcome, has an order id)."""
        raise NotImplementedError


class EmbeddedBot(Bot):
    profile = "embedded"

    def __init__(self, database: SqliteDatabase, **desk: Any) -> None:
        super().__init__()
        self.db = database
        self.topics: OperatorTopics = SqliteOperatorTopics(database)
        _with_topics(self, desk)
        self.clock = Clock()
        self.queue = SqliteInboundQueue(database)
        self.desk = FrontDesk(SqliteDeskStore(database), FLOW, OPTIONS, clock=self.clock, **desk)
        self.store = SqliteStepStore(database)
        self.worker = Worker(
            self.queue,
            self.store,
            FLOW,
            options=OPTIONS,
            poll_interval=0.05,
            front_desk=self.desk,
        )
        self.admin = SqliteOrderAdmin(
            database, FLOW, OPTIONS, clock=self.clock, window_transports=WINDOWED
        )

    async def sent(self) -> list[dict[str, Any]]:
        rows = await self.db.run(
            lambda c: c.execute("SELECT key, payload FROM outbox ORDER BY id").fetchall()
        )
        return [{"key": r[0], **orjson.loads(r[1])} for r in rows]

    async def state(self, client: str, channel: str = "chat2desk") -> bytes | None:
        row = await self.db.run(
            lambda c: c.execute(
                "SELECT state FROM dialog_states WHERE client_key = ?", (f"{channel}:{client}",)
            ).fetchone()
        )
        return None if row is None else bytes(row[0])

    async def order_ids(self, client: str) -> list[int]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT id FROM orders WHERE client_id = ? ORDER BY id", (client,)
            ).fetchall()
        )
        return [r[0] for r in rows]

    async def inbound_log(self, client: str, limit: int) -> list[tuple[str, str]]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT text, dialog_state FROM message_logs WHERE client_id = ?"
                " AND direction = 'in' ORDER BY id DESC LIMIT ?",
                (client, limit),
            ).fetchall()
        )
        return [(r[0], r[1]) for r in rows]

    async def outcomes(self, client: str) -> list[tuple[str, bool]]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT outcome, order_id IS NOT NULL FROM dialog_outcomes WHERE client_id = ?"
                " ORDER BY id",
                (client,),
            ).fetchall()
        )
        return [(r[0], bool(r[1])) for r in rows]


class DistributedBot(Bot):
    """The distributed profile's parts, with the outbox's publishes recorded (in order) as
    they are confirmed by RabbitMQ."""

    profile = "distributed"

    def __init__(self, namespace: str, **desk: Any) -> None:
        from orderbot.runtime.distributed import DistributedRuntime
        from tests.distributed.conftest import distributed_settings

        super().__init__()
        self.namespace = namespace
        self.prefix = namespace + "-"
        self.settings = distributed_settings(namespace)
        self.runtime = DistributedRuntime(self.settings, channels={})
        self.clock = Clock()
        self.published: list[OutboundMessage] = []
        outbox = self.runtime.outbox
        publish = outbox.put

        async def recording_put(replies: Any) -> None:
            await publish(replies)
            self.published.extend(replies)

        outbox.put = recording_put  # type: ignore[method-assign]
        self.queue = self.runtime.inbound
        self.store = self.runtime.store
        keys = self.runtime.keys
        self.topics = RedisOperatorTopics(self.runtime.redis, keys)
        _with_topics(self, desk)
        self.desk = FrontDesk(
            PostgresDeskStore(self.runtime.engine, self.runtime.redis, keys=keys),
            FLOW,
            OPTIONS,
            clock=self.clock,
            **desk,
        )
        self.worker = Worker(
            self.queue,
            self.runtime.store,
            FLOW,
            options=OPTIONS,
            poll_interval=0.05,
            front_desk=self.desk,
        )
        self.admin = PostgresOrderAdmin(
            self.runtime.engine,
            self.runtime.redis,
            outbox,
            FLOW,
            OPTIONS,
            keys=keys,
            clock=self.clock,
            window_transports=WINDOWED,
        )

    async def sent(self) -> list[dict[str, Any]]:
        return [{"key": m.key, **orjson.loads(m.to_json())} for m in self.published]

    async def state(self, client: str, channel: str = "chat2desk") -> bytes | None:
        raw = await self.runtime.redis.get(self.runtime.keys.state(f"{channel}:{client}"))
        return None if raw is None else bytes(raw)

    async def order_ids(self, client: str) -> list[int]:
        async with self.runtime.engine.connect() as conn:
            rows = await conn.execute(
                select(orders.c.id).where(orders.c.client_id == client).order_by(orders.c.id)
            )
            return [int(r[0]) for r in rows]

    async def inbound_log(self, client: str, limit: int) -> list[tuple[str, str]]:
        async with self.runtime.engine.connect() as conn:
            rows = await conn.execute(
                select(message_logs.c.text, message_logs.c.dialog_state)
                .where(message_logs.c.client_id == client, message_logs.c.direction == "in")
                .order_by(message_logs.c.id.desc())
                .limit(limit)
            )
            return [(r[0], r[1]) for r in rows]

    async def outcomes(self, client: str) -> list[tuple[str, bool]]:
        async with self.runtime.engine.connect() as conn:
            rows = await conn.execute(
                select(dialog_outcomes.c.outcome, dialog_outcomes.c.order_id)
                .where(dialog_outcomes.c.client_id == client)
                .order_by(dialog_outcomes.c.id)
            )
            return [(r[0], r[1] is not None) for r in rows]


async def forget_clients(engine: Any, prefix: str) -> None:
    """Delete the handoffs of a test namespace's clients (PostgreSQL is shared: another test's
    housekeeping must not hand them back)."""
    async with engine.begin() as conn:
        await conn.execute(delete(handoffs).where(handoffs.c.client_id.like(prefix + "%")))


async def drain_outbox(namespace: str, shards: int = 2) -> list[OutboundMessage]:
    """Take every reply waiting in a namespace's outbox queues (what another process, such as
    the CLI, published)."""
    from tests.distributed.conftest import RABBIT_URL

    found: list[OutboundMessage] = []
    connection = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await connection.channel()
        for shard in range(shards):
            queue = await channel.get_queue(f"{namespace}.outbox.{shard}")
            while (message := await queue.get(fail=False)) is not None:
                found.append(OutboundMessage.from_json(message.body))
                await message.ack()
    finally:
        await connection.close()
    return found


def _with_topics(bot: Bot, desk: dict[str, Any]) -> None:
    """With ``operator_chat=...``: the operators' Telegram chat, its topics in this profile's
    store, and /back handing back through the bot's order admin."""
    if desk.get("operator_chat"):

        async def handback(channel: str, client_id: str) -> None:
            await bot.admin.handback(channel, client_id)

        async def set_status(order_id: int, status: str, actor: str) -> object:
            return await bot.admin.set_status(order_id, status, actor=actor)

        desk.update(topics=bot.topics, handback=handback, set_status=set_status)  # type: ignore[attr-defined]


@asynccontextmanager
async def open_bot(profile: str, tmp_path: Path, **desk: Any) -> AsyncIterator[Bot]:
    """A :class:`Bot` of ``profile``; the distributed one skips when the services are down."""
    if profile == "embedded":
        path = tmp_path / f"bot-{uuid.uuid4().hex[:6]}.db"
        await db.upgrade_async(f"sqlite:///{path}")
        async with SqliteDatabase(path) as database:
            yield EmbeddedBot(database, **desk)
        return
    from tests.distributed.conftest import migrate_postgres, remove_namespace, require_services

    require_services()
    await migrate_postgres()
    namespace = "d" + uuid.uuid4().hex[:10]
    bot = DistributedBot(namespace, **desk)
    await bot.runtime.open()
    try:
        yield bot
    finally:
        await forget_clients(bot.runtime.engine, bot.prefix)
        await bot.runtime.aclose()
        await remove_namespace(namespace)


BotFactory = Callable[..., Any]
