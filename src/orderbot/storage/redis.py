"""Redis commands of concurrent tasks sent together, in pipelines that grow with the load.

A busy process has many tasks each wanting one small Redis command at about the same moment
(every step's state and processed mark, every reply's rate-limit token and sent mark). One trip
each costs a pool checkout, a socket write, a read and a wakeup per command, which profiles
showed as a quarter of a server's time. :class:`RedisBatcher` sends the commands as
non-transactional pipelines, at most ``max_in_flight`` at a time (:class:`~orderbot.batching.
Batcher`): a command issued while they are all out waits for the next one, together with
everything else issued meanwhile. An idle process sends a lone command at once (no added
latency); a busy one sends few, large pipelines. Each caller gets its own result or its own
error. A command is still atomic by itself (a Lua script is a command), and the commands of one
task keep their order because a task awaits each result before its next command.

Errors: a lost connection fails every command of that pipeline with the same
:class:`redis.exceptions.RedisError` (callers already handle those); a command that fails by
itself (a wrong type, a script error) fails only its caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from orderbot.batching import Batcher

__all__ = ["RedisBatcher"]

Command = Callable[[Pipeline], object]


class RedisBatcher(Batcher[Command, Any]):
    """Batches commands given as ``lambda pipe: pipe.get(key)``: each adds exactly one command
    to the pipeline. ``max_batch`` bounds one pipeline (a larger turn sends several)."""

    def __init__(self, redis: Redis, *, max_batch: int = 512, max_in_flight: int = 2) -> None:
        super().__init__(max_batch=max_batch, max_in_flight=max_in_flight)
        self.redis = redis

    @property
    def pipelines(self) -> int:
        """Pipelines sent so far."""
        return self.batches

    @property
    def commands(self) -> int:
        """Commands sent so far."""
        return self.items

    async def call(self, command: Command) -> Any:
        """Add ``command`` to the next pipeline and return its result."""
        return await self.submit(command)

    async def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a registered Lua script in the next pipeline (loaded first if Redis lost it)."""
        try:
            return await self.call(
                lambda pipe: pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            )
        except NoScriptError:
            return await script(keys=list(keys), args=list(args))

    async def _send_batch(self, items: list[Command]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in items:
                command(pipe)
            return list(await pipe.execute(raise_on_error=False))

    def _batch_error(self, exc: BaseException) -> BaseException:
        return exc if isinstance(exc, RedisError) else RedisError(f"{type(exc).__name__}")
