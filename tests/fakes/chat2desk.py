"""A fake Chat2Desk API server: serves the documented API only, records what it was sent and
fails on demand.

Every route and field has its source in a comment; the sources are listed in
``docs/chat2desk-api.md`` (S1..S10). A route the real API lacks answers 404 with Chat2Desk's
"Page not found" (the text dgolovachev/Chat2DeskClient's CheckResponse looks for).

Three ways to run it:

* in the test's event loop: ``async with FakeChat2Desk() as fake: ... fake.url ... fake.received``
* in a background thread (sync code, another loop): ``with ThreadedFakeChat2Desk() as fake:``
* as a process (crash tests, benchmarks)::

      python -m tests.fakes.chat2desk --port 8099   # --port 0 picks a free port
      # prints "fake chat2desk listening on http://127.0.0.1:8099/v1" once it accepts requests

  and, over HTTP: ``GET /_received`` (what was accepted, plus counters), ``DELETE /_received``
  (forget it all, failures too), ``POST /_control`` with a JSON object, e.g.
  ``{"fail_next": 3, "status": 500}``, ``{"rate_limit_next": 2, "retry_after": 1}``,
  ``{"hang_next": 1, "hang_seconds": 30}``, ``{"fail_client": "12", "status": 500}``,
  ``{"failure_rate": 0.1, "seed": 7, "status": 503}``, ``{"quota_next": 2, "monthly": false}``,
  ``{"token": "secret"}``, ``{"reset": true}``.

API endpoints, under ``/v1``: ``POST /messages`` and ``GET /messages``,
``GET /messages/{id}/transfer?operator_id=`` and ``GET /messages/{id}/transfer_to_group?group_id=``
(recorded in ``transfers``), ``PUT /dialogs/{id}``, ``GET /clients/{id}``, ``GET|POST /webhooks``,
``PUT /webhooks/{id}``, ``GET /companies/api_info``.
``received`` holds the JSON bodies of accepted ``POST /v1/messages`` requests, each with an extra
``"authorization"`` key (the header as sent); ``attempts`` counts every ``POST /v1/messages``,
failed ones included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["FakeChat2Desk", "FakeState", "ThreadedFakeChat2Desk", "main"]

# dgolovachev/Chat2DeskClient (S4) CheckResponse: the texts Chat2Desk answers with.
PAGE_NOT_FOUND = "Page not found"
QUOTA_REQUESTS = "Number of API requests exceeded"
QUOTA_MONTHLY = "API calls exceeded API limit per month"
MAX_WEBHOOKS = 5  # webhooks (POST), S3: "up to 5 webhooks are allowed"


@dataclass
class _Action:
    kind: str  # "fail" | "rate_limit" | "hang" | "quota"
    status: int = 500
    retry_after: float | None = 1.0
    seconds: float = 30.0
    text: str = ""


def _int_or_str(value: Any) -> Any:
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() else text


def _utc(ts: float) -> str:
    # ``created`` as Chat2Desk writes it: ``2025-04-03T11:50:06 UTC``.
    return time.strftime("%Y-%m-%dT%H:%M:%S UTC", time.gmtime(ts))


class FakeState:
    """What the fake received and how it should misbehave next. Shared by all ways to run it."""

    def __init__(self, *, token: str | None = None) -> None:
        self.token = token
        self.received: list[dict[str, Any]] = []
        self.received_at: list[float] = []  # unix time each of ``received`` was accepted
        # Every message the fake knows, by id: the bot's sends and clients' messages made with
        # :meth:`client_says` / operators' with :meth:`operator_says` (S6 Message fields).
        self.messages: dict[int, dict[str, Any]] = {}
        self.webhooks: list[dict[str, Any]] = []  # registered hooks (S3 fields + id/status)
        self.transfers: list[dict[str, Any]] = []  # GET /messages/{id}/transfer* calls
        self.dialog_updates: list[dict[str, Any]] = []  # PUT /dialogs/{id} bodies
        self.clients: dict[str, dict[str, Any]] = {}  # GET /clients/{id} answers
        self.attempts = 0
        self.requests: list[tuple[str, str]] = []  # (method, path?query) of every API call
        self.omit_total = False  # answer GET /messages without meta.total
        self._actions: deque[_Action] = deque()
        self._failing_clients: dict[str, int] = {}
        self._failure_rate = 0.0
        self._failure_status = 500
        self._random = random.Random(0)
        self._next_id = 1
        self._next_hook = 1
        self.closing = asyncio.Event()

    # failure controls

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` message requests with ``status`` (200 means a 200 carrying
        ``{"status": "error"}``, as Chat2Desk does for some refusals)."""
        self._actions.extend(_Action("fail", status=status) for _ in range(n))

    def rate_limit_next(self, n: int = 1, retry_after: float | None = 1.0) -> None:
        """Answer the next ``n`` message requests with 429 (no Retry-After header when None)."""
        self._actions.extend(_Action("rate_limit", retry_after=retry_after) for _ in range(n))

    def quota_next(self, n: int = 1, *, monthly: bool = False, status: int = 200) -> None:
        """Answer the next ``n`` message requests with Chat2Desk's quota text (S4): real
        clients match the text whatever the status, so the status is a parameter."""
        text = QUOTA_MONTHLY if monthly else QUOTA_REQUESTS
        self._actions.extend(_Action("quota", status=status, text=text) for _ in range(n))

    def hang_next(self, n: int = 1, seconds: float = 30.0) -> None:
        """Hold the next ``n`` message requests for ``seconds`` (past the client's timeout),
        then answer 200 without recording them."""
        self._actions.extend(_Action("hang", seconds=seconds) for _ in range(n))

    def fail_client(self, client_id: str | int, status: int = 500) -> None:
        """Fail every message to ``client_id`` with ``status`` until :meth:`reset`."""
        self._failing_clients[str(client_id)] = status

    def set_failure_rate(self, rate: float, *, seed: int = 0, status: int = 500) -> None:
        """Fail each message request with probability ``rate`` (seeded, so runs repeat)."""
        self._failure_rate = rate
        self._failure_status = status
        self._random = random.Random(seed)

    def disable_webhook(self, error: str = "Connection refused") -> None:
        """What Chat2Desk does after 5 hours of failed deliveries (S3): the hook is disabled,
        its errors say why."""
        for hook in self.webhooks:
            hook["status"] = "disabled"
            hook["errors"] = [*hook.get("errors", []), error]

    def reset(self) -> None:
        """Forget what was received and every failure setting."""
        self.received.clear()
        self.received_at.clear()
        self.messages.clear()
        self.webhooks.clear()
        self.transfers.clear()
        self.dialog_updates.clear()
        self.requests.clear()
        self.attempts = 0
        self._actions.clear()
        self._failing_clients.clear()
        self._failure_rate = 0.0

    def texts(self, client_id: str | int | None = None) -> list[str]:
        """Texts received, optionally for one client, in arrival order."""
        wanted = None if client_id is None else str(client_id)
        return [b["text"] for b in self.received if wanted is None or str(b["client_id"]) == wanted]

    # the other side of the desk: payloads Chat2Desk would post to the bot's webhook

    def _store(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {"id": self._next_id, "created": _utc(time.time()), **row}
        self._next_id += 1
        self.messages[row["id"]] = row
        return row

    def client_says(
        self, client_id: str | int, text: str, *, transport: str = "whatsapp", channel_id: int = 3
    ) -> dict[str, Any]:
        """A client's message: stored, and returned as the ``inbox`` webhook payload (S3)."""
        row = self._store(
            {
                "text": text,
                "type": "from_client",
                "client_id": _int_or_str(client_id),
                "transport": transport,
                "channel_id": channel_id,
            }
        )
        return self._event("inbox", row)

    def operator_says(
        self,
        client_id: str | int,
        text: str,
        *,
        operator_id: int = 41164,
        transport: str = "whatsapp",
    ) -> dict[str, Any]:
        """An operator's message from the desk: returned as the ``outbox`` payload (S3)."""
        row = self._store(
            {
                "text": text,
                "type": "to_client",
                "client_id": _int_or_str(client_id),
                "operator_id": operator_id,
                "transport": transport,
                "channel_id": 3,
            }
        )
        return self._event("outbox", row)

    def outbox_echo(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``outbox`` event Chat2Desk sends for a message the bot posted (S3: every message
        to a client), its ``type`` as sent (S2)."""
        for row in self.messages.values():
            if row.get("external_id") == body.get("external_id") and row["text"] == body["text"]:
                return self._event("outbox", row)
        raise KeyError("no such message was sent")

    def close_request(self, client_id: str | int, *, request_id: int = 8725095) -> dict[str, Any]:
        """The ``close_request`` event (S3/S8 name it; fields as in the other events)."""
        return {
            "hook_type": "close_request",
            "client_id": _int_or_str(client_id),
            "request_id": request_id,
            "dialog_id": 4324035,
            "event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def _event(self, hook_type: str, row: dict[str, Any]) -> dict[str, Any]:
        # inbox/outbox example data (S3): message_id, type, text, transport, client_id,
        # operator_id, dialog_id, channel_id, client{...}, hook_type, request_id, event_time.
        client_id = row["client_id"]
        known = self.clients.get(str(client_id), {})
        return {
            "message_id": row["id"],
            "type": row["type"],
            "text": row["text"],
            "transport": row.get("transport", "whatsapp"),
            "client_id": client_id,
            "operator_id": row.get("operator_id"),
            "dialog_id": 4324035,
            "channel_id": row.get("channel_id", 3),
            "photo": None,
            "coordinates": None,
            "audio": None,
            "pdf": None,
            "client": {
                "id": client_id,
                "phone": known.get("phone", ""),
                "client_phone": known.get("client_phone", ""),
                "name": known.get("name", ""),
                "assigned_name": "",
                "external_id": None,
            },
            "hook_type": hook_type,
            "request_id": 8725095,
            "attachments": [],
            "is_new_request": 0,
            "is_new_client": 0,
            "extra_data": {},
            "event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def control(self, command: dict[str, Any]) -> None:
        """Apply a ``POST /_control`` body (see the module docstring)."""
        status = int(command.get("status", 500))
        if command.get("reset"):
            self.reset()
        if "token" in command:
            self.token = command["token"]
        if "fail_next" in command:
            self.fail_next(int(command["fail_next"]), status=status)
        if "rate_limit_next" in command:
            self.rate_limit_next(int(command["rate_limit_next"]), command.get("retry_after", 1))
        if "quota_next" in command:
            self.quota_next(
                int(command["quota_next"]),
                monthly=bool(command.get("monthly")),
                status=int(command.get("status", 200)),
            )
        if "hang_next" in command:
            self.hang_next(int(command["hang_next"]), float(command.get("hang_seconds", 30)))
        if "fail_client" in command:
            self.fail_client(command["fail_client"], status=status)
        if "disable_webhook" in command:
            self.disable_webhook(str(command["disable_webhook"]))
        if "failure_rate" in command:
            self.set_failure_rate(
                float(command["failure_rate"]), seed=int(command.get("seed", 0)), status=status
            )

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "received_at": self.received_at,
            "count": len(self.received),
            "attempts": self.attempts,
            "webhooks": self.webhooks,
            "transfers": self.transfers,
            "pending_failures": len(self._actions),
        }

    # request handling

    def _authorized(self, request: Request) -> bool:
        # General information (S10): "Authorization: <token>", no scheme.
        self.requests.append((request.method, str(request.url.path) + _query(request)))
        return self.token is None or request.headers.get("authorization") == self.token

    @staticmethod
    def _unauthorized() -> Response:
        # S4 CheckResponse: "You need to auth" (status not documented; 401 here).
        return JSONResponse({"status": "error", "message": "You need to auth"}, status_code=401)

    async def post_message(self, request: Request) -> Response:
        """``POST /v1/messages`` (S2, S4, S6)."""
        self.attempts += 1
        if not self._authorized(request):
            return self._unauthorized()
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"status": "error", "message": "invalid JSON"}, status_code=400)
        # client_id required; text required without attachment/pdf (S2).
        if not isinstance(body, dict) or "client_id" not in body or "text" not in body:
            return JSONResponse(
                {"status": "error", "message": "client_id and text are required"}, status_code=400
            )
        # type: to_client (default) | autoreply | system | comment (S2, S6).
        message_type = body.get("type", "to_client")
        if message_type not in ("to_client", "autoreply", "system", "comment"):
            return JSONResponse({"status": "error", "message": "wrong type"}, status_code=400)
        failure = self._failure_for(str(body["client_id"]))
        if failure is not None:
            return await self._fail(failure)
        body["authorization"] = request.headers.get("authorization")
        self.received.append(body)
        self.received_at.append(time.time())
        row = self._store(
            {
                "text": body["text"],
                "type": message_type,
                "client_id": body["client_id"],
                "transport": body.get("transport", "widget"),
                "channel_id": body.get("channel_id"),
                "external_id": body.get("external_id"),  # stored with the message (S2)
            }
        )
        # Answer fields: S6 SendMessage struct.
        return JSONResponse(
            {
                "status": "success",
                "data": {
                    "message_id": row["id"],
                    "channel_id": body.get("channel_id"),
                    "operator_id": None,
                    "transport": body.get("transport", "widget"),
                    "type": message_type,
                    "client_id": body["client_id"],
                    "dialog_id": 1,
                    "request_id": 1,
                },
            }
        )

    def _failure_for(self, client_id: str) -> _Action | None:
        if self._actions:
            return self._actions.popleft()
        status = self._failing_clients.get(client_id)
        if status is not None:
            return _Action("fail", status=status)
        if self._failure_rate and self._random.random() < self._failure_rate:
            return _Action("fail", status=self._failure_status)
        return None

    async def _fail(self, action: _Action) -> Response:
        if action.kind == "hang":
            # Ends early when the server shuts down, so a hung request never delays a test's exit.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), action.seconds)
            return JSONResponse({"status": "success", "data": {}})
        if action.kind == "quota":
            return JSONResponse(
                {"status": "error", "message": action.text}, status_code=action.status
            )
        if action.kind == "rate_limit":
            headers = (
                {} if action.retry_after is None else {"Retry-After": f"{action.retry_after:g}"}
            )
            return JSONResponse(
                {"status": "error", "message": "Too many requests"},
                status_code=429,
                headers=headers,
            )
        if action.status == 200:
            return JSONResponse({"status": "error", "message": "Client not found"})
        return JSONResponse(
            {"status": "error", "message": f"fake failure {action.status}"},
            status_code=action.status,
        )

    async def list_messages(self, request: Request) -> Response:
        """``GET /v1/messages``: the filters real clients send (S4 GetMessages, S5
        MessagesGetServiceRequest): transport, channel_id, client_id, type, dialog_id, read,
        offset, limit (default 20, at most 200: S10). Oldest first; ``meta.total`` counts all
        matches. There is no sort parameter (``order``) in any source: it is rejected here."""
        if not self._authorized(request):
            return self._unauthorized()
        params = request.query_params
        unknown = set(params) - {
            "transport",
            "channel_id",
            "client_id",
            "type",
            "dialog_id",
            "read",
            "offset",
            "limit",
        }
        if unknown:
            return JSONResponse(
                {"status": "error", "message": f"unknown parameter {sorted(unknown)[0]}"},
                status_code=400,
            )
        rows = [
            row
            for row in self.messages.values()
            if all(
                str(row.get(name)) == params[name]
                for name in ("client_id", "type", "transport", "channel_id")
                if name in params
            )
        ]
        offset = int(params.get("offset", "0"))
        limit = min(int(params.get("limit", "20")), 200)
        # Message fields: S6 Message struct (id, text, type, transport, created, client_id ...).
        data = [
            {k: v for k, v in row.items() if k != "external_id"}
            for row in rows[offset : offset + limit]
        ]
        meta = {"total": len(rows), "limit": limit, "offset": offset}
        if self.omit_total:
            del meta["total"]
        return JSONResponse({"data": data, "meta": meta, "status": "success"})

    async def transfer(self, request: Request) -> Response:
        """``GET /v1/messages/{id}/transfer?operator_id=`` (S6, S7: GET with a query string) and
        ``GET /v1/messages/{id}/transfer_to_group?group_id=`` (S6); ``force_assign`` since
        2025-07-30 (S1 changelog)."""
        if not self._authorized(request):
            return self._unauthorized()
        to_group = request.url.path.endswith("/transfer_to_group")
        field = "group_id" if to_group else "operator_id"
        value = request.query_params.get(field)
        if not value:
            # S6 reads "operator ... not found" / "operator group ... not found" from the body.
            what = "Operator group" if to_group else "Operator"
            return JSONResponse({"status": "error", "message": f"{what} not found"})
        message_id = request.path_params["message_id"]
        row = self.messages.get(int(message_id)) if message_id.isdigit() else None
        record: dict[str, Any] = {
            "message_id": message_id,
            field: _int_or_str(value),
            "client_id": None if row is None else str(row["client_id"]),
        }
        if "force_assign" in request.query_params:
            record["force_assign"] = request.query_params["force_assign"]
        self.transfers.append(record)
        return JSONResponse({"status": "success", "data": []})

    async def update_dialog(self, request: Request) -> Response:
        """``PUT /v1/dialogs/{id}`` with ``operator_id`` and/or ``state`` open|closed (S4
        UpdateDialog; ``force_assign`` since 2025-07-30, S1)."""
        if not self._authorized(request):
            return self._unauthorized()
        body = await request.json()
        if not isinstance(body, dict) or not ({"operator_id", "state"} & set(body)):
            return JSONResponse({"status": "error", "message": "nothing to update"}, 400)
        self.dialog_updates.append({"dialog_id": request.path_params["dialog_id"], **body})
        return JSONResponse({"status": "success"})

    async def get_client(self, request: Request) -> Response:
        """``GET /v1/clients/{id}`` (S4 GetClient): id, phone ("[tg] 807892" on Telegram, S3),
        client_phone, name, assigned_name, external_id."""
        if not self._authorized(request):
            return self._unauthorized()
        client_id = request.path_params["client_id"]
        known = self.clients.get(client_id)
        if known is None:
            return JSONResponse({"status": "error", "message": "Client not found"})
        return JSONResponse({"data": {"id": _int_or_str(client_id), **known}, "status": "success"})

    async def list_webhooks(self, request: Request) -> Response:
        """``GET /v1/webhooks`` (S3: "use webhooks (GET) and look at its errors")."""
        if not self._authorized(request):
            return self._unauthorized()
        return JSONResponse({"data": self.webhooks, "status": "success"})

    async def create_webhook(self, request: Request) -> Response:
        """``POST /v1/webhooks`` with name, url, events (S3); at most 5 hooks (S3)."""
        if not self._authorized(request):
            return self._unauthorized()
        body = await request.json()
        if not isinstance(body, dict) or not body.get("url") or not body.get("events"):
            return JSONResponse({"status": "error", "message": "url and events are required"})
        if len(self.webhooks) >= MAX_WEBHOOKS:
            return JSONResponse({"status": "error", "message": "Too many webhooks"})
        hook = {
            "id": self._next_hook,
            "name": body.get("name", ""),
            "url": body["url"],
            "events": list(body["events"]),
            "status": "enabled",
            "errors": [],
        }
        self._next_hook += 1
        self.webhooks.append(hook)
        return JSONResponse({"status": "success", "data": hook})

    async def update_webhook(self, request: Request) -> Response:
        """``PUT /v1/webhooks/{id}`` (issue 17; same fields as POST). Updating a hook enables
        it again (unconfirmed: the fake's choice)."""
        if not self._authorized(request):
            return self._unauthorized()
        body = await request.json()
        hook_id = request.path_params["hook_id"]
        for hook in self.webhooks:
            if str(hook["id"]) == hook_id:
                for field in ("name", "url", "events"):
                    if field in body:
                        hook[field] = body[field]
                hook["status"] = "enabled"
                hook["errors"] = []
                return JSONResponse({"status": "success", "data": hook})
        return JSONResponse({"status": "error", "message": "Webhook not found"}, status_code=404)

    async def api_info(self, request: Request) -> Response:
        """``GET /v1/companies/api_info`` (S9 table of contents; S4 api_info fields: API version,
        access level, requests this month, channels, hook)."""
        if not self._authorized(request):
            return self._unauthorized()
        return JSONResponse(
            {
                "data": {
                    "hooks": len(self.webhooks),
                    "api_requests": self.attempts,
                    "requests_limit": 100000,
                    "company_name": "fake",
                },
                "status": "success",
            }
        )

    # control endpoints (for a fake running in another process)

    async def get_received(self, request: Request) -> Response:
        return JSONResponse(self.snapshot())

    async def get_count(self, request: Request) -> Response:
        return JSONResponse({"count": len(self.received), "attempts": self.attempts})

    async def delete_received(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"status": "success"})

    async def post_control(self, request: Request) -> Response:
        command = await request.json()
        if not isinstance(command, dict):
            return JSONResponse({"status": "error", "message": "expected an object"}, 400)
        self.control(command)
        return JSONResponse({"status": "success"})


def _query(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


async def _not_found(request: Request, exc: Exception) -> Response:
    # Anything the real API lacks (an unknown path, or a method a path does not have): 404 with
    # Chat2Desk's own text (S4 PageNotFounException).
    return JSONResponse({"status": "error", "message": PAGE_NOT_FOUND}, status_code=404)


def build_app(state: FakeState) -> Starlette:
    """The ASGI app serving ``state``."""
    return Starlette(
        routes=[
            Route("/v1/messages", state.post_message, methods=["POST"]),
            Route("/v1/messages", state.list_messages, methods=["GET"]),
            Route("/v1/messages/{message_id}/transfer", state.transfer, methods=["GET"]),
            Route("/v1/messages/{message_id}/transfer_to_group", state.transfer, methods=["GET"]),
            Route("/v1/dialogs/{dialog_id}", state.update_dialog, methods=["PUT"]),
            Route("/v1/clients/{client_id}", state.get_client, methods=["GET"]),
            Route("/v1/webhooks", state.list_webhooks, methods=["GET"]),
            Route("/v1/webhooks", state.create_webhook, methods=["POST"]),
            Route("/v1/webhooks/{hook_id}", state.update_webhook, methods=["PUT"]),
            Route("/v1/companies/api_info", state.api_info, methods=["GET"]),
            Route("/_received", state.get_received, methods=["GET"]),
            Route("/_count", state.get_count, methods=["GET"]),
            Route("/_received", state.delete_received, methods=["DELETE"]),
            Route("/_control", state.post_control, methods=["POST"]),
        ],
        exception_handlers={404: _not_found, 405: _not_found},
    )


class _QuietServer(uvicorn.Server):
    # Embedded in a test process: leave SIGINT/SIGTERM to pytest.
    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


def _bind(host: str, port: int) -> socket.socket:
    # Bind before starting uvicorn, so the port is known and no other process can take it.
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it Nagle + delayed ACK add ~40 ms to every response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _config(app: Starlette) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=2,
        backlog=2048,
    )


async def _start(server: uvicorn.Server, sock: socket.socket) -> asyncio.Task[None]:
    """Serve in a task; return once the server accepts connections."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn offers a ``started`` flag but no event to await; poll it briefly.
    for _ in range(2000):
        if server.started:
            return task
        if task.done():
            await task  # raises what made startup fail
            break
        await asyncio.sleep(0.005)
    task.cancel()
    raise RuntimeError("fake chat2desk did not start")


class FakeChat2Desk(FakeState):
    """The fake, served from the current event loop: ``async with FakeChat2Desk() as fake``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        super().__init__(token=token)
        self.host = host
        self._port = port
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """The server root (control endpoints live here)."""
        return f"http://{self.host}:{self._port}"

    @property
    def url(self) -> str:
        """The API base to give a Chat2Desk client, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.base_url}/v1"

    async def start(self) -> None:
        sock = _bind(self.host, self._port)
        self._port = sock.getsockname()[1]
        self.closing = asyncio.Event()
        self._server = _QuietServer(_config(build_app(self)))
        self._task = await _start(self._server, sock)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self.closing.set()
        self._server.should_exit = True
        await self._task
        self._server = self._task = None

    async def __aenter__(self) -> FakeChat2Desk:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class ThreadedFakeChat2Desk:
    """The fake on its own event loop in a daemon thread: ``with ThreadedFakeChat2Desk() as f``.

    Controls (``fail_next`` ...) are forwarded to the server loop's thread so they never race
    a request being handled.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        self.fake = FakeChat2Desk(host=host, port=port, token=token)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.fake.url

    @property
    def received(self) -> list[dict[str, Any]]:
        return self._call(lambda: list(self.fake.received))

    @property
    def attempts(self) -> int:
        return self._call(lambda: self.fake.attempts)

    def control(self, command: dict[str, Any]) -> None:
        self._call(lambda: self.fake.control(command))

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        self._call(lambda: self.fake.fail_next(n, status))

    def rate_limit_next(self, n: int = 1, retry_after: float | None = 1.0) -> None:
        self._call(lambda: self.fake.rate_limit_next(n, retry_after))

    def hang_next(self, n: int = 1, seconds: float = 30.0) -> None:
        self._call(lambda: self.fake.hang_next(n, seconds))

    def reset(self) -> None:
        self._call(self.fake.reset)

    def _call(self, fn: Any) -> Any:
        assert self._loop is not None, "not started"

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=5)

    def _serve(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            try:
                await self.fake.start()
            except BaseException as exc:
                self._error = exc
                self._started.set()
                raise
            self._started.set()
            assert self.fake._task is not None
            await self.fake._task

        asyncio.run(main())

    def __enter__(self) -> ThreadedFakeChat2Desk:
        self._thread = threading.Thread(target=self._serve, name="fake-chat2desk", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)
        if self._error is not None:
            raise RuntimeError("fake chat2desk failed to start") from self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self.fake.stop(), self._loop).result(timeout=10)
            self._thread.join(timeout=10)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tests.fakes.chat2desk [--host H] [--port N] [--token T]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="require this Authorization header")
    args = parser.parse_args(argv)

    state = FakeState(token=args.token)
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    server = uvicorn.Server(_config(build_app(state)))

    async def serve() -> None:
        state.closing = asyncio.Event()
        task = await _start(server, sock)
        print(f"fake chat2desk listening on http://{args.host}:{port}/v1", flush=True)
        await task
        state.closing.set()

    import uvloop  # as fast as the bot's own loop, so the fake is not what benchmarks measure

    uvloop.run(serve())
    sys.exit(0)


if __name__ == "__main__":
    main()
