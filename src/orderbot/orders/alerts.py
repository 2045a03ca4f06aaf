"""Messages to operators, through the outbox like any reply (retries, dead-letter queue).

* :class:`OperatorAlerts`: a new order is told to each Telegram chat in ``ADMIN_CHAT_IDS``
  (channel ``telegram``, key ``new-order:<order id>:telegram:<chat>``) and posted as JSON to
  ``ORDER_WEBHOOK_URL`` (channel ``order_webhook``, key ``new-order:<order id>:webhook``). The
  step store builds them inside the order's own transaction, once, when the row is inserted.
  The webhook's channel is :class:`~orderbot.channels.order_webhook.OrderWebhookChannel`.
* :func:`transcript`: the conversation so far, for admins when a customer asks for a person.
* :func:`order_card`, :func:`status_buttons`, :func:`read_status_button`: a new order as the
  operators' Telegram chat shows it (``OPERATOR_CHAT_ID``, in the customer's topic): every
  detail, in the shop's language, with a button per next status that acts as the operator who
  presses it.

Texts for operators are plain text: the Telegram channel escapes them (customer data included).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from orderbot.channels.order_webhook import ORDER_WEBHOOK
from orderbot.desk.texts import status_name
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.orders.models import OrderRecord
from orderbot.orders.status import STATUSES, allowed_next
from orderbot.outbound import new_order_alert_key, new_order_topic_key, new_order_webhook_key
from orderbot.state.base import NewOrderAlerts

if TYPE_CHECKING:
    from orderbot.dialog.flow import Flow

__all__ = [
    "OperatorAlerts",
    "order_card",
    "order_json",
    "question_alert",
    "read_status_button",
    "status_buttons",
    "transcript",
]

_TRANSCRIPT_CHARS = 3500  # one Telegram message (4,096) with room for the header


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def order_json(order_id: int, order: OrderRecord, now: float) -> dict[str, Any]:
    """The order as the webhook receives it."""
    return {
        "event": "order.created",
        "order": {
            "id": order_id,
            "channel": order.channel,
            "client_id": order.client_id,
            "source": order.source,
            "status": "new",
            "language": order.language,
            "phone": order.phone,
            "address": order.address,
            "quantity": order.quantity,
            "total": order.total,
            "currency": order.currency,
            "items": [
                {
                    "item_id": i.item_id,
                    "name": i.name,
                    "quantity": i.quantity,
                    "unit": i.unit,
                    "unit_price": i.unit_price,
                }
                for i in order.items
            ],
            "files": [
                {"name": f.name, "checksum": f.checksum, "size": f.size, "format": f.format}
                for f in order.files
            ],
            "data": order.data,
            "created_at": _iso(now),
        },
    }


def _alert_text(order_id: int, order: OrderRecord) -> str:
    lines = [f"🆕 New order #{order_id} ({order.channel}:{order.client_id})"]
    for label, value in (
        ("Phone", order.phone),
        ("Address", order.address),
        ("Quantity", order.quantity),
    ):
        if value is not None and value != "":
            lines.append(f"{label}: {value}")
    for item in order.items:
        lines.append(f"• {item.name} × {item.quantity} @ {item.unit_price}")
    if order.total is not None:
        lines.append(f"Total: {order.total} {order.currency or ''}".rstrip())
    for key in ("name", "email"):
        value = order.data.get(key)
        if isinstance(value, str) and value:
            lines.append(f"{key.capitalize()}: {value}")
    if order.files:
        lines.append("Files: " + ", ".join(f.name for f in order.files))
    lines.append(f"Status: orderbot orders set-status {order_id} confirmed")
    return "\n".join(lines)


_CARD_LABELS: dict[str, dict[str, str]] = {
    "ru": {
        "title": "🆕 Новый заказ #{order_id}",
        "customer": "Клиент",
        "phone": "Телефон",
        "address": "Адрес",
        "quantity": "Количество",
        "total": "Итого",
        "files": "Файлы",
        "status": "Статус",
        "name": "Имя",
        "email": "E-mail",
        "service": "Услуга",
        "material": "Материал",
        "layer_height": "Высота слоя",
        "infill": "Заполнение",
        "delivery": "Получение",
    },
    "en": {
        "title": "🆕 New order #{order_id}",
        "customer": "Customer",
        "phone": "Phone",
        "address": "Address",
        "quantity": "Quantity",
        "total": "Total",
        "files": "Files",
        "status": "Status",
        "name": "Name",
        "email": "E-mail",
        "service": "Service",
        "material": "Material",
        "layer_height": "Layer height",
        "infill": "Infill",
        "delivery": "Getting it",
    },
}
_BUTTON = re.compile(r"#(\d+) → (.+)")


def order_card(flow: Flow, order_id: int, order: OrderRecord, language: str) -> str:
    """A new order with every detail the dialog collected, in ``language`` (the shop's)."""
    labels = _CARD_LABELS.get(language, _CARD_LABELS["en"])
    lines = [
        labels["title"].format(order_id=order_id),
        f"{labels['customer']}: {order.channel}:{order.client_id}",
    ]
    shown = {"phone": order.phone, "address": order.address, "quantity": order.quantity}
    for key, value in shown.items():
        if value is not None and value != "":
            lines.append(f"{labels[key]}: {value}")
    for key, value in order.data.items():
        if key in shown or key == "files" or value is None or value == "" or value == []:
            continue
        label = labels.get(key, key.replace("_", " ").capitalize())
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        lines.append(f"{label}: {text}")
    for item in order.items:
        lines.append(f"• {item.name} × {item.quantity} @ {item.unit_price}")
    if order.total is not None:
        lines.append(f"{labels['total']}: {order.total} {order.currency or ''}".rstrip())
    if order.files:
        lines.append(f"{labels['files']}: " + ", ".join(f.name for f in order.files))
    lines.append(f"{labels['status']}: {status_name(flow, 'new', language)}")
    return "\n".join(lines)


def status_buttons(flow: Flow, order_id: int, current: str, language: str) -> tuple[str, ...]:
    """A button per status the order may move to: ``#42 → Подтверждён``."""
    return tuple(
        f"#{order_id} → {status_name(flow, status, language)}" for status in allowed_next(current)
    )


def read_status_button(flow: Flow, text: str) -> tuple[int, str] | None:
    """The order id and status a :func:`status_buttons` label stands for, in any of the
    flow's languages; None for any other text."""
    found = _BUTTON.fullmatch(text.strip())
    if found is None:
        return None
    for status in STATUSES:
        for language in flow.languages:
            if status_name(flow, status, language) == found.group(2):
                return int(found.group(1)), status
    return None


class OperatorAlerts(NewOrderAlerts):
    """Who hears of new orders: Telegram chats (``admin_chats``, only when the Telegram
    channel is configured), an order webhook, and the customer's topic in the operators'
    chat (``operator_chat``: the card with every detail, in ``language``, with status
    buttons)."""

    def __init__(
        self,
        *,
        admin_chats: Sequence[str] = (),
        webhook: bool = False,
        operator_chat: str = "",
        flow: Flow | None = None,
        language: str = "ru",
    ) -> None:
        self._admin_chats = tuple(admin_chats)
        self._webhook = webhook
        self._operator_chat = operator_chat if flow is not None else ""
        self._flow = flow
        self._language = language

    def __bool__(self) -> bool:
        return bool(self._admin_chats or self._webhook or self._operator_chat)

    def messages(
        self, order_id: int, order: OrderRecord, now: float
    ) -> tuple[OutboundMessage, ...]:
        found: list[OutboundMessage] = []
        if self._admin_chats:
            if self._flow is not None:  # every detail, in the shop's language
                hint = f"orderbot orders set-status {order_id} confirmed"
                text = f"{order_card(self._flow, order_id, order, self._language)}\n{hint}"
            else:
                text = _alert_text(order_id, order)
            found += [
                OutboundMessage(
                    key=new_order_alert_key(order_id, chat),
                    channel="telegram",
                    client_id=chat,
                    text=text,
                    created_at=now,
                )
                for chat in self._admin_chats
            ]
        if self._operator_chat and self._flow is not None:
            client_key = f"{order.channel}:{order.client_id}"
            kept = {f"to.{k}": v for k, v in order.route.items()}
            found.append(
                OutboundMessage(
                    key=new_order_topic_key(order_id),
                    channel="telegram",
                    client_id=self._operator_chat,
                    text=order_card(self._flow, order_id, order, self._language),
                    buttons=status_buttons(self._flow, order_id, "new", self._language),
                    route={"for": client_key, "title": client_key, **kept},
                    created_at=now,
                    kind="topic",
                )
            )
        if self._webhook:
            found.append(
                OutboundMessage(
                    key=new_order_webhook_key(order_id),
                    channel=ORDER_WEBHOOK,
                    client_id=str(order_id),
                    text=orjson.dumps(order_json(order_id, order, now)).decode(),
                    created_at=now,
                )
            )
        return tuple(found)


def question_alert(message: InboundMessage, step: str) -> str:
    """What admins get when a customer asks something the flow has no answer to; the dialog
    goes on meanwhile, so the operator answers in the chat (or takes it over)."""
    return (
        f"❓ {message.channel}:{message.client_id} asks (at {step}), and the bot has no answer:\n"
        f"👤 {message.text.strip()}"
    )


def transcript(message: InboundMessage, rows: Sequence[tuple[str, str]], *, hand_back: str) -> str:
    """What admins get when a customer asks for a person: who, how to answer, and the last
    messages (``rows`` of direction ``in``/``out`` and text, oldest first)."""
    lines = [
        f"🙋 {message.channel}:{message.client_id} asks for an operator.",
        f"When done: {hand_back}",
        "",
        "",
    ]
    body: list[str] = []
    for direction, text in rows:
        if text.strip():
            body.append(("👤 " if direction == "in" else "🤖 ") + text.strip())
    text = "\n".join(body)
    if len(text) > _TRANSCRIPT_CHARS:
        text = "…" + text[-_TRANSCRIPT_CHARS:]
    return "\n".join(lines) + text
