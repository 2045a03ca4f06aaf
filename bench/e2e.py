"""End to end through `orderbot run`: webhook -> dialog -> fake Chat2Desk (another process).

    python bench/e2e.py [--clients 4000] [--concurrency 64] [--latency-seconds 10] [--runs 3]

Throughput: CLIENTS whole water-delivery dialogs (5 messages, 5 replies each), each client's
messages posted in order, CONCURRENCY clients at a time; messages/s = messages / (last reply
received - first webhook sent). Latency: at half the measured throughput, new clients write
"Здравствуйте" at a fixed rate (open loop); latency = first reply received by the fake - webhook
sent, also split into "webhook -> 200" and "200 -> reply". Prints medians over the runs; asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from _common import cpu_probe, fake_chat2desk, median, orderbot, rss_mb

DIALOG = ["Здравствуйте", "ул. Ибраимова {n}, кв. 3", "0555 12 34 56", "{q} бутыли", "да"]
REPLIES_PER_DIALOG = 5  # the greeting and the first question are one message
ORIGINAL_WORKER_RATE = 113  # messages/s the original's worker drained at concurrency 5


def fake_base(fake_url: str) -> str:
    return fake_url.rsplit("/v1", 1)[0]


def replies_count(fake_url: str) -> int:
    return int(httpx.get(fake_base(fake_url) + "/_count", timeout=30).json()["count"])


async def post(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> None:
    while True:
        async with session.post(url, json=payload) as response:
            await response.read()
            if response.status == 200:
                return
        await asyncio.sleep(0.01)


async def throughput(
    bot_url: str, fake_url: str, clients: int, concurrency: int, run: int
) -> dict[str, float]:
    url = bot_url + "/webhook/chat2desk"
    before = replies_count(fake_url)
    expected = before + clients * REPLIES_PER_DIALOG
    next_client = 0

    async def converse(session: aiohttp.ClientSession) -> None:
        nonlocal next_client
        while next_client < clients:
            n = next_client
            next_client += 1
            for i, template in enumerate(DIALOG):
                text = template.format(n=n + 1, q=n % 9 + 1)
                payload = {
                    "message_id": f"t{run}-{n}-{i}",
                    "client_id": f"t{run}-{n}",
                    "text": text,
                }
                await post(session, url, payload)

    started = time.time()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(converse(session) for _ in range(concurrency)))
    posted = time.time()
    while replies_count(fake_url) < expected:
        await asyncio.sleep(0.05)
        if time.time() - posted > 120:
            raise RuntimeError("replies did not all arrive within 120 s")
    snapshot = httpx.get(fake_base(fake_url) + "/_received", timeout=60).json()
    last = max(snapshot["received_at"][before:])
    messages = clients * len(DIALOG)
    return {
        "messages": messages,
        "seconds": last - started,
        "rate": messages / (last - started),
        "ingress_rate": messages / (posted - started),
    }


@dataclass
class Latencies:
    """Per message, sorted, in ms: ``total`` = first reply received by the fake - webhook sent;
    ``accepted`` = webhook answered 200 - sent (stored durably); ``after`` = total - accepted
    (the reply does not wait for the 200: a negative value means it arrived first)."""

    total: list[float]
    accepted: list[float]
    after: list[float]

    def split(self) -> str:
        return (
            f"webhook -> 200 p50 {pct(self.accepted, 0.5):.1f} ms; 200 -> reply p50 "
            f"{pct(self.after, 0.5):.1f} ms"
        )


async def latency(bot_url: str, fake_url: str, rate: float, seconds: float, run: int) -> Latencies:
    url = bot_url + "/webhook/chat2desk"
    count = int(rate * seconds)
    sent_at: dict[str, float] = {}
    answered_at: dict[str, float] = {}
    before = replies_count(fake_url)

    async def one(session: aiohttp.ClientSession, client: str, payload: dict[str, Any]) -> None:
        await post(session, url, payload)
        answered_at[client] = time.time()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        tasks = []
        start = time.time()
        for i in range(count):
            delay = start + i / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            client = f"l{run}-{i}"
            sent_at[client] = time.time()
            payload = {"message_id": f"l{run}-{i}", "client_id": client, "text": "Здравствуйте"}
            tasks.append(asyncio.create_task(one(session, client, payload)))
        await asyncio.gather(*tasks)
    deadline = time.time() + 60
    while replies_count(fake_url) < before + count and time.time() < deadline:
        await asyncio.sleep(0.05)
    snapshot = httpx.get(fake_base(fake_url) + "/_received", timeout=60).json()
    first: dict[str, float] = {}
    for body, at in zip(
        snapshot["received"][before:], snapshot["received_at"][before:], strict=True
    ):
        client = str(body["client_id"])
        if client in sent_at and client not in first:
            first[client] = at
    return Latencies(
        total=sorted((first[c] - sent_at[c]) * 1000 for c in first),
        accepted=sorted((answered_at[c] - sent_at[c]) * 1000 for c in first),
        after=sorted((first[c] - answered_at[c]) * 1000 for c in first),
    )


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--worker-concurrency", default="32")
    args = parser.parse_args()
    print(
        f"e2e: {args.runs} runs; {args.clients} dialogs x {len(DIALOG)} messages, "
        f"{args.concurrency} clients at a time; WORKER_CONCURRENCY={args.worker_concurrency}"
    )
    rates, p50s, p99s, rss = [], [], [], []
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_chat2desk() as fake_url,
        orderbot(fake_url, Path(tmp), WORKER_CONCURRENCY=args.worker_concurrency) as bot,
    ):
        asyncio.run(throughput(bot.url, fake_url, 200, args.concurrency, run=99))  # warm-up
        for run in range(args.runs):
            t = asyncio.run(throughput(bot.url, fake_url, args.clients, args.concurrency, run))
            rates.append(t["rate"])
            found = asyncio.run(
                latency(bot.url, fake_url, t["rate"] / 2, args.latency_seconds, run)
            )
            lat = found.total
            p50s.append(pct(lat, 0.5))
            p99s.append(pct(lat, 0.99))
            rss.append(rss_mb(bot.process.pid))  # type: ignore[union-attr]
            print(
                f"  run {run}: {t['rate']:.0f} messages/s end to end ({t['messages']} in {t['seconds']:.1f} s; "
                f"webhooks accepted at {t['ingress_rate']:.0f}/s); at {t['rate'] / 2:.0f} msg/s: "
                f"p50 {pct(lat, 0.5):.1f} ms, p90 {pct(lat, 0.9):.1f} ms, p99 {pct(lat, 0.99):.1f} ms "
                f"({len(lat)} samples; {found.split()}); RSS {rss[-1]:.0f} MB"
            )
    print(
        f"orderbot run, end to end:  {median(rates):.0f} messages/s (median); latency at half load "
        f"p50 {median(p50s):.1f} ms, p99 {median(p99s):.1f} ms; RSS max {max(rss):.0f} MB"
    )
    print(f"original worker (reference): {ORIGINAL_WORKER_RATE} messages/s at concurrency 5")
    print(cpu_probe())
    _ = statistics  # medians come from _common.median


if __name__ == "__main__":
    main()
