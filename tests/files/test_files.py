"""Model files: checks by content on real small files made here, storage by checksum, fetchers,
cleanup of files no order uses, and the worker path from attachment to linked order files."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import struct
import time
import zipfile
from collections.abc import AsyncGenerator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import DialogOptions, ReceivedFile
from orderbot.files.fetchers import (
    TELEGRAM_DOWNLOAD_LIMIT,
    FetchError,
    FileFetcher,
    HttpFileFetcher,
    LinkPolicy,
    TelegramFileFetcher,
)
from orderbot.files.formats import Refusal, detect_model_format
from orderbot.files.receiver import FileReceiver, cleanup_unlinked_files, remove_unlinked_files
from orderbot.messages import Attachment, InboundMessage
from orderbot.queues.sqlite import SqliteInboundQueue
from orderbot.state.sqlite import SqliteStepStore
from orderbot.storage.sqlite import SqliteDatabase
from orderbot.worker import Worker

MB = 1024 * 1024

# A unit cube: 8 vertices, 12 triangles.
VERTICES = [(x, y, z) for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)]
TRIANGLES = [
    (0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1),
    (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3),
]  # fmt: skip


def binary_stl() -> bytes:
    body = b"".join(
        struct.pack("<3f", 0, 0, 0)
        + b"".join(struct.pack("<3f", *VERTICES[i]) for i in triangle)
        + b"\x00\x00"
        for triangle in TRIANGLES
    )
    return b"cube".ljust(80, b" ") + struct.pack("<I", len(TRIANGLES)) + body


def ascii_stl() -> bytes:
    facets = "".join(
        "  facet normal 0 0 0\n    outer loop\n"
        + "".join("      vertex {} {} {}\n".format(*VERTICES[i]) for i in triangle)
        + "    endloop\n  endfacet\n"
        for triangle in TRIANGLES
    )
    return f"solid cube\n{facets}endsolid cube\n".encode()


def obj() -> bytes:
    lines = ["# cube", "o cube"]
    lines += ["v {} {} {}".format(*v) for v in VERTICES]
    lines += ["vn 0 0 1"]
    lines += ["f {}//1 {}//1 {}//1".format(*(i + 1 for i in t)) for t in TRIANGLES]
    return ("\n".join(lines) + "\n").encode()


def three_mf(*, part: str = "3D/3dmodel.model") -> bytes:
    vertices = "".join('<vertex x="{}" y="{}" z="{}"/>'.format(*v) for v in VERTICES)
    triangles = "".join('<triangle v1="{}" v2="{}" v3="{}"/>'.format(*t) for t in TRIANGLES)
    model = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<model unit="millimeter" '
        'xmlns="http://schemas.microsoft.com/3dmanufacturing/core/2015/02">'
        f'<resources><object id="1" type="model"><mesh><vertices>{vertices}</vertices>'
        f"<triangles>{triangles}</triangles></mesh></object></resources>"
        '<build><item objectid="1"/></build></model>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        # A fixed date: the same cube must give the same bytes (and checksum) each time it is
        # built, not one per wall-clock second.
        for name, data in (
            ("[Content_Types].xml", '<?xml version="1.0"?><Types/>'),
            ("_rels/.rels", '<?xml version="1.0"?><Relationships/>'),
            (part, model),
        ):
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def jpeg() -> bytes:
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(600)


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# --------------------------------------------------------------------------------------------
# checks by content


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("cube.stl", binary_stl(), "stl"),
        ("cube.stl", ascii_stl(), "stl"),
        ("cube.obj", obj(), "obj"),
        ("cube.3mf", three_mf(), "3mf"),
        # By content, not by name: a misnamed model is still that model.
        ("cube.bin", binary_stl(), "stl"),
        ("model.stl", obj(), "obj"),
        ("download", three_mf(), "3mf"),
    ],
)
def test_models_are_recognised_by_content(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    assert detect_model_format(write(tmp_path, name, content), name) == expected


def test_binary_stl_size_matches_its_facet_count() -> None:
    data = binary_stl()
    assert len(data) == 84 + 50 * 12


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("photo.stl", jpeg(), "image"),  # a renamed JPEG
        ("photo.obj", b"\x89PNG\r\n\x1a\n" + bytes(200), "image"),
        ("truncated.stl", binary_stl()[:-30], "damaged"),
        ("padded.stl", binary_stl() + b"\x00" * 50, "damaged"),  # the header says 12 facets
        ("half.stl", ascii_stl()[: len(ascii_stl()) // 2], "damaged"),  # no endsolid
        ("nofacets.stl", b"solid x\nendsolid x\n", "damaged"),
        ("empty.stl", b"", "empty"),
        ("notes.obj", b"just some text\nwith lines\n", "unsupported"),
        ("points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", "unsupported"),  # no faces
        ("doc.3mf", b"%PDF-1.7\n" + bytes(300), "unsupported"),
        ("random.bin", os.urandom(1000), "unsupported"),
        ("other.3mf", three_mf(part="3D/readme.txt"), "unsupported"),  # a zip, but no model
        ("broken.3mf", three_mf()[:200], "damaged"),
    ],
)
def test_other_files_are_refused_with_a_reason(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    result = detect_model_format(write(tmp_path, name, content), name)
    assert isinstance(result, Refusal)
    assert result.reason == reason


def test_3mf_model_part_is_read_in_bounded_chunks(tmp_path: Path) -> None:
    # A highly compressible model part far bigger than what the check reads.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("3D/3dmodel.model", b"<?xml version='1.0'?><model>" + b" " * (200 * MB))
    path = write(tmp_path, "big.3mf", buffer.getvalue())
    assert path.stat().st_size < MB
    started = time.perf_counter()
    assert detect_model_format(path) == "3mf"
    assert time.perf_counter() - started < 2  # did not inflate 200 MB


# --------------------------------------------------------------------------------------------
# receiving: fetch, check, store


def http_receiver(
    tmp_path: Path, files: dict[str, bytes], *, max_bytes: int = 50 * MB
) -> tuple[FileReceiver, list[str]]:
    requested: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        content = files.get(request.url.path.lstrip("/"))
        if content is None:
            return httpx.Response(404)
        return httpx.Response(200, content=content)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    receiver = FileReceiver(
        tmp_path / "uploads",
        max_bytes=max_bytes,
        fetchers=(HttpFileFetcher(client, policy=EXAMPLE_POLICY),),
    )
    return receiver, requested


async def public_address(host: str, port: int) -> list[str]:
    """A resolver for the example host: a public (documentation-range-free) address."""
    return ["93.184.215.14"]


EXAMPLE_POLICY = LinkPolicy(hosts=("files.example.com",), resolver=public_address)


def link(name: str, size: int | None = None) -> Attachment:
    return Attachment(url=f"https://files.example.com/{name}", name=name, size=size)


async def test_received_files_are_stored_by_checksum(tmp_path: Path) -> None:
    content = binary_stl()
    receiver, _ = http_receiver(tmp_path, {"cube.stl": content, "again.stl": content})
    received = await receiver.receive(link("cube.stl"), channel="chat2desk")
    checksum = hashlib.sha256(content).hexdigest()
    assert received == ReceivedFile(
        name="cube.stl",
        checksum=checksum,
        size=len(content),
        format="stl",
        path=str(tmp_path / "uploads" / f"{checksum}.stl"),
    )
    assert await asyncio.to_thread(Path(received.path).read_bytes) == content
    # The same content under another name is the same stored file.
    again = await receiver.receive(link("again.stl"), channel="chat2desk")
    assert again.path == received.path
    assert again.name == "again.stl"
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == [f"{checksum}.stl"]


async def test_refused_and_failed_files_leave_nothing_behind(tmp_path: Path) -> None:
    receiver, _ = http_receiver(tmp_path, {"photo.stl": jpeg(), "cut.stl": binary_stl()[:-7]})
    photo = await receiver.receive(link("photo.stl"), channel="chat2desk")
    assert (photo.refused, photo.checksum, photo.path) == ("image", "", "")
    assert (await receiver.receive(link("cut.stl"), channel="chat2desk")).refused == "damaged"
    assert (
        await receiver.receive(link("missing.stl"), channel="chat2desk")
    ).refused == "download_failed"
    assert list((tmp_path / "uploads").iterdir()) == []


async def test_oversize_files_are_refused_with_the_limit(tmp_path: Path) -> None:
    big = binary_stl() * 4
    receiver, requested = http_receiver(tmp_path, {"big.stl": big}, max_bytes=len(big) - 1)
    # Size unknown in advance: the download stops at the limit.
    streamed = await receiver.receive(link("big.stl"), channel="chat2desk")
    assert (streamed.refused, streamed.limit) == ("too_large", len(big) - 1)
    assert len(requested) == 1
    # Size announced by the channel: refused without downloading.
    announced = await receiver.receive(link("big.stl", size=len(big)), channel="chat2desk")
    assert announced.refused == "too_large"
    assert len(requested) == 1
    assert list((tmp_path / "uploads").iterdir()) == []


async def test_max_upload_mb_default_applies_to_the_receiver(tmp_path: Path) -> None:
    receiver, requested = http_receiver(tmp_path, {})
    refused = await receiver.receive(link("huge.stl", size=50 * MB + 1), channel="chat2desk")
    assert (refused.refused, refused.limit) == ("too_large", 50 * MB)
    assert requested == []


async def test_attachment_without_a_fetcher_is_a_failed_download(tmp_path: Path) -> None:
    receiver, requested = http_receiver(tmp_path, {})
    result = await receiver.receive(
        Attachment(url="file:///etc/passwd", name="passwd"), channel="chat2desk"
    )
    assert result.refused == "download_failed"
    assert requested == []


async def test_telegram_files_go_through_get_file_and_its_20_mb_limit(tmp_path: Path) -> None:
    content = obj()
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/botTOKEN/getFile" and request.url.params["file_id"] == "ABC":
            return httpx.Response(200, json={"ok": True, "result": {"file_path": "docs/f.obj"}})
        if request.url.path == "/file/botTOKEN/docs/f.obj":
            return httpx.Response(200, content=content)
        return httpx.Response(404, json={"ok": False, "description": "Not Found"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    receiver = FileReceiver(tmp_path / "uploads", max_bytes=50 * MB)
    receiver.add_fetcher(TelegramFileFetcher("TOKEN", api_url="https://tg.example", client=client))
    received = await receiver.receive(
        Attachment(url="tg://file/ABC", name="part.obj"), channel="telegram"
    )
    assert (received.refused, received.format) == (None, "obj")
    assert calls == ["/botTOKEN/getFile", "/file/botTOKEN/docs/f.obj"]

    calls.clear()
    big = Attachment(url="tg://file/BIG", name="big.stl", size=TELEGRAM_DOWNLOAD_LIMIT + 1)
    refused = await receiver.receive(big, channel="telegram")
    assert (refused.refused, refused.limit) == ("telegram_limit", TELEGRAM_DOWNLOAD_LIMIT)
    assert calls == []  # explained without asking Telegram

    unknown = await receiver.receive(
        Attachment(url="tg://file/GONE", name="x.stl"), channel="telegram"
    )
    assert unknown.refused == "download_failed"


# --------------------------------------------------------------------------------------------
# cleanup


def test_unlinked_old_files_are_removed(tmp_path: Path) -> None:
    now = time.time()
    day = 24 * 3600

    def stored(checksum: str, age: float, suffix: str = ".stl") -> Path:
        path = tmp_path / f"{checksum}{suffix}"
        path.write_bytes(b"x")
        os.utime(path, (now - age, now - age))
        return path

    linked_old = stored("a" * 64, 3 * day)
    unlinked_old = stored("b" * 64, 3 * day)
    unlinked_young = stored("c" * 64, 1 * day)
    partial_old = stored(".part-" + "d" * 32, 3 * day, suffix="")
    foreign = stored("README", 3 * day, suffix=".txt")
    removed = remove_unlinked_files(tmp_path, {"a" * 64}, older_than=2 * day, now=now)
    assert sorted(removed) == sorted([unlinked_old, partial_old])
    assert linked_old.exists()
    assert unlinked_young.exists()
    assert foreign.exists()
    assert remove_unlinked_files(tmp_path / "missing", set(), older_than=0) == []


# --------------------------------------------------------------------------------------------
# the worker: attachments fetched before the step, files linked to the order


class FakeFetcher(FileFetcher):
    """Serves ``fake://<name>`` from a dict; records what was fetched."""

    channels = frozenset({"chat2desk", "telegram"})

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.fetched: list[str] = []

    def handles(self, attachment: Attachment) -> bool:
        return attachment.url.startswith("fake://")

    async def chunks(self, attachment: Attachment) -> AsyncGenerator[bytes, None]:
        name = attachment.url.removeprefix("fake://")
        self.fetched.append(name)
        if name not in self.files:
            raise FetchError("gone")
        content = self.files[name]
        for start in range(0, len(content), 100):
            yield content[start : start + 100]


