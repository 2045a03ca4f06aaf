"""``GET /status``: how the shop's bot is doing, for an operator or a monitor: version,
profile, uptime, queue depths, the oldest reply still waiting to be sent, dead letters (all,
and in the last hour), each channel's circuit breaker and last delivery error (from the
message log), orderbot's Chat2Desk webhook (the cached check of /health), and the operations
alerts that hold now (:mod:`orderbot.alerting`).

Circuit breakers and alerts live in the sender: on the embedded profile it runs in this process;
on the distributed profile each ``orderbot sender`` publishes them to Redis (expiring), and the
worst state of any live sender is shown (``null`` when no sender published). What a profile
cannot tell from the serving process is ``null``, never guessed: the distributed outbox is
RabbitMQ (no age of its oldest message without consuming it).
"""

from __future__ import annotations

import time
from typing import Any

from orderbot import __version__
from orderbot.web.console.services import ConsoleServices

__all__ = ["read_alerts", "read_status"]

_DEAD_LETTERS_LOOKED_AT = 1000


async def read_status(runtime: Any, svc: ConsoleServices, *, started: float) -> dict[str, Any]:
    """The ``/status`` body."""
    now = svc.clock()
    found: dict[str, Any] = {
        "version": __version__,
        "profile": svc.profile,
        "uptime_seconds": round(time.time() - started, 1),
    }
    depths = await runtime.depths()
    found["queues"] = depths.to_dict()
    oldest: float | None = None
    if svc.runner.dialect == "sqlite":
        rows = await svc.runner.fetch("SELECT MIN(created_at) FROM outbox WHERE status = 'pending'")
        oldest = None if rows[0][0] is None else max(0.0, now - float(rows[0][0]))
    found["oldest_waiting_reply_seconds"] = None if oldest is None else round(oldest, 1)
    letters = await svc.dead_letters.list(_DEAD_LETTERS_LOOKED_AT)
    found["dead_letters"] = {
        "total": depths.dead_letter,
        "last_hour": sum(1 for d in letters if d.created_at >= now - 3600),
    }
    circuits, alerts = await _sender_states(runtime, svc.profile)
    found["alerts"] = alerts
    watch = getattr(runtime, "webhook_watch", None)
    found["chat2desk_webhook"] = await watch.status() if watch is not None else None
    errors = await svc.runner.fetch(
        "SELECT channel, error, created_at FROM message_logs WHERE created_at >= :since"
        " AND direction = 'out' AND success = :failed ORDER BY created_at DESC LIMIT 200",
        {"since": now - 86400, "failed": False},
    )
    last_error: dict[str, dict[str, Any]] = {}
    for channel, error, at in errors:
        last_error.setdefault(str(channel), {"error": str(error or ""), "at": float(at)})
    channels = sorted(
        set(getattr(runtime, "channels", {}) or {}) | set(circuits or {}) | set(last_error)
    )
    found["channels"] = {
        name: {
            # A channel no sender has called yet is closed; distributed without any live
            # sender: unknown.
            "circuit": (circuits or {}).get(name, None if circuits is None else "closed"),
            "last_error": last_error.get(name, {}).get("error"),
            "last_error_at": last_error.get(name, {}).get("at"),
        }
        for name in channels
    }
    return found


async def read_alerts(runtime: Any, profile: str) -> list[dict[str, Any]]:
    """The operations alerts that hold now (the console's banner)."""
    _, alerts = await _sender_states(runtime, profile)
    return alerts


_WORST = {"closed": 0, "half_open": 1, "open": 2}


async def _sender_states(
    runtime: Any, profile: str
) -> tuple[dict[str, str] | None, list[dict[str, Any]]]:
    """Circuits (None: no sender to ask) and active alerts, from this process's sender
    (embedded) or from what the live sender processes published (distributed)."""
    if profile == "embedded":
        sender = getattr(runtime, "sender", None)
        if sender is None:
            return None, []
        state = sender.state()
        return dict(state["circuits"]), list(state["alerts"])
    states = await runtime.sender_states()
    if not states:
        return None, []
    circuits: dict[str, str] = {}
    alerts: dict[tuple[str, str], dict[str, Any]] = {}
    for state in states:
        for name, circuit in (state.get("circuits") or {}).items():
            if _WORST.get(circuit, 0) >= _WORST.get(circuits.get(name, "closed"), 0):
                circuits[name] = circuit
        for alert in state.get("alerts") or []:
            key = (str(alert.get("kind")), str(alert.get("subject")))
            if key not in alerts or alert.get("since", 0) < alerts[key].get("since", 0):
                alerts[key] = alert
    return circuits, sorted(
        alerts.values(),
        key=lambda a: (a.get("since", 0), str(a.get("kind")), str(a.get("subject"))),
    )
