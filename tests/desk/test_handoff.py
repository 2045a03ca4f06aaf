"""Tracking and operator handoff at the worker, before the dialog engine, on both profiles
(embedded SQLite; distributed RabbitMQ + Redis + PostgreSQL, skipped when those are down)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orderbot.cli import app
from orderbot.config import Settings
from orderbot.dialog.models import DialogState
from orderbot.storage import sql as db
from orderbot.storage.sqlite import SqliteDatabase
from tests.fakes.chat2desk import FakeState
from tests.support.desk_bots import FLOW as FLOW_FOR_TESTS
from tests.support.desk_bots import PROFILES, Bot, EmbeddedBot, drain_outbox, open_bot

ORDER = ["Hello", "Chui avenue 120, apt 5", "0555 123 456", "3", "yes"]


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def texts(entries: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in entries]


async def pending_inbound(bot: Bot) -> int:
    if isinstance(bot, EmbeddedBot):
        return int(
            await bot.db.run(
                lambda c: c.execute("SELECT count(*) FROM inbound_queue WHERE done = 0").fetchone()[
                    0
                ]
            )
        )
    return (await bot.runtime.broker.depths()).inbound  # type: ignore[attr-defined,no-any-return]


async def test_tracking_answers_only_for_the_customers_own_orders(
    profile: str, tmp_path: Path
) -> None:
    async with open_bot(profile, tmp_path) as bot:
        alice, bob = bot.client("alice"), bot.client("bob")
        await bot.say(alice, "Привет", "ул. Киевская 120, кв. 5", "0555 111 222", "2", "да")
        await bot.say(bob, "Привет", "ул. Токтогула 7", "0555 333 444", "4", "да")
        (alice_order,) = await bot.order_ids(alice)
        (bob_order,) = await bot.order_ids(bob)
        await bot.admin.set_status(alice_order, "confirmed", note="paid by card")

        (own,) = await bot.say(bob, f"/track {bob_order}")
        assert f"№{bob_order}" in own["text"]
        (listed,) = await bot.say(bob, "статус заказа")
        assert f"№{bob_order}" in listed["text"] and f"№{alice_order}" not in listed["text"]

        missing = 999_999_999
        (foreign,) = await bot.say(bob, f"/track {alice_order}")
        (nonexistent,) = await bot.say(bob, f"статус заказа {missing}")
        # Alice's number is answered exactly like a number that does not exist.
        assert foreign["text"].replace(str(alice_order), "N") == nonexistent["text"].replace(
            str(missing), "N"
        )
        bob_replies = [e for e in await bot.sent() if e["client_id"] == bob]
        for secret in ("Киевская", "111 222", "+996555111222", "paid by card", "подтвержд"):
            assert all(secret not in e["text"] for e in bob_replies), secret

        (alice_one,) = await bot.say(alice, f"/track {alice_order}")
        assert "подтверждён" in alice_one["text"]  # her history shows the change


async def test_tracking_mid_dialog_keeps_the_step(profile: str, tmp_path: Path) -> None:
    async with open_bot(profile, tmp_path) as bot:
        carol = bot.client("carol")
        await bot.say(carol, "Hello", "Chui avenue 120, apt 5")
        before = await bot.state(carol)
        answer, again = await bot.say(carol, "track my order")
        assert answer["text"] == "You have no orders yet."
        assert "phone" in again["text"]  # the question the dialog is at, asked again
        assert await bot.state(carol) == before
        (next_step,) = await bot.say(carol, "0555 123 456")
        assert "bottles" in next_step["text"]


async def test_handoff_on_chat2desk_transfers_and_keeps_silent_until_handback(
    profile: str, tmp_path: Path
) -> None:
    async with open_bot(profile, tmp_path, chat2desk_operator_id=77) as bot:
        dan = bot.client("dan")
        await bot.say(dan, "Hello", "Chui avenue 120, apt 5")
        before = await bot.state(dan)
        told, transfer = await bot.say(dan, "Operator")
        assert "operator" in told["text"]
        assert (transfer["kind"], transfer["route"]["operator_id"], transfer["client_id"]) == (
            "transfer",
            "77",
            dan,
        )
        assert transfer["route"]["transport"] == "whatsapp"

        assert await bot.say(dan, "hello?", "my phone is 0555 123 456") == []  # silent
        assert await bot.inbound_log(dan, 2) == [
            ("my phone is 0555 123 456", "HANDOFF"),
            ("hello?", "HANDOFF"),
        ]
        assert await pending_inbound(bot) == 0
        # The dialog is where it stood; the state only notes that an operator took it (so it
        # gets no reminder later).
        after = await bot.state(dan)
        assert before is not None and after is not None
        assert DialogState.from_json(after) == dataclasses.replace(
            DialogState.from_json(before), handed_off=True
        )

        await bot.admin.handback("chat2desk", dan)
        (back,) = (await bot.sent())[-1:]
        assert "operator has finished" in back["text"] and "phone" in back["text"]
        assert back["route"] == {"transport": "whatsapp", "channel_id": "3"}
        (next_step,) = await bot.say(dan, "0555 123 456")  # resumes at the step it left
        assert "bottles" in next_step["text"]


async def test_an_operator_writing_in_chat2desk_silences_the_bot_until_the_request_closes(
    profile: str, tmp_path: Path
) -> None:
    desk = FakeState()  # builds the webhook payloads Chat2Desk posts (inbox/outbox examples)
    async with open_bot(profile, tmp_path) as bot:
        eve = bot.client("eve")
        await bot.say(eve, "Hello", "Chui avenue 120, apt 5")
        before = await bot.state(eve)
        # The bot's own replies come back as autoreply outbox events: not a takeover.
        echo = desk.operator_says(eve, "Your phone number?")
        assert await bot.hear({**echo, "type": "autoreply", "operator_id": None}) == []
        assert await bot.say(eve, "0555 123 456") != []  # still the bot's conversation
        # An operator answers in the Chat2Desk desk: the bot falls silent, says nothing itself.
        assert await bot.hear(desk.operator_says(eve, "Hi, Anna here. Can I help?")) == []
        assert await bot.say(eve, "yes, change the address") == []
        assert await bot.say(eve, "thanks") == []
        assert (await bot.inbound_log(eve, 1))[0][1] == "HANDOFF"
        # The operator closes the request: the bot comes back at the step it left.
        (back,) = await bot.hear(desk.close_request(eve))
        assert "operator has finished" in back["text"] and "bottles" in back["text"]
        # close_request names no transport: Chat2Desk then uses the client's last one
        # (messages (POST), help.chat2desk.com.br)
        assert back["route"] == {}
        (next_step,) = await bot.say(eve, "3")
        assert "correct" in next_step["text"].lower() or "confirm" in next_step["text"].lower()
        # The same close delivered again changes nothing; a close with no handoff is silent.
        assert await bot.hear(desk.close_request(eve, request_id=2)) == []
        assert before is not None


async def test_handoff_on_telegram_sends_the_transcript_to_admins(
    profile: str, tmp_path: Path
) -> None:
    async with open_bot(profile, tmp_path, admin_chats=("500", "501")) as bot:
        chat = bot.client("9001")
        await bot.say(chat, "Hello", "Chui <avenue> 120 & co", channel="telegram")
        produced = await bot.say(chat, "/operator", channel="telegram")
        customer = [e for e in produced if e["client_id"] == chat]
        admins = {e["client_id"]: e["text"] for e in produced if e["client_id"] != chat}
        assert len(customer) == 1 and "operator" in customer[0]["text"]
        assert set(admins) == {"500", "501"}
        transcript = admins["500"]
        assert f"telegram:{chat}" in transcript
        assert f"orderbot handback {chat} --channel telegram" in transcript
        assert "Chui <avenue> 120 & co" in transcript and "/operator" in transcript
        assert await bot.say(chat, "anyone?", channel="telegram") == []


async def test_handoff_times_out_and_the_bot_resumes(profile: str, tmp_path: Path) -> None:
    async with open_bot(profile, tmp_path, handoff_timeout=60) as bot:
        erin = bot.client("erin")
        await bot.say(erin, "Hello", "Chui avenue 120, apt 5")
        await bot.say(erin, "manager")
        assert await bot.say(erin, "still there?") == []
        bot.clock.now += 61
        (back,) = await bot.say(erin, "hello?")  # the next message notices the timeout
        assert "operator has finished" in back["text"] and "phone" in back["text"]
        assert back["key"].startswith(f"handback:chat2desk:{erin}:")
        (next_step,) = await bot.say(erin, "0555 123 456")
        assert "bottles" in next_step["text"]

        # Housekeeping notices it without a message.
        await bot.say(erin, "оператор")
        bot.clock.now += 61
        assert await bot.admin.expire_handoffs() == 1
        (back,) = (await bot.sent())[-1:]
        assert back["client_id"] == erin and "operator has finished" in back["text"]
        assert await bot.admin.expire_handoffs() == 0
        (next_step,) = await bot.say(erin, "5")  # back with the bot, at the same step
        assert "correct" in next_step["text"]


async def test_a_timeout_noticed_by_housekeeping_and_a_message_at_once_comes_back_once(
    profile: str, tmp_path: Path
) -> None:
    # Housekeeping ends the expired handoff while the customer's message is being handled with
    # what it read before: both say the bot is back, under the same key, so the outbox keeps
    # (embedded) or the sender sends (distributed) one of them.
    async with open_bot(profile, tmp_path, handoff_timeout=60) as bot:
        erin = bot.client("erin")
        await bot.say(erin, "Hello", "Chui avenue 120, apt 5", "manager")
        key = f"chat2desk:{erin}"
        stale = await bot.desk.handoff(key)  # type: ignore[attr-defined]
        assert stale is not None
        bot.clock.now += 61
        assert await bot.admin.expire_handoffs() == 1
        (by_housekeeping,) = (await bot.sent())[-1:]

        async def read_before_the_handback(client_key: str) -> object:
            return stale if client_key == key else None

        bot.desk._store.handoff = read_before_the_handback  # type: ignore[attr-defined]
        await bot.say(erin, "hello?")
        comebacks = [e for e in await bot.sent() if "operator has finished" in e["text"]]
        assert {e["key"] for e in comebacks} == {by_housekeeping["key"]}
        assert {e["text"] for e in comebacks} == {by_housekeeping["text"]}


async def test_without_anyone_to_hand_to_the_dialog_goes_on(profile: str, tmp_path: Path) -> None:
    async with open_bot(profile, tmp_path) as bot:  # Telegram customer, no ADMIN_CHAT_IDS
        seven = bot.client("7")
        await bot.say(seven, "Hello", channel="telegram")
        told, asked = await bot.say(seven, "оператор", channel="telegram")
        assert "address" in asked["text"] and "operator" in told["text"].lower()
        (next_step,) = await bot.say(seven, "Chui avenue 120, apt 5", channel="telegram")
        assert "phone" in next_step["text"]


def test_cli_handback(settings: Settings, profile: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": settings.database_url}

    async def hand_off() -> str:
        if profile == "embedded":
            await db.upgrade_async(settings.database_url)
            async with SqliteDatabase(settings.sqlite_path) as database:
                return await _hand_off(EmbeddedBot(database, chat2desk_group_id=3))
        async with open_bot(profile, tmp_path, chat2desk_group_id=3) as bot:
            env.update(distributed_env(bot))
            fay = await _hand_off(bot)
            await drain_outbox(bot.namespace)  # type: ignore[attr-defined]
            done = await asyncio.to_thread(
                CliRunner().invoke, app, ["handback", fay, "--channel", "chat2desk"], env=env
            )
            assert done.exit_code == 0, done.output
            (back,) = await drain_outbox(bot.namespace)  # type: ignore[attr-defined]
            check_comeback(back.text, back.route)
            again = await asyncio.to_thread(CliRunner().invoke, app, ["handback", fay], env=env)
            assert again.exit_code == 1 and "not with an operator" in again.output
            (next_step,) = await bot.say(fay, "0555 123 456")  # resumes at the step it left
            assert "bottles" in next_step["text"]
            return fay

    fay = asyncio.run(hand_off())
    if profile != "embedded":
        return
    done = CliRunner().invoke(app, ["handback", fay, "--channel", "chat2desk"], env=env)
    assert done.exit_code == 0, done.output

    async def after() -> dict[str, Any]:
        async with SqliteDatabase(settings.sqlite_path) as database:
            return (await EmbeddedBot(database).sent())[-1]

    back = asyncio.run(after())
    check_comeback(back["text"], back["route"])
    again = CliRunner().invoke(app, ["handback", fay], env=env)
    assert again.exit_code == 1 and "not with an operator" in again.output


async def _hand_off(bot: Bot) -> str:
    fay = bot.client("fay")
    await bot.say(fay, "Hello", "Chui avenue 120, apt 5")
    _, transfer = await bot.say(fay, "/operator")
    assert transfer["route"]["group_id"] == "3"
    return fay


def check_comeback(text: str, route: dict[str, str]) -> None:
    assert "operator has finished" in text and "phone" in text
    assert route == {"transport": "whatsapp", "channel_id": "3"}


def distributed_env(bot: Bot) -> dict[str, str]:
    """The environment that points the CLI at a distributed bot's namespace."""
    settings = bot.settings  # type: ignore[attr-defined]
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "QUEUE_PREFIX": settings.queue_prefix,
        "QUEUE_SHARDS": str(settings.queue_shards),
    }


