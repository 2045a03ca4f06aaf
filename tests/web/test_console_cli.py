"""``orderbot operators``, ``orderbot stats`` and ``orderbot orders export`` on the embedded
profile (the same code runs on PostgreSQL: tests/test_console_store.py), with their exit codes."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from orderbot.cli import app
from orderbot.config import Settings
from orderbot.storage.sqlite import SqliteDatabase
from orderbot.web.console.accounts import OperatorAccounts
from orderbot.web.console.sql.sqlite import SqliteRunner

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        ["operators"],
        ["operators", "add"],
        ["operators", "list"],
        ["operators", "disable"],
        ["operators", "set-password"],
        ["stats"],
        ["orders", "export"],
    ],
    ids=" ".join,
)
def test_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


async def _authenticate(path: Path, name: str, password: str) -> bool:
    async with SqliteDatabase(path) as db:
        runner = SqliteRunner(db)
        try:
            return await OperatorAccounts(runner).authenticate(name, password) is not None
        finally:
            await runner.aclose()


def test_operators(settings: Settings) -> None:
    env = {"DATABASE_URL": settings.database_url}
    # The first account on a fresh install: the database is created and migrated.
    made = runner.invoke(
        app,
        ["operators", "add", "boss", "--role", "admin", "--password-stdin"],
        env=env,
        input="boss-password-1\n",
    )
    assert made.exit_code == 0, made.output
    assert "boss (admin)" in made.output
    assert asyncio.run(_authenticate(settings.sqlite_path, "boss", "boss-password-1"))

    prompted = runner.invoke(
        app, ["operators", "add", "timur"], env=env, input="timur-password-1\ntimur-password-1\n"
    )
    assert prompted.exit_code == 0, prompted.output
    assert "timur-password-1" not in prompted.output

    taken = runner.invoke(
        app, ["operators", "add", "boss", "--password-stdin"], env=env, input="another-password\n"
    )
    assert taken.exit_code == 3 and "exists" in taken.output
    short = runner.invoke(
        app, ["operators", "add", "aida", "--password-stdin"], env=env, input="short\n"
    )
    assert short.exit_code == 2 and "at least 10" in short.output
    role = runner.invoke(
        app,
        ["operators", "add", "aida", "--role", "root", "--password-stdin"],
        env=env,
        input="aida-password-1\n",
    )
    assert role.exit_code == 2
    empty = runner.invoke(app, ["operators", "add", "aida", "--password-stdin"], env=env, input="")
    assert empty.exit_code == 2

    listed = runner.invoke(app, ["operators", "list", "--json"], env=env)
    assert [(a["name"], a["role"], a["disabled"]) for a in orjson.loads(listed.output)] == [
        ("boss", "admin", False),
        ("timur", "operator", False),
    ]
    assert "$argon2" not in listed.output

    assert runner.invoke(app, ["operators", "disable", "timur"], env=env).exit_code == 0
    assert not asyncio.run(_authenticate(settings.sqlite_path, "timur", "timur-password-1"))
    assert runner.invoke(app, ["operators", "disable", "ghost"], env=env).exit_code == 1
    assert runner.invoke(app, ["operators", "enable", "timur"], env=env).exit_code == 0

    changed = runner.invoke(
        app,
        ["operators", "set-password", "timur", "--password-stdin"],
        env=env,
        input="timur-password-2\n",
    )
    assert changed.exit_code == 0, changed.output
    assert asyncio.run(_authenticate(settings.sqlite_path, "timur", "timur-password-2"))
    assert (
        runner.invoke(
            app,
            ["operators", "set-password", "ghost", "--password-stdin"],
            env=env,
            input="ghost-password-1\n",
        ).exit_code
        == 1
    )


def test_stats_and_export(settings: Settings) -> None:
    env = {"DATABASE_URL": settings.database_url}
    missing = runner.invoke(app, ["stats"], env=env)
    assert missing.exit_code == 1 and "no database" in missing.output
    runner.invoke(
        app,
        ["operators", "add", "boss", "--role", "admin", "--password-stdin"],
        env=env,
        input="boss-password-1\n",
    )

    found = runner.invoke(app, ["stats", "--since", "30d", "--json"], env=env)
    assert found.exit_code == 0, found.output
    numbers = orjson.loads(found.output)
    assert numbers["orders"] == 0 and len(numbers["orders_per_day"]) in (30, 31)
    assert runner.invoke(app, ["stats"], env=env).exit_code == 0
    assert runner.invoke(app, ["stats", "--since", "soon"], env=env).exit_code == 2

    out = settings.sqlite_path.parent / "orders.csv"
    exported = runner.invoke(
        app,
        ["orders", "export", "--from", "2026-01-01", "--status", "new", "-o", str(out)],
        env=env,
    )
    assert exported.exit_code == 0, exported.output
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert next(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))[0] == "order_id"
    assert runner.invoke(app, ["orders", "export", "--status", "lost"], env=env).exit_code == 2
    assert runner.invoke(app, ["orders", "export", "--from", "01.12.2026"], env=env).exit_code == 2
    assert runner.invoke(app, ["orders", "export", "--format", "xlsx"], env=env).exit_code == 2
