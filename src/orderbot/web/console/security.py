"""The console's guards: who is signed in (the session cookie), the CSRF token of every
state-changing request, and the headers every console response carries (a strict
Content-Security-Policy among them).

Without a session a page request is redirected to the login form and any other request gets
401 JSON; a POST without the session's CSRF token gets 403. Errors are
:class:`ConsoleError`, rendered as a page for browsers and as ``{"error", "message"}`` JSON
otherwise (:func:`wants_html`).
"""

from __future__ import annotations

import hmac
from typing import TypeVar
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from orderbot.web.console.sessions import Session

__all__ = [
    "COOKIE",
    "CSP",
    "LOGIN_COOKIE",
    "ConsoleError",
    "SignInRequired",
    "check_csrf",
    "console_headers",
    "login_redirect",
    "secure_cookie",
    "wants_html",
]

COOKIE = "orderbot_console"
LOGIN_COOKIE = "orderbot_login"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class ConsoleError(Exception):
    """An answer other than the page: ``status``, a code and a message for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class SignInRequired(ConsoleError):
    """No live session: a redirect to the login form for pages, 401 for everything else."""

    def __init__(self) -> None:
        super().__init__(401, "unauthorized", "sign in to the console first")


def wants_html(request: Request) -> bool:
    """A browser navigating (its Accept names HTML), not a script or an API client."""
    return "text/html" in request.headers.get("accept", "")


def login_redirect(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/console/login?next=" + quote(target, safe="")


def secure_cookie(request: Request, always: bool) -> bool:
    """Mark cookies Secure when configured or when the request came over https."""
    return always or request.url.scheme == "https"


def check_csrf(session: Session, form: FormData | None, request: Request) -> None:
    """403 unless the form field ``csrf_token`` (or the ``X-CSRF-Token`` header) is the
    session's token."""
    given = request.headers.get("x-csrf-token", "")
    if form is not None and not given:
        value = form.get("csrf_token")
        given = value if isinstance(value, str) else ""
    if not given or not hmac.compare_digest(given.encode(), session.csrf_token.encode()):
        raise ConsoleError(403, "csrf", "the form has expired or did not come from the console")


R = TypeVar("R", bound=Response)


def console_headers(response: R, *, cache: bool = False) -> R:
    """The headers of every console response."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    return response
