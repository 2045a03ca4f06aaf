"""Chat2Desk: its webhook events in, its REST API (``POST /messages``, transfers, webhooks) out.

Every call and field used here is documented by Chat2Desk or used by real clients of the API;
the sources are listed in ``docs/chat2desk-api.md`` and cited where each call is made.

Parsing runs on the webhook hot path (thousands of requests a second), so it is plain dict and
type checks, no model validation library. Sending translates every HTTP outcome into the
:mod:`orderbot.errors` channel tree; no transport exception leaves this module. Chat2Desk reports
an exhausted API quota in the body text, whatever the HTTP status (real clients match the text),
so the body is read before the status decides.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from orderbot.channels.base import (
    MAX_ID_LENGTH,
    MAX_INTEGER_ID,
    Channel,
    check_id,
    check_integer_id,
    check_url,
    clean_text,
    invalid_field,
    json_type_name,
)
from orderbot.errors import (
    ChannelError,
    OutsideWindow,
    PermanentError,
    QuotaExceeded,
    RateLimited,
    ServerError,
    Timeout,
)
from orderbot.loggers import mask_text
from orderbot.messages import (
    EVENT_DELIVERY_FAILED,
    EVENT_HANDBACK,
    EVENT_OPERATOR,
    Attachment,
    InboundMessage,
    OutboundMessage,
)

if TYPE_CHECKING:  # imported on the first send: a server or worker process never sends
    import aiohttp

__all__ = [
    "WEBHOOK_CHECK_INTERVAL",
    "WEBHOOK_EVENTS",
    "WEBHOOK_NAME",
    "Chat2DeskChannel",
    "WebhookWatch",
    "describe_webhook",
    "parse_retry_after",
    "render_buttons",
    "webhook_watch",
]

WEBHOOK_NAME = "orderbot"
"""The name orderbot's webhook is registered under: how ``set-webhook`` finds its own hook."""
WEBHOOK_EVENTS = (
    "inbox",
    "outbox",
    "outbox_status",
    "close_request",
    "close_dialog",
    "dialog_transferred",
)
"""Events orderbot subscribes to (webhooks (POST), help.chat2desk.com.br "api-and-webhooks")."""

WEBHOOK_CHECK_INTERVAL = 300.0
"""Seconds /health trusts its last look at the webhooks: one API call per five minutes at
most, against a disabling that takes Chat2Desk five hours of failures."""

# The body texts by which Chat2Desk reports an exhausted quota (dgolovachev/Chat2DeskClient
# CheckResponse: APIExceededException), with how long to wait before trying again: the
# per-period limit frees up within minutes, the monthly one not before someone raises it.
_QUOTA_TEXTS = (
    ("Number of API requests exceeded", 60.0),
    ("API calls exceeded API limit per month", 3600.0),
)
# How many of the client's newest messages the delivery check reads.
_RECENT_MESSAGES = 20

# The single-URL media fields of the inbox webhook, and the attachment kind each one becomes.
_MEDIA_FIELDS = (("photo", "photo"), ("pdf", "file"), ("audio", "audio"), ("video", "video"))
_DEFAULT_RETRY_AFTER = 1.0
_EXCERPT_CHARS = 200


def _parse_id(payload: dict[str, Any], field: str) -> str:
    """An id of the inbox webhook. Chat2Desk's ids are integers (``client_id: 12568`` in its
    webhook, tests/test_chat2desk.py REAL_INBOX); a proxy or a hand-written test may send strings.
    A digit string is read as the integer it spells, so ``"07001"``, ``"7001"`` and ``7001`` are
    one client; integers must fit 64 bits (they go back to the API as JSON numbers); other
    strings must be plain ids (:func:`check_id`)."""
    value = payload.get(field)
    # ``type(...) is`` on purpose: bool is an int subclass, and True must not become client "True".
    if type(value) is int:
        if value < 0:
            raise invalid_field(field, "must not be negative")
        return str(check_integer_id(field, value))
    if type(value) is str:
        text = value.strip()
        if text.isascii() and text.isdigit():
            if len(text) > MAX_ID_LENGTH:
                raise invalid_field(field, f"longer than {MAX_ID_LENGTH} characters")
            return str(check_integer_id(field, int(text)))
        return check_id(field, text)
    if field not in payload:
        raise invalid_field(field, "missing")
    raise invalid_field(field, f"must be a string or an integer, not {json_type_name(value)}")


