"""Webhook ingress: authenticate, validate, parse, store durably, and only then answer 200.

This is the hot path (thousands of requests a second), so it is plain ASGI: no routing table,
no middleware stack, no dependency injection. :class:`IngressApp` serves ``POST /webhook/...``
itself and passes everything else to the FastAPI app, which also documents the webhook routes
in OpenAPI and serves them through the same :meth:`WebhookIngress.handle`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from orderbot.channels.base import Channel
from orderbot.errors import (
    BackendUnavailable,
    MalformedPayload,
    PayloadError,
    PayloadTooLarge,
    StorageError,
    UnsupportedMediaType,
)
from orderbot.loggers import ingress as log
from orderbot.metrics import WEBHOOKS
from orderbot.queues.base import InboundQueue

__all__ = [
    "MAX_BODY_BYTES",
    "HttpLimits",
    "IngressApp",
    "SignatureCheck",
    "WebhookIngress",
    "WebhookResponse",
]

MAX_BODY_BYTES = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_OK = orjson.dumps({"success": True})
_DUPLICATE = orjson.dumps({"success": True, "duplicate": True})
_IGNORED = orjson.dumps({"success": True, "ignored": True})
_NOT_FOUND = orjson.dumps({"success": False, "error": "not_found", "message": "no such webhook"})


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How long and how much a client may take to send a request (HTTP_* settings), kept by
    the server's protocol (:mod:`orderbot.web.server`), which finds them on the app."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """Chat2Desk's optional HMAC: hex HMAC-SHA256, key md5(api token), over raw body + timestamp.
    The timestamp (unix seconds) must be within ``tolerance`` seconds of our clock, either way,
    so a captured request cannot be replayed later."""

    header: str
    timestamp_header: str
    key: bytes
    tolerance: float = 300.0

    @classmethod
    def for_token(
        cls, token: str, header: str, timestamp_header: str, *, tolerance: float = 300.0
    ) -> SignatureCheck:
        key = hashlib.md5(token.encode(), usedforsecurity=False).hexdigest().encode()
        return cls(
            header=header.lower(),
            timestamp_header=timestamp_header.lower(),
            key=key,
            tolerance=tolerance,
        )

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> bool:
        signature = headers.get(self.header, "")
        timestamp = headers.get(self.timestamp_header, "")
        expected = hmac.new(self.key, body + timestamp.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.strip().lower(), expected):
            return False
        try:
            moment = float(timestamp)
        except ValueError:
            return False
        current = time.time() if now is None else now
        return math.isfinite(moment) and abs(current - moment) <= self.tolerance


class WebhookIngress:
    """Turns one webhook request into a stored InboundMessage and an HTTP answer."""

    def __init__(
        self,
        queue: InboundQueue,
        channels: Mapping[str, Channel],
        *,
        secret: str = "",
        signatures: Mapping[str, SignatureCheck] | None = None,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self._queue = queue
        self._channels = dict(channels)
        self._secret = secret
        self._signatures = dict(signatures or {})
        # Only channels with their own check (e.g. Telegram's secret header) cost a call here.
        self._authenticators = {
            name: channel.authenticate
            for name, channel in self._channels.items()
            if type(channel).authenticate is not Channel.authenticate
        }
        self.max_body = max_body
        # Resolved once: prometheus label lookups cost more than the rest of a counter bump.
        self._counters = {
            (name, result): WEBHOOKS.labels(name, result)
            for name in self._channels
            for result in ("stored", "duplicate", "ignored", "rejected", "unavailable")
        }

    def route(self, path: str) -> str | None:
        """The channel a webhook path addresses, or None (404). With a secret configured only
        ``/webhook/<channel>/<secret>`` matches, compared in constant time."""
        rest = path[len("/webhook/") :] if path.startswith("/webhook/") else None
        if not rest:
            return None
        name, _, given = rest.partition("/")
        if name not in self._channels:
            return None
        if self._secret:
            if not hmac.compare_digest(given.encode(), self._secret.encode()):
                return None
        elif given:
            return None
        return name

    async def handle(
        self, channel_name: str, content_type: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResponse:
        channel = self._channels[channel_name]
        authenticate = self._authenticators.get(channel_name)
        if authenticate is not None and not authenticate(headers):
            self._counters[channel_name, "rejected"].inc()
            return _json(401, {"success": False, "error": "unauthorized"})
        try:
            if len(body) > self.max_body:
                raise PayloadTooLarge(f"body is over {self.max_body} bytes")
            if content_type.split(";", 1)[0].strip().lower() != "application/json":
                raise UnsupportedMediaType("Content-Type must be application/json")
            check = self._signatures.get(channel_name)
            if check is not None and not check.verify(headers, body):
                self._counters[channel_name, "rejected"].inc()
                return _json(401, {"success": False, "error": "bad_signature"})
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise MalformedPayload(f"body is not valid JSON: {exc.args[0]}") from None
            message = channel.parse_webhook(payload, received_at=time.time())
        except PayloadError as exc:
            self._counters[channel_name, "rejected"].inc()
            log.debug("rejected %s webhook: %s", channel_name, exc.message)
            return WebhookResponse(exc.status, orjson.dumps(exc.to_json()))
        if message is None:
            self._counters[channel_name, "ignored"].inc()
            return WebhookResponse(200, _IGNORED)
        try:
            stored = await self._queue.put(message)
        except BackendUnavailable as exc:
            return self._unavailable(channel_name, exc.retry_after)
        except StorageError:
            log.exception("cannot store a %s webhook", channel_name)
            return self._unavailable(channel_name, 5.0)
        self._counters[channel_name, "stored" if stored else "duplicate"].inc()
        return WebhookResponse(200, _OK if stored else _DUPLICATE)

    def _unavailable(self, channel_name: str, retry_after: float) -> WebhookResponse:
        self._counters[channel_name, "unavailable"].inc()
        return WebhookResponse(
            503,
            orjson.dumps({"success": False, "error": "unavailable", "message": "try again later"}),
            ((b"retry-after", str(max(1, round(retry_after))).encode()),),
        )


def _json(status: int, body: dict[str, Any]) -> WebhookResponse:
    return WebhookResponse(status, orjson.dumps(body))


class IngressApp:
    """ASGI entry: ``POST /webhook/...`` on the lean path, the rest to ``app``. ``limits`` are
    the HTTP limits of this app, kept by the server's protocol (:mod:`orderbot.web.server`)."""

    def __init__(
        self,
        app: ASGIApp,
        ingress: Callable[[], WebhookIngress | None],
        limits: HttpLimits | None = None,
    ) -> None:
        self.app = app
        self._ingress = ingress  # resolved per request: built by the app's lifespan
        self.limits = limits or HttpLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/webhook/"):
            await self.app(scope, receive, send)
            return
        ingress = self._ingress()
        if ingress is None:
            await _respond(
                send, WebhookResponse(503, orjson.dumps({"success": False, "error": "starting"}))
            )
            return
        name = ingress.route(scope["path"])
        if name is None:
            await _drain(receive)
            await _respond(send, WebhookResponse(404, _NOT_FOUND))
            return
        if scope["method"] != "POST":
            await _drain(receive)
            await _respond(
                send,
                WebhookResponse(
                    405,
                    orjson.dumps({"success": False, "error": "method_not_allowed"}),
                    ((b"allow", b"POST"),),
                ),
            )
            return
        content_type = ""
        headers: dict[str, str] = {}
        declared = 0
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value.decode("latin-1")
            elif key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
            else:
                headers[key.decode("latin-1")] = value.decode("latin-1")
        if declared > ingress.max_body:
            await _respond(send, _error(PayloadTooLarge(f"body is over {ingress.max_body} bytes")))
            return
        body = await _read_body(receive, ingress.max_body)
        if body is _GONE:
            return  # the client left (or was cut off by the body deadline): nothing to answer
        if body is None:
            await _respond(send, _error(PayloadTooLarge(f"body is over {ingress.max_body} bytes")))
            return
        await _respond(send, await ingress.handle(name, content_type, headers, body))


def _error(exc: PayloadError) -> WebhookResponse:
    return WebhookResponse(exc.status, orjson.dumps(exc.to_json()))


_GONE = b"\x00gone"  # a sentinel no JSON body can be


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body; None past ``limit``; ``_GONE`` when the client disconnected first."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if message["type"] == "http.disconnect":
            return _GONE
        return body if len(body) <= limit else None
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            return _GONE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _drain(receive: Receive) -> None:
    message = await receive()
    while message.get("more_body", False):
        message = await receive()


async def _respond(send: Send, response: WebhookResponse) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(response.body)).encode()),
                *response.headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": response.body})
