"""Business hours: whether the shop works at a moment, and when it opens next, said the way a
customer reads it ("завтра с 9:00"). Pure: the moment is an argument (the message time the
worker passes to the step), never the clock.
"""

from __future__ import annotations

import datetime
import zoneinfo

from orderbot.dialog.flow import BusinessHours

__all__ = ["next_opening", "when_text"]

_TODAY = {"ru": "сегодня", "en": "today", "ky": "бүгүн"}
_TOMORROW = {"ru": "завтра", "en": "tomorrow", "ky": "эртең"}
_FROM = {"ru": "{day} с {time}", "en": "{day} from {time}", "ky": "{day}, саат {time}"}
_WEEKDAY_NAMES = {
    "ru": ("в понедельник", "во вторник", "в среду", "в четверг", "в пятницу", "в субботу",
           "в воскресенье"),
    "en": ("on Monday", "on Tuesday", "on Wednesday", "on Thursday", "on Friday",
           "on Saturday", "on Sunday"),
    "ky": ("дүйшөмбү күнү", "шейшемби күнү", "шаршемби күнү", "бейшемби күнү", "жума күнү",
           "ишемби күнү", "жекшемби күнү"),
}  # fmt: skip


def next_opening(hours: BusinessHours, now: float) -> datetime.datetime | None:
    """None while the shop is open at ``now`` (unix seconds); else the local time it opens
    next (within two weeks; None too if it never does, rather than promising a date)."""
    zone = zoneinfo.ZoneInfo(hours.timezone)
    local = datetime.datetime.fromtimestamp(now, zone)
    minute = local.hour * 60 + local.minute
    for offset in range(15):
        day = local.date() + datetime.timedelta(days=offset)
        span = hours.week[day.weekday()]
        if span is None or day.isoformat() in hours.holidays:
            continue
        opens, closes = span
        if offset == 0 and opens <= minute < closes:
            return None
        if offset == 0 and minute >= closes:
            continue
        midnight = datetime.datetime.combine(day, datetime.time(), zone)
        return midnight + datetime.timedelta(minutes=opens)
    return None


def when_text(opening: datetime.datetime, now: float, language: str) -> str:
    """``opening`` relative to ``now`` in its own time zone: "сегодня с 9:00", "завтра с 9:00",
    "в понедельник с 9:00", or a date further on ("15.01 с 9:00")."""
    language = language if language in _FROM else "en"
    today = datetime.datetime.fromtimestamp(now, opening.tzinfo).date()
    days = (opening.date() - today).days
    if days == 0:
        day = _TODAY[language]
    elif days == 1:
        day = _TOMORROW[language]
    elif days < 7:
        day = _WEEKDAY_NAMES[language][opening.weekday()]
    else:
        day = opening.strftime("%d.%m")
    time = f"{opening.hour}:{opening.minute:02d}"
    return _FROM[language].format(day=day, time=time)
