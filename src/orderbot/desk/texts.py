"""What the customer is told by the desk: tracking answers, status notifications and the bot's
comeback after a handoff. Pure code.

The texts come from the flow (optional ``texts``, ``status_texts``, ``status_names``), with the
defaults below when a flow has none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from orderbot.dialog.engine import question
from orderbot.dialog.flow import Flow
from orderbot.dialog.models import DialogOptions, DialogState
from orderbot.dialog.wording import render
from orderbot.messages import OutboundMessage
from orderbot.orders.models import HistoryEntry, OrderSummary
from orderbot.outbound import client_key, handback_key

__all__ = [
    "comeback",
    "flow_text",
    "render_not_found",
    "render_order",
    "render_order_list",
    "status_name",
    "status_notification",
]

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


def _pick(texts: Mapping[str, str], flow: Flow, language: str) -> str:
    return texts.get(language) or texts.get(flow.languages[0]) or next(iter(texts.values()))


def flow_text(flow: Flow, key: str, language: str, values: Mapping[str, str] | None = None) -> str:
    """The flow's optional text ``key`` (or the default) with ``values`` and the flow's vars."""
    texts = flow.texts.get(key) or DEFAULT_TEXTS[key]
    return render(_pick(texts, flow, language), {**flow.vars, **(values or {})})


def status_name(flow: Flow, status: str, language: str) -> str:
    """A status as the customer reads it."""
    texts = flow.status_names.get(status) or DEFAULT_STATUS_NAMES.get(status)
    return _pick(texts, flow, language) if texts else status


def status_notification(
    flow: Flow,
    status: str,
    language: str,
    *,
    order_id: int,
    note: str = "",
    note_public: bool = False,
) -> str:
    """What the customer is told when their order gets ``status``. An operator's note reaches
    the customer where the flow's text asks for ``{note}``, and, when the operator marked it
    for the customer (``note_public``: a cancellation's reason), on a line of its own after a
    text without ``{note}``. By default notes are internal."""
    template = _pick(flow.status_texts.get(status) or DEFAULT_STATUS_TEXTS[status], flow, language)
    values = {
        **flow.vars,
        "order_id": str(order_id),
        "status": status_name(flow, status, language),
        "note": note,
    }
    text = render(template, values)
    if note_public and note.strip() and "{note}" not in template:
        text += "\n" + note.strip()
    return text


def _date(ts: float, zone: str) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(zone)).strftime("%d.%m.%Y")


def _when(ts: float, zone: str) -> str:
    """Day and time in the shop's zone; ``UTC`` is said, a shop's own zone goes without saying."""
    local = datetime.fromtimestamp(ts, ZoneInfo(zone)).strftime("%d.%m.%Y %H:%M")
    return f"{local} UTC" if zone == "UTC" else local


def _total(flow: Flow, order: OrderSummary, language: str) -> str:
    if order.total is not None:
        currency = order.currency or ""
        if flow.catalog is not None and flow.catalog.currency == currency:
            currency = _pick(flow.catalog.currency_name, flow, language)
        return f"{order.total:,.2f}".replace(",", " ") + (f" {currency}" if currency else "")
    if order.quantity is not None:
        return f"× {order.quantity}"
    return "—"


def _values(flow: Flow, order: OrderSummary, language: str, zone: str) -> dict[str, str]:
    return {
        "order_id": str(order.id),
        "date": _date(order.created_at, zone),
        "status": status_name(flow, order.status, language),
        "total": _total(flow, order, language),
    }


def render_order_list(
    flow: Flow, orders: Sequence[OrderSummary], language: str, zone: str = "UTC"
) -> str:
    """The customer's recent orders (already limited and newest first), one line each; dates
    in the shop's ``zone``."""
    if not orders:
        return flow_text(flow, "track_empty", language)
    lines = [flow_text(flow, "track_header", language)]
    lines += [
        flow_text(flow, "track_line", language, _values(flow, o, language, zone)) for o in orders
    ]
    return "\n".join(lines)


def render_order(
    flow: Flow,
    order: OrderSummary,
    history: Sequence[HistoryEntry],
    language: str,
    zone: str = "UTC",
) -> str:
    """One order with its status history (the first line is when it was placed); times in the
    shop's ``zone``."""
    lines = [f"{_when(order.created_at, zone)} — {status_name(flow, 'new', language)}"]
    for entry in history:
        line = f"{_when(entry.created_at, zone)} — {status_name(flow, entry.to_status, language)}"
        lines.append(f"{line} ({entry.note})" if entry.note else line)
    values = {**_values(flow, order, language, zone), "history": "\n".join(lines)}
    return flow_text(flow, "track_order", language, values)


def render_not_found(flow: Flow, number: int, language: str) -> str:
    """The answer for a number that is not one of the customer's orders, whether or not such
    an order exists: it must not tell the two apart."""
    return flow_text(flow, "track_not_found", language, {"number": str(number)})


def comeback(
    flow: Flow,
    options: DialogOptions,
    state: DialogState | None,
    *,
    channel: str,
    client_id: str,
    since: float,
    route: dict[str, str],
    now: float,
    language: str | None = None,
) -> OutboundMessage:
    """The bot's message when a handoff ends: the resumed text and the dialog's current
    question in one message (its buttons included), keyed by
    :func:`~orderbot.outbound.handback_key` (the same for every way back, so the customer gets it
    once)."""
    if language is None:
        language = flow.language(state.language if state is not None else options.default_language)
    text = flow_text(flow, "handoff_resumed", language)
    asked = question(flow, state, now, options=options)
    return OutboundMessage(
        key=handback_key(client_key(channel, client_id), since),
        channel=channel,
        client_id=client_id,
        text=text if asked is None else f"{text}\n\n{asked.text}",
        buttons=() if asked is None else asked.buttons,
        route=route,
        created_at=now,
    )
