"""The console's storage on both databases: accounts (argon2id), sessions and their timeouts,
the login throttle, the board's search, numbers and the CSV export. The same cases run on the
embedded SQLite file and on PostgreSQL (skipped when it is not reachable), after the real
Alembic migrations."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from orderbot.dialog.loader import load_flow
from orderbot.storage import sql as db
from orderbot.storage.sqlite import SqliteDatabase
from orderbot.web.console.accounts import AccountError, OperatorAccounts
from orderbot.web.console.board import BoardFilter, OrderBoard
from orderbot.web.console.export import ExportFilter, export_csv
from orderbot.web.console.sessions import ConsoleSessions, LoginThrottle
from orderbot.web.console.shoptime import ShopTime
from orderbot.web.console.sql.base import SqlRunner
from orderbot.web.console.sql.sqlite import SqliteRunner
from orderbot.web.console.stats import parse_period, read_stats
from tests.conftest import require_service

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
DAY = 86400.0
T0 = 1_796_000_000.0  # a fixed "now" in December 2026


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
async def runner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlRunner]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'console.db'}"
        await db.upgrade_async(url)
        async with SqliteDatabase(tmp_path / "console.db") as database:
            found = SqliteRunner(database)
            yield found
            await found.aclose()
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    from sqlalchemy import text

    from orderbot.web.console.sql.postgres import PostgresRunner

    # A database of its own: the migrations and rows of this test touch nobody else's.
    name = f"console_{uuid.uuid4().hex[:12]}"
    admin = db.create_engine(PG_ADMIN_URL)
    async with admin.connect() as conn:
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
            text(f'CREATE DATABASE "{name}"')
        )
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        await db.upgrade_async(url)
        found = PostgresRunner(db.create_engine(url), owned=True)
        try:
            yield found
        finally:
            await found.aclose()
    finally:
        async with admin.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
                text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            )
        await admin.dispose()


async def add_order(
    runner: SqlRunner,
    *,
    created: float,
    status: str = "new",
    phone: str = "+996555123456",
    address: str = "Chui 1",
    client: str = "c1",
    items: list[tuple[str, int, str]] | None = None,
) -> int:
    total = sum(int(q) * float(p) for _, q, p in items) if items else None
    (row,) = await runner.execute(
        "INSERT INTO orders (idempotency_key, client_id, channel, source, phone, address,"
        " quantity, status, language, data, created_at, updated_at, total, currency, route)"
        " VALUES (:key, :client, 'chat2desk', '', :phone, :address, :qty, :status, 'ru', :data,"
        " :created, :created, :total, :currency, '{}') RETURNING id",
        {
            "key": uuid.uuid4().hex,
            "client": client,
            "phone": phone,
            "address": address,
            "qty": None if items else 2,
            "status": status,
            "data": orjson.dumps({"name": "Айгуль", "address": address}).decode(),
            "created": created,
            "total": total,
            "currency": "KGS" if items else None,
        },
    )
    order_id = int(row[0])
    for position, (name, qty, price) in enumerate(items or []):
        await runner.execute(
            "INSERT INTO order_items (order_id, position, item_id, name, quantity, unit,"
            " unit_price, amount) VALUES (:o, :p, :i, :n, :q, 'pcs', :price, :amount)",
            {
                "o": order_id,
                "p": position,
                "i": f"item{position}",
                "n": name,
                "q": qty,
                "price": float(price),
                "amount": float(price) * qty,
            },
        )
    return order_id


async def test_accounts(runner: SqlRunner) -> None:
    accounts = OperatorAccounts(runner)
    boss = await accounts.add("boss", "admin", "a-long-password")
    assert boss.is_admin and not boss.disabled
    with pytest.raises(AccountError) as taken:
        await accounts.add("boss", "operator", "another-password")
    assert taken.value.code == "exists"
    for name, role, password in (
        ("", "admin", "x" * 12),
        ("a b", "admin", "x" * 12),
        ("ok", "root", "x" * 12),
        ("ok", "admin", "short"),
    ):
        with pytest.raises(AccountError):
            await accounts.add(name, role, password)
    rows = await runner.fetch("SELECT password_hash FROM operators WHERE name = 'boss'")
    assert str(rows[0][0]).startswith("$argon2id$")
    assert await accounts.authenticate("boss", "a-long-password") == boss
    assert await accounts.authenticate("boss", "wrong-password") is None
    assert await accounts.authenticate("ghost", "a-long-password") is None

    await accounts.set_password("boss", "a-new-password-2")
    assert await accounts.authenticate("boss", "a-long-password") is None
    assert await accounts.authenticate("boss", "a-new-password-2") is not None
    await accounts.set_disabled("boss")
    assert await accounts.authenticate("boss", "a-new-password-2") is None
    with pytest.raises(AccountError):
        await accounts.set_password("ghost", "a-new-password-2")
    assert [a.name for a in await accounts.all_accounts()] == ["boss"]


async def test_sessions_time_out_and_end(runner: SqlRunner) -> None:
    clock = Clock()
    accounts = OperatorAccounts(runner, clock=clock)
    olga = await accounts.add("olga", "operator", "olga-password-1")
    sessions = ConsoleSessions(runner, idle_timeout=600, lifetime=3600, clock=clock)
    token, session = await sessions.create(olga, "10.0.0.1")
    rows = await runner.fetch("SELECT token_hash FROM console_sessions")
    assert rows == [(session.token_hash,)] and token not in str(rows)  # only its hash is kept
    loaded = await sessions.load(token)
    assert loaded is not None and loaded.operator.name == "olga"
    assert loaded.csrf_token == session.csrf_token
    assert await sessions.load("forged-token") is None

    # Idle: each request within the idle timeout keeps it, until the absolute lifetime.
    for _ in range(5):
        clock.now += 500
        assert await sessions.load(token) is not None
    clock.now += 500  # 3000 s in: still alive
    assert await sessions.load(token) is not None
    clock.now += 601  # idle too long
    assert await sessions.load(token) is None

    token, _ = await sessions.create(olga, "10.0.0.1")
    for _ in range(8):
        clock.now += 500
    assert await sessions.load(token) is None  # over the lifetime although never idle long

    token, session = await sessions.create(olga, "10.0.0.1")
    await sessions.end(session.token_hash)
    assert await sessions.load(token) is None

    token, _ = await sessions.create(olga, "10.0.0.1")
    await accounts.set_password("olga", "olga-password-2")
    assert await sessions.load(token) is None


async def test_login_throttle(runner: SqlRunner) -> None:
    clock = Clock()
    throttle = LoginThrottle(runner, per_account=3, per_address=5, window=600, clock=clock)
    for _ in range(3):
        assert await throttle.retry_after("olga", "1.1.1.1") is None
        await throttle.failed("olga", "1.1.1.1")
    wait = await throttle.retry_after("olga", "2.2.2.2")  # another address: the account counts
    assert wait is not None and 590 <= wait <= 600
    assert await throttle.retry_after("timur", "2.2.2.2") is None
    for name in ("a", "b"):
        await throttle.failed(name, "1.1.1.1")
    assert await throttle.retry_after("timur", "1.1.1.1") is not None  # the address counts
    clock.now += 601
    assert await throttle.retry_after("olga", "1.1.1.1") is None
    await throttle.failed("olga", "3.3.3.3")
    await throttle.succeeded("olga")
    assert await runner.fetch("SELECT scope FROM login_failures WHERE scope = 'account:olga'") == []


async def test_board_search_and_filters(runner: SqlRunner) -> None:
    board = OrderBoard(runner)
    old = await add_order(runner, created=T0 - 3 * DAY, address="Киевская 120", status="delivered")
    new = await add_order(
        runner, created=T0, phone="+996700111222", client="c2", items=[("Печать PLA", 2, "900.00")]
    )
    assert [r.id for r in await board.orders(BoardFilter())] == [new, old]
    assert [r.id for r in await board.orders(BoardFilter(status="delivered"))] == [old]
    assert [r.id for r in await board.orders(BoardFilter(query="0700 111-222"))] == [new]
    assert [r.id for r in await board.orders(BoardFilter(query="киевская"))] == [old]
    assert [r.id for r in await board.orders(BoardFilter(query=f"#{old}"))] == [old]
    assert [r.id for r in await board.orders(BoardFilter(query="100%_"))] == []
    assert [r.id for r in await board.orders(BoardFilter(since=T0 - DAY))] == [new]
    assert [r.id for r in await board.orders(BoardFilter(until=T0 - DAY))] == [old]
    assert [r.id for r in await board.orders(BoardFilter(before=new))] == [old]
    (row,) = await board.orders_after(old)
    assert row.id == new and row.items == ("Печать PLA × 2",) and str(row.total) == "1800.00"
    assert row.name == "Айгуль"
    assert await board.newest_id() == new
    assert await board.open_counts() == {"new": 1}
    assert await board.add_note(new, "olga", "call first", T0)
    assert not await board.add_note(999_999, "olga", "nobody", T0)
    assert [(n.author, n.text) for n in await board.notes(new)] == [("olga", "call first")]


async def test_stats(runner: SqlRunner) -> None:
    flow = load_flow("water")
    shop = ShopTime("Asia/Bishkek")
    outcomes = [
        ("completed", "WAITING_CONFIRMATION", 300.0),
        ("completed", "WAITING_CONFIRMATION", 500.0),
        ("completed", "WAITING_CONFIRMATION", 700.0),
        ("abandoned", "WAITING_PHONE", 60.0),
        ("cancelled", "WAITING_ADDRESS", 10.0),
        ("cancelled", "DECLINED", 200.0),
    ]
    for i, (outcome, step, duration) in enumerate(outcomes):
        await runner.execute(
            "INSERT INTO dialog_outcomes (channel, client_id, outcome, last_step, message_count,"
            " duration_seconds, started_at, ended_at) VALUES ('chat2desk', :c, :o, :s, 5, :d,"
            " :start, :end)",
            {
                "c": f"c{i}",
                "o": outcome,
                "s": step,
                "d": duration,
                "start": T0 - DAY,
                "end": T0 - DAY + duration,
            },
        )
    # Long ago: outside the period.
    await runner.execute(
        "INSERT INTO dialog_outcomes (channel, client_id, outcome, last_step, message_count,"
        " duration_seconds, started_at, ended_at) VALUES ('chat2desk', 'x', 'abandoned',"
        " 'WAITING_PHONE', 1, 1, :t, :t)",
        {"t": T0 - 30 * DAY},
    )
    for created in (T0 - DAY, T0 - DAY + 10, T0 - 2 * DAY):
        await add_order(runner, created=created)
    found = await read_stats(runner, flow, shop, since=T0 - parse_period("7d"), until=T0)
    assert (found.conversations, found.completed, found.cancelled, found.abandoned) == (6, 3, 2, 1)
    assert found.orders == 3 and found.conversion == 0.5
    assert found.median_seconds_to_order == 500.0
    steps = {s.step: s for s in found.steps}
    assert steps["WAITING_ADDRESS"].reached == 6 and steps["WAITING_ADDRESS"].cancelled == 1
    assert steps["WAITING_PHONE"].reached == 5 and steps["WAITING_PHONE"].abandoned == 1
    # The "no" at the confirmation ends at DECLINED and is counted at the confirmation.
    assert steps["WAITING_CONFIRMATION"].reached == 4
    assert steps["WAITING_CONFIRMATION"].cancelled == 1
    assert "COMPLETED" not in steps and "DECLINED" not in steps
    per_day = dict(found.orders_per_day)
    assert len(per_day) == 8 and sum(per_day.values()) == 3
    assert per_day[shop.day(T0 - DAY)] == 2
    assert found.to_dict()["orders_per_day"][-1]["date"] == shop.day(T0).isoformat()
    with pytest.raises(ValueError, match="period"):
        parse_period("0d")


async def test_stats_count_orders_a_reminder_recovered_as_completed(runner: SqlRunner) -> None:
    """An order placed after the bot's reminder ends as ``recovered`` (issue 16): it is a
    completed conversation in the numbers, and its time counts in the median."""
    for i, (outcome, duration) in enumerate(
        [("completed", 300.0), ("recovered", 900.0), ("abandoned", 60.0)]
    ):
        await runner.execute(
            "INSERT INTO dialog_outcomes (channel, client_id, outcome, last_step, message_count,"
            " duration_seconds, started_at, ended_at) VALUES ('chat2desk', :c, :o,"
            " 'WAITING_CONFIRMATION', 5, :d, :start, :end)",
            {"c": f"r{i}", "o": outcome, "d": duration, "start": T0 - DAY, "end": T0 - DAY + 1},
        )
    found = await read_stats(
        runner, load_flow("water"), ShopTime("Asia/Bishkek"), since=T0 - 7 * DAY, until=T0
    )
    assert (found.conversations, found.completed, found.recovered) == (3, 2, 1)
    assert found.median_seconds_to_order == 600.0
    assert found.to_dict()["recovered"] == 1


async def test_csv_export(runner: SqlRunner) -> None:
    shop = ShopTime("Asia/Bishkek")
    water = await add_order(runner, created=T0 - DAY, address="=cmd|' /C calc'!A0")
    printed = await add_order(
        runner,
        created=T0,
        status="ready",
        items=[("Печать PLA", 2, "900.00"), ("Покраска", 1, "250.50")],
    )
    text = "".join([chunk async for chunk in export_csv(runner, shop, ExportFilter())])
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text[1:])))
    assert [int(r["order_id"]) for r in rows] == [water, printed, printed]
    assert rows[0]["address"].startswith("'=")  # not run as a formula by a spreadsheet
    assert rows[0]["name"] == "Айгуль" and rows[0]["quantity"] == "2"
    assert [r["item"] for r in rows[1:]] == ["Печать PLA", "Покраска"]
    assert {r["order_total"] for r in rows[1:]} == {"2050.50"}
    assert rows[1]["created_at"] == shop.format(T0)
    ready = "".join([c async for c in export_csv(runner, shop, ExportFilter(status="ready"))])
    assert len(list(csv.DictReader(io.StringIO(ready[1:])))) == 2
    recent = "".join([c async for c in export_csv(runner, shop, ExportFilter(since=T0 - 60))])
    assert {r["order_id"] for r in csv.DictReader(io.StringIO(recent[1:]))} == {str(printed)}
