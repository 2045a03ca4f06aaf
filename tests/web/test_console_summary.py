"""The daily summary to the admin chat (DAILY_SUMMARY_AT): its text, when it is due, and, on a
real embedded server with the fake Telegram, that each admin chat gets it once a day however
often it is queued."""

from __future__ import annotations

from datetime import date, time

import pytest

from orderbot.channels.telegram.client import TelegramChannel
from orderbot.config import Settings
from orderbot.runtime.embedded import EmbeddedRuntime
from orderbot.web.app import create_app
from orderbot.web.console.services import services_for
from orderbot.web.console.shoptime import ShopTime
from orderbot.web.console.stats import Stats
from orderbot.web.console.summary import DailySummary, due_day, parse_time_of_day, summary_text
from tests.fakes.telegram import TOKEN, FakeTelegram
from tests.support.console import wait_for
from tests.support.servers import serving

ADMIN_CHAT = 4242
SHOP = ShopTime("Asia/Bishkek")


def test_time_of_day_and_when_it_is_due() -> None:
    assert parse_time_of_day("") is None
    assert parse_time_of_day("20:30") == time(20, 30)
    for bad in ("8pm", "25:00", "20:3"):
        with pytest.raises(ValueError):  # noqa: PT011 - the message is for people
            parse_time_of_day(bad)
    evening = SHOP.start_of(date(2026, 12, 7)) + 20 * 3600 + 60  # 20:01 in Bishkek
    assert due_day(evening, time(20, 0), SHOP) == date(2026, 12, 7)
    assert due_day(evening - 120, time(20, 0), SHOP) is None


def test_summary_text() -> None:
    stats = Stats(0, 86400, 10, 4, 3, 3, 4, (), (), 330.0)
    text = summary_text(date(2026, 12, 7), stats, {"new": 2, "ready": 1, "confirmed": 0}, 1)
    assert text.splitlines() == [
        "Daily summary, 07.12.2026 (last 24 h)",
        "Orders: 4",
        "Conversations: 10 (conversion 40 %)",
        "Cancelled: 3, abandoned: 3",
        "Median time to order: 6 min",
        "Open orders: new 2, ready 1",
        "Replies not delivered (dead letters): 1",
    ]


async def test_each_admin_chat_gets_it_once_a_day(settings: Settings) -> None:
    async with FakeTelegram() as telegram:
        configured = settings.model_copy(
            update={
                "telegram_bot_token": TOKEN,
                "admin_chat_ids": str(ADMIN_CHAT),
                "daily_summary_at": "00:00",  # always past: due at once
            }
        )
        channels = {
            "telegram": TelegramChannel(token=TOKEN, api_url=telegram.url, chat_interval=0.0)
        }
        runtime = EmbeddedRuntime(configured, channels=channels)
        async with serving(create_app(runtime)):
            await wait_for(lambda: telegram.texts(ADMIN_CHAT))
            (text,) = telegram.texts(ADMIN_CHAT)
            assert text.startswith("Daily summary, ") and "Orders: 0" in text

            # Another process (or a restart) queues today's again: the key keeps it one.
            svc = services_for(runtime, configured)
            again = DailySummary(
                svc,
                at=time(0, 0),
                chats=(str(ADMIN_CHAT),),
                depth=lambda: _zero(),
            )
            assert await again.send_if_due()
            assert not await again.send_if_due()  # this process: once a day
            rows = await runtime.db.run(
                lambda c: c.execute(
                    "SELECT COUNT(*) FROM outbox WHERE key LIKE 'daily-summary:%'"
                ).fetchone()[0]
            )
            assert rows == 1
            await svc.runner.aclose()
        assert len(telegram.texts(ADMIN_CHAT)) == 1


async def _zero() -> int:
    return 0
