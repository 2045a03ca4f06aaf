"""The front desk's reads and what operators do to orders and conversations, on the embedded
SQLite store.

:class:`SqliteDeskStore` is what the front desk reads. Only this process starts handoffs, so the
clients that may be handed off are kept in memory and the common message costs no query; a client
in that set is checked in the database (a handback may have come from the CLI, another process).

:class:`SqliteOrderAdmin` is what operators do.

Each change is one transaction with what it sends: a status change writes the order, its
``order_status_history`` row and the customer's notification (an outbox entry keyed
``status:<order id>:<history id>``) together; a handback deletes the ``handoffs`` row and queues
the bot's "let's continue" with the question the dialog was at. The sender delivers them like
any reply (retries, dead-letter queue). Used by the CLI (its own connection, so a running
server's sender picks the notification up at its next poll) and by the admin HTTP API.

Tracking reads (a customer's own orders) live here too: the same tables, the same SQL.
"""

from __future__ import annotations

import builtins
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from orderbot import outbound
from orderbot.desk.base import DeskStore, HandoffNotFound, HandoffWindow, OrderAdmin, OrderNotFound
from orderbot.desk.requests import TRACK_LIMIT
from orderbot.desk.texts import comeback, status_notification
from orderbot.dialog.flow import Flow
from orderbot.dialog.models import DialogOptions, DialogState
from orderbot.loggers import storage as log
from orderbot.messages import OutboundMessage
from orderbot.orders.models import HistoryEntry, OrderSummary
from orderbot.orders.status import WINDOW_MARK, check_transition, outside_window
from orderbot.outbound import status_notification_key
from orderbot.queues.sqlite import Wakeup
from orderbot.storage.sqlite import SqliteDatabase

__all__ = [
    "SqliteDeskStore",
    "SqliteOrderAdmin",
    "customer_order",
    "customer_orders",
    "handback",
    "insert_outbox",
]

_ORDER_COLUMNS = (
    "id, client_id, channel, source, phone, address, quantity, status, language, data,"
    " created_at, updated_at, total, currency, route"
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _order_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": row[0],
        "client_id": row[1],
        "channel": row[2],
        "source": row[3],
        "phone": row[4],
        "address": row[5],
        "quantity": row[6],
        "status": row[7],
        "language": row[8],
        "data": orjson.loads(row[9] or "{}"),
        "created_at": _iso(row[10]),
        "updated_at": _iso(row[11]),
        "total": None if row[12] is None else f"{Decimal(str(row[12])):.2f}",
        "currency": row[13],
    }


def insert_outbox(conn: sqlite3.Connection, message: OutboundMessage, now: float) -> None:
    """Queue ``message`` in the outbox (once: its key is unique)."""
    conn.execute(
        "INSERT OR IGNORE INTO outbox (key, channel, client_id, payload, status, attempts,"
        " not_before, last_error, created_at) VALUES (?, ?, ?, ?, 'pending', 0, 0, '', ?)",
        (message.key, message.channel, message.client_id, message.to_json(), now),
    )


def _history(conn: sqlite3.Connection, order_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, from_status, to_status, note, actor, created_at, note_public"
        " FROM order_status_history"
        " WHERE order_id = ? ORDER BY id",
        (order_id,),
    ).fetchall()
    return [
        {
            "id": r[0],
            "from": r[1],
            "to": r[2],
            "note": r[3],
            "actor": r[4],
            "at": _iso(r[5]),
            "note_public": bool(r[6]),
        }
        for r in rows
    ]


def _details(conn: sqlite3.Connection, order_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = ?",  # noqa: S608 - constant columns
        (order_id,),
    ).fetchone()
    if row is None:
        return None
    order = _order_dict(row)
    items = conn.execute(
        "SELECT item_id, name, quantity, unit, unit_price, amount FROM order_items"
        " WHERE order_id = ? ORDER BY position",
        (order_id,),
    ).fetchall()
    order["items"] = [
        {
            "item_id": i[0],
            "name": i[1],
            "quantity": i[2],
            "unit": i[3],
            "unit_price": f"{Decimal(str(i[4])):.2f}",
            "amount": f"{Decimal(str(i[5])):.2f}",
        }
        for i in items
    ]
    files = conn.execute(
        "SELECT name, checksum, size, format FROM order_files WHERE order_id = ? ORDER BY position",
        (order_id,),
    ).fetchall()
    order["files"] = [{"name": f[0], "checksum": f[1], "size": f[2], "format": f[3]} for f in files]
    order["history"] = _history(conn, order_id)
    return order


