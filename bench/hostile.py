"""Hostile files, links, ids and connections at full size against running processes (issue 18).

    python bench/hostile.py [--distributed] [--phase-seconds 30] [--only obj,ssrf,...]

Starts `orderbot run` (or, with --distributed, `orderbot serve`, `orderbot worker` and
`orderbot sender` on the local PostgreSQL, Redis and RabbitMQ, under a throwaway queue prefix)
with the 3D-printing flow, a fake Chat2Desk (another process), a file server that hosts the
hostile files (127.0.0.1) and a canary server that no request may ever reach (127.0.0.1 and
127.0.0.2, its own port). Then, one attack at a time:

  obj       the OBJ line whose vertex regex backtracked (``v 1..1 1..1 1..1x``, 906 bytes with
            --obj-digits 300; 606 bytes with 200)
  ssrf      one webhook with links to the canary (direct, ``localhost``, a redirect from the file
            server, ``tg://file/...`` with TELEGRAM_API_URL pointing at the canary, and 50 more)
  slow      5 clients each sending a link that trickles a byte every 2 s
  zip       5 clients each sending a 3MF (zip) with --zip-entries directory entries (47 MB for a
            million: one local header, the central directory pointing at it for every entry)
  gzip      5 clients each sending a link served ``Content-Encoding: gzip`` that decodes to
            --gzip-mb MiB (about 1 MiB on the wire for 1,024)
  slowbody  --slow-connections connections that send headers and part of a body, then nothing
  links15   one webhook with 15 links to valid STL files (the step takes at most 10)
  ids       webhooks with NUL and control characters in text, over-long ids, a newline in an id,
            a digit id past 2^64

During each attack it prints: ``/health`` latency (a probe every 0.5 s), a normal customer's reply
latency (a new client says hello every 2 s; webhook sent -> first reply at the fake), the peak RSS
of each orderbot process, requests that reached the canary (must be 0), the attack's webhooks
accepted (200) vs answered (its client got a reply after it), hits on the file server, and how long
the processes took to answer normally again. Asserts nothing.

The attack clients are first walked to the files step (service, name, e-mail, phone skipped).
Links point at 127.0.0.1: the bot is started with ``ATTACHMENT_HOSTS=127.0.0.1:<file server
port>`` and ``ATTACHMENT_TRUSTED_NETWORKS=127.0.0.1/32`` (so that, where links are restricted,
the hostile files are still fetched and judged, and the canary's port stays forbidden); a build
without those settings ignores them. ``--bot-env KEY=VALUE`` adds or overrides settings.
"""

from __future__ import annotations  # noqa: I001 - _common puts the repository on sys.path

import argparse
import asyncio
import gzip
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from _common import cpu_probe, fake_chat2desk, free_port, median, rss_mb

from tests.support.processes import BotProcess

ATTACKS = ("obj", "ssrf", "slow", "zip", "gzip", "slowbody", "links15", "ids")
TO_FILES_STEP = ["Здравствуйте", "1", "Иван", "ivan@example.com", "Пропустить"]
GREETING = "Здравствуйте"
CANARY_HOSTS = ("127.0.0.1", "127.0.0.2")


# -- hostile files ---------------------------------------------------------------------------


def obj_line(digits: int) -> bytes:
    """The OBJ vertex line the old regex backtracked on (issue 18, item 1)."""
    run = b"1" * digits
    return b"v " + run + b" " + run + b" " + run + b"x\n"


def many_entries_zip(entries: int) -> bytes:
    """A zip (3MF) with ``entries`` directory entries in its central directory, all pointing at
    one local header: 47 bytes an entry, as small as a zip with that many entries gets."""
    name = b"a/"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
    central = (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            len(name),
            0,
            0,
            0,
            0,
            0x10,
            0,
        )
        + name
    )
    directory = central * entries
    start, size = len(local), len(directory)
    zip64_end = struct.pack(
        "<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, entries, entries, size, start
    )
    locator = struct.pack("<IIQI", 0x07064B50, 0, start + size, 1)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return local + directory + zip64_end + locator + end


