"""The command line: every command has --help, bad input is one line and an exit code."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from orderbot.cli import app
from orderbot.config import Settings
from orderbot.messages import OutboundMessage
from orderbot.orders.models import OrderRecord
from orderbot.queues.sqlite import SqliteInboundQueue, SqliteOutbox
from orderbot.state.base import StepCommit
from orderbot.state.sqlite import SqliteStepStore
from orderbot.storage import sql as db
from orderbot.storage.sqlite import SqliteDatabase
from tests.test_sqlite_queues import inbound

runner = CliRunner()

COMMANDS = [
    [],
    ["run"],
    ["chat"],
    ["orders"],
    ["orders", "list"],
    ["orders", "show"],
    ["dlq"],
    ["dlq", "list"],
    ["dlq", "replay"],
    ["dlq", "purge"],
    ["chat2desk"],
    ["chat2desk", "set-webhook"],
    ["chat2desk", "info"],
    ["db"],
    ["db", "upgrade"],
    ["flow"],
    ["flow", "check"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "orderbot")
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    return subprocess.run(
        [sys.executable, "-m", "orderbot", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"DEFAULT_PHONE_REGION": "Kyrgyzstan"}, "DEFAULT_PHONE_REGION"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "orderbot.db"}, "DATABASE_URL"),
        # A URL without its scheme.
        ({"CHAT2DESK_API_URL": "api.chat2desk.com/v1"}, "CHAT2DESK_API_URL"),
        ({"TELEGRAM_API_URL": "api.telegram.org"}, "TELEGRAM_API_URL"),
        ({"ORDER_WEBHOOK_URL": "shop.example/orders"}, "ORDER_WEBHOOK_URL"),
        ({"REDIS_URL": "127.0.0.1:6379"}, "REDIS_URL"),
        ({"RABBITMQ_URL": "guest:guest@127.0.0.1:5672/"}, "RABBITMQ_URL"),
        ({"CHAT2DESK_API_URL": "https://api.chat2desk.com/ v1"}, "CHAT2DESK_API_URL"),
        # Telegram chats with no bot to write to them.
        ({"ADMIN_CHAT_IDS": "12345"}, "ADMIN_CHAT_IDS"),
        ({"OPERATOR_CHAT_ID": "-100123"}, "OPERATOR_CHAT_ID"),
    ],
)
def test_bad_setting_is_one_line_naming_it(tmp_path: Path, env: dict[str, str], name: str) -> None:
    result = cli("orders", "list", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and name in lines[0]


def test_a_url_setting_names_neither_its_value_nor_a_password(tmp_path: Path) -> None:
    result = cli(
        "orders", "list", env={"RABBITMQ_URL": "guest:hunter2@127.0.0.1:5672/"}, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "RABBITMQ_URL" in result.stderr and "amqp://" in result.stderr
    assert "hunter2" not in result.stderr


def test_telegram_chats_with_the_bot_token_and_urls_with_schemes_are_fine(tmp_path: Path) -> None:
    env = {
        "ADMIN_CHAT_IDS": "12345,-100999",
        "OPERATOR_CHAT_ID": "-100123",
        "TELEGRAM_BOT_TOKEN": "123:abc",
        "ORDER_WEBHOOK_URL": "https://shop.example/orders",
        "REDIS_URL": "unix:///run/redis.sock",
        "CHAT2DESK_API_URL": "http://127.0.0.1:8080/v1",
    }
    result = cli("db", "upgrade", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["run", "serve", "worker", "sender", "db"])
def test_a_port_that_is_no_number_stops_every_command_naming_port(
    tmp_path: Path, command: str
) -> None:
    # `orderbot run` once got as far as its migration child and said "database migration
    # failed"; every command reads the settings first.
    args = ["db", "upgrade"] if command == "db" else [command]
    result = cli(*args, env={"PORT": "abc"}, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "PORT" in lines[0], lines
    assert "migration" not in result.stderr
    assert not (tmp_path / "orderbot.db").exists()


@pytest.mark.parametrize("command", ["serve", "worker", "sender"])
def test_distributed_commands_without_their_settings_say_what_is_missing(
    tmp_path: Path, command: str
) -> None:
    result = cli(command, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "RABBITMQ_URL" in result.stderr and "REDIS_URL" in result.stderr


def test_missing_distributed_packages_are_one_line_with_the_install_command(
    tmp_path: Path,
) -> None:
    # As on an install without the "distributed" extra: redis cannot be found.
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'redis' else real(n, *a)\n"
        "sys.argv = ['orderbot', 'worker']\n"
        "from orderbot.cli import main\n"
        "main()\n"
    )
    env = {
        "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:9/",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "DATABASE_URL": "postgresql://x@127.0.0.1:9/x",
    }
    clean = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "missing: redis" in result.stderr and "orderbot[distributed]" in result.stderr


def test_missing_token_and_bad_flow_are_clear(tmp_path: Path) -> None:
    result = cli("chat2desk", "info", cwd=tmp_path)
    assert result.returncode == 2
    assert "CHAT2DESK_API_TOKEN" in result.stderr and "Traceback" not in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps: [1, 2\n")
    result = cli("flow", "check", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    ok = cli("flow", "check", "water", cwd=tmp_path)
    assert ok.returncode == 0 and "WAITING_ADDRESS" in ok.stdout
    missing = cli("orders", "list", cwd=tmp_path)
    assert missing.returncode == 1 and "no database" in missing.stderr


def test_chat2desk_api_unreachable_is_one_line(tmp_path: Path) -> None:
    env = {
        "CHAT2DESK_API_TOKEN": "t",
        "CHAT2DESK_API_URL": "http://127.0.0.1:9/v1",
        "CHAT2DESK_TIMEOUT": "2",
    }
    result = cli("chat2desk", "info", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


async def _seed(path: Path) -> int:
    await db.upgrade_async(f"sqlite:///{path}")
    async with SqliteDatabase(path) as database:
        queue = SqliteInboundQueue(database)
        store = SqliteStepStore(database)
        await queue.put(inbound("12568", "m1"))
        await queue.put(inbound("12569", "m2"))
        first, second = await queue.fetch(2)
        order_id = await store.commit_step(
            StepCommit(
                delivery=first,
                state=None,
                state_name="-",
                replies=(
                    OutboundMessage(
                        key="r1", channel="chat2desk", client_id="12568", text="№{order_id}"
                    ),
                ),
                order=OrderRecord(
                    idempotency_key="chat2desk:12568:m1",
                    channel="chat2desk",
                    client_id="12568",
                    source="whatsapp",
                    phone="+996555123456",
                    address="ул. Киевская 120",
                    quantity=2,
                    language="ru",
                ),
            )
        )
        await store.commit_step(
            StepCommit(
                delivery=second,
                state=None,
                state_name="-",
                replies=(
                    OutboundMessage(key="r2", channel="chat2desk", client_id="12569", text="x"),
                ),
            )
        )
        outbox = SqliteOutbox(database)
        item = next(i for i in await outbox.claim(5, set()) if i.message.key == "r2")
        await outbox.dead_letter(item.handle, 50, "ServerError: HTTP 500")
        assert order_id is not None
        return order_id


def test_orders_and_dead_letters(settings: Settings) -> None:
    order_id = asyncio.run(_seed(settings.sqlite_path))
    env = {"DATABASE_URL": settings.database_url}

    listed = runner.invoke(app, ["orders", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    (order,) = orjson.loads(listed.output)
    for key in (
        "id",
        "client_id",
        "channel",
        "phone",
        "address",
        "quantity",
        "status",
        "language",
        "created_at",
    ):
        assert key in order
    assert (order["id"], order["phone"], order["quantity"], order["status"]) == (
        order_id,
        "+996555123456",
        2,
        "new",
    )
    assert (
        orjson.loads(
            runner.invoke(
                app, ["orders", "list", "--json", "--status", "delivered"], env=env
            ).output
        )
        == []
    )
    table = runner.invoke(app, ["orders", "list"], env=env)
    assert "ул. Киевская 120" in table.output
    shown = runner.invoke(app, ["orders", "show", str(order_id), "--json"], env=env)
    assert orjson.loads(shown.output)["address"] == "ул. Киевская 120"
    missing = runner.invoke(app, ["orders", "show", "999"], env=env)
    assert missing.exit_code == 1

    letters = runner.invoke(app, ["dlq", "list", "--json"], env=env)
    (letter,) = orjson.loads(letters.output)
    assert (letter["key"], letter["last_error"], letter["attempts"]) == (
        "r2",
        "ServerError: HTTP 500",
        50,
    )
    assert letter["text"] == "x"  # what the customer did not get
    listed = runner.invoke(app, ["dlq", "list"], env=env).output
    assert "ServerError" in listed and listed.splitlines()[1].strip() == "x"
    assert runner.invoke(app, ["dlq", "replay"], env=env).exit_code == 2
    replayed = runner.invoke(app, ["dlq", "replay", str(letter["id"])], env=env)
    assert "replayed 1" in replayed.output
    assert orjson.loads(runner.invoke(app, ["dlq", "list", "--json"], env=env).output) == []
    assert "purged 0" in runner.invoke(app, ["dlq", "purge", "--yes"], env=env).output


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    result = runner.invoke(app, ["db", "upgrade"], env={"DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sub" / "x.db").exists()
    again = runner.invoke(app, ["db", "upgrade"], env={"DATABASE_URL": url})
    assert again.exit_code == 0


def test_chat_talks_through_the_engine(settings: Settings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orderbot", "chat", "--client", "ann"],
        input="Hello\nChui avenue 120, apt 5\n0555 123 456\n2\nyes\n",
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": settings.database_url},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "address" in result.stdout.lower()
    assert "1. " in result.stdout  # yes/no buttons as numbered text
    env = {"DATABASE_URL": settings.database_url}
    (order,) = orjson.loads(runner.invoke(app, ["orders", "list", "--json"], env=env).output)
    assert (order["channel"], order["client_id"], order["phone"], order["quantity"]) == (
        "local",
        "ann",
        "+996555123456",
        2,
    )
    assert f"{order['id']}" in result.stdout


def test_the_server_process_does_not_load_alembic_or_sqlalchemy() -> None:
    # ~30 MB of RSS the embedded server never uses: migrations run in a child process.
    code = (
        "import sys, orderbot.cli, orderbot.runtime.embedded, orderbot.web.app; "
        "print(sorted(m for m in ('sqlalchemy', 'alembic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_head_revision_matches_alembic(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(db.alembic_config(f"sqlite:///{tmp_path / 'x.db'}"))
    assert db.head_revision() == script.get_current_head()
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert db.schema_is_current(url) is False
    db.upgrade(url)
    assert db.schema_is_current(url) is True


def test_postgresql_without_asyncpg_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from orderbot.errors import ConfigError
    from orderbot.storage import sql as db

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "asyncpg" else real(n, *a)
    )
    with pytest.raises(ConfigError, match=r"needs asyncpg: pip install 'orderbot\[distributed\]'"):
        db.create_engine("postgresql://x@127.0.0.1:9/x")


def test_chat2desk_set_webhook_is_idempotent_and_info_shows_the_hooks(tmp_path: Path) -> None:
    from tests.fakes.chat2desk import ThreadedFakeChat2Desk

    with ThreadedFakeChat2Desk(token="t") as fake:
        env = {"CHAT2DESK_API_TOKEN": "t", "CHAT2DESK_API_URL": fake.url}
        url = "https://bot.example/webhook/chat2desk/"
        first = cli("chat2desk", "set-webhook", url + "s1", env=env, cwd=tmp_path)
        again = cli("chat2desk", "set-webhook", url + "s1", env=env, cwd=tmp_path)
        moved = cli("chat2desk", "set-webhook", url + "s2", env=env, cwd=tmp_path)
        assert [json.loads(r.stdout)["action"] for r in (first, again, moved)] == [
            "created",
            "unchanged",
            "updated",
        ]
        fake.control({"disable_webhook": "timeout"})
        info = json.loads(cli("chat2desk", "info", env=env, cwd=tmp_path).stdout)
    assert len(info["webhooks"]) == 1 and info["webhooks"][0]["url"].endswith("/s2")
    assert info["orderbot_webhook"]["state"] == "disabled"
    assert info["orderbot_webhook"]["errors"] == ["timeout"]
    assert "requests_limit" in info["data"]


def command_paths() -> list[list[str]]:
    """Every command and group of ``orderbot``, as the words that name it."""
    import typer

    found: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        found.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_help_shows_flags_without_type_noise() -> None:
    import typer

    root = typer.main.get_command(app)
    checked = 0
    for path in command_paths():
        command = root
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output and "BOOLEAN" not in result.output, path
        assert "range>" not in result.output, path  # a count reads N, its range in the help
        for param in command.params:
            if getattr(param, "is_flag", False):
                for line in result.output.splitlines():
                    if line.strip().startswith(param.opts[0] + " "):
                        assert "<" not in line.split("  ")[1], (path, line)
                        checked += 1
    assert checked >= 10  # --help of every command, --json, --version, --tell, ...
    # Help text in brackets is shown as written (rich markup once swallowed it).
    assert "[env PORT, 3000]" in CliRunner().invoke(app, ["run", "--help"]).output


# 2026-12-07 12:05 UTC is 18:05 in Asia/Bishkek (UTC+6) and 15:05 in Europe/Moscow.
_NOON = 1796645100.0


async def _seed_printing_order(path: Path) -> int:
    """A 3D-printing order (a catalog service, options, a total, the customer's name) with a
    conversation in the message log: the customer's message and the bot's reply."""
    from orderbot.orders.models import OrderItem

    await db.upgrade_async(f"sqlite:///{path}")
    async with SqliteDatabase(path) as database:
        queue = SqliteInboundQueue(database)
        await queue.put(inbound("9100", "m1", text="Хочу напечатать деталь", channel="telegram"))
        (delivery,) = await queue.fetch(1)
        order_id = await SqliteStepStore(database).commit_step(
            StepCommit(
                delivery=delivery,
                state=None,
                state_name="-",
                replies=(),
                order=OrderRecord(
                    idempotency_key="telegram:9100:m1",
                    channel="telegram",
                    client_id="9100",
                    source="dialog",
                    phone="+996555123456",
                    address=None,
                    quantity=None,
                    language="ru",
                    data={
                        "name": "Айда",
                        "material": "PETG",
                        "layer_height": "0.2 mm",
                        "infill": "20%",
                        "delivery": "pickup",
                    },
                    items=(OrderItem("fdm", "FDM printing", 2, "450.00"),),
                    total="900.00",
                    currency="KGS",
                ),
            )
        )
    assert order_id is not None
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE orders SET created_at = ?", (_NOON,))
        conn.execute("UPDATE message_logs SET created_at = ?", (_NOON,))
        conn.execute(
            "INSERT INTO message_logs (direction, channel, client_id, message_key, text, success,"
            " error, created_at) VALUES ('out', 'telegram', '9100', 'r1', ?, 1, NULL, ?)",
            (f"Заказ №{order_id} принят", _NOON + 60),
        )
    return order_id


def test_orders_list_reads_well_for_a_printing_order(settings: Settings) -> None:
    asyncio.run(_seed_printing_order(settings.sqlite_path))
    env = {"DATABASE_URL": settings.database_url}
    result = runner.invoke(app, ["orders", "list"], env=env)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "QTY" not in text and " - " not in text
    assert "times in Asia/Bishkek" in text
    assert "2026-12-07 18:05" in text  # the shop's time, not UTC
    assert "Айда, +996555123456" in text  # the name
    assert "FDM printing × 2; PETG, 0.2 mm, 20%, pickup  (total 900.00 KGS)" in text
    moscow = runner.invoke(app, ["orders", "list"], env={**env, "SHOP_TIMEZONE": "Europe/Moscow"})
    assert "2026-12-07 15:05" in moscow.output


def test_orders_show_prints_the_order_and_the_conversation(settings: Settings) -> None:
    order_id = asyncio.run(_seed_printing_order(settings.sqlite_path))
    env = {"DATABASE_URL": settings.database_url}
    result = runner.invoke(app, ["orders", "show", str(order_id)], env=env)
    assert result.exit_code == 0, result.output
    lines = [line.rstrip() for line in result.output.splitlines()]
    assert lines[0] == f"Order #{order_id}  new"
    assert "Placed:       2026-12-07 18:05 (Asia/Bishkek)" in lines
    assert "Customer:     Айда, +996555123456" in lines
    assert "Item:         FDM printing × 2 @ 450.00 = 900.00" in lines
    assert "Material:     PETG" in lines
    assert "Layer height: 0.2 mm" in lines
    assert "Total:        900.00 KGS" in lines
    # The conversation, both directions, in order, at the shop's time.
    start = lines.index("Conversation:")
    assert lines[start + 1 :] == [
        "  2026-12-07 18:05  customer:     Хочу напечатать деталь",
        f"  2026-12-07 18:06  bot:          Заказ №{order_id} принят",
    ]
    shown = orjson.loads(
        runner.invoke(app, ["orders", "show", str(order_id), "--json"], env=env).output
    )
    assert [(m["from"], m["text"]) for m in shown["conversation"]] == [
        ("customer", "Хочу напечатать деталь"),
        ("bot", f"Заказ №{order_id} принят"),
    ]
    assert shown["total"] == "900.00" and shown["items"][0]["name"] == "FDM printing"
