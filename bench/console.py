"""The console with a shop's worth of history: 100,000 orders (a fifth with catalog lines),
140,000 dialog outcomes and a message log, on either profile. Prints the request time (p50,
p99; sequential requests over localhost, so an upper bound of the server time) of the pages an
operator opens all day, and the delay from a customer's confirming webhook to the order being
on the board's poll (the browser polls every POLL_MS of static/console.js on top of that).

    .venv/bin/python bench/console.py [--profile embedded|distributed|both] [--orders 100000]

The distributed run needs PostgreSQL, Redis and RabbitMQ; it uses a database and a queue
prefix of its own and removes both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import cpu_probe, fake_chat2desk, received_count  # noqa: E402
from tests.support.processes import BotProcess  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

PASSWORD = "bench-password-1"
DAY = 86400.0
STATUSES = ["new", "confirmed", "in_progress", "ready", "delivered", "cancelled"]
STREETS = ["ул. Киевская", "пр. Чуй", "ул. Токтогула", "ул. Ахунбаева", "Chui avenue"]
STEPS = ["WAITING_ADDRESS", "WAITING_PHONE", "WAITING_QUANTITY", "WAITING_CONFIRMATION"]


async def seed(url: str, count: int) -> int:
    """Fill the database at ``url`` (migrated) with history; the newest order's id."""
    import orjson
    from sqlalchemy import insert, text

    from orderbot.storage import sql as db
    from orderbot.storage.schema import dialog_outcomes, message_logs, order_items, orders

    rng = random.Random(7)
    now = time.time()
    engine = db.create_engine(url)
    try:
        batch = 5000
        for start in range(0, count, batch):
            rows = []
            for i in range(start, min(count, start + batch)):
                created = now - 90 * DAY * (1 - i / count) - 60
                address = f"{rng.choice(STREETS)} {rng.randint(1, 300)}, кв. {rng.randint(1, 90)}"
                catalog = i % 5 == 0
                rows.append(
                    {
                        "idempotency_key": f"bench:{i}",
                        "client_id": str(100000 + i % 40000),
                        "channel": "chat2desk",
                        "source": "",
                        "phone": f"+996{rng.randint(500000000, 799999999)}",
                        "address": address,
                        "quantity": None if catalog else rng.randint(1, 9),
                        "status": STATUSES[min(5, int(rng.random() ** 0.3 * 6))],
                        "language": "ru",
                        "data": orjson.dumps({"address": address}).decode(),
                        "created_at": created,
                        "updated_at": created,
                        "total": 1800 if catalog else None,
                        "currency": "KGS" if catalog else None,
                        "route": "{}",
                    }
                )
            async with engine.begin() as conn:
                ids = (
                    (await conn.execute(insert(orders).returning(orders.c.id), rows))
                    .scalars()
                    .all()
                )
                lines = [
                    {
                        "order_id": order_id,
                        "position": p,
                        "item_id": f"item{p}",
                        "name": "Печать PLA" if p == 0 else "Покраска",
                        "quantity": 1,
                        "unit": "pcs",
                        "unit_price": 900,
                        "amount": 900,
                    }
                    for order_id, row in zip(ids, rows, strict=True)
                    if row["total"] is not None
                    for p in (0, 1)
                ]
                if lines:
                    await conn.execute(insert(order_items), lines)
        outcomes = []
        for i in range(int(count * 1.4)):
            ended = now - 90 * DAY * rng.random()
            done = rng.random() < 0.7
            outcomes.append(
                {
                    "channel": "chat2desk",
                    "client_id": str(i),
                    "outcome": "completed" if done else rng.choice(["cancelled", "abandoned"]),
                    "last_step": "WAITING_CONFIRMATION" if done else rng.choice(STEPS),
                    "message_count": 6,
                    "duration_seconds": rng.uniform(40, 900),
                    "started_at": ended - 300,
                    "ended_at": ended,
                }
            )
        for start in range(0, len(outcomes), batch):
            async with engine.begin() as conn:
                await conn.execute(insert(dialog_outcomes), outcomes[start : start + batch])
        logs = [
            {
                "direction": "in" if k % 2 == 0 else "out",
                "channel": "chat2desk",
                "client_id": str(100000 + c),
                "message_key": f"bench-{c}-{k}",
                "text": "Здравствуйте, хочу заказать воду" if k % 2 == 0 else "Напишите адрес",
                "success": True,
                "created_at": now - 3600 + k,
            }
            for c in range(2000)
            for k in range(10)
        ]
        for start in range(0, len(logs), batch):
            async with engine.begin() as conn:
                await conn.execute(insert(message_logs), logs[start : start + batch])
        # As a database that has lived a while: the planner knows the tables' sizes (and on
        # PostgreSQL the visibility map lets index-only scans skip the table).
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(text("VACUUM ANALYZE" if url.startswith("postgres") else "ANALYZE"))
        return int(ids[-1])
    finally:
        await engine.dispose()


def sign_in(http: httpx.Client) -> None:
    page = http.get("/console/login", headers={"Accept": "text/html"})
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token
    r = http.post(
        "/console/login",
        data={"username": "bench", "password": PASSWORD, "login_token": token.group(1)},
    )
    assert r.status_code == 303, r.text


def timings(http: httpx.Client, path: str | list[str], runs: int) -> tuple[float, float]:
    paths = [path] if isinstance(path, str) else path
    for i in range(5):
        http.get(paths[i % len(paths)]).raise_for_status()
    found = []
    for i in range(runs):
        started = time.perf_counter()
        r = http.get(paths[i % len(paths)])
        found.append(time.perf_counter() - started)
        r.raise_for_status()
    found.sort()
    return statistics.median(found) * 1000, found[
        min(len(found) - 1, int(len(found) * 0.99))
    ] * 1000


