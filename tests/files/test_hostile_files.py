"""Hostile files and links (issue 18, items 1-4 and 8): each repro is built here, small, and
the servers are local. A *canary* is a local HTTP server that counts every connection: the
tests that must not reach an address assert that its count stays 0. Timing is never asserted;
a test that hangs fails by the per-test timeout."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import ssl
import time
import tracemalloc
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trustme

from orderbot.config import Settings
from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import DialogOptions
from orderbot.files.fetchers import (
    CHUNK,
    DEFAULT_ATTACHMENT_HOSTS,
    HttpFileFetcher,
    LinkPolicy,
    TelegramFileFetcher,
)
from orderbot.files.formats import Refusal, detect_model_format
from orderbot.files.receiver import FileReceiver
from orderbot.messages import Attachment, InboundMessage
from orderbot.queues.sqlite import SqliteInboundQueue
from orderbot.state.sqlite import SqliteStepStore
from orderbot.storage.sqlite import SqliteDatabase
from orderbot.worker import Worker
from tests.files.test_files import binary_stl, obj, three_mf

MB = 1024 * 1024
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)

Handler = Callable[[asyncio.StreamWriter], Awaitable[None]]


class Canary:
    """A local HTTP/1.1 server: ``routes`` maps a path to what it answers (404 otherwise);
    ``connections`` counts every TCP connection, ``paths`` every request line's path."""

    def __init__(
        self, routes: dict[str, Handler] | None = None, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.routes = routes or {}
        self.tls = tls
        self.connections = 0
        self.paths: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Canary:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            self.paths.append(path)
            handler = self.routes.get(path)
            if handler is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            else:
                await handler(writer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def serve(content: bytes, *, headers: str = "") -> Handler:
    async def handler(writer: asyncio.StreamWriter) -> None:
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(content)}\r\n{headers}"
            "Connection: close\r\n\r\n".encode()
            + content
        )

    return handler


def redirect(location: str) -> Handler:
    async def handler(writer: asyncio.StreamWriter) -> None:
        writer.write(
            f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
        )

    return handler


def trickle(release: asyncio.Event, *, started: asyncio.Event | None = None) -> Handler:
    """A byte every 0.2 s of a promised megabyte, until ``release`` is set."""

    async def handler(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
        if started is not None:
            started.set()
        while not release.is_set():
            writer.write(b"s")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 0.2)

    return handler


def trusted(canary: Canary) -> LinkPolicy:
    """The test-only allowance: the canary's host and port listed, loopback trusted."""
    return LinkPolicy(hosts=(f"127.0.0.1:{canary.port}",), trusted_networks=LOOPBACK)


def receiver(tmp_path: Path, policy: LinkPolicy, **kwargs: object) -> FileReceiver:
    return FileReceiver(
        tmp_path / "uploads",
        max_bytes=kwargs.pop("max_bytes", 50 * MB),  # type: ignore[arg-type]
        fetchers=(HttpFileFetcher(policy=policy),),
        **kwargs,  # type: ignore[arg-type]
    )


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def stl_named(n: int) -> bytes:
    """A valid binary STL whose bytes differ per ``n`` (stored as its own file)."""
    content = binary_stl()
    return f"part {n}".encode().ljust(80, b" ") + content[80:]


# --------------------------------------------------------------------------------------------
# 1. checks in linear time, under a deadline


@pytest.mark.timeout(20)
@pytest.mark.parametrize("digits", [200, 300, 2000])
def test_the_backtracking_obj_line_is_judged_at_once(tmp_path: Path, digits: int) -> None:
    # The issue's repro (606 bytes took 37 s, 905 bytes 210 s with the old regex).
    line = b"v " + b"1" * digits + b" " + b"1" * digits + b" " + b"1" * digits + b"x\n"
    path = write(tmp_path, "evil.obj", line * 3 + b"f 1 2 3\n")
    assert detect_model_format(path, "evil.obj") == Refusal("unsupported", "not STL, OBJ or 3MF")
    # Well-formed numbers (real exporters write at most a few dozen digits) are a model.
    good = b"v " + b"1" * 30 + b" -1." + b"1" * 30 + b" 1e-" + b"1" + b"\n"
    assert detect_model_format(write(tmp_path, "good.obj", good * 3 + b"f 1 2 3\n")) == "obj"


@pytest.mark.timeout(20)
def test_a_huge_obj_line_is_skipped_not_parsed(tmp_path: Path) -> None:
    huge = b"v " + b"1 " * (4 * MB)
    content = huge + b"\n" + obj()
    assert detect_model_format(write(tmp_path, "long.obj", content)) == "obj"


