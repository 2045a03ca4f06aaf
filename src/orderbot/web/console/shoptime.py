"""Times as the shop reads them: stored as UTC unix times, shown in ``SHOP_TIMEZONE``."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["ShopTime"]


class ShopTime:
    """Conversions between unix times and the shop's calendar (``zone``: an IANA name)."""

    def __init__(self, zone: str) -> None:
        self.zone_name = zone
        self.zone = ZoneInfo(zone)

    def local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, UTC).astimezone(self.zone)

    def format(self, ts: float | None) -> str:
        """``2026-12-07 18:05`` in the shop's zone; empty for None."""
        return "" if ts is None else self.local(ts).strftime("%Y-%m-%d %H:%M")

    def day(self, ts: float) -> date:
        return self.local(ts).date()

    def start_of(self, day: date) -> float:
        """The unix time the shop's ``day`` begins."""
        return datetime.combine(day, time(0), self.zone).timestamp()

    def end_of(self, day: date) -> float:
        """The unix time the shop's ``day`` ends (the next one begins)."""
        return self.start_of(day + timedelta(days=1))

    def today(self, now: float) -> date:
        return self.day(now)