async def test_the_phone_chat2desk_knows_is_offered_on_whatsapp_only(
    profile: str, tmp_path: Path
) -> None:
    desk = FakeState()
    async with open_bot(profile, tmp_path) as bot:
        wa, tg = bot.client("wa"), bot.client("tg")
        desk.clients[wa] = {"phone": "996555123456", "name": "Aida"}
        desk.clients[tg] = {"phone": "[tg] 807892", "name": "Bek"}
        await bot.hear(desk.client_says(wa, "Здравствуйте"))
        (asked,) = await bot.hear(desk.client_says(wa, "Чуй 120, кв 5"))
        assert "+996555123456" in asked["text"] and "да" in asked["text"]
        (next_step,) = await bot.hear(desk.client_says(wa, "да"))
        assert "бутыл" in next_step["text"]
        await bot.hear(desk.client_says(wa, "2"))
        (summary,) = [e for e in await bot.sent() if e["client_id"] == wa][-1:]
        assert "+996 555 123 456" in summary["text"] or "996555123456" in summary["text"]

        await bot.hear(desk.client_says(tg, "Здравствуйте", transport="telegram"))
        (plain,) = await bot.hear(desk.client_says(tg, "Чуй 120, кв 5", transport="telegram"))
        assert "807892" not in plain["text"] and "Использовать" not in plain["text"]
        # another number is read as always
        (other,) = await bot.hear(desk.client_says(tg, "0555 987 654", transport="telegram"))
        assert "бутыл" in other["text"]


