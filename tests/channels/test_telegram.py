"""The Telegram adapter: parsing every update kind, sending through a fake Bot API server,
the secret header over the real HTTP app, and error translation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orderbot.channels.telegram.client import TelegramChannel
from orderbot.channels.telegram.rendering import (
    MAX_CALLBACK_DATA,
    callback_data,
    inline_keyboard,
    split_text,
)
from orderbot.config import Settings
from orderbot.errors import (
    InvalidPayload,
    PermanentError,
    RateLimited,
    ServerError,
    Timeout,
)
from orderbot.messages import OutboundMessage
from orderbot.runtime.embedded import EmbeddedRuntime
from orderbot.web.app import create_app
from tests.fakes.telegram import (
    TOKEN,
    FakeTelegram,
    _error,
    document_update,
    photo_update,
    text_update,
)
from tests.support.servers import serving

CHAT = 555001


def channel(**kwargs: Any) -> TelegramChannel:
    return TelegramChannel(token=TOKEN, api_url="http://127.0.0.1:9", **kwargs)


def parse(update: Any) -> Any:
    return channel().parse_webhook(update, received_at=1.0)


def problem(update: Any) -> dict[str, str]:
    with pytest.raises(InvalidPayload) as caught:
        parse(update)
    assert caught.value.status == 422
    return caught.value.details[0]


# -- parsing -----------------------------------------------------------------------------------


def test_text_message() -> None:
    message = parse(text_update(1001, CHAT, "Привет"))
    assert (message.channel, message.client_id, message.message_id) == (
        "telegram",
        "555001",
        "1001",
    )
    assert message.text == "Привет"
    assert message.dedupe_key == "telegram:1001"
    assert message.attachments == ()
    assert message.route == {}


def test_command_is_text() -> None:
    assert parse(text_update(1, CHAT, "/start")).text == "/start"


def test_document() -> None:
    message = parse(
        document_update(7, CHAT, file_id="BQAC-1", file_name="a_b<c>.stl", caption="деталь")
    )
    assert message.text == "деталь"
    (attachment,) = message.attachments
    assert attachment.url == "tg://file/BQAC-1"
    assert (attachment.name, attachment.mime_type, attachment.size, attachment.kind) == (
        "a_b<c>.stl",
        "model/stl",
        684,
        "document",
    )


def test_photo_takes_the_largest_size() -> None:
    message = parse(photo_update(8, CHAT))
    assert message.text == ""
    (attachment,) = message.attachments
    assert (attachment.url, attachment.kind, attachment.size) == (
        "tg://file/photo-1280",
        "photo",
        128000,
    )


def test_contact_and_location() -> None:
    update = text_update(9, CHAT, "", contact={"phone_number": "+996555123456", "first_name": "A"})
    del update["message"]["text"]
    assert parse(update).text == "+996555123456"
    update = text_update(10, CHAT, "", location={"latitude": 42.87, "longitude": 74.59})
    del update["message"]["text"]
    assert parse(update).attachments[0].url == "geo:42.87,74.59"


def test_sticker_becomes_an_empty_text_the_dialog_answers() -> None:
    update = text_update(11, CHAT, "", sticker={"file_id": "st-1", "width": 512, "height": 512})
    del update["message"]["text"]
    message = parse(update)
    assert message.text == ""
    assert message.attachments[0].kind == "sticker"


def test_callback_query_resolves_the_label_and_keeps_the_query_id() -> None:
    keyboard = inline_keyboard(("Да", "Нет"))
    update = {
        "update_id": 12,
        "callback_query": {
            "id": "4382bfdwdsb323b2d9",
            "from": {"id": CHAT, "is_bot": False, "first_name": "A"},
            "message": {
                "message_id": 5,
                "chat": {"id": CHAT, "type": "private"},
                "date": 1,
                "text": "Всё верно?",
                "reply_markup": {"inline_keyboard": keyboard},
            },
            "chat_instance": "1",
            "data": keyboard[0][1]["callback_data"],
        },
    }
    message = parse(update)
    assert message.text == "Нет"
    assert message.client_id == str(CHAT)
    assert message.message_id == "12"
    assert message.route == {"callback_query_id": "4382bfdwdsb323b2d9"}


def test_callback_without_the_keyboard_falls_back_to_data() -> None:
    long_label = "Печать на SLA-принтере, высокое разрешение, до 20×20 см"
    base = {"id": "q", "from": {"id": CHAT, "is_bot": False}, "chat_instance": "1"}
    short = {"update_id": 13, "callback_query": {**base, "data": callback_data(0, "Да")}}
    assert parse(short).text == "Да"
    hashed = {"update_id": 14, "callback_query": {**base, "data": callback_data(2, long_label)}}
    assert parse(hashed).text == "3"  # the number stands for the label, as on Chat2Desk
    game = {"update_id": 15, "callback_query": {**base, "game_short_name": "g"}}
    assert parse(game) is None


@pytest.mark.parametrize(
    "update",
    [
        {"update_id": 1, "edited_message": {"message_id": 1, "chat": {"id": 1, "type": "private"}}},
        {
            "update_id": 2,
            "channel_post": {"message_id": 1, "chat": {"id": -100, "type": "channel"}},
        },
        {"update_id": 3, "my_chat_member": {"chat": {"id": 1}}},
        {"update_id": 4, "inline_query": {"id": "1"}},
        {"update_id": 5},
        text_update(6, CHAT, "hi", **{"from": {"id": 9, "is_bot": True, "first_name": "B"}}),
        text_update(7, -100123, "hi", chat={"id": -100123, "type": "supergroup", "title": "G"}),
    ],
    ids=["edited", "channel_post", "member", "inline", "empty", "from_bot", "group"],
)
def test_updates_the_bot_does_not_handle_are_acknowledged(update: dict[str, Any]) -> None:
    assert parse(update) is None


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ([1], "$"),
        ({"message": {}}, "update_id"),
        ({"update_id": "1", "message": {}}, "update_id"),
        ({"update_id": True, "message": {}}, "update_id"),
        ({"update_id": -1}, "update_id"),
        ({"update_id": 1, "message": "hi"}, "message"),
        ({"update_id": 1, "message": {"text": "hi"}}, "message.chat"),
        ({"update_id": 1, "message": {"chat": {"id": "x"}, "text": "hi"}}, "message.chat.id"),
        ({"update_id": 1, "message": {"chat": {"id": 1}, "text": 5}}, "message.text"),
        (
            {"update_id": 1, "message": {"chat": {"id": 1}, "document": {"file_id": 5}}},
            "message.document.file_id",
        ),
        (
            {
                "update_id": 1,
                "message": {"chat": {"id": 1}, "document": {"file_id": "a", "file_size": -1}},
            },
            "message.document.file_size",
        ),
        ({"update_id": 1, "message": {"chat": {"id": 1}, "photo": []}}, "message.photo"),
        ({"update_id": 1, "message": {"chat": {"id": 1}, "photo": ["x"]}}, "message.photo[0]"),
        (
            {"update_id": 1, "callback_query": {"from": {"id": 1}, "data": "0:Да"}},
            "callback_query.id",
        ),
        ({"update_id": 1, "callback_query": {"id": "q", "data": "0:Да"}}, "callback_query.from"),
        (
            {"update_id": 1, "callback_query": {"id": "q", "from": {"id": 1}, "data": 7}},
            "callback_query.data",
        ),
    ],
)
def test_invalid_updates_name_the_field(update: Any, field: str) -> None:
    assert problem(update)["field"] == field


# -- building blocks -------------------------------------------------------------------------


def test_callback_data_fits_in_64_bytes() -> None:
    assert callback_data(0, "Да") == "0:Да"
    label = "Ж" * 40  # 80 bytes in UTF-8
    data = callback_data(11, label)
    assert len(data.encode()) <= MAX_CALLBACK_DATA
    assert data.startswith("11#")
    assert callback_data(11, label) != callback_data(11, label + "!")


def test_keyboard_shape() -> None:
    assert [[b["text"] for b in row] for row in inline_keyboard(("Да", "Нет"))] == [["Да", "Нет"]]
    assert [len(row) for row in inline_keyboard(("PLA", "PETG", "ABS", "TPU"))] == [2, 2]
    assert [len(row) for row in inline_keyboard(("0.3", "0.2", "0.1"))] == [3]
    long = ("Печать FDM, слой 0.2 мм", "Печать SLA, слой 0.05 мм")
    assert [len(row) for row in inline_keyboard(long)] == [1, 1]


def test_split_text() -> None:
    assert split_text("short") == ["short"]
    lines = [f"строка {i:04d} " + "x" * 80 for i in range(120)]
    text = "\n".join(lines)
    parts = split_text(text)
    assert len(parts) > 1
    assert all(len(p) <= 4096 for p in parts)
    assert "\n".join(parts) == text  # cut at line breaks: nothing lost, nothing cut mid-line
    one_word = "y" * 9000
    assert "".join(split_text(one_word)) == one_word
    emoji = "😀" * 3000  # 2 UTF-16 units each: Telegram counts 6000
    assert all(len(p.encode("utf-16-le")) // 2 <= 4096 for p in split_text(emoji))


# -- sending ---------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def telegram(fake: FakeTelegram) -> AsyncIterator[TelegramChannel]:
    async with TelegramChannel(token=TOKEN, api_url=fake.url, chat_interval=0, timeout=2) as ch:
        yield ch


def reply(text: str = "Ваш заказ принят", *, key: str = "1001:0", **fields: Any) -> OutboundMessage:
    return OutboundMessage(key=key, channel="telegram", client_id=str(CHAT), text=text, **fields)


async def test_send_escapes_html(fake: FakeTelegram, telegram: TelegramChannel) -> None:
    text = "Файл: my_model<v2>.stl & co"
    await telegram.send(reply(text))
    (params,) = fake.sent()
    assert params["parse_mode"] == "HTML"
    assert params["chat_id"] == CHAT
    assert params["text"] == "Файл: my_model&lt;v2&gt;.stl &amp; co"
    assert fake.texts() == [text]


async def test_buttons_become_an_inline_keyboard(
    fake: FakeTelegram, telegram: TelegramChannel
) -> None:
    labels = ("Да", "Нет", "Очень длинное название услуги, которое не влезает в 64 байта данных")
    await telegram.send(reply("Всё верно?", buttons=labels))
    (params,) = fake.sent()
    buttons = [b for row in params["reply_markup"]["inline_keyboard"] for b in row]
    assert [b["text"] for b in buttons] == list(labels)
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons)
    assert len({b["callback_data"] for b in buttons}) == 3


async def test_long_text_is_split_with_buttons_on_the_last_part(
    fake: FakeTelegram, telegram: TelegramChannel
) -> None:
    text = "\n".join(f"{i}. " + "позиция каталога " * 10 for i in range(60))
    await telegram.send(reply(text, buttons=("Да", "Нет")))
    sent = fake.sent()
    assert len(sent) >= 3
    assert "\n".join(fake.texts()) == text
    assert [("reply_markup" in p) for p in sent] == [False] * (len(sent) - 1) + [True]


async def test_a_failed_part_is_resumed_not_repeated(
    fake: FakeTelegram, telegram: TelegramChannel
) -> None:
    text = "\n".join("a" * 100 for _ in range(60))  # two parts
    original = fake._api_sendMessage
    calls = 0

    async def fail_the_second(params: dict[str, Any]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            return _error(502, "Bad Gateway")
        return await original(params)

    fake._api_sendMessage = fail_the_second  # type: ignore[method-assign]
    with pytest.raises(ServerError):
        await telegram.send(reply(text))
    assert len(fake.sent()) == 1
    await telegram.send(reply(text))  # the sender's retry
    assert "\n".join(fake.texts()) == text  # first part once, second part once


async def test_callback_is_answered_once(fake: FakeTelegram, telegram: TelegramChannel) -> None:
    route = {"callback_query_id": "cq-1"}
    await telegram.send(reply("Заказ оформлен", key="12:0", route=route))
    await telegram.send(reply("Номер заказа 7", key="12:1", route=route))
    assert fake.params("answerCallbackQuery") == [{"callback_query_id": "cq-1"}]
    assert len(fake.sent()) == 2


async def test_an_expired_callback_does_not_stop_the_reply(
    fake: FakeTelegram, telegram: TelegramChannel
) -> None:
    fake.fail_next(
        1, 400, method="answerCallbackQuery", description="Bad Request: query is too old"
    )
    await telegram.send(reply("Заказ оформлен", route={"callback_query_id": "old"}))
    assert fake.texts() == ["Заказ оформлен"]


async def test_429_carries_retry_after(fake: FakeTelegram, telegram: TelegramChannel) -> None:
    fake.rate_limit_next(1, retry_after=17)
    with pytest.raises(RateLimited) as caught:
        await telegram.send(reply())
    assert caught.value.retry_after == 17
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "description", "error"),
    [
        (500, "Internal Server Error", ServerError),
        (502, "Bad Gateway", ServerError),
        (400, "Bad Request: chat not found", PermanentError),
        (403, "Forbidden: bot was blocked by the user", PermanentError),
    ],
)
async def test_errors_are_translated(
    fake: FakeTelegram,
    telegram: TelegramChannel,
    status: int,
    description: str,
    error: type[Exception],
) -> None:
    fake.fail_next(1, status, description=description)
    with pytest.raises(error) as caught:
        await telegram.send(reply())
    assert TOKEN not in str(caught.value)


async def test_ok_false_in_a_200_goes_by_error_code() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"ok": False, "error_code": 429, "parameters": {"retry_after": 3}}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        ch = TelegramChannel(token=TOKEN, client=client, chat_interval=0)
        with pytest.raises(RateLimited) as caught:
            await ch.send(reply())
        assert caught.value.retry_after == 3


async def test_blocked_bot_is_permanent(fake: FakeTelegram, telegram: TelegramChannel) -> None:
    fake.blocked.add(CHAT)
    with pytest.raises(PermanentError, match="blocked"):
        await telegram.send(reply())


async def test_timeout_and_unreachable() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as client:
        with pytest.raises(Timeout):
            await TelegramChannel(token=TOKEN, client=client, chat_interval=0).send(reply())
    async with TelegramChannel(token=TOKEN, api_url="http://127.0.0.1:9", chat_interval=0) as ch:
        with pytest.raises(ServerError) as caught:
            await ch.send(reply())
        assert TOKEN not in str(caught.value)
        assert (
            caught.value.__cause__ is None
        )  # the httpx error holds the URL, and the URL the token


async def test_bursts_to_one_chat_are_paced(fake: FakeTelegram) -> None:
    clock = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    async with TelegramChannel(
        token=TOKEN, api_url=fake.url, chat_interval=1.0, clock=lambda: clock[0], sleep=sleep
    ) as ch:
        for i in range(3):
            await ch.send(reply(f"m{i}", key=f"k{i}"))
        other = OutboundMessage(key="o", channel="telegram", client_id="777", text="hi")
        await ch.send(other)
    assert slept == [1.0, 1.0]  # the other chat did not wait
    assert fake.texts(CHAT) == ["m0", "m1", "m2"]


async def test_api_helpers(fake: FakeTelegram, telegram: TelegramChannel) -> None:
    await telegram.set_webhook("https://bot.example.com/webhook/telegram", secret_token="s3cr3t")
    assert fake.webhook is not None
    assert fake.webhook["allowed_updates"] == [
        "message",
        "callback_query",
    ]
    await telegram.set_my_commands()
    assert [c["command"] for c in fake.commands[""]] == [
        "start",
        "services",
        "order",
        "track",
        "help",
        "cancel",
    ]
    assert "en" in fake.commands
    await telegram.delete_webhook()
    assert fake.webhook is None
    info = await telegram.get_file("BQAC-1")
    assert info["file_path"].startswith("documents/")


async def test_wrong_token_is_permanent(fake: FakeTelegram) -> None:
    async with TelegramChannel(token="1:wrong", api_url=fake.url, chat_interval=0) as ch:
        with pytest.raises(PermanentError, match="401"):
            await ch.send(reply())


# -- the webhook over HTTP -------------------------------------------------------------------


@pytest.fixture
def tg_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "telegram_bot_token": TOKEN,
            "telegram_api_url": "http://127.0.0.1:9",
            "telegram_webhook_secret": "tg-s3cr3t_value",
        }
    )


async def stored(runtime: EmbeddedRuntime) -> list[tuple[str, str]]:
    rows = await runtime.db.run(
        lambda c: c.execute(
            "SELECT dedupe_key, client_key FROM inbound_queue ORDER BY id"
        ).fetchall()
    )
    return [tuple(r) for r in rows]


async def test_webhook_secret_header(tg_settings: Settings) -> None:
    runtime = EmbeddedRuntime(tg_settings)
    assert "telegram" in runtime.channels
    update = text_update(2001, CHAT, "<b>hi</b> & _bye_")
    async with (
        serving(create_app(runtime, run_background=False)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        r = await client.post("/webhook/telegram", json=update)
        assert r.status_code == 401
        assert r.json() == {"success": False, "error": "unauthorized"}
        header = "X-Telegram-Bot-Api-Secret-Token"
        r = await client.post("/webhook/telegram", json=update, headers={header: "tg-s3cr3t_valuE"})
        assert r.status_code == 401
        assert await stored(runtime) == []
        r = await client.post("/webhook/telegram", json=update, headers={header: "tg-s3cr3t_value"})
        assert r.status_code == 200
        assert r.json() == {"success": True}
        # Telegram redelivers: stored once
        r = await client.post("/webhook/telegram", json=update, headers={header: "tg-s3cr3t_value"})
        assert r.status_code == 200
        assert r.json()["duplicate"] is True
        assert await stored(runtime) == [("telegram:2001", f"telegram:{CHAT}")]
        # ignored kinds are 200, bad ones 422, never 500
        edited = {"update_id": 2002, "edited_message": {"chat": {"id": CHAT}}}
        r = await client.post("/webhook/telegram", json=edited, headers={header: "tg-s3cr3t_value"})
        assert r.status_code == 200
        assert r.json()["ignored"] is True
        r = await client.post(
            "/webhook/telegram", json={"update_id": "x"}, headers={header: "tg-s3cr3t_value"}
        )
        assert r.status_code == 422
        assert r.json()["details"][0]["field"] == "update_id"
        # Chat2Desk is untouched by the Telegram header check
        r = await client.post(
            "/webhook/chat2desk", json={"client_id": 1, "message_id": 1, "text": "x"}
        )
        assert r.status_code == 200


async def test_without_secret_the_webhook_is_open_and_without_token_absent(
    settings: Settings,
) -> None:
    runtime = EmbeddedRuntime(settings)
    assert "telegram" not in runtime.channels
    open_settings = settings.model_copy(update={"telegram_bot_token": TOKEN})
    runtime = EmbeddedRuntime(open_settings)
    async with (
        serving(create_app(runtime, run_background=False)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        r = await client.post("/webhook/telegram", json=text_update(1, CHAT, "hi"))
        assert r.status_code == 200


async def test_operator_topics_are_created_once_and_written_in(
    fake: FakeTelegram, tmp_path: Any
) -> None:
    """Bot API forum topics: createForumTopic once per customer (reused afterwards, also by a
    new process), every message of that customer's topic with its message_thread_id; an
    operator's message there comes back as an operator_reply event of the chat."""
    from orderbot.desk.sqlite_topics import SqliteOperatorTopics
    from orderbot.messages import EVENT_OPERATOR_REPLY
    from orderbot.storage import sql as db
    from orderbot.storage.sqlite import SqliteDatabase
    from tests.fakes.telegram import topic_update

    path = tmp_path / "topics.db"
    await db.upgrade_async(f"sqlite:///{path}")
    group = "-1002003004005"

    def card(n: int, text: str) -> OutboundMessage:
        return OutboundMessage(
            key=f"k{n}",
            channel="telegram",
            client_id=group,
            text=text,
            route={"for": "chat2desk:601", "title": "chat2desk:601", "to.transport": "whatsapp"},
            kind="topic",
        )

    async with SqliteDatabase(path) as database:
        topics = SqliteOperatorTopics(database)
        async with TelegramChannel(
            token=TOKEN, api_url=fake.url, chat_interval=0, operator_chat=group, topics=topics
        ) as first:
            await first.send(card(1, "🙋 chat2desk:601 asks for an operator <b>"))
            await first.send(card(2, "👤 hello?"))
        async with TelegramChannel(
            token=TOKEN, api_url=fake.url, chat_interval=0, operator_chat=group, topics=topics
        ) as restarted:
            await restarted.send(card(3, "👤 still there?"))
            (thread,) = fake.topics
            assert fake.topics[thread]["name"] == "chat2desk:601"
            assert len(fake.params("createForumTopic")) == 1
            assert fake.in_topic(thread) == [
                "🙋 chat2desk:601 asks for an operator <b>",
                "👤 hello?",
                "👤 still there?",
            ]
            known = await topics.of_thread(thread)
            assert known is not None and known.route == {"transport": "whatsapp"}
            event = restarted.parse_webhook(
                topic_update(9, int(group), thread, "Hello from Anna"), received_at=1.0
            )
            assert event is not None and event.route == {
                "event": EVENT_OPERATOR_REPLY,
                "thread_id": str(thread),
                "operator": "Anna",
            }
            assert event.client_id == group and event.text == "Hello from Anna"
            # the General topic, or a private chat with the bot, is no operator reply
            general = topic_update(10, int(group), thread, "hi all")
            del general["message"]["message_thread_id"]
            parsed = restarted.parse_webhook(general, received_at=1.0)
            assert parsed is not None and "thread_id" not in parsed.route
            private = restarted.parse_webhook(text_update(11, 42, "hi"), received_at=1.0)
            assert private is not None and private.route == {}


async def test_an_operators_file_is_copied_to_the_customer(
    fake: FakeTelegram, telegram: TelegramChannel
) -> None:
    copy = OutboundMessage(
        key="c1",
        channel="telegram",
        client_id=str(CHAT),
        text="caption",
        route={"from_chat_id": "-1002003004005", "message_id": "50030"},
        kind="copy",
    )
    await telegram.send(copy)
    assert fake.copies() == [{"chat_id": CHAT, "from_chat_id": -1002003004005, "message_id": 50030}]
