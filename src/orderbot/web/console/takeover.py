"""An operator takes a conversation over from the console (the order page's "Talk to the
customer"): the same handoff a customer's "operator" starts, so the bot stays silent for them
until an operator hands them back or ``HANDOFF_TIMEOUT`` passes.

The ``handoffs`` row decides, on both profiles; what the bot consults before it is told after
the row is written: the embedded front desk's memory of who may be with an operator, or the
Redis flag of the distributed profile (:func:`orderbot.desk.postgres.handoff_flag`).
"""

from __future__ import annotations

from typing import Any

from orderbot.outbound import client_key
from orderbot.web.console.services import ConsoleServices

__all__ = ["take_over"]


async def take_over(
    runtime: Any, svc: ConsoleServices, channel: str, client_id: str, *, operator: str
) -> bool:
    """Hand the customer to an operator; False when they were with one already."""
    now = svc.clock()
    until = now + svc.settings.handoff_timeout
    key = client_key(channel, client_id)
    rows = await svc.runner.execute(
        "INSERT INTO handoffs (client_key, channel, client_id, reason, since, until)"
        " VALUES (:key, :channel, :client, :reason, :now, :until)"
        " ON CONFLICT (client_key) DO NOTHING RETURNING client_key",
        {
            "key": key,
            "channel": channel,
            "client": client_id,
            "reason": f"console: {operator}"[:200],
            "now": now,
            "until": until,
        },
    )
    if not rows:
        return False
    desk = getattr(runtime, "desk", None)
    if desk is not None:
        desk.note_handoff(key, active=True)
    redis = getattr(runtime, "redis", None)
    if redis is not None:
        from orderbot.desk.postgres import handoff_flag

        value, ttl = handoff_flag(until, await svc.board.route(channel, client_id), now)
        await redis.set(runtime.keys.handoff(key), value, ex=ttl)
    return True