def test_a_file_not_judged_within_its_time_limit_is_refused_politely(tmp_path: Path) -> None:
    # Many lines that are neither vertices nor faces: the scan looks at the clock on the way.
    content = b"# comment\n" * 20_000 + obj()
    path = write(tmp_path, "slow.obj", content)
    assert detect_model_format(path) == "obj"
    refused = detect_model_format(path, time_limit=0.0)
    assert isinstance(refused, Refusal)
    assert refused.reason == "not_checked"
    flow = load_flow("printing")
    texts = flow.steps["FILES"].errors["not_checked"]
    assert set(texts) >= {"ru", "en"}  # and the languages the flow speaks besides
    assert all("{file_name}" in text for text in texts.values())


# --------------------------------------------------------------------------------------------
# 4. memory: zip entry count from the end record, decoded bytes counted while streaming


def test_a_zip_with_too_many_entries_is_refused_before_zipfile_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "many.3mf"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("3D/3dmodel.model", "<model/>")
        for n in range(10_001):
            archive.writestr(f"d/{n}", b"")
    opened: list[object] = []

    def no_zipfile(*args: object, **kwargs: object) -> None:
        opened.append(args)
        raise AssertionError("zipfile must not parse a directory this big")

    monkeypatch.setattr("orderbot.files.formats.zipfile.ZipFile", no_zipfile)
    refused = detect_model_format(path)
    assert isinstance(refused, Refusal)
    assert refused.reason == "unsupported"
    assert opened == []


def test_a_zip_whose_directory_is_too_big_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "names.3mf"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("3D/3dmodel.model", "<model/>")
        for n in range(300):  # few entries, but 300 x 16 KB names: a 4.8 MB directory
            archive.writestr(f"{n}/" + "n" * 16_000, b"")
    refused = detect_model_format(path)
    assert isinstance(refused, Refusal)
    assert refused.reason == "unsupported"
    # A real 3MF still passes.
    assert detect_model_format(write(tmp_path, "cube.3mf", three_mf())) == "3mf"


