"""The workers' housekeeping on the distributed profile: each job (handoff timeouts, unpublished
notifications, handoff-flag repair, idle dialogs, upload cleanup, stranded shards) runs and
fails on its own, logged and counted in ``orderbot_housekeeping_failures_total{job=...}``; a
pending notification left by a change for an impossible order id (``PATCH
/api/orders/9223372036854775808``) is dropped instead of failing every round."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from orderbot.distributed_runtime import DistributedRuntime
from tests.distributed.conftest import (
    distributed_settings,
    eventually,
    migrate_postgres,
    remove_namespace,
    require_services,
)

pytestmark = [pytest.mark.timeout(60)]

JOBS = (
    "handoff_timeouts",
    "unpublished_notifications",
    "handoff_flags",
    "idle_dialogs",
    "upload_cleanup",
    "stranded_shards",
)


@pytest.fixture
async def runtime() -> AsyncIterator[DistributedRuntime]:
    require_services()
    await migrate_postgres()
    namespace = "h" + uuid.uuid4().hex[:10]
    found = DistributedRuntime(distributed_settings(namespace), roles=("worker",), channels={})
    await found.open()
    try:
        yield found
    finally:
        await found.aclose()
        await remove_namespace(namespace)


def failures(job: str) -> float:
    return REGISTRY.get_sample_value("orderbot_housekeeping_failures_total", {"job": job}) or 0.0


def record_calls(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Note each job's call (under its metric label) as the job runs."""
    called: list[str] = []
    targets = {
        "handoff_timeouts": (runtime.admin, "expire_handoffs"),
        "unpublished_notifications": (runtime.admin, "republish_notifications"),
        "handoff_flags": (runtime.admin, "restore_handoff_flags"),
        "idle_dialogs": (runtime.store, "abandon_idle"),
        "upload_cleanup": (runtime, "_remove_unlinked_files"),
        "stranded_shards": (runtime.broker, "stranded_shards"),
    }
    for job, (owner, name) in targets.items():
        original = getattr(owner, name)

        async def recorded(*args: Any, _job: str = job, _original: Any = original) -> Any:
            called.append(_job)
            return await _original(*args)

        monkeypatch.setattr(owner, name, recorded)
    return called


async def one_round(runtime: Any, called: list[str]) -> None:
    task = asyncio.create_task(runtime._housekeeping())
    try:
        await eventually(lambda: len(called) >= len(JOBS))
    finally:
        runtime._stop.set()
        await task


async def test_a_failing_job_is_logged_and_counted_and_the_others_still_run(
    runtime: DistributedRuntime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    called = record_calls(runtime, monkeypatch)
    before = {job: failures(job) for job in JOBS}
    recorded_expire = runtime.admin.expire_handoffs

    async def broken() -> int:
        await recorded_expire()
        raise RuntimeError("housekeeping bug (test)")

    monkeypatch.setattr(runtime.admin, "expire_handoffs", broken)
    with caplog.at_level(logging.ERROR, logger="orderbot"):
        await one_round(runtime, called)
    assert called == list(JOBS)  # the first failed, every other one ran after it
    assert "housekeeping job handoff_timeouts failed" in caplog.text
    assert "RuntimeError: housekeeping bug (test)" in caplog.text
    assert failures("handoff_timeouts") - before["handoff_timeouts"] == 1
    assert all(failures(job) == before[job] for job in JOBS[1:])


async def test_a_pending_notification_for_an_impossible_order_id_is_dropped(
    runtime: DistributedRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What PATCH /api/orders/9223372036854775808 left before the API refused such ids: the
    # change was noted as pending, then PostgreSQL refused the id.
    pending = runtime.keys.pending_notifications()
    noted = time.time() - 60
    await runtime.redis.zadd(pending, {f"9223372036854775808:{noted!r}": noted})
    called = record_calls(runtime, monkeypatch)
    before = failures("unpublished_notifications")
    await one_round(runtime, called)
    assert failures("unpublished_notifications") == before
    assert await runtime.redis.zcard(pending) == 0  # dropped, not tried again every minute
