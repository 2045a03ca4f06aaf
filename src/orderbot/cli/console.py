"""The console's commands: ``orderbot operators`` (accounts), ``orderbot stats`` (the numbers
of ``/console/stats``) and ``orderbot orders export`` (the CSV of ``/console/orders.csv``). They
work on either profile with only DATABASE_URL: SQLite through the embedded single-writer
connection, PostgreSQL through SQLAlchemy. ``operators`` migrates the database first (an
account is often the first thing set up)."""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Annotated, TypeVar

import orjson
import typer

from orderbot.cli.common import fail, open_sql_runner, read_settings, run_async
from orderbot.web.console.accounts import ROLES, AccountError, OperatorAccounts

__all__ = ["operators_app", "orders_export", "stats"]

T = TypeVar("T")

operators_app = typer.Typer(
    help="Console accounts (role admin or operator). Passwords are hashed with argon2id.",
    no_args_is_help=True,
)

EXIT_NOT_FOUND = 1
EXIT_INVALID = 2
EXIT_EXISTS = 3


def _with_accounts(fn: Callable[[OperatorAccounts], Awaitable[T]]) -> T:
    async def go() -> T:
        async with open_sql_runner(read_settings(), migrate=True) as runner:
            return await fn(OperatorAccounts(runner))

    try:
        return run_async(go())
    except AccountError as exc:
        code = {"not_found": EXIT_NOT_FOUND, "exists": EXIT_EXISTS}.get(exc.code, EXIT_INVALID)
        raise fail(str(exc), code) from None


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise fail("no password on stdin", EXIT_INVALID)
        return password
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of stdin (no prompt)."
    ),
]


@operators_app.command("add")
def operators_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Sign-in name.")],
    role: Annotated[
        str, typer.Option(metavar="admin|operator", help="admin also manages accounts.")
    ] = "operator",
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a console account. Exit codes: 2 invalid name, role or password, 3 the name is
    taken."""
    if role not in ROLES:
        raise fail(f"role must be one of {', '.join(ROLES)}", EXIT_INVALID)
    password = _password(password_stdin)
    made = _with_accounts(lambda accounts: accounts.add(name, role, password))
    typer.echo(f"account {made.name} ({made.role}) created")


@operators_app.command("list")
def operators_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Every console account."""
    found = _with_accounts(lambda accounts: accounts.all_accounts())
    if as_json:
        rows = [
            {"name": o.name, "role": o.role, "disabled": o.disabled, "created_at": o.created_at}
            for o in found
        ]
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        typer.echo("no accounts (add one: orderbot operators add NAME --role admin)")
        return
    for o in found:
        created = time.strftime("%Y-%m-%d", time.gmtime(o.created_at))
        state = "disabled" if o.disabled else "active"
        typer.echo(f"{o.name:<24} {o.role:<9} {state:<9} since {created}")


@operators_app.command("disable")
def operators_disable(
    name: Annotated[str, typer.Argument(metavar="NAME")],
) -> None:
    """Disable an account; its console sessions end at once. Exit code 1: no such account."""
    _with_accounts(lambda accounts: accounts.set_disabled(name, True))
    typer.echo(f"account {name} disabled")


@operators_app.command("enable")
def operators_enable(
    name: Annotated[str, typer.Argument(metavar="NAME")],
) -> None:
    """Enable a disabled account again. Exit code 1: no such account."""
    _with_accounts(lambda accounts: accounts.set_disabled(name, False))
    typer.echo(f"account {name} enabled")


@operators_app.command("set-password")
def operators_set_password(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Give an account a new password; its console sessions end. Exit codes: 1 no such
    account, 2 the password is too short."""
    password = _password(password_stdin)
    _with_accounts(lambda accounts: accounts.set_password(name, password))
    typer.echo(f"password of {name} changed")


def stats(
    since: Annotated[
        str, typer.Option(metavar="PERIOD", help="How far back: 24h, 7d, 2w, ...")
    ] = "7d",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The shop's numbers for a period: conversations, orders, conversion, drop-off per step,
    orders per day, median time to order (as /console/stats and GET /api/stats)."""
    from orderbot.dialog.loader import load_flow
    from orderbot.web.console.shoptime import ShopTime
    from orderbot.web.console.stats import parse_period, read_stats

    try:
        seconds = parse_period(since)
    except ValueError as exc:
        raise fail(str(exc), EXIT_INVALID) from None
    settings = read_settings()
    flow = load_flow(settings.flow)
    shop = ShopTime(settings.shop_timezone)

    async def go() -> dict[str, object]:
        now = time.time()
        async with open_sql_runner(settings, migrate=False) as runner:
            found = await read_stats(runner, flow, shop, since=now - seconds, until=now)
        return found.to_dict()

    found = run_async(go())
    if as_json:
        typer.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    conversion = found["conversion"]
    median = found["median_seconds_to_order"]
    typer.echo(f"last {since} ({settings.shop_timezone})")
    typer.echo(f"  conversations  {found['conversations']}")
    typer.echo(f"  orders         {found['orders']}")
    typer.echo(
        "  conversion     "
        + (f"{float(conversion) * 100:.1f} %" if isinstance(conversion, float) else "-")
    )
    typer.echo(
        "  median time to order  "
        + (f"{float(median) / 60:.1f} min" if isinstance(median, float | int) else "-")
    )
    typer.echo(f"  {'STEP':<20} {'REACHED':>8} {'CANCELLED':>10} {'ABANDONED':>10}")
    for step in found["steps"]:  # type: ignore[attr-defined]
        typer.echo(
            f"  {step['step']:<20} {step['reached']:>8} {step['cancelled']:>10}"
            f" {step['abandoned']:>10}"
        )
    typer.echo("  orders per day:")
    for day in found["orders_per_day"]:  # type: ignore[attr-defined]
        typer.echo(f"    {day['date']}  {day['orders']}")


def _day(value: str | None, option: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise fail(f"{option}: a date like 2026-12-31", EXIT_INVALID) from None


def orders_export(
    from_: Annotated[
        str | None, typer.Option("--from", metavar="DATE", help="First day (shop's time zone).")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", metavar="DATE", help="Last day.")] = None,
    status: Annotated[str | None, typer.Option(metavar="STATUS", help="Only this status.")] = None,
    fmt: Annotated[str, typer.Option("--format", metavar="csv", help="Only csv.")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Default: stdout.")
    ] = None,
) -> None:
    """Orders as CSV, one row per order line, UTF-8 with a BOM (Excel shows Cyrillic), the
    same as /console/orders.csv."""
    from orderbot.orders.status import STATUSES
    from orderbot.web.console.export import ExportFilter, export_csv
    from orderbot.web.console.shoptime import ShopTime

    if fmt != "csv":
        raise fail("--format: only csv", EXIT_INVALID)
    if status is not None and status not in STATUSES:
        raise fail(f"unknown status {status!r} (statuses: {', '.join(STATUSES)})", EXIT_INVALID)
    first, last = _day(from_, "--from"), _day(to, "--to")
    settings = read_settings()
    shop = ShopTime(settings.shop_timezone)
    wanted = ExportFilter(
        since=shop.start_of(first) if first else None,
        until=shop.end_of(last) if last else None,
        status=status,
    )

    async def go() -> None:
        out = output.open("wb") if output is not None else sys.stdout.buffer
        try:
            async with open_sql_runner(settings, migrate=False) as runner:
                async for chunk in export_csv(runner, shop, wanted):
                    out.write(chunk.encode("utf-8"))
        finally:
            if output is not None:
                out.close()
            else:
                out.flush()

    run_async(go())
