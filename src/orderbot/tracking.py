"""Order statuses, and what the customer is told about them: pure code, no I/O.

* Statuses move forward along ``new -> confirmed -> in_progress -> ready -> delivered``, to
  any later one in one change (the customer is told once, of the final status), or to
  ``cancelled`` from any status but the final two; :func:`check_transition` says no with
  an :class:`InvalidTransition` naming what is allowed.
* :func:`classify` reads a customer message *before* the dialog engine: a tracking request
  (``/track``, "статус заказа", "where is my order 12", ...), a request for a person
  (``/operator``, "оператор", "manager", ...), or ``None`` for the dialog. Only whole messages
  count, like the engine's cancel words: an address containing "оператор" stays an address.
* The texts come from the flow (optional ``texts``, ``status_texts``, ``status_names``), with
  the defaults below when a flow has none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from orderbot.dialog.flow import ORDER_STATUSES, Flow
from orderbot.errors import OrderbotError

__all__ = [
    "FINAL_STATUSES",
    "STATUSES",
    "HandoffRequest",
    "HistoryEntry",
    "InvalidTransition",
    "OrderSummary",
    "Track",
    "allowed_next",
    "check_transition",
    "classify",
    "flow_text",
    "render_not_found",
    "render_order",
    "render_order_list",
    "status_name",
    "status_notification",
]

STATUSES = ORDER_STATUSES
FINAL_STATUSES = frozenset({"delivered", "cancelled"})
_FORWARD = ("new", "confirmed", "in_progress", "ready", "delivered")
TRACK_LIMIT = 10
"""How many of a customer's orders a tracking answer lists, newest first."""


class InvalidTransition(OrderbotError):
    """The order cannot move from its status to the one asked for (409 in the admin API)."""

    def __init__(self, current: str, wanted: str) -> None:
        allowed = allowed_next(current)
        if current in FINAL_STATUSES:
            why = f"order is {current}; {current} orders do not change status"
        elif wanted == current:
            why = f"order is already {current}"
        else:
            why = f"cannot go from {current} to {wanted}"
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        super().__init__(why + hint)
        self.current = current
        self.wanted = wanted


def allowed_next(current: str) -> tuple[str, ...]:
    """The statuses an order in ``current`` may move to."""
    if current in FINAL_STATUSES:
        return ()
    later = _FORWARD[_FORWARD.index(current) + 1 :] if current in _FORWARD else ()
    return (*later, "cancelled")


def check_transition(current: str, wanted: str) -> None:
    """Raise ``ValueError`` for a status that does not exist, :class:`InvalidTransition` for
    a move that is not allowed."""
    if wanted not in STATUSES:
        raise ValueError(f"unknown status {wanted!r} (statuses: {', '.join(STATUSES)})")
    if wanted not in allowed_next(current):
        raise InvalidTransition(current, wanted)


# -- what a message asks for -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Track:
    """The customer asks about their orders: all recent ones, or the one numbered ``number``."""

    number: int | None = None


@dataclass(frozen=True, slots=True)
class HandoffRequest:
    """The customer asks for a person."""


_TRACK_PHRASES = frozenset(
    {
        "статус заказа",
        "статус моего заказа",
        "где мой заказ",
        "мои заказы",
        "track my order",
        "track order",
        "order status",
        "where is my order",
        "my orders",
    }
)
_OPERATOR_PHRASES = frozenset(
    {"оператор", "operator", "менеджер", "manager", "живой человек", "human", "a human"}
)
_MAX_NUMBER_DIGITS = 12


def _phrase(text: str) -> str:
    # As the engine reads cancel words: lower case, ё = е, punctuation ("№", "#", "?") ignored.
    return " ".join(re.findall(r"[^\W_]+", text.replace("ё", "е").replace("Ё", "Е").lower()))


