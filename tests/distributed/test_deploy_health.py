"""The health checks of ``compose.yaml`` and the ``Dockerfile``, run as written against real
``orderbot serve``, ``worker`` and ``sender`` processes: they pass while the processes work, and
the worker's and sender's fail when their heartbeat stops (a hung loop is restarted)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.distributed.conftest import migrate_postgres, remove_namespace, require_services
from tests.distributed.test_processes import SHARDS, Process, environment, wait_ready
from tests.fakes.chat2desk import ThreadedFakeChat2Desk
from tests.support.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake() -> Iterator[ThreadedFakeChat2Desk]:
    with ThreadedFakeChat2Desk(token="dist-token") as fake:
        yield fake


@pytest.fixture
def namespace() -> Iterator[str]:
    require_services()
    ns = "h" + uuid.uuid4().hex[:10]
    yield ns
    asyncio.run(remove_namespace(ns, shards=SHARDS))


def compose_check(name: str, port: int, tmp: Path) -> list[str]:
    """The service's health-check command, pointed at this test's port and temporary dir."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    kind, program, *args = compose["services"][name]["healthcheck"]["test"]
    assert (kind, program) == ("CMD", "python")
    return [sys.executable, *(_local(a, port, tmp) for a in args)]


def dockerfile_check(port: int) -> list[str]:
    found = re.search(r'^\s+CMD python -c "(.+)"$', (ROOT / "Dockerfile").read_text(), re.M)
    assert found is not None, "no HEALTHCHECK CMD python -c in the Dockerfile"
    return [sys.executable, "-c", _local(found.group(1), port, Path("/tmp"))]


def _local(arg: str, port: int, tmp: Path) -> str:
    return arg.replace("127.0.0.1:3000", f"127.0.0.1:{port}").replace("/tmp/", f"{tmp}/")


def passes(command: list[str]) -> bool:
    return subprocess.run(command, capture_output=True, timeout=10).returncode == 0


async def until_passes(command: list[str], procs: list[Process], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not passes(command):
        for p in procs:
            assert p.popen.poll() is None, f"{p.args} exited:\n{p.log()}"
        assert time.monotonic() < deadline, f"{command[-1]} never passed"
        await asyncio.sleep(0.5)


async def test_the_health_checks_pass_on_working_processes_and_catch_a_stopped_beat(
    fake: ThreadedFakeChat2Desk, namespace: str, tmp_path: Path
) -> None:
    await migrate_postgres()
    port = free_port()
    # The heartbeat files go to $TMPDIR: in the image that is /tmp, as the checks expect.
    env = {**environment(namespace, fake, port), "TMPDIR": str(tmp_path)}
    url = f"http://127.0.0.1:{port}"
    server_check = compose_check("server", port, tmp_path)
    assert not passes(server_check), "the server check passes with no server"
    procs = [Process(["serve"], env, tmp_path / "serve.log")]
    try:
        await wait_ready(url, procs)
        assert passes(server_check)  # /health: 200 with every service up
        assert passes(dockerfile_check(port))  # /live
        for role in ("worker", "sender"):
            check = compose_check(role, port, tmp_path)
            assert not passes(check), f"the {role} check passes before the {role} runs"
            proc = Process([role], env, tmp_path / f"{role}.log")
            procs.append(proc)
            await until_passes(check, procs)
            # A beat that stopped 60 s ago fails the check; the running loop beats again.
            beat = tmp_path / f"orderbot-{role}.alive"
            old = time.time() - 60
            os.utime(beat, (old, old))
            assert not passes(check), f"the {role} check passes on a stale heartbeat"
            await until_passes(check, procs, timeout=15)
        # A stopped process beats no more: its check fails once the beat is stale.
        worker = procs[1]
        assert worker.terminate() == 0, worker.log()
        beat = tmp_path / "orderbot-worker.alive"
        old = time.time() - 60
        os.utime(beat, (old, old))
        await asyncio.sleep(6)  # longer than the beat's interval (5 s)
        assert not passes(compose_check("worker", port, tmp_path))
    finally:
        codes = [p.terminate() for p in reversed(procs)]
        for p in procs:
            p.kill()
    assert set(codes) == {0}, "\n".join(p.log()[-2000:] for p in procs)
