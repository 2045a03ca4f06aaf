"""The language a customer's app is set to (Telegram ``from.language_code``) travels with the
message and starts a dialog in it when the first message says nothing (issue 16)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from orderbot.channels.telegram.client import TelegramChannel
from orderbot.messages import InboundMessage
from orderbot.storage.sqlite import SqliteDatabase
from tests.fakes.telegram import TOKEN, text_update
from tests.test_worker import make_worker, replies, run_until_idle

CHAT = 555001


def parse(update: Any) -> Any:
    channel = TelegramChannel(token=TOKEN, api_url="http://127.0.0.1:9")
    return channel.parse_webhook(update, received_at=1.0)


def test_telegram_passes_the_users_language_code() -> None:
    update = text_update(7, CHAT, "/start")
    update["message"]["from"]["language_code"] = "en"
    message = parse(update)
    assert message.language == "en"
    assert message.route == {}  # not a route: nothing the sender needs


def test_a_message_without_a_language_keeps_its_queued_shape() -> None:
    plain = InboundMessage("chat2desk", "1", "m1", "hi", 1.0)
    assert b"language" not in plain.to_json()
    assert InboundMessage.from_json(plain.to_json()) == plain
    tagged = InboundMessage("telegram", "1", "m2", "/start", 1.0, language="en")
    assert orjson.loads(tagged.to_json())["language"] == "en"
    assert InboundMessage.from_json(tagged.to_json()) == tagged


async def test_the_worker_starts_the_dialog_in_the_apps_language(
    database: SqliteDatabase,
) -> None:
    worker, queue = make_worker(database)
    for client, language in (("en-user", "en"), ("ru-user", "ru"), ("no-code", "")):
        await queue.put(
            InboundMessage(
                "telegram", client, f"{client}-1", "/start", time.time(), language=language
            )
        )
    await run_until_idle(worker, queue, 3)
    sent = {r["client_id"]: r["text"] for r in await replies(database)}
    assert sent["en-user"].startswith("Hello!")
    assert sent["ru-user"].startswith("Здравствуйте!")
    assert sent["no-code"].startswith("Здравствуйте!")  # DEFAULT_LANGUAGE
