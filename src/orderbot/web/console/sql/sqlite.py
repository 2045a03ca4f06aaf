"""The console's statements on the embedded SQLite file.

Writes go through the profile's single-writer connection
(:class:`~orderbot.storage.sqlite.SqliteDatabase`), like every other write. Reads do not: a page of
numbers over 100,000 orders takes tens of milliseconds, and on the writer's thread every
webhook would wait behind it. They run on read-only connections of their own, in worker
threads (WAL lets readers and the writer work at the same time), at most ``readers`` at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import ClassVar

from orderbot.errors import StorageError
from orderbot.storage.sqlite import SqliteDatabase
from orderbot.web.console.sql.base import Params, Row, SqlRunner, Statement

__all__ = ["SqliteRunner"]


class SqliteRunner(SqlRunner):
    """Writes as jobs of ``db`` (which it does not own: the runtime or CLI closes it); reads on
    read-only connections it opens and closes itself."""

    dialect: ClassVar[str] = "sqlite"

    def __init__(self, db: SqliteDatabase, *, readers: int = 2) -> None:
        self._db = db
        self._slots = asyncio.Semaphore(readers)
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    def _reader(self) -> sqlite3.Connection:
        if self._idle:
            return self._idle.pop()
        conn = sqlite3.connect(
            f"file:{self._db.path}?mode=ro", uri=True, check_same_thread=False, timeout=10
        )
        conn.execute("PRAGMA query_only=ON")
        return conn

    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        if self._closed:
            raise StorageError("the console's database connections are closed")
        values = dict(params or {})
        async with self._slots:
            conn = self._reader()
            try:
                rows = await asyncio.to_thread(lambda: conn.execute(sql, values).fetchall())
            except sqlite3.Error as exc:
                conn.close()
                raise StorageError(str(exc)) from None
            if self._closed:
                conn.close()
            else:
                self._idle.append(conn)
        return [tuple(r) for r in rows]

    async def transaction(self, statements: Sequence[Statement]) -> list[list[Row]]:
        def write(conn: sqlite3.Connection) -> list[list[Row]]:
            return [
                [tuple(r) for r in conn.execute(sql, dict(params)).fetchall()]
                for sql, params in statements
            ]

        return await self._db.run(write)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