async def test_a_delivery_failure_chat2desk_reports_is_recorded_not_answered(
    profile: str, tmp_path: Path
) -> None:
    async with open_bot(profile, tmp_path) as bot:
        ann = bot.client("ann")
        await bot.say(ann, "Hello")
        before = await bot.state(ann)
        failure = {
            "hook_type": "outbox_status",
            "message_id": 77,
            "client_id": ann,
            "status": "failed",
            "error": "Message failed to send because more than 24 hours have passed",
        }
        assert await bot.hear(failure) == []
        ((text, state),) = await bot.inbound_log(ann, 1)
        assert state == "DELIVERY_FAILED" and "more than 24 hours" in text
        assert await bot.state(ann) == before


async def test_operators_chat_topic_carries_the_conversation_both_ways(
    profile: str, tmp_path: Path
) -> None:
    from orderbot.channels.telegram.client import TelegramChannel
    from orderbot.desk.base import Topic
    from tests.fakes.telegram import topic_update

    group = "-1002003004005"
    telegram = TelegramChannel(token="t", operator_chat=group)
    async with open_bot(profile, tmp_path, operator_chat=group) as bot:
        cust = bot.client("9100")
        await bot.say(cust, "Hello", "Chui avenue 120, apt 5", channel="telegram")
        produced = await bot.say(cust, "/operator", channel="telegram")
        told = [e for e in produced if e["client_id"] == cust]
        (card,) = [e for e in produced if e.get("kind") == "topic"]
        assert len(told) == 1 and "operator" in told[0]["text"]
        assert card["client_id"] == group and card["route"]["for"] == f"telegram:{cust}"
        assert "Chui avenue 120, apt 5" in card["text"] and "/back" in card["text"]
        # the sender created the topic (TelegramChannel._topic) and remembered it
        await bot.topics.remember(Topic(f"telegram:{cust}", 1007, {}))
        # the customer writes during the handoff: posted in the topic, not answered
        mirrored = await bot.say(cust, "is anyone there?", channel="telegram")
        assert [(e.get("kind"), e["text"]) for e in mirrored] == [("topic", "👤 is anyone there?")]
        # an operator answers in the topic: it reaches the customer, once
        update = topic_update(5001, int(group), 1007, "Hi! Anna here. Which bottles?")
        passed = await bot.put(telegram.parse_webhook(update, received_at=time.time()))
        assert [(e["client_id"], e["text"]) for e in passed] == [
            (cust, "Hi! Anna here. Which bottles?")
        ]
        assert await bot.put(telegram.parse_webhook(update, received_at=time.time())) == []
        # a photo from the operator goes to the customer as it is (copyMessage)
        photo = topic_update(5003, int(group), 1007, "")
        del photo["message"]["text"]
        photo["message"]["photo"] = [
            {"file_id": "p1", "file_unique_id": "u1", "width": 90, "height": 90}
        ]
        photo["message"]["caption"] = "this one?"
        (copied,) = await bot.put(telegram.parse_webhook(photo, received_at=time.time()))
        assert (copied["kind"], copied["client_id"], copied["text"]) == ("copy", cust, "this one?")
        assert copied["route"] == {"from_chat_id": group, "message_id": "50030"}
        # /back in the topic: the bot is back at the step it left, and says so in the topic
        back = await bot.put(
            telegram.parse_webhook(
                topic_update(5002, int(group), 1007, "/back"), received_at=time.time()
            )
        )
        comeback = [e for e in back if e["client_id"] == cust]
        note = [e for e in back if e.get("kind") == "topic"]
        assert len(comeback) == 1 and "phone" in comeback[0]["text"]
        assert "is back with the bot" in note[0]["text"]
        (next_step,) = await bot.say(cust, "0555 123 456", channel="telegram")
        assert "bottles" in next_step["text"]


