"""Shared pieces of the benchmark scripts: processes, wrk, parsing. Benchmarks print figures;
they assert nothing about timing."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.processes import BotProcess  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

WRK_SCRIPT = r"""
local counter = 0
local thread_id = 0
local clients = tonumber(os.getenv("BENCH_CLIENTS") or "1000")
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  thread_id = id
end
request = function()
  counter = counter + 1
  local body = string.format(
    '{"message_id":"%s-%d-%d","client_id":"%d","text":"privet","type":"from_client","transport":"whatsapp","channel_id":1}',
    os.getenv("BENCH_RUN") or "r", thread_id, counter, (thread_id * 7919 + counter) % clients)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"max_us\":%d,\"errors_status\":%d,\"errors_connect\":%d,\"errors_timeout\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    summary.errors.status, summary.errors.connect, summary.errors.timeout))
end
"""


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    return wrk


def run_wrk(
    url: str, *, seconds: int, connections: int, threads: int = 1, run_id: str = "r"
) -> dict[str, Any]:
    """One wrk run posting webhook payloads with unique message ids; returns its figures."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT)
        script = f.name
    env = {**os.environ, "BENCH_RUN": run_id}
    out = subprocess.run(
        [require_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", script, url],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    os.unlink(script)
    match = re.search(r"^JSON (.*)$", out, re.M)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    import json

    data: dict[str, Any] = json.loads(match.group(1))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextmanager
def fake_chat2desk() -> Iterator[str]:
    """The fake Chat2Desk API in its own process; yields its API base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.chat2desk", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if "listening" not in line:
            raise RuntimeError("fake chat2desk did not start")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def orderbot(fake_url: str, workdir: Path, **extra: str) -> Iterator[BotProcess]:
    env = {
        "DATABASE_URL": f"sqlite:///{workdir / 'orderbot.db'}",
        "CHAT2DESK_API_URL": fake_url,
        "CHAT2DESK_API_TOKEN": "bench",
        "OUTBOUND_RATE_LIMIT": "6000000",
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    with BotProcess(env, log_path=workdir / "orderbot.log") as bot:
        yield bot


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU time of process ``pid`` so far, with ``children`` that of its
    children that ended too (PostgreSQL's backends). 0.0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def services_cpu() -> dict[str, float]:
    """CPU seconds so far of the local RabbitMQ, Redis and PostgreSQL (shared with anything
    else that uses them meanwhile)."""
    total = {"rabbitmq": 0.0, "redis": 0.0, "postgres": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            continue
        pid = int(entry.name)
        if argv0.endswith("beam.smp"):
            total["rabbitmq"] += cpu_seconds(pid)
        elif argv0.startswith("redis-server"):
            total["redis"] += cpu_seconds(pid)
        elif argv0.endswith("/postgres"):  # the postmaster: ended backends count as children
            total["postgres"] += cpu_seconds(pid, children=True)
        elif argv0.startswith("postgres:"):
            total["postgres"] += cpu_seconds(pid)
    return total


def cpu_probe() -> str:
    """How fast this machine's CPU is right now: the time of a fixed Python loop (best of
    three). On a shared virtual machine it varies by half between minutes; compare figures
    only with similar probes."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return f"CPU probe {best * 1000:.0f} ms (a fixed loop; lower is faster)"


def received_count(fake_url: str) -> int:
    base = fake_url.rsplit("/v1", 1)[0]
    return int(httpx.get(base + "/_received", timeout=30).json()["count"])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")
