"""Tracking and operator handoff at the worker, before the dialog engine, on both profiles
(embedded SQLite; distributed RabbitMQ + Redis + PostgreSQL, skipped when those are down)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orderbot.cli import app
from orderbot.config import Settings
from orderbot.storage import sql as db
from orderbot.storage.sqlite import SqliteDatabase
from tests.support.desk_bots import PROFILES, Bot, EmbeddedBot, drain_outbox, open_bot

ORDER = ["Hello", "Chui avenue 120, apt 5", "0555 123 456", "3", "yes"]


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def texts(entries: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in entries]


async def pending_inbound(bot: Bot) -> int:
    if isinstance(bot, EmbeddedBot):
        return int(
            await bot.db.run(
                lambda c: c.execute("SELECT count(*) FROM inbound_queue WHERE done = 0").fetchone()[
                    0
                ]
            )
        )
    return (await bot.runtime.broker.depths()).inbound  # type: ignore[attr-defined,no-any-return]


async def test_tracking_answers_only_for_the_customers_own_orders(
    profile: str, tmp_path: Path
) -> None:
    async with open_bot(profile, tmp_path) as bot:
        alice, bob = bot.client("alice"), bot.client("bob")
        await bot.say(alice, "Привет", "ул. Киевская 120, кв. 5", "0555 111 222", "2", "да")
        await bot.say(bob, "Привет", "ул. Токтогула 7", "0555 333 444", "4", "да")
        (alice_order,) = await bot.order_ids(alice)
        (bob_order,) = await bot.order_ids(bob)
        await bot.admin.set_status(alice_order, "confirmed", note="paid by card")

        (own,) = await bot.say(bob, f"/track {bob_order}")
        assert f"№{bob_order}" in own["text"]
        (listed,) = await bot.say(bob, "статус заказа")
        assert f"№{bob_order}" in listed["text"] and f"№{alice_order}" not in listed["text"]

        missing = 999_999_999
        (foreign,) = await bot.say(bob, f"/track {alice_order}")
        (nonexistent,) = await bot.say(bob, f"статус заказа {missing}")
        # Alice's number is answered exactly like a number that does not exist.
        assert foreign["text"].replace(str(alice_order), "N") == nonexistent["text"].replace(
            str(missing), "N"
        )
        bob_replies = [e for e in await bot.sent() if e["client_id"] == bob]
        for secret in ("Киевская", "111 222", "+996555111222", "paid by card", "подтвержд"):
            assert all(secret not in e["text"] for e in bob_replies), secret

        (alice_one,) = await bot.say(alice, f"/track {alice_order}")
        assert "подтверждён" in alice_one["text"]  # her history shows the change


async def test_tracking_mid_dialog_keeps_the_step(profile: str, tmp_path: Path) -> None:
    async with open_bot(profile, tmp_path) as bot:
        carol = bot.client("carol")
        await bot.say(carol, "Hello", "Chui avenue 120, apt 5")
        before = await bot.state(carol)
        answer, again = await bot.say(carol, "track my order")
        assert answer["text"] == "You have no orders yet."
        assert "phone" in again["text"]  # the question the dialog is at, asked again
        assert await bot.state(carol) == before
        (next_step,) = await bot.say(carol, "0555 123 456")
        assert "bottles" in next_step["text"]


async def test_handoff_on_chat2desk_transfers_and_keeps_silent_until_handback(
    profile: str, tmp_path: Path
) -> None:
    async with open_bot(profile, tmp_path, chat2desk_operator_id=77) as bot:
        dan = bot.client("dan")
        await bot.say(dan, "Hello", "Chui avenue 120, apt 5")
        before = await bot.state(dan)
        told, transfer = await bot.say(dan, "Operator")
        assert "operator" in told["text"]
        assert (transfer["kind"], transfer["route"]["operator_id"], transfer["client_id"]) == (
            "transfer",
            "77",
            dan,
        )
        assert transfer["route"]["transport"] == "whatsapp"

        assert await bot.say(dan, "hello?", "my phone is 0555 123 456") == []  # silent
        assert await bot.inbound_log(dan, 2) == [
            ("my phone is 0555 123 456", "HANDOFF"),
            ("hello?", "HANDOFF"),
        ]
        assert await pending_inbound(bot) == 0
        assert await bot.state(dan) == before

        await bot.admin.handback("chat2desk", dan)
        (back,) = (await bot.sent())[-1:]
        assert "operator has finished" in back["text"] and "phone" in back["text"]
        assert back["route"] == {"transport": "whatsapp", "channel_id": "3"}
        (next_step,) = await bot.say(dan, "0555 123 456")  # resumes at the step it left
        assert "bottles" in next_step["text"]


async def test_handoff_on_telegram_sends_the_transcript_to_admins(
    profile: str, tmp_path: Path
) -> None:
    async with open_bot(profile, tmp_path, admin_chats=("500", "501")) as bot:
        chat = bot.client("9001")
        await bot.say(chat, "Hello", "Chui <avenue> 120 & co", channel="telegram")
        produced = await bot.say(chat, "/operator", channel="telegram")
        customer = [e for e in produced if e["client_id"] == chat]
        admins = {e["client_id"]: e["text"] for e in produced if e["client_id"] != chat}
        assert len(customer) == 1 and "operator" in customer[0]["text"]
        assert set(admins) == {"500", "501"}
        transcript = admins["500"]
        assert f"telegram:{chat}" in transcript
        assert f"orderbot handback {chat} --channel telegram" in transcript
        assert "Chui <avenue> 120 & co" in transcript and "/operator" in transcript
        assert await bot.say(chat, "anyone?", channel="telegram") == []


async def test_handoff_times_out_and_the_bot_resumes(profile: str, tmp_path: Path) -> None:
    async with open_bot(profile, tmp_path, handoff_timeout=60) as bot:
        erin = bot.client("erin")
        await bot.say(erin, "Hello", "Chui avenue 120, apt 5")
        await bot.say(erin, "manager")
        assert await bot.say(erin, "still there?") == []
        bot.clock.now += 61
        (back,) = await bot.say(erin, "hello?")  # the next message notices the timeout
        assert "operator has finished" in back["text"] and "phone" in back["text"]
        assert back["key"].startswith(f"handback:chat2desk:{erin}:")
        (next_step,) = await bot.say(erin, "0555 123 456")
        assert "bottles" in next_step["text"]

        # Housekeeping notices it without a message.
        await bot.say(erin, "оператор")
        bot.clock.now += 61
        assert await bot.admin.expire_handoffs() == 1
        (back,) = (await bot.sent())[-1:]
        assert back["client_id"] == erin and "operator has finished" in back["text"]
        assert await bot.admin.expire_handoffs() == 0
        (next_step,) = await bot.say(erin, "5")  # back with the bot, at the same step
        assert "correct" in next_step["text"]


async def test_a_timeout_noticed_by_housekeeping_and_a_message_at_once_comes_back_once(
    profile: str, tmp_path: Path
) -> None:
    # Housekeeping ends the expired handoff while the customer's message is being handled with
    # what it read before: both say the bot is back, under the same key, so the outbox keeps
    # (embedded) or the sender sends (distributed) one of them.
    async with open_bot(profile, tmp_path, handoff_timeout=60) as bot:
        erin = bot.client("erin")
        await bot.say(erin, "Hello", "Chui avenue 120, apt 5", "manager")
        key = f"chat2desk:{erin}"
        stale = await bot.desk.handoff(key)  # type: ignore[attr-defined]
        assert stale is not None
        bot.clock.now += 61
        assert await bot.admin.expire_handoffs() == 1
        (by_housekeeping,) = (await bot.sent())[-1:]

        async def read_before_the_handback(client_key: str) -> object:
            return stale if client_key == key else None

        bot.desk._store.handoff = read_before_the_handback  # type: ignore[attr-defined]
        await bot.say(erin, "hello?")
        comebacks = [e for e in await bot.sent() if "operator has finished" in e["text"]]
        assert {e["key"] for e in comebacks} == {by_housekeeping["key"]}
        assert {e["text"] for e in comebacks} == {by_housekeeping["text"]}


async def test_without_anyone_to_hand_to_the_dialog_goes_on(profile: str, tmp_path: Path) -> None:
    async with open_bot(profile, tmp_path) as bot:  # Telegram customer, no ADMIN_CHAT_IDS
        seven = bot.client("7")
        await bot.say(seven, "Hello", channel="telegram")
        told, asked = await bot.say(seven, "оператор", channel="telegram")
        assert "address" in asked["text"] and "operator" in told["text"].lower()
        (next_step,) = await bot.say(seven, "Chui avenue 120, apt 5", channel="telegram")
        assert "phone" in next_step["text"]


def test_cli_handback(settings: Settings, profile: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": settings.database_url}

    async def hand_off() -> str:
        if profile == "embedded":
            await db.upgrade_async(settings.database_url)
            async with SqliteDatabase(settings.sqlite_path) as database:
                return await _hand_off(EmbeddedBot(database, chat2desk_group_id=3))
        async with open_bot(profile, tmp_path, chat2desk_group_id=3) as bot:
            env.update(distributed_env(bot))
            fay = await _hand_off(bot)
            await drain_outbox(bot.namespace)  # type: ignore[attr-defined]
            done = await asyncio.to_thread(
                CliRunner().invoke, app, ["handback", fay, "--channel", "chat2desk"], env=env
            )
            assert done.exit_code == 0, done.output
            (back,) = await drain_outbox(bot.namespace)  # type: ignore[attr-defined]
            check_comeback(back.text, back.route)
            again = await asyncio.to_thread(CliRunner().invoke, app, ["handback", fay], env=env)
            assert again.exit_code == 1 and "not with an operator" in again.output
            (next_step,) = await bot.say(fay, "0555 123 456")  # resumes at the step it left
            assert "bottles" in next_step["text"]
            return fay

    fay = asyncio.run(hand_off())
    if profile != "embedded":
        return
    done = CliRunner().invoke(app, ["handback", fay, "--channel", "chat2desk"], env=env)
    assert done.exit_code == 0, done.output

    async def after() -> dict[str, Any]:
        async with SqliteDatabase(settings.sqlite_path) as database:
            return (await EmbeddedBot(database).sent())[-1]

    back = asyncio.run(after())
    check_comeback(back["text"], back["route"])
    again = CliRunner().invoke(app, ["handback", fay], env=env)
    assert again.exit_code == 1 and "not with an operator" in again.output


async def _hand_off(bot: Bot) -> str:
    fay = bot.client("fay")
    await bot.say(fay, "Hello", "Chui avenue 120, apt 5")
    _, transfer = await bot.say(fay, "/operator")
    assert transfer["route"]["group_id"] == "3"
    return fay


def check_comeback(text: str, route: dict[str, str]) -> None:
    assert "operator has finished" in text and "phone" in text
    assert route == {"transport": "whatsapp", "channel_id": "3"}


def distributed_env(bot: Bot) -> dict[str, str]:
    """The environment that points the CLI at a distributed bot's namespace."""
    settings = bot.settings  # type: ignore[attr-defined]
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "QUEUE_PREFIX": settings.queue_prefix,
        "QUEUE_SHARDS": str(settings.queue_shards),
    }
