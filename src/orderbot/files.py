"""Model files: fetch what a customer attached, check it by content, store it by checksum.

This is the I/O that must not happen in the dialog engine. The worker calls
:meth:`FileReceiver.receive` for each attachment *before* the dialog step, and hands the engine
the resulting :class:`~orderbot.dialog.ReceivedFile`: stored (name, checksum, size, format,
path) or refused with a reason code the flow has a text for.

- **Fetching** is a :class:`FileFetcher`: :class:`HttpFileFetcher` for links (Chat2Desk gives
  attachment URLs), :class:`TelegramFileFetcher` for ``tg://file/<file_id>`` (Bot API
  ``getFile``, which refuses files over 20 MB: :data:`TELEGRAM_DOWNLOAD_LIMIT`).
- **Checking** is :func:`detect_model_format`, by content, never by name: binary STL (size is
  84 + 50 x facets from the header), ASCII STL (``solid`` ... ``facet normal`` ...
  ``endsolid``), OBJ (``v x y z`` vertices and ``f`` faces), 3MF (a zip with ``3D/*.model``,
  read with bounded reads). Anything else, a renamed JPEG included, is refused.
- **Storing**: ``UPLOAD_DIR/<sha256>.<format>``; the same content uploaded twice is one file.
  Files get linked to an order (``order_files``) when it is stored; :func:`remove_unlinked_files`
  deletes those of dialogs that never became an order, after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sqlite3
import time
import uuid
import zipfile
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orderbot.dialog import ReceivedFile
from orderbot.errors import OrderbotError
from orderbot.loggers import storage as log
from orderbot.messages import Attachment
from orderbot.sqlite import SqliteDatabase

if TYPE_CHECKING:  # imported at the first download: most processes never download
    import httpx

__all__ = [
    "MODEL_FORMATS",
    "TELEGRAM_DOWNLOAD_LIMIT",
    "FetchError",
    "FileFetcher",
    "FileReceiver",
    "HttpFileFetcher",
    "Refusal",
    "TelegramFileFetcher",
    "cleanup_unlinked_files",
    "detect_model_format",
    "remove_unlinked_files",
]

MODEL_FORMATS = ("stl", "obj", "3mf")
TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
"""The Bot API's ``getFile`` does not hand bots files larger than this."""

_CHUNK = 64 * 1024
_TEMP_PREFIX = ".part-"
_MAX_ZIP_ENTRIES = 10_000
_MODEL_PART = re.compile(r"3d/[^/]+\.model", re.IGNORECASE)
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_OBJ_VERTEX = re.compile(rf"v\s+{_FLOAT}\s+{_FLOAT}\s+{_FLOAT}(?:\s|$)".encode())
_OBJ_FACE = re.compile(rb"f(?:\s+-?\d+(?:/-?\d*){0,2}){3,}\s*$")
_IMAGES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
)


class FetchError(OrderbotError):
    """An attachment could not be downloaded (the customer is asked to send it again)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a file is not accepted: ``reason`` is a code the flow has a text for
    (``validators.FILE_REASONS``), ``detail`` is for the logs."""

    reason: str
    detail: str = ""


# --------------------------------------------------------------------------------------------
# checking by content


def detect_model_format(path: Path, name: str = "") -> str | Refusal:
    """``"stl"``, ``"obj"`` or ``"3mf"`` if the file at ``path`` is such a model, else why not.

    ``name`` (what the customer called it) never makes a file acceptable; it only picks the
    clearer refusal: a broken file named ``.stl`` is ``damaged`` rather than ``unsupported``.
    """
    size = path.stat().st_size
    if size == 0:
        return Refusal("empty")
    with path.open("rb") as file:
        head = file.read(_CHUNK)
        if size >= 84:
            file.seek(80)
            facets = int.from_bytes(file.read(4), "little")
            # A binary STL is exactly this long; any other file is this long only by accident.
            if facets > 0 and size == 84 + 50 * facets:
                return "stl"
        file.seek(max(0, size - 1024))
        tail = file.read()
    if head.startswith(b"PK\x03\x04"):
        return _check_3mf(path)
    if any(head.startswith(magic) for magic in _IMAGES) or (
        head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    ):
        return Refusal("image", "an image")
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1"):
        return Refusal("image", "a HEIC photo")
    claims_stl = name.lower().endswith(".stl")
    if head.lstrip().lower().startswith(b"solid"):
        text = head.lower()
        if b"facet normal" in text and b"vertex" in text and b"endsolid" in tail.lower():
            return "stl"
        return Refusal("damaged", "ASCII STL without facets or endsolid")
    if b"\x00" not in head and _looks_like_obj(path):
        return "obj"
    if claims_stl and size >= 84:
        return Refusal("damaged", f"binary STL of {size} bytes, header says {facets} facets")
    return Refusal("unsupported", "not STL, OBJ or 3MF")


