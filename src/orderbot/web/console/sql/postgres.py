"""The console's statements on PostgreSQL (the distributed profile), through SQLAlchemy's
``AsyncEngine`` and asyncpg."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from orderbot.errors import BackendUnavailable, StorageError
from orderbot.web.console.sql.base import Params, Row, SqlRunner, Statement

__all__ = ["PostgresRunner"]


def _translate(exc: BaseException) -> StorageError:
    if isinstance(exc, OSError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return BackendUnavailable(f"PostgreSQL: {type(exc).__name__}")
    return StorageError(f"PostgreSQL: {type(exc).__name__}")


class PostgresRunner(SqlRunner):
    """Runs statements on ``engine``; disposes of it at :meth:`aclose` only when ``owned``."""

    dialect: ClassVar[str] = "postgresql"

    def __init__(self, engine: AsyncEngine, *, owned: bool = False) -> None:
        self._engine = engine
        self._owned = owned
        self._closed = False

    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        try:
            async with self._engine.connect() as conn:
                result = await conn.execute(text(sql), dict(params or {}))
                return [tuple(r) for r in result.all()]
        except (SQLAlchemyError, OSError) as exc:
            raise _translate(exc) from None

    async def transaction(self, statements: Sequence[Statement]) -> list[list[Row]]:
        try:
            async with self._engine.begin() as conn:
                found: list[list[Row]] = []
                for sql, params in statements:
                    result = await conn.execute(text(sql), dict(params))
                    found.append([tuple(r) for r in result.all()] if result.returns_rows else [])
                return found
        except (SQLAlchemyError, OSError) as exc:
            raise _translate(exc) from None

    async def aclose(self) -> None:
        if self._owned and not self._closed:
            self._closed = True
            await self._engine.dispose()
