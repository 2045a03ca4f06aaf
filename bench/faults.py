"""Fault run of the distributed profile, full form (the CI test runs a short one).

Server, two worker processes and one sender against a private Redis (restarted once), a
private RabbitMQ node (restarted once; a TCP proxy to the shared broker, cut and restored,
where ``rabbitmq-server`` cannot run), the shared PostgreSQL and a fake Chat2Desk answering
20% of sends with 500, 5% with 429 (Retry-After 1 s) and hanging on 2%; a worker is SIGKILLed
every few seconds and started again. Prints what was expected, created, delivered, duplicated,
out of order and dead-lettered. Asserts nothing.

    .venv/bin/python bench/faults.py                      # 1,000 conversations
    .venv/bin/python bench/faults.py --conversations 2000 --kill-every 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.distributed.fault_run import FaultPlan, run_faults  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=100, help="conversations at once")
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between kills")
    parser.add_argument("--rabbit-restart-at", type=float, default=8.0)
    parser.add_argument("--redis-restart-at", type=float, default=20.0)
    parser.add_argument("--outage", type=float, default=3.0, help="seconds each service is down")
    parser.add_argument("--slow-retry", type=int, default=5, help="SEND_RETRY_SLOW_DELAY")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--shards", type=int, default=8, help="QUEUE_SHARDS")
    parser.add_argument(
        "--talk-for",
        type=float,
        default=0.0,
        help="spread the conversations' starts over at least this many seconds",
    )
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    plan = FaultPlan(
        conversations=args.conversations,
        in_flight=args.in_flight,
        kill_every=args.kill_every,
        rabbit_restart_at=args.rabbit_restart_at,
        redis_restart_at=args.redis_restart_at,
        outage_seconds=args.outage,
        slow_retry=args.slow_retry,
        drain_timeout=args.drain_timeout,
        shards=args.shards,
        talk_for=args.talk_for,
        log=lambda line: print(f"  {time.strftime('%H:%M:%S')} {line}", flush=True),
    )
    print(f"fault run, {started}, load average {os.getloadavg()[0]:.2f}")
    print(
        f"  {plan.conversations} conversations, {plan.in_flight} at once; worker SIGKILL every "
        f"{plan.kill_every:g}s; RabbitMQ down at {plan.rabbit_restart_at:g}s, Redis at "
        f"{plan.redis_restart_at:g}s, {plan.outage_seconds:g}s each; Chat2Desk 500 "
        f"{plan.fail_500:.0%} / 429 {plan.fail_429:.0%} / hang {plan.hang:.0%}; slow retry "
        f"{plan.slow_retry}s, circuit cool-down {plan.circuit_cooldown:g}s; QUEUE_SHARDS="
        f"{plan.shards}"
    )
    report = asyncio.run(run_faults(plan))
    print("\n".join(report.lines()))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print("TARGET MET" if report.perfect else "TARGET NOT MET")


if __name__ == "__main__":
    main()
