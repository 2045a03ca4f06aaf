"""Tracking and operator handoff at the worker, before the dialog engine (embedded store)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
from typer.testing import CliRunner

from orderbot import db
from orderbot.cli import app
from orderbot.config import Settings
from orderbot.desk.sqlite import SqliteDeskStore
from orderbot.dialog import DialogOptions, load_flow
from orderbot.frontdesk import FrontDesk
from orderbot.messages import InboundMessage
from orderbot.order_admin import SqliteOrderAdmin
from orderbot.queues.sqlite import SqliteInboundQueue
from orderbot.sqlite import SqliteDatabase
from orderbot.state.sqlite import SqliteStepStore
from orderbot.worker import Worker
from tests.test_worker import run_until_idle

FLOW = load_flow("water")
OPTIONS = DialogOptions(default_language="ru")
ORDER = ["Hello", "Chui avenue 120, apt 5", "0555 123 456", "3", "yes"]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Bot:
    """A worker with a front desk on one database; ``say`` runs messages through it."""

    def __init__(self, database: SqliteDatabase, **desk: Any) -> None:
        self.db = database
        self.clock = Clock()
        self.queue = SqliteInboundQueue(database)
        self.desk = FrontDesk(SqliteDeskStore(database), FLOW, OPTIONS, clock=self.clock, **desk)
        self.worker = Worker(
            self.queue,
            SqliteStepStore(database),
            FLOW,
            options=OPTIONS,
            poll_interval=0.05,
            front_desk=self.desk,
        )
        self.admin = SqliteOrderAdmin(database, FLOW, OPTIONS, clock=self.clock)
        self.count = 0

    async def say(
        self, client: str, *texts: str, channel: str = "chat2desk"
    ) -> list[dict[str, Any]]:
        """Send ``texts`` as ``client``; return the outbox entries they produced."""
        before = len(await outbox(self.db))
        for text in texts:
            self.count += 1
            await self.queue.put(
                InboundMessage(
                    channel=channel,
                    client_id=client,
                    message_id=f"m{self.count}",
                    text=text,
                    received_at=time.time(),
                    route={"transport": "whatsapp", "channel_id": "3"}
                    if channel == "chat2desk"
                    else {},
                )
            )
        await run_until_idle(self.worker, self.queue, self.worker.handled + len(texts))
        return (await outbox(self.db))[before:]

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


async def outbox(database: SqliteDatabase) -> list[dict[str, Any]]:
    rows = await database.run(
        lambda c: c.execute("SELECT key, payload FROM outbox ORDER BY id").fetchall()
    )
    return [{"key": r[0], **orjson.loads(r[1])} for r in rows]


def texts(entries: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in entries]


async def test_tracking_answers_only_for_the_customers_own_orders(database: SqliteDatabase) -> None:
    bot = Bot(database)
    await bot.say("alice", "Привет", "ул. Киевская 120, кв. 5", "0555 111 222", "2", "да")
    await bot.say("bob", "Привет", "ул. Токтогула 7", "0555 333 444", "4", "да")
    (alice_order,) = await bot.order_ids("alice")
    (bob_order,) = await bot.order_ids("bob")
    await bot.admin.set_status(alice_order, "confirmed", note="paid by card")

    (own,) = await bot.say("bob", f"/track {bob_order}")
    assert f"№{bob_order}" in own["text"]
    (listed,) = await bot.say("bob", "статус заказа")
    assert f"№{bob_order}" in listed["text"] and f"№{alice_order}" not in listed["text"]

    missing = 99_999
    (foreign,) = await bot.say("bob", f"/track {alice_order}")
    (nonexistent,) = await bot.say("bob", f"статус заказа {missing}")
    # Alice's number is answered exactly like a number that does not exist.
    assert foreign["text"].replace(str(alice_order), "N") == nonexistent["text"].replace(
        str(missing), "N"
    )
    bob_replies = [e for e in await outbox(database) if e["client_id"] == "bob"]
    for secret in ("Киевская", "111 222", "+996555111222", "paid by card", "подтвержд"):
        assert all(secret not in e["text"] for e in bob_replies), secret

    (alice_one,) = await bot.say("alice", f"/track {alice_order}")
    assert "подтверждён" in alice_one["text"]  # her history shows the change


async def test_tracking_mid_dialog_keeps_the_step(database: SqliteDatabase) -> None:
    bot = Bot(database)
    await bot.say("carol", "Hello", "Chui avenue 120, apt 5")
    before = await bot.state("carol")
    answer, again = await bot.say("carol", "track my order")
    assert answer["text"] == "You have no orders yet."
    assert "phone" in again["text"]  # the question the dialog is at, asked again
    assert await bot.state("carol") == before
    (next_step,) = await bot.say("carol", "0555 123 456")
    assert "bottles" in next_step["text"]


async def test_handoff_on_chat2desk_transfers_and_keeps_silent_until_handback(
    database: SqliteDatabase,
) -> None:
    bot = Bot(database, chat2desk_operator_id=77)
    await bot.say("dan", "Hello", "Chui avenue 120, apt 5")
    before = await bot.state("dan")
    told, transfer = await bot.say("dan", "Operator")
    assert "operator" in told["text"]
    assert (transfer["kind"], transfer["route"]["operator_id"], transfer["client_id"]) == (
        "transfer",
        "77",
        "dan",
    )
    assert transfer["route"]["transport"] == "whatsapp"

    assert await bot.say("dan", "hello?", "my phone is 0555 123 456") == []  # silent
    logged = await database.run(
        lambda c: c.execute(
            "SELECT text, dialog_state FROM message_logs WHERE client_id = 'dan' AND direction = 'in'"
            " ORDER BY id DESC LIMIT 2"
        ).fetchall()
    )
    assert [tuple(r) for r in logged] == [
        ("my phone is 0555 123 456", "HANDOFF"),
        ("hello?", "HANDOFF"),
    ]
    pending = await database.run(
        lambda c: c.execute("SELECT count(*) FROM inbound_queue WHERE done = 0").fetchone()[0]
    )
    assert pending == 0
    assert await bot.state("dan") == before

    await bot.admin.handback("chat2desk", "dan")
    (back,) = (await outbox(database))[-1:]
    assert "operator has finished" in back["text"] and "phone" in back["text"]
    (next_step,) = await bot.say("dan", "0555 123 456")  # resumes at the step it left
    assert "bottles" in next_step["text"]


async def test_handoff_on_telegram_sends_the_transcript_to_admins(database: SqliteDatabase) -> None:
    bot = Bot(database, admin_chats=("500", "501"))
    await bot.say("9001", "Hello", "Chui <avenue> 120 & co", channel="telegram")
    produced = await bot.say("9001", "/operator", channel="telegram")
    customer = [e for e in produced if e["client_id"] == "9001"]
    admins = {e["client_id"]: e["text"] for e in produced if e["client_id"] != "9001"}
    assert len(customer) == 1 and "operator" in customer[0]["text"]
    assert set(admins) == {"500", "501"}
    transcript = admins["500"]
    assert (
        "telegram:9001" in transcript and "orderbot handback 9001 --channel telegram" in transcript
    )
    assert "Chui <avenue> 120 & co" in transcript and "/operator" in transcript
    assert await bot.say("9001", "anyone?", channel="telegram") == []


async def test_handoff_times_out_and_the_bot_resumes(database: SqliteDatabase) -> None:
    bot = Bot(database, handoff_timeout=60)
    await bot.say("erin", "Hello", "Chui avenue 120, apt 5")
    await bot.say("erin", "manager")
    assert await bot.say("erin", "still there?") == []
    bot.clock.now += 61
    back, asked = await bot.say("erin", "hello?")  # the next message notices the timeout
    assert "operator has finished" in back["text"] and "phone" in asked["text"]
    (next_step,) = await bot.say("erin", "0555 123 456")
    assert "bottles" in next_step["text"]

    # Housekeeping notices it without a message.
    await bot.say("erin", "оператор")
    bot.clock.now += 61
    assert await bot.admin.expire_handoffs() == 1
    assert "operator has finished" in (await outbox(database))[-1]["text"]
    assert await bot.admin.expire_handoffs() == 0


async def test_without_anyone_to_hand_to_the_dialog_goes_on(database: SqliteDatabase) -> None:
    bot = Bot(database)  # Telegram customer, no ADMIN_CHAT_IDS
    await bot.say("7", "Hello", channel="telegram")
    told, asked = await bot.say("7", "оператор", channel="telegram")
    assert "address" in asked["text"] and "operator" in told["text"].lower()
    (next_step,) = await bot.say("7", "Chui avenue 120, apt 5", channel="telegram")
    assert "phone" in next_step["text"]


def test_cli_handback(settings: Settings) -> None:
    async def hand_off(path: Path) -> None:
        await db.upgrade_async(f"sqlite:///{path}")
        async with SqliteDatabase(path) as database:
            bot = Bot(database, chat2desk_group_id=3)
            await bot.say("fay", "Hello", "Chui avenue 120, apt 5")
            _, transfer = await bot.say("fay", "/operator")
            assert transfer["route"]["group_id"] == "3"

    asyncio.run(hand_off(settings.sqlite_path))
    env = {"DATABASE_URL": settings.database_url}
    done = CliRunner().invoke(app, ["handback", "fay", "--channel", "chat2desk"], env=env)
    assert done.exit_code == 0, done.output

    async def after(path: Path) -> list[dict[str, Any]]:
        async with SqliteDatabase(path) as database:
            return await outbox(database)

    back = asyncio.run(after(settings.sqlite_path))[-1]
    assert "operator has finished" in back["text"] and "phone" in back["text"]
    assert back["route"] == {"transport": "whatsapp", "channel_id": "3"}
    again = CliRunner().invoke(app, ["handback", "fay"], env=env)
    assert again.exit_code == 1 and "not with an operator" in again.output
