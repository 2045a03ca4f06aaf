"""``GET /status``: how the shop's bot is doing, for an operator or a monitor: version,
profile, uptime, queue depths, the oldest reply still waiting to be sent, dead letters (all,
and in the last hour), and each channel's circuit breaker (where this process sends) and last
delivery error (from the message log).

What a profile cannot tell from the serving process is ``null``, never guessed: on the
distributed profile the outbox is RabbitMQ (no age of its oldest message without consuming it)
and the sender, with its circuit breakers, is another process.
"""

from __future__ import annotations

import time
from typing import Any

from orderbot import __version__
from orderbot.web.console.services import ConsoleServices

__all__ = ["read_status"]

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
    sender = getattr(runtime, "sender", None)
    circuits: dict[str, str] = sender.circuits() if sender is not None else {}
    errors = await svc.runner.fetch(
        "SELECT channel, error, created_at FROM message_logs WHERE created_at >= :since"
        " AND direction = 'out' AND success = :failed ORDER BY created_at DESC LIMIT 200",
        {"since": now - 86400, "failed": False},
    )
    last_error: dict[str, dict[str, Any]] = {}
    for channel, error, at in errors:
        last_error.setdefault(str(channel), {"error": str(error or ""), "at": float(at)})
    channels = sorted(set(getattr(runtime, "channels", {}) or {}) | set(circuits) | set(last_error))
    found["channels"] = {
        name: {
            # Embedded: this process sends, and a channel not called yet is closed.
            "circuit": circuits.get(name, "closed" if svc.profile == "embedded" else None),
            "last_error": last_error.get(name, {}).get("error"),
            "last_error_at": last_error.get(name, {}).get("at"),
        }
        for name in channels
    }
    return found