def test_new_order_card_has_every_detail_in_the_shops_language() -> None:
    from orderbot.dialog.loader import load_flow
    from orderbot.orders.alerts import OperatorAlerts, read_status_button
    from orderbot.orders.models import OrderItem, OrderRecord
    from orderbot.orders.status import allowed_next

    printing = load_flow("printing")
    order = OrderRecord(
        idempotency_key="k",
        channel="telegram",
        client_id="9100",
        source="dialog",
        phone="+996555123456",
        address=None,
        quantity=None,
        language="en",
        data={
            "name": "Aida",
            "email": "a@example.com",
            "material": "PETG",
            "layer_height": "0.2 mm",
            "infill": "20%",
            "delivery": "pickup",
        },
        items=(OrderItem("fdm", "FDM printing", 1, "900.00"),),
        total="900.00",
        currency="KGS",
    )
    alerts = OperatorAlerts(operator_chat="-100500", flow=printing, language="ru")
    assert alerts  # an operators' chat alone is someone to tell
    (card,) = alerts.messages(42, order, now=1.0)
    assert (card.kind, card.client_id, card.key) == ("topic", "-100500", "new-order:42:topic")
    assert card.route["for"] == "telegram:9100"
    for shown in ("Новый заказ #42", "Материал: PETG", "Высота слоя: 0.2 mm", "Заполнение: 20%"):
        assert shown in card.text
    assert "Получение: pickup" in card.text and "Итого: 900.00 KGS" in card.text
    assert [read_status_button(printing, b) for b in card.buttons] == [
        (42, status) for status in allowed_next("new")
    ]


