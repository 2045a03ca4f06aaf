"""Webhook ingress on the distributed profile: `orderbot serve` answers 200 only after RabbitMQ
confirmed the message (publisher confirms, persistent, durable shard queue). Beside it, the
limit it is measured against: a minimal ASGI app that only publishes each body with a confirm.

    python bench/distributed_ingress.py [--runs 3] [--seconds 10] [--connections 64] [--shards 8]
                                        [--one-at-a-time]

Uses the shared RabbitMQ, Redis and PostgreSQL (ORDERBOT_TEST_* URLs, else the local defaults)
under a throwaway queue prefix, removed afterwards. No worker runs, so the queues only grow.
Prints medians over the runs and the load average (the machine is shared); asserts nothing.
"""

from __future__ import annotations  # noqa: I001 - _common puts the repository on sys.path

import argparse
import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from _common import cpu_probe, ROOT, free_port, median, rss_mb, run_wrk, wait_port

from tests.distributed.conftest import (
    PG_URL,
    RABBIT_URL,
    REDIS_URL,
    migrate_postgres,
    remove_namespace,
)
from tests.support.processes import BotProcess

SHARDS = 8


def publish_app(queue: str) -> Any:
    """The limit: read the body, publish it persistently with a confirm, answer 200."""
    import aio_pika

    state: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    connection = await aio_pika.connect_robust(RABBIT_URL)
                    channel = await connection.channel(publisher_confirms=True)
                    await channel.declare_queue(queue, durable=True)
                    state.update(connection=connection, channel=channel)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await state["connection"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status = 200
        if body:
            await state["channel"].default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue,
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"success":true}'})

    return app


def serve_reference(port: int, queue: str) -> None:
    import uvicorn

    uvicorn.run(
        publish_app(queue),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
        backlog=4096,
    )


def measure(url: str, args: argparse.Namespace, name: str, pid: int) -> list[dict[str, Any]]:
    run_wrk(url, seconds=2, connections=args.connections, run_id=f"{name}-warm")
    if args.one_at_a_time:
        # The floor: no queueing in the server, only its own work and the broker's confirm.
        one = run_wrk(url, seconds=args.seconds, connections=1, run_id=f"{name}-one")
        print(
            f"  {name}, one request at a time (wrk -c1): {one['rps']:.0f} req/s, p50 "
            f"{one['p50_us'] / 1000:.2f} ms, p99 {one['p99_us'] / 1000:.2f} ms",
            flush=True,
        )
    runs = []
    for i in range(args.runs):
        load = os.getloadavg()[0]
        run = run_wrk(url, seconds=args.seconds, connections=args.connections, run_id=f"{name}-{i}")
        run["load"] = load
        run["rss"] = rss_mb(pid)
        runs.append(run)
    return runs


def report(name: str, runs: list[dict[str, Any]]) -> None:
    rps = median([r["rps"] for r in runs])
    p50 = median([r["p50_us"] for r in runs]) / 1000
    p99 = median([r["p99_us"] for r in runs]) / 1000
    errors = sum(r["errors_status"] + r["errors_connect"] + r["errors_timeout"] for r in runs)
    each = ", ".join(f"{r['rps']:.0f}" for r in runs)
    loads = ", ".join(f"{r['load']:.1f}" for r in runs)
    print(
        f"{name:<46} {rps:>7.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  errors {errors}  "
        f"RSS {max(r['rss'] for r in runs):.0f} MB  (runs: {each}; load avg before each: {loads})"
    )


def orderbot_serve(args: argparse.Namespace, prefix: str, workers: int) -> list[dict[str, Any]]:
    port = free_port()
    env = {
        "DATABASE_URL": PG_URL,
        "REDIS_URL": REDIS_URL,
        "RABBITMQ_URL": RABBIT_URL,
        "QUEUE_PREFIX": prefix,
        "QUEUE_SHARDS": str(args.shards),
        "CHAT2DESK_API_URL": "http://127.0.0.1:9/v1",
        "CHAT2DESK_API_TOKEN": "bench",
        "LOG_LEVEL": "WARNING",
        "PORT": str(port),
    }
    log = Path(f"/tmp/{prefix}-serve.log")
    bot = BotProcess(env, log_path=log, port=port)
    bot.process = subprocess.Popen(
        [sys.executable, "-m", "orderbot", "serve", "--workers", str(workers)],
        env=bot.env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port, timeout=60)
        return measure(bot.url + "/webhook/chat2desk", args, f"serve{workers}", bot.process.pid)
    finally:
        bot.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--shards", type=int, default=SHARDS, help="QUEUE_SHARDS")
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="also measure one request at a time (wrk -c1): the latency floor",
    )
    parser.add_argument("--serve-reference", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_reference:
        serve_reference(args.port, args.serve_reference)
        return

    prefix = "bench" + uuid.uuid4().hex[:8]
    print(
        f"distributed ingress: {args.runs} runs x {args.seconds} s, {args.connections} "
        f"connections, wrk -t1, QUEUE_SHARDS={args.shards}, medians; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} at the start; {cpu_probe()}"
    )
    asyncio.run(migrate_postgres())
    try:
        report("orderbot serve (1 process), 200 = confirmed", orderbot_serve(args, prefix, 1))
        report("orderbot serve --workers 2", orderbot_serve(args, prefix, 2))
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve-reference",
                f"{prefix}.reference",
                "--port",
                str(port),
            ],
            cwd=ROOT,
        )
        try:
            wait_port(port, timeout=30)
            report(
                "limit: bare ASGI, publish + confirm only",
                measure(f"http://127.0.0.1:{port}/webhook/chat2desk", args, "reference", proc.pid),
            )
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        asyncio.run(remove_namespace(prefix, shards=args.shards))
        asyncio.run(_delete_queue(f"{prefix}.reference"))
    print(f"load average at the end {os.getloadavg()[0]:.2f}; {cpu_probe()}")


async def _delete_queue(name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await connection.channel()
        await channel.queue_delete(name)
    finally:
        await connection.close()


if __name__ == "__main__":
    main()
