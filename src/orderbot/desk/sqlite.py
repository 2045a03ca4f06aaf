"""The front desk's reads on the embedded SQLite store.

Only this process starts handoffs, so the clients that may be handed off are kept in memory
and the common message costs no query; a client in that set is checked in the database (a
handback may have come from the CLI, another process).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from orderbot.desk.base import DeskStore, HandoffWindow
from orderbot.order_admin import SqliteOrderAdmin, customer_order, customer_orders
from orderbot.sqlite import SqliteDatabase
from orderbot.tracking import HistoryEntry, OrderSummary

__all__ = ["SqliteDeskStore", "SqliteOrderAdmin"]


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
