"""What ``orderbot run`` and ``orderbot serve`` add to uvicorn against slow or greedy clients.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 past
``limit_concurrency`` connections, but it waits forever for the headers of a request and lets
them grow without bound. :class:`GuardedHttpToolsProtocol` closes a connection whose request line
and headers have not all arrived within ``HTTP_HEADER_TIMEOUT`` seconds, and answers 431 to
headers over ``HTTP_MAX_HEADER_BYTES``. The body deadline (``HTTP_BODY_TIMEOUT``, 408) is kept by
:class:`orderbot.web.ingress.IngressApp`, whose :class:`~orderbot.web.ingress.HttpLimits` the
protocol reads too, so every server process (also under ``serve --workers N``) takes its limits
from the app it serves.
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
    """uvicorn's httptools protocol with a deadline and a size limit on request headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = _limits(self.app)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_headers = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # Still in the headers after the parser took all of it: every byte so far is header.
        if self._in_headers and self._header_bytes > self._limits.max_header_bytes:
            self._headers_done()
            if not self.transport.is_closing():
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._expect_headers()  # the next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._headers_done()
        super().on_headers_complete()

    def _expect_headers(self) -> None:
        self._in_headers = True
        if self._header_timer is None:
            self._header_bytes = 0
            self._header_timer = self.loop.call_later(
                self._limits.header_timeout, self._header_deadline
            )

    def _headers_done(self) -> None:
        self._in_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        self._in_headers = False
        if not self.transport.is_closing():
            self.transport.close()
