"""End to end on the distributed profile: webhook -> `orderbot serve` -> RabbitMQ -> two
`orderbot worker` processes -> `orderbot sender` -> fake Chat2Desk (another process).

    python bench/distributed_e2e.py [--clients 2000] [--concurrency 64] [--runs 3]

The same measurements as ``bench/e2e.py``: messages/s for whole water-delivery dialogs, then
open-loop latency (webhook sent -> first reply received) at half that rate, split into
"webhook -> 200" (stored: RabbitMQ confirmed) and "200 -> reply"; plus the resident memory of
every process. Shared RabbitMQ, Redis and PostgreSQL, a throwaway queue prefix.
Prints medians and the load average (the machine is shared); asserts nothing.
"""

from __future__ import annotations  # noqa: I001 - _common puts the repository on sys.path

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from _common import cpu_probe, cpu_seconds, fake_chat2desk, free_port, median, rss_mb, services_cpu
from e2e import DIALOG, ORIGINAL_WORKER_RATE, latency, pct, throughput

from tests.distributed.conftest import (
    PG_URL,
    RABBIT_URL,
    REDIS_URL,
    migrate_postgres,
    remove_namespace,
)

SHARDS = 8


def start(role: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "orderbot", role], env=env, stdout=out, stderr=out
        )
    finally:
        out.close()


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("orderbot serve did not become ready")


def cpu_snapshot(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds so far of each orderbot process, the bench client, the fake Chat2Desk and
    the services."""
    snapshot = {name: cpu_seconds(proc.pid) for name, proc in procs.items()}
    snapshot["bench client"] = cpu_seconds(os.getpid())
    snapshot["fake Chat2Desk"] = sum(
        cpu_seconds(int(entry.name))
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and b"tests.fakes.chat2desk" in _cmdline(entry)
    )
    snapshot.update(services_cpu())
    return snapshot


def _cmdline(entry: Path) -> bytes:
    try:
        return (entry / "cmdline").read_bytes()
    except OSError:
        return b""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--worker-concurrency", default="32")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=SHARDS, help="QUEUE_SHARDS")
    parser.add_argument(
        "--light-rate", type=float, default=20.0, help="also measure latency at this rate (0: no)"
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="measure the main latency at this rate instead of half the measured throughput",
    )
    args = parser.parse_args()
    prefix = "bench" + uuid.uuid4().hex[:8]
    print(
        f"distributed e2e: {args.runs} runs; {args.clients} dialogs x {len(DIALOG)} messages, "
        f"{args.concurrency} clients at a time; serve + {args.workers} workers "
        f"(WORKER_CONCURRENCY={args.worker_concurrency}) + 1 sender; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at the start; {cpu_probe()}"
    )
    asyncio.run(migrate_postgres())
    port = free_port()
    logs = Path(f"/tmp/{prefix}")
    logs.mkdir()
    rates, p50s, p99s = [], [], []
    rss: dict[str, float] = {}
    cpu_ms: dict[str, list[float]] = {}
    light_p50s: list[float] = []
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with fake_chat2desk() as fake_url:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("CHAT2DESK_")},
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "DATABASE_URL": PG_URL,
                "REDIS_URL": REDIS_URL,
                "RABBITMQ_URL": RABBIT_URL,
                "QUEUE_PREFIX": prefix,
                "QUEUE_SHARDS": str(args.shards),
                "CHAT2DESK_API_URL": fake_url,
                "CHAT2DESK_API_TOKEN": "bench",
                "OUTBOUND_RATE_LIMIT": "6000000",
                "WORKER_CONCURRENCY": args.worker_concurrency,
                "LOG_LEVEL": "WARNING",
            }
            procs["server"] = start("serve", env, logs / "serve.log")
            bot_url = f"http://127.0.0.1:{port}"
            wait_ready(bot_url)
            for n in range(args.workers):
                procs[f"worker{n + 1}"] = start("worker", env, logs / f"worker{n + 1}.log")
            procs["sender"] = start("sender", env, logs / "sender.log")
            time.sleep(4)  # the workers share the shards out
            asyncio.run(throughput(bot_url, fake_url, 200, args.concurrency, run=99))  # warm-up
            for run in range(args.runs):
                load = os.getloadavg()[0]
                cpu_before = cpu_snapshot(procs)
                t = asyncio.run(throughput(bot_url, fake_url, args.clients, args.concurrency, run))
                cpu_used = {
                    name: seconds - cpu_before[name]
                    for name, seconds in cpu_snapshot(procs).items()
                }
                for name, seconds in cpu_used.items():
                    cpu_ms.setdefault(name, []).append(1000 * seconds / t["messages"])
                rates.append(t["rate"])
                rate = args.latency_rate or t["rate"] / 2
                found = asyncio.run(latency(bot_url, fake_url, rate, args.latency_seconds, run))
                lat = found.total
                p50s.append(pct(lat, 0.5))
                p99s.append(pct(lat, 0.99))
                for name, proc in procs.items():
                    rss[name] = max(rss.get(name, 0.0), rss_mb(proc.pid))
                light = ""
                if args.light_rate:
                    lows = asyncio.run(
                        latency(bot_url, fake_url, args.light_rate, args.latency_seconds, run + 50)
                    )
                    low = lows.total
                    light_p50s.append(pct(low, 0.5))
                    light = (
                        f"; at {args.light_rate:g} msg/s: p50 {pct(low, 0.5):.1f} ms, p99 "
                        f"{pct(low, 0.99):.1f} ms ({lows.split()})"
                    )
                print(
                    f"  run {run} (load avg {load:.1f}): {t['rate']:.0f} messages/s end to end "
                    f"({t['messages']} in {t['seconds']:.1f} s; webhooks accepted at "
                    f"{t['ingress_rate']:.0f}/s); at {rate:.0f} msg/s: p50 "
                    f"{pct(lat, 0.5):.1f} ms, p90 {pct(lat, 0.9):.1f} ms, p99 "
                    f"{pct(lat, 0.99):.1f} ms ({len(lat)} samples; {found.split()}){light}",
                    flush=True,
                )
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(30)
        asyncio.run(remove_namespace(prefix, shards=args.shards))
    print(
        f"distributed, end to end: {median(rates):.0f} messages/s (median); latency at half "
        f"load p50 {median(p50s):.1f} ms, p99 {median(p99s):.1f} ms"
    )
    if light_p50s:
        print(f"latency at {args.light_rate:g} msg/s: p50 {median(light_p50s):.1f} ms (median)")
    print("RSS max: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in rss.items()))
    print(
        "CPU per message during the throughput runs (median ms; services shared with anything"
        " else running): "
        + ", ".join(f"{name} {median(values):.2f}" for name, values in cpu_ms.items())
        + f"; total {sum(median(values) for values in cpu_ms.values()):.2f} ms"
        f" = a ceiling of {1000 * (os.cpu_count() or 1) / max(0.001, sum(median(v) for v in cpu_ms.values())):.0f}"
        " messages/s on this machine"
    )
    print(f"original worker (reference): {ORIGINAL_WORKER_RATE} messages/s at concurrency 5")
    print(f"load average at the end {os.getloadavg()[0]:.2f}; {cpu_probe()}")


if __name__ == "__main__":
    main()