def _number(words: Sequence[str]) -> int | bool | None:
    """No words: None; one number: it; anything else: False (not a tracking request)."""
    if not words:
        return None
    word = words[0]
    if len(words) == 1 and word.isascii() and word.isdigit() and len(word) <= _MAX_NUMBER_DIGITS:
        return int(word)
    return False


def classify(text: str) -> Track | HandoffRequest | None:
    """What a whole message asks for before the dialog sees it; None: it is for the dialog."""
    stripped = text.strip()
    if stripped.startswith("/"):
        head, _, rest = stripped.partition(" ")
        command = head.split("@", 1)[0].lower()
        if command == "/operator":
            return HandoffRequest()
        if command == "/track":
            number = _number(_phrase(rest).split())
            return Track(number) if number is not False else Track(None)
        return None
    phrase = _phrase(stripped)
    if not phrase:
        return None
    if phrase in _OPERATOR_PHRASES:
        return HandoffRequest()
    words = phrase.split()
    for cut in range(len(words), 0, -1):
        if " ".join(words[:cut]) in _TRACK_PHRASES:
            number = _number(words[cut:])
            if number is False:
                return None
            return Track(number if isinstance(number, int) else None)
    return None


# -- texts -----------------------------------------------------------------------------------

DEFAULT_TEXTS: Mapping[str, Mapping[str, str]] = {
    "track_header": {"ru": "Ваши последние заказы:", "en": "Your recent orders:"},
    "track_line": {
        "ru": "№{order_id} от {date}: {status}, {total}",
        "en": "#{order_id} of {date}: {status}, {total}",
    },
    "track_empty": {
        "ru": "У вас пока нет заказов.",
        "en": "You have no orders yet.",
    },
    "track_not_found": {
        "ru": "Среди ваших заказов нет заказа с номером {number}. "
        "Напишите /track, чтобы увидеть список ваших заказов.",
        "en": "There is no order with number {number} among yours. "
        "Send /track to see the list of your orders.",
    },
    "track_order": {
        "ru": "Заказ №{order_id} от {date}\nСтатус: {status}\nСумма: {total}\n\n"
        "История:\n{history}",
        "en": "Order #{order_id} of {date}\nStatus: {status}\nTotal: {total}\n\n"
        "History:\n{history}",
    },
    "handoff_started": {
        "ru": "Соединяю вас с оператором. Пожалуйста, подождите — вам ответит человек.",
        "en": "Connecting you to an operator. Please wait, a person will answer you.",
    },
    "handoff_unavailable": {
        "ru": "Сейчас операторы недоступны. Продолжим оформление заказа здесь.",
        "en": "No operator is available right now. Let's continue here.",
    },
    "handoff_resumed": {
        "ru": "Оператор завершил разговор. Продолжим с того места, где остановились.",
        "en": "The operator has finished. Let's continue where we left off.",
    },
}
DEFAULT_STATUS_NAMES: Mapping[str, Mapping[str, str]] = {
    "new": {"ru": "новый", "en": "new"},
    "confirmed": {"ru": "подтверждён", "en": "confirmed"},
    "in_progress": {"ru": "в работе", "en": "in progress"},
    "ready": {"ru": "готов", "en": "ready"},
    "delivered": {"ru": "выдан", "en": "delivered"},
    "cancelled": {"ru": "отменён", "en": "cancelled"},
}
DEFAULT_STATUS_TEXTS: Mapping[str, Mapping[str, str]] = {
    "new": {"ru": "Заказ №{order_id} снова принят.", "en": "Order #{order_id} is open again."},
    "confirmed": {
        "ru": "Заказ №{order_id} подтверждён.",
        "en": "Order #{order_id} is confirmed.",
    },
    "in_progress": {
        "ru": "Заказ №{order_id} в работе.",
        "en": "Order #{order_id} is in progress.",
    },
    "ready": {"ru": "Заказ №{order_id} готов!", "en": "Order #{order_id} is ready!"},
    "delivered": {
        "ru": "Заказ №{order_id} выдан. Спасибо, что выбрали нас!",
        "en": "Order #{order_id} is delivered. Thank you for choosing us!",
    },
    "cancelled": {
        "ru": "Заказ №{order_id} отменён.",
        "en": "Order #{order_id} is cancelled.",
    },
}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _render(template: str, values: Mapping[str, str]) -> str:
    # One pass: a value holding "{note}" (customer or operator text) is never expanded.
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _pick(texts: Mapping[str, str], flow: Flow, language: str) -> str:
    return texts.get(language) or texts.get(flow.languages[0]) or next(iter(texts.values()))


