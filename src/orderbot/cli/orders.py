"""The ``orderbot orders`` commands and ``orderbot handback``: what an operator does with the
orders the bot took and the conversations it handed over, on either profile.

Listing reads the order store at DATABASE_URL. A status change or a handback goes through the
profile's order admin, the one the admin HTTP API uses, so the customer's notification is written
with the change: into the SQLite outbox, or published at once on the distributed profile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import orjson
import typer

from orderbot.cli.common import (
    fail,
    open_sql_runner,
    read_settings,
    require_database,
    run_async,
)
from orderbot.config import Settings
from orderbot.errors import ConfigError
from orderbot.web.console.shoptime import ShopTime

if TYPE_CHECKING:
    from orderbot.web.console.board import ConversationMessage

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


# Keys of an order's data shown as the customer, not as the order's options.
_CONTACT_KEYS = frozenset(
    {"name", "customer_name", "contact_name", "email", "phone", "address", "quantity"}
)


def _options(data: dict[str, Any]) -> list[tuple[str, str]]:
    """What the customer chose besides the catalog lines and the contact (material, infill,
    delivery, ...), as ``(label, value)`` in the order the dialog collected them."""
    shown: list[tuple[str, str]] = []
    for key, value in data.items():
        if key in _CONTACT_KEYS or key in ("items", "files") or value in (None, "", []):
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        if isinstance(value, (str, int, float)):
            shown.append((key.replace("_", " ").capitalize(), str(value)))
    return shown


def _customer(name: str, phone: str | None, email: object) -> str:
    parts = [name, phone or "", email if isinstance(email, str) else ""]
    return ", ".join(p for p in parts if p) or "-"


@orders_app.command("list")
def orders_list(
    status: Annotated[
        str | None, typer.Option(help="Only orders with this status, e.g. new.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=10000, metavar="N", help="At most this many, newest first.")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List orders, newest first: who, what (items and options, or the quantity), the total
    and where to, with times in SHOP_TIMEZONE."""
    if as_json:
        found = run_async(_with_repository(lambda repo: repo.list(status=status, limit=limit)))
        typer.echo(orjson.dumps([o.to_dict() for o in found], option=orjson.OPT_INDENT_2).decode())
        return
    from orderbot.web.console.board import BoardFilter, OrderBoard

    settings = read_settings()

    async def rows() -> list[Any]:
        async with open_sql_runner(settings, migrate=False) as runner:
            return await OrderBoard(runner).orders(BoardFilter(status=status, limit=limit))

    board = run_async(rows())
    if not board:
        typer.echo("no orders")
        return
    shop = ShopTime(settings.shop_timezone)
    typer.echo(f"newest first, times in {settings.shop_timezone}")
    for o in board:
        typer.echo("")
        typer.echo(
            f"#{o.id:<5} {shop.format(o.created_at)}  {o.status:<11} "
            f"{_customer(o.name, o.phone, o.data.get('email'))}"
        )
        what = ", ".join(o.items) or (f"quantity {o.quantity}" if o.quantity is not None else "")
        options = ", ".join(value for _, value in _options(o.data))
        line = "; ".join(part for part in (what, options) if part)
        if o.total is not None:
            total = f"total {o.total} {o.currency or ''}".rstrip()
            line = f"{line}  ({total})" if line else total
        if line:
            typer.echo(f"{'':7}{line}")
        if o.address:
            typer.echo(f"{'':7}to: {o.address}")


def _order_text(
    shown: dict[str, Any], conversation: list[ConversationMessage], shop: ShopTime
) -> list[str]:
    """``orders show`` as an operator reads it (``shown``: the order with its items, files and
    history; ``conversation``: the message log with the customer)."""

    def when(iso: str) -> str:
        return shop.format(float(datetime.fromisoformat(iso).timestamp()))

    data = shown.get("data") or {}
    names = [data.get(k) for k in ("name", "customer_name", "contact_name")]
    name = next((n for n in names if isinstance(n, str) and n), "")
    lines = [
        f"Order #{shown['id']}  {shown['status']}",
        f"{'Placed:':<14}{when(shown['created_at'])} ({shop.zone_name})",
        f"{'Customer:':<14}{_customer(name, shown.get('phone'), data.get('email'))}",
        f"{'Channel:':<14}{shown['channel']}:{shown['client_id']}",
    ]
    if shown.get("address"):
        lines.append(f"{'Address:':<14}{shown['address']}")
    if shown.get("quantity") is not None:
        lines.append(f"{'Quantity:':<14}{shown['quantity']}")
    for item in shown.get("items") or []:
        unit = f" {item['unit']}" if item.get("unit") else ""
        lines.append(
            f"{'Item:':<14}{item['name']} × {item['quantity']}{unit} @ {item['unit_price']}"
            f" = {item['amount']}"
        )
    for label, value in _options(data):
        lines.append(f"{label + ':':<14}{value}")
    if shown.get("total") is not None:
        lines.append(f"{'Total:':<14}{shown['total']} {shown.get('currency') or ''}".rstrip())
    for file in shown.get("files") or []:
        lines.append(f"{'File:':<14}{file['name']} ({file['format']}, {file['size']} bytes)")
    history = shown.get("history")
    if history is not None:
        lines.append("History:")
        lines.append(f"  {when(shown['created_at'])}  placed")
        for entry in history:
            note = f"  ({entry['note']})" if entry["note"] else ""
            actor = f"  by {entry['actor']}" if entry.get("actor") else ""
            lines.append(f"  {when(entry['at'])}  {entry['from']} -> {entry['to']}{note}{actor}")
    lines.append("Conversation:" if conversation else "Conversation: none logged")
    for message in conversation:
        who = "customer" if message.direction == "in" else message.sender
        failed = "" if message.success else f"  [not delivered: {message.error}]"
        text = message.text.replace("\n", "\n" + " " * 34)
        lines.append(f"  {shop.format(message.at)}  {who + ':':<14}{text}{failed}".rstrip())
    return lines


@orders_app.command("show")
def orders_show(
    order_id: Annotated[int, typer.Argument(metavar="ID", help="Order number.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one order: the customer, items and options, total, files, status history, and
    the conversation with the customer (from the message log), times in SHOP_TIMEZONE."""
    from orderbot.web.console.board import OrderBoard

    order = run_async(_with_repository(lambda repo: repo.get(order_id)))
    if order is None:
        raise fail(f"no order {order_id}")
    shown = order.to_dict()
    settings = read_settings()
    if settings.is_sqlite or settings.is_distributed:
        details = run_async(_with_order_admin(settings, lambda admin: admin.get(order_id)))
        if details is not None:
            shown["history"] = details["history"]
            for key in ("items", "files", "total", "currency"):
                if key in details:
                    shown[key] = details[key]

    async def conversation() -> list[ConversationMessage]:
        async with open_sql_runner(settings, migrate=False) as runner:
            return await OrderBoard(runner).conversation(order.channel, order.client_id)

    messages = run_async(conversation())
    if as_json:
        shown["conversation"] = [
            {
                "direction": m.direction,
                "from": "customer" if m.direction == "in" else m.sender,
                "text": m.text,
                "at": datetime.fromtimestamp(m.at, UTC).isoformat(),
                "delivered": m.success,
            }
            for m in messages
        ]
        typer.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return
    shop = ShopTime(settings.shop_timezone)
    for line in _order_text(shown, messages, shop):
        typer.echo(line)


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
