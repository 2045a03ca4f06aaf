"""Database URLs, engines and migrations, shared by every profile.

Everything goes through asyncio drivers (aiosqlite, asyncpg), Alembic included, so no second
(synchronous) PostgreSQL driver is needed.

Alembic and SQLAlchemy are imported only where used: the embedded server's hot path is plain
sqlite3, and not loading them keeps ``orderbot run`` about 30 MB smaller. Whether a SQLite file
is already at the newest revision is read with sqlite3 (:func:`schema_is_current`).

On PostgreSQL, every string a statement sends loses its NUL characters (PostgreSQL text cannot
hold them, and one in a customer's message failed the whole write; ingress refuses control
characters, this is the defence in depth for what is already queued), and
:func:`refused_data` tells a write PostgreSQL refuses for its values (the same every time) from
an outage (worth waiting for).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderbot.errors import INSTALL_DISTRIBUTED, ConfigError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "alembic_config",
    "async_url",
    "create_engine",
    "driver_error_name",
    "head_revision",
    "refused_data",
    "schema_is_current",
    "upgrade",
    "upgrade_async",
]

_MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r"^revision(?:: str)? = ['\"]([^'\"]+)['\"]", re.M)
_DOWN = re.compile(r"^down_revision(?:: str \| None)? = ['\"]([^'\"]+)['\"]", re.M)


@cache
def head_revision() -> str:
    """The newest migration, read from the version files (no Alembic import)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        if match := _REVISION.search(text):
            revisions.add(match.group(1))
        if match := _DOWN.search(text):
            parents.add(match.group(1))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have exactly one head, found {sorted(heads)}")
    return heads.pop()


def schema_is_current(url: str) -> bool:
    """True when ``url`` is a SQLite file already migrated to :func:`head_revision`."""
    if not url.startswith("sqlite"):
        return False
    path = Path(url.partition(":///")[2])
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == head_revision()


def async_url(url: str) -> str:
    """The URL for the asyncio driver: ``sqlite+aiosqlite:///`` or ``postgresql+asyncpg://``."""
    if url.startswith("sqlite"):
        return "sqlite+aiosqlite:///" + url.partition(":///")[2]
    _, _, rest = url.partition("://")
    return "postgresql+asyncpg://" + rest


def create_engine(url: str, *, pool_size: int = 5, max_overflow: int = 15) -> AsyncEngine:
    from sqlalchemy.ext.asyncio import create_async_engine

    if url.startswith("sqlite"):
        return create_async_engine(async_url(url), connect_args={"timeout": 10})
    import importlib.util

    if importlib.util.find_spec("asyncpg") is None:
        raise ConfigError(f"DATABASE_URL is PostgreSQL, which needs asyncpg: {INSTALL_DISTRIBUTED}")
    from sqlalchemy import event

    engine = create_async_engine(async_url(url), pool_size=pool_size, max_overflow=max_overflow)
    event.listen(engine.sync_engine, "before_cursor_execute", _strip_nul, retval=True)
    return engine


def refused_data(exc: BaseException) -> bool:
    """True when ``exc`` is PostgreSQL (or asyncpg, before sending) refusing the values of a
    statement: SQLSTATE class 22, "data exception" (a string too long for its column, a number
    out of range, a character the encoding cannot hold). The same statement with the same
    values fails the same way every time; an outage does not have this class. So is an error
    SQLAlchemy raises while it turns the values into parameters, before the database is asked."""
    from sqlalchemy.exc import DBAPIError, StatementError

    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return True
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")


def driver_error_name(exc: BaseException) -> str:
    """The driver's error class behind a SQLAlchemy error (``StringDataRightTruncationError``),
    for logs: the error's message may quote the values, personal data included."""
    cause = getattr(getattr(exc, "orig", None), "__cause__", None) or exc
    return type(cause).__name__


def _strip_nul(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    """A ``before_cursor_execute`` hook: the statement's parameters without NUL characters
    (positional, as asyncpg takes them; a list of them for executemany; arrays for unnest)."""
    if executemany:
        if any(_has_nul(row) for row in parameters):
            parameters = [tuple(_without_nul(v) for v in row) for row in parameters]
    elif _has_nul(parameters):
        parameters = tuple(_without_nul(v) for v in parameters)
    return statement, parameters


def _has_nul(values: Any) -> bool:
    for value in values:
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, list) and any(isinstance(v, str) and "\x00" in v for v in value):
            return True
    return False


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [v.replace("\x00", "") if isinstance(v, str) else v for v in value]
    return value


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return cfg


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Idempotent; safe while the bot is running."""
    from alembic import command
    from sqlalchemy.engine import Connection

    if url.startswith("sqlite"):
        Path(url.partition(":///")[2]).parent.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:

            def run(sync_conn: Connection) -> None:
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, revision)

            await conn.run_sync(run)
    finally:
        await engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    asyncio.run(upgrade_async(url, revision))
