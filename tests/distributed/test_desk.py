"""The distributed front desk and order admin where a crash or an outage falls between
PostgreSQL, RabbitMQ and Redis: nothing happens twice, nothing is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from orderbot.errors import BackendUnavailable
from orderbot.orders.alerts import OperatorAlerts
from orderbot.orders.status import InvalidTransition
from orderbot.storage.schema import handoffs, message_logs
from tests.support.desk_bots import DistributedBot, open_bot

ORDER = ["Hello", "Chui avenue 120, apt 5", "0555 123 456", "3", "yes"]


async def count(bot: DistributedBot, query: Any) -> int:
    async with bot.runtime.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


def fail_next_publish(bot: DistributedBot, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox's next publish fails as if RabbitMQ were down."""
    outbox = bot.runtime.outbox
    publish = outbox.put

    async def once(replies: Any) -> None:
        monkeypatch.setattr(outbox, "put", publish)
        raise BackendUnavailable("RabbitMQ: down (test)")

    monkeypatch.setattr(outbox, "put", once)


async def test_a_redone_handoff_step_changes_nothing_twice(tmp_path: Path) -> None:
    async with open_bot("distributed", tmp_path, chat2desk_operator_id=5) as bot:
        assert isinstance(bot, DistributedBot)
        gil = bot.client("gil")
        await bot.say(gil, "Hello")
        await bot.queue.put(_message(bot, gil, "redo-1", "/operator"))
        (delivery,) = await _fetch(bot)
        commit = await bot.desk.intercept(delivery, None, None)
        assert commit is not None and commit.handoff is not None and commit.handoff.start
        store, keys = bot.runtime.store, bot.runtime.keys
        await store.commit_step(commit)
        # A crash after the PostgreSQL transaction and the publish, before the Redis MULTI:
        await bot.runtime.redis.delete(
            keys.processed(delivery.message.dedupe_key), keys.handoff(delivery.message.client_key)
        )
        await store.commit_step(commit)
        await bot.runtime.inbound.ack(delivery)
        assert await count(bot, select(func.count()).where(handoffs.c.client_id == gil)) == 1
        logged = select(func.count()).where(
            message_logs.c.client_id == gil, message_logs.c.message_key == bot.prefix + "redo-1"
        )
        assert await count(bot, logged) == 1
        assert await bot.runtime.redis.exists(keys.handoff(delivery.message.client_key))
        keys_sent = [m.key for m in bot.published if m.client_id == gil]
        # Published twice under the same keys: the sender sends each key once.
        assert keys_sent.count(f"chat2desk:{bot.prefix}redo-1:0") == 2
        assert await bot.say(gil, "hello?") == []  # silent: handed off


async def test_new_order_alerts_are_published_again_by_a_redo_under_the_same_keys(
    tmp_path: Path,
) -> None:
    async with open_bot("distributed", tmp_path) as bot:
        assert isinstance(bot, DistributedBot)
        bot.runtime.store._alerts = OperatorAlerts(admin_chats=("900",), webhook=True)
        hal = bot.client("hal")
        await bot.say(hal, *ORDER[:-1])
        await bot.queue.put(_message(bot, hal, "confirm", "yes"))
        (delivery,) = await _fetch(bot)
        raw = await bot.runtime.store.load_state(delivery.message.client_key)
        from orderbot.dialog.engine import step
        from orderbot.dialog.models import DialogState
        from orderbot.worker import _commit_for

        state = DialogState.from_json(raw)  # type: ignore[arg-type]
        result = step(bot.worker._flow, state, "yes", bot.clock.now, options=bot.worker._options)
        commit = _commit_for(delivery, result.state, result.replies, result.effects)
        first = await bot.runtime.store.commit_step(commit)
        await bot.runtime.redis.delete(bot.runtime.keys.processed(delivery.message.dedupe_key))
        again = await bot.runtime.store.commit_step(commit)
        await bot.runtime.inbound.ack(delivery)
        assert first == again and await bot.order_ids(hal) == [first]
        alerts = [m.key for m in bot.published if m.key.startswith(f"new-order:{first}:")]
        assert (
            alerts
            == [
                f"new-order:{first}:telegram:900",
                f"new-order:{first}:webhook",
            ]
            * 2
        )


