"""The shop's numbers for a period: conversations, orders, conversion, where customers drop
off in the flow, orders per day, the median time to order. Read from ``dialog_outcomes`` (one
row per dialog that ended: completed, cancelled or abandoned, with the step it ended at) and
``orders``, on either profile. Shown at ``/console/stats``, ``GET /api/stats`` and
``orderbot stats``.

A conversation is counted in the period it ended (a dialog still going has no outcome yet).
Orders per day use the shop's time zone (``SHOP_TIMEZONE``) at its offset at the period's start.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Protocol

from orderbot.web.console.shoptime import ShopTime
from orderbot.web.console.sql.base import SqlRunner

__all__ = ["FlowStep", "Stats", "StepNumbers", "StepsOfFlow", "parse_period", "read_stats"]

_PERIOD = re.compile(r"^(\d{1,4})([hdw])$")
_UNIT = {"h": 3600, "d": 86400, "w": 7 * 86400}


def parse_period(text: str) -> float:
    """``7d``, ``24h``, ``2w`` as seconds; ValueError otherwise."""
    match = _PERIOD.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"period {text!r}: use a number and h, d or w, e.g. 7d")
    return int(match.group(1)) * _UNIT[match.group(2)]


class FlowStep(Protocol):
    """What the numbers need of a flow's step (:class:`orderbot.dialog.flow.Step`)."""

    @property
    def end(self) -> str | None: ...
    @property
    def next(self) -> str | Mapping[str, str] | None: ...


class StepsOfFlow(Protocol):
    """What the numbers need of a flow: its steps in order (the web layer does not import
    the dialog package)."""

    @property
    def steps(self) -> Mapping[str, FlowStep]: ...


@dataclass(frozen=True, slots=True)
class StepNumbers:
    """One step of the flow: how many conversations reached it and how many ended there."""

    step: str
    reached: int
    cancelled: int
    abandoned: int

    @property
    def dropped(self) -> int:
        return self.cancelled + self.abandoned


@dataclass(frozen=True, slots=True)
class Stats:
    since: float
    until: float
    conversations: int
    completed: int
    cancelled: int
    abandoned: int
    orders: int
    steps: tuple[StepNumbers, ...]
    orders_per_day: tuple[tuple[date, int], ...]
    median_seconds_to_order: float | None
    recovered: int = 0
    """Of ``completed``: orders placed after the bot's reminder (outcome ``recovered``)."""

    @property
    def conversion(self) -> float | None:
        """Completed conversations per conversation (None without conversations)."""
        return self.completed / self.conversations if self.conversations else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "conversations": self.conversations,
            "completed": self.completed,
            "recovered": self.recovered,
            "cancelled": self.cancelled,
            "abandoned": self.abandoned,
            "orders": self.orders,
            "conversion": None if self.conversion is None else round(self.conversion, 4),
            "median_seconds_to_order": self.median_seconds_to_order,
            "steps": [
                {
                    "step": s.step,
                    "reached": s.reached,
                    "cancelled": s.cancelled,
                    "abandoned": s.abandoned,
                    "dropped": s.dropped,
                }
                for s in self.steps
            ],
            "orders_per_day": [
                {"date": d.isoformat(), "orders": n} for d, n in self.orders_per_day
            ],
        }


def _targets(next_step: str | Mapping[str, str] | None) -> tuple[str, ...]:
    if next_step is None:
        return ()
    return (next_step,) if isinstance(next_step, str) else tuple(next_step.values())


def _day_number(dialect: str) -> str:
    # Whole days since the epoch, shifted by the zone's offset: FLOOR in PostgreSQL, where
    # CAST rounds; SQLite's CAST truncates, which is the floor for the positive times here.
    if dialect == "postgresql":
        return "FLOOR((created_at + :offset) / 86400)"
    return "CAST((created_at + :offset) / 86400 AS INTEGER)"


