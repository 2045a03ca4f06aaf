"""The ``orderbot orders`` commands and ``orderbot handback``: what an operator does with the
orders the bot took and the conversations it handed over, on either profile.

Listing reads the order store at DATABASE_URL. A status change or a handback goes through the
profile's order admin, the one the admin HTTP API uses, so the customer's notification is written
with the change: into the SQLite outbox, or published at once on the distributed profile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
import typer

from orderbot.cli.common import fail, read_settings, require_database, run_async
from orderbot.config import Settings
from orderbot.errors import ConfigError

__all__ = ["handback", "orders_app", "orders_list", "orders_set_status", "orders_show"]

T = TypeVar("T")

orders_app = typer.Typer(
    help="See the orders the bot took and change their status (SQLite, or PostgreSQL with "
    "RABBITMQ_URL and REDIS_URL set: the distributed profile).",
    no_args_is_help=True,
)


async def _with_repository(fn: Callable[[Any], Awaitable[T]]) -> T:
    from orderbot.orders.repository import OrderRepository
    from orderbot.storage.sql import create_engine

    settings = read_settings()
    require_database(settings)
    engine = create_engine(settings.database_url)
    try:
        return await fn(OrderRepository(engine))
    finally:
        await engine.dispose()


@orders_app.command("list")
def orders_list(
    status: Annotated[
        str | None, typer.Option(help="Only orders with this status, e.g. new.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=10000, help="At most this many, newest first.")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List orders, newest first."""
    found = run_async(_with_repository(lambda repo: repo.list(status=status, limit=limit)))
    if as_json:
        typer.echo(orjson.dumps([o.to_dict() for o in found], option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        typer.echo("no orders")
        return
    typer.echo(
        f"{'ID':>6}  {'CREATED (UTC)':<19}  {'STATUS':<10} {'QTY':>4}  {'PHONE':<16} ADDRESS"
    )
    for o in found:
        typer.echo(
            f"{o.id:>6}  {o.created_at[:19].replace('T', ' '):<19}  {o.status:<10} "
            f"{o.quantity if o.quantity is not None else '-':>4}  "
            f"{o.phone or '-':<16} {o.address or '-'}"
        )


@orders_app.command("show")
def orders_show(
    order_id: Annotated[int, typer.Argument(metavar="ID", help="Order number.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one order, with its status history."""
    order = run_async(_with_repository(lambda repo: repo.get(order_id)))
    if order is None:
        raise fail(f"no order {order_id}")
    shown = order.to_dict()
    settings = read_settings()
    if settings.is_sqlite or settings.is_distributed:
        details = run_async(_with_order_admin(settings, lambda admin: admin.get(order_id)))
        if details is not None:
            shown["history"] = details["history"]
    if as_json:
        typer.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return
    history = shown.pop("history", None)
    for key, value in shown.items():
        typer.echo(f"{key + ':':<12} {value}")
    if history is not None:
        typer.echo(f"{'history:':<12} {order.created_at} new")
        for entry in history:
            note = f"  ({entry['note']})" if entry["note"] else ""
            typer.echo(f"{'':<12} {entry['at']} {entry['from']} -> {entry['to']}{note}")


async def _with_order_admin(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``fn`` with the order admin of the configured profile: PostgreSQL + RabbitMQ +
    Redis when all three are set (the notification is published at once), else SQLite."""
    from orderbot.runtime import open_order_admin

    if not settings.is_distributed:
        if not settings.is_sqlite:
            raise ConfigError(
                "DATABASE_URL is PostgreSQL: set RABBITMQ_URL and REDIS_URL as well (the "
                "customer's notification goes out through RabbitMQ), or use sqlite:///FILE"
            )
        require_database(settings)
    async with open_order_admin(settings) as admin:
        return await fn(admin)


@orders_app.command("set-status")
def orders_set_status(
    order_id: Annotated[int, typer.Argument(metavar="ID", help="Order number.")],
    status: Annotated[
        str,
        typer.Argument(
            metavar="STATUS",
            help="new, confirmed, in_progress, ready, delivered or cancelled.",
        ),
    ],
    note: Annotated[str, typer.Option(help="Why (kept in the history; internal).")] = "",
    tell: Annotated[
        bool, typer.Option("--tell", help="Tell the customer the note too (e.g. why cancelled).")
    ] = False,
) -> None:
    """Change an order's status and notify the customer (through the outbox).

    Statuses go new -> confirmed -> in_progress -> ready -> delivered, to any later one at once
    (one notification, of the final status), or
    to cancelled from any but delivered/cancelled. Exit codes: 1 no such order, 2 unknown
    status, 3 the change is not allowed from the order's status. Works on both profiles (with
    RABBITMQ_URL, REDIS_URL and a PostgreSQL DATABASE_URL, the distributed one).
    """
    from orderbot.desk.base import OrderNotFound
    from orderbot.orders.status import STATUSES, InvalidTransition

    if status not in STATUSES:
        raise fail(f"unknown status {status!r} (statuses: {', '.join(STATUSES)})", 2)
    settings = read_settings()
    try:
        order = run_async(
            _with_order_admin(
                settings,
                lambda admin: admin.set_status(
                    order_id, status, note=note, actor="cli", note_public=tell
                ),
            )
        )
    except OrderNotFound:
        raise fail(f"no order {order_id}", 1) from None
    except InvalidTransition as exc:
        raise fail(f"order {order_id}: {exc}", 3) from None
    typer.echo(f"order {order_id}: {order['history'][-1]['from']} -> {status}; customer notified")


def handback(
    client: Annotated[str, typer.Argument(metavar="CLIENT", help="The customer's client id.")],
    channel: Annotated[str, typer.Option(help="chat2desk, telegram, ...")] = "chat2desk",
) -> None:
    """Give a conversation an operator took over back to the bot. The customer is told and
    asked the question the dialog was at. Exit code 1 when it was not handed off. Works on both
    profiles (with RABBITMQ_URL, REDIS_URL and a PostgreSQL DATABASE_URL, the distributed one)."""
    from orderbot.desk.base import HandoffNotFound

    settings = read_settings()
    try:
        run_async(_with_order_admin(settings, lambda admin: admin.handback(channel, client)))
    except HandoffNotFound as exc:
        raise fail(str(exc), 1) from None
    typer.echo(f"{channel}:{client} is back with the bot")
