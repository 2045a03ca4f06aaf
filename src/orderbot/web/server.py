"""What ``orderbot run`` and ``orderbot serve`` add to uvicorn against slow or greedy clients.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 past
``limit_concurrency`` connections, but it waits forever for the headers and the body of a
request, and lets headers grow without bound. :class:`GuardedHttpToolsProtocol` closes a
connection whose request line and headers have not all arrived within ``HTTP_HEADER_TIMEOUT``
seconds, answers 431 to headers over ``HTTP_MAX_HEADER_BYTES``, and answers 408 and closes the
connection when the body has not all arrived ``HTTP_BODY_TIMEOUT`` seconds after the headers
(the app then reads ``http.disconnect``). Timers are armed only while a request is incomplete
after a read, so the usual request, whole in one packet, costs none. The limits are the
:class:`~orderbot.web.ingress.HttpLimits` of the app being served, so every server process (also
under ``serve --workers N``) takes them from the app it builds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from orderbot.config import Settings
from orderbot.web.ingress import HttpLimits

__all__ = ["GuardedHttpToolsProtocol", "http_options"]

_TOO_LARGE_BODY = b'{"error": "headers_too_large", "message": "request headers are too large"}'
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


_TIMEOUT_BODY = b'{"error": "request_timeout", "message": "the request body came too slowly"}'
_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


def http_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options for HTTP limits (the rest of ``run``'s and ``serve``'s options are
    theirs)."""
    return {
        "http": GuardedHttpToolsProtocol,
        "timeout_keep_alive": settings.http_keep_alive_timeout,
        "limit_concurrency": settings.http_max_connections,
    }


def _limits(app: Any) -> HttpLimits:
    """The HttpLimits of the served app (IngressApp), through any middleware uvicorn wrapped it
    in; the defaults when there are none."""
    for _ in range(8):
        limits = getattr(app, "limits", None)
        if isinstance(limits, HttpLimits):
            return limits
        app = getattr(app, "app", None)
        if app is None:
            break
    return HttpLimits()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines on request headers and bodies and a size
    limit on headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = _limits(self.app)
        self._timer: asyncio.TimerHandle | None = None  # header or body deadline
        self._header_bytes = 0
        self._in_headers = False
        self._in_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_headers = True
        self._arm(self._limits.header_timeout)  # a silent connection is cut off too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._in_headers:
            # Still in the headers after the parser took all of it: every byte so far is header.
            if self._header_bytes > self._limits.max_header_bytes:
                self._disarm()
                self.transport.write(_TOO_LARGE)
                self.transport.close()
            elif self._timer is None:
                self._arm(self._limits.header_timeout)
        elif self._in_body and self._timer is None:
            self._arm(self._limits.body_timeout)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True  # also the next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._in_body = True
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._timer = self.loop.call_later(seconds, self._deadline)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._in_body and (self.cycle is None or not self.cycle.response_started):
            self.transport.write(_TIMEOUT)
        self.transport.close()
