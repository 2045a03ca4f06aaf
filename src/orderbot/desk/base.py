"""The interfaces behind tracking, operator handoff and order administration, one per backend.

* :class:`DeskStore`: what :class:`~orderbot.desk.front.FrontDesk` reads before the dialog
  engine runs: whether a client is with an operator (asked for *every* message, so it must be
  cheap when the answer is no), the customer's own orders, the conversation so far.
* :class:`OrderAdmin`: what operators do (CLI, admin API, housekeeping): list, show, change an
  order's status (the customer is notified), hand a conversation back, expire handoffs.
* :class:`OperatorTopics`: which topic of the operators' Telegram chat holds which customer
  (:class:`Topic`). The sender writes an entry when it creates a customer's topic
  (``createForumTopic``); the front desk reads it both ways: a customer's topic, to post their
  messages there during a handoff; a topic's customer, to pass an operator's message on and to
  hand back on ``/back``.

Embedded: :mod:`orderbot.desk.sqlite` (and :class:`orderbot.desk.sqlite.SqliteOrderAdmin`).
Distributed: :mod:`orderbot.desk.postgres` and :mod:`orderbot.desk.postgres_admin`.
Topics: :mod:`orderbot.desk.sqlite_topics` (embedded) and :mod:`orderbot.desk.redis_topics`
(distributed: every worker and sender reaches Redis).
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from orderbot.errors import OrderbotError
from orderbot.orders.models import HistoryEntry, OrderSummary

__all__ = [
    "DeskStore",
    "HandoffNotFound",
    "HandoffWindow",
    "OperatorTopics",
    "OrderAdmin",
    "OrderNotFound",
    "Topic",
]


@dataclass(frozen=True, slots=True)
class HandoffWindow:
    """A client's time with an operator: from ``since`` (which names the handoff: the bot's
    comeback is keyed by it) until ``until`` (unix times)."""

    since: float
    until: float


class OrderNotFound(OrderbotError):
    """No order with that id (404 in the admin API)."""


class HandoffNotFound(OrderbotError):
    """The client's conversation is not handed to an operator (404 in the admin API)."""


class DeskStore(ABC):
    """Reads of the front desk. Handoffs start and end in the step's own commit
    (``StepCommit.handoff``); :meth:`note_handoff` tells the store one is being committed."""

    @abstractmethod
    async def handoff(self, client_key: str) -> HandoffWindow | None:
        """The handoff of ``client_key``, or None when the client is not with an operator.
        Called for every message: the common "no" must be cheap."""

    def note_handoff(self, client_key: str, *, active: bool) -> None:  # noqa: B027 - optional
        """The front desk commits the start (``active``) or end of a handoff of ``client_key``
        with the current message. Default: nothing to remember."""

    def note_order(self, client_key: str) -> None:  # noqa: B027 - optional
        """The worker stored an order of ``client_key`` (a store that keeps in memory which
        clients have orders updates itself here)."""

    async def last_order_data(self, channel: str, client_id: str) -> dict[str, Any] | None:
        """The collected data (``orders.data``) of the client's newest order that was not
        cancelled, or None: what a returning customer is offered again."""
        return None

    @abstractmethod
    async def customer_orders(self, channel: str, client_id: str) -> list[OrderSummary]:
        """The customer's newest orders (same channel and client id: nobody else's)."""

    @abstractmethod
    async def customer_order(
        self, channel: str, client_id: str, order_id: int
    ) -> tuple[OrderSummary, list[HistoryEntry]] | None:
        """Order ``order_id`` with its history if it is this customer's; None otherwise,
        whether or not it exists."""

    @abstractmethod
    async def recent_messages(
        self, channel: str, client_id: str, limit: int
    ) -> list[tuple[str, str]]:
        """The last ``limit`` logged messages of the conversation, oldest first, as
        (``in``/``out``, text)."""


class OrderAdmin(ABC):
    """Operators' view and actions (admin API, CLI, the handoff timeout)."""

    @abstractmethod
    async def list(
        self, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> builtins.list[dict[str, Any]]:
        """Orders, newest first."""

    @abstractmethod
    async def get(self, order_id: int) -> dict[str, Any] | None:
        """One order with its items, files and status history."""

    @abstractmethod
    async def set_status(
        self,
        order_id: int,
        status: str,
        *,
        note: str = "",
        actor: str = "",
        note_public: bool = False,
    ) -> dict[str, Any]:
        """Move the order to ``status`` and notify the customer (with ``note`` when
        ``note_public``). Raises OrderNotFound, InvalidTransition, or ValueError for a status
        that does not exist."""

    @abstractmethod
    async def handback(self, channel: str, client_id: str) -> None:
        """Give the conversation back to the bot (it says so and asks its question again);
        raises HandoffNotFound when it was not handed off."""

    @abstractmethod
    async def expire_handoffs(self) -> int:
        """Hand back every conversation whose handoff timed out; how many."""

    @abstractmethod
    async def handoffs(self) -> builtins.list[dict[str, Any]]:
        """Conversations with an operator now."""


@dataclass(frozen=True, slots=True)
class Topic:
    """A customer's topic: ``thread_id`` in the operators' chat, and how to reach them."""

    client_key: str
    thread_id: int
    route: dict[str, str]

    @property
    def channel(self) -> str:
        return self.client_key.partition(":")[0]

    @property
    def client_id(self) -> str:
        return self.client_key.partition(":")[2]


class OperatorTopics(ABC):
    """The map between customers and the forum topics of the operators' chat."""

    @abstractmethod
    async def of_client(self, client_key: str) -> Topic | None:
        """The customer's topic, if one was created."""

    @abstractmethod
    async def of_thread(self, thread_id: int) -> Topic | None:
        """The customer whose topic ``thread_id`` is."""

    @abstractmethod
    async def remember(self, topic: Topic) -> None:
        """Record a topic just created (a second one for the same customer replaces it)."""