async def test_worker_fetches_files_and_links_them_to_the_order(
    database: SqliteDatabase, tmp_path: Path
) -> None:
    fetcher = FakeFetcher({"cube.stl": binary_stl(), "cube.3mf": three_mf(), "photo.stl": jpeg()})
    upload_dir = tmp_path / "uploads"
    receiver = FileReceiver(upload_dir, max_bytes=50 * MB, fetchers=(fetcher,))
    queue = SqliteInboundQueue(database)
    worker = Worker(
        queue,
        SqliteStepStore(database),
        load_flow("printing"),
        options=DialogOptions(default_language="ru"),
        poll_interval=0.05,
        files=receiver,
    )

    def message(n: int, text: str, *names: str) -> InboundMessage:
        return InboundMessage(
            channel="chat2desk",
            client_id="7",
            message_id=f"m{n}",
            text=text,
            received_at=time.time(),
            attachments=tuple(Attachment(url=f"fake://{name}", name=name) for name in names),
        )

    script: list[tuple[str, tuple[str, ...]]] = [
        ("Здравствуйте", ()),
        ("Крупная печать", ("photo.stl",)),  # an attachment at a text step is not fetched
        ("Анна", ()),
        ("anna@example.com", ()),
        ("Пропустить", ()),
        ("", ("cube.stl", "photo.stl")),
        ("", ("cube.3mf",)),
        ("Продолжить", ()),
        ("PLA", ()),
        ("0.2 мм", ()),
        ("15 %", ()),
        ("Доставка", ()),
        ("ул. Киевская 120, кв. 5", ()),
        ("1", ()),  # confirm
    ]
    for n, (text, names) in enumerate(script):
        await queue.put(message(n, text, *names))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + 20
    while worker.handled < len(script) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await task

    assert fetcher.fetched == ["cube.stl", "photo.stl", "cube.3mf"]
    orders = await database.run(
        lambda c: c.execute("SELECT id, address, phone, total, currency FROM orders").fetchall()
    )
    assert len(orders) == 1
    order_id, address, phone, total, currency = orders[0]
    assert (address, phone, currency) == ("ул. Киевская 120, кв. 5", None, "KGS")
    assert Decimal(str(total)) == Decimal("3000")
    items = await database.run(
        lambda c: c.execute(
            "SELECT order_id, item_id, name, quantity, unit, unit_price, amount FROM order_items"
        ).fetchall()
    )
    assert [(i[0], i[1], i[2], i[3], i[4]) for i in items] == [
        (order_id, "fdm_large", "Крупная печать", 2, "модель")
    ]
    assert Decimal(str(items[0][5])) == Decimal("1500")
    assert Decimal(str(items[0][6])) == Decimal("3000")
    files = await database.run(
        lambda c: c.execute(
            "SELECT order_id, position, name, checksum, size, format, path FROM order_files"
            " ORDER BY position"
        ).fetchall()
    )
    expected = [("cube.stl", binary_stl(), "stl"), ("cube.3mf", three_mf(), "3mf")]
    assert len(files) == 2
    for row, (name, content, fmt) in zip(files, expected, strict=True):
        checksum = hashlib.sha256(content).hexdigest()
        assert row[:6] == (order_id, row[1], name, checksum, len(content), fmt)
        assert Path(row[6]) == upload_dir / f"{checksum}.{fmt}"
        assert await asyncio.to_thread(Path(row[6]).read_bytes) == content
    replies = await database.run(
        lambda c: c.execute("SELECT payload FROM outbox ORDER BY id").fetchall()
    )
    texts = [r[0].decode() for r in replies]
    assert any("это картинка" in t for t in texts)
    assert any(f"Заказ №{order_id} принят" in t for t in texts)

    # Linked files survive cleanup; a file of a dialog that never became an order does not.
    orphan = upload_dir / f"{'e' * 64}.stl"
    orphan.write_bytes(b"x")
    old = time.time() - 3 * 24 * 3600
    for path in upload_dir.iterdir():
        os.utime(path, (old, old))
    assert await cleanup_unlinked_files(database, upload_dir, older_than=48 * 3600) == 1
    assert not orphan.exists()
    assert all([await asyncio.to_thread(Path(row[6]).exists) for row in files])
