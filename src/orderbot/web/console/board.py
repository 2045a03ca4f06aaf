"""What the console reads besides the order admin: the orders board (filters, search, new
orders since a mark), a conversation from the message log, internal notes, handoffs with how
long each customer has waited, an order's stored files. Either profile, through a
:class:`~orderbot.web.console.sql.base.SqlRunner`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import orjson

from orderbot.outbound import client_key
from orderbot.web.console.sql.base import Params, Row, SqlRunner

__all__ = [
    "BoardFilter",
    "BoardRow",
    "ConversationMessage",
    "Handoff",
    "Note",
    "OrderBoard",
    "StoredFile",
]

PAGE_SIZE = 50
_MIN_PHONE_DIGITS = 4
_PHONE_ONLY_DIGITS = 6
_PHONE_CHARS = re.compile(r"[\s()+-]")
_BOARD_COLUMNS = (
    "id, created_at, status, phone, address, quantity, total, currency, channel, client_id, data"
)


@dataclass(frozen=True, slots=True)
class BoardFilter:
    """What the orders page asks for. ``since``/``until`` are unix times (the page turns the
    shop's dates into them); ``before`` pages to older orders."""

    status: str | None = None
    since: float | None = None
    until: float | None = None
    query: str = ""
    before: int | None = None
    limit: int = PAGE_SIZE


@dataclass(frozen=True, slots=True)
class BoardRow:
    id: int
    created_at: float
    status: str
    phone: str | None
    address: str | None
    quantity: int | None
    total: Decimal | None
    currency: str | None
    channel: str
    client_id: str
    data: dict[str, Any]
    items: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The customer's name when the flow collected one."""
        for key in ("name", "customer_name", "contact_name"):
            value = self.data.get(key)
            if isinstance(value, str) and value:
                return value
        return ""


@dataclass(frozen=True, slots=True)
class ConversationMessage:
    direction: str  # in | out
    text: str
    at: float
    success: bool = True
    error: str = ""
    key: str = ""
    id: int = 0

    @property
    def sender(self) -> str:
        """Who wrote an outgoing message: an operator, a status update, or the bot."""
        if self.key.startswith("operator:"):
            return "operator"
        if self.key.startswith("status:"):
            return "status update"
        return "bot"


@dataclass(frozen=True, slots=True)
class Note:
    id: int
    author: str
    text: str
    at: float


@dataclass(frozen=True, slots=True)
class Handoff:
    channel: str
    client_id: str
    reason: str
    since: float
    until: float
    last_message: str = ""
    orders: tuple[int, ...] = field(default=())

    @property
    def client_key(self) -> str:
        return client_key(self.channel, self.client_id)


@dataclass(frozen=True, slots=True)
class StoredFile:
    name: str
    path: str
    format: str
    size: int


def _decimal(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))


def _board_row(row: Row) -> BoardRow:
    try:
        data = orjson.loads(row[10] or "{}")
    except orjson.JSONDecodeError:
        data = {}
    return BoardRow(
        id=int(row[0]),
        created_at=float(row[1]),
        status=str(row[2]),
        phone=row[3],
        address=row[4],
        quantity=row[5],
        total=_decimal(row[6]),
        currency=row[7],
        channel=str(row[8]),
        client_id=str(row[9]),
        data=data if isinstance(data, dict) else {},
    )


def _in(prefix: str, values: list[int]) -> tuple[str, dict[str, int]]:
    """An ``IN`` list of named parameters (neither driver expands a list by itself)."""
    names = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return ", ".join(f":{n}" for n in names), names


