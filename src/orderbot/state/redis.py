"""Distributed dialog state and step commits: Redis for state and processed ids, PostgreSQL for
orders and logs, RabbitMQ for replies.

There is no transaction across the three, so a step commits in an order where every prefix is
safe to redo (the worker acks the inbound message only after all of it):

1. PostgreSQL, one transaction: the order (``ON CONFLICT (idempotency_key) DO NOTHING``; a redo
   reads back the id of the same order), the inbound message log row (inserted only when not
   there), the dialog outcomes and the operator handoff started or ended by the message
   (``handoffs``). The log row doubles as the "this step's rows are written" mark: a redo that
   finds it writes no second outcome, handoff change or log row. A step with none of order,
   outcomes and handoff change (most of them) is that one conditional insert, in autocommit,
   batched with the steps that finish at the same moment (:class:`~orderbot.storage.message_log.
   InboundLogBatcher`).
2. The replies, published with confirms, each under its deterministic key (the sender drops a
   key it already sent); at the same time as 1 when the step has no order (nothing to wait
   for: a redo publishes the same keys again), else after it, with the new-order alerts for
   operators (``new-order:<id>:...``; built again by a redo, same keys).
3. One Redis script (atomic): the new dialog state (TTL 24 h, refreshed by every step), the
   handoff flag of the client when the step changed it (see ``orderbot.desk.postgres``) and the
   processed mark of the message id (TTL 7 days). A redelivered message whose mark is set is
   acknowledged and dropped before anything else (the worker reads state and mark with one
   ``MGET``).

Redis commands of concurrent steps share pipelines (:class:`~orderbot.storage.redis.RedisBatcher`).

A crash between any two steps redoes the step from the old state, which yields the same order
key and reply keys, so nothing happens twice.

The rows of 1 are written by :mod:`orderbot.state.postgres_rows`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from orderbot.desk.postgres import handoff_flag
from orderbot.errors import BackendUnavailable, DataRejected
from orderbot.loggers import storage as log
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.orders.models import ORDER_ID_PLACEHOLDER
from orderbot.queues.rabbitmq.outbox import RabbitOutbox
from orderbot.state.base import IdleDialog, NewOrderAlerts, StepCommit, StepStore
from orderbot.state.postgres_rows import inbound_row, write_rows
from orderbot.storage.message_log import InboundLogBatcher
from orderbot.storage.redis import KEEP_SECONDS, RedisBatcher, RedisKeys
from orderbot.storage.schema import dialog_outcomes
from orderbot.storage.sql import driver_error_name, refused_data

__all__ = ["STATE_TTL_SECONDS", "RedisStepStore"]

STATE_TTL_SECONDS = 24 * 3600
_FRESH_LIMIT = 100_000

# KEYS: state, processed mark, handoff flag, active dialogs (sorted by last step time),
# their summaries. ARGV: state, "1" to set it ("0": the dialog ended, delete it), state TTL,
# processed TTL, handoff flag "set" / "delete" / "keep", its value, its TTL, the client key,
# now, the summary ("step\tmessages\tstarted_at").
_SAVE_STATE = """
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  redis.call('ZADD', KEYS[4], ARGV[9], ARGV[8])
  redis.call('HSET', KEYS[5], ARGV[8], ARGV[10])
else
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[4], ARGV[8])
  redis.call('HDEL', KEYS[5], ARGV[8])
end
if ARGV[5] == 'set' then
  redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[7])
elseif ARGV[5] == 'delete' then
  redis.call('DEL', KEYS[3])
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[4])
return 1
"""

# Take an idle dialog for the "abandoned" record, unless a step moved it on since it was listed
# (its time is past the cutoff) or another worker took it. KEYS: active dialogs, summaries,
# state. ARGV: client key, cutoff. Returns the summary, or false.
_CLAIM_IDLE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) >= tonumber(ARGV[2]) then return false end
redis.call('ZREM', KEYS[1], ARGV[1])
local summary = redis.call('HGET', KEYS[2], ARGV[1]) or ''
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return summary
"""

