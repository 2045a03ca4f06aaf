"""The console's statements on the embedded SQLite file, through the profile's single-writer
connection (:class:`~orderbot.sqlite.SqliteDatabase`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import ClassVar

from orderbot.sqlite import SqliteDatabase
from orderbot.web.console.sql.base import Params, Row, SqlRunner, Statement

__all__ = ["SqliteRunner"]


class SqliteRunner(SqlRunner):
    """Runs statements as jobs of ``db`` (which it does not own: the runtime or CLI closes it)."""

    dialect: ClassVar[str] = "sqlite"

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        def read(conn: sqlite3.Connection) -> list[Row]:
            return [tuple(r) for r in conn.execute(sql, dict(params or {})).fetchall()]

        return await self._db.run(read, savepoint=False)

    async def transaction(self, statements: Sequence[Statement]) -> list[list[Row]]:
        def write(conn: sqlite3.Connection) -> list[list[Row]]:
            return [
                [tuple(r) for r in conn.execute(sql, dict(params)).fetchall()]
                for sql, params in statements
            ]

        return await self._db.run(write)
