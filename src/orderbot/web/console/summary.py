"""The daily summary to the admin chat: at ``DAILY_SUMMARY_AT`` (the shop's time, off when
empty) the numbers of the last 24 hours, the open orders by status and the dead letters go to
every ``ADMIN_CHAT_IDS`` chat through the Telegram channel, like the new-order alerts.

Every server process runs the schedule (``orderbot run``, each ``orderbot serve``); the
message's key names the shop's date and the chat (``daily-summary:<date>:<chat>``), so however
many processes, restarts or late starts, each chat gets one summary a day: the outbox keeps one
row per key (SQLite) and the sender sends a key once (RabbitMQ).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import date, time

from orderbot.loggers import console as log
from orderbot.messages import OutboundMessage
from orderbot.outbound import daily_summary_key
from orderbot.web.console.board import OrderBoard
from orderbot.web.console.services import ConsoleServices
from orderbot.web.console.shoptime import ShopTime
from orderbot.web.console.stats import Stats, read_stats

__all__ = ["DailySummary", "parse_time_of_day", "summary_text"]

CHECK_EVERY = 30.0


def parse_time_of_day(text: str) -> time | None:
    """``HH:MM`` as a time; None for an empty setting (off). ValueError otherwise."""
    if not text.strip():
        return None
    hours, sep, minutes = text.strip().partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError("a time of day like 20:00")
    return time(int(hours), int(minutes))  # ValueError when out of range


def due_day(now: float, at: time, shop: ShopTime) -> date | None:
    """The shop's date whose summary is due at ``now`` (it is past ``at`` that day), or None."""
    local = shop.local(now)
    return local.date() if local.time() >= at else None


def summary_text(day: date, stats: Stats, open_counts: dict[str, int], dead_letters: int) -> str:
    """The message: plain text, the same in every chat."""
    conversion = "—" if stats.conversion is None else f"{stats.conversion * 100:.0f} %"
    median = (
        "—"
        if stats.median_seconds_to_order is None
        else f"{stats.median_seconds_to_order / 60:.0f} min"
    )
    open_orders = ", ".join(
        f"{status.replace('_', ' ')} {count}" for status, count in open_counts.items() if count
    )
    lines = [
        f"Daily summary, {day:%d.%m.%Y} (last 24 h)",
        f"Orders: {stats.orders}",
        f"Conversations: {stats.conversations} (conversion {conversion})",
        f"Cancelled: {stats.cancelled}, abandoned: {stats.abandoned}",
        f"Median time to order: {median}",
        f"Open orders: {open_orders or 'none'}",
    ]
    if dead_letters:
        lines.append(f"Replies not delivered (dead letters): {dead_letters}")
    return "\n".join(lines)


class DailySummary:
    """The schedule: checks every ``CHECK_EVERY`` seconds whether today's summary is due and
    queues it once per process and day (and once per chat and day overall, by its key)."""

    def __init__(
        self,
        svc: ConsoleServices,
        *,
        at: time,
        chats: tuple[str, ...],
        depth: Callable[[], Awaitable[int]],
        check_every: float = CHECK_EVERY,
    ) -> None:
        self._svc = svc
        self._at = at
        self._chats = chats
        self._dead_letter_depth = depth
        self._check_every = check_every
        self._done: date | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="orderbot-daily-summary")

    async def aclose(self) -> None:
        """Stop the schedule. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.send_if_due()
            except Exception:  # the database may be down for a while: try at the next check
                log.exception("daily summary: not sent this time")
            await asyncio.sleep(self._check_every)

    async def send_if_due(self) -> bool:
        """Queue today's summary if it is due and not queued by this process yet."""
        svc = self._svc
        now = svc.clock()
        day = due_day(now, self._at, svc.shop)
        if day is None or day == self._done:
            return False
        stats = await read_stats(svc.runner, svc.flow, svc.shop, since=now - 86400, until=now)
        text = summary_text(
            day,
            stats,
            await OrderBoard(svc.runner).open_counts(),
            await self._dead_letter_depth(),
        )
        for chat in self._chats:
            await svc.send_reply(
                OutboundMessage(
                    key=daily_summary_key(day.isoformat(), chat),
                    channel="telegram",
                    client_id=chat,
                    text=text,
                    created_at=now,
                )
            )
        self._done = day
        log.info("daily summary for %s queued for %d chats", day, len(self._chats))
        return True