# Store a dialog's state with its reminder marked, unless a step moved it on since it was read
# (its time in the active set changed) or it ended; its TTL and time stay. KEYS: active
# dialogs, state. ARGV: client key, the last-step time read, the new state. 1 when stored.
_MARK_REMINDED = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'KEEPTTL')
return 1
"""


class RedisStepStore(StepStore):
    """Dialog states in Redis (``<prefix>:state:<client>``), effects in PostgreSQL and the
    outbox; see the module docstring for the commit order."""

    def __init__(
        self,
        redis: Redis,
        engine: AsyncEngine,
        outbox: RabbitOutbox,
        *,
        keys: RedisKeys,
        state_ttl: int = STATE_TTL_SECONDS,
        processed_ttl: int = KEEP_SECONDS,
        alerts: NewOrderAlerts | None = None,
        batcher: RedisBatcher | None = None,
    ) -> None:
        self._redis = redis
        self._engine = engine
        self._outbox = outbox
        self._keys = keys
        self._state_ttl = state_ttl
        self._processed_ttl = processed_ttl
        self._inbound_log = InboundLogBatcher(engine)
        self._batch = batcher or RedisBatcher(redis)
        self._save = redis.register_script(_SAVE_STATE)
        self._claim_idle = redis.register_script(_CLAIM_IDLE)
        self._mark_reminded = redis.register_script(_MARK_REMINDED)
        # Dialogs in progress by the time of their last step, and what the "abandoned" record
        # needs of each (the state itself may have expired by then).
        self._active = f"{keys.prefix}:active"
        self._activity = f"{keys.prefix}:activity"
        self._fresh: set[str] = set()
        # Messages to operators about each new order, published after the step's replies.
        self._alerts = alerts

    async def load_state(self, client_key: str) -> bytes | None:
        try:
            raw = await self._batch.call(lambda pipe: pipe.get(self._keys.state(client_key)))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis: {type(exc).__name__}: {exc}") from None
        return None if raw is None else raw if isinstance(raw, bytes) else raw.encode()

    async def load(self, message: InboundMessage) -> tuple[bytes | None, bool]:
        """State and processed mark in one command; a message found unprocessed here is not
        looked up again by :meth:`commit_step` (its client's lane holds it meanwhile)."""
        keys = (self._keys.state(message.client_key), self._keys.processed(message.dedupe_key))
        try:
            raw, processed = await self._batch.call(lambda pipe: pipe.mget(keys))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis: {type(exc).__name__}: {exc}") from None
        if processed is not None:
            return raw, True
        if len(self._fresh) >= _FRESH_LIMIT:  # only a step that never committed leaves one
            self._fresh.clear()
        self._fresh.add(message.dedupe_key)
        return raw, False

    async def is_processed(self, dedupe_key: str) -> bool:
        try:
            key = self._keys.processed(dedupe_key)
            found = await self._batch.call(lambda pipe: pipe.exists(key))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis: {type(exc).__name__}: {exc}") from None
        return bool(found)

    async def commit_step(self, commit: StepCommit) -> int | None:
        message = commit.delivery.message
        if message.dedupe_key not in self._fresh and await self.is_processed(message.dedupe_key):
            return None
        now = time.time()
        if commit.order is None:
            # No order id to put in the replies: rows and replies go at once (two durable
            # writes, PostgreSQL's commit and RabbitMQ's confirm, overlap instead of adding
            # up). Both are redo-safe and both end before the state below.
            written, published = await asyncio.gather(
                self._write_rows(commit, now),
                self._outbox.put(commit.replies),
                return_exceptions=True,
            )
            for outcome in (written, published):
                if isinstance(outcome, BaseException):
                    raise outcome
            order_id = None
        else:
            order_id = await self._write_rows(commit, now)
            replies = commit.replies
            if order_id is not None:
                replies = tuple(
                    replace(r, text=r.text.replace(ORDER_ID_PLACEHOLDER, str(order_id)))
                    if ORDER_ID_PLACEHOLDER in r.text
                    else r
                    for r in replies
                )
                if self._alerts is not None:
                    # Also when a redo found the order: the first try may have stopped before
                    # publishing them; their keys are the same, so the sender sends each once.
                    replies += self._alerts.messages(order_id, commit.order, now)
            await self._outbox.put(replies)

        # State, handoff flag and processed mark together (one script: atomic), so a redo
        # never finds one without the others.
        flag_op, flag_value, flag_ttl = "keep", b"", 0
        if commit.handoff is not None:
            if commit.handoff.start:
                flag_op = "set"
                flag_value, flag_ttl = handoff_flag(commit.handoff.until, message.route, now)
            else:
                flag_op = "delete"
        try:
            await self._batch.script(
                self._save,
                keys=(
                    self._keys.state(message.client_key),
                    self._keys.processed(message.dedupe_key),
                    self._keys.handoff(message.client_key),
                    self._active,
                    self._activity,
                ),
                args=(
                    b"" if commit.state is None else commit.state,
                    "0" if commit.state is None else "1",
                    self._state_ttl,
                    self._processed_ttl,
                    flag_op,
                    flag_value,
                    flag_ttl,
                    message.client_key,
                    repr(now),
                    _summary(commit.state, now),
                ),
            )
        except RedisError as exc:
            raise BackendUnavailable(f"Redis: {type(exc).__name__}: {exc}") from None
        self._fresh.discard(message.dedupe_key)
        return order_id

    async def abandon_idle(self, older_than: float, now: float, limit: int = 1000) -> int:
        """Record dialogs whose last step is older than ``older_than`` as abandoned (at that
        step) and forget their state, as the embedded profile's housekeeping does. Several
        workers may run this at once: each dialog is taken by one (a script). A crash between
        taking one and writing its row loses that row (at most once, never twice)."""
        idle = await self._redis.zrangebyscore(
            self._active, "-inf", f"({older_than!r}", start=0, num=limit
        )
        count = 0
        for found in idle:
            client_key = found.decode() if isinstance(found, bytes) else str(found)
            summary = await self._claim_idle(
                keys=[self._active, self._activity, self._keys.state(client_key)],
                args=[client_key, repr(older_than)],
            )
            if summary is None:
                continue  # moved on, or taken by another worker
            text_summary = summary.decode() if isinstance(summary, bytes) else str(summary)
            step, messages, started = _parse_summary(text_summary, now)
            channel, _, client_id = client_key.partition(":")
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(
                        insert(dialog_outcomes).values(
                            channel=channel,
                            client_id=client_id,
                            outcome="abandoned",
                            last_step=step,
                            message_count=messages,
                            duration_seconds=max(0.0, now - started),
                            started_at=started,
                            ended_at=now,
                            order_id=None,
                        )
                    )
            except (SQLAlchemyError, OSError) as exc:
                log.warning("cannot record an abandoned dialog: %s", type(exc).__name__)
                continue
            count += 1
        return count

    async def idle_dialogs(
        self, since: float, before: float, limit: int = 1000
    ) -> list[IdleDialog]:
        """From the active set that :meth:`abandon_idle` reads (by last-step time), with their
        states and handoff flags in one ``MGET``."""
        listed = await self._redis.zrangebyscore(
            self._active, repr(since), f"({before!r}", start=0, num=limit, withscores=True
        )
        found = cast(list[tuple[bytes | str, float]], listed)  # withscores: (member, score)
        if not found:
            return []
        keys = [m.decode() if isinstance(m, bytes) else str(m) for m, _ in found]
        looked_up = [self._keys.state(k) for k in keys] + [self._keys.handoff(k) for k in keys]
        values = await self._redis.mget(looked_up)
        states, flags = values[: len(keys)], values[len(keys) :]
        return [
            IdleDialog(key, raw if isinstance(raw, bytes) else str(raw).encode(), float(score))
            for key, (_, score), raw, flag in zip(keys, found, states, flags, strict=True)
            if raw is not None and flag is None
        ]

    async def commit_reminder(
        self, dialog: IdleDialog, state: bytes, reminder: OutboundMessage
    ) -> bool:
        """Publish first, then mark the state: a crash between the two publishes the same key
        again next round (the sender sends it once); a message the customer sends meanwhile
        leaves the mark unset, and the new last-step time gives a new key only if the dialog
        goes idle again unreminded (its state carries ``reminded`` once marked)."""
        score = await self._redis.zscore(self._active, dialog.client_key)
        if score is None or float(score) != dialog.last_step:
            return False  # moved on (or ended) since it was listed: nothing to remind of
        await self._outbox.put((reminder,))
        marked = await self._mark_reminded(
            keys=[self._active, self._keys.state(dialog.client_key)],
            args=[dialog.client_key, repr(dialog.last_step), state],
        )
        return bool(marked)

    async def _write_rows(self, commit: StepCommit, now: float) -> int | None:
        try:
            return await self._write(commit, now)
        except (SQLAlchemyError, OSError) as exc:
            if refused_data(exc):
                # The message's own values (an over-long id, say): no wait makes it pass.
                raise DataRejected(
                    f"PostgreSQL refused the data: {driver_error_name(exc)}"
                ) from None
            raise BackendUnavailable(f"PostgreSQL: {type(exc).__name__}") from None

    async def _write(self, commit: StepCommit, now: float) -> int | None:
        """The step's PostgreSQL rows. Most steps write only their message log row: one
        statement in autocommit (it is its own redo check). A step with an order, outcomes or
        a handoff change writes them in one transaction."""
        if commit.order is None and not commit.outcomes and commit.handoff is None:
            await self._inbound_log.write(inbound_row(commit, now))
            return None
        async with self._engine.begin() as conn:
            return await write_rows(conn, commit, now)


def _summary(state: bytes | None, now: float) -> str:
    """What the "abandoned" record needs of a dialog: step, messages, start."""
    if state is None:
        return ""
    try:
        obj = orjson.loads(state)
        return f"{obj['step']}\t{int(obj['message_count'])}\t{float(obj['started_at'])!r}"
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return f"-\t0\t{now!r}"


def _parse_summary(summary: str, now: float) -> tuple[str, int, float]:
    try:
        step, messages, started = summary.split("\t")
        return step, int(messages), float(started)
    except ValueError:
        return "-", 0, now
