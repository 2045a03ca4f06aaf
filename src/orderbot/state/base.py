"""What the worker needs to load a client's dialog state and commit the outcome of a step.

A step's commit is all-or-nothing and idempotent: the order row is keyed by the conversation and
the confirming message, each reply by the inbound message and its index, and the inbound message
is marked processed with the new state. Embedded: one SQLite transaction. Distributed: keyed
writes in order, acknowledged last, so a step redone after a crash changes nothing twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.orders.models import OrderRecord
from orderbot.queues.base import InboundDelivery

__all__ = [
    "HandoffChange",
    "IdleDialog",
    "NewOrderAlerts",
    "OutcomeRecord",
    "StepCommit",
    "StepStore",
]


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    outcome: str
    last_step: str
    message_count: int
    started_at: float
    ended_at: float


@dataclass(frozen=True, slots=True)
class IdleDialog:
    """A dialog no message moved on for a while: its stored state and the stored time of its
    last step (which :meth:`StepStore.commit_reminder` checks is unchanged)."""

    client_key: str
    state: bytes
    last_step: float


@dataclass(frozen=True, slots=True)
class HandoffChange:
    """Start (``start``: an operator takes the conversation until ``until``, unix time) or end
    an operator handoff of the message's client, in the step's commit."""

    start: bool
    reason: str = ""
    until: float = 0.0


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
    handoff: HandoffChange | None = None  # operator handoff started or ended by this message


class NewOrderAlerts(ABC):
    """What operators are sent about a new order (Telegram admins, an order webhook): outbox
    messages built from the stored order, committed in the order's own transaction."""

    @abstractmethod
    def messages(
        self, order_id: int, order: OrderRecord, now: float
    ) -> tuple[OutboundMessage, ...]:
        """The alerts for order ``order_id``; their keys must be deterministic."""


class StepStore(ABC):
    @abstractmethod
    async def load_state(self, client_key: str) -> bytes | None:
        """The serialised dialog state of ``client_key``, or None for no dialog."""

    async def load(self, message: InboundMessage) -> tuple[bytes | None, bool]:
        """The client's state (as :meth:`load_state`) and whether ``message`` is known to be
        processed already (a duplicate the worker acknowledges without a step). The default
        never says so: :meth:`commit_step` recognises duplicates in its transaction."""
        return await self.load_state(message.client_key), False

    @abstractmethod
    async def abandon_idle(self, older_than: float, now: float, limit: int = 1000) -> int:
        """Record dialogs whose last step came before ``older_than`` as abandoned (at that
        step, an ``OutcomeRecord`` ending ``now``) and forget them; a dialog a message moved on
        meanwhile is left alone. Returns how many were abandoned."""

    @abstractmethod
    async def idle_dialogs(
        self, since: float, before: float, limit: int = 1000
    ) -> list[IdleDialog]:
        """Dialogs whose last step came at or after ``since`` and before ``before`` and which
        are not with an operator now (candidates for their one reminder), oldest first."""

    @abstractmethod
    async def commit_reminder(
        self, dialog: IdleDialog, state: bytes, reminder: OutboundMessage
    ) -> bool:
        """Queue ``reminder`` (under its deterministic key) and store ``state`` (which marks it
        sent) without moving the dialog's last-step time, unless a message moved the dialog on
        since ``dialog`` was read. True when the reminder is queued. Safe to run twice: the
        outbox keeps one entry per key."""

    @abstractmethod
    async def commit_step(self, commit: StepCommit) -> int | None:
        """Apply ``commit`` atomically and idempotently; return the order id when it has one.
        A message already processed is left alone (its replies were already queued)."""