def _set_status(
    conn: sqlite3.Connection,
    flow: Flow,
    order_id: int,
    status: str,
    note: str,
    actor: str,
    now: float,
    window_transports: tuple[str, ...] = (),
    note_public: bool = False,
) -> dict[str, Any]:
    row = conn.execute(
        "SELECT status, channel, client_id, language, route FROM orders WHERE id = ?",
        (order_id,),
    ).fetchone()
    if row is None:
        raise OrderNotFound(f"no order {order_id}")
    current, channel, client_id, language, route = row
    check_transition(current, status)
    reach = {str(k): str(v) for k, v in orjson.loads(route or "{}").items()}
    marked = note
    if reach.get("transport") in window_transports:
        (last,) = conn.execute(
            "SELECT max(created_at) FROM message_logs WHERE channel = ? AND client_id = ?"
            " AND direction = 'in'",
            (channel, client_id),
        ).fetchone()
        if outside_window(reach, last, now, window_transports):
            marked = note + WINDOW_MARK
    conn.execute(
        "UPDATE orders SET status = ?, updated_at = ? WHERE id = ?", (status, now, order_id)
    )
    history_id = conn.execute(
        "INSERT INTO order_status_history (order_id, from_status, to_status, note, actor,"
        " created_at, note_public) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (order_id, current, status, marked, actor, now, note_public),
    ).fetchone()[0]
    insert_outbox(
        conn,
        OutboundMessage(
            key=status_notification_key(order_id, history_id),
            channel=channel,
            client_id=client_id,
            text=status_notification(
                flow, status, language, order_id=order_id, note=note, note_public=note_public
            ),
            route=dict(orjson.loads(route or "{}")),
            created_at=now,
        ),
        now,
    )
    details = _details(conn, order_id)
    assert details is not None
    return details


def handback(
    conn: sqlite3.Connection,
    flow: Flow,
    options: DialogOptions,
    client_key: str,
    now: float,
    *,
    expired_only: bool = False,
) -> bool:
    """End the handoff of ``client_key`` and queue the bot's comeback: the resumed text and the
    question the dialog was at (the dialog state itself is untouched). False when there was
    no handoff (or, with ``expired_only``, none past its ``until``)."""
    sql = "DELETE FROM handoffs WHERE client_key = ?"
    if expired_only:
        sql += " AND until <= ?"
    row = conn.execute(
        sql + " RETURNING channel, client_id, since",
        (client_key, now) if expired_only else (client_key,),
    ).fetchone()
    if row is None:
        return False
    channel, client_id, since = row
    found = conn.execute(
        "SELECT state FROM dialog_states WHERE client_key = ?", (client_key,)
    ).fetchone()
    state = None
    if found is not None:
        try:
            state = DialogState.from_json(bytes(found[0]))
        except ValueError:
            log.warning("unreadable dialog state for %s at handback", client_id)
    back = comeback(
        flow,
        options,
        state,
        channel=channel,
        client_id=client_id,
        since=float(since),
        route=_last_route(conn, channel, client_id),
        now=now,
    )
    insert_outbox(conn, back, now)
    return True


def _last_route(conn: sqlite3.Connection, channel: str, client_id: str) -> dict[str, str]:
    """How the client wrote last (Chat2Desk transport and channel), from the inbound queue."""
    row = conn.execute(
        "SELECT payload FROM inbound_queue WHERE client_key = ? ORDER BY id DESC LIMIT 1",
        (outbound.client_key(channel, client_id),),
    ).fetchone()
    if row is None:
        return {}
    route = orjson.loads(row[0]).get("route") or {}
    return {str(k): str(v) for k, v in route.items() if k != "callback_query_id"}


