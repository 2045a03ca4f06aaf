"""What every ``orderbot`` command shares: reading the settings, running a coroutine, failing
with one line and an exit code, and checking that the configured database is there to use.

It is its own module so that the command modules can share it without importing
:mod:`orderbot.cli`, which imports them to register their commands: no import cycle, and the
order of the commands in ``--help`` is set in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from orderbot.config import Settings, load_settings
from orderbot.errors import ConfigError

if TYPE_CHECKING:
    from orderbot.web.console.sql.base import SqlRunner

__all__ = [
    "fail",
    "open_sql_runner",
    "read_settings",
    "require_database",
    "require_sqlite",
    "run_async",
]

T = TypeVar("T")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def read_settings(**overrides: Any) -> Settings:
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def run_async(coro: Awaitable[T]) -> T:
    return asyncio.run(_wrap(coro))


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


def require_sqlite(settings: Settings) -> None:
    if not settings.is_sqlite:
        raise ConfigError(
            "DATABASE_URL: `orderbot run` is the embedded profile and needs sqlite:///FILE"
        )


def require_database(settings: Settings) -> None:
    if settings.is_sqlite and not settings.sqlite_path.exists():
        raise fail(
            f"no database at {settings.sqlite_path} (run `orderbot run` or `orderbot db upgrade`)"
        )


@asynccontextmanager
async def open_sql_runner(settings: Settings, *, migrate: bool) -> AsyncIterator[SqlRunner]:
    """The console's SQL reads on either profile with only DATABASE_URL: SQLite through the
    embedded single-writer connection, PostgreSQL through SQLAlchemy. With ``migrate``, the
    schema is brought up to date first; without, a missing SQLite file stops the command."""
    from orderbot.storage import sql as database

    if migrate and not database.schema_is_current(settings.database_url):
        await database.upgrade_async(settings.database_url)
    else:
        require_database(settings)
    if settings.is_sqlite:
        from orderbot.storage.sqlite import SqliteDatabase
        from orderbot.web.console.sql.sqlite import SqliteRunner

        async with SqliteDatabase(
            settings.sqlite_path, synchronous=settings.sqlite_synchronous
        ) as db:
            runner = SqliteRunner(db)
            try:
                yield runner
            finally:
                await runner.aclose()
        return
    from orderbot.web.console.sql.postgres import PostgresRunner

    postgres = PostgresRunner(database.create_engine(settings.database_url), owned=True)
    try:
        yield postgres
    finally:
        await postgres.aclose()
