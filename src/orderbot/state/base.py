"""What the worker needs to load a client's dialog state and commit the outcome of a step.

A step's commit is all-or-nothing and idempotent: the order row is keyed by the conversation and
the confirming message, each reply by the inbound message and its index, and the inbound message
is marked processed with the new state. Embedded: one SQLite transaction. Distributed: keyed
writes in order, acknowledged last, so a step redone after a crash changes nothing twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from orderbot.messages import OutboundMessage
from orderbot.queues.base import InboundDelivery

__all__ = ["OrderRecord", "OutcomeRecord", "StepCommit", "StepStore"]

ORDER_ID_PLACEHOLDER = "{order_id}"


@dataclass(frozen=True, slots=True)
class OrderRecord:
    idempotency_key: str
    channel: str
    client_id: str
    source: str
    phone: str | None
    address: str | None
    quantity: int | None
    language: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    outcome: str
    last_step: str
    message_count: int
    started_at: float
    ended_at: float


@dataclass(frozen=True, slots=True)
class StepCommit:
    """Everything one handled message changes. Reply texts may hold ``{order_id}``, filled in
    with the id of ``order`` once it is stored."""

    delivery: InboundDelivery
    state: bytes | None  # the new dialog state, serialised; None forgets it
    state_name: str  # the step the dialog is at afterwards, for the message log
    replies: tuple[OutboundMessage, ...]
    order: OrderRecord | None = None
    outcomes: tuple[OutcomeRecord, ...] = ()
    error: str | None = None  # set when the step failed and the replies are an apology


class StepStore(ABC):
    @abstractmethod
    async def load_state(self, client_key: str) -> bytes | None:
        """The serialised dialog state of ``client_key``, or None for no dialog."""

    @abstractmethod
    async def commit_step(self, commit: StepCommit) -> int | None:
        """Apply ``commit`` atomically and idempotently; return the order id when it has one.
        A message already processed is left alone (its replies were already queued)."""