def customer_orders(
    conn: sqlite3.Connection, channel: str, client_id: str, limit: int = TRACK_LIMIT
) -> list[OrderSummary]:
    """The customer's newest orders (same channel and client id: nobody else's)."""
    rows = conn.execute(
        "SELECT id, created_at, status, total, currency, quantity FROM orders"
        " WHERE channel = ? AND client_id = ? ORDER BY id DESC LIMIT ?",
        (channel, client_id, limit),
    ).fetchall()
    return [_summary(r) for r in rows]


def customer_order(
    conn: sqlite3.Connection, channel: str, client_id: str, order_id: int
) -> tuple[OrderSummary, list[HistoryEntry]] | None:
    """Order ``order_id`` with its history if it is this customer's; None otherwise, whether
    or not it exists (one query, so both cases take the same path)."""
    row = conn.execute(
        "SELECT id, created_at, status, total, currency, quantity FROM orders"
        " WHERE id = ? AND channel = ? AND client_id = ?",
        (order_id, channel, client_id),
    ).fetchone()
    if row is None:
        return None
    history = conn.execute(
        "SELECT created_at, from_status, to_status, note FROM order_status_history"
        " WHERE order_id = ? ORDER BY id",
        (order_id,),
    ).fetchall()
    return _summary(row), [HistoryEntry(h[0], h[1], h[2], "") for h in history]


def _summary(row: tuple[Any, ...]) -> OrderSummary:
    return OrderSummary(
        id=row[0],
        created_at=row[1],
        status=row[2],
        total=None if row[3] is None else Decimal(str(row[3])),
        currency=row[4],
        quantity=row[5],
    )


class SqliteOrderAdmin(OrderAdmin):
    """Operators' view and actions on the embedded store (admin API, CLI)."""

    def __init__(
        self,
        db: SqliteDatabase,
        flow: Flow,
        options: DialogOptions,
        *,
        outbox_wakeup: Wakeup | None = None,
        clock: Callable[[], float] = time.time,
        window_transports: tuple[str, ...] = (),
    ) -> None:
        self._window_transports = window_transports
        self._db = db
        self._flow = flow
        self._options = options
        self._wakeup = outbox_wakeup
        self._clock = clock

    async def list(
        self, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> builtins.list[dict[str, Any]]:
        """Orders, newest first."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            sql = f"SELECT {_ORDER_COLUMNS} FROM orders"  # noqa: S608 - constant columns
            args: list[object] = []
            if status is not None:
                sql += " WHERE status = ?"
                args.append(status)
            rows = conn.execute(sql + " ORDER BY id DESC LIMIT ? OFFSET ?", (*args, limit, offset))
            return [_order_dict(r) for r in rows.fetchall()]

        return await self._db.run(read)

    async def get(self, order_id: int) -> dict[str, Any] | None:
        """One order with its items, files and status history."""
        return await self._db.run(lambda conn: _details(conn, order_id))

    async def set_status(
        self,
        order_id: int,
        status: str,
        *,
        note: str = "",
        actor: str = "",
        note_public: bool = False,
    ) -> dict[str, Any]:
        """Move the order to ``status`` and notify the customer, in one transaction. Raises
        OrderNotFound, InvalidTransition, or ValueError for a status that does not exist."""
        now = self._clock()
        order = await self._db.run(
            lambda conn: _set_status(
                conn,
                self._flow,
                order_id,
                status,
                note,
                actor,
                now,
                self._window_transports,
                note_public,
            )
        )
        if self._wakeup is not None:
            self._wakeup.set()
        return order

    async def handback(self, channel: str, client_id: str) -> None:
        """Give the conversation back to the bot; raises HandoffNotFound when it was not
        handed off."""
        now = self._clock()
        key = outbound.client_key(channel, client_id)
        done = await self._db.run(lambda conn: handback(conn, self._flow, self._options, key, now))
        if not done:
            raise HandoffNotFound(f"{key} is not with an operator")
        if self._wakeup is not None:
            self._wakeup.set()

    async def expire_handoffs(self) -> int:
        """Hand back every conversation whose handoff timed out; how many."""
        now = self._clock()

        def expire(conn: sqlite3.Connection) -> int:
            keys = [
                r[0]
                for r in conn.execute(
                    "SELECT client_key FROM handoffs WHERE until <= ?", (now,)
                ).fetchall()
            ]
            return sum(
                handback(conn, self._flow, self._options, key, now, expired_only=True)
                for key in keys
            )

        count = await self._db.run(expire)
        if count and self._wakeup is not None:
            self._wakeup.set()
        return count

    async def handoffs(self) -> builtins.list[dict[str, Any]]:
        """Conversations with an operator now."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT channel, client_id, reason, since, until FROM handoffs ORDER BY since"
            ).fetchall()
            return [
                {
                    "channel": r[0],
                    "client_id": r[1],
                    "reason": r[2],
                    "since": _iso(r[3]),
                    "until": _iso(r[4]),
                }
                for r in rows
            ]

        return await self._db.run(read)