def webhook_to_board(http: httpx.Client, fake_url: str, trials: int) -> list[float]:
    delays = []
    for t in range(trials):
        client = f"bench-{uuid.uuid4().hex[:8]}"
        for n, text in enumerate(["Привет", "ул. Киевская 5", "0555 123 456", "2", "да"]):
            before = received_count(fake_url)
            newest = http.get("/console/orders/new?after=0").json()["newest"] if n == 4 else 0
            started = time.perf_counter()
            r = http.post(
                "/webhook/chat2desk",
                json={"client_id": client, "message_id": f"{client}-{n}", "text": text},
            )
            assert r.status_code == 200, r.text
            if n < 4:
                while received_count(fake_url) == before:
                    time.sleep(0.01)
                continue
            while not http.get(f"/console/orders/new?after={newest}").json()["count"]:
                time.sleep(0.01)
            delays.append(time.perf_counter() - started)
        del t
    return delays


def measure(url: str, fake_url: str, newest: int, runs: int) -> None:
    pages: list[tuple[str, str | list[str]]]
    with httpx.Client(base_url=url, timeout=60) as http:
        sign_in(http)
        pages = [
            ("orders board", "/console"),
            ("board, status filter", "/console?status=ready"),
            ("board, phone search", "/console?q=0555 12"),
            ("board, address search", "/console?q=Токтогула 12"),
            ("board poll (new orders)", f"/console/orders/new?after={newest}"),
            ("order page", f"/console/orders/{newest - 10}"),
            # Each request a period of its own: the console keeps a period's numbers for 30 s,
            # and these figures are for computing them.
            ("numbers, 7 days", [f"/console/stats?period={168 - i}h" for i in range(120)]),
            ("numbers, 90 days", [f"/console/stats?period={2160 - i}h" for i in range(120)]),
            ("numbers, 90 days (kept)", "/console/stats?period=90d"),
        ]
        print(f"  {'page':<26} {'p50 ms':>8} {'p99 ms':>8}")
        for name, path in pages:
            p50, p99 = timings(http, path, runs)
            print(f"  {name:<26} {p50:>8.1f} {p99:>8.1f}")
        delays = webhook_to_board(http, fake_url, 10)
        print(
            f"  webhook -> board poll: median {statistics.median(delays) * 1000:.0f} ms,"
            f" max {max(delays) * 1000:.0f} ms (10 orders; the page polls every 1.5 s on top)"
        )


def add_account(env: dict[str, str]) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "orderbot",
            "operators",
            "add",
            "bench",
            "--role",
            "admin",
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


def embedded(count: int, runs: int) -> None:
    from orderbot.storage import sql as db

    with tempfile.TemporaryDirectory() as tmp, fake_chat2desk() as fake_url:
        work = Path(tmp)
        url = f"sqlite:///{work / 'orderbot.db'}"
        db.upgrade(url)
        started = time.perf_counter()
        newest = asyncio.run(seed(url, count))
        print(f"embedded profile: {count:,} orders seeded in {time.perf_counter() - started:.0f} s")
        env = {
            "DATABASE_URL": url,
            "CHAT2DESK_API_URL": fake_url,
            "CHAT2DESK_API_TOKEN": "bench",
            "OUTBOUND_RATE_LIMIT": "6000000",
            "LOG_LEVEL": "WARNING",
        }
        add_account({**os.environ, **env})
        with BotProcess(env, log_path=work / "orderbot.log") as bot:
            measure(bot.url, fake_url, newest, runs)


@contextmanager
def postgres_database() -> Iterator[str]:
    from sqlalchemy import text

    from orderbot.storage import sql as db

    admin_url = os.environ.get(
        "ORDERBOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
    )
    name = f"bench_console_{uuid.uuid4().hex[:8]}"

    async def run(sql: str) -> None:
        engine = db.create_engine(admin_url)
        try:
            async with engine.connect() as conn:
                auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await auto.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def distributed(count: int, runs: int) -> None:
    from tests.distributed.conftest import RABBIT_URL, REDIS_URL, remove_namespace

    from orderbot.storage import sql as db

    prefix = "bench" + uuid.uuid4().hex[:8]
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_chat2desk() as fake_url,
        postgres_database() as url,
    ):
        work = Path(tmp)
        db.upgrade(url)
        started = time.perf_counter()
        newest = asyncio.run(seed(url, count))
        print(
            f"distributed profile: {count:,} orders seeded in {time.perf_counter() - started:.0f} s"
        )
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CHAT2DESK_", "WEBHOOK_"))},
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "RABBITMQ_URL": RABBIT_URL,
            "QUEUE_PREFIX": prefix,
            "QUEUE_SHARDS": "2",
            "CHAT2DESK_API_URL": fake_url,
            "CHAT2DESK_API_TOKEN": "bench",
            "OUTBOUND_RATE_LIMIT": "6000000",
            "LOG_LEVEL": "WARNING",
            "HOST": "127.0.0.1",
            "PORT": str(port),
        }
        add_account(env)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for role in ("serve", "worker", "sender"):
                log = (work / f"{role}.log").open("ab")
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "orderbot", role], env=env, stdout=log, stderr=log
                    )
                )
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError((work / "serve.log").read_text())
                time.sleep(0.1)
            measure(f"http://127.0.0.1:{port}", fake_url, newest, runs)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
            asyncio.run(remove_namespace(prefix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=["embedded", "distributed", "both"], default="both")
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100, help="per page")
    args = parser.parse_args()
    print(cpu_probe(), f"load {os.getloadavg()[0]:.2f}")
    if args.profile in ("embedded", "both"):
        embedded(args.orders, args.requests)
    if args.profile in ("distributed", "both"):
        distributed(args.orders, args.requests)


if __name__ == "__main__":
    main()