async def read_stats(
    runner: SqlRunner, flow: StepsOfFlow, shop: ShopTime, *, since: float, until: float
) -> Stats:
    """The numbers of conversations that ended, and orders placed, in ``[since, until)``."""
    period = {"since": float(since), "until": float(until)}
    outcome_rows = await runner.fetch(
        "SELECT outcome, last_step, COUNT(*) FROM dialog_outcomes"
        " WHERE ended_at >= :since AND ended_at < :until GROUP BY outcome, last_step",
        period,
    )
    by_outcome: dict[str, int] = {}
    ended_at: dict[tuple[str, str], int] = {}
    for outcome, step, count in outcome_rows:
        by_outcome[str(outcome)] = by_outcome.get(str(outcome), 0) + int(count)
        ended_at[(str(outcome), str(step))] = int(count)
    # The median in SQL (only the middle one or two rows come back), walking the index on
    # (outcome, duration_seconds, ended_at) in order.
    # An order after the bot's reminder ends as "recovered": still a completed conversation.
    recovered = by_outcome.get("recovered", 0)
    completed = by_outcome.get("completed", 0) + recovered
    median: float | None = None
    if completed:
        # SQLite's planner, once ANALYZE has run, prefers (outcome, ended_at) and sorts the
        # period's rows (ten times slower here): it is told which index to walk.
        durations = (
            "dialog_outcomes INDEXED BY ix_dialog_outcomes_durations"
            if runner.dialect == "sqlite"
            else "dialog_outcomes"
        )
        middle = await runner.fetch(
            f"SELECT duration_seconds FROM {durations} WHERE outcome IN ('completed', 'recovered')"  # noqa: S608
            " AND ended_at >= :since AND ended_at < :until ORDER BY duration_seconds"
            " LIMIT :count OFFSET :skip",
            {**period, "count": 2 - completed % 2, "skip": (completed - 1) // 2},
        )
        if middle:
            median = statistics.fmean(float(r[0]) for r in middle)
    offset = shop.local(since).utcoffset() or timedelta(0)
    day_rows = await runner.fetch(
        f"SELECT {_day_number(runner.dialect)} AS day, COUNT(*) FROM orders"  # noqa: S608
        " WHERE created_at >= :since AND created_at < :until GROUP BY day ORDER BY day",
        {**period, "offset": offset.total_seconds()},
    )
    per_day = {date(1970, 1, 1) + timedelta(days=int(d)): int(n) for d, n in day_rows}
    days: list[tuple[date, int]] = []
    first, last = shop.day(since), shop.day(max(since, until - 1))
    day = first
    while day <= last and len(days) < 1000:
        days.append((day, per_day.get(day, 0)))
        day += timedelta(days=1)

    conversations = sum(by_outcome.values())
    steps: list[StepNumbers] = []
    # The question steps in flow order. A conversation that ends at a "no" end (DECLINED)
    # is counted at the question that led there (the confirmation); the completed end is
    # the conversion itself.
    names = [name for name, step in flow.steps.items() if step.end is None]
    led_to = {
        target: name
        for name in names
        for target in _targets(flow.steps[name].next)
        if target in flow.steps and flow.steps[target].end is not None
    }
    for (outcome, step), count in list(ended_at.items()):
        if step in led_to:
            del ended_at[(outcome, step)]
            key = (outcome, led_to[step])
            ended_at[key] = ended_at.get(key, 0) + count
    known = set(names)
    # A conversation reached every step up to the one it ended at (the flow is a sequence);
    # a completed one reached them all. Ends at steps the flow no longer has count at the end.
    remaining = conversations
    for name in names:
        cancelled = ended_at.get(("cancelled", name), 0)
        abandoned = ended_at.get(("abandoned", name), 0)
        steps.append(StepNumbers(name, remaining, cancelled, abandoned))
        remaining -= cancelled + abandoned
    other_cancelled = sum(
        n for (o, s), n in ended_at.items() if o == "cancelled" and s not in known
    )
    other_abandoned = sum(
        n for (o, s), n in ended_at.items() if o == "abandoned" and s not in known
    )
    if other_cancelled or other_abandoned:
        steps.append(StepNumbers("(other)", remaining, other_cancelled, other_abandoned))
    orders = sum(per_day.values())
    return Stats(
        since=float(since),
        until=float(until),
        conversations=conversations,
        completed=completed,
        cancelled=by_outcome.get("cancelled", 0),
        abandoned=by_outcome.get("abandoned", 0),
        orders=orders,
        recovered=recovered,
        steps=tuple(steps),
        orders_per_day=tuple(days),
        median_seconds_to_order=median,
    )