def _looks_like_obj(path: Path) -> bool:
    vertices = 0
    with path.open("rb") as file:
        for raw in file:
            line = raw.strip()
            if line.startswith((b"v ", b"v\t")):
                if _OBJ_VERTEX.match(line):
                    vertices += 1
            elif line.startswith((b"f ", b"f\t")) and _OBJ_FACE.match(line):
                return vertices >= 3
            elif b"\x00" in line:
                return False
    return False


def _check_3mf(path: Path) -> str | Refusal:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if len(entries) > _MAX_ZIP_ENTRIES:
                return Refusal("unsupported", f"a zip with {len(entries)} entries")
            parts = [info for info in entries if _MODEL_PART.fullmatch(info.filename)]
            if not parts:
                return Refusal("unsupported", "a zip without a 3D/*.model part")
            # Bounded read: only the start of the model part, never the whole (maybe huge) XML.
            with archive.open(parts[0]) as part:
                start = part.read(_CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        return Refusal("damaged", f"broken zip: {exc}")
    except NotImplementedError as exc:  # an unsupported compression method
        return Refusal("unsupported", f"zip: {exc}")
    if b"<model" not in start:
        return Refusal("damaged", "3D/*.model holds no <model> element")
    return "3mf"


# --------------------------------------------------------------------------------------------
# fetching


class FileFetcher(ABC):
    """Downloads one kind of attachment. ``download_limit`` is what the channel itself lets a
    bot download (``None``: no limit of its own), and ``limit_reason`` the refusal for it."""

    download_limit: int | None = None
    limit_reason: str = "too_large"

    @abstractmethod
    def handles(self, attachment: Attachment) -> bool:
        """Whether this fetcher can download ``attachment`` (by its URL)."""

    @abstractmethod
    def chunks(self, attachment: Attachment) -> AsyncGenerator[bytes, None]:
        """The file's bytes, in chunks; raises :class:`FetchError` when it cannot be had."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Close what the fetcher opened. Idempotent."""


class HttpFileFetcher(FileFetcher):
    """Attachments given as ``http(s)://`` links, such as Chat2Desk's."""

    def __init__(self, client: httpx.AsyncClient | None = None, *, timeout: float = 60.0) -> None:
        self._own_client = client is None
        self._client = client
        self._timeout = timeout

    def _http(self) -> httpx.AsyncClient:
        # Made (and httpx imported) at the first download: most processes never download.
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout, connect=10.0), follow_redirects=True
            )
        return self._client

    def handles(self, attachment: Attachment) -> bool:
        return attachment.url.startswith(("http://", "https://"))

    async def chunks(self, attachment: Attachment) -> AsyncGenerator[bytes, None]:
        client = self._http()
        import httpx

        try:
            async with client.stream("GET", attachment.url) as response:
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code}")
                async for chunk in response.aiter_bytes(_CHUNK):
                    yield chunk
        except httpx.HTTPError as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()