def flow_text(flow: Flow, key: str, language: str, values: Mapping[str, str] | None = None) -> str:
    """The flow's optional text ``key`` (or the default) with ``values`` and the flow's vars."""
    texts = flow.texts.get(key) or DEFAULT_TEXTS[key]
    return _render(_pick(texts, flow, language), {**flow.vars, **(values or {})})


def status_name(flow: Flow, status: str, language: str) -> str:
    """A status as the customer reads it."""
    texts = flow.status_names.get(status) or DEFAULT_STATUS_NAMES.get(status)
    return _pick(texts, flow, language) if texts else status


def status_notification(
    flow: Flow, status: str, language: str, *, order_id: int, note: str = ""
) -> str:
    """What the customer is told when their order gets ``status``. An operator's note reaches
    the customer only where the flow's text asks for ``{note}``: by default notes are internal."""
    texts = flow.status_texts.get(status) or DEFAULT_STATUS_TEXTS[status]
    values = {
        **flow.vars,
        "order_id": str(order_id),
        "status": status_name(flow, status, language),
        "note": note,
    }
    return _render(_pick(texts, flow, language), values)


# -- tracking answers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderSummary:
    """What a tracking answer shows of one order."""

    id: int
    created_at: float
    status: str
    total: Decimal | None = None
    currency: str | None = None
    quantity: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    created_at: float
    from_status: str | None
    to_status: str
    note: str = ""


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d.%m.%Y")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d.%m.%Y %H:%M UTC")


def _total(flow: Flow, order: OrderSummary, language: str) -> str:
    if order.total is not None:
        currency = order.currency or ""
        if flow.catalog is not None and flow.catalog.currency == currency:
            currency = _pick(flow.catalog.currency_name, flow, language)
        return f"{order.total:,.2f}".replace(",", " ") + (f" {currency}" if currency else "")
    if order.quantity is not None:
        return f"× {order.quantity}"
    return "—"


def _values(flow: Flow, order: OrderSummary, language: str) -> dict[str, str]:
    return {
        "order_id": str(order.id),
        "date": _date(order.created_at),
        "status": status_name(flow, order.status, language),
        "total": _total(flow, order, language),
    }


def render_order_list(flow: Flow, orders: Sequence[OrderSummary], language: str) -> str:
    """The customer's recent orders (already limited and newest first), one line each."""
    if not orders:
        return flow_text(flow, "track_empty", language)
    lines = [flow_text(flow, "track_header", language)]
    lines += [flow_text(flow, "track_line", language, _values(flow, o, language)) for o in orders]
    return "\n".join(lines)


def render_order(
    flow: Flow, order: OrderSummary, history: Sequence[HistoryEntry], language: str
) -> str:
    """One order with its status history (the first line is when it was placed)."""
    lines = [f"{_when(order.created_at)} — {status_name(flow, 'new', language)}"]
    for entry in history:
        line = f"{_when(entry.created_at)} — {status_name(flow, entry.to_status, language)}"
        lines.append(f"{line} ({entry.note})" if entry.note else line)
    values = {**_values(flow, order, language), "history": "\n".join(lines)}
    return flow_text(flow, "track_order", language, values)


def render_not_found(flow: Flow, number: int, language: str) -> str:
    """The answer for a number that is not one of the customer's orders, whether or not such
    an order exists: it must not tell the two apart."""
    return flow_text(flow, "track_not_found", language, {"number": str(number)})