def _route_value(payload: dict[str, Any], field: str) -> str | None:
    """``transport`` or ``channel_id``: absent or empty is None, else an id as above."""
    value = payload.get(field)
    if type(value) is int or (type(value) is str and value.strip()):
        return _parse_id(payload, field)
    return None  # absent, empty, or a type we never used: answering still works without it


def _id_text(value: object) -> str | None:
    """An id from an API answer or an event field we only pass along: an integer or a
    non-empty string, else None."""
    if type(value) is int:
        return str(value)
    if type(value) is str and value.strip():
        return value.strip()
    return None


def _route(payload: dict[str, Any]) -> dict[str, str]:
    route: dict[str, str] = {}
    transport = _route_value(payload, "transport")
    if transport is not None:
        route["transport"] = transport
    channel_id = _route_value(payload, "channel_id")
    if channel_id is not None:
        route["channel_id"] = channel_id
    return route


def _whatsapp_phone(payload: dict[str, Any], transport: str | None) -> str | None:
    """The customer's number on a WhatsApp transport (``whatsapp``, ``wa_dialog``, ``wa_cm`` ...:
    messages (POST), help.chat2desk.com.br), from ``client.phone`` (webhooks (POST) example);
    None elsewhere: Telegram's ``[tg] 807892`` and the widget's ``[chat] 1d0b2f`` are no
    numbers."""
    if transport is None or not (transport == "whatsapp" or transport.startswith("wa_")):
        return None
    client = payload.get("client")
    phone = client.get("phone") if type(client) is dict else None
    if type(phone) is not str:
        return None
    digits = phone.strip().removeprefix("+")
    if not (digits.isascii() and digits.isdigit() and 8 <= len(digits) <= 15):  # E.164 length
        return None
    return f"+{digits}"


def _client_id(payload: dict[str, Any]) -> str:
    """``client_id``, or ``client.id`` (the nested client of webhook events)."""
    if "client_id" not in payload:
        client = payload.get("client")
        if type(client) is dict and "id" in client:
            return _parse_id(client, "id")
    return _parse_id(payload, "client_id")


def _parse_attachments(payload: dict[str, Any]) -> tuple[Attachment, ...]:
    found: list[Attachment] = []
    for field, kind in _MEDIA_FIELDS:
        value = payload.get(field)
        if value is None or value == "":
            continue
        if type(value) is not str:
            raise invalid_field(field, f"must be a URL string, not {json_type_name(value)}")
        found.append(Attachment(url=check_url(field, value), kind=kind))
    coordinates = payload.get("coordinates")
    if coordinates is not None and coordinates != "":
        if type(coordinates) is not str:
            raise invalid_field(
                "coordinates", f"must be a string, not {json_type_name(coordinates)}"
            )
        where = check_url("coordinates", coordinates.replace(" ", ""))
        found.append(Attachment(url=f"geo:{where}", kind="location"))
    items = payload.get("attachments")
    if items is None:
        return tuple(found)
    if type(items) is not list:
        raise invalid_field("attachments", f"must be an array, not {json_type_name(items)}")
    for index, item in enumerate(items):
        found.append(_parse_attachment(f"attachments[{index}]", item))
    return tuple(found)


def _parse_attachment(field: str, item: object) -> Attachment:
    if type(item) is str and item:
        return Attachment(url=check_url(field, item))
    if type(item) is not dict:
        raise invalid_field(field, f"must be an object or a URL string, not {json_type_name(item)}")
    url = item.get("link", item.get("url"))
    if type(url) is not str or not url:
        raise invalid_field(f"{field}.link", "missing or not a string")
    name = item.get("name", item.get("file_name", ""))
    mime_type = item.get("content_type", item.get("mime_type", ""))
    size = item.get("size")
    kind = item.get("type", "file")
    return Attachment(
        url=check_url(f"{field}.link", url),
        name=clean_text(name) if type(name) is str else "",
        mime_type=clean_text(mime_type) if type(mime_type) is str else "",
        size=size if type(size) is int and size >= 0 else None,
        kind=kind if type(kind) is str and kind else "file",
    )


