"""The embedded runtime's housekeeping."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest

from orderbot.channels.base import Channel
from orderbot.config import Settings
from orderbot.desk.sqlite import insert_outbox
from orderbot.messages import OutboundMessage
from orderbot.metrics import HOUSEKEEPING_FAILURES
from orderbot.runtime.embedded import EmbeddedRuntime
from orderbot.runtime.reminders import send_reminders
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


class HangingChannel(Channel):
    """A send that never returns (a call stuck beyond any timeout)."""

    name = "chat2desk"

    def parse_webhook(self, payload: object, *, received_at: float) -> None:
        return None

    async def send(self, message: OutboundMessage) -> None:
        await asyncio.Event().wait()


async def test_the_embedded_sender_honours_shutdown_timeout(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Drift fixed with the shared runtime base: the embedded sender waited its own default
    # (10 s) for a stuck send at shutdown, whatever SHUTDOWN_TIMEOUT said.
    settings = settings.model_copy(update={"shutdown_timeout": 0.3})
    reply = OutboundMessage(
        key="k:0", channel="chat2desk", client_id="1", text="hi", created_at=time.time()
    )
    async with EmbeddedRuntime(settings, channels={"chat2desk": HangingChannel()}) as runtime:
        await runtime.db.run(lambda conn: insert_outbox(conn, reply, time.time()))
        runtime.start()
        for _ in range(500):
            if runtime.sender.in_hand == 1:
                break
            await asyncio.sleep(0.01)
        assert runtime.sender.in_hand == 1
        with caplog.at_level("WARNING", logger="orderbot"):
            await runtime.stop()
    assert "1 send(s) still in flight after 0.3s" in caplog.text


async def test_a_failing_housekeeping_job_is_counted_and_the_others_still_run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each embedded housekeeping job runs on its own, as on the distributed profile: the
    first job (pruning the inbound queue) failing still lets the upload cleanup run."""
    settings = settings.model_copy(update={"upload_retention": 60.0})
    async with EmbeddedRuntime(settings) as runtime:
        upload = runtime.files.upload_dir / ("0" * 64 + ".stl")
        upload.parent.mkdir(parents=True, exist_ok=True)
        upload.write_bytes(b"solid x\nendsolid x\n")
        old = time.time() - 3600
        os.utime(upload, (old, old))

        async def broken() -> int:
            raise RuntimeError("housekeeping bug (test)")

        monkeypatch.setattr(runtime.inbound, "prune", broken)
        failures = HOUSEKEEPING_FAILURES.labels(job="inbound_prune")
        before = failures._value.get()
        with caplog.at_level(logging.ERROR, logger="orderbot"):
            runtime.start()  # housekeeping runs at once, then every PRUNE_INTERVAL
            try:
                for _ in range(200):
                    if not upload.exists():
                        break
                    await asyncio.sleep(0.05)
            finally:
                await runtime.stop()
        assert not upload.exists()
        assert failures._value.get() - before == 1
        assert "housekeeping job inbound_prune failed" in caplog.text


async def test_a_reminded_dialog_resumes_and_its_order_counts_as_recovered(
    settings: Settings,
) -> None:
    # Issue 16, item 7, through the worker: the reminder re-asks the step, once; the answer
    # goes on from there; the order is recorded as "recovered", with its id.
    async with EmbeddedRuntime(settings) as runtime:
        await handle(runtime, "1", "a", "Здравствуйте")
        await handle(runtime, "1", "b", "ул. Токтогула 1")  # now waiting for the phone
        await handle(runtime, "2", "c", "Здравствуйте")
        await handle(runtime, "2", "d", "/cancel")  # no dialog left to remind of
        assert await runtime.send_reminders() == 0  # not idle yet
        later = time.time() + settings.reminder_after + 60
        for _ in range(2):  # housekeeping twice: one reminder
            await send_reminders(
                runtime.store,
                runtime.flow,
                runtime.options,
                later,
                after=settings.reminder_after,
            )

        def reminders(conn):  # type: ignore[no-untyped-def]
            return conn.execute(
                "SELECT client_id, payload FROM outbox WHERE key LIKE 'reminder:%'"
            ).fetchall()

        (row,) = await runtime.db.run(reminders)
        assert row[0] == "1"
        assert "Вы не закончили заказ воды" in OutboundMessage.from_json(row[1]).text
        await handle(runtime, "1", "e", "0555 123 456")
        await handle(runtime, "1", "f", "2")
        await handle(runtime, "1", "g", "Да")

        def outcomes(conn):  # type: ignore[no-untyped-def]
            return conn.execute(
                "SELECT client_id, outcome, order_id IS NOT NULL FROM dialog_outcomes ORDER BY id"
            ).fetchall()

        assert await runtime.db.run(outcomes) == [("2", "cancelled", 0), ("1", "recovered", 1)]