class TelegramFileFetcher(HttpFileFetcher):
    """``tg://file/<file_id>`` attachments: Bot API ``getFile``, then the file's download URL.

    The Bot API hands bots files up to 20 MB only; bigger ones are refused as
    ``telegram_limit`` (from the size Telegram reported, before any download) so the customer
    is told why.
    """

    download_limit = TELEGRAM_DOWNLOAD_LIMIT
    limit_reason = "telegram_limit"

    def __init__(
        self,
        token: str,
        *,
        api_url: str = "https://api.telegram.org",
        client: httpx.AsyncClient | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(client, timeout=timeout)
        self._token = token
        self._api_url = api_url.rstrip("/")

    def handles(self, attachment: Attachment) -> bool:
        return attachment.url.startswith("tg://file/")

    async def chunks(self, attachment: Attachment) -> AsyncGenerator[bytes, None]:
        file_id = attachment.url.removeprefix("tg://file/")
        client = self._http()
        import httpx

        try:
            response = await client.get(
                f"{self._api_url}/bot{self._token}/getFile", params={"file_id": file_id}
            )
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise FetchError(f"getFile: {type(exc).__name__}") from exc
        file_path = body.get("result", {}).get("file_path") if isinstance(body, dict) else None
        if not body.get("ok") or not isinstance(file_path, str):
            raise FetchError(f"getFile: {str(body.get('description', 'no file_path'))[:200]}")
        url = f"{self._api_url}/file/bot{self._token}/{file_path}"
        async for chunk in super().chunks(Attachment(url=url, name=attachment.name)):
            yield chunk


# --------------------------------------------------------------------------------------------
# receiving: fetch, check, store


class FileReceiver:
    """Turns attachments into checked, stored files (or refusals) for the dialog engine.

    ``max_bytes`` is ``MAX_UPLOAD_MB``; files are stored as ``upload_dir/<sha256>.<format>``.
    """

    def __init__(
        self,
        upload_dir: Path,
        *,
        max_bytes: int,
        fetchers: Collection[FileFetcher] = (),
    ) -> None:
        self.upload_dir = upload_dir
        self.max_bytes = max_bytes
        self._fetchers = tuple(fetchers)

    @classmethod
    def with_http(cls, upload_dir: Path, *, max_bytes: int, timeout: float = 60.0) -> FileReceiver:
        """A receiver for link attachments (Chat2Desk); add a :class:`TelegramFileFetcher` with
        :meth:`add_fetcher` when Telegram is configured."""
        return cls(upload_dir, max_bytes=max_bytes, fetchers=(HttpFileFetcher(timeout=timeout),))

    def add_fetcher(self, fetcher: FileFetcher) -> None:
        """Try ``fetcher`` before the others (so a specific one wins over plain HTTP)."""
        self._fetchers = (fetcher, *self._fetchers)

    async def aclose(self) -> None:
        for fetcher in self._fetchers:
            with contextlib.suppress(Exception):
                await fetcher.aclose()

    async def receive(self, attachment: Attachment) -> ReceivedFile:
        """Fetch, check and store one attachment. Never raises for a bad file or a failed
        download: those come back as a refused :class:`ReceivedFile`."""
        name = _display_name(attachment)
        fetcher = next((f for f in self._fetchers if f.handles(attachment)), None)
        if fetcher is None:
            log.warning("no fetcher for attachment %s", attachment.url.split(":", 1)[0])
            return ReceivedFile(name=name, refused="download_failed")
        limit, reason = self.max_bytes, "too_large"
        if fetcher.download_limit is not None and fetcher.download_limit < limit:
            limit, reason = fetcher.download_limit, fetcher.limit_reason
        if attachment.size is not None and attachment.size > limit:
            return ReceivedFile(name=name, refused=reason, limit=limit)
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        temp = self.upload_dir / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            digest = hashlib.sha256()
            size = 0
            with temp.open("wb") as out:
                async with contextlib.aclosing(fetcher.chunks(attachment)) as chunks:
                    async for chunk in chunks:
                        size += len(chunk)
                        if size > limit:
                            return ReceivedFile(name=name, refused=reason, limit=limit)
                        digest.update(chunk)
                        out.write(chunk)
            checked = await asyncio.to_thread(detect_model_format, temp, name)
            if isinstance(checked, Refusal):
                log.info("refused file (%s): %s", checked.reason, checked.detail)
                return ReceivedFile(name=name, size=size, refused=checked.reason)
            checksum = digest.hexdigest()
            final = self.upload_dir / f"{checksum}.{checked}"
            await asyncio.to_thread(_keep, temp, final)
        except FetchError as exc:
            log.warning("cannot fetch attachment: %s", exc)
            return ReceivedFile(name=name, refused="download_failed")
        except OSError:
            log.exception("cannot store an uploaded file")
            return ReceivedFile(name=name, refused="download_failed")
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return ReceivedFile(
            name=name, checksum=checksum, size=size, format=checked, path=str(final)
        )


def _display_name(attachment: Attachment) -> str:
    name = attachment.name or attachment.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    # What the customer called it, for texts only: never used as a path.
    return name.replace("\n", " ").strip()[:120] or "file"


def _keep(temp: Path, final: Path) -> None:
    if final.exists():
        # The same content again: keep the stored copy, but refresh its age for cleanup.
        os.utime(final)
    else:
        os.replace(temp, final)


# --------------------------------------------------------------------------------------------
# housekeeping


def remove_unlinked_files(
    upload_dir: Path, linked: Collection[str], *, older_than: float, now: float | None = None
) -> list[Path]:
    """Delete stored files whose checksum no order links to, last touched more than
    ``older_than`` seconds ago (dialogs that were cancelled or abandoned), and partial downloads
    left by a crash. Returns what was deleted."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    if not upload_dir.is_dir():
        return removed
    for path in upload_dir.iterdir():
        if not path.is_file():
            continue
        checksum = path.name.split(".", 1)[0]
        is_partial = path.name.startswith(_TEMP_PREFIX)
        if not is_partial and (checksum in linked or len(checksum) != 64):
            continue  # linked, or not ours: never delete what we did not write
        try:
            if path.stat().st_mtime + older_than < now:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue
    return removed


async def cleanup_unlinked_files(
    db: SqliteDatabase, upload_dir: Path, *, older_than: float = 48 * 3600.0
) -> int:
    """:func:`remove_unlinked_files` with the checksums linked in ``order_files``."""

    def linked(conn: sqlite3.Connection) -> set[str]:
        return {row[0] for row in conn.execute("SELECT DISTINCT checksum FROM order_files")}

    checksums = await db.run(linked)
    removed = await asyncio.to_thread(
        remove_unlinked_files, upload_dir, checksums, older_than=older_than
    )
    if removed:
        log.info("removed %d uploaded files no order uses", len(removed))
    return len(removed)


def linked_files(order_data: Mapping[str, object]) -> list[Mapping[str, object]]:
    """The stored files an order's data lists (``data["files"]``), well-formed ones only."""
    files = order_data.get("files")
    if not isinstance(files, list):
        return []
    return [f for f in files if isinstance(f, Mapping) and isinstance(f.get("checksum"), str)]