def _variants(text: str) -> tuple[str, ...]:
    return (text, text.lower(), text.capitalize(), text.title(), text.upper())


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class OrderBoard:
    """The console's reads (and its notes) on the shared tables."""

    def __init__(self, runner: SqlRunner) -> None:
        self._runner = runner

    async def orders(self, wanted: BoardFilter) -> list[BoardRow]:
        """Orders matching ``wanted``, newest first, with their item names."""
        where: list[str] = []
        params: dict[str, Any] = {"limit": wanted.limit}
        if wanted.status:
            where.append("status = :status")
            params["status"] = wanted.status
        if wanted.since is not None:
            where.append("created_at >= :since")
            params["since"] = float(wanted.since)
        if wanted.until is not None:
            where.append("created_at < :until")
            params["until"] = float(wanted.until)
        if wanted.before is not None:
            where.append("id < :before")
            params["before"] = wanted.before
        query = wanted.query.strip()
        if query:
            digits = _PHONE_CHARS.sub("", query.lstrip("#№"))
            number = int(digits) if digits.isdigit() and len(digits) <= 12 else None
            found: list[str] = ["id = :number"]
            params["number"] = number if number is not None else 0
            if not query.startswith(("#", "№")):  # "#12": the order number, nothing else
                if not (digits.isdigit() and len(digits) >= _PHONE_ONLY_DIGITS):
                    # Case variants rather than LOWER(): SQLite lowers ASCII only, and names
                    # and addresses here are mostly Cyrillic. Six digits or more: a phone.
                    for i, variant in enumerate(dict.fromkeys(_variants(query))):
                        params[f"text{i}"] = _like(variant)
                        found.append(f"address LIKE :text{i} ESCAPE '\\'")
                        found.append(f"data LIKE :text{i} ESCAPE '\\'")
                if digits.isdigit() and len(digits) >= _MIN_PHONE_DIGITS:
                    # Stored phones are international (+996555...); a local 0555... is
                    # searched without its trunk zero.
                    found.append("phone LIKE :phone ESCAPE '\\'")
                    params["phone"] = _like(digits.lstrip("0") or digits)
            where.append("(" + " OR ".join(found) + ")")
        sql = f"SELECT {_BOARD_COLUMNS} FROM orders"  # noqa: S608 - constant columns
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = [
            _board_row(r)
            for r in await self._runner.fetch(sql + " ORDER BY id DESC LIMIT :limit", params)
        ]
        return await self._with_items(rows)

    async def _with_items(self, rows: list[BoardRow]) -> list[BoardRow]:
        if not rows:
            return rows
        marks, params = _in("o", [r.id for r in rows])
        items: dict[int, list[str]] = {}
        for order_id, name, quantity in await self._runner.fetch(
            f"SELECT order_id, name, quantity FROM order_items WHERE order_id IN ({marks})"  # noqa: S608
            " ORDER BY order_id, position",
            params,
        ):
            items.setdefault(int(order_id), []).append(f"{name} × {quantity}")
        return [replace(r, items=tuple(items.get(r.id, ()))) for r in rows]

    async def open_counts(self) -> dict[str, int]:
        """How many orders wait in each status before the final two (the work to do)."""
        rows = await self._runner.fetch(
            "SELECT status, COUNT(*) FROM orders"
            " WHERE status IN ('new', 'confirmed', 'in_progress', 'ready') GROUP BY status"
        )
        return {str(status): int(count) for status, count in rows}

    async def newest_id(self) -> int:
        """The highest order id (0 when there are none): the board's "new since" mark."""
        rows = await self._runner.fetch("SELECT MAX(id) FROM orders")
        return int(rows[0][0] or 0)

    async def orders_after(self, mark: int, limit: int = PAGE_SIZE) -> list[BoardRow]:
        """Orders newer than ``mark``, newest first."""
        rows = await self._runner.fetch(
            f"SELECT {_BOARD_COLUMNS} FROM orders WHERE id > :mark"  # noqa: S608 - constant
            " ORDER BY id DESC LIMIT :limit",
            {"mark": mark, "limit": limit},
        )
        return await self._with_items([_board_row(r) for r in rows])

    async def conversation(
        self, channel: str, client_id: str, limit: int = 500, *, after: int = 0
    ) -> list[ConversationMessage]:
        """The last ``limit`` logged messages with the customer (those logged after the log
        row ``after``), oldest first."""
        rows = await self._runner.fetch(
            "SELECT direction, text, created_at, success, error, message_key, id"
            " FROM message_logs WHERE channel = :channel AND client_id = :client"
            " AND id > :after ORDER BY created_at DESC, id DESC LIMIT :limit",
            {"channel": channel, "client": client_id, "limit": limit, "after": after},
        )
        return [
            ConversationMessage(
                str(r[0]),
                str(r[1] or ""),
                float(r[2]),
                bool(r[3]),
                str(r[4] or ""),
                str(r[5]),
                int(r[6]),
            )
            for r in reversed(rows)
        ]

    async def notes(self, order_id: int) -> list[Note]:
        rows = await self._runner.fetch(
            "SELECT id, author, text, created_at FROM order_notes WHERE order_id = :order"
            " ORDER BY id",
            {"order": order_id},
        )
        return [Note(int(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    async def add_note(self, order_id: int, author: str, text: str, now: float) -> bool:
        """Keep an internal note on the order; False when there is no such order."""
        rows = await self._runner.execute(
            "INSERT INTO order_notes (order_id, author, text, created_at)"
            " SELECT id, :author, :text, :now FROM orders WHERE id = :order RETURNING id",
            {"order": order_id, "author": author, "text": text, "now": now},
        )
        return bool(rows)

    async def handoffs(self) -> list[Handoff]:
        """Conversations with a person now, longest waiting first, each with the customer's
        last message and their recent orders."""
        rows = await self._runner.fetch(
            "SELECT channel, client_id, reason, since, until FROM handoffs ORDER BY since"
        )
        found: list[Handoff] = []
        for channel, client_id, reason, since, until in rows:
            params: Params = {"channel": channel, "client": client_id}
            last = await self._runner.fetch(
                "SELECT text FROM message_logs WHERE channel = :channel AND client_id = :client"
                " AND direction = 'in' ORDER BY created_at DESC, id DESC LIMIT 1",
                params,
            )
            orders = await self._runner.fetch(
                "SELECT id FROM orders WHERE channel = :channel AND client_id = :client"
                " ORDER BY id DESC LIMIT 5",
                params,
            )
            found.append(
                Handoff(
                    str(channel),
                    str(client_id),
                    str(reason or ""),
                    float(since),
                    float(until),
                    str(last[0][0]) if last else "",
                    tuple(int(o[0]) for o in orders),
                )
            )
        return found

    async def handoff_count(self) -> int:
        """How many customers wait for a person now."""
        rows = await self._runner.fetch("SELECT COUNT(*) FROM handoffs")
        return int(rows[0][0])

    async def handoff(self, channel: str, client_id: str) -> Handoff | None:
        """The handoff of one customer (without the extras of :meth:`handoffs`)."""
        rows = await self._runner.fetch(
            "SELECT reason, since, until FROM handoffs WHERE client_key = :key",
            {"key": client_key(channel, client_id)},
        )
        if not rows:
            return None
        reason, since, until = rows[0]
        return Handoff(channel, client_id, str(reason or ""), float(since), float(until))

    async def file(self, order_id: int, position: int) -> StoredFile | None:
        rows = await self._runner.fetch(
            "SELECT name, path, format, size FROM order_files"
            " WHERE order_id = :order AND position = :position",
            {"order": order_id, "position": position},
        )
        if not rows:
            return None
        name, path, fmt, size = rows[0]
        return StoredFile(str(name), str(path), str(fmt), int(size))

    async def route(self, channel: str, client_id: str) -> dict[str, str]:
        """How to reach the customer again (Chat2Desk transport and channel), from their
        newest order; empty when they have none."""
        rows = await self._runner.fetch(
            "SELECT route FROM orders WHERE channel = :channel AND client_id = :client"
            " ORDER BY id DESC LIMIT 1",
            {"channel": channel, "client": client_id},
        )
        if not rows:
            return {}
        try:
            route = orjson.loads(rows[0][0] or "{}")
        except orjson.JSONDecodeError:
            return {}
        return {str(k): str(v) for k, v in route.items()} if isinstance(route, dict) else {}
