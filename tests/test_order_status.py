"""Status changes on the embedded store: history, one notification per change in the order's
language and channel (same transaction), refusals, and the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from orderbot import db
from orderbot.cli import app
from orderbot.config import Settings
from orderbot.dialog import DialogOptions, load_flow
from orderbot.order_admin import OrderNotFound, SqliteOrderAdmin
from orderbot.sqlite import SqliteDatabase
from orderbot.tracking import InvalidTransition, status_notification
from tests.test_worker import make_worker, message, run_until_idle

FLOW = load_flow("water")
DIALOG = ["Hello", "Chui avenue 120, apt 5", "0555 123 456", "3", "yes"]
runner = CliRunner()


async def place_order(database: SqliteDatabase, client: str = "42", prefix: str = "m") -> int:
    worker, queue = make_worker(database)
    for i, text in enumerate(DIALOG):
        await queue.put(message(client, f"{prefix}{i}", text))
    await run_until_idle(worker, queue, len(DIALOG))
    rows = await database.run(
        lambda c: c.execute("SELECT id FROM orders WHERE client_id = ?", (client,)).fetchall()
    )
    return int(rows[-1][0])


async def status_messages(database: SqliteDatabase) -> list[dict[str, Any]]:
    rows = await database.run(
        lambda c: c.execute(
            "SELECT key, payload FROM outbox WHERE key LIKE 'status:%' ORDER BY id"
        ).fetchall()
    )
    return [{"key": r[0], **orjson.loads(r[1])} for r in rows]


async def test_every_change_is_recorded_and_notified_in_the_customer_channel(
    database: SqliteDatabase,
) -> None:
    order_id = await place_order(database)
    admin = SqliteOrderAdmin(database, FLOW, DialogOptions())
    walk = ["confirmed", "in_progress", "ready", "delivered"]
    for status in walk:
        order = await admin.set_status(order_id, status, note=f"to {status}", actor="test")
        assert order["status"] == status

    notes = await status_messages(database)
    assert len(notes) == len(walk)
    history = (await admin.get(order_id))["history"]  # type: ignore[index]
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
        assert (note["channel"], note["client_id"]) == ("chat2desk", "42")
        assert note["route"] == {"transport": "whatsapp", "channel_id": "3"}


async def test_refused_changes_change_nothing(database: SqliteDatabase) -> None:
    order_id = await place_order(database)
    admin = SqliteOrderAdmin(database, FLOW, DialogOptions())
    with pytest.raises(InvalidTransition, match="cannot go from new to delivered"):
        await admin.set_status(order_id, "delivered")
    with pytest.raises(ValueError, match="unknown status"):
        await admin.set_status(order_id, "lost")
    with pytest.raises(OrderNotFound):
        await admin.set_status(order_id + 100, "confirmed")
    await admin.set_status(order_id, "cancelled")
    with pytest.raises(InvalidTransition, match="cancelled orders do not change status"):
        await admin.set_status(order_id, "confirmed")
    assert len(await status_messages(database)) == 1
    assert len((await admin.get(order_id))["history"]) == 1  # type: ignore[index]


def test_cli_set_status_and_show(settings: Settings) -> None:
    async def seed(path: Path) -> int:
        await db.upgrade_async(f"sqlite:///{path}")
        async with SqliteDatabase(path) as database:
            return await place_order(database)

    order_id = asyncio.run(seed(settings.sqlite_path))
    env = {"DATABASE_URL": settings.database_url}
    ok = runner.invoke(
        app, ["orders", "set-status", str(order_id), "confirmed", "--note", "paid"], env=env
    )
    assert ok.exit_code == 0, ok.output
    assert "new -> confirmed" in ok.output

    refused = runner.invoke(app, ["orders", "set-status", str(order_id), "delivered"], env=env)
    assert refused.exit_code == 3
    assert "cannot go from confirmed to delivered" in refused.output
    assert (
        runner.invoke(app, ["orders", "set-status", str(order_id), "lost"], env=env).exit_code == 2
    )
    assert runner.invoke(app, ["orders", "set-status", "999", "confirmed"], env=env).exit_code == 1

    shown = runner.invoke(app, ["orders", "show", str(order_id)], env=env)
    assert shown.exit_code == 0, shown.output
    assert "new -> confirmed  (paid)" in shown.output
    as_json = orjson.loads(
        runner.invoke(app, ["orders", "show", str(order_id), "--json"], env=env).output
    )
    assert [(h["from"], h["to"]) for h in as_json["history"]] == [("new", "confirmed")]
    assert as_json["status"] == "confirmed"
