"""Messages to operators, through the outbox like any reply (retries, dead-letter queue).

* :class:`OperatorAlerts`: a new order is told to each Telegram chat in ``ADMIN_CHAT_IDS``
  (channel ``telegram``, key ``new-order:<order id>:telegram:<chat>``) and posted as JSON to
  ``ORDER_WEBHOOK_URL`` (channel ``order_webhook``, key ``new-order:<order id>:webhook``). The
  step store builds them inside the order's own transaction, once, when the row is inserted.
  The webhook's channel is :class:`~orderbot.channels.order_webhook.OrderWebhookChannel`.
* :func:`transcript`: the conversation so far, for admins when a customer asks for a person.

Texts for operators are plain text: the Telegram channel escapes them (customer data included).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from orderbot.channels.order_webhook import ORDER_WEBHOOK
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.orders.models import OrderRecord
from orderbot.outbound import new_order_alert_key, new_order_webhook_key
from orderbot.state.base import NewOrderAlerts

__all__ = ["OperatorAlerts", "order_json", "question_alert", "transcript"]

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


class OperatorAlerts(NewOrderAlerts):
    """Who hears of new orders: Telegram chats (``admin_chats``, only when the Telegram
    channel is configured) and/or an order webhook."""

    def __init__(self, *, admin_chats: Sequence[str] = (), webhook: bool = False) -> None:
        self._admin_chats = tuple(admin_chats)
        self._webhook = webhook

    def __bool__(self) -> bool:
        return bool(self._admin_chats or self._webhook)

    def messages(
        self, order_id: int, order: OrderRecord, now: float
    ) -> tuple[OutboundMessage, ...]:
        found: list[OutboundMessage] = []
        if self._admin_chats:
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
