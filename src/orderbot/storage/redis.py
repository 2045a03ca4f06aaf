"""Redis: the keys of one distributed deployment, and commands of concurrent tasks sent together.

:class:`RedisKeys` names every key under ``QUEUE_PREFIX``; :data:`KEEP_SECONDS` is how long the
marks among them are kept. Used by the RabbitMQ queues, the Redis step store and the PostgreSQL
desk.

:class:`RedisBatcher` sends Redis commands of concurrent tasks together, in pipelines that grow
with the load.

A busy process has many tasks each wanting one small Redis command at about the same moment
(every step's state and processed mark, every reply's rate-limit token and sent mark). One trip
each costs a pool checkout, a socket write, a read and a wakeup per command, which profiles
showed as a quarter of a server's time. :class:`RedisBatcher` sends the commands as
non-transactional pipelines, at most ``max_in_flight`` at a time
(:class:`~orderbot.storage.batching.Batcher`): a command issued while they are all out waits
for the next one, together with
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
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from orderbot.storage.batching import Batcher

__all__ = ["KEEP_SECONDS", "RedisBatcher", "RedisKeys"]

KEEP_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Names of the Redis keys of one deployment (``prefix`` keeps test runs apart)."""

    prefix: str

    def deliveries(self, dedupe_key: str) -> str:
        return f"{self.prefix}:deliveries:{dedupe_key}"

    def processed(self, dedupe_key: str) -> str:
        return f"{self.prefix}:processed:{dedupe_key}"

    def state(self, client_key: str) -> str:
        return f"{self.prefix}:state:{client_key}"

    def sent(self, reply_key: str) -> str:
        return f"{self.prefix}:sent:{reply_key}"

    def sending(self, reply_key: str) -> str:
        return f"{self.prefix}:sending:{reply_key}"

    def parked(self, reply_key: str) -> str:
        return f"{self.prefix}:parked:{reply_key}"

    @property
    def parked_index(self) -> str:
        """Sorted set of ``<client>\t<reply key>`` by the time each parked reply is due."""
        return f"{self.prefix}:parked"

    def hold(self, client_key: str) -> str:
        return f"{self.prefix}:hold:{client_key}"

    def rate_limit(self, name: str) -> str:
        return f"{self.prefix}:ratelimit:{name}"

    def topic(self, client_key: str) -> str:
        """The customer's topic in the operators' Telegram chat (thread id and route, JSON)."""
        return f"{self.prefix}:topic:{client_key}"

    def topic_thread(self, thread_id: int) -> str:
        """The customer (client key) whose topic ``thread_id`` is."""
        return f"{self.prefix}:topic-thread:{thread_id}"

    def handoff(self, client_key: str) -> str:
        """Set while the client is with an operator: the cheap check of every message (the
        ``handoffs`` row in PostgreSQL decides; see ``orderbot.desk.postgres``)."""
        return f"{self.prefix}:handoff:{client_key}"

    def sender_state(self, process: str) -> str:
        """One sender process's circuit breakers and alerts (JSON, expiring): what
        ``GET /status`` shows from another process."""
        return f"{self.prefix}:sender-state:{process}"

    def pending_notifications(self) -> str:
        """Status changes whose notification may not be published yet: a sorted set of
        ``<order id>:<time>`` by time (``orderbot.desk.postgres``)."""
        return f"{self.prefix}:notify-pending"


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
