"""One interface for running the console's SQL on either profile.

The console's statements are written once, in the SQL both SQLite and PostgreSQL accept, with
``:name`` parameters (which sqlite3 and SQLAlchemy's ``text()`` both understand). A runner only
executes them: :class:`~orderbot.web.console.sql.sqlite.SqliteRunner` through the embedded
profile's single-writer connection (no SQLAlchemy loaded), and
:class:`~orderbot.web.console.sql.postgres.PostgresRunner` on an ``AsyncEngine``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = ["Params", "Row", "SqlRunner", "Statement"]

Row = tuple[Any, ...]
Params = Mapping[str, Any]
Statement = tuple[str, Params]


class SqlRunner(ABC):
    """Runs the console's statements. Failures raise :class:`~orderbot.errors.StorageError`
    (:class:`~orderbot.errors.BackendUnavailable` when the database cannot be reached)."""

    dialect: ClassVar[str]

    @abstractmethod
    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        """The rows of one query."""

    @abstractmethod
    async def transaction(self, statements: Sequence[Statement]) -> list[list[Row]]:
        """Run ``statements`` in one transaction; for each, the rows it returned (``RETURNING``),
        or an empty list."""

    async def execute(self, sql: str, params: Params | None = None) -> list[Row]:
        """One statement in its own transaction; the rows it returned."""
        (rows,) = await self.transaction([(sql, params or {})])
        return rows

    async def aclose(self) -> None:  # noqa: B027 - optional: runners that own nothing
        """Release what the runner owns. Idempotent."""
