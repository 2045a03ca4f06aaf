"""Shared fixtures. Tests that need PostgreSQL, Redis or RabbitMQ skip when the service is not
reachable, unless ORDERBOT_REQUIRE_SERVICES=1 (CI), which turns those skips into failures."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orderbot.config import Settings, load_settings
from orderbot.storage import sql as db
from orderbot.storage.sqlite import SqliteDatabase

REQUIRE_SERVICES = os.environ.get("ORDERBOT_REQUIRE_SERVICES", "") not in ("", "0", "false")


def service_available(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, with ORDERBOT_REQUIRE_SERVICES=1, fail) when ``name`` is not reachable."""
    if service_available(host, port):
        return
    reason = f"{name} is not reachable at {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} and ORDERBOT_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{reason} (set ORDERBOT_REQUIRE_SERVICES=1 to make this a failure)")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "orderbot.db"


@pytest.fixture
def settings(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # Tests never read the developer's .env or environment.
    monkeypatch.chdir(db_path.parent)
    for key in list(os.environ):
        if key in Settings.model_fields or key.lower() in Settings.model_fields:
            monkeypatch.delenv(key, raising=False)
    return load_settings(
        database_url=f"sqlite:///{db_path}",
        chat2desk_api_url="http://127.0.0.1:9/v1",
        chat2desk_api_token="test-token",
        outbound_rate_limit=600_000,
        shutdown_timeout=5.0,
    )


@pytest.fixture
async def database(db_path: Path) -> AsyncIterator[SqliteDatabase]:
    await db.upgrade_async(f"sqlite:///{db_path}")
    async with SqliteDatabase(db_path) as database:
        yield database
