"""One SQLite connection owned by one thread, with group commit.

The embedded profile keeps queues, dialog state and orders in one SQLite file. Every access goes
through :class:`SqliteDatabase.run`: jobs queue up, the thread takes all that are waiting, runs
each in its own savepoint (one failing job does not undo the others), and commits them together.
A commit therefore costs the same for one webhook or for two hundred, which is what lets ingress
answer thousands of requests a second with every 200 committed first.

``synchronous=normal`` (WAL) survives a crash of the process; ``full`` also survives power loss,
at the cost of an fsync per commit batch.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from orderbot.errors import StorageError
from orderbot.loggers import storage as log

__all__ = ["SqliteDatabase"]

T = TypeVar("T")

_MAX_BATCH = 512
_STOP = object()


class _Job:
    __slots__ = ("error", "fn", "future", "result", "savepoint")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        future: asyncio.Future[Any],
        savepoint: bool,
    ):
        self.fn = fn
        self.future = future
        self.savepoint = savepoint
        self.result: Any = None
        self.error: BaseException | None = None


class SqliteDatabase:
    """Async front of a single-writer SQLite connection. Use as ``async with``."""

    def __init__(
        self, path: str | Path, *, synchronous: Literal["normal", "full"] = "normal"
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.commits = 0  # batches committed, for tests and benchmarks

    async def __aenter__(self) -> SqliteDatabase:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name="orderbot-sqlite", daemon=True
        )
        self._thread.start()
        await ready

    async def aclose(self) -> None:
        """Finish queued jobs, close the connection. Idempotent."""
        if self._thread is None or self._closed:
            return
        self._closed = True
        self._jobs.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, savepoint: bool = True) -> T:
        """Run ``fn(connection)`` in the database thread, inside a transaction committed (with
        others queued at the same time) before this returns. Raises StorageError on failure.

        Each job runs in its own savepoint so that a failing job leaves the others in its batch
        alone; a job of one statement (atomic by itself in SQLite) may pass ``savepoint=False``
        to skip that cost, as the webhook's insert does."""
        if self._closed or self._loop is None:
            raise StorageError("database is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put(_Job(fn, future, savepoint))
        return await future

    # -- the database thread ---------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-8000")
        return conn

    def _main(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None
        loop = self._loop
        try:
            conn = self._connect()
        except Exception as exc:  # report the open failure to the awaiting caller
            loop.call_soon_threadsafe(
                _set_exception, ready, StorageError(f"cannot open {self.path}: {exc}")
            )
            return
        loop.call_soon_threadsafe(_set_result, ready, None)
        stopping = False
        while not stopping:
            item = self._jobs.get()
            batch: list[_Job] = []
            if item is _STOP:
                stopping = True
            else:
                batch.append(item)
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    continue
                batch.append(item)
            if batch:
                self._run_batch(conn, batch)
                loop.call_soon_threadsafe(_resolve, batch)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for job in batch:
                job.error = StorageError(f"cannot begin a transaction: {exc}")
            return
        for job in batch:
            if not job.savepoint:
                try:
                    job.result = job.fn(conn)
                except BaseException as exc:  # one statement: nothing of it was applied
                    job.error = (
                        exc if not isinstance(exc, sqlite3.Error) else StorageError(str(exc))
                    )
                continue
            conn.execute("SAVEPOINT job")
            try:
                job.result = job.fn(conn)
            except BaseException as exc:  # a job's failure is its own; the batch goes on
                job.error = exc if not isinstance(exc, sqlite3.Error) else StorageError(str(exc))
                conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
        try:
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            log.error("commit failed for %d jobs: %s", len(batch), exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback after a failed commit failed")
            for job in batch:
                job.error = StorageError(f"commit failed: {exc}")


def _resolve(batch: list[_Job]) -> None:
    for job in batch:
        if job.future.done():  # the caller was cancelled; the work is committed anyway
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)


def _set_result(future: asyncio.Future[None], value: None) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
