"""Status changes on both profiles: history, one notification per change in the order's
language and channel, refusals, and the CLI. (Distributed: RabbitMQ + Redis + PostgreSQL,
skipped when those are down.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from orderbot.cli import app
from orderbot.config import Settings
from orderbot.desk.base import OrderNotFound
from orderbot.desk.texts import status_notification
from orderbot.orders.status import InvalidTransition
from orderbot.storage import sql as db
from orderbot.storage.sqlite import SqliteDatabase
from tests.desk.test_handoff import distributed_env
from tests.support.desk_bots import FLOW, PROFILES, Bot, EmbeddedBot, drain_outbox, open_bot

DIALOG = ["Hello", "Chui avenue 120, apt 5", "0555 123 456", "3", "yes"]
runner = CliRunner()


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def place_order(bot: Bot, name: str = "42") -> tuple[str, int]:
    client = bot.client(name)
    await bot.say(client, *DIALOG)
    return client, (await bot.order_ids(client))[-1]


async def status_messages(bot: Bot) -> list[dict[str, Any]]:
    return [e for e in await bot.sent() if e["key"].startswith("status:")]


async def test_every_change_is_recorded_and_notified_in_the_customer_channel(
    profile: str, tmp_path: Path
) -> None:
    async with open_bot(profile, tmp_path) as bot:
        client, order_id = await place_order(bot)
        walk = ["confirmed", "in_progress", "ready", "delivered"]
        for status in walk:
            order = await bot.admin.set_status(order_id, status, note=f"to {status}", actor="test")
            assert order["status"] == status

        notes = await status_messages(bot)
        assert len(notes) == len(walk)
        history = (await bot.admin.get(order_id))["history"]  # type: ignore[index]
        assert [(h["from"], h["to"], h["note"], h["actor"]) for h in history] == [
            ("new", "confirmed", "to confirmed", "test"),
            ("confirmed", "in_progress", "to in_progress", "test"),
            ("in_progress", "ready", "to ready", "test"),
            ("ready", "delivered", "to delivered", "test"),
        ]
        for note, entry, status in zip(notes, history, walk, strict=True):
            assert note["key"] == f"status:{order_id}:{entry['id']}"
            # The customer wrote in English: the flow's English text, to their chat and route.
            assert note["text"] == status_notification(FLOW, status, "en", order_id=order_id)
            assert (note["channel"], note["client_id"]) == ("chat2desk", client)
            assert note["route"] == {"transport": "whatsapp", "channel_id": "3"}
        listed = await bot.admin.list(status="delivered", limit=500)
        assert order_id in [o["id"] for o in listed]


async def test_a_jump_to_a_later_status_is_one_change_told_once(
    profile: str, tmp_path: Path
) -> None:
    async with open_bot(profile, tmp_path) as bot:
        _, order_id = await place_order(bot)
        order = await bot.admin.set_status(order_id, "delivered", actor="olga")
        assert order["status"] == "delivered"
        assert [(h["from"], h["to"]) for h in order["history"]] == [("new", "delivered")]
        (note,) = await status_messages(bot)
        assert note["text"] == status_notification(FLOW, "delivered", "en", order_id=order_id)


async def test_a_note_for_the_customer_is_in_the_message_an_internal_one_is_not(
    profile: str, tmp_path: Path
) -> None:
    async with open_bot(profile, tmp_path) as bot:
        _, order_id = await place_order(bot)
        await bot.admin.set_status(order_id, "confirmed", note="paid by card")
        order = await bot.admin.set_status(
            order_id, "cancelled", note="Out of stock until Monday", note_public=True
        )
        assert [(h["note"], h["note_public"]) for h in order["history"]] == [
            ("paid by card", False),
            ("Out of stock until Monday", True),
        ]
        confirmed, cancelled = await status_messages(bot)
        assert confirmed["text"] == status_notification(FLOW, "confirmed", "en", order_id=order_id)
        assert "paid by card" not in confirmed["text"]
        assert cancelled["text"] == (
            status_notification(FLOW, "cancelled", "en", order_id=order_id)
            + "\nOut of stock until Monday"
        )


async def test_refused_changes_change_nothing(profile: str, tmp_path: Path) -> None:
    async with open_bot(profile, tmp_path) as bot:
        _, order_id = await place_order(bot)
        admin = bot.admin
        with pytest.raises(InvalidTransition, match="already new"):
            await admin.set_status(order_id, "new")
        with pytest.raises(ValueError, match="unknown status"):
            await admin.set_status(order_id, "lost")
        with pytest.raises(OrderNotFound):
            await admin.set_status(order_id + 10_000_000, "confirmed")
        await admin.set_status(order_id, "cancelled")
        with pytest.raises(InvalidTransition, match="cancelled orders do not change status"):
            await admin.set_status(order_id, "confirmed")
        assert len(await status_messages(bot)) == 1
        assert len((await admin.get(order_id))["history"]) == 1  # type: ignore[index]


def test_cli_set_status_and_show(settings: Settings, profile: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": settings.database_url}

    def check(order_id: int, missing: int) -> None:
        ok = runner.invoke(
            app, ["orders", "set-status", str(order_id), "confirmed", "--note", "paid"], env=env
        )
        assert ok.exit_code == 0, ok.output
        assert "new -> confirmed" in ok.output

        refused = runner.invoke(app, ["orders", "set-status", str(order_id), "new"], env=env)
        assert refused.exit_code == 3
        assert "cannot go from confirmed to new" in refused.output
        lost = runner.invoke(app, ["orders", "set-status", str(order_id), "lost"], env=env)
        assert lost.exit_code == 2
        nothing = runner.invoke(app, ["orders", "set-status", str(missing), "confirmed"], env=env)
        assert nothing.exit_code == 1

        shown = runner.invoke(app, ["orders", "show", str(order_id)], env=env)
        assert shown.exit_code == 0, shown.output
        assert "new -> confirmed  (paid)" in shown.output
        as_json = orjson.loads(
            runner.invoke(app, ["orders", "show", str(order_id), "--json"], env=env).output
        )
        assert [(h["from"], h["to"]) for h in as_json["history"]] == [("new", "confirmed")]
        assert as_json["status"] == "confirmed"
        listed = runner.invoke(
            app, ["orders", "list", "--status", "confirmed", "--limit", "10000", "--json"], env=env
        )
        assert order_id in [o["id"] for o in orjson.loads(listed.output)]

    async def seed() -> None:
        if profile == "embedded":
            await db.upgrade_async(settings.database_url)
            async with SqliteDatabase(settings.sqlite_path) as database:
                await place_order(EmbeddedBot(database))
            return
        async with open_bot(profile, tmp_path) as bot:
            env.update(distributed_env(bot))
            client, order_id = await place_order(bot)
            await drain_outbox(bot.namespace)  # type: ignore[attr-defined]
            await asyncio.to_thread(check, order_id, order_id + 10_000_000)
            (note,) = await drain_outbox(bot.namespace)  # type: ignore[attr-defined]
            assert note.key.startswith(f"status:{order_id}:") and note.client_id == client
            assert note.text == status_notification(FLOW, "confirmed", "en", order_id=order_id)

    asyncio.run(seed())
    if profile == "embedded":
        check(1, 999)
