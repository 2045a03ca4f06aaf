"""Telegram end to end: webhook -> inbound queue -> worker -> outbox -> sender -> fake Bot API,
long polling into the same queue, and the ``orderbot telegram`` commands against the fake."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orderbot.channels.telegram.client import TelegramChannel
from orderbot.channels.telegram.updates import poll_updates
from orderbot.cli import app
from orderbot.config import Settings
from orderbot.runtime.embedded import EmbeddedRuntime
from orderbot.web.app import create_app
from tests.fakes.telegram import TOKEN, FakeTelegram, ThreadedFakeTelegram, text_update
from tests.support.servers import serving

CHAT = 777001
SECRET = "e2e-secret_1"
HEADERS = {"X-Telegram-Bot-Api-Secret-Token": SECRET}

runner = CliRunner()


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def telegram_channel(fake: FakeTelegram) -> TelegramChannel:
    # Pacing at 10 ms per chat keeps the test fast; the 1 s default is tested in test_telegram.
    return TelegramChannel(
        token=TOKEN, api_url=fake.url, webhook_secret=SECRET, chat_interval=0.01, timeout=5
    )


async def orders(runtime: EmbeddedRuntime) -> list[tuple[Any, ...]]:
    rows = await runtime.db.run(
        lambda c: c.execute(
            "SELECT client_id, channel, phone, address, quantity, status FROM orders"
        ).fetchall()
    )
    return [tuple(r) for r in rows]


async def test_water_order_over_telegram(settings: Settings, fake: FakeTelegram) -> None:
    runtime = EmbeddedRuntime(settings, channels={"telegram": telegram_channel(fake)})
    address = "ул. Киевская 120, кв. 5 & офис_3 <вход со двора>"
    async with (
        serving(create_app(runtime)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):

        async def say(update: dict[str, Any], until: str) -> list[str]:
            """Post ``update``; wait for a reply containing ``until``; return the new replies."""
            before = len(fake.texts(CHAT))
            r = await client.post("/webhook/telegram", json=update, headers=HEADERS)
            assert r.status_code == 200, r.text
            await fake.wait_for(lambda: any(until in t for t in fake.texts(CHAT)[before:]))
            return fake.texts(CHAT)[before:]

        await say(text_update(1, CHAT, "/start"), "адрес")
        await say(text_update(2, CHAT, address), "телефон")
        await say(text_update(3, CHAT, "0555 123 456"), "бутылей")
        (summary,) = await say(text_update(4, CHAT, "2"), "Всё верно?")
        assert address in summary  # the customer's "&", "_" and "<...>" arrive intact
        last = fake.sent(CHAT)[-1]
        buttons = [b["text"] for row in last["reply_markup"]["inline_keyboard"] for b in row]
        assert buttons == ["Да", "Нет"]

        # Telegram redelivers an update it thinks failed: answered once
        r = await client.post("/webhook/telegram", json=text_update(4, CHAT, "2"), headers=HEADERS)
        assert r.json()["duplicate"] is True

        sent_before = len(fake.texts(CHAT))
        r = await client.post("/webhook/telegram", json=fake.press(5, CHAT, "Да"), headers=HEADERS)
        assert r.status_code == 200
        await fake.wait_for(lambda: len(fake.texts(CHAT)) > sent_before)
        await fake.wait_for(lambda: bool(fake.params("answerCallbackQuery")))
        assert fake.params("answerCallbackQuery") == [{"callback_query_id": "cq-5"}]
        await asyncio.sleep(0.3)  # whatever else was going to arrive has arrived
        assert fake.texts(CHAT).count(summary) == 1  # the redelivered "2" was not answered
        assert await orders(runtime) == [
            (str(CHAT), "telegram", "+996555123456", address, 2, "new")
        ]


async def test_a_429_is_waited_out_and_the_reply_arrives(
    settings: Settings, fake: FakeTelegram
) -> None:
    runtime = EmbeddedRuntime(settings, channels={"telegram": telegram_channel(fake)})
    fake.rate_limit_next(1, retry_after=1)
    async with (
        serving(create_app(runtime)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        r = await client.post(
            "/webhook/telegram", json=text_update(1, CHAT, "/start"), headers=HEADERS
        )
        assert r.status_code == 200
        started = asyncio.get_running_loop().time()
        await fake.wait_for(lambda: len(fake.texts(CHAT)) >= 1, timeout=15)
        assert asyncio.get_running_loop().time() - started >= 0.9
        assert len(fake.params("sendMessage")) >= 2  # the 429, then the accepted one


async def test_long_polling_feeds_the_queue(settings: Settings, fake: FakeTelegram) -> None:
    channel = telegram_channel(fake)
    address = "ул. Киевская 120, кв. 5"
    async with EmbeddedRuntime(settings, channels={"telegram": channel}) as runtime:
        runtime.start()
        stop = asyncio.Event()
        fake.feed(text_update(41, CHAT, "/start"), {"update_id": 42, "edited_message": {}})
        polling = asyncio.create_task(poll_updates(channel, runtime.inbound.put, stop, timeout=1))
        await fake.wait_for(lambda: any("адрес" in t for t in fake.texts(CHAT)))
        fake.feed(text_update(43, CHAT, address))
        await fake.wait_for(lambda: any("телефон" in t for t in fake.texts(CHAT)))
        # the next getUpdates confirms everything stored so far
        await fake.wait_for(lambda: any(p.get("offset") == 44 for p in fake.params("getUpdates")))
        stop.set()
        assert await asyncio.wait_for(polling, 5) == 2
        answered = len(fake.texts(CHAT))

        # A process that stopped before confirming gets the update again: stored once, not
        # answered twice.
        fake.feed(text_update(43, CHAT, address))
        calls = len(fake.params("getUpdates"))
        stop = asyncio.Event()
        polling = asyncio.create_task(poll_updates(channel, runtime.inbound.put, stop, timeout=1))
        await fake.wait_for(
            lambda: any(p.get("offset") == 44 for p in fake.params("getUpdates")[calls:])
        )
        stop.set()
        assert await asyncio.wait_for(polling, 5) == 0  # fetched again, but a duplicate
        await asyncio.sleep(0.3)
        assert len(fake.texts(CHAT)) == answered
    assert all(
        p["allowed_updates"] == ["message", "callback_query"] for p in fake.params("getUpdates")
    )


async def test_polling_stops_on_a_permanent_error(fake: FakeTelegram) -> None:
    fake.webhook = {"url": "https://bot.example.com/webhook/telegram"}
    async with telegram_channel(fake) as channel:
        with pytest.raises(Exception, match="409"):
            await poll_updates(
                channel, lambda m: asyncio.sleep(0, True), asyncio.Event(), timeout=1
            )


# -- the CLI ---------------------------------------------------------------------------------


def test_set_and_delete_webhook(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with ThreadedFakeTelegram() as server:
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("TELEGRAM_API_URL", server.url)
        monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", SECRET)
        url = "https://bot.example.com/webhook/telegram"
        result = runner.invoke(app, ["telegram", "set-webhook", url])
        assert result.exit_code == 0, result.output
        webhook = server.call(lambda: server.fake.webhook)
        assert webhook["url"] == url
        assert webhook["secret_token"] == SECRET
        assert webhook["allowed_updates"] == ["message", "callback_query"]
        commands = server.call(lambda: server.fake.commands)
        assert [c["command"] for c in commands[""]] == [
            "start",
            "services",
            "order",
            "track",
            "help",
            "cancel",
        ]
        result = runner.invoke(app, ["telegram", "delete-webhook"])
        assert result.exit_code == 0, result.output
        assert server.call(lambda: server.fake.webhook) is None
        # Telegram only calls HTTPS webhooks
        assert runner.invoke(app, ["telegram", "set-webhook", "http://x"]).exit_code == 2


@pytest.mark.parametrize(
    "command", [["set-webhook", "https://x.example"], ["delete-webhook"], ["poll"]]
)
def test_commands_need_the_token(settings: Settings, command: list[str]) -> None:
    result = runner.invoke(app, ["telegram", *command])
    assert result.exit_code == 2
    assert "TELEGRAM_BOT_TOKEN" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_api_errors_are_one_line(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with ThreadedFakeTelegram() as server:
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "1:wrong")
        monkeypatch.setenv("TELEGRAM_API_URL", server.url)
        result = runner.invoke(app, ["telegram", "delete-webhook"])
        assert result.exit_code != 0
        assert "1:wrong" not in str(result.exception or "") + result.output


async def test_poll_command_answers_and_stops_on_ctrl_c(
    settings: Settings, fake: FakeTelegram
) -> None:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields} | {
        "DATABASE_URL": settings.database_url,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": fake.url,
        "SHUTDOWN_TIMEOUT": "5",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orderbot",
        "telegram",
        "poll",
        "--timeout",
        "1",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await fake.wait_for(lambda: bool(fake.params("getUpdates")), timeout=30)
        assert fake.commands  # setMyCommands at start
        fake.feed(text_update(1, CHAT, "/start"))
        await fake.wait_for(lambda: len(fake.texts(CHAT)) >= 1, timeout=15)
        process.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert "stopped; 1 message(s) taken" in stdout.decode()


@pytest.mark.parametrize(
    "command", [[], ["set-webhook"], ["delete-webhook"], ["poll"]], ids=lambda c: " ".join(c)
)
def test_telegram_commands_have_help(command: list[str]) -> None:
    result = runner.invoke(app, ["telegram", *command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


GROUP = -1002003004005


async def test_a_status_button_on_the_order_card_in_the_operators_chat(
    settings: Settings, fake: FakeTelegram
) -> None:
    """Issue 17, end to end on the embedded profile: a Telegram customer's order puts a card in
    their topic of the operators' chat (createForumTopic, then sendMessage with
    message_thread_id and the status buttons); an operator presses one (a callback_query of the
    operators' chat): the order moves on with that operator as its actor, the customer is told
    once (a redelivered press changes nothing), and the topic gets the outcome with the next
    buttons."""
    from orderbot.dialog.loader import load_flow
    from orderbot.orders.alerts import status_buttons

    water = load_flow("water")  # the default FLOW
    telegram = TelegramChannel(
        token=TOKEN,
        api_url=fake.url,
        webhook_secret=SECRET,
        chat_interval=0.01,
        timeout=5,
        operator_chat=str(GROUP),
    )
    runtime = EmbeddedRuntime(settings, channels={"telegram": telegram})
    async with (
        serving(create_app(runtime)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):

        async def post(update: dict[str, Any]) -> None:
            r = await client.post("/webhook/telegram", json=update, headers=HEADERS)
            assert r.status_code == 200, r.text

        for n, text in enumerate(["/start", "Chui avenue 120, apt 5", "0555 123 456", "2"], 1):
            await post(text_update(n, CHAT, text))
        await fake.wait_for(lambda: any("Всё верно?" in t for t in fake.texts(CHAT)))
        await post(fake.press(5, CHAT, "Да"))
        await fake.wait_for(lambda: any("Новый заказ #1" in t for t in fake.texts(GROUP)))
        await fake.wait_for(lambda: any("Заказ №1 принят" in t for t in fake.texts(CHAT)))
        ((thread, topic),) = fake.topics.items()
        assert topic["name"] == f"telegram:{CHAT}" and topic["chat_id"] == GROUP
        (card,) = [p for p in fake.sent(GROUP) if "Новый заказ #1" in p["_message"]["text"]]
        assert card["message_thread_id"] == thread
        labels = [b["text"] for row in card["reply_markup"]["inline_keyboard"] for b in row]
        assert labels == list(status_buttons(water, 1, "new", "ru"))
        confirm = labels[0]
        assert confirm == "#1 → подтверждён"

        told_before = len(fake.texts(CHAT))
        press = fake.press(6, GROUP, confirm, thread_id=thread)
        assert press["callback_query"]["from"]["first_name"] == "Anna"
        await post(press)
        await fake.wait_for(lambda: any("(Anna)" in t for t in fake.in_topic(thread)))
        await fake.wait_for(lambda: len(fake.texts(CHAT)) > told_before)
        # Telegram redelivers the press (our 200 was lost): nothing happens twice
        r = await client.post("/webhook/telegram", json=press, headers=HEADERS)
        assert r.json()["duplicate"] is True
        await asyncio.sleep(0.3)  # whatever else was going to arrive has arrived
        (told,) = fake.texts(CHAT)[told_before:]
        assert told == "Заказ №1 подтверждён."
        (outcome,) = [p for p in fake.sent(GROUP) if "(Anna)" in p["_message"]["text"]]
        assert outcome["message_thread_id"] == thread
        assert "#1 → подтверждён" in outcome["_message"]["text"]
        labels = [b["text"] for row in outcome["reply_markup"]["inline_keyboard"] for b in row]
        assert labels == list(status_buttons(water, 1, "confirmed", "ru"))
        assert fake.params("answerCallbackQuery")[-1] == {"callback_query_id": "cq-6"}
        assert len(fake.params("createForumTopic")) == 1
        order = await runtime.admin.get(1)
        assert order is not None and order["status"] == "confirmed"
        assert order["history"][-1]["actor"] == "telegram:Anna"


async def test_a_customers_files_during_a_handoff_reach_their_topic_as_files(
    settings: Settings, fake: FakeTelegram
) -> None:
    """Issue 17: a Telegram customer handed off sends a photo and a document; each is copied as
    it is into their topic of the operators' chat (copyMessage from the customer's chat, with
    the topic's message_thread_id, caption included), and the bot says nothing to them."""
    from tests.fakes.telegram import document_update, photo_update

    telegram = TelegramChannel(
        token=TOKEN,
        api_url=fake.url,
        webhook_secret=SECRET,
        chat_interval=0.01,
        timeout=5,
        operator_chat=str(GROUP),
    )
    runtime = EmbeddedRuntime(settings, channels={"telegram": telegram})
    async with (
        serving(create_app(runtime)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):

        async def post(update: dict[str, Any]) -> None:
            r = await client.post("/webhook/telegram", json=update, headers=HEADERS)
            assert r.status_code == 200, r.text

        await post(text_update(1, CHAT, "/start"))
        await post(text_update(2, CHAT, "/operator"))
        await fake.wait_for(lambda: bool(fake.topics) and bool(fake.texts(GROUP)))
        ((thread, _),) = fake.topics.items()
        told = len(fake.texts(CHAT))
        photo = photo_update(3, CHAT, caption="like this one")
        document = document_update(4, CHAT, file_name="part.stl")
        await post(photo)
        await post(document)
        await fake.wait_for(lambda: len(fake.copies(thread)) == 2)
        assert fake.copies(thread) == [
            {
                "chat_id": GROUP,
                "from_chat_id": CHAT,
                "message_id": photo["message"]["message_id"],
                "message_thread_id": thread,
            },
            {
                "chat_id": GROUP,
                "from_chat_id": CHAT,
                "message_id": document["message"]["message_id"],
                "message_thread_id": thread,
            },
        ]
        await asyncio.sleep(0.3)  # whatever else was going to arrive has arrived
        assert len(fake.texts(CHAT)) == told  # the bot stays silent during the handoff
        assert not any("tg://" in t for t in fake.texts(GROUP))
        assert len(fake.params("createForumTopic")) == 1