async def test_a_status_notification_not_published_is_published_by_housekeeping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_bot("distributed", tmp_path) as bot:
        assert isinstance(bot, DistributedBot)
        ivy = bot.client("ivy")
        await bot.say(ivy, *ORDER)
        (order_id,) = await bot.order_ids(ivy)
        fail_next_publish(bot, monkeypatch)
        order = await bot.admin.set_status(order_id, "confirmed")  # committed all the same
        assert order["status"] == "confirmed"
        assert not [m for m in bot.published if m.key.startswith("status:")]
        admin: Any = bot.admin
        assert await admin.republish_notifications() == 0  # its own publish may still come
        bot.clock.now += 31
        assert await admin.republish_notifications() == 1
        (note,) = [m for m in bot.published if m.key.startswith("status:")]
        assert note.key == f"status:{order_id}:{order['history'][-1]['id']}"
        assert note.client_id == ivy and f"#{order_id}" in note.text
        assert await admin.republish_notifications() == 0  # done
        # A change that was refused leaves nothing to publish; one that went out at once
        # leaves nothing pending.
        with pytest.raises(InvalidTransition):
            await bot.admin.set_status(order_id, "new")
        await bot.admin.set_status(order_id, "in_progress")
        bot.clock.now += 31
        assert await admin.republish_notifications() == 0
        assert len([m for m in bot.published if m.key.startswith("status:")]) == 2


async def test_a_handback_whose_publish_fails_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_bot("distributed", tmp_path) as bot:
        assert isinstance(bot, DistributedBot)
        jo = bot.client("jo")
        await bot.say(jo, "Hello", "оператор")
        assert [h["client_id"] for h in await bot.admin.handoffs()].count(jo) == 1
        fail_next_publish(bot, monkeypatch)
        with pytest.raises(BackendUnavailable):
            await bot.admin.handback("chat2desk", jo)
        assert await bot.say(jo, "still there?") == []  # still with the operator
        await bot.admin.handback("chat2desk", jo)
        (back,) = (await bot.sent())[-1:]
        assert back["key"].startswith(f"handback:chat2desk:{jo}:") and "address" in back["text"]
        (next_step,) = await bot.say(jo, "Chui avenue 120, apt 5")
        assert "phone" in next_step["text"]


async def test_handoff_flags_are_repaired_both_ways(tmp_path: Path) -> None:
    async with open_bot("distributed", tmp_path) as bot:
        assert isinstance(bot, DistributedBot)
        redis, keys = bot.runtime.redis, bot.runtime.keys
        kim, lee = bot.client("kim"), bot.client("lee")
        await bot.say(kim, "Hello", "оператор")
        await bot.say(lee, "Hello", "оператор")
        # Redis lost kim's flag: housekeeping sets it again from PostgreSQL.
        await redis.delete(keys.handoff(f"chat2desk:{kim}"))
        admin: Any = bot.admin
        assert await admin.restore_handoff_flags() >= 1
        assert await bot.say(kim, "hello?") == []
        # lee's row went (a handback that could not clear the flag): the flag is cleared.
        async with bot.runtime.engine.begin() as conn:
            await conn.execute(delete(handoffs).where(handoffs.c.client_id == lee))
        (next_step,) = await bot.say(lee, "Chui avenue 120, apt 5")
        assert "phone" in next_step["text"]
        assert not await redis.exists(keys.handoff(f"chat2desk:{lee}"))


def _message(bot: DistributedBot, client: str, mid: str, text: str) -> Any:
    import time

    from orderbot.messages import InboundMessage

    return InboundMessage(
        channel="chat2desk",
        client_id=client,
        message_id=bot.prefix + mid,
        text=text,
        received_at=time.time(),
        route={"transport": "whatsapp", "channel_id": "3"},
    )


async def _fetch(bot: DistributedBot) -> list[Any]:
    import asyncio
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = await bot.queue.fetch(1)
        if got:
            await bot.queue.begin(got[0])
            return got
        await asyncio.sleep(0.05)
    raise AssertionError("no delivery")
