"""Messages to operators, through the outbox like any reply (retries, dead-letter queue).

* :class:`OperatorAlerts`: a new order is told to each Telegram chat in ``ADMIN_CHAT_IDS``
  (channel ``telegram``, key ``new-order:<order id>:telegram:<chat>``) and posted as JSON to
  ``ORDER_WEBHOOK_URL`` (channel ``order_webhook``, key ``new-order:<order id>:webhook``). The
  step store builds them inside the order's own transaction, once, when the row is inserted.
* :class:`OrderWebhookChannel`: the "channel" whose ``send`` POSTs an alert's JSON body; HTTP
  outcomes become our channel errors (429 waits, 5xx and timeouts retry, other 4xx are final).
* :func:`transcript`: the conversation so far, for admins when a customer asks for a person.

Texts for operators are plain text: the Telegram channel escapes them (customer data included).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from orderbot import __version__
from orderbot.channels.base import Channel
from orderbot.channels.chat2desk import parse_retry_after
from orderbot.errors import PermanentError, RateLimited, ServerError, Timeout
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.orders.models import OrderRecord
from orderbot.outbound import new_order_alert_key, new_order_webhook_key
from orderbot.state.base import NewOrderAlerts

if TYPE_CHECKING:  # imported at the first alert sent: most processes never send one
    import httpx

__all__ = ["ORDER_WEBHOOK", "OperatorAlerts", "OrderWebhookChannel", "transcript"]

ORDER_WEBHOOK = "order_webhook"
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


class OrderWebhookChannel(Channel):
    """Posts new-order alerts to ``url`` (``ORDER_WEBHOOK_URL``): the alert's text is the JSON
    body. Only outbound; there is no webhook to parse."""

    name = ORDER_WEBHOOK

    def __init__(
        self, url: str, *, client: httpx.AsyncClient | None = None, timeout: float = 10.0
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client

    def _http(self) -> httpx.AsyncClient:
        # Made (and httpx imported) at the first alert: the server and workers never send.
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self._timeout))
        return self._client

    def parse_webhook(self, payload: Any, *, received_at: float) -> InboundMessage | None:
        return None

    async def send(self, message: OutboundMessage) -> None:
        what = "order webhook POST"
        client = self._http()
        import httpx

        try:
            response = await client.post(
                self._url,
                content=message.text.encode(),
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": f"orderbot/{__version__}",
                    "Idempotency-Key": message.key,
                },
            )
        except httpx.TimeoutException:
            raise Timeout(f"{what}: no answer within {self._timeout:g}s") from None
        except httpx.InvalidURL:
            raise PermanentError(f"{what}: invalid URL") from None
        except httpx.HTTPError as exc:
            raise ServerError(f"{what}: {type(exc).__name__}") from None
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise RateLimited(f"{what}: 429, retry after {retry_after:g}s", retry_after=retry_after)
        if status >= 500 or status == 408:
            raise ServerError(f"{what}: {status}")
        if not 200 <= status < 300:
            raise PermanentError(f"{what}: {status}")

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None and not self._client.is_closed:
            await self._client.aclose()
