"""The HTTP application: webhooks (lean path), health, metrics, the admin API (``/api``,
see :mod:`orderbot.web.admin`), the operators' console (``/console``, see
:mod:`orderbot.web.console.pages`), and their OpenAPI description."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from orderbot import __version__
from orderbot.channels.chat2desk import WebhookWatch
from orderbot.config import Settings
from orderbot.loggers import ingress as log
from orderbot.metrics import QUEUE_DEPTH
from orderbot.queues.base import QueueDepths
from orderbot.web.admin import install_admin_api
from orderbot.web.console.pages import install_console
from orderbot.web.ingress import HttpLimits, IngressApp, WebhookIngress

__all__ = ["create_app"]

# Swagger UI (swagger-ui-dist from npm, Apache 2.0, its LICENSE beside it) is served from the
# package, so /docs works without the internet and loads nothing from another host.
_STATIC = Path(__file__).parent / "static"
_SWAGGER = "/static/swagger-ui"

_WEBHOOK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "The channel's webhook payload. Chat2Desk: its inbox hook "
                    "(only type=from_client is answered; other types and hook types are "
                    "acknowledged and ignored), or at least client_id, message_id and text.",
                    "required": ["client_id", "message_id"],
                    "properties": {
                        "client_id": {"type": ["integer", "string"]},
                        "message_id": {"type": ["integer", "string"]},
                        "text": {"type": ["string", "null"]},
                        "type": {"type": "string", "example": "from_client"},
                        "hook_type": {"type": "string", "example": "inbox"},
                        "transport": {"type": "string", "example": "whatsapp"},
                        "channel_id": {"type": ["integer", "string"]},
                    },
                }
            }
        },
    },
    "responses": {
        "200": {"description": "Stored durably (or a duplicate / an event the bot ignores)."},
        "400": {"description": "The body is not JSON."},
        "401": {"description": "The signature does not match."},
        "404": {"description": "No such channel, or the secret path is wrong."},
        "408": {"description": "The body did not arrive within HTTP_BODY_TIMEOUT seconds."},
        "413": {"description": "The body is over 64 KiB."},
        "415": {"description": "Content-Type is not application/json."},
        "422": {
            "description": "A required field is missing or has the wrong type, or an id is "
            "out of range (integers: 64 bits; strings: 1-64 of A-Z a-z 0-9 _ . : @ -)."
        },
        "503": {"description": "Storage is unavailable; retry after Retry-After seconds."},
    },
}


def _metrics_text() -> bytes:
    """This process's metrics, or, under ``orderbot serve --workers N`` (PROMETHEUS_MULTIPROC_DIR
    set), the sum over all server processes, whichever answers the scrape."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


class NamedFlow(Protocol):
    """The app only names the flow in its log; the dialog is the worker's."""

    @property
    def name(self) -> str: ...


class ServiceRuntime(Protocol):
    """What the app needs of a runtime: ``EmbeddedRuntime`` or ``DistributedRuntime``."""

    @property
    def flow(self) -> NamedFlow: ...
    @property
    def ingress(self) -> WebhookIngress: ...
    @property
    def running(self) -> bool: ...
    async def open(self) -> None: ...
    def start(self) -> None: ...
    async def aclose(self) -> None: ...
    async def depths(self) -> QueueDepths: ...


@runtime_checkable
class ReportsHealth(Protocol):
    """A runtime with its own checks (distributed: redis, postgres, rabbitmq, queues)."""

    profile: str

    async def health(self) -> tuple[bool, dict[str, Any]]: ...


