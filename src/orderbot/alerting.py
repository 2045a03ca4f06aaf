"""Operations alerts: what needs a person (issue 19), told to the admin chats and the console.

Kinds (:data:`KINDS`), each about a ``subject`` (a channel's name):

* ``dead_letter``: a reply was dead-lettered (an event: each one is an occurrence).
* ``circuit_open``: a channel's circuit breaker opened (a condition, until it closes).
* ``webhook``: orderbot's Chat2Desk webhook is disabled or missing (a condition).
* ``quota``: a channel's API quota is used up (a condition, until a send succeeds again).

At most one alert per kind and subject per ``interval`` (``ALERT_INTERVAL``): the message's key
(:func:`~orderbot.outbound.ops_alert_key`) holds the interval's number (``bucket``), and the
outbox keeps one message per key, so senders in several processes that see the same condition in
the same interval tell it once. A condition that clears is followed by a "resolved" message,
keyed by the alert it resolves. A condition seen again within the interval its alert was told in
is told in the next interval (by :meth:`OperationsAlerts.tick`) if it still holds then.

Alerts go through the outbox (retried like any reply, dead-lettered at worst), queued in the
background: the sender's data path never waits on them. Without admin chats they are only shown
(:meth:`OperationsAlerts.active`: ``GET /status`` and the console's banner).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from orderbot.loggers import mask_text
from orderbot.loggers import sender as log
from orderbot.messages import OutboundMessage
from orderbot.outbound import operator_notice_key, ops_alert_key, ops_alert_resolved_key

__all__ = ["ALERT_INTERVAL", "KINDS", "OperationsAlerts", "PutAlert"]

ALERT_INTERVAL = 900.0
KINDS = ("dead_letter", "circuit_open", "webhook", "quota")
_CONDITIONS = ("circuit_open", "webhook", "quota")

PutAlert = Callable[[OutboundMessage], Awaitable[None]]

_TITLES = {
    "dead_letter": "⚠️ orderbot: a reply via {subject} could not be sent (dead-lettered)",
    "circuit_open": "⚠️ orderbot: {subject} is failing; its circuit breaker opened",
    "webhook": "⚠️ orderbot: the {subject} webhook is {state}; no message reaches the bot",
    "quota": "⚠️ orderbot: the {subject} API quota is used up; replies wait",
}
_RESOLVED = {
    "circuit_open": "✅ orderbot: {subject} answers again (circuit closed)",
    "webhook": "✅ orderbot: the {subject} webhook works again",
    "quota": "✅ orderbot: the {subject} API quota allows replies again",
}


@dataclass(slots=True)
class _Alert:
    kind: str
    subject: str
    detail: str
    since: float
    told_bucket: int | None = None  # the interval its alert was told in (None: not yet)
    active: bool = True


class OperationsAlerts:
    """Alerts of one process. ``put`` queues a message in the outbox; ``chats`` are the admin
    Telegram chats (empty: shown only). ``clock`` is wall time (the buckets are shared)."""

    def __init__(
        self,
        put: PutAlert | None,
        *,
        chats: Sequence[str] = (),
        interval: float = ALERT_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._put = put
        self._chats = tuple(chats) if put is not None else ()
        self._interval = interval
        self._clock = clock
        self._alerts: dict[tuple[str, str], _Alert] = {}
        self._told: dict[tuple[str, str], int] = {}  # kind, subject -> last interval told
        self._tasks: set[asyncio.Task[None]] = set()

    def bucket(self, at: float) -> int:
        """The number of the interval ``at`` falls in."""
        return int(at // self._interval)

    def alert(self, kind: str, subject: str, detail: str = "") -> None:
        """``kind`` about ``subject`` needs a person now (a condition began, or an event)."""
        if kind not in KINDS:
            raise ValueError(f"unknown alert kind {kind!r}")
        now = self._clock()
        found = self._alerts.get((kind, subject))
        if found is not None and found.active and kind in _CONDITIONS:
            found.detail = detail or found.detail
            return  # told already (or to be told by tick)
        if found is None:
            found = self._alerts[(kind, subject)] = _Alert(kind, subject, detail, now)
        else:
            found.active, found.detail, found.since = True, detail, now
        self._tell(found, now)

    def resolve(self, kind: str, subject: str) -> None:
        """The condition ``kind`` about ``subject`` cleared."""
        found = self._alerts.get((kind, subject))
        if found is None or not found.active:
            return
        found.active = False
        if found.told_bucket is None:
            return  # never told: nothing to resolve
        text = _RESOLVED.get(kind, "✅ orderbot: {subject}: resolved").format(subject=subject)
        self._queue(
            [
                (ops_alert_resolved_key(kind, subject, found.told_bucket, chat), chat)
                for chat in self._chats
            ],
            text,
        )

    def notice(self, topic: str, text: str) -> None:
        """A one-off notice to the admin chats about one thing (``topic`` names it, e.g. a
        message outside WhatsApp's window): once per topic, not throttled, not shown."""
        self._queue([(operator_notice_key(topic, chat), chat) for chat in self._chats], text)

    def tick(self) -> None:
        """Tell conditions that still hold and were held back by the interval."""
        now = self._clock()
        for found in self._alerts.values():
            if found.active and found.told_bucket is None:
                self._tell(found, now)

    def active(self) -> list[dict[str, Any]]:
        """What needs a person now: conditions that hold, and events of the last interval."""
        now = self._clock()
        shown = []
        for found in self._alerts.values():
            if found.kind in _CONDITIONS and not found.active:
                continue
            if found.kind not in _CONDITIONS and now - found.since >= self._interval:
                continue
            shown.append(
                {
                    "kind": found.kind,
                    "subject": found.subject,
                    "detail": found.detail,
                    "since": found.since,
                }
            )
        return sorted(shown, key=lambda a: (a["since"], a["kind"], a["subject"]))

    async def aclose(self) -> None:
        """Wait (bounded) for alerts being queued."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)

    def _tell(self, found: _Alert, now: float) -> None:
        bucket = self.bucket(now)
        told = self._told.get((found.kind, found.subject))
        if told == bucket:
            found.told_bucket = None  # this interval had its alert: tick tells it later
            return
        self._told[(found.kind, found.subject)] = bucket
        found.told_bucket = bucket
        text = _TITLES[found.kind].format(
            subject=found.subject, state=found.detail.split(":", 1)[0] or "failing"
        )
        if found.detail:
            text = f"{text}\n{found.detail}"
        log.error("alert %s %s: %s", found.kind, found.subject, mask_text(found.detail))
        self._queue(
            [
                (ops_alert_key(found.kind, found.subject, bucket, chat), chat)
                for chat in self._chats
            ],
            text,
        )

    def _queue(self, targets: list[tuple[str, str]], text: str) -> None:
        if self._put is None or not targets:
            return
        task = asyncio.get_running_loop().create_task(self._send(targets, text, self._clock()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, targets: list[tuple[str, str]], text: str, now: float) -> None:
        assert self._put is not None
        for key, chat in targets:
            try:
                await self._put(
                    OutboundMessage(
                        key=key, channel="telegram", client_id=chat, text=text, created_at=now
                    )
                )
            except Exception as exc:  # best effort: /status and the console still show it
                log.warning("alert %s not queued: %s", key, type(exc).__name__)
