"""/services and /order through the whole path: Telegram (webhook -> worker -> outbox -> sender
-> fake Bot API, buttons pressed as callback queries) and Chat2Desk at the worker (a numbered
list answered by number, by name, "ещё"; the order stored with its line item)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from orderbot.channels.telegram.client import TelegramChannel
from orderbot.channels.telegram.rendering import MAX_CALLBACK_DATA
from orderbot.config import Settings
from orderbot.dialog.flow import Flow
from orderbot.dialog.loader import FLOWS_DIR, load_flow
from orderbot.dialog.models import DialogOptions, DialogState
from orderbot.files.receiver import FileReceiver
from orderbot.messages import Attachment, InboundMessage
from orderbot.queues.sqlite import SqliteInboundQueue
from orderbot.runtime.embedded import EmbeddedRuntime
from orderbot.state.sqlite import SqliteStepStore
from orderbot.storage.sqlite import SqliteDatabase
from orderbot.web.app import create_app
from orderbot.worker import Worker
from tests.fakes.telegram import TOKEN, FakeTelegram, text_update
from tests.files.test_files import FakeFetcher, binary_stl
from tests.support.servers import serving
from tests.test_worker import run_until_idle

CHAT = 778001
SECRET = "catalog-secret"
HEADERS = {"X-Telegram-Bot-Api-Secret-Token": SECRET}


def paged_printing(tmp_path: Path) -> Flow:
    """The printing flow with its three services two a page."""
    source = (FLOWS_DIR / "printing.yaml").read_text(encoding="utf-8")
    absolute = FLOWS_DIR / "catalogs" / "printing.yaml"
    source = source.replace(
        "  file: catalogs/printing.yaml\n", f"  file: {absolute}\n  page_size: 2\n"
    )
    path = tmp_path / "printing.yaml"
    path.write_text(source, encoding="utf-8")
    return load_flow(path)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def keyboard(sent: dict[str, Any]) -> list[dict[str, str]]:
    markup = sent.get("reply_markup") or {"inline_keyboard": []}
    return [button for row in markup["inline_keyboard"] for button in row]


def labels(sent: dict[str, Any]) -> list[str]:
    return [button["text"] for button in keyboard(sent)]


async def state_of(db: SqliteDatabase, client_key: str) -> DialogState:
    raw = await SqliteStepStore(db).load_state(client_key)
    assert raw is not None
    return DialogState.from_json(raw)


async def test_services_over_telegram(
    settings: Settings, fake: FakeTelegram, tmp_path: Path
) -> None:
    channel = TelegramChannel(
        token=TOKEN, api_url=fake.url, webhook_secret=SECRET, chat_interval=0.01, timeout=5
    )
    runtime = EmbeddedRuntime(
        settings, flow=paged_printing(tmp_path), channels={"telegram": channel}
    )
    async with (
        serving(create_app(runtime)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):

        async def post(update: dict[str, Any], until: str) -> list[dict[str, Any]]:
            """Post ``update``; wait for a message containing ``until``; the new messages."""
            before = len(fake.sent(CHAT))
            r = await client.post("/webhook/telegram", json=update, headers=HEADERS)
            assert r.status_code == 200, r.text
            await fake.wait_for(lambda: any(until in t for t in fake.texts(CHAT)[before:]))
            await asyncio.sleep(0.2)  # the rest of the page
            return fake.sent(CHAT)[before:]

        page = await post(text_update(1, CHAT, "/services"), "Страница 1 из 2")
        cards = [m for m in page if any(label.startswith("🛒") for label in labels(m))]
        assert [labels(m) for m in cards] == [
            ["🛒 Заказать: FDM-печать"],
            ["🛒 Заказать: Крупная печать"],
        ]
        assert cards[0]["text"].startswith("Здравствуйте!")  # greeting and header ride along
        assert "Наши услуги и цены:" in cards[0]["text"]
        assert "FDM-печать — 600 сом / модель" in cards[0]["text"]
        assert "Модели больше 20 см" in cards[1]["text"]
        assert labels(page[-1]) == ["Следующие ›"]
        for message in page:
            for button in keyboard(message):
                assert len(button["callback_data"].encode()) <= MAX_CALLBACK_DATA

        page = await post(fake.press(2, CHAT, "Следующие ›"), "Страница 2 из 2")
        assert [labels(m) for m in page] == [["🛒 Заказать: Срочная печать"], ["‹ Предыдущие"]]
        assert "Срочная печать — 1 000 сом / модель" in page[0]["text"]

        (reply,) = await post(
            fake.press(3, CHAT, "🛒 Заказать: Срочная печать"), "Как к вам обращаться?"
        )
        assert reply["text"].startswith("Вы выбрали: Срочная печать.")
        assert labels(reply) == ["« Назад", "✖ Отмена"]
        assert {"callback_query_id": "cq-3"} in fake.params("answerCallbackQuery")
        state = await state_of(runtime.db, f"telegram:{CHAT}")
        assert (state.step, state.data) == ("NAME", {"service": "fdm_rush"})

        # listing in the middle keeps the step; the next answer goes on from it
        page = await post(text_update(4, CHAT, "/services"), "Как к вам обращаться?")
        assert len([m for m in page if any(x.startswith("🛒") for x in labels(m))]) == 2
        assert page[-1]["text"] == "Как к вам обращаться? Напишите имя."
        await post(text_update(5, CHAT, "Иван"), "Ваш e-mail?")
        state = await state_of(runtime.db, f"telegram:{CHAT}")
        assert (state.step, state.data) == ("EMAIL", {"service": "fdm_rush", "name": "Иван"})

        # /order mid-dialog: asked to send it again; then a fresh order
        (reply,) = await post(text_update(6, CHAT, "/order"), "Заказ уже оформляется")
        assert "Ваш e-mail?" in reply["text"]
        await post(text_update(7, CHAT, "/order"), "Какая услуга вам нужна?")
        state = await state_of(runtime.db, f"telegram:{CHAT}")
        assert (state.step, state.data) == ("SERVICE", {})


class Chat2DeskBot:
    """A worker on one database, fed Chat2Desk messages."""

    def __init__(self, database: SqliteDatabase, flow: Flow, tmp_path: Path) -> None:
        self.db = database
        self.queue = SqliteInboundQueue(database)
        self.fetcher = FakeFetcher({"cube.stl": binary_stl()})
        self.worker = Worker(
            self.queue,
            SqliteStepStore(database),
            flow,
            options=DialogOptions(default_language="ru"),
            poll_interval=0.05,
            files=FileReceiver(tmp_path / "uploads", max_bytes=2**20, fetchers=(self.fetcher,)),
        )
        self.count = 0

    async def say(self, client: str, text: str, *files: str) -> list[str]:
        """Send one message; the texts it was answered with."""
        before = await self.outbox()
        self.count += 1
        await self.queue.put(
            InboundMessage(
                channel="chat2desk",
                client_id=client,
                message_id=f"m{self.count}",
                text=text,
                received_at=time.time(),
                attachments=tuple(Attachment(url=f"fake://{n}", name=n) for n in files),
                route={"transport": "whatsapp", "channel_id": "3"},
            )
        )
        await run_until_idle(self.worker, self.queue, self.worker.handled + 1)
        return (await self.outbox())[len(before) :]

    async def outbox(self) -> list[str]:
        rows = await self.db.run(
            lambda c: c.execute("SELECT payload FROM outbox ORDER BY id").fetchall()
        )
        texts = [orjson.loads(r[0]) for r in rows]
        assert all(not t["buttons"] or t["text"] for t in texts)
        return [str(t["text"]) for t in texts]


async def test_numbered_list_over_chat2desk(database: SqliteDatabase, tmp_path: Path) -> None:
    bot = Chat2DeskBot(database, paged_printing(tmp_path), tmp_path)
    (listing,) = await bot.say("41", "каталог")
    assert "1. FDM-печать — 600 сом / модель" in listing
    assert "2. Крупная печать — 1 500 сом / модель" in listing
    assert "ответьте номером или названием" in listing
    assert "«ещё» — следующая страница" in listing
    (listing,) = await bot.say("41", "ещё")
    assert "3. Срочная печать — 1 000 сом / модель" in listing
    (reply,) = await bot.say("41", "3")
    assert reply.startswith("Вы выбрали: Срочная печать.\n\nКак к вам обращаться?")
    for text in ("Иван", "ivan@example.com", "Пропустить"):
        await bot.say("41", text)
    await bot.say("41", "", "cube.stl")
    for text in ("Продолжить", "PLA", "0.2 мм", "15 %"):
        await bot.say("41", text)
    (summary,) = await bot.say("41", "Самовывоз")
    assert "Услуга: Срочная печать" in summary
    assert "Срочная печать: 1 × 1 000 сом = 1 000 сом" in summary
    await bot.say("41", "Подтвердить")
    items = await database.run(
        lambda c: c.execute(
            "SELECT item_id, name, quantity, unit_price FROM order_items"
        ).fetchall()
    )
    assert [tuple(i[:3]) for i in items] == [("fdm_rush", "Срочная печать", 1)]
    assert Decimal(str(items[0][3])) == Decimal("1000")

    # by name, from the first page, for another customer
    await bot.say("42", "/services")
    (reply,) = await bot.say("42", "крупная печать")
    assert reply.startswith("Вы выбрали: Крупная печать.")
    state = await state_of(database, "chat2desk:42")
    assert (state.step, state.data) == ("NAME", {"service": "fdm_large"})


async def test_water_services_and_order_over_chat2desk(
    database: SqliteDatabase, tmp_path: Path
) -> None:
    bot = Chat2DeskBot(database, load_flow("water"), tmp_path)
    (offer,) = await bot.say("51", "/services")
    assert "19 л" in offer
    assert await SqliteStepStore(database).load_state("chat2desk:51") is None
    await bot.say("51", "/order")
    (reply,) = await bot.say("51", "ул. Киевская 120, кв. 5")
    assert "номер телефона" in reply
    (reply,) = await bot.say("51", "услуги")
    assert "19 л" in reply
    assert reply.endswith("номер телефона для связи, например 0555 123 456.")
    (reply,) = await bot.say("51", "/order")
    assert reply.startswith("Заказ уже оформляется.")
    (reply,) = await bot.say("51", "0555 123 456")
    assert "Сколько бутылей" in reply
    state = await state_of(database, "chat2desk:51")
    assert state.data["address"] == "ул. Киевская 120, кв. 5"
