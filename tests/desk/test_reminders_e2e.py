"""The one reminder of an unfinished order, whole conversations through the worker and the
front desk on both profiles (issue 16, item 7): one reminder however often housekeeping runs,
none after a cancel, an order or a handoff; the answer resumes the step; the order counts as
recovered."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orderbot.dialog.models import DialogState
from orderbot.runtime.reminders import send_reminders
from tests.support.desk_bots import FLOW, OPTIONS, PROFILES, open_bot

pytestmark = [pytest.mark.timeout(60)]

AFTER = 1800.0


@pytest.mark.parametrize("profile", PROFILES)
async def test_one_reminder_resumes_the_step_and_the_order_counts_as_recovered(
    profile: str, tmp_path: Path
) -> None:
    async with open_bot(profile, tmp_path) as bot:
        lee, gil, ann, dan, bob = (bot.client(n) for n in ("lee", "gil", "ann", "dan", "bob"))
        await bot.say(lee, "Hello", "Chui avenue 120, apt 5")  # now asked for the phone
        await bot.say(gil, "Hello", "/cancel")
        await bot.say(ann, "Hello", "/operator")  # with an operator
        await bot.say(dan, "Hello", "/operator")  # an operator took it and gave it back:
        await bot.admin.handback("chat2desk", dan)  # no reminder of that dialog either
        await bot.say(bob, "Hello", "Chui avenue 1", "0555 123 456", "1", "yes")  # ordered
        assert await bot.order_ids(bob)
        sent_before = len(await bot.sent())

        later = time.time() + AFTER + 60
        reminded = [
            await send_reminders(bot.store, FLOW, OPTIONS, later, after=AFTER) for _ in range(3)
        ]
        new = (await bot.sent())[sent_before:]
        assert reminded == [1, 0, 0]  # housekeeping three times: one reminder
        (reminder,) = new
        assert reminder["client_id"] == lee
        assert reminder["key"].startswith(f"reminder:chat2desk:{lee}:")
        assert reminder["route"] == {"transport": "whatsapp", "channel_id": "3"}
        assert reminder["text"].startswith("You haven't finished your water order")
        assert "phone" in reminder["text"]
        raw = await bot.state(lee)
        assert raw is not None and DialogState.from_json(raw).reminded

        (asked,) = await bot.say(lee, "0555 123 456")  # the reminded step's answer
        assert "how many" in asked["text"].lower()
        await bot.say(lee, "2", "yes")
        assert len(await bot.order_ids(lee)) == 1
        assert await bot.outcomes(lee) == [("recovered", True)]
        assert await bot.outcomes(bob) == [("completed", True)]
        raw = await bot.state(dan)
        assert raw is not None and DialogState.from_json(raw).handed_off