def render_buttons(text: str, buttons: tuple[str, ...]) -> str:
    """Append buttons as numbered lines, for channels that cannot show buttons:
    ``"Подтвердить?"`` with ``("Да", "Нет")`` -> ``"Подтвердить?\\n1. Да\\n2. Нет"``."""
    if not buttons:
        return text
    lines = "\n".join(f"{number}. {label}" for number, label in enumerate(buttons, start=1))
    return f"{text}\n{lines}" if text else lines


def parse_retry_after(value: str | None, *, now: float | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date);
    1 s when absent or unreadable, never negative."""
    if not value:
        return _DEFAULT_RETRY_AFTER
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return _DEFAULT_RETRY_AFTER
        if moment.tzinfo is None:  # RFC 9110 dates are GMT; a naive one would be read as local
            return _DEFAULT_RETRY_AFTER
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds == float("inf"):  # NaN or inf from a hostile header
        return _DEFAULT_RETRY_AFTER
    return max(0.0, seconds)


def _json_id(value: str) -> int | str:
    # Chat2Desk ids are integers; send them as such, but keep anything else verbatim (also a digit
    # string past 64 bits, which ingress refuses but an older queued message may hold).
    if value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= MAX_INTEGER_ID:
        return int(value)
    return value


class Chat2DeskChannel(Channel):
    """The Chat2Desk adapter. Owns its HTTP client unless one is injected.

    ``api_url`` is the API base including the version, e.g. ``https://api.chat2desk.com/v1``.
    """

    name = "chat2desk"

    def __init__(
        self,
        *,
        api_url: str,
        token: str,
        client: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        max_connections: int = 64,
        reply_type: str = "autoreply",
        open_dialog: bool = False,
        window_transports: tuple[str, ...] = ("wa_dialog", "wa_cm", "wa_infobip"),
        window: float = 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if reply_type not in ("autoreply", "to_client"):
            raise ValueError("reply_type must be autoreply or to_client")
        self._reply_type = reply_type
        self._open_dialog = open_dialog
        self._window_transports = frozenset(window_transports)
        self._window = window
        self._clock = clock
        # message_ids of the bot's own sends, so their outbox echo is not read as an operator
        # (in this process only; the type and external_id cover the other processes).
        self._own_message_ids: set[str] = set()
        self._own_order: deque[str] = deque()
        self._api_url = api_url.rstrip("/")
        self._headers = {"Authorization": token, "Content-Type": "application/json"}
        self._timeout_seconds = timeout
        self._owns_client = client is None
        self._client = client
        self._max_connections = max_connections
        self._closed = False

    def _session(self) -> aiohttp.ClientSession:
        # Created on first use: a session belongs to the running event loop. Replies fan out
        # to one host at up to ~1000/s, so connections are pooled and kept alive. aiohttp, not
        # httpx: httpx's pool topped out at 200-350 requests/s on this 2-core machine where
        # aiohttp reached 1,700 (measured with bench/ingress.py; commit db3eb54).
        if self._closed:
            raise PermanentError("chat2desk: the channel is closed")
        if self._client is None:
            import aiohttp

            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_seconds),
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, keepalive_timeout=30, ttl_dns_cache=300
                ),
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        return self._client

    async def __aenter__(self) -> Chat2DeskChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session if this adapter created it; safe to call twice."""
        self._closed = True
        if self._owns_client and self._client is not None and not self._client.closed:
            await self._client.close()

    # inbound

    def parse_webhook(self, payload: Any, *, received_at: float) -> InboundMessage | None:
        """Turn a webhook event into a message; None for events the bot must not act on.

        ``inbox`` (a client's message) becomes a message for the dialog. ``outbox`` (a message
        to the client) from a person becomes an :data:`EVENT_OPERATOR` event; the bot's own
        replies (recognised by their type, their ``external_id`` or the ``message_id`` a send
        returned) and system notes are ignored. ``dialog_transferred`` to an operator is an
        :data:`EVENT_OPERATOR` event; ``close_request`` and ``close_dialog`` are
        :data:`EVENT_HANDBACK` events. Anything else is ignored."""
        if type(payload) is not dict:
            raise invalid_field("$", f"must be a JSON object, not {json_type_name(payload)}")
        hook_type = payload.get("hook_type")
        if hook_type == "outbox":
            return self._parse_outbox(payload, received_at)
        if hook_type in ("close_request", "close_dialog", "dialog_transferred"):
            return self._parse_dialog_event(payload, hook_type, received_at)
        if hook_type == "outbox_status":
            return self._parse_outbox_status(payload, received_at)
        if hook_type is not None and hook_type != "inbox":
            return None
        message_type = payload.get("type")
        if message_type is not None and message_type != "from_client":
            return None
        client_id = _parse_id(payload, "client_id")
        message_id = _parse_id(payload, "message_id")
        text = payload.get("text")
        if text is None:
            text = ""
        elif type(text) is not str:
            raise invalid_field("text", f"must be a string, not {json_type_name(text)}")
        else:
            text = clean_text(text)
        attachments = _parse_attachments(payload)
        if not attachments and not text.strip():
            raise invalid_field("text", "missing: a message needs text or an attachment")
        route = _route(payload)
        phone = _whatsapp_phone(payload, route.get("transport"))
        if phone is not None:
            route["phone"] = phone  # offered at the phone step (dialog.phone_offer)
        return InboundMessage(
            channel=self.name,
            client_id=client_id,
            message_id=message_id,
            text=text,
            received_at=received_at,
            attachments=attachments,
            route=route,
        )

    def _parse_outbox(self, payload: dict[str, Any], received_at: float) -> InboundMessage | None:
        # outbox: "messages being sent by the system to a client", with type and operator_id
        # (webhooks (POST), help.chat2desk.com.br). Only a person's message means a takeover.
        if payload.get("type") != "to_client":
            return None  # autoreply (the bot's replies by default), system, comment
        external_id = payload.get("external_id")
        if type(external_id) is str and external_id.startswith(f"{self.name}:"):
            return None  # sent by orderbot: its outbox keys start with the channel name
        message_id = _parse_id(payload, "message_id")
        if message_id in self._own_message_ids:
            return None
        client_id = _client_id(payload)
        route = {**_route(payload), "event": EVENT_OPERATOR}
        operator = _id_text(payload.get("operator_id"))
        if operator is not None:
            route["operator_id"] = operator
        return InboundMessage(
            channel=self.name,
            client_id=client_id,
            message_id=f"outbox:{message_id}",
            text="",
            received_at=received_at,
            route=route,
        )

    def _parse_outbox_status(
        self, payload: dict[str, Any], received_at: float
    ) -> InboundMessage | None:
        # outbox_status: "sends errors received by Chat2Desk from the messengers' API"
        # (webhooks (POST), help.chat2desk.com.br; the example there is cut off, so the fields
        # are read defensively: the message, the client, and whatever describes the error).
        if "client_id" not in payload and type(payload.get("client")) is not dict:
            return None  # nothing to record it against
        client_id = _client_id(payload)
        message_id = _id_text(payload.get("message_id")) or "-"
        said = [
            f"{field}={value}"
            for field in ("status", "error", "errors", "text", "message")
            if (value := payload.get(field)) not in (None, "", [], {})
        ]
        route = {**_route(payload), "event": EVENT_DELIVERY_FAILED}
        when = _id_text(payload.get("event_time")) or "-"
        return InboundMessage(
            channel=self.name,
            client_id=client_id,
            message_id=f"outbox_status:{message_id}:{when}",
            text=f"message {message_id} not delivered: {'; '.join(said) or 'no details'}"[:1000],
            received_at=received_at,
            route=route,
        )

    def _parse_dialog_event(
        self, payload: dict[str, Any], hook_type: str, received_at: float
    ) -> InboundMessage | None:
        client_id = _client_id(payload)
        if hook_type == "dialog_transferred":
            operator = _id_text(payload.get("operator_id"))
            if operator is None:
                return None  # back to a queue or a group: nobody has taken it yet
            event = EVENT_OPERATOR
        else:
            event = EVENT_HANDBACK
        # These events carry no message id: the dialog or request and the event's time make
        # one, so a redelivery of the same event is dropped as a duplicate.
        parts = [
            _id_text(payload.get(field)) or "-"
            for field in ("request_id", "dialog_id", "event_time")
        ]
        route = {**_route(payload), "event": event}
        return InboundMessage(
            channel=self.name,
            client_id=client_id,
            message_id=f"{hook_type}:{':'.join(parts)}",
            text="",
            received_at=received_at,
            route=route,
        )

    # outbound

    async def send(self, message: OutboundMessage) -> None:
        """``POST /messages`` (or, for ``kind="transfer"``, :meth:`transfer`); raises
        RateLimited (QuotaExceeded), ServerError, Timeout or PermanentError."""
        if message.kind == "transfer":
            await self.transfer(message)
            return
        await self._check_window(message)
        # messages (POST), help.chat2desk.com.br: client_id, text, type (to_client | autoreply
        # | system | comment), transport, channel_id, open_dialog (true by default),
        # external_id ("you can store the id of the message in your system").
        body: dict[str, Any] = {
            "client_id": _json_id(message.client_id),
            "text": render_buttons(message.text, message.buttons),
            "type": self._reply_type,
            "open_dialog": self._open_dialog,
            "external_id": message.key,
        }
        transport = message.route.get("transport")
        if transport:
            body["transport"] = transport
        channel_id = message.route.get("channel_id")
        if channel_id:
            body["channel_id"] = _json_id(channel_id)
        answer = await self._call("POST", "/messages", body, secret=body["text"])
        data = answer.get("data")
        if isinstance(data, dict):
            sent_id = _id_text(data.get("message_id"))
            if sent_id is not None:
                self._remember_own(sent_id)

    async def _check_window(self, message: OutboundMessage) -> None:
        """WhatsApp's business API delivers free text only within 24 hours of the customer's
        last message; later it is accepted and then lost. A message that answers an inbound
        one (its key starts with that message's ``chat2desk:`` key) is inside by definition;
        anything later (a status notification, a comeback) on a windowed transport is checked
        against the customer's last message (``GET /messages``, type from_client). When that
        cannot be read, the message is sent: never held back on a guess."""
        if message.route.get("transport") not in self._window_transports:
            return
        if message.key.startswith(f"{self.name}:"):
            return
        rows = await self._newest(message.client_id, "from_client", 1)
        last = _parse_time(rows[-1].get("created")) if rows and isinstance(rows[-1], dict) else None
        if last is None:
            return
        quiet = self._clock() - last
        if quiet > self._window:
            raise OutsideWindow(
                f"chat2desk: the customer last wrote {quiet / 3600:.0f} h ago, outside "
                "WhatsApp's 24-hour window; not sent"
            )

    def _remember_own(self, message_id: str) -> None:
        self._own_message_ids.add(message_id)
        self._own_order.append(message_id)
        while len(self._own_order) > 10_000:
            self._own_message_ids.discard(self._own_order.popleft())

    async def transfer(self, message: OutboundMessage) -> None:
        """Hand the client's dialog to an operator or a group, as real clients do:
        ``GET /messages/{message_id}/transfer?operator_id=`` or
        ``GET /messages/{message_id}/transfer_to_group?group_id=`` (Chat2Desk Public API;
        called with GET by the Go and TypeScript clients in docs/chat2desk-api.md).

        ``message_id`` is the client's message that asked for a person (``route``); a transfer
        queued before orderbot recorded it uses the client's latest message. Repeating a
        transfer is harmless, so one in doubt is sent again."""
        operator = message.route.get("operator_id")
        group = message.route.get("group_id")
        if not operator and not group:
            raise PermanentError("chat2desk transfer: neither operator_id nor group_id given")
        message_id = message.route.get("message_id") or await self._latest_client_message(
            message.client_id
        )
        if message_id is None:
            raise PermanentError("chat2desk transfer: the client has no message to transfer")
        target = quote(message_id, safe="")
        if operator:
            path = f"/messages/{target}/transfer?operator_id={quote(operator, safe='')}"
        else:
            path = f"/messages/{target}/transfer_to_group?group_id={quote(str(group), safe='')}"
        await self._call("GET", path)

    async def _newest(self, client_id: str, message_type: str, count: int) -> list[Any] | None:
        """The client's ``count`` newest messages of ``message_type`` (oldest first), read
        with documented filters only (client_id, type, limit, offset) and ``meta.total``;
        None when the answer does not say how many there are."""
        base = f"/messages?client_id={quote(client_id, safe='')}&type={message_type}"
        first = await self._call("GET", f"{base}&limit=1&offset=0")
        meta = first.get("meta")
        total = meta.get("total") if isinstance(meta, dict) else None
        if type(total) is not int or total < 0:
            return None
        if total == 0:
            return []
        offset = max(0, total - count)
        rows = (await self._call("GET", f"{base}&limit={count}&offset={offset}")).get("data")
        return rows if isinstance(rows, list) else None

    async def _latest_client_message(self, client_id: str) -> str | None:
        rows = await self._newest(client_id, "from_client", 1)
        if not rows or not isinstance(rows[-1], dict):
            return None
        return _id_text(rows[-1].get("id"))

    async def was_delivered(self, message: OutboundMessage, since: float) -> bool | None:
        """Look for the reply among the client's newest messages of the type replies are sent
        with (``GET /messages`` with client_id, type, limit, offset; ``meta.total`` to find
        the newest): the same ``external_id`` or text, created no earlier than a few seconds
        before ``since``. Used only for a reply whose send was cut off (crash, timeout), so it
        is neither lost nor doubled. None (cannot tell: send again) when the answer lacks what
        is needed."""
        if message.kind != "text":
            return None  # a transfer leaves no message to look for; repeating it is harmless
        text = render_buttons(message.text, message.buttons)
        rows = await self._newest(message.client_id, self._reply_type, _RECENT_MESSAGES)
        if rows is None:
            return None
        for row in reversed(rows):
            if not isinstance(row, dict):
                continue
            if row.get("external_id") != message.key and row.get("text") != text:
                continue
            created = _parse_time(row.get("created"))
            if created is None:
                return None  # cannot tell when it was sent: sending again is the safe side
            if created >= since - _CLOCK_SKEW:
                return True
        return False

    async def webhooks(self) -> list[dict[str, Any]]:
        """The registered webhooks (``GET /webhooks``): id, name, url, events, status, errors."""
        rows = (await self._call("GET", "/webhooks")).get("data")
        return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []

    async def set_webhook(self, url: str) -> dict[str, Any]:
        """Register orderbot's webhook at ``url`` for :data:`WEBHOOK_EVENTS`, idempotently:
        the hook named :data:`WEBHOOK_NAME` is updated in place (``PUT /webhooks/{id}``: a new
        URL, say with a new WEBHOOK_SECRET, replaces the old one) and only created
        (``POST /webhooks``) when there is none; Chat2Desk allows at most 5 hooks.
        Returns ``{"action": "created" | "updated" | "unchanged", "webhook": {...}}``."""
        wanted = {"name": WEBHOOK_NAME, "url": url, "events": list(WEBHOOK_EVENTS)}
        own = [hook for hook in await self.webhooks() if hook.get("name") == WEBHOOK_NAME]
        if not own:
            answer = await self._call("POST", "/webhooks", wanted)
            data = answer.get("data")
            return {"action": "created", "webhook": data if isinstance(data, dict) else wanted}
        hook = own[0]
        same_events = sorted(map(str, hook.get("events") or [])) == sorted(WEBHOOK_EVENTS)
        if hook.get("url") == url and same_events and hook.get("status") != "disabled":
            return {"action": "unchanged", "webhook": hook}
        hook_id = _id_text(hook.get("id"))
        if hook_id is None:
            raise PermanentError("chat2desk webhooks: orderbot's hook has no id")
        answer = await self._call("PUT", f"/webhooks/{quote(hook_id, safe='')}", wanted)
        data = answer.get("data")
        return {"action": "updated", "webhook": data if isinstance(data, dict) else wanted}

    async def api_info(self) -> dict[str, Any]:
        """The account's API usage and limits (``GET /companies/api_info``)."""
        return await self._call("GET", "/companies/api_info")

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, secret: str = ""
    ) -> dict[str, Any]:
        what = f"chat2desk {method} {path.split('?', 1)[0]}"
        session = self._session()
        import aiohttp  # loaded by _session()

        try:
            async with session.request(
                method,
                self._api_url + path,
                data=None if body is None else orjson.dumps(body),
                headers=self._headers,
            ) as response:
                status = response.status
                retry_header = response.headers.get("Retry-After")
                text = await response.text(errors="replace")
        except TimeoutError as exc:
            raise Timeout(f"{what}: no answer within {self._timeout_seconds:g}s") from exc
        except aiohttp.InvalidURL as exc:
            raise PermanentError(f"{what}: invalid API URL") from exc
        except aiohttp.ClientError as exc:
            raise ServerError(f"{what}: {type(exc).__name__}") from exc
        except OSError as exc:
            raise ServerError(f"{what}: {type(exc).__name__}") from exc
        for phrase, wait in _QUOTA_TEXTS:
            if phrase in text:
                raise QuotaExceeded(f"{what}: {status} {phrase}", retry_after=wait)
        if status == 429:
            retry_after = parse_retry_after(retry_header)
            raise RateLimited(f"{what}: 429, retry after {retry_after:g}s", retry_after=retry_after)
        if status >= 500:
            raise ServerError(f"{what}: {status}")
        if not 200 <= status < 300:
            raise PermanentError(f"{what}: {status} {_excerpt(text, secret)}")
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            # The API accepted the request; re-sending because the body is odd would duplicate.
            return {}
        if not isinstance(data, dict):
            return {}
        if data.get("status") == "error":
            raise PermanentError(f"{what}: {status} status=error {_excerpt(text, secret)}")
        return data


