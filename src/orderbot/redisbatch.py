"""Redis commands of concurrent tasks sent together, in pipelines that grow with the load.

A busy process has many tasks each wanting one small Redis command at about the same moment
(every webhook's dedupe check, every step's state, every reply's sent mark). One round trip
each costs a pool checkout, a socket write, a read and a wakeup per command, which profiles
showed as a quarter of a server's time. :class:`RedisBatcher` sends the commands as
non-transactional pipelines, at most ``max_in_flight`` at a time: a command issued while they
are all out waits for the next one, together with everything else issued meanwhile. An idle
process sends a lone command at once (no added latency); a busy one sends few, large
pipelines. Each caller gets its own result or its own error. A command is still atomic by
itself (a Lua script is a command), and the commands of one task keep their order because a
task awaits each result before its next command.

Errors: a lost connection fails every command of that pipeline with the same
:class:`redis.exceptions.RedisError` (callers already handle those); a command that fails by
itself (a wrong type, a script error) fails only its caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

__all__ = ["RedisBatcher"]

Command = Callable[[Pipeline], object]


class RedisBatcher:
    """Batches commands given as ``lambda pipe: pipe.get(key)``: each adds exactly one command
    to the pipeline. ``max_batch`` bounds one pipeline (a larger turn sends several)."""

    def __init__(self, redis: Redis, *, max_batch: int = 512, max_in_flight: int = 2) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self.redis = redis
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[Command, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._in_flight = 0
        self._running: set[asyncio.Task[None]] = set()
        self.pipelines = 0  # sent so far (tests and benchmarks read it)
        self.commands = 0

    async def call(self, command: Command) -> Any:
        """Add ``command`` to the next pipeline and return its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((command, future))
        if not self._scheduled and self._in_flight < self._max_in_flight:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    async def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a registered Lua script in the next pipeline (loaded first if Redis lost it)."""
        try:
            return await self.call(
                lambda pipe: pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            )
        except NoScriptError:
            return await script(keys=list(keys), args=list(args))

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and self._in_flight < self._max_in_flight:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._in_flight += 1
            task = asyncio.ensure_future(self._send(batch))
            self._running.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._in_flight -= 1
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        self.pipelines += 1
        self.commands += len(batch)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for command, _ in batch:
                    command(pipe)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            error = exc if isinstance(exc, RedisError) else RedisError(f"{type(exc).__name__}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
