"""Database URLs, engines and migrations, shared by every profile.

Everything goes through asyncio drivers (aiosqlite, asyncpg), Alembic included, so no second
(synchronous) PostgreSQL driver is needed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["alembic_config", "async_url", "create_engine", "upgrade", "upgrade_async"]

_MIGRATIONS = Path(__file__).parent / "migrations"


def async_url(url: str) -> str:
    """The URL for the asyncio driver: ``sqlite+aiosqlite:///`` or ``postgresql+asyncpg://``."""
    if url.startswith("sqlite"):
        return "sqlite+aiosqlite:///" + url.partition(":///")[2]
    _, _, rest = url.partition("://")
    return "postgresql+asyncpg://" + rest


def create_engine(url: str, *, pool_size: int = 5, max_overflow: int = 15) -> AsyncEngine:
    if url.startswith("sqlite"):
        return create_async_engine(async_url(url), connect_args={"timeout": 10})
    return create_async_engine(async_url(url), pool_size=pool_size, max_overflow=max_overflow)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return cfg


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Idempotent; safe while the bot is running."""
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
