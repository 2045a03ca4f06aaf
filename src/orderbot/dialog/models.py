"""The values that cross the dialog engine's boundary: what :func:`~orderbot.dialog.engine.step`
takes (a state, received files, options) and what it returns (the new state, replies, effects).

They live apart from the engine so that the code which only stores, sends or logs them (the
worker, the state stores, the files module) depends on plain data, not on how a conversation is
decided. ``DialogState`` is stored between messages, so its JSON form is part of this contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = [
    "AskOperator",
    "CreateOrder",
    "DialogEnded",
    "DialogOptions",
    "DialogState",
    "Effect",
    "ReceivedFile",
    "Reply",
    "StepResult",
]


@dataclass(frozen=True, slots=True)
class DialogState:
    """Where one customer's dialog stands. ``data`` holds JSON-serialisable values only."""

    step: str
    language: str
    data: dict[str, Any]
    started_at: float
    updated_at: float
    message_count: int
    return_to: str | None = None
    """Set while a step picked from an edit menu is being changed: where the dialog goes back."""
    catalog_page: int | None = None
    """The catalog page (from 0) the last reply listed (``/services``), until the next message:
    "more", a number or an item's name then refer to it."""
    restart_asked: bool = False
    """``/order`` came mid-dialog and was asked to be sent again to start over."""
    known: dict[str, Any] = field(default_factory=dict)
    """The details of the customer's last order (address, phone, ...), given to the step that
    began the dialog: "как обычно" repeats them, "номер прежний" takes one of them."""
    reminded: bool = False
    """The one reminder of this unfinished dialog was sent (:mod:`orderbot.dialog.reminder`):
    never another; an order placed after it counts as ``recovered``."""
    handed_off: bool = False
    """An operator took the conversation during this dialog (set by the front desk): it gets
    no reminder afterwards."""
    route: dict[str, str] = field(default_factory=dict)
    """How the customer's last message came (the channel's route, e.g. Chat2Desk's transport),
    set by the worker: where a reminder goes."""

    def to_json(self) -> bytes:
        """The stored form of the state."""
        return orjson.dumps(self)  # orjson writes dataclasses itself, 15x faster than asdict

    @classmethod
    def from_json(cls, raw: bytes | str) -> DialogState:
        """Read a state written by :meth:`to_json`; ``ValueError`` if it is not one."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"dialog state is not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise ValueError("dialog state must be a JSON object")
        try:
            state = cls(
                step=obj["step"],
                language=obj["language"],
                data=obj["data"],
                started_at=float(obj["started_at"]),
                updated_at=float(obj["updated_at"]),
                message_count=obj["message_count"],
                return_to=obj.get("return_to"),
                catalog_page=obj.get("catalog_page"),
                restart_asked=obj.get("restart_asked", False),
                known=obj.get("known") or {},
                reminded=obj.get("reminded", False),
                handed_off=obj.get("handed_off", False),
                route=obj.get("route") or {},
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"dialog state lacks a field: {exc}") from exc
        if not (
            isinstance(state.step, str)
            and isinstance(state.language, str)
            and isinstance(state.data, dict)
            and isinstance(state.message_count, int)
            and isinstance(state.return_to, str | None)
            and (type(state.catalog_page) is int or state.catalog_page is None)
            and isinstance(state.restart_asked, bool)
            and isinstance(state.known, dict)
            and isinstance(state.reminded, bool)
            and isinstance(state.handed_off, bool)
            and isinstance(state.route, dict)
        ):
            raise ValueError("dialog state has a field of the wrong type")
        return state


@dataclass(frozen=True, slots=True)
class Reply:
    """One message to the customer; ``buttons`` are choice labels, in order."""

    text: str
    buttons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """A file the customer attached, after the worker fetched, checked and stored it.

    ``refused`` is ``None`` for a stored model file, else a reason code from
    ``validators.FILE_REASONS`` (``image``, ``damaged``, ``too_large``, ``telegram_limit``, ...);
    ``limit`` is the byte limit that a ``too_large``/``telegram_limit`` refusal is about.
    """

    name: str
    checksum: str = ""
    size: int = 0
    format: str = ""
    path: str = ""
    refused: str | None = None
    limit: int | None = None

    def to_data(self) -> dict[str, Any]:
        """The form kept in the dialog data and in the order: JSON values only."""
        return {
            "name": self.name,
            "checksum": self.checksum,
            "size": self.size,
            "format": self.format,
            "path": self.path,
        }


@dataclass(frozen=True, slots=True)
class CreateOrder:
    """Effect: store an order. ``data`` is everything collected, for flows beyond water; with a
    catalog it also holds ``items`` (``[{id, name, quantity, unit_price, unit}]``, prices as
    decimal strings), ``total`` (a decimal string) and ``currency``; a model-files step leaves
    ``files`` (``[{name, checksum, size, format, path}]``)."""

    phone: str | None
    address: str | None
    quantity: int | None
    language: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DialogEnded:
    """Effect: a dialog ended; a row for the dialog outcomes table."""

    outcome: Literal["completed", "recovered", "cancelled", "abandoned"]
    """``recovered``: completed (an order) after the dialog's reminder."""
    last_step: str
    message_count: int
    started_at: float
    ended_at: float


@dataclass(frozen=True, slots=True)
class AskOperator:
    """Effect: a question the flow has no answer to; the operators get it (as a handoff
    transcript would reach them) while the dialog goes on."""

    question: str
    step: str
    language: str


Effect = CreateOrder | DialogEnded | AskOperator


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one message did: the new state (``None``: forget it), replies, effects."""

    state: DialogState | None
    replies: tuple[Reply, ...]
    effects: tuple[Effect, ...]


@dataclass(frozen=True, slots=True)
class DialogOptions:
    """Settings that shape dialogs; the worker builds them from ``Settings`` once."""

    default_language: str = "ru"
    detect_language: bool = True
    phone_region: str = "KG"
    idle_timeout: float = 86400.0
    shop_timezone: str = "UTC"
    """The shop's IANA zone (``SHOP_TIMEZONE``): times the customer reads are in it."""