def test_a_3mf_part_in_a_compression_without_output_bound_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "bomb.3mf"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_LZMA) as archive:
        archive.writestr("3D/3dmodel.model", b"<model>" + b"\0" * (64 * MB))
    tracemalloc.start()
    try:
        refused = detect_model_format(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(refused, Refusal)
    assert refused.reason == "unsupported"
    assert peak < 16 * MB, f"peak {peak / MB:.1f} MB"


@pytest.mark.timeout(30)
async def test_a_gzip_bomb_is_inflated_a_piece_at_a_time(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\0" * (64 * MB), compresslevel=9)  # ~64 KB on the wire
    async with Canary({"/bomb.stl": serve(bomb, headers="Content-Encoding: gzip\r\n")}) as c:
        files = receiver(tmp_path, trusted(c), max_bytes=MB)
        tracemalloc.start()
        try:
            result = await files.receive(
                Attachment(url=c.url("/bomb.stl"), name="bomb.stl"), channel="chat2desk"
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await files.aclose()
    assert (result.refused, result.limit) == ("too_large", MB)
    # Never the whole body inflated: a few pieces of CHUNK at most (the old code held ~64 MB).
    assert peak < 16 * MB, f"peak {peak / MB:.1f} MB"
    assert list((tmp_path / "uploads").iterdir()) == []


async def test_a_gzip_encoded_model_is_still_received(tmp_path: Path) -> None:
    content = binary_stl()
    encoded = gzip.compress(content)
    async with Canary({"/cube.stl": serve(encoded, headers="Content-Encoding: gzip\r\n")}) as c:
        files = receiver(tmp_path, trusted(c))
        result = await files.receive(
            Attachment(url=c.url("/cube.stl"), name="cube.stl"), channel="chat2desk"
        )
        await files.aclose()
    assert (result.refused, result.format, result.size) == (None, "stl", len(content))
    assert CHUNK == 64 * 1024


# --------------------------------------------------------------------------------------------
# 2. server-side request forgery


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "0.0.0.0",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_addresses_outside_the_public_internet_are_refused(address: str) -> None:
    assert not LinkPolicy().allows_address(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "2a00:1450:4001:80b::200e"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert LinkPolicy().allows_address(address)


def test_the_default_hosts_are_chat2desk_storage() -> None:
    policy = Settings(_env_file=None).link_policy  # type: ignore[call-arg]
    assert policy.hosts == DEFAULT_ATTACHMENT_HOSTS
    assert policy.trusted_networks == ()
    assert policy.allows_host("storage.chat2desk.com", 443, 443)
    assert policy.allows_host("storage.chat2desk.com.mx", 443, 443)
    assert not policy.allows_host("storage.chat2desk.com", 8443, 443)
    assert not policy.allows_host("chat2desk.com.evil.example", 443, 443)
    assert not policy.allows_host("evilchat2desk.com", 443, 443)
    custom = Settings(  # type: ignore[call-arg]
        _env_file=None,
        attachment_hosts="files.shop.example, *.cdn.example:8443",
        attachment_trusted_networks="10.0.0.0/8",
    ).link_policy
    assert custom.allows_host("files.shop.example", 80, 80)
    assert custom.allows_host("a.cdn.example", 8443, 443)
    assert not custom.allows_host("a.cdn.example", 443, 443)
    assert custom.allows_address("10.2.3.4")
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        Settings(_env_file=None, attachment_trusted_networks="ten")  # type: ignore[call-arg]


async def test_the_default_policy_never_connects_to_local_addresses(tmp_path: Path) -> None:
    async with Canary({"/cube.stl": serve(binary_stl())}) as canary:
        files = receiver(tmp_path, LinkPolicy())
        links = [
            canary.url("/cube.stl"),
            canary.url("/cube.stl", host="localhost"),
            canary.url("/cube.stl", host="[::ffff:127.0.0.1]"),
            f"http://127.0.0.1/cube.stl?port={canary.port}",
            f"gopher://127.0.0.1:{canary.port}/cube.stl",
            f"http://user:pass@127.0.0.1:{canary.port}/cube.stl",
        ]
        for url in links:
            result = await files.receive(Attachment(url=url, name="cube.stl"), channel="chat2desk")
            assert result.refused == "download_failed", url
        await files.aclose()
    assert canary.connections == 0


async def test_a_listed_host_that_resolves_inward_is_refused(tmp_path: Path) -> None:
    async def inward(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async with Canary({"/cube.stl": serve(binary_stl())}) as canary:
        link = Attachment(url=canary.url("/cube.stl", host="storage.chat2desk.com"))
        hosts = (f"storage.chat2desk.com:{canary.port}",)
        refused = await receiver(tmp_path, LinkPolicy(hosts=hosts, resolver=inward)).receive(
            link, channel="chat2desk"
        )
        assert refused.refused == "download_failed"
        assert canary.connections == 0
        # The same link with loopback trusted (the test-only allowance) does reach it, at the
        # address that was checked, with the link's host name.
        allowed = LinkPolicy(hosts=hosts, trusted_networks=LOOPBACK, resolver=inward)
        received = await receiver(tmp_path, allowed).receive(link, channel="chat2desk")
        assert (received.refused, received.format) == (None, "stl")
        assert canary.connections == 1


@pytest.mark.parametrize(
    ("certified", "fetched"), [("storage.chat2desk.com", True), ("x.test", False)]
)
async def test_https_goes_to_the_checked_address_and_verifies_the_host_name(
    tmp_path: Path, certified: str, fetched: bool
) -> None:
    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(certified).configure_cert(server)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    async def loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async with Canary({"/cube.stl": serve(binary_stl())}, tls=server) as canary:
        policy = LinkPolicy(
            hosts=(f"storage.chat2desk.com:{canary.port}",),
            trusted_networks=LOOPBACK,
            resolver=loopback,
        )
        client = httpx.AsyncClient(verify=client_context, trust_env=False)
        files = FileReceiver(
            tmp_path / "uploads",
            max_bytes=MB,
            fetchers=(HttpFileFetcher(client, policy=policy),),
        )
        link = Attachment(url=f"https://storage.chat2desk.com:{canary.port}/cube.stl")
        result = await files.receive(link, channel="chat2desk")
        await client.aclose()
    # The TLS name is the link's host (not the address), and the certificate must match it.
    assert (result.format == "stl") is fetched
    assert canary.paths == (["/cube.stl"] if fetched else [])


async def test_every_redirect_hop_is_checked(tmp_path: Path) -> None:
    async with (
        Canary({"/cube.stl": serve(binary_stl())}) as forbidden,
        Canary() as allowed,
    ):
        allowed.routes["/to-local"] = redirect(forbidden.url("/cube.stl"))
        allowed.routes["/to-metadata"] = redirect("http://169.254.169.254/latest/meta-data/")
        allowed.routes["/cube.stl"] = serve(binary_stl())
        allowed.routes["/to-self"] = redirect("/cube.stl")
        files = receiver(tmp_path, trusted(allowed))
        for path in ("/to-local", "/to-metadata"):
            result = await files.receive(Attachment(url=allowed.url(path)), channel="chat2desk")
            assert result.refused == "download_failed"
        # A redirect within the allowed host is followed.
        followed = await files.receive(Attachment(url=allowed.url("/to-self")), channel="chat2desk")
        assert followed.format == "stl"
        await files.aclose()
    assert forbidden.connections == 0
    assert allowed.paths == ["/to-local", "/to-metadata", "/to-self", "/cube.stl"]


async def test_a_telegram_link_from_another_channel_never_uses_the_bot_token(
    tmp_path: Path,
) -> None:
    calls: list[str] = []

    def telegram(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(200, json={"ok": True, "result": {"file_path": "d/f.stl"}})

    client = httpx.AsyncClient(transport=httpx.MockTransport(telegram))
    files = FileReceiver(tmp_path / "uploads", max_bytes=50 * MB)
    files.add_fetcher(TelegramFileFetcher("SECRET", api_url="https://tg.example", client=client))
    forged = Attachment(url="tg://file/ABC", name="f.stl")
    assert (await files.receive(forged, channel="chat2desk")).refused == "download_failed"
    assert calls == []
    await client.aclose()


# --------------------------------------------------------------------------------------------
# 3. slow links: deadline, minimum rate, and no dialog slot held


async def test_a_trickling_link_is_given_up(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with Canary({"/slow.stl": trickle(release)}) as canary:
        link = Attachment(url=canary.url("/slow.stl"), name="slow.stl")
        slow = receiver(tmp_path, trusted(canary), min_rate=1000, rate_grace=0.5)
        assert (await slow.receive(link, channel="chat2desk")).refused == "download_failed"
        late = receiver(tmp_path, trusted(canary), min_rate=0, download_timeout=1.0)
        assert (await late.receive(link, channel="chat2desk")).refused == "download_failed"
        release.set()
        await slow.aclose()
        await late.aclose()
    assert list((tmp_path / "uploads").iterdir()) == []


def _message(client: str, n: int, text: str, *urls: str) -> InboundMessage:
    return InboundMessage(
        channel="chat2desk",
        client_id=client,
        message_id=f"{client}-{n}",
        text=text,
        received_at=time.time(),
        attachments=tuple(Attachment(url=url, name=url.rsplit("/", 1)[-1]) for url in urls),
    )


# Up to the printing flow's file step (as in tests/test_files.py).
TO_FILES = ("Здравствуйте", "Крупная печать", "Анна", "anna@example.com", "Пропустить")


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.02)


async def replies_to(database: SqliteDatabase, client: str) -> int:
    rows = await database.run(
        lambda c: c.execute("SELECT COUNT(*) FROM outbox WHERE client_id = ?", (client,)).fetchone()
    )
    return int(rows[0])


@pytest.mark.timeout(30)
async def test_a_greeting_is_answered_while_downloads_hang(
    database: SqliteDatabase, tmp_path: Path
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    async with Canary({"/slow.stl": trickle(release, started=started)}) as canary:
        files = receiver(tmp_path, trusted(canary), min_rate=0, download_timeout=600)
        queue = SqliteInboundQueue(database)
        worker = Worker(
            queue,
            SqliteStepStore(database),
            load_flow("printing"),
            options=DialogOptions(default_language="ru"),
            concurrency=1,
            poll_interval=0.05,
            files=files,
        )
        async with running(worker):
            for n, text in enumerate(TO_FILES):
                await queue.put(_message("slow", n, text))
            await until(lambda: worker.handled == len(TO_FILES))
            await queue.put(_message("slow", 99, "", canary.url("/slow.stl")))
            await started.wait()  # the download is under way, and hangs
            await queue.put(_message("new", 0, "Здравствуйте"))
            # Finished at all (the old worker held its only slot for the download).
            await until(lambda: worker.handled == len(TO_FILES) + 1)
            assert await replies_to(database, "new") == 1
            release.set()
            await until(lambda: worker.handled == len(TO_FILES) + 2)
        await files.aclose()
    assert await replies_to(database, "slow") == len(TO_FILES) + 1


# --------------------------------------------------------------------------------------------
# 8. no more links fetched than the step takes


@pytest.mark.timeout(30)
async def test_fifteen_links_in_one_message_fetch_only_what_the_step_takes(
    database: SqliteDatabase, tmp_path: Path
) -> None:
    routes = {f"/part{n}.stl": serve(stl_named(n)) for n in range(15)}
    async with Canary(routes) as canary:
        files = receiver(tmp_path, trusted(canary))
        queue = SqliteInboundQueue(database)
        store = SqliteStepStore(database)
        worker = Worker(
            queue,
            store,
            load_flow("printing"),
            options=DialogOptions(default_language="en"),
            poll_interval=0.05,
            files=files,
        )
        async with running(worker):
            for n, text in enumerate(TO_FILES):
                await queue.put(_message("many", n, text))
            links = [canary.url(f"/part{n}.stl") for n in range(15)]
            await queue.put(_message("many", 99, "", *links))
            await until(lambda: worker.handled == len(TO_FILES) + 1)
        await files.aclose()
    max_files = 10  # the printing flow's FILES step
    assert canary.paths == [f"/part{n}.stl" for n in range(max_files)]
    stored = list((tmp_path / "uploads").iterdir())
    assert len(stored) == max_files
    raw = await store.load_state("chat2desk:many")
    assert raw is not None
    assert raw.count(b'"checksum"') == max_files