class SqliteDeskStore(DeskStore):
    """Handoffs, orders and the message log in the embedded database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._maybe_handed_off: set[str] | None = None
        # Clients with an order, so that a new customer's first message costs no query.
        self._with_orders: set[str] | None = None

    async def handoff(self, client_key: str) -> HandoffWindow | None:
        if self._maybe_handed_off is None:
            self._maybe_handed_off = set(await self._db.run(_handed_off_clients))
        if client_key not in self._maybe_handed_off:
            return None
        window = await self._db.run(lambda conn: _handoff(conn, client_key))
        if window is None:
            self._maybe_handed_off.discard(client_key)
        return window

    def note_handoff(self, client_key: str, *, active: bool) -> None:
        if self._maybe_handed_off is None:
            return  # read from the database at the next message, after this commit
        if active:
            self._maybe_handed_off.add(client_key)
        else:
            self._maybe_handed_off.discard(client_key)

    def note_order(self, client_key: str) -> None:
        if self._with_orders is not None:
            self._with_orders.add(client_key)

    async def last_order_data(self, channel: str, client_id: str) -> dict[str, Any] | None:
        if self._with_orders is None:
            self._with_orders = set(await self._db.run(_clients_with_orders))
        if f"{channel}:{client_id}" not in self._with_orders:
            return None

        def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                "SELECT data FROM orders WHERE channel = ? AND client_id = ?"
                " AND status != 'cancelled' ORDER BY id DESC LIMIT 1",
                (channel, client_id),
            ).fetchone()
            return _data(row[0]) if row is not None else None

        return await self._db.run(read)

    async def customer_orders(self, channel: str, client_id: str) -> list[OrderSummary]:
        return await self._db.run(lambda conn: customer_orders(conn, channel, client_id))

    async def customer_order(
        self, channel: str, client_id: str, order_id: int
    ) -> tuple[OrderSummary, list[HistoryEntry]] | None:
        return await self._db.run(lambda conn: customer_order(conn, channel, client_id, order_id))

    async def recent_messages(
        self, channel: str, client_id: str, limit: int
    ) -> list[tuple[str, str]]:
        def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = conn.execute(
                "SELECT direction, text FROM message_logs WHERE channel = ? AND client_id = ?"
                " ORDER BY id DESC LIMIT ?",
                (channel, client_id, limit),
            ).fetchall()
            return [(str(r[0]), str(r[1])) for r in reversed(rows)]

        return await self._db.run(read)


def _handed_off_clients(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT client_key FROM handoffs").fetchall()]


def _handoff(conn: sqlite3.Connection, client_key: str) -> HandoffWindow | None:
    row = conn.execute(
        "SELECT since, until FROM handoffs WHERE client_key = ?", (client_key,)
    ).fetchone()
    return None if row is None else HandoffWindow(since=float(row[0]), until=float(row[1]))


def _data(raw: object) -> dict[str, Any] | None:
    try:
        data = orjson.loads(raw) if isinstance(raw, str | bytes) else None
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _clients_with_orders(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT DISTINCT channel, client_id FROM orders").fetchall()
    return [f"{r[0]}:{r[1]}" for r in rows]
