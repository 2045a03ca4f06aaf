"""The console's routes (``/console/...``) and ``GET /api/stats``: server-rendered pages, forms
that POST with the session's CSRF token and redirect back (post/redirect/get), a JSON poll for
new orders, the CSV export and file downloads.

Every page but the login needs a session (:mod:`orderbot.web.console.security`); the account
pages need the admin role (403 for operators). Status changes and handbacks go through the
profile's order admin, exactly as ``orderbot orders set-status`` and ``orderbot handback`` do,
with the operator's name as the actor.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.staticfiles import StaticFiles

from orderbot.config import Settings
from orderbot.desk.base import HandoffNotFound, OrderNotFound
from orderbot.errors import BackendUnavailable, StorageError
from orderbot.loggers import console as log
from orderbot.messages import OutboundMessage
from orderbot.orders.status import STATUSES, InvalidTransition, allowed_next
from orderbot.outbound import client_key, operator_reply_key
from orderbot.web.console.accounts import ROLES, AccountError
from orderbot.web.console.board import PAGE_SIZE, BoardFilter, BoardRow
from orderbot.web.console.charts import column_chart, row_chart
from orderbot.web.console.export import ExportFilter, export_csv
from orderbot.web.console.security import (
    COOKIE,
    LOGIN_COOKIE,
    ConsoleError,
    SignInRequired,
    check_csrf,
    console_headers,
    login_redirect,
    secure_cookie,
    wants_html,
)
from orderbot.web.console.services import ConsoleServices, services_for
from orderbot.web.console.sessions import Session
from orderbot.web.console.stats import Stats, parse_period, read_stats
from orderbot.web.console.status import read_alerts, read_status
from orderbot.web.console.summary import DailySummary, parse_time_of_day
from orderbot.web.console.takeover import take_over

__all__ = ["ConsoleLifecycle", "install_console"]

_HERE = Path(__file__).parent
_NONCE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_MAX_TEXT = 4000
_MAX_NOTE = 2000
_MAX_QUERY = 100
_ALERT_TITLES = {
    "dead_letter": "A reply could not be sent",
    "circuit_open": "A channel is failing",
    "webhook": "The Chat2Desk webhook does not work",
    "quota": "The API quota is used up",
}
_BANNER_EVERY = 5.0  # seconds between reads of the operations alerts for the banner
STATS_FRESH = 30.0


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["waited"] = _waited
    env.globals["status_label"] = _status_label
    env.globals["alert_titles"] = _ALERT_TITLES
    return env


def _status_label(status: str) -> str:
    return status.replace("_", " ")


def _waited(seconds: float) -> str:
    """``40 s``, ``5 min``, ``2 h 10 min``, ``3 d 4 h``."""
    if seconds < 60:
        return f"{max(0, int(seconds))} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _iso_ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _int(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


def _date(value: str, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConsoleError(422, "invalid", f"{field}: a date like 2026-12-31") from None


def _status(value: str | None) -> str | None:
    if not value:
        return None
    if value not in STATUSES:
        raise ConsoleError(422, "invalid", f"status: one of {', '.join(STATUSES)}")
    return value


def _text(form: FormData, name: str, limit: int, *, required: bool = True) -> str:
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        raise ConsoleError(422, "invalid", f"{name}: write something first")
    if len(text) > limit:
        raise ConsoleError(422, "invalid", f"{name}: at most {limit} characters")
    return text


@dataclass(frozen=True, slots=True)
class ConsoleLifecycle:
    """What the app's lifespan calls: ``start`` once the runtime is open (the daily summary's
    schedule), ``aclose`` before the runtime closes."""

    start: Callable[[], Awaitable[None]]
    aclose: Callable[[], Awaitable[None]]


def install_console(app: FastAPI, runtime: Any, settings: Settings) -> ConsoleLifecycle:
    """Add the console to ``app``. Its services are built when the app starts (or at the first
    request), once the runtime is open (the app's lifespan opens it)."""
    env = _environment()
    held: dict[str, ConsoleServices] = {}
    started = time.time()
    # The banner's alerts, read at most every few seconds (a Redis read on distributed).
    banner: dict[str, Any] = {"alerts": [], "read": 0.0}

    def services() -> ConsoleServices:
        found = held.get("services")
        if found is None:
            if getattr(runtime, "admin", None) is None:
                raise ConsoleError(503, "unavailable", "the console is not available here")
            found = held["services"] = services_for(runtime, settings)
        return found

    def render(
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        session: Session | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        svc = held.get("services")
        html = env.get_template(template).render(
            request=request,
            session=session,
            operator=session.operator if session else None,
            csrf=session.csrf_token if session else "",
            when=svc.shop.format if svc else str,
            zone=settings.shop_timezone,
            alerts=banner["alerts"] if session else [],
            **context,
        )
        return console_headers(HTMLResponse(html, status_code=status))

    async def signed_in(request: Request) -> Session:
        token = request.cookies.get(COOKIE, "")
        session = await services().sessions.load(token) if token else None
        if session is None:
            raise SignInRequired
        await refresh_banner()
        return session

    async def refresh_banner() -> None:
        now = time.monotonic()
        if now - banner["read"] < _BANNER_EVERY:
            return
        banner["read"] = now
        try:
            banner["alerts"] = await read_alerts(runtime, services().profile)
        except Exception as exc:  # the page matters more than its banner
            log.warning("console: alerts unavailable (%s)", type(exc).__name__)

    async def form_of(request: Request, session: Session | None) -> FormData:
        try:
            form = await request.form(max_files=0, max_fields=200)
        except Exception:  # malformed bodies of any kind (multipart errors, limits)
            raise ConsoleError(400, "bad_request", "the form could not be read") from None
        if session is not None:
            check_csrf(session, form, request)
        return form

    def back(path: str) -> RedirectResponse:
        return RedirectResponse(path, status_code=303)

    # -- errors ---------------------------------------------------------------------------

    async def on_console_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConsoleError)
        if isinstance(exc, SignInRequired) and wants_html(request) and request.method == "GET":
            return console_headers(RedirectResponse(login_redirect(request), status_code=303))
        if wants_html(request):
            return render(
                request,
                "error.html",
                {"status": exc.status, "message": exc.message},
                status=exc.status,
            )
        return console_headers(
            JSONResponse({"error": exc.code, "message": exc.message}, status_code=exc.status)
        )

    app.add_exception_handler(ConsoleError, on_console_error)

    router = APIRouter(include_in_schema=False)

    # -- sign in and out ------------------------------------------------------------------

    def _next(value: str) -> str:
        # Only paths of the console: never an open redirect to another site.
        return value if value.startswith("/console") and not value.startswith("//") else "/console"

    def login_page(
        request: Request, *, error: str = "", status: int = 200, name: str = "", target: str = ""
    ) -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        response = render(
            request,
            "login.html",
            {
                "error": error,
                "login_token": token,
                "name": name,
                "next": _next(target or request.query_params.get("next", "")),
            },
            status=status,
        )
        response.set_cookie(
            LOGIN_COOKIE,
            token,
            max_age=3600,
            path="/console/login",
            httponly=True,
            samesite="lax",
            secure=secure_cookie(request, settings.console_secure_cookie),
        )
        return response

    @router.get("/console/login")
    async def login_form(request: Request) -> Response:
        return login_page(request)

    @router.post("/console/login")
    async def login(request: Request) -> Response:
        svc = services()
        form = await form_of(request, None)
        # Login CSRF: the form's token must match its cookie (a page of ours set both).
        given, expected = form.get("login_token"), request.cookies.get(LOGIN_COOKIE, "")
        if not (
            isinstance(given, str)
            and expected
            and hmac.compare_digest(given.encode(), expected.encode())
        ):
            raise ConsoleError(403, "csrf", "the login form has expired; load it again")
        name = _text(form, "username", 64, required=False)
        password = form.get("password")
        target = str(form.get("next") or "")
        if not name or not isinstance(password, str) or not password:
            return login_page(request, error="Enter your name and password.", status=422, name=name)
        address = request.client.host if request.client else ""
        wait = await svc.throttle.retry_after(name, address)
        if wait is not None:
            response = login_page(
                request,
                error=f"Too many failed attempts. Try again in {_waited(wait + 59)}.",
                status=429,
                name=name,
            )
            response.headers["Retry-After"] = str(int(wait))
            return response
        operator = await svc.accounts.authenticate(name, password[:1024])
        if operator is None:
            await svc.throttle.failed(name, address)
            log.info("console: failed sign-in from %s", address)
            return login_page(
                request, error="Wrong name or password.", status=401, name=name, target=target
            )
        await svc.throttle.succeeded(name)
        token, _ = await svc.sessions.create(operator, address)
        signed = back(_next(target))
        signed.set_cookie(
            COOKIE,
            token,
            path="/",
            httponly=True,
            samesite="lax",
            secure=secure_cookie(request, settings.console_secure_cookie),
        )
        signed.delete_cookie(LOGIN_COOKIE, path="/console/login")
        return console_headers(signed)

    @router.post("/console/logout")
    async def logout(request: Request) -> Response:
        session = await signed_in(request)
        await form_of(request, session)
        await services().sessions.end(session.token_hash)
        response = back("/console/login")
        response.delete_cookie(COOKIE, path="/")
        return console_headers(response)

    # -- orders ---------------------------------------------------------------------------

    def board_filter(request: Request) -> tuple[BoardFilter, dict[str, str]]:
        svc = services()
        q = request.query_params
        shown = {k: q.get(k, "") for k in ("status", "from", "to", "q")}
        query = shown["q"].strip()
        if len(query) > _MAX_QUERY:
            raise ConsoleError(422, "invalid", f"q: at most {_MAX_QUERY} characters")
        first, last = _date(shown["from"], "from"), _date(shown["to"], "to")
        before = q.get("before", "")
        return (
            BoardFilter(
                status=_status(shown["status"]),
                since=svc.shop.start_of(first) if first else None,
                until=svc.shop.end_of(last) if last else None,
                query=query,
                before=_int(before) if before else None,
            ),
            shown,
        )

    @router.get("/console")
    async def orders_page(request: Request) -> Response:
        session = await signed_in(request)
        svc = services()
        wanted, shown = board_filter(request)
        rows = await svc.board.orders(wanted)
        filtered = any(shown.values()) or wanted.before is not None
        return render(
            request,
            "orders.html",
            {
                "rows": rows,
                "shown": shown,
                "statuses": STATUSES,
                "newest": await svc.board.newest_id(),
                "live": not filtered,
                "older": rows[-1].id if len(rows) == PAGE_SIZE else None,
                "handoff_count": await svc.board.handoff_count(),
                "open_counts": await svc.board.open_counts(),
            },
            session=session,
        )

    @router.get("/console/orders/new")
    async def new_orders(request: Request) -> Response:
        """Orders since ``after`` (the newest id the page has) as rows to insert: the board's
        poll."""
        await signed_in(request)
        after = _int(request.query_params.get("after", ""))
        if after is None:
            raise ConsoleError(422, "invalid", "after: the newest order id the page has")
        rows: list[BoardRow] = await services().board.orders_after(after)
        html = env.get_template("_rows.html").render(
            rows=rows, when=services().shop.format, status_label=_status_label
        )
        return console_headers(
            JSONResponse(
                {"count": len(rows), "newest": rows[0].id if rows else after, "html": html}
            )
        )

    async def order_or_404(order_id: str) -> tuple[int, dict[str, Any]]:
        number = _int(order_id)
        order = await services().admin.get(number) if number is not None else None
        if number is None or order is None:
            raise ConsoleError(404, "not_found", f"no order {order_id}")
        return number, order

    @router.get("/console/orders/{order_id}")
    async def order_page(request: Request, order_id: str) -> Response:
        session = await signed_in(request)
        svc = services()
        number, order = await order_or_404(order_id)
        return render(
            request,
            "order.html",
            {
                "order": order,
                "created": _iso_ts(order["created_at"]),
                "history": [{**h, "ts": _iso_ts(h["at"])} for h in order["history"]],
                "allowed": allowed_next(order["status"]),
                "conversation": await svc.board.conversation(order["channel"], order["client_id"]),
                "channel_of": order["channel"],
                "client_of": order["client_id"],
                "notes": await svc.board.notes(number),
                "handoff": await svc.board.handoff(order["channel"], order["client_id"]),
                "done": request.query_params.get("done", ""),
            },
            session=session,
        )

    @router.post("/console/orders/{order_id}/status")
    async def change_status(request: Request, order_id: str) -> Response:
        session = await signed_in(request)
        form = await form_of(request, session)
        number = _int(order_id)
        if number is None:
            raise ConsoleError(404, "not_found", f"no order {order_id}")
        wanted = form.get("status")
        if not isinstance(wanted, str) or wanted not in STATUSES:
            raise ConsoleError(422, "invalid", f"status: one of {', '.join(STATUSES)}")
        note = _text(form, "note", _MAX_NOTE, required=False)
        try:
            await services().admin.set_status(
                number,
                wanted,
                note=note,
                actor=session.operator.name,
                note_public=form.get("tell") == "1",
            )
        except OrderNotFound:
            raise ConsoleError(404, "not_found", f"no order {order_id}") from None
        except InvalidTransition as exc:
            raise ConsoleError(409, "invalid_transition", str(exc)) from None
        log.info("console: order %s -> %s by %s", number, wanted, session.operator.name)
        return back(f"/console/orders/{number}?done=status")

    @router.post("/console/orders/{order_id}/notes")
    async def add_note(request: Request, order_id: str) -> Response:
        session = await signed_in(request)
        form = await form_of(request, session)
        number = _int(order_id)
        text = _text(form, "text", _MAX_NOTE)
        svc = services()
        if number is None or not await svc.board.add_note(
            number, session.operator.name, text, svc.clock()
        ):
            raise ConsoleError(404, "not_found", f"no order {order_id}")
        return back(f"/console/orders/{number}?done=note#notes")

    @router.post("/console/orders/{order_id}/handoff")
    async def talk_to_customer(request: Request, order_id: str) -> Response:
        """Take the order's customer over from the bot and open their conversation."""
        session = await signed_in(request)
        await form_of(request, session)
        _, order = await order_or_404(order_id)
        channel, client_id = order["channel"], order["client_id"]
        if await take_over(runtime, services(), channel, client_id, operator=session.operator.name):
            log.info("console: %s took a conversation over", session.operator.name)
        return back(f"/console/handoffs/{channel}/{client_id}")

    @router.get("/console/orders/{order_id}/files/{position}")
    async def order_file(request: Request, order_id: str, position: str) -> Response:
        await signed_in(request)
        number, index = _int(order_id), _int(position)
        stored = (
            await services().board.file(number, index)
            if number is not None and index is not None
            else None
        )
        if stored is None:
            raise ConsoleError(404, "not_found", "no such file")
        path = Path(stored.path)
        if not await asyncio.to_thread(path.is_file):
            raise ConsoleError(404, "not_found", "the file is no longer stored")
        safe_name = re.sub(r"[^\w.\- ]", "_", stored.name)[:120] or f"model.{stored.format}"
        return console_headers(
            FileResponse(path, media_type="application/octet-stream", filename=safe_name)
        )

    @router.get("/console/orders.csv")
    async def orders_csv(request: Request) -> Response:
        await signed_in(request)
        svc = services()
        q = request.query_params
        first, last = _date(q.get("from", ""), "from"), _date(q.get("to", ""), "to")
        wanted = ExportFilter(
            since=svc.shop.start_of(first) if first else None,
            until=svc.shop.end_of(last) if last else None,
            status=_status(q.get("status")),
        )

        async def body() -> AsyncIterator[bytes]:
            async for chunk in export_csv(svc.runner, svc.shop, wanted):
                yield chunk.encode("utf-8")

        return console_headers(
            StreamingResponse(
                body(),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="orders.csv"'},
            )
        )

    # -- conversations with a person ------------------------------------------------------

    @router.get("/console/handoffs")
    async def handoffs_page(request: Request) -> Response:
        session = await signed_in(request)
        svc = services()
        return render(
            request,
            "handoffs.html",
            {"handoffs": await svc.board.handoffs(), "now": svc.clock()},
            session=session,
        )

    @router.get("/console/handoffs/{channel}/{client_id}")
    async def handoff_page(request: Request, channel: str, client_id: str) -> Response:
        session = await signed_in(request)
        svc = services()
        handoff = await svc.board.handoff(channel, client_id)
        conversation = await svc.board.conversation(channel, client_id)
        if handoff is None and not conversation:
            raise ConsoleError(404, "not_found", f"no conversation with {channel}:{client_id}")
        return render(
            request,
            "handoff.html",
            {
                "channel": channel,
                "client_id": client_id,
                "channel_of": channel,
                "client_of": client_id,
                "handoff": handoff,
                "conversation": conversation,
                "now": svc.clock(),
                "nonce": secrets.token_urlsafe(16),
                "done": request.query_params.get("done", ""),
            },
            session=session,
        )

    @router.get("/console/conversations/{channel}/{client_id}/messages")
    async def new_messages(request: Request, channel: str, client_id: str) -> Response:
        """Messages logged after ``after`` (the last log row the page shows), as items to
        append: the open conversation's poll."""
        await signed_in(request)
        after = _int(request.query_params.get("after", ""))
        if after is None:
            raise ConsoleError(422, "invalid", "after: the last message id the page has")
        found = await services().board.conversation(channel, client_id, 100, after=after)
        html = env.get_template("_messages.html").render(
            conversation=found, when=services().shop.format
        )
        return console_headers(
            JSONResponse(
                {"count": len(found), "last": found[-1].id if found else after, "html": html}
            )
        )

    @router.post("/console/handoffs/{channel}/{client_id}/reply")
    async def reply(request: Request, channel: str, client_id: str) -> Response:
        session = await signed_in(request)
        form = await form_of(request, session)
        text = _text(form, "text", _MAX_TEXT)
        nonce = form.get("nonce")
        if not isinstance(nonce, str) or not _NONCE.match(nonce):
            raise ConsoleError(422, "invalid", "nonce: reload the page and write again")
        svc = services()
        if await svc.board.handoff(channel, client_id) is None:
            raise ConsoleError(
                409, "not_handed_off", "the conversation is back with the bot; reply there"
            )
        # The form's nonce names the reply: a double submit queues it once.
        await svc.send_reply(
            OutboundMessage(
                key=operator_reply_key(client_key(channel, client_id), nonce),
                channel=channel,
                client_id=client_id,
                text=text,
                route=await svc.board.route(channel, client_id),
                created_at=svc.clock(),
            )
        )
        log.info("console: %s replied to a customer on %s", session.operator.name, channel)
        return back(f"/console/handoffs/{channel}/{client_id}?done=sent")

    @router.post("/console/handoffs/{channel}/{client_id}/handback")
    async def hand_back(request: Request, channel: str, client_id: str) -> Response:
        session = await signed_in(request)
        await form_of(request, session)
        try:
            await services().admin.handback(channel, client_id)
        except HandoffNotFound as exc:
            raise ConsoleError(404, "not_found", str(exc)) from None
        log.info("console: %s handed a conversation back to the bot", session.operator.name)
        return back("/console/handoffs?done=handback")

    # -- dead letters ---------------------------------------------------------------------

    @router.get("/console/dead-letters")
    async def dead_letters_page(request: Request) -> Response:
        session = await signed_in(request)
        letters = await services().dead_letters.list(200)
        shown = [{"letter": letter, "text": letter.text} for letter in letters]
        return render(
            request,
            "dead_letters.html",
            {"letters": shown, "done": request.query_params.get("done", "")},
            session=session,
        )

    async def dead_letter_action(
        request: Request, action: Callable[[list[int] | None], Awaitable[int]], done: str
    ) -> Response:
        session = await signed_in(request)
        form = await form_of(request, session)
        if form.get("all") == "1":
            ids: list[int] | None = None
        else:
            number = _int(str(form.get("id") or ""))
            if number is None:
                raise ConsoleError(422, "invalid", "id: a dead letter's number (or all=1)")
            ids = [number]
        count = await action(ids)
        if ids is not None and count == 0:
            raise ConsoleError(404, "not_found", "no such dead letter")
        return back(f"/console/dead-letters?done={done}")

    @router.post("/console/dead-letters/replay")
    async def replay(request: Request) -> Response:
        return await dead_letter_action(request, services().dead_letters.replay, "replayed")

    @router.post("/console/dead-letters/delete")
    async def delete(request: Request) -> Response:
        return await dead_letter_action(request, services().dead_letters.delete, "deleted")

    # -- numbers --------------------------------------------------------------------------

    # Numbers for a period change slowly and cost a scan of the period's rows: each period's
    # are kept for STATS_FRESH seconds (per process).
    computed: dict[float, tuple[float, Stats]] = {}

    async def stats_for(request: Request) -> tuple[Stats, str]:
        svc = services()
        period = request.query_params.get("period", "7d")
        try:
            seconds = parse_period(period)
        except ValueError as exc:
            raise ConsoleError(422, "invalid", str(exc)) from None
        now = svc.clock()
        fresh = computed.get(seconds)
        if fresh is not None and fresh[0] > now:
            return fresh[1], period
        found = await read_stats(svc.runner, svc.flow, svc.shop, since=now - seconds, until=now)
        if len(computed) > 32:
            computed.clear()
        computed[seconds] = (now + STATS_FRESH, found)
        return found, period

    @router.get("/console/stats")
    async def stats_page(request: Request) -> Response:
        session = await signed_in(request)
        found, period = await stats_for(request)
        return render(
            request,
            "stats.html",
            {
                "stats": found,
                "period": period,
                "periods": ("24h", "7d", "30d", "90d"),
                "per_day": column_chart(
                    [(d.strftime("%d.%m"), n) for d, n in found.orders_per_day]
                ),
                "funnel": row_chart([(s.step, s.reached) for s in found.steps]),
                "drops": row_chart([(s.step, s.dropped) for s in found.steps]),
            },
            session=session,
        )

    async def token_or_session(request: Request) -> None:
        """``Authorization: Bearer <ADMIN_TOKEN>`` or a console session; 401 otherwise."""
        given = request.headers.get("authorization", "")
        token = settings.admin_token
        bearer = given.removeprefix("Bearer ").strip() if given.startswith("Bearer ") else ""
        if not (token and bearer and hmac.compare_digest(bearer.encode(), token.encode())):
            await signed_in(request)

    @router.get("/api/stats", include_in_schema=True, tags=["admin"])
    async def api_stats(request: Request) -> Response:
        """The numbers of ``/console/stats`` as JSON (``?period=7d``); ``Authorization: Bearer
        <ADMIN_TOKEN>`` or a console session."""
        await token_or_session(request)
        found, _ = await stats_for(request)
        return JSONResponse(found.to_dict())

    @router.get("/status", include_in_schema=True, tags=["service"])
    async def status(request: Request) -> Response:
        """Version, profile, uptime, queue depths, the oldest waiting reply, dead letters (all
        and in the last hour), each channel's circuit breaker and last delivery error;
        ``null`` where this process cannot tell. ``ADMIN_TOKEN`` or a console session."""
        await token_or_session(request)
        return JSONResponse(await read_status(runtime, services(), started=started))

    # -- accounts (admins) ----------------------------------------------------------------

    async def admin_only(request: Request) -> Session:
        session = await signed_in(request)
        if not session.operator.is_admin:
            raise ConsoleError(403, "forbidden", "only an admin manages accounts")
        return session

    @router.get("/console/operators")
    async def operators_page(request: Request) -> Response:
        session = await admin_only(request)
        return render(
            request,
            "operators.html",
            {
                "accounts": await services().accounts.all_accounts(),
                "roles": ROLES,
                "done": request.query_params.get("done", ""),
            },
            session=session,
        )

    @router.post("/console/operators")
    async def operators_change(request: Request) -> Response:
        session = await admin_only(request)
        form = await form_of(request, session)
        accounts = services().accounts
        action, name = form.get("action"), str(form.get("name") or "")
        try:
            if action == "add":
                await accounts.add(
                    name, str(form.get("role") or ""), str(form.get("password") or "")
                )
            elif action == "password":
                await accounts.set_password(name, str(form.get("password") or ""))
            elif action in ("disable", "enable"):
                if name == session.operator.name:
                    raise ConsoleError(422, "invalid", "you cannot disable your own account")
                await accounts.set_disabled(name, action == "disable")
            else:
                raise ConsoleError(422, "invalid", "action: add, password, disable or enable")
        except AccountError as exc:
            status = {"exists": 409, "not_found": 404}.get(exc.code, 422)
            raise ConsoleError(status, exc.code, str(exc)) from None
        return back(f"/console/operators?done={action}")

    app.include_router(router)
    app.mount(
        "/console/static",
        StaticFiles(directory=_HERE / "static"),
        name="console-static",
    )

    async def on_storage_error(request: Request, exc: Exception) -> Response:
        retry_after = exc.retry_after if isinstance(exc, BackendUnavailable) else 5.0
        body = {"error": "unavailable", "message": "storage is unavailable; try again shortly"}
        return console_headers(
            JSONResponse(
                body, status_code=503, headers={"Retry-After": str(max(1, round(retry_after)))}
            )
        )

    if StorageError not in app.exception_handlers:
        app.add_exception_handler(StorageError, on_storage_error)

    schedules: list[DailySummary] = []

    async def start() -> None:
        at = parse_time_of_day(settings.daily_summary_at)
        channels = getattr(runtime, "channels", {}) or {}
        if at is None or not settings.admin_chats or getattr(runtime, "admin", None) is None:
            return
        if "telegram" not in channels:
            log.warning("DAILY_SUMMARY_AT is set, but the Telegram channel is not: no summary")
            return

        async def dead_letters() -> int:
            return int((await runtime.depths()).dead_letter)

        summary = DailySummary(services(), at=at, chats=settings.admin_chats, depth=dead_letters)
        summary.start()
        schedules.append(summary)

    async def aclose() -> None:
        while schedules:
            await schedules.pop().aclose()
        found = held.pop("services", None)
        if found is not None:
            await found.runner.aclose()

    return ConsoleLifecycle(start, aclose)
