"""The workers' housekeeping on the distributed profile: each job (handoff timeouts, unpublished
notifications, handoff-flag repair, idle dialogs, upload cleanup, stranded shards) runs and
fails on its own, logged and counted in ``orderbot_housekeeping_failures_total{job=...}``; a
pending notification left by a change for an impossible order id (``PATCH
/api/orders/9223372036854775808``) is dropped instead of failing every round."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from orderbot.runtime.distributed import DistributedRuntime
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
    "reminders",
    "upload_cleanup",
    "stranded_shards",
)


RECORDED = (
    "handoff_timeouts",
    "unpublished_notifications",
    "handoff_flags",
    "idle_dialogs",
    "reminders",
)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[DistributedRuntime]:
    require_services()
    await migrate_postgres()
    namespace = "h" + uuid.uuid4().hex[:10]
    settings = distributed_settings(namespace, upload_dir=tmp_path, upload_retention=60)
    found = DistributedRuntime(settings, roles=("worker",), channels={})
    await found.open()
    try:
        yield found
    finally:
        await found.aclose()
        await remove_namespace(namespace)


def failures(job: str) -> float:
    return REGISTRY.get_sample_value("orderbot_housekeeping_failures_total", {"job": job}) or 0.0


def record_calls(runtime: DistributedRuntime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Note each job's call (under its metric label) as the job runs; the upload cleanup shows
    by the file it removes (see :func:`unused_upload`)."""
    called: list[str] = []
    targets: dict[str, tuple[Any, str]] = {
        "handoff_timeouts": (runtime.admin, "expire_handoffs"),
        "unpublished_notifications": (runtime.admin, "republish_notifications"),
        "handoff_flags": (runtime.admin, "restore_handoff_flags"),
        "idle_dialogs": (runtime.store, "abandon_idle"),
        "reminders": (runtime.store, "idle_dialogs"),
        "stranded_shards": (runtime.broker, "stranded_shards"),
    }
    for job, (owner, name) in targets.items():
        original = getattr(owner, name)

        async def recorded(*args: Any, _job: str = job, _original: Any = original) -> Any:
            called.append(_job)
            return await _original(*args)

        monkeypatch.setattr(owner, name, recorded)
    return called


def unused_upload(runtime: DistributedRuntime) -> Path:
    """An uploaded file no order uses, older than UPLOAD_RETENTION: the cleanup removes it."""
    path = runtime.settings.upload_dir / ("0" * 64 + ".stl")
    path.write_bytes(b"solid x\nendsolid x\n")
    old = time.time() - 3600
    os.utime(path, (old, old))
    return path


async def one_round(runtime: DistributedRuntime, called: list[str]) -> None:
    runtime.start()  # the housekeeping runs at once, then every minute
    try:
        await eventually(lambda: "stranded_shards" in called)  # the last job of a round
    finally:
        await runtime.stop()


async def test_a_failing_job_is_logged_and_counted_and_the_others_still_run(
    runtime: DistributedRuntime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    called = record_calls(runtime, monkeypatch)
    upload = unused_upload(runtime)
    before = {job: failures(job) for job in JOBS}
    recorded_expire = runtime.admin.expire_handoffs

    async def broken() -> int:
        await recorded_expire()
        raise RuntimeError("housekeeping bug (test)")

    monkeypatch.setattr(runtime.admin, "expire_handoffs", broken)
    with caplog.at_level(logging.ERROR, logger="orderbot"):
        await one_round(runtime, called)
    # The first job failed; every other one ran after it.
    assert called == [*RECORDED, "stranded_shards"]
    assert not upload.exists()
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
    upload = unused_upload(runtime)
    before = {job: failures(job) for job in JOBS}
    await one_round(runtime, called)
    assert called == [*RECORDED, "stranded_shards"]
    assert not upload.exists()
    assert all(failures(job) == before[job] for job in JOBS)
    assert await runtime.redis.zcard(pending) == 0  # dropped, not tried again every minute
