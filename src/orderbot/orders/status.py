"""The order status machine: pure code, no I/O.

Statuses move forward along ``new -> confirmed -> in_progress -> ready -> delivered``, to any
later one in one change (the customer is told once, of the final status), or to
``cancelled`` from any status but the final two; :func:`check_transition` says no with an
:class:`InvalidTransition` naming what is allowed. :data:`STATUSES` is the one definition of the
statuses (flows name them, the admin API validates them, the CLI lists them).
"""

from __future__ import annotations

from typing import Literal, get_args

from orderbot.errors import OrderbotError

__all__ = [
    "FINAL_STATUSES",
    "STATUSES",
    "WHATSAPP_WINDOW",
    "WINDOW_MARK",
    "InvalidTransition",
    "Status",
    "allowed_next",
    "check_transition",
    "outside_window",
]

Status = Literal["new", "confirmed", "in_progress", "ready", "delivered", "cancelled"]
STATUSES: tuple[str, ...] = get_args(Status)
"""Every status an order can have, in the order they are reached."""
FINAL_STATUSES = frozenset({"delivered", "cancelled"})
_FORWARD = ("new", "confirmed", "in_progress", "ready", "delivered")


class InvalidTransition(OrderbotError):
    """The order cannot move from its status to the one asked for (409 in the admin API)."""

    def __init__(self, current: str, wanted: str) -> None:
        allowed = allowed_next(current)
        if current in FINAL_STATUSES:
            why = f"order is {current}; {current} orders do not change status"
        elif wanted == current:
            why = f"order is already {current}"
        else:
            why = f"cannot go from {current} to {wanted}"
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        super().__init__(why + hint)
        self.current = current
        self.wanted = wanted


def allowed_next(current: str) -> tuple[str, ...]:
    """The statuses an order in ``current`` may move to."""
    if current in FINAL_STATUSES:
        return ()
    later = _FORWARD[_FORWARD.index(current) + 1 :] if current in _FORWARD else ()
    return (*later, "cancelled")


def check_transition(current: str, wanted: str) -> None:
    """Raise ``ValueError`` for a status that does not exist, :class:`InvalidTransition` for
    a move that is not allowed."""
    if wanted not in STATUSES:
        raise ValueError(f"unknown status {wanted!r} (statuses: {', '.join(STATUSES)})")
    if wanted not in allowed_next(current):
        raise InvalidTransition(current, wanted)


WHATSAPP_WINDOW = 24 * 3600.0
"""Seconds after a customer's last message during which WhatsApp's business API delivers free
text to them."""
WINDOW_MARK = " [not told: outside WhatsApp's 24-hour window; call the customer]"
"""Appended to a status change's history note when the customer cannot be told (the sender
holds the notification back and tells the operators); never part of the customer's text."""


def outside_window(
    route: dict[str, str], last_inbound: float | None, now: float, transports: tuple[str, ...]
) -> bool:
    """Whether a message to a customer reached by ``route`` would fall outside WhatsApp's
    24-hour window: a windowed transport and a last message (``last_inbound``) too long ago.
    Unknown (no message logged) is not outside: nothing is held back on a guess."""
    if route.get("transport") not in transports or last_inbound is None:
        return False
    return now - last_inbound > WHATSAPP_WINDOW