def gzip_bomb(mib: int) -> bytes:
    """A gzip stream of ``mib`` MiB of zeros (about a thousandth of that on the wire)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(mib)]
    parts.append(compressor.flush())
    return b"".join(parts)


STL = (
    b"solid cube\n"
    + b"".join(
        b"facet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nvertex 0 1 0\nendloop\n"
        b"endfacet\n"
        for _ in range(12)
    )
    + b"endsolid cube\n"
)


class Servers:
    """The file server and the canary, in a thread with their own event loop (the bench's loop
    is busy with the attacks). Counts hits per route."""

    def __init__(
        self, *, obj: bytes, zip_bytes: bytes, bomb: bytes, trickle_seconds: float
    ) -> None:
        self.files_port = free_port()
        self.canary_port = free_port()
        self.hits: dict[str, int] = {}
        self.canary: list[str] = []
        self._obj, self._zip, self._bomb = obj, zip_bytes, bomb
        self._trickle_seconds = trickle_seconds
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runners: list[web.AppRunner] = []

    @property
    def files(self) -> str:
        return f"http://127.0.0.1:{self.files_port}"

    def canary_url(self, host: str = "127.0.0.2") -> str:
        return f"http://{host}:{self.canary_port}"

    def __enter__(self) -> Servers:
        self._thread.start()
        self._started.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._started.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        files = web.Application()
        files.router.add_get("/obj", self._serve_obj)
        files.router.add_get("/zip", self._serve_zip)
        files.router.add_get("/gzip", self._serve_gzip)
        files.router.add_get("/trickle/{n}", self._serve_trickle)
        files.router.add_get("/stl/{n}", self._serve_stl)
        files.router.add_get("/redirect", self._serve_redirect)
        runner = web.AppRunner(files, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.files_port).start()
        self._runners.append(runner)
        canary = web.Application()
        canary.router.add_route("*", "/{tail:.*}", self._canary)
        runner = web.AppRunner(canary, access_log=None)
        await runner.setup()
        for host in CANARY_HOSTS:
            await web.TCPSite(runner, host, self.canary_port).start()
        self._runners.append(runner)

    def _hit(self, route: str) -> None:
        self.hits[route] = self.hits.get(route, 0) + 1

    async def _serve_obj(self, request: web.Request) -> web.Response:
        self._hit("obj")
        return web.Response(body=self._obj, content_type="application/octet-stream")

    async def _serve_zip(self, request: web.Request) -> web.Response:
        self._hit("zip")
        return web.Response(body=self._zip, content_type="application/octet-stream")

    async def _serve_gzip(self, request: web.Request) -> web.Response:
        self._hit("gzip")
        return web.Response(
            body=self._bomb,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"},
        )

    async def _serve_stl(self, request: web.Request) -> web.Response:
        self._hit("stl")
        # A different model per link: stored files are named by their checksum.
        body = STL.replace(b"solid cube\n", f"solid cube{request.match_info['n']}\n".encode(), 1)
        return web.Response(body=body, content_type="application/octet-stream")

    async def _serve_redirect(self, request: web.Request) -> web.Response:
        self._hit("redirect")
        raise web.HTTPFound(self.canary_url() + "/redirected")

    async def _serve_trickle(self, request: web.Request) -> web.StreamResponse:
        self._hit("trickle")
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = 1 << 20
        await response.prepare(request)
        deadline = time.monotonic() + self._trickle_seconds
        try:
            await response.write(b"solid ")
            while time.monotonic() < deadline:
                await asyncio.sleep(2)
                await response.write(b" ")
        except (ConnectionError, asyncio.CancelledError):
            pass
        if request.transport is not None:  # short of its Content-Length: the link ends here
            request.transport.close()
        return response

    async def _canary(self, request: web.Request) -> web.Response:
        self.canary.append(f"{request.method} {request.host}{request.path_qs}")
        return web.Response(text="canary")


# -- the bot ---------------------------------------------------------------------------------


@dataclass
class Bot:
    url: str
    fake_url: str
    pids: dict[str, int]
    upload_dir: Path


def bot_env(
    args: argparse.Namespace, servers: Servers, fake_url: str, work: Path
) -> dict[str, str]:
    env = {
        "FLOW": "printing",
        "UPLOAD_DIR": str(work / "uploads"),
        "CHAT2DESK_API_URL": fake_url,
        "CHAT2DESK_API_TOKEN": "bench",
        "OUTBOUND_RATE_LIMIT": "6000000",
        "LOG_LEVEL": "WARNING",
        # A tg:// link in a Chat2Desk payload must never be fetched with the bot token.
        "TELEGRAM_BOT_TOKEN": "123456:bench-token",
        "TELEGRAM_API_URL": servers.canary_url(),
        "ATTACHMENT_HOSTS": f"127.0.0.1:{servers.files_port}",
        "ATTACHMENT_TRUSTED_NETWORKS": "127.0.0.1/32",
    }
    for item in args.bot_env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


@contextmanager
def embedded_bot(env: dict[str, str], fake_url: str, work: Path) -> Iterator[Bot]:
    env = {**env, "DATABASE_URL": f"sqlite:///{work / 'orderbot.db'}"}
    with BotProcess(env, log_path=work / "orderbot.log") as bot:
        assert bot.process is not None
        yield Bot(bot.url, fake_url, {"orderbot run": bot.process.pid}, Path(env["UPLOAD_DIR"]))


@contextmanager
def distributed_bot(env: dict[str, str], fake_url: str, work: Path) -> Iterator[Bot]:
    from tests.distributed.conftest import (
        PG_URL,
        RABBIT_URL,
        REDIS_URL,
        migrate_postgres,
        remove_namespace,
    )

    from distributed_e2e import start, wait_ready

    prefix = "hostile" + uuid.uuid4().hex[:8]
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CHAT2DESK_", "WEBHOOK_"))},
        **env,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": PG_URL,
        "REDIS_URL": REDIS_URL,
        "RABBITMQ_URL": RABBIT_URL,
        "QUEUE_PREFIX": prefix,
        "QUEUE_SHARDS": "8",
    }
    asyncio.run(migrate_postgres())
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["serve"] = start("serve", env, work / "serve.log")
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        procs["worker"] = start("worker", env, work / "worker.log")
        procs["sender"] = start("sender", env, work / "sender.log")
        time.sleep(4)  # the worker and the sender take their shards
        yield Bot(
            url, fake_url, {name: p.pid for name, p in procs.items()}, Path(env["UPLOAD_DIR"])
        )
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        asyncio.run(remove_namespace(prefix, shards=8))


# -- measuring -------------------------------------------------------------------------------


class Clients:
    """Client ids (digits, as Chat2Desk's) and the webhooks and replies of each."""

    def __init__(self, bot: Bot, servers: Servers, session: aiohttp.ClientSession) -> None:
        self.bot = bot
        self.servers = servers
        self.session = session
        self._next = random.randrange(10**8, 9 * 10**8)
        self._messages = 0

    def new(self) -> str:
        self._next += 1
        return str(self._next)

    async def post(self, payload: dict[str, Any], timeout: float = 600) -> int:
        """POST a webhook; its status (0: no answer in ``timeout``, or the connection failed)."""
        try:
            async with self.session.post(
                self.bot.url + "/webhook/chat2desk",
                json=payload,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return 0

    def payload(self, client: str, text: str = "", **extra: Any) -> dict[str, Any]:
        self._messages += 1
        return {
            "message_id": f"{client}-{self._messages}-{uuid.uuid4().hex[:6]}",
            "client_id": int(client) if client.isdigit() else client,
            "text": text,
            "type": "from_client",
            "transport": "whatsapp",
            "channel_id": 1,
            **extra,
        }

    async def replies(self, client: str) -> int:
        """Replies the fake Chat2Desk received for ``client`` so far."""
        async with self.session.get(
            self.bot.fake_url + "/messages",
            params={"client_id": client, "limit": "1"},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as response:
            return int((await response.json())["meta"]["total"])

    async def attack(self, client: str, payload: dict[str, Any]) -> tuple[str, int, int]:
        """Post an attack webhook: (client, status, replies the client had before)."""
        before = await self.replies(client)
        return client, await self.post(payload), before

    async def say(self, client: str, text: str, timeout: float = 60) -> bool:
        """Send ``text`` and wait for one more reply."""
        before = await self.replies(client)
        if await self.post(self.payload(client, text)) != 200:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.replies(client) > before:
                return True
            await asyncio.sleep(0.1)
        return False

    async def to_files_step(self, count: int) -> list[str]:
        """``count`` new clients, each walked to the files step."""

        async def one() -> str:
            client = self.new()
            for text in TO_FILES_STEP:
                if not await self.say(client, text):
                    raise RuntimeError(f"client {client} got no reply to {text!r}")
            return client

        return list(await asyncio.gather(*(one() for _ in range(count))))


@dataclass
class Figures:
    """What one attack did to the processes."""

    health_ms: list[float] = field(default_factory=list)
    health_failed: int = 0
    customer_ms: list[float] = field(default_factory=list)
    customers_sent: int = 0
    rss_mb: dict[str, float] = field(default_factory=dict)
    rss_start_mb: dict[str, float] = field(default_factory=dict)
    accepted: int = 0
    posted: int = 0
    answered: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    canary: int = 0
    file_hits: str = ""
    recovered_s: float = float("nan")
    notes: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        health = (
            f"/health p50 {median(self.health_ms):.0f} ms, max {max(self.health_ms, default=0):.0f}"
            f" ms ({len(self.health_ms)} probes, {self.health_failed} failed)"
        )
        unanswered = self.customers_sent - len(self.customer_ms)
        customer = (
            f"customer reply p50 {median(self.customer_ms):.0f} ms, max "
            f"{max(self.customer_ms, default=0):.0f} ms ({self.customers_sent} sent, "
            f"{unanswered} unanswered)"
        )
        rss = ", ".join(
            f"{p} {mb:.0f} MB (from {self.rss_start_mb.get(p, float('nan')):.0f})"
            for p, mb in self.rss_mb.items()
        )
        statuses = " ".join(f"{k or 'none'}x{v}" for k, v in sorted(self.statuses.items()))
        parts = [
            health,
            customer,
            f"peak RSS {rss}",
            f"canary requests {self.canary}",
            f"accepted {self.accepted}/{self.posted} ({statuses}), answered {self.answered}",
            f"file server hits {self.file_hits or 0}",
            f"normal again after {self.recovered_s:.1f} s",
            *self.notes,
        ]
        return f"{name}: " + "; ".join(parts)


async def probe_health(
    bot: Bot, session: aiohttp.ClientSession, stop: asyncio.Event, f: Figures
) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            async with session.get(
                bot.url + "/health", timeout=aiohttp.ClientTimeout(total=600)
            ) as response:
                await response.read()
                if response.status != 200:
                    f.health_failed += 1
        except (aiohttp.ClientError, TimeoutError):
            f.health_failed += 1
        f.health_ms.append((time.perf_counter() - started) * 1000)
        with_pause = 0.5 - (time.perf_counter() - started)
        if with_pause > 0:
            await asyncio.sleep(with_pause)


async def probe_customers(
    clients: Clients, stop: asyncio.Event, f: Figures, tasks: list[asyncio.Task[None]]
) -> None:
    async def one() -> None:
        client = clients.new()
        started = time.perf_counter()
        f.customers_sent += 1
        if await clients.post(clients.payload(client, GREETING)) != 200:
            return
        while True:
            if await clients.replies(client) > 0:
                f.customer_ms.append((time.perf_counter() - started) * 1000)
                return
            await asyncio.sleep(0.1)

    while not stop.is_set():
        tasks.append(asyncio.create_task(one()))
        with_pause = asyncio.ensure_future(stop.wait())
        await asyncio.wait({with_pause}, timeout=2.0)
        with_pause.cancel()


async def sample_rss(bot: Bot, stop: asyncio.Event, f: Figures) -> None:
    while not stop.is_set():
        for name, pid in bot.pids.items():
            with suppress(OSError):
                f.rss_mb[name] = max(f.rss_mb.get(name, 0.0), rss_mb(pid))
        await asyncio.sleep(0.2)


async def recover(bot: Bot, clients: Clients, limit: float) -> float:
    """Seconds until ``/health`` answers 200 within a second and a new customer is answered."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            async with clients.session.get(
                bot.url + "/health", timeout=aiohttp.ClientTimeout(total=1)
            ) as response:
                healthy = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            healthy = False
        if healthy and await clients.say(clients.new(), GREETING, timeout=5):
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    return float("inf")


# An attack: how many clients it needs at the files step, and what it does with them; it returns
# (client, status, replies the client had before) of every attack webhook it posted.
Posted = list[tuple[str, int, int]]
Fire = Callable[["Clients", list[str], "Figures", asyncio.Event], Awaitable[Posted]]


async def run_attack(
    needs: int,
    fire: Fire,
    bot: Bot,
    servers: Servers,
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
) -> Figures:
    clients = Clients(bot, servers, session)
    ready = await clients.to_files_step(needs) if needs else []
    f = Figures()
    for name, pid in bot.pids.items():
        with suppress(OSError):
            f.rss_start_mb[name] = rss_mb(pid)
    canary_before = len(servers.canary)
    hits_before = dict(servers.hits)
    stop = asyncio.Event()
    customers: list[asyncio.Task[None]] = []
    probes = [
        asyncio.create_task(probe_health(bot, session, stop, f)),
        asyncio.create_task(probe_customers(clients, stop, f, customers)),
        asyncio.create_task(sample_rss(bot, stop, f)),
    ]
    attack_task = asyncio.create_task(fire(clients, ready, f, stop))
    await asyncio.sleep(args.phase_seconds)
    stop.set()
    posted = await attack_task
    # Customers still waiting, and the bot's way back: the customers' replies still count.
    f.recovered_s = await recover(bot, clients, args.recover_seconds)
    for task in customers:
        if not task.done():
            task.cancel()
    await asyncio.gather(*customers, return_exceptions=True)
    for probe in probes:
        await probe
    f.posted = len(posted)
    f.accepted = sum(1 for _, status, _ in posted if status == 200)
    for _, status, _ in posted:
        f.statuses[status] = f.statuses.get(status, 0) + 1
    for client, status, before in posted:
        if status == 200 and await clients.replies(client) > before:
            f.answered += 1
    f.canary = len(servers.canary) - canary_before
    hits = {k: v - hits_before.get(k, 0) for k, v in servers.hits.items()}
    f.file_hits = ", ".join(f"{k} {v}" for k, v in hits.items() if v)
    return f


# -- the attacks ---------------------------------------------------------------------------


def links(*urls: str, name: str = "model.stl") -> dict[str, Any]:
    return {"attachments": [{"link": u, "name": name, "type": "file"} for u in urls]}


def file_attack(route: str, name: str) -> Fire:
    """Each ready client sends one link to ``route`` of the file server, all at once."""

    async def fire(clients: Clients, ready: list[str], f: Figures, stop: asyncio.Event) -> Posted:
        url = f"{clients.servers.files}/{route}"
        return list(
            await asyncio.gather(
                *(clients.attack(c, clients.payload(c, **links(url, name=name))) for c in ready)
            )
        )

    return fire


async def ssrf(clients: Clients, ready: list[str], f: Figures, stop: asyncio.Event) -> Posted:
    (client,) = ready
    port = clients.servers.canary_port
    urls = [
        f"http://127.0.0.2:{port}/metrics",
        f"http://127.0.0.1:{port}/health",
        f"http://localhost:{port}/",
        f"{clients.servers.files}/redirect",
        "tg://file/BQACAgIAAxkBAAIB",
        *(f"http://127.0.0.2:{port}/n{i}" for i in range(50)),
    ]
    return [await clients.attack(client, clients.payload(client, **links(*urls)))]


async def slow(clients: Clients, ready: list[str], f: Figures, stop: asyncio.Event) -> Posted:
    files = clients.servers.files
    return list(
        await asyncio.gather(
            *(
                clients.attack(c, clients.payload(c, **links(f"{files}/trickle/{i}")))
                for i, c in enumerate(ready)
            )
        )
    )


async def links15(clients: Clients, ready: list[str], f: Figures, stop: asyncio.Event) -> Posted:
    (client,) = ready
    before = count_files(clients.bot.upload_dir)
    urls = [f"{clients.servers.files}/stl/{i}" for i in range(15)]
    posted = await clients.attack(client, clients.payload(client, **links(*urls)))
    await stop.wait()
    f.notes.append(
        f"files stored from 15 links: {count_files(clients.bot.upload_dir) - before}"
        " (the step takes at most 10)"
    )
    return [posted]


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


async def ids(clients: Clients, ready: list[str], f: Figures, stop: asyncio.Event) -> Posted:
    cases: list[tuple[str, dict[str, Any]]] = []
    c = clients.new()
    cases.append((c, clients.payload(c, "при\x00вет")))
    c = clients.new()
    cases.append((c, clients.payload(c, "\x1b[31mred\x1b[0m\r\nforged log line\x07")))
    c = "7" * 120
    cases.append((c, clients.payload(c, GREETING)))
    c = clients.new()
    cases.append((c, {**clients.payload(c, GREETING), "message_id": "m" * 300}))
    c = clients.new()
    cases.append((c, {**clients.payload(c, GREETING), "message_id": "m\nforged"}))
    c = str(2**64 + 1)
    cases.append((c, {**clients.payload(c, GREETING), "client_id": 2**64 + 1}))
    c = "07001" + clients.new()[-3:]
    # Chat2Desk ids are integers: the bot answers client int(c), so its replies are counted there.
    cases.append((str(int(c)), {**clients.payload(c, GREETING), "client_id": c}))
    posted = [await clients.attack(client, payload) for client, payload in cases]
    f.notes.append(
        "statuses by case (NUL in text, control characters, 120-char client id, 300-char"
        " message id, newline in message id, client id 2^64+1, client id with a leading 0): "
        + " ".join(str(status) for _, status, _ in posted)
    )
    return posted


def slowbody(count: int) -> Fire:
    async def fire(clients: Clients, ready: list[str], f: Figures, stop: asyncio.Event) -> Posted:
        host, port = clients.bot.url.removeprefix("http://").split(":")
        closed: list[float] = []
        started = time.monotonic()
        opened = 0
        writers: list[asyncio.StreamWriter] = []
        limit = asyncio.Semaphore(200)

        async def one() -> None:
            nonlocal opened
            async with limit:
                try:
                    reader, writer = await asyncio.open_connection(host, int(port))
                except OSError:
                    return
            opened += 1
            writers.append(writer)
            writer.write(
                b"POST /webhook/chat2desk HTTP/1.1\r\nHost: bench\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                b'{"message_id": "'
            )
            try:
                await writer.drain()
                await reader.read(65536)  # an answer (408) or the close, whichever comes
                closed.append(time.monotonic() - started)
            except OSError:
                pass

        tasks = [asyncio.create_task(one()) for _ in range(count)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
        f.notes.append(
            f"slow connections opened {opened} of {count}, ended by the server within the "
            f"phase {len(closed)}" + (f" (median after {median(closed):.1f} s)" if closed else "")
        )
        return []

    return fire


async def nothing(clients: Clients, ready: list[str], f: Figures, stop: asyncio.Event) -> Posted:
    return []


# -- main ------------------------------------------------------------------------------------


async def attacks(bot: Bot, servers: Servers, args: argparse.Namespace) -> None:
    chosen = [a for a in args.only.split(",") if a] if args.only else list(ATTACKS)
    table: dict[str, tuple[int, Fire]] = {
        "obj": (1, file_attack("obj", "model.obj")),
        "ssrf": (1, ssrf),
        "slow": (5, slow),
        "zip": (5, file_attack("zip", "model.3mf")),
        "gzip": (5, file_attack("gzip", "model.stl")),
        "slowbody": (0, slowbody(args.slow_connections)),
        "links15": (1, links15),
        "ids": (0, ids),
    }
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        baseline = await run_attack(0, nothing, bot, servers, session, args)
        print(baseline.line("no attack"), flush=True)
        for name in chosen:
            needs, fire = table[name]
            figures = await run_attack(needs, fire, bot, servers, session, args)
            print(figures.line(name), flush=True)
    print(f"canary requests in all: {len(servers.canary)} (must be 0)")
    for seen in servers.canary[:5]:
        print(f"  canary saw: {seen}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--distributed", action="store_true", help="serve + worker + sender")
    parser.add_argument("--only", default="", help=f"comma-separated, of {','.join(ATTACKS)}")
    parser.add_argument("--phase-seconds", type=float, default=30, help="each attack's window")
    parser.add_argument(
        "--recover-seconds", type=float, default=300, help="longest wait for normal answers"
    )
    parser.add_argument("--obj-digits", type=int, default=300, help="300: 906 bytes")
    parser.add_argument("--zip-entries", type=int, default=1_000_000)
    parser.add_argument("--gzip-mb", type=int, default=1024, help="MiB the bomb decodes to")
    parser.add_argument("--trickle-seconds", type=float, default=300)
    parser.add_argument("--slow-connections", type=int, default=2000)
    parser.add_argument("--bot-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    chosen = set(args.only.split(",")) if args.only else set(ATTACKS)
    unknown = chosen - set(ATTACKS)
    if unknown:
        sys.exit(f"unknown attacks: {sorted(unknown)}")

    started = time.monotonic()
    zip_bytes = many_entries_zip(args.zip_entries) if "zip" in chosen else b""
    bomb = gzip_bomb(args.gzip_mb) if "gzip" in chosen else gzip.compress(b"")
    obj = obj_line(args.obj_digits)
    print(
        f"hostile: {'distributed (serve + worker + sender)' if args.distributed else 'embedded (orderbot run)'}"
        f"; phases of {args.phase_seconds:g} s; OBJ {len(obj)} bytes; zip {len(zip_bytes) / 1e6:.1f} MB"
        f" with {args.zip_entries:,} entries; gzip bomb {len(bomb) / 1024:.0f} KiB -> "
        f"{args.gzip_mb} MiB; {args.slow_connections} slow connections; files built in "
        f"{time.monotonic() - started:.1f} s; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}; {cpu_probe()}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="orderbot-hostile-"))
    with (
        Servers(
            obj=obj, zip_bytes=zip_bytes, bomb=bomb, trickle_seconds=args.trickle_seconds
        ) as servers,
        fake_chat2desk() as fake_url,
    ):
        env = bot_env(args, servers, fake_url, work)
        start_bot = distributed_bot if args.distributed else embedded_bot
        with start_bot(env, fake_url, work) as bot:
            asyncio.run(attacks(bot, servers, args))
    print(f"logs in {work}; load average at the end {os.getloadavg()[0]:.2f}; {cpu_probe()}")


if __name__ == "__main__":
    main()
