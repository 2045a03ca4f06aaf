"""The one reminder of an unfinished order on both profiles (issue 16, item 7): the
housekeeping job (:func:`orderbot.runtime.reminders.send_reminders`) over the embedded and the
distributed step store. Run twice, one reminder; none during a handoff or outside Chat2Desk's
24-hour window; it goes through the outbox, keyed, routed as the customer's last message."""

from __future__ import annotations

import asyncio
import time

import pytest

from orderbot.dialog.flow import Flow
from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import DialogOptions, DialogState
from orderbot.messages import InboundMessage
from orderbot.outbound import reminder_key
from orderbot.retry import RetryPolicy
from orderbot.runtime.reminders import send_reminders
from orderbot.state.base import HandoffChange, StepCommit
from tests.distributed.conftest import Backend, RecordingChannel, eventually

AFTER = 1800.0
ROUTE = {"transport": "wa_dialog", "channel_id": "5"}


@pytest.fixture(scope="module")
def water() -> Flow:
    return load_flow("water")


async def dialog_at_phone(
    backend: Backend, client: str, handoff: HandoffChange | None = None
) -> tuple[str, float]:
    """A customer who gave the address and went quiet: the client key and the time of the
    stored step."""
    message = InboundMessage(
        channel="chat2desk",
        client_id=f"{backend.namespace}-{client}",
        message_id=f"{backend.namespace}-{client}-m1",
        text="ул. Токтогула 1",
        received_at=time.time(),
        route=ROUTE,
    )
    await backend.inbound.put(message)
    (delivery,) = await backend.fetch_n(1)
    now = time.time()
    state = DialogState(
        step="WAITING_PHONE",
        language="ru",
        data={"address": "ул. Токтогула 1"},
        started_at=now - 10,
        updated_at=now,
        message_count=2,
        route=ROUTE,
    )
    await backend.store.commit_step(
        StepCommit(
            delivery=delivery,
            state=state.to_json(),
            state_name=state.step,
            replies=(),
            handoff=handoff,
        )
    )
    await backend.inbound.ack(delivery)
    return message.client_key, now


async def sent_by_sender(backend: Backend, expected: int) -> RecordingChannel:
    channel = RecordingChannel()
    sender = backend.sender(channel, RetryPolicy())
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        if expected:
            await eventually(lambda: len(channel.sent) >= expected)
        await asyncio.sleep(0.5)  # room for a second copy to show up
    finally:
        stop.set()
        await task
    return channel


async def test_an_idle_dialog_gets_one_reminder_however_often_housekeeping_runs(
    backend: Backend, water: Flow
) -> None:
    client_key, _ = await dialog_at_phone(backend, "r1")
    options = DialogOptions()
    assert await send_reminders(backend.store, water, options, time.time(), after=AFTER) == 0
    later = time.time() + AFTER + 60
    assert await send_reminders(backend.store, water, options, later, after=AFTER) == 1
    assert await send_reminders(backend.store, water, options, later, after=AFTER) == 0
    assert await send_reminders(backend.store, water, options, later + 600, after=AFTER) == 0

    channel = await sent_by_sender(backend, 1)
    (reminder,) = channel.sent
    assert reminder.key.startswith(f"reminder:{client_key}:")
    assert reminder.client_id == client_key.partition(":")[2]
    assert reminder.route == ROUTE  # the Chat2Desk transport of the customer's last message
    assert reminder.text.startswith("Вы не закончили заказ воды")
    assert "номер телефона" in reminder.text
    raw = await backend.store.load_state(client_key)
    assert raw is not None
    state = DialogState.from_json(raw)
    assert state.reminded and state.step == "WAITING_PHONE"


async def test_the_reminder_key_is_the_client_and_its_last_step(
    backend: Backend, water: Flow
) -> None:
    client_key, _ = await dialog_at_phone(backend, "r2")
    (idle,) = [
        d
        for d in await backend.store.idle_dialogs(0.0, time.time() + 1)
        if d.client_key == client_key
    ]
    later = time.time() + AFTER + 60
    assert await send_reminders(backend.store, water, DialogOptions(), later, after=AFTER) == 1
    channel = await sent_by_sender(backend, 1)
    assert [m.key for m in channel.sent] == [reminder_key(client_key, idle.last_step)]


async def test_no_reminder_while_an_operator_has_the_conversation(
    backend: Backend, water: Flow
) -> None:
    until = time.time() + 7200
    await dialog_at_phone(backend, "r3", HandoffChange(start=True, reason="asked", until=until))
    later = time.time() + AFTER + 60
    assert await send_reminders(backend.store, water, DialogOptions(), later, after=AFTER) == 0
    assert (await sent_by_sender(backend, 0)).sent == []


async def test_no_reminder_outside_the_chat2desk_24_hour_window(
    backend: Backend, water: Flow
) -> None:
    await dialog_at_phone(backend, "r4")
    options = DialogOptions(idle_timeout=48 * 3600.0)  # the dialog itself lives on
    too_late = time.time() + 24 * 3600 + 60
    assert await send_reminders(backend.store, water, options, too_late, after=AFTER) == 0
    in_time = time.time() + 23 * 3600
    assert await send_reminders(backend.store, water, options, in_time, after=AFTER) == 1


async def test_no_reminder_when_off(backend: Backend, water: Flow) -> None:
    await dialog_at_phone(backend, "r5")
    later = time.time() + AFTER + 60
    assert await send_reminders(backend.store, water, DialogOptions(), later, after=0) == 0
