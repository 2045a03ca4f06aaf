"""A fault run of the distributed profile, shared by ``bench/faults.py`` (full form) and
``tests/distributed/test_faults.py`` (short form in CI).

Server, two worker processes and one sender run against a private Redis (append-only file on,
restarted once), a private RabbitMQ node (restarted once; when ``rabbitmq-server`` cannot run
here, a TCP proxy to the shared broker is cut and restored instead), the shared PostgreSQL,
and a fake Chat2Desk that fails a mix of sends. Customers hold whole conversations; a webhook
answered 503 (or not at all) is sent again, as Chat2Desk redelivers. Meanwhile a worker is
SIGKILLed every few seconds and started again. At the end the report counts orders, replies
(delivered, duplicated, out of order, missing) and dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx

from tests.distributed.conftest import PG_URL, RABBIT_URL, migrate_postgres, remove_namespace
from tests.distributed.faults import PrivateRabbit, PrivateRedis, TcpProxy
from tests.distributed.test_processes import (
    CONVERSATION,
    Process,
    _blank,
    count_orders,
    expected_texts,
    wait_ready,
)
from tests.support.servers import free_port

__all__ = ["FaultPlan", "FaultReport", "run_faults"]

SHARDS = 8


@dataclass
class FaultPlan:
    conversations: int = 1000
    in_flight: int = 60  # conversations talking at once
    # Start the conversations spread over at least this many seconds, so that webhooks keep
    # arriving through the outages (0: as fast as ``in_flight`` allows).
    talk_for: float = 0.0
    kill_every: float = 4.0  # SIGKILL a worker (the two in turn) this often, then restart it
    rabbit_restart_at: float | None = 10.0  # seconds into the run (None: no restart)
    redis_restart_at: float | None = 20.0
    outage_seconds: float = 3.0  # how long each service stays down
    fail_500: float = 0.20
    fail_429: float = 0.05
    hang: float = 0.02
    retry_after: float = 1.0  # a 429's Retry-After
    hang_seconds: float = 6.0  # past the client's timeout below
    chat2desk_timeout: float = 3.0
    # Time-compressed retries (defaults: 300 s and 30 s), same rules.
    slow_retry: int = 5
    circuit_cooldown: float = 2.0
    shards: int = SHARDS  # QUEUE_SHARDS
    drain_timeout: float = 240.0  # after the last webhook, wait this long for the replies
    workdir: Path | None = None
    log: Any = None  # callable(str) for progress lines


@dataclass
class FaultReport:
    conversations: int = 0
    orders_expected: int = 0
    orders_created: int = 0
    orders_duplicated: int = 0
    orders_missing: int = 0
    replies_expected: int = 0
    replies_delivered: int = 0
    replies_duplicated: int = 0
    replies_out_of_order: int = 0
    replies_missing: int = 0
    dead_lettered: int = 0
    dead_letter_errors: list[str] = field(default_factory=list)
    webhooks_sent: int = 0
    webhooks_503: int = 0
    webhooks_failed: int = 0
    worker_kills: int = 0
    rabbit_restarts: int = 0
    redis_restarts: int = 0
    broker_fault: str = ""
    send_attempts: int = 0
    seconds_sending: float = 0.0
    seconds_total: float = 0.0

    @property
    def perfect(self) -> bool:
        return (
            self.orders_created == self.orders_expected
            and self.orders_duplicated == 0
            and self.replies_delivered == self.replies_expected
            and self.replies_duplicated == 0
            and self.replies_out_of_order == 0
            and self.dead_lettered == 0
        )

    def lines(self) -> list[str]:
        d = asdict(self)
        errors = d.pop("dead_letter_errors")
        out = [
            f"{k:>22}: {v:.1f}" if isinstance(v, float) else f"{k:>22}: {v}" for k, v in d.items()
        ]
        out += [f"{'dead letter':>22}: {e}" for e in errors[:10]]
        return out


@contextlib.contextmanager
def _flaky_fake(workdir: Path) -> Iterator[str]:
    port = free_port()
    log = (workdir / "fake.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.distributed.flaky_chat2desk", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    log.close()
    try:
        assert proc.stdout is not None
        if "listening" not in proc.stdout.readline().decode():
            raise RuntimeError("the fake Chat2Desk did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def _broker(plan: FaultPlan, workdir: Path) -> Iterator[tuple[str, Any, Any, str]]:
    """(url, stop, start, kind): a private node when one can run here (its logs end up in
    ``workdir/rabbitmq``), else a proxy."""
    if PrivateRabbit.available() and os.environ.get("ORDERBOT_FAULTS_PROXY", "") in ("", "0"):
        rabbit = PrivateRabbit(logs_to=workdir / "rabbitmq")
        try:
            rabbit.start()
        except Exception as exc:
            rabbit.__exit__()
            _say(plan, f"private RabbitMQ did not start ({exc}); using a TCP proxy")
        else:
            try:
                yield rabbit.url, rabbit.stop, rabbit.start, "private RabbitMQ node, restarted"
            finally:
                rabbit.__exit__()
            return
    port = int(RABBIT_URL.rsplit(":", 1)[1].split("/")[0])
    with TcpProxy(port) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        yield url, proxy.cut, proxy.restore, "TCP proxy to the shared broker, cut and restored"


def _say(plan: FaultPlan, text: str) -> None:
    if plan.log is not None:
        plan.log(text)


async def run_faults(plan: FaultPlan) -> FaultReport:
    """Run ``plan``; return its report (asserts nothing)."""
    await migrate_postgres()
    workdir = (
        plan.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / f"faults-{uuid.uuid4().hex[:6]}"
    )
    workdir.mkdir(parents=True, exist_ok=True)
    namespace = "f" + uuid.uuid4().hex[:10]
    report = FaultReport(conversations=plan.conversations)
    with (
        PrivateRedis() as redis,
        _broker(plan, workdir) as (rabbit_url, rabbit_stop, rabbit_start, kind),
    ):
        report.broker_fault = kind
        with _flaky_fake(workdir) as fake:
            try:
                await _run(
                    plan,
                    report,
                    workdir,
                    namespace,
                    fake,
                    redis,
                    rabbit_url,
                    rabbit_stop,
                    rabbit_start,
                )
            finally:
                if not os.environ.get("ORDERBOT_FAULTS_KEEP"):
                    with contextlib.suppress(Exception):
                        await remove_namespace(namespace, shards=plan.shards)
    return report


async def _run(
    plan: FaultPlan,
    report: FaultReport,
    workdir: Path,
    namespace: str,
    fake: str,
    redis: PrivateRedis,
    rabbit_url: str,
    rabbit_stop: Any,
    rabbit_start: Any,
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CHAT2DESK_", "WEBHOOK_"))},
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": PG_URL,
        "REDIS_URL": redis.url,
        "RABBITMQ_URL": rabbit_url,
        "QUEUE_PREFIX": namespace,
        "QUEUE_SHARDS": str(plan.shards),
        "CHAT2DESK_API_URL": fake + "/v1",
        "CHAT2DESK_API_TOKEN": "faults-token",
        "CHAT2DESK_TIMEOUT": str(plan.chat2desk_timeout),
        "OUTBOUND_RATE_LIMIT": "600000",
        "WORKER_CONCURRENCY": "20",
        "SHUTDOWN_TIMEOUT": "5",
        "DATABASE_POOL_MIN": "2",
        "DATABASE_POOL_MAX": "5",
        "SEND_RETRY_SLOW_DELAY": str(plan.slow_retry),
        "CIRCUIT_COOLDOWN": str(plan.circuit_cooldown),
        # INFO: shards taken and given back, copies dropped as sent: what a failed run needs.
        "LOG_LEVEL": "INFO",
    }
    url = f"http://127.0.0.1:{port}"
    server = Process(["serve"], env, workdir / "serve.log")
    procs: list[Process] = [server]
    workers: list[Process] = []
    try:
        await wait_ready(url, procs, timeout=60)
        workers = [Process(["worker"], env, workdir / f"worker{n}.log") for n in (1, 2)]
        sender = Process(["sender"], env, workdir / "sender.log")
        procs += [*workers, sender]
        async with httpx.AsyncClient(timeout=30) as http:
            await http.post(
                fake + "/_control",
                json={
                    "mix": {"500": plan.fail_500, "429": plan.fail_429, "hang": plan.hang},
                    "seed": 1,
                    "retry_after": plan.retry_after,
                    "hang_seconds": plan.hang_seconds,
                },
            )
            base = random.randrange(10**8, 10**9)
            clients = [str(base + n) for n in range(plan.conversations)]
            started = time.monotonic()
            talking = asyncio.ensure_future(_talk(plan, report, http, url, clients))
            faults = asyncio.ensure_future(
                _inject(
                    plan, report, workers, env, workdir, redis, rabbit_stop, rabbit_start, talking
                )
            )
            await talking
            report.seconds_sending = time.monotonic() - started
            _say(plan, f"all webhooks in after {report.seconds_sending:.0f}s; draining")
            await faults
            expected = expected_texts()
            total = len(expected) * len(clients)
            last, last_change = -1, time.monotonic()
            while time.monotonic() - last_change < plan.drain_timeout:
                count = (await http.get(fake + "/_count")).json()["count"]
                if count != last:
                    last, last_change = count, time.monotonic()
                    _say(plan, f"replies received {count}/{total}")
                if count >= total:
                    await asyncio.sleep(3)  # anything extra (a duplicate) would show up now
                    break
                await asyncio.sleep(1)
            report.seconds_total = time.monotonic() - started
            received = (await http.get(fake + "/_received")).json()
        report.send_attempts = int(received["attempts"])
        _score(report, received["received"], clients, expected)
        orders = await count_orders(clients)
        report.orders_expected = len(clients)
        report.orders_created = sum(1 for n in orders.values() if n >= 1)
        report.orders_duplicated = sum(n - 1 for n in orders.values() if n > 1)
        report.orders_missing = sum(1 for n in orders.values() if n == 0)
        await _dead_letters(report, rabbit_url, namespace)
        if os.environ.get("ORDERBOT_FAULTS_DEBUG") or not report.perfect:
            await _debug(
                rabbit_url, redis.url, namespace, received["received"], clients, plan.shards
            )
    finally:
        for p in [*workers, *reversed(procs)]:
            with contextlib.suppress(Exception):
                p.terminate(30)
            p.kill()


async def _talk(
    plan: FaultPlan, report: FaultReport, http: httpx.AsyncClient, url: str, clients: list[str]
) -> None:
    gate = asyncio.Semaphore(plan.in_flight)

    async def post(client: str, i: int) -> None:
        body = {
            "message_id": f"{client}-{i}",
            "client_id": client,
            "text": CONVERSATION[i],
            "type": "from_client",
            "transport": "whatsapp",
            "channel_id": 7,
        }
        delay = 0.2
        while True:
            report.webhooks_sent += 1
            try:
                r = await http.post(url + "/webhook/chat2desk", json=body, timeout=15)
                if r.status_code == 200:
                    return
                if r.status_code == 503:
                    report.webhooks_503 += 1
                else:
                    report.webhooks_failed += 1
            except httpx.HTTPError:
                report.webhooks_failed += 1
            await asyncio.sleep(delay)  # Chat2Desk redelivers
            delay = min(delay * 2, 3.0)

    async def conversation(n: int, client: str) -> None:
        await asyncio.sleep(n * plan.talk_for / len(clients))
        async with gate:
            for i in range(len(CONVERSATION)):
                await post(client, i)
                await asyncio.sleep(random.random() * 0.2)

    await asyncio.gather(*(conversation(n, c) for n, c in enumerate(clients)))


async def _inject(
    plan: FaultPlan,
    report: FaultReport,
    workers: list[Process],
    env: dict[str, str],
    workdir: Path,
    redis: PrivateRedis,
    rabbit_stop: Any,
    rabbit_start: Any,
    talking: asyncio.Future[None],
) -> None:
    started = time.monotonic()
    restarted = asyncio.Event()

    async def kill_workers() -> None:
        # Until the webhooks are all in and the restarts are over: a run whose talking ends
        # early (a fast machine) still has its workers killed through both outages.
        turn = 0
        while True:
            await asyncio.sleep(plan.kill_every)
            if talking.done() and restarted.is_set():
                return
            i = turn % len(workers)
            turn += 1
            workers[i].kill()
            report.worker_kills += 1
            workers[i] = Process(["worker"], env, workdir / f"worker{i + 1}.log")

    async def restart(at: float | None, name: str, stop: Any, start: Any) -> None:
        if at is None:
            return
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        _say(plan, f"{name} down")
        await asyncio.to_thread(stop)
        await asyncio.sleep(plan.outage_seconds)
        await asyncio.to_thread(start)
        _say(plan, f"{name} up")
        if name == "RabbitMQ":
            report.rabbit_restarts += 1
        else:
            report.redis_restarts += 1

    # Restarts one after the other (their times are apart), kills beside them.
    async def restarts() -> None:
        try:
            await restart(plan.rabbit_restart_at, "RabbitMQ", rabbit_stop, rabbit_start)
            await restart(plan.redis_restart_at, "Redis", redis.stop, redis.start)
        finally:
            restarted.set()

    await asyncio.gather(kill_workers(), restarts())


def _score(
    report: FaultReport, received: list[dict[str, Any]], clients: list[str], expected: list[str]
) -> None:
    by_client: dict[str, list[str]] = {c: [] for c in clients}
    for body in received:
        found = by_client.get(str(body["client_id"]))
        if found is not None:
            found.append(_blank(str(body["text"])))
    report.replies_expected = len(expected) * len(clients)
    for got in by_client.values():
        # Which expected reply each received one is (buttons arrive appended as text).
        index = []
        for text in got:
            match = [i for i, e in enumerate(expected) if text.startswith(e)]
            index.append(match[0] if match else -1)
        counts = Counter(index)
        report.replies_delivered += sum(1 for i in range(len(expected)) if counts[i] >= 1)
        report.replies_duplicated += sum(n - 1 for i, n in counts.items() if n > 1)
        report.replies_missing += sum(1 for i in range(len(expected)) if counts[i] == 0)
        firsts = [i for n, i in enumerate(index) if i not in index[:n]]
        report.replies_out_of_order += sum(1 for a, b in itertools.pairwise(firsts) if b < a)


async def _dead_letters(report: FaultReport, rabbit_url: str, namespace: str) -> None:
    connection = await aio_pika.connect(rabbit_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{namespace}.dead_letter", passive=True)
        report.dead_lettered = int(queue.declaration_result.message_count or 0)
        for _ in range(min(report.dead_lettered, 10)):
            raw = await queue.get(no_ack=False, fail=False)
            if raw is None:
                break
            h = raw.headers or {}
            error = re.sub(r"\s+", " ", str(h.get("x-orderbot-error")))[:160]
            report.dead_letter_errors.append(
                f"{h.get('x-orderbot-kind')} attempts={h.get('x-orderbot-attempts')} {error}"
            )
    finally:
        await connection.close()


async def _debug(
    rabbit_url: str,
    redis_url: str,
    namespace: str,
    received: list[dict[str, Any]],
    clients: list[str],
    shards: int,
) -> None:
    from redis.asyncio import Redis

    from orderbot.queues.rabbitmq.broker import RabbitBroker

    names = RabbitBroker(rabbit_url, prefix=namespace, shards=shards, retry_delays=(1, 2, 4, 5))
    connection = await aio_pika.connect(rabbit_url)
    try:
        channel = await connection.channel()
        for name in names.all_queues():
            q = await channel.declare_queue(name, passive=True)
            r = q.declaration_result
            print(f"queue {name}: ready {r.message_count} consumers {r.consumer_count}")
    finally:
        await connection.close()
    redis = Redis.from_url(redis_url)
    try:
        for kind in ("hold", "sending", "sent", "lease"):
            keys = [k async for k in redis.scan_iter(match=f"{namespace}:{kind}:*", count=1000)]
            print(f"redis {kind}: {len(keys)}")
            if kind in ("hold", "lease"):
                for k in keys[:10]:
                    print("  ", k, await redis.get(k))
    finally:
        await redis.aclose()
    got = Counter(str(b["client_id"]) for b in received)
    short = [c for c in clients if got[c] < 5]
    print(
        f"clients short of replies: {len(short)}; e.g. {short[:5]} with {[got[c] for c in short[:5]]}"
    )
