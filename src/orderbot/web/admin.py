"""The admin HTTP API: orders and their statuses, conversations handed to operators.

Every route wants ``Authorization: Bearer <ADMIN_TOKEN>`` (compared in constant time): 401
without it or with another token, checked before anything of the request is read or validated.
With ``ADMIN_TOKEN`` unset the API is off and answers 503 rather than being open. Errors are JSON
``{"error": code, "message": text}``, nothing else: a body, path or query that does not validate
(an id or offset past 64 bits included) gets 422 ``invalid_request`` with a message naming each
field and what is wrong with it. A backing service
that is down (the database, or RabbitMQ for a notification that must go out first) gives 503
with ``Retry-After``.
"""

# No ``from __future__ import annotations``: FastAPI reads these signatures at run time, and
# they refer to names local to install_admin_api.
import builtins
import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from orderbot.desk.base import HandoffNotFound, OrderNotFound
from orderbot.errors import BackendUnavailable, StorageError
from orderbot.orders.status import InvalidTransition, Status

__all__ = ["OrderAdmin", "install_admin_api"]

# Order ids are BIGINT; an offset past this is past every table. Larger numbers are a 422.
MAX_SQL_INTEGER = 2**63 - 1


class OrderAdmin(Protocol):
    """What the API needs of the store (:class:`orderbot.desk.base.OrderAdmin`: SQLite or
    PostgreSQL)."""

    async def list(
        self, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> builtins.list[dict[str, Any]]: ...
    async def get(self, order_id: int) -> dict[str, Any] | None: ...
    async def set_status(
        self,
        order_id: int,
        status: str,
        *,
        note: str = "",
        actor: str = "",
        note_public: bool = False,
    ) -> dict[str, Any]: ...
    async def handback(self, channel: str, client_id: str) -> None: ...
    async def handoffs(self) -> builtins.list[dict[str, Any]]: ...


class StatusChange(BaseModel):
    """A new status for an order; ``note`` stays internal unless the flow's text shows it or
    ``note_public`` tells it to the customer (a cancellation's reason)."""

    status: Status
    note: str = Field("", max_length=1000)
    note_public: bool = False


class AdminError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "example": {"error": "code", "message": "what went wrong"},
            }
        },
    }


_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("No bearer token, or not ADMIN_TOKEN."),
    503: _error("ADMIN_TOKEN is not set (the admin API is disabled), or not available here."),
    # Replaces FastAPI's HTTPValidationError ({"detail": [...]}): the handler below answers so.
    422: _error("The body, path or query does not validate; the message names each field."),
}


def install_admin_api(app: FastAPI, admin: Callable[[], OrderAdmin | None], *, token: str) -> None:
    """Add the ``/api`` routes to ``app``; ``admin`` gives the store once the app runs."""
    bearer = HTTPBearer(
        auto_error=False, scheme_name="ADMIN_TOKEN", description="Authorization: Bearer <token>"
    )
    expected = token.encode()

    def authenticate(request: Request) -> None:
        if not expected:
            raise AdminError(503, "admin_disabled", "admin API disabled (set ADMIN_TOKEN)")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            given = ""
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise AdminError(401, "unauthorized", "a valid Authorization: Bearer token is needed")

    class AuthenticatedRoute(APIRoute):
        """Checks the token before FastAPI reads and validates the body, path and query: a
        stranger learns nothing of what a request would need, only 401."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()

            async def authenticated(request: Request) -> Response:
                authenticate(request)
                return await handle(request)

            return authenticated

    async def authorized(
        # Declared for OpenAPI (the security scheme); AuthenticatedRoute has checked it already.
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> OrderAdmin:
        store = admin()
        if store is None:
            raise AdminError(503, "unavailable", "the admin API is not available in this profile")
        return store

    Admin = Annotated[OrderAdmin, Depends(authorized)]
    OrderId = Annotated[int, Path(ge=1, le=MAX_SQL_INTEGER)]
    router = APIRouter(
        prefix="/api", tags=["admin"], responses=_AUTH_RESPONSES, route_class=AuthenticatedRoute
    )

    @router.get("/orders")
    async def list_orders(
        store: Admin,
        status: Annotated[Status | None, Query(description="Only orders with this status.")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_SQL_INTEGER)] = 0,
    ) -> dict[str, Any]:
        """Orders, newest first."""
        found = await store.list(status=status, limit=limit, offset=offset)
        return {"orders": found, "limit": limit, "offset": offset}

    @router.get("/orders/{order_id}", responses={404: _error("No such order.")})
    async def get_order(store: Admin, order_id: OrderId) -> dict[str, Any]:
        """One order with its line items, files and status history."""
        order = await store.get(order_id)
        if order is None:
            raise AdminError(404, "not_found", f"no order {order_id}")
        return order

    @router.patch(
        "/orders/{order_id}",
        responses={
            404: _error("No such order."),
            409: _error("The order cannot go to that status from the one it has."),
        },
    )
    async def change_status(
        store: Admin, order_id: OrderId, change: StatusChange
    ) -> dict[str, Any]:
        """Change the status; the customer is notified (through the outbox) in the same
        transaction. Statuses go new -> confirmed -> in_progress -> ready -> delivered (to any
        later one at once, told once), or to cancelled from any but delivered and cancelled.
        Returns the updated order."""
        try:
            return await store.set_status(
                order_id,
                change.status,
                note=change.note,
                actor="api",
                note_public=change.note_public,
            )
        except OrderNotFound:
            raise AdminError(404, "not_found", f"no order {order_id}") from None
        except InvalidTransition as exc:
            raise AdminError(409, "invalid_transition", str(exc)) from None

    @router.get("/handoffs")
    async def list_handoffs(store: Admin) -> dict[str, Any]:
        """Conversations an operator has now (the bot is silent for them)."""
        return {"handoffs": await store.handoffs()}

    @router.post(
        "/handoffs/{channel}/{client_id}/handback",
        responses={404: _error("The conversation is not with an operator.")},
    )
    async def hand_back(store: Admin, channel: str, client_id: str) -> dict[str, Any]:
        """Give the conversation back to the bot: the customer is told, and asked the question
        the dialog was at."""
        try:
            await store.handback(channel, client_id)
        except HandoffNotFound as exc:
            raise AdminError(404, "not_found", str(exc)) from None
        return {"channel": channel, "client_id": client_id, "handed_back": True}

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AdminError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(
            {"error": exc.code, "message": exc.message}, status_code=exc.status, headers=headers
        )

    async def on_storage_error(request: Request, exc: Exception) -> JSONResponse:
        retry_after = exc.retry_after if isinstance(exc, BackendUnavailable) else 5.0
        return JSONResponse(
            {"error": "unavailable", "message": "storage is unavailable; try again shortly"},
            status_code=503,
            headers={"Retry-After": str(max(1, round(retry_after)))},
        )

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}"
            for error in exc.errors()
        )
        return JSONResponse(
            {
                "error": "invalid_request",
                "message": problems[:1000] or "the request does not validate",
            },
            status_code=422,
        )

    app.add_exception_handler(AdminError, on_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(StorageError, on_storage_error)
    app.include_router(router)