async def test_a_status_button_in_the_operators_chat_acts_as_that_operator(
    profile: str, tmp_path: Path
) -> None:
    from orderbot.channels.telegram.client import TelegramChannel
    from orderbot.desk.base import Topic
    from orderbot.orders.alerts import status_buttons
    from tests.fakes.telegram import topic_update

    group = "-1002003004005"
    telegram = TelegramChannel(token="t", operator_chat=group)
    async with open_bot(profile, tmp_path, operator_chat=group) as bot:
        cust = bot.client("9200")
        await bot.say(cust, *ORDER, channel="telegram")
        (order_id,) = await bot.order_ids(cust)
        await bot.topics.remember(Topic(f"telegram:{cust}", 1014, {}))
        label = status_buttons(FLOW_FOR_TESTS, order_id, "new", "ru")[0]  # confirmed
        press = topic_update(6001, int(group), 1014, "")
        query = {
            "id": "q-77",
            "from": {"id": 777, "is_bot": False, "first_name": "Anna"},
            "message": {**press["message"], "text": "card"},
            "data": label[:64],
        }
        produced = await bot.put(
            telegram.parse_webhook({"update_id": 6001, "callback_query": query}, received_at=1.0)
        )
        told = [e for e in produced if e["client_id"] == cust]
        (note,) = [e for e in produced if e.get("kind") == "topic"]
        assert len(told) == 1 and f"#{order_id}" in told[0]["text"]  # the customer is told
        assert "(Anna)" in note["text"] and note["route"]["callback_query_id"] == "q-77"
        assert note["buttons"] == list(status_buttons(FLOW_FOR_TESTS, order_id, "confirmed", "ru"))
        order = await bot.admin.get(order_id)
        assert order is not None and order["status"] == "confirmed"
        assert order["history"][-1]["actor"] == "telegram:Anna"


