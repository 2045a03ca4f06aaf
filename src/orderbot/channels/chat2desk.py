"""Chat2Desk: its inbox webhook in, its REST API (``POST /messages``) out.

Parsing runs on the webhook hot path (thousands of requests a second), so it is plain dict and
type checks, no model validation library. Sending translates every HTTP outcome into the
:mod:`orderbot.errors` channel tree; no httpx exception leaves this module.
"""

from __future__ import annotations

import email.utils
import json
import time
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
    PermanentError,
    RateLimited,
    ServerError,
    Timeout,
)
from orderbot.loggers import mask_text
from orderbot.messages import Attachment, InboundMessage, OutboundMessage

if TYPE_CHECKING:  # imported on the first send: a server or worker process never sends
    import aiohttp

__all__ = ["Chat2DeskChannel", "parse_retry_after", "render_buttons"]

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
    ) -> None:
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
        """Turn an inbox webhook into a message; None for events the bot must not answer
        (our own replies echoed back as ``to_client``, system notes, other hook types)."""
        if type(payload) is not dict:
            raise invalid_field("$", f"must be a JSON object, not {json_type_name(payload)}")
        hook_type = payload.get("hook_type")
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
        route: dict[str, str] = {}
        transport = _route_value(payload, "transport")
        if transport is not None:
            route["transport"] = transport
        channel_id = _route_value(payload, "channel_id")
        if channel_id is not None:
            route["channel_id"] = channel_id
        return InboundMessage(
            channel=self.name,
            client_id=client_id,
            message_id=message_id,
            text=text,
            received_at=received_at,
            attachments=attachments,
            route=route,
        )

    # outbound

    async def send(self, message: OutboundMessage) -> None:
        """``POST /messages`` (or, for ``kind="transfer"``, :meth:`transfer`); raises
        RateLimited, ServerError, Timeout or PermanentError."""
        if message.kind == "transfer":
            await self.transfer(message)
            return
        body: dict[str, Any] = {
            "client_id": _json_id(message.client_id),
            "text": render_buttons(message.text, message.buttons),
            "type": "to_client",
        }
        transport = message.route.get("transport")
        if transport:
            body["transport"] = transport
        channel_id = message.route.get("channel_id")
        if channel_id:
            body["channel_id"] = _json_id(channel_id)
        await self._call("POST", "/messages", body, secret=body["text"])

    async def transfer(self, message: OutboundMessage) -> None:
        """Hand the client's dialog to an operator: ``POST /clients/{client_id}/transfer`` with
        ``operator_id`` or ``group_id`` from ``message.route`` (CHAT2DESK_OPERATOR_ID /
        CHAT2DESK_GROUP_ID). Repeating it is harmless, so a transfer in doubt is sent again."""
        body: dict[str, Any] = {}
        for key in ("operator_id", "group_id", "transport", "channel_id"):
            value = message.route.get(key)
            if value:
                body[key] = _json_id(value)
        if "operator_id" not in body and "group_id" not in body:
            raise PermanentError("chat2desk transfer: neither operator_id nor group_id given")
        client = quote(message.client_id, safe="")
        await self._call("POST", f"/clients/{client}/transfer", body)

    async def was_delivered(self, message: OutboundMessage, since: float) -> bool | None:
        """Look for the reply among the client's latest outgoing messages (``GET /messages``):
        the same text, created no earlier than a few seconds before ``since``. Used only for a
        reply whose send was cut off (crash, timeout), so it is neither lost nor doubled."""
        if message.kind != "text":
            return None  # a transfer leaves no message to look for; repeating it is harmless
        text = render_buttons(message.text, message.buttons)
        query = f"?client_id={_json_id(message.client_id)}&type=to_client&limit=20&order=desc"
        answer = await self._call("GET", "/messages" + query)
        rows = answer.get("data")
        if not isinstance(rows, list):
            return None
        for row in rows:
            if not isinstance(row, dict) or row.get("text") != text:
                continue
            created = _parse_time(row.get("created"))
            if created is None:
                return None  # cannot tell when it was sent: sending again is the safe side
            if created >= since - _CLOCK_SKEW:
                return True
        return False

    async def set_webhook(self, url: str) -> dict[str, Any]:
        """Point Chat2Desk's inbox webhook at ``url``; returns the API's answer."""
        return await self._call(
            "POST", "/webhooks", {"url": url, "name": "orderbot", "events": ["inbox"]}
        )

    async def api_info(self) -> dict[str, Any]:
        """The account's API usage and limits (``GET /companies/api_info``)."""
        return await self._call("GET", "/companies/api_info")

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, secret: str = ""
    ) -> dict[str, Any]:
        what = f"chat2desk {method} {path}"
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
