"""The embedded runtime's housekeeping."""

from __future__ import annotations

import asyncio

from orderbot.config import Settings
from orderbot.runtime.embedded import EmbeddedRuntime
from tests.test_sqlite_queues import inbound


async def handle(runtime: EmbeddedRuntime, client: str, mid: str, text: str) -> None:
    await runtime.inbound.put(inbound(client, mid, text))
    for delivery in await runtime.inbound.fetch(10):
        await runtime.worker.handle(delivery)


async def test_idle_dialogs_are_recorded_as_abandoned_once(settings: Settings) -> None:
    settings = settings.model_copy(update={"dialog_idle_timeout": 1.0})
    async with EmbeddedRuntime(settings) as runtime:
        await handle(runtime, "1", "a", "Здравствуйте")
        await handle(runtime, "1", "b", "ул. Токтогула 1")  # now waiting for the phone
        assert await runtime._abandon_idle_dialogs() == 0  # not idle yet
        await asyncio.sleep(0.6)
        await handle(runtime, "2", "c", "Hello")
        await asyncio.sleep(0.5)  # client 1 idle for 1.1 s, client 2 for 0.5 s
        assert await runtime._abandon_idle_dialogs() == 1

        def outcomes(conn):  # type: ignore[no-untyped-def]
            return conn.execute(
                "SELECT client_id, outcome, last_step, message_count FROM dialog_outcomes"
            ).fetchall()

        assert await runtime.db.run(outcomes) == [("1", "abandoned", "WAITING_PHONE", 2)]
        # the customer comes back: a fresh dialog, and no second abandoned row
        await handle(runtime, "1", "e", "Здравствуйте")
        assert await runtime.db.run(outcomes) == [("1", "abandoned", "WAITING_PHONE", 2)]
        states = await runtime.db.run(
            lambda c: c.execute("SELECT client_key FROM dialog_states ORDER BY 1").fetchall()
        )
        assert states == [("chat2desk:1",), ("chat2desk:2",)]
