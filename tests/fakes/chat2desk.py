"""A fake Chat2Desk API server: records what it was sent and fails on demand.

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
  ``{"failure_rate": 0.1, "seed": 7, "status": 503}``, ``{"token": "secret"}``, ``{"reset": true}``.

API endpoints, under ``/v1``: ``POST /messages``, ``POST /webhooks``, ``GET /companies/api_info``,
``POST /clients/{client_id}/transfer`` (recorded in ``transfers``).
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


@dataclass
class _Action:
    kind: str  # "fail" | "rate_limit" | "hang"
    status: int = 500
    retry_after: float | None = 1.0
    seconds: float = 30.0


class FakeState:
    """What the fake received and how it should misbehave next. Shared by all ways to run it."""

    def __init__(self, *, token: str | None = None) -> None:
        self.token = token
        self.received: list[dict[str, Any]] = []
        self.received_at: list[float] = []  # unix time each of ``received`` was accepted
        self.webhooks: list[dict[str, Any]] = []
        self.transfers: list[dict[str, Any]] = []  # POST /v1/clients/{id}/transfer bodies
        self.attempts = 0
        self._actions: deque[_Action] = deque()
        self._failing_clients: dict[str, int] = {}
        self._failure_rate = 0.0
        self._failure_status = 500
        self._random = random.Random(0)
        self._next_id = 1
        self.closing = asyncio.Event()

    # failure controls

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` message requests with ``status`` (200 means a 200 carrying
        ``{"status": "error"}``, as Chat2Desk does for some refusals)."""
        self._actions.extend(_Action("fail", status=status) for _ in range(n))

    def rate_limit_next(self, n: int = 1, retry_after: float | None = 1.0) -> None:
        """Answer the next ``n`` message requests with 429 (no Retry-After header when None)."""
        self._actions.extend(_Action("rate_limit", retry_after=retry_after) for _ in range(n))

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

    def reset(self) -> None:
        """Forget what was received and every failure setting."""
        self.received.clear()
        self.received_at.clear()
        self.webhooks.clear()
        self.transfers.clear()
        self.attempts = 0
        self._actions.clear()
        self._failing_clients.clear()
        self._failure_rate = 0.0

    def texts(self, client_id: str | int | None = None) -> list[str]:
        """Texts received, optionally for one client, in arrival order."""
        wanted = None if client_id is None else str(client_id)
        return [b["text"] for b in self.received if wanted is None or str(b["client_id"]) == wanted]

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
        if "hang_next" in command:
            self.hang_next(int(command["hang_next"]), float(command.get("hang_seconds", 30)))
        if "fail_client" in command:
            self.fail_client(command["fail_client"], status=status)
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
        return self.token is None or request.headers.get("authorization") == self.token

    async def messages(self, request: Request) -> Response:
        self.attempts += 1
        if not self._authorized(request):
            return JSONResponse({"status": "error", "message": "Unauthorized"}, status_code=401)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"status": "error", "message": "invalid JSON"}, status_code=400)
        if not isinstance(body, dict) or "client_id" not in body or "text" not in body:
            return JSONResponse(
                {"status": "error", "message": "client_id and text are required"}, status_code=400
            )
        failure = self._failure_for(str(body["client_id"]))
        if failure is not None:
            return await self._fail(failure)
        body["authorization"] = request.headers.get("authorization")
        self.received.append(body)
        self.received_at.append(time.time())
        message_id = self._next_id
        self._next_id += 1
        return JSONResponse(
            {
                "status": "success",
                "data": {
                    "message_id": message_id,
                    "channel_id": body.get("channel_id"),
                    "operator_id": None,
                    "transport": body.get("transport", "widget"),
                    "type": "to_client",
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
        """``GET /v1/messages?client_id=&type=to_client&limit=&order=desc``: what was accepted,
        in Chat2Desk's shape (``created`` as ``2025-04-03T11:50:06 UTC``)."""
        if not self._authorized(request):
            return JSONResponse({"status": "error", "message": "Unauthorized"}, status_code=401)
        client = request.query_params.get("client_id")
        limit = int(request.query_params.get("limit", "20"))
        rows = [
            (i, r)
            for i, r in enumerate(self.received)
            if client is None or str(r["client_id"]) == client
        ]
        if request.query_params.get("order", "asc") == "desc":
            rows = rows[::-1]
        data = [
            {
                "id": i + 1,
                "text": r["text"],
                "type": "to_client",
                "client_id": r["client_id"],
                "created": time.strftime("%Y-%m-%dT%H:%M:%S UTC", time.gmtime(self.received_at[i])),
            }
            for i, r in rows[:limit]
        ]
        return JSONResponse({"data": data, "meta": {"total": len(rows)}, "status": "success"})

    async def set_webhook(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"status": "error", "message": "Unauthorized"}, status_code=401)
        body = await request.json()
        self.webhooks.append(body)
        return JSONResponse({"status": "success", "data": {"id": len(self.webhooks), **body}})

    async def transfer(self, request: Request) -> Response:
        """``POST /v1/clients/{client_id}/transfer`` with ``operator_id`` or ``group_id``."""
        if not self._authorized(request):
            return JSONResponse({"status": "error", "message": "Unauthorized"}, status_code=401)
        body = await request.json()
        if not isinstance(body, dict) or not ({"operator_id", "group_id"} & set(body)):
            return JSONResponse(
                {"status": "error", "message": "operator_id or group_id is required"},
                status_code=400,
            )
        self.transfers.append({"client_id": request.path_params["client_id"], **body})
        return JSONResponse({"status": "success", "data": {"dialog_id": 1}})

    async def api_info(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"status": "error", "message": "Unauthorized"}, status_code=401)
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


def build_app(state: FakeState) -> Starlette:
    """The ASGI app serving ``state``."""
    return Starlette(
        routes=[
            Route("/v1/messages", state.messages, methods=["POST"]),
            Route("/v1/messages", state.list_messages, methods=["GET"]),
            Route("/v1/webhooks", state.set_webhook, methods=["POST"]),
            Route("/v1/clients/{client_id}/transfer", state.transfer, methods=["POST"]),
            Route("/v1/companies/api_info", state.api_info, methods=["GET"]),
            Route("/_received", state.get_received, methods=["GET"]),
            Route("/_count", state.get_count, methods=["GET"]),
            Route("/_received", state.delete_received, methods=["DELETE"]),
            Route("/_control", state.post_control, methods=["POST"]),
        ]
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