def describe_webhook(hooks: list[dict[str, Any]]) -> dict[str, Any]:
    """orderbot's hook among ``hooks`` (``GET /webhooks``): ``state`` ``ok``, ``disabled``
    (Chat2Desk stops a hook after 5 hours of failed deliveries; its ``errors`` say why) or
    ``missing``, with the subscribed events it lacks and its errors. Not its URL: /health is
    public and the URL may carry WEBHOOK_SECRET."""
    own = [hook for hook in hooks if hook.get("name") == WEBHOOK_NAME]
    if not own:
        return {"state": "missing", "hint": "run: orderbot chat2desk set-webhook URL"}
    hook = own[0]
    events = {str(event) for event in hook.get("events") or []}
    found: dict[str, Any] = {
        "state": "disabled" if hook.get("status") == "disabled" else "ok",
        "id": hook.get("id"),
        "status": hook.get("status"),
        "errors": hook.get("errors") or [],
        "events_missing": [event for event in WEBHOOK_EVENTS if event not in events],
    }
    if found["state"] == "disabled":
        found["hint"] = "fix the URL's reachability, then run: orderbot chat2desk set-webhook URL"
    return found


class WebhookWatch:
    """orderbot's Chat2Desk webhook as Chat2Desk reports it, for /health: asked at most every
    ``interval`` seconds (the answer is cached between), one question at a time."""

    def __init__(
        self,
        channel: Chat2DeskChannel,
        *,
        interval: float = WEBHOOK_CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = channel
        self._interval = interval
        self._clock = clock
        self._checked: float | None = None
        self._last: dict[str, Any] = {"state": "unknown"}
        self._lock = asyncio.Lock()

    async def status(self) -> dict[str, Any]:
        """The hook's :func:`describe_webhook`, or ``{"state": "unknown", "error": ...}`` when
        the API could not be asked."""
        async with self._lock:
            now = self._clock()
            if self._checked is not None and now - self._checked < self._interval:
                return self._last
            self._checked = now
            try:
                self._last = describe_webhook(await self._channel.webhooks())
            except ChannelError as exc:
                self._last = {"state": "unknown", "error": str(exc)}
            return self._last


def webhook_watch(channels: Mapping[str, Channel], token: str) -> WebhookWatch | None:
    """The watch /health uses, when a Chat2Desk adapter with an API token is configured."""
    channel = channels.get("chat2desk")
    if not token or not isinstance(channel, Chat2DeskChannel):
        return None
    return WebhookWatch(channel)


_CLOCK_SKEW = 5.0  # seconds of disagreement tolerated between our clock and Chat2Desk's


def _parse_time(value: object) -> float | None:
    """Chat2Desk's ``created``: ``2025-04-03T11:50:06 UTC``, ISO 8601, or unix seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().removesuffix(" UTC").replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _excerpt(body: str, secret: str) -> str:
    """A short, log-safe piece of an error body: the API may echo what we sent, so our own
    text is cut out and digit runs (phones) and e-mails are masked."""
    if secret and len(secret) > 3:
        body = body.replace(secret, "<text>")
        body = body.replace(json.dumps(secret)[1:-1], "<text>")
    return mask_text(" ".join(body.split()), keep=_EXCERPT_CHARS) if body else "(empty body)"
