"""Orders as CSV for a spreadsheet: one row per order line (an order without lines is one
row), UTF-8 with a byte-order mark so Excel shows Cyrillic, times in the shop's zone. Read in
pages by id so a large export never holds every order in memory."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import orjson

from orderbot.web.console.shoptime import ShopTime
from orderbot.web.console.sql.base import SqlRunner

__all__ = ["BOM", "COLUMNS", "ExportFilter", "export_csv"]

BOM = "\ufeff"
COLUMNS = (
    "order_id",
    "created_at",
    "status",
    "channel",
    "client_id",
    "name",
    "phone",
    "address",
    "quantity",
    "item",
    "item_quantity",
    "unit",
    "unit_price",
    "amount",
    "order_total",
    "currency",
)
_PAGE = 1000


@dataclass(frozen=True, slots=True)
class ExportFilter:
    since: float | None = None
    until: float | None = None
    status: str | None = None


def _money(value: object) -> str:
    return "" if value is None else f"{Decimal(str(value)):.2f}"


def _line(values: list[object]) -> str:
    out = io.StringIO()
    # Cells a spreadsheet would run as a formula (=, +, -, @ first) are quoted with a '
    safe = [
        "'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") else v
        for v in values
    ]
    csv.writer(out, lineterminator="\r\n").writerow(safe)
    return out.getvalue()


async def export_csv(runner: SqlRunner, shop: ShopTime, wanted: ExportFilter) -> AsyncIterator[str]:
    """The CSV text, in chunks: the BOM and header first, then the orders oldest first."""
    yield BOM + _line(list(COLUMNS))
    where = ["id > :after"]
    params: dict[str, object] = {"limit": _PAGE}
    if wanted.since is not None:
        where.append("created_at >= :since")
        params["since"] = float(wanted.since)
    if wanted.until is not None:
        where.append("created_at < :until")
        params["until"] = float(wanted.until)
    if wanted.status:
        where.append("status = :status")
        params["status"] = wanted.status
    after = 0
    while True:
        rows = await runner.fetch(
            "SELECT id, created_at, status, channel, client_id, phone, address, quantity,"  # noqa: S608
            " total, currency, data FROM orders WHERE "
            + " AND ".join(where)
            + " ORDER BY id LIMIT :limit",
            {**params, "after": after},
        )
        if not rows:
            return
        first, last = int(rows[0][0]), int(rows[-1][0])
        lines: dict[int, list[tuple[object, ...]]] = {}
        for line in await runner.fetch(
            "SELECT order_id, name, quantity, unit, unit_price, amount FROM order_items"
            " WHERE order_id >= :first AND order_id <= :last ORDER BY order_id, position",
            {"first": first, "last": last},
        ):
            lines.setdefault(int(line[0]), []).append(tuple(line[1:]))
        chunk = []
        for oid, created, status, channel, client, phone, address, qty, total, cur, data in rows:
            try:
                fields = orjson.loads(data or "{}")
            except orjson.JSONDecodeError:
                fields = {}
            name = fields.get("name", "") if isinstance(fields, dict) else ""
            head: list[object] = [
                oid,
                shop.format(float(created)),
                status,
                channel,
                client,
                name if isinstance(name, str) else "",
                phone or "",
                address or "",
                "" if qty is None else qty,
            ]
            tail: list[object] = [_money(total), cur or ""]
            items = lines.get(int(oid)) or [("", "", "", None, None)]
            for item, item_qty, unit, price, amount in items:
                chunk.append(
                    _line([*head, item, item_qty, unit, _money(price), _money(amount), *tail])
                )
        yield "".join(chunk)
        after = last
