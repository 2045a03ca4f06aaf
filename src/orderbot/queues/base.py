"""What the worker and the sender need from a queue backend.

Embedded: SQLite tables in the orderbot file (``queues/sqlite.py``). Distributed: RabbitMQ.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import orjson

from orderbot.messages import InboundMessage, OutboundMessage

__all__ = [
    "DeadLetter",
    "DeadLetterQueue",
    "InboundDelivery",
    "InboundQueue",
    "Outbox",
    "OutboxItem",
    "QueueDepths",
]


@dataclass(frozen=True, slots=True)
class QueueDepths:
    inbound: int
    outbox: int
    dead_letter: int

    def to_dict(self) -> dict[str, int]:
        return {"inbound": self.inbound, "outbox": self.outbox, "dead_letter": self.dead_letter}


@dataclass(frozen=True, slots=True)
class InboundDelivery:
    """An inbound message handed to a worker; ``deliveries`` counts how often it was handed out
    (a message that keeps crashing workers is dead-lettered after a bound)."""

    handle: int
    message: InboundMessage
    deliveries: int


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A reply waiting to be sent; ``attempts`` failed sends so far, ``not_before`` a unix time."""

    handle: int
    message: OutboundMessage
    attempts: int
    not_before: float
    last_error: str = ""
    # Set when a send was started (at this unix time) but its outcome never recorded: the
    # process died mid-call, or the call timed out. The API may have delivered it already.
    in_doubt_since: float | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    kind: Literal["outbox", "inbound"]
    key: str
    channel: str
    client_id: str
    payload: bytes
    attempts: int
    last_error: str
    created_at: float

    @property
    def text(self) -> str:
        """What the message said: the reply the customer did not get, or what the customer
        wrote (a batch of webhooks: each on its own line); empty when it cannot be read."""
        try:
            data = orjson.loads(self.payload)
        except orjson.JSONDecodeError:
            return ""
        parts = data if isinstance(data, list) else [data]
        texts = (str(p.get("text") or "") for p in parts if isinstance(p, dict))
        return "\n".join(t for t in texts if t)


class InboundQueue(ABC):
    """Durable queue of customer messages, deduplicated by message id."""

    @abstractmethod
    async def put(self, message: InboundMessage) -> bool:
        """Store ``message`` durably; return False when its id was already taken (a redelivery).

        Returns only after the message would survive a crash of this process.
        """

    @abstractmethod
    async def fetch(self, limit: int) -> list[InboundDelivery]:
        """Hand out pending messages in arrival order, each once per process lifetime, counting
        the delivery durably before returning it."""

    @abstractmethod
    async def wait(self, timeout: float) -> None:
        """Return when new messages may be pending, or after ``timeout`` seconds."""

    @abstractmethod
    async def dead_letter(self, delivery: InboundDelivery, error: str) -> None:
        """Take a message that keeps failing off the queue, into the dead-letter queue."""

    async def begin(self, delivery: InboundDelivery) -> None:  # noqa: B027 - optional hook
        """The worker starts the step of ``delivery`` now. A broker counts attempts here, so
        that a message redelivered only because a worker died while it waited in its buffer
        is not taken for one that crashes workers. Default: nothing (SQLite counts in
        ``fetch``)."""

    async def ack(self, delivery: InboundDelivery) -> None:  # noqa: B027 - optional hook
        """The step of ``delivery`` is committed; the queue may forget it. Default: nothing to
        do (SQLite marks the message done in the step's own transaction). A broker acks here."""

    @abstractmethod
    async def depth(self) -> QueueDepths: ...


class Outbox(ABC):
    """Durable queue of replies. The sender claims items, sends them, and records the result.

    ``parks_retries``: False (SQLite) means a rescheduled item stays in the sender's hands and
    the sender retries it at ``not_before``; True (RabbitMQ) means ``reschedule`` took the item
    back (into a delayed-retry queue) and ``claim`` hands it out again when it is due, keeping
    the client's later replies behind it.
    """

    parks_retries: ClassVar[bool] = False

    @abstractmethod
    async def claim(self, limit: int, exclude: set[int]) -> list[OutboxItem]:
        """Pending items in creation order, skipping handles in ``exclude`` (already in hand)."""

    async def release_waiting(self, channel: str, errors: tuple[str, ...]) -> int:
        """Hand out now the parked replies of ``channel`` whose last error starts with one of
        ``errors`` (the channel was down and answers again); how many. Only an outbox that
        ``parks_retries`` holds such replies; the sender wakes its own waiting ones."""
        return 0

    async def begin_send(self, handle: int) -> None:  # noqa: B027 - optional hook
        """Record, durably, that a send of ``handle`` starts now. After a crash mid-call the item
        comes back ``in_doubt_since`` that time, so the sender can ask the channel whether it
        was delivered instead of sending it twice. Default: nothing recorded."""

    def give_back(self, handle: int) -> None:  # noqa: B027 - optional hook
        """The sender drops ``handle`` without an outcome (it stops, or its lane failed): the
        item is still pending and must be handed out again. Default: nothing to do (SQLite
        hands out again whatever is not in ``exclude``)."""

    @abstractmethod
    async def mark_sent(self, handle: int) -> None: ...

    @abstractmethod
    async def reschedule(self, handle: int, attempts: int, not_before: float, error: str) -> None:
        """Record a failed attempt; the item stays first in its client's line until
        ``not_before``."""

    @abstractmethod
    async def dead_letter(self, handle: int, attempts: int, error: str) -> None:
        """Move the item to the dead-letter queue with its last error."""

    @abstractmethod
    async def wait(self, timeout: float) -> None:
        """Return when new items may be pending, or after ``timeout`` seconds."""


class DeadLetterQueue(ABC):
    """What could not be sent or processed, visible and replayable."""

    @abstractmethod
    async def list(self, limit: int = 100) -> list[DeadLetter]: ...

    @abstractmethod
    async def replay(self, ids: builtins.list[int] | None) -> int:
        """Put dead letters back on their queue (all when ``ids`` is None); return how many."""

    @abstractmethod
    async def purge(self) -> int: ...

    @abstractmethod
    async def delete(self, ids: builtins.list[int] | None) -> int:
        """Delete dead letters for good (all when ``ids`` is None); return how many."""
