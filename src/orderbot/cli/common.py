"""What every ``orderbot`` command shares: reading the settings, running a coroutine, failing
with one line and an exit code, and checking that the configured database is there to use.

It is its own module so that the command modules can share it without importing
:mod:`orderbot.cli`, which imports them to register their commands: no import cycle, and the
order of the commands in ``--help`` is set in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import typer

from orderbot.config import Settings, load_settings
from orderbot.errors import ConfigError

__all__ = ["fail", "read_settings", "require_database", "require_sqlite", "run_async"]

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
