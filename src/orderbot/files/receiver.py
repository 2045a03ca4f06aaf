"""Model files: fetch what a customer attached, check it by content, store it by checksum.

This is the I/O that must not happen in the dialog engine. The worker calls
:meth:`FileReceiver.receive` for each attachment *before* the dialog step, and hands the engine
the resulting :class:`~orderbot.dialog.models.ReceivedFile`: stored (name, checksum, size, format,
path) or refused with a reason code the flow has a text for.

- **Fetching** is a :class:`FileFetcher`: :class:`HttpFileFetcher` for links (Chat2Desk gives
  attachment URLs), :class:`TelegramFileFetcher` for ``tg://file/<file_id>`` (Bot API
  ``getFile``, which refuses files over 20 MB: :data:`TELEGRAM_DOWNLOAD_LIMIT`); in
  :mod:`orderbot.files.fetchers`. Links are fetched only from the channel's file hosts and
  public addresses (``LinkPolicy``), within a deadline, a minimum rate and a few at a time.
- **Checking** is :func:`detect_model_format`, by content, never by name: binary STL (size is
  84 + 50 x facets from the header), ASCII STL (``solid`` ... ``facet normal`` ...
  ``endsolid``), OBJ (``v x y z`` vertices and ``f`` faces), 3MF (a zip with ``3D/*.model``,
  read with bounded reads). Anything else, a renamed JPEG included, is refused. In
  :mod:`orderbot.files.formats`.
- **Storing**: ``UPLOAD_DIR/<sha256>.<format>``; the same content uploaded twice is one file.
  Files get linked to an order (``order_files``) when it is stored; :func:`remove_unlinked_files`
  deletes those of dialogs that never became an order, after a grace period.

This module holds the receiving (:class:`FileReceiver`) and the housekeeping; downloading is in
:mod:`orderbot.files.fetchers`, checking formats in :mod:`orderbot.files.formats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import time
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path

from orderbot.dialog.models import ReceivedFile
from orderbot.files.fetchers import (
    FetchError,
    FileFetcher,
    HttpFileFetcher,
    LinkPolicy,
)
from orderbot.files.formats import CHECK_TIME_LIMIT, Refusal, detect_model_format
from orderbot.loggers import storage as log
from orderbot.messages import Attachment
from orderbot.storage.sqlite import SqliteDatabase

__all__ = ["FileReceiver", "cleanup_unlinked_files", "display_name", "remove_unlinked_files"]

_TEMP_PREFIX = ".part-"


# --------------------------------------------------------------------------------------------
# receiving: fetch, check, store


class FileReceiver:
    """Turns attachments into checked, stored files (or refusals) for the dialog engine.

    ``max_bytes`` is ``MAX_UPLOAD_MB``; files are stored as ``upload_dir/<sha256>.<format>``.

    Bounds, so that no file or link can stall or exhaust the process:

    - ``max_downloads`` (``DOWNLOAD_CONCURRENCY``) receptions at once, download and check
      together; the others wait their turn. Memory per reception is one piece of at most
      :data:`~orderbot.files.fetchers.CHUNK` decoded bytes (the file goes to disk as it comes),
      so in total about ``max_downloads`` x 64 KB plus the checks' bounded reads;
    - ``download_timeout`` (``DOWNLOAD_TIMEOUT``) seconds for a whole download, and after the
      first ``rate_grace`` seconds at least ``min_rate`` (``DOWNLOAD_MIN_RATE``) bytes a
      second on average: a link that trickles is given up early;
    - the size limit counts decoded bytes as they arrive (a gzip-encoded body stops at the
      limit, it is never inflated whole);
    - the content check has ``check_time_limit`` seconds (see :mod:`orderbot.files.formats`).
    """

    def __init__(
        self,
        upload_dir: Path,
        *,
        max_bytes: int,
        fetchers: Collection[FileFetcher] = (),
        download_timeout: float = 300.0,
        min_rate: int = 8 * 1024,
        max_downloads: int = 2,
        check_time_limit: float = CHECK_TIME_LIMIT,
        rate_grace: float = 10.0,
    ) -> None:
        self.upload_dir = upload_dir
        self.max_bytes = max_bytes
        self._fetchers = tuple(fetchers)
        self._download_timeout = download_timeout
        self._min_rate = min_rate
        self._check_time_limit = check_time_limit
        self._rate_grace = rate_grace
        self._downloads = asyncio.Semaphore(max_downloads)

    @classmethod
    def with_http(
        cls,
        upload_dir: Path,
        *,
        max_bytes: int,
        policy: LinkPolicy | None = None,
        download_timeout: float = 300.0,
        min_rate: int = 8 * 1024,
        max_downloads: int = 2,
    ) -> FileReceiver:
        """A receiver for link attachments (Chat2Desk) under ``policy``; add a
        :class:`TelegramFileFetcher` with :meth:`add_fetcher` when Telegram is configured."""
        return cls(
            upload_dir,
            max_bytes=max_bytes,
            fetchers=(HttpFileFetcher(policy=policy),),
            download_timeout=download_timeout,
            min_rate=min_rate,
            max_downloads=max_downloads,
        )

    def add_fetcher(self, fetcher: FileFetcher) -> None:
        """Try ``fetcher`` before the others (so a specific one wins over plain HTTP)."""
        self._fetchers = (fetcher, *self._fetchers)

    async def aclose(self) -> None:
        for fetcher in self._fetchers:
            with contextlib.suppress(Exception):
                await fetcher.aclose()

    async def receive(self, attachment: Attachment, *, channel: str) -> ReceivedFile:
        """Fetch, check and store one attachment that came through ``channel``. Never raises
        for a bad file or a failed download: those come back as a refused
        :class:`ReceivedFile`. A link no fetcher of that channel serves, or one the link policy
        refuses, is a failed download (the same answer as any other failure: no oracle)."""
        name = display_name(attachment)
        fetcher = next(
            (f for f in self._fetchers if channel in f.channels and f.handles(attachment)), None
        )
        if fetcher is None:
            log.warning(
                "no %s fetcher for attachment %s", channel, attachment.url.split(":", 1)[0][:20]
            )
            return ReceivedFile(name=name, refused="download_failed")
        limit, reason = self.max_bytes, "too_large"
        if fetcher.download_limit is not None and fetcher.download_limit < limit:
            limit, reason = fetcher.download_limit, fetcher.limit_reason
        if attachment.size is not None and attachment.size > limit:
            return ReceivedFile(name=name, refused=reason, limit=limit)
        async with self._downloads:
            return await self._receive(fetcher, attachment, name, limit, reason)

    def _give_up_at(self, started: float, size: int) -> float:
        """The loop time at which a download that began at ``started`` (monotonic, as the
        event loop's clock) and has ``size`` bytes is given up."""
        overall = started + self._download_timeout
        if self._min_rate <= 0:
            return overall
        return min(overall, started + max(self._rate_grace, size / self._min_rate))

    async def _receive(
        self, fetcher: FileFetcher, attachment: Attachment, name: str, limit: int, reason: str
    ) -> ReceivedFile:
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        temp = self.upload_dir / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            digest = hashlib.sha256()
            size = 0
            started = asyncio.get_running_loop().time()
            with temp.open("wb") as out:
                # One deadline, moved as bytes arrive: the overall limit, or the moment the
                # average rate would fall below the minimum (silence included).
                async with (
                    asyncio.timeout_at(self._give_up_at(started, 0)) as budget,
                    contextlib.aclosing(fetcher.chunks(attachment)) as chunks,
                ):
                    async for chunk in chunks:
                        size += len(chunk)
                        if size > limit:
                            return ReceivedFile(name=name, refused=reason, limit=limit)
                        digest.update(chunk)
                        out.write(chunk)
                        budget.reschedule(self._give_up_at(started, size))
            checked = await asyncio.to_thread(
                detect_model_format, temp, name, time_limit=self._check_time_limit
            )
            if isinstance(checked, Refusal):
                log.info("refused file (%s): %s", checked.reason, checked.detail)
                return ReceivedFile(name=name, size=size, refused=checked.reason)
            checksum = digest.hexdigest()
            final = self.upload_dir / f"{checksum}.{checked}"
            await asyncio.to_thread(_keep, temp, final)
        except FetchError as exc:
            log.warning("cannot fetch attachment: %s", exc)
            return ReceivedFile(name=name, refused="download_failed")
        except TimeoutError:
            log.warning(
                "attachment download too slow (over %.0f s, or under %d bytes/s)",
                self._download_timeout,
                self._min_rate,
            )
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


def display_name(attachment: Attachment) -> str:
    """What the customer called the file, for texts only (never used as a path)."""
    name = attachment.name or attachment.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
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