async def test_a_status_change_outside_whatsapps_window_is_marked_on_the_order(
    profile: str, tmp_path: Path
) -> None:
    from orderbot.orders.status import WINDOW_MARK

    async with open_bot(profile, tmp_path) as bot:
        wa = bot.client("wa-late")
        desk = FakeState()
        for text in ORDER:  # over wa_dialog, a business-API transport
            await bot.hear(desk.client_says(wa, text, transport="wa_dialog"))
        (order_id,) = await bot.order_ids(wa)
        inside = await bot.admin.set_status(order_id, "confirmed", note="paid")
        assert inside["history"][-1]["note"] == "paid"
        bot.clock.now += 25 * 3600  # the customer has been silent for a day and more
        before = len(await bot.sent())
        late = await bot.admin.set_status(order_id, "in_progress", note="printing")
        assert late["history"][-1]["note"] == "printing" + WINDOW_MARK
        # the notification is still queued (the sender holds it back and tells the operators)
        # and never carries the operators' mark
        notes = [e for e in (await bot.sent())[before:] if e["client_id"] == wa]
        assert len(notes) == 1 and "WhatsApp" not in notes[0]["text"]


async def test_a_chat2desk_customers_file_reaches_their_topic_as_a_link(
    profile: str, tmp_path: Path
) -> None:
    """Chat2Desk customers' files cannot be copied through Telegram: the topic gets the
    attachment's kind, name and link (Chat2Desk's file URL), with the words that came with it."""
    from orderbot.messages import Attachment, InboundMessage

    group = "-1002003004005"
    async with open_bot(profile, tmp_path, operator_chat=group) as bot:
        cust = bot.client("9300")
        await bot.say(cust, "Hello", "/operator")
        url = "https://storage.chat2desk.com/clients/photo_1.jpg"
        produced = await bot.put(
            InboundMessage(
                channel="chat2desk",
                client_id=cust,
                message_id=f"{bot.prefix}file-1",
                text="this bottle",
                received_at=time.time(),
                attachments=(Attachment(url=url, name="photo_1.jpg", kind="photo"),),
                route={"transport": "whatsapp", "channel_id": "3"},
            )
        )
        assert [(e.get("kind"), e["client_id"], e["text"]) for e in produced] == [
            ("topic", group, f"👤 this bottle\n📎 photo: photo_1.jpg {url}")
        ]