def create_app(
    runtime: ServiceRuntime,
    *,
    run_background: bool = True,
    webhook_watch: WebhookWatch | None = None,
) -> IngressApp:
    """The ASGI app for ``runtime``. Its lifespan opens the runtime and, with
    ``run_background``, runs worker and sender on the same event loop. With ``webhook_watch``,
    /health also reports orderbot's Chat2Desk webhook (``degraded`` when it is disabled or
    missing: the process is fine, but no message reaches it)."""

    state: dict[str, WebhookIngress | None] = {"ingress": None}
    starting: list[Callable[[], Awaitable[None]]] = []
    closing: list[Callable[[], Awaitable[None]]] = []
    profile = runtime.profile if isinstance(runtime, ReportsHealth) else "embedded"

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.open()
        if run_background:
            runtime.start()
        state["ingress"] = runtime.ingress
        for start in starting:
            await start()
        log.info("orderbot %s ready (%s profile, flow %s)", __version__, profile, runtime.flow.name)
        try:
            yield
        finally:
            state["ingress"] = None
            for close in closing:
                await close()
            await runtime.aclose()

    app = FastAPI(
        title="orderbot",
        version=__version__,
        description="Takes shop orders through chat. Webhooks in, replies out, orders stored.",
        lifespan=lifespan,
        docs_url=None,  # served below from the package, not from a CDN
        redoc_url=None,  # ReDoc would load from a CDN; /docs describes the same API
    )
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{_SWAGGER}/swagger-ui-bundle.js",
            swagger_css_url=f"{_SWAGGER}/swagger-ui.css",
            swagger_favicon_url=f"{_SWAGGER}/favicon-32x32.png",
            # No badge from validator.swagger.io: nothing leaves the page.
            swagger_ui_parameters={"validatorUrl": None},
        )

    settings = getattr(runtime, "settings", None)
    install_admin_api(
        app,
        lambda: getattr(runtime, "admin", None),
        token=getattr(settings, "admin_token", "") if settings is not None else "",
    )
    if settings is not None:
        console = install_console(app, runtime, settings)
        starting.append(console.start)
        closing.append(console.aclose)

    async def _webhook(request: Request, channel: str, secret: str = "") -> Response:
        ingress = state["ingress"]
        if ingress is None:
            return JSONResponse({"success": False, "error": "starting"}, status_code=503)
        path = f"/webhook/{channel}" + (f"/{secret}" if secret else "")
        name = ingress.route(path)
        if name is None:
            return JSONResponse({"success": False, "error": "not_found"}, status_code=404)
        body = await request.body()
        result = await ingress.handle(
            name, request.headers.get("content-type", ""), dict(request.headers), body
        )
        headers = {k.decode(): v.decode() for k, v in result.headers}
        return Response(result.body, result.status, headers, media_type="application/json")

    @app.post("/webhook/{channel}", tags=["webhooks"], openapi_extra=_WEBHOOK_BODY)
    async def webhook(request: Request, channel: str) -> Response:
        """Receive a channel's webhook (e.g. ``chat2desk``) when no WEBHOOK_SECRET is set."""
        return await _webhook(request, channel)

    @app.post("/webhook/{channel}/{secret}", tags=["webhooks"], openapi_extra=_WEBHOOK_BODY)
    async def webhook_with_secret(request: Request, channel: str, secret: str) -> Response:
        """Receive a channel's webhook at its secret path (WEBHOOK_SECRET set)."""
        return await _webhook(request, channel, secret)

    @app.get("/", tags=["service"])
    async def root() -> dict[str, str]:
        """Name, version and profile of this service."""
        return {"name": "orderbot", "version": __version__, "profile": profile}

    @app.get("/live", tags=["service"])
    async def live() -> dict[str, str]:
        """The process is up (Kubernetes liveness)."""
        return {"status": "alive"}

    @app.get("/ready", tags=["service"])
    async def ready() -> JSONResponse:
        """Ready to take webhooks (Kubernetes readiness): 503 while starting or stopping."""
        ok = state["ingress"] is not None
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/health", tags=["service"])
    async def health() -> JSONResponse:
        """Per-dependency checks and queue depths; 503 when a dependency is down."""
        if isinstance(runtime, ReportsHealth):
            ok, found = await runtime.health()
            for queue, depth in (found.get("queues") or {}).items():
                QUEUE_DEPTH.labels(queue).set(depth)
            return await _answer(ok, found)
        checks: dict[str, Any] = {"database": False, "worker": runtime.running}
        try:
            depths = await runtime.depths()
            checks["database"] = True
            checks["queues"] = depths.to_dict()
            for queue, depth in depths.to_dict().items():
                QUEUE_DEPTH.labels(queue).set(depth)
        except Exception:
            log.exception("health check: database unavailable")
            checks["queues"] = None
        healthy = checks["database"] and (checks["worker"] or not run_background)
        return await _answer(healthy, checks)

    async def _answer(ok: bool, checks: dict[str, Any]) -> JSONResponse:
        status = "healthy" if ok else "unhealthy"
        if webhook_watch is not None:
            hook = await webhook_watch.status()
            checks["chat2desk_webhook"] = hook
            if ok and hook["state"] in ("disabled", "missing"):
                # A restart would not bring the hook back: 200, but said loudly.
                status = "degraded"
                log.error("health: orderbot's Chat2Desk webhook is %s", hook["state"])
        return JSONResponse({"status": status, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["service"])
    async def metrics() -> Response:
        """Prometheus metrics of this process."""
        try:
            depths = await runtime.depths()
            for queue, depth in depths.to_dict().items():
                QUEUE_DEPTH.labels(queue).set(depth)
        except Exception:
            log.warning("metrics: queue depths unavailable")
        return Response(_metrics_text(), media_type=CONTENT_TYPE_LATEST)

    limits = (
        HttpLimits(
            header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout,
            max_header_bytes=settings.http_max_header_bytes,
        )
        if isinstance(settings, Settings)
        else HttpLimits()
    )
    return IngressApp(app, lambda: state["ingress"], limits)
