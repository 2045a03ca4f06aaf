"""Issue 4 on the distributed profile, end to end: ``orderbot serve`` (a real process) takes the
webhooks and serves the admin API; a worker and a sender (in this process) talk to a fake
Chat2Desk, a fake Telegram (admin chat) and an order webhook. New-order alerts, status changes
notified to the customer, handoff with a Chat2Desk transfer, silence, handback through the API
and through ``orderbot handback``, and the handoff timeout."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from orderbot.channels.chat2desk import Chat2DeskChannel
from orderbot.channels.order_webhook import OrderWebhookChannel
from orderbot.channels.telegram.client import TelegramChannel
from orderbot.config import Settings
from orderbot.desk.texts import status_notification
from orderbot.runtime.distributed import DistributedRuntime
from orderbot.storage.schema import message_logs
from tests.distributed.conftest import (
    distributed_settings,
    migrate_postgres,
    remove_namespace,
    require_services,
)
from tests.fakes.chat2desk import FakeChat2Desk
from tests.fakes.telegram import TOKEN, FakeTelegram
from tests.support.desk_bots import FLOW, forget_clients
from tests.support.servers import free_port, serving
from tests.web.test_admin_api import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ADMIN = {"Authorization": "Bearer s3cret-admin"}
ADMIN_CHAT = 4242


async def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT2DESK_", "WEBHOOK_"))}
    return {
        **keep,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "QUEUE_PREFIX": settings.queue_prefix,
        "QUEUE_SHARDS": str(settings.queue_shards),
        "LOG_LEVEL": "WARNING",
        **extra,
    }


class Stack:
    """The fakes, the in-process worker + sender, and the ``orderbot serve`` process."""

    def __init__(self, settings: Settings, runtime: DistributedRuntime, **parts: Any) -> None:
        self.settings = settings
        self.runtime = runtime
        self.chat2desk: FakeChat2Desk = parts["chat2desk"]
        self.telegram: FakeTelegram = parts["telegram"]
        self.receiver: Receiver = parts["receiver"]
        self.http: httpx.AsyncClient = parts["http"]
        self.prefix = settings.queue_prefix + "-"
        self.count = 0

    async def say(self, client: str, text: str, until: str | None) -> None:
        """Post a Chat2Desk webhook to ``orderbot serve``; wait for a reply holding ``until``
        (None: wait until the worker logged the message)."""
        self.count += 1
        before = len(self.chat2desk.texts(client))
        r = await self.http.post(
            "/webhook/chat2desk",
            json={
                "client_id": client,
                "message_id": f"{client}-{self.count}",
                "text": text,
                "transport": "whatsapp",
                "channel_id": 3,
            },
        )
        assert r.status_code == 200, r.text
        if until is not None:
            await wait_for(lambda: any(until in t for t in self.chat2desk.texts(client)[before:]))
            return
        for _ in range(400):
            if await self.logged(client, f"{client}-{self.count}"):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"message {client}-{self.count} was not handled")

    async def logged(self, client: str, message_id: str) -> str | None:
        async with self.runtime.engine.connect() as conn:
            return (
                await conn.execute(
                    select(message_logs.c.dialog_state).where(
                        message_logs.c.client_id == client,
                        message_logs.c.message_key == message_id,
                        message_logs.c.direction == "in",
                    )
                )
            ).scalar_one_or_none()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    require_services()
    await migrate_postgres()
    namespace = "e" + uuid.uuid4().hex[:10]
    receiver = Receiver()
    port = free_port()
    async with (
        FakeChat2Desk() as chat2desk,
        FakeTelegram() as telegram,
        serving(receiver.app()) as hook_url,
    ):
        settings = distributed_settings(
            namespace,
            admin_token="s3cret-admin",
            admin_chat_ids=str(ADMIN_CHAT),
            chat2desk_operator_id=15,
            chat2desk_api_url=chat2desk.url,
            telegram_bot_token=TOKEN,
            telegram_api_url=telegram.url,
            order_webhook_url=hook_url + "/hook",
            upload_dir=tmp_path / "uploads",
        )
        channels = {
            "chat2desk": Chat2DeskChannel(api_url=chat2desk.url, token="test-token"),
            "telegram": TelegramChannel(token=TOKEN, api_url=telegram.url, chat_interval=0.0),
            "order_webhook": OrderWebhookChannel(hook_url + "/hook"),
        }
        # orderbot's hook is registered: the admins hear of orders, not of a missing hook.
        async with Chat2DeskChannel(api_url=chat2desk.url, token="test-token") as registrar:
            await registrar.set_webhook("https://shop.example/webhook/chat2desk")
        runtime = DistributedRuntime(
            settings,
            roles=("worker", "sender"),
            channels=channels,
            poll_interval=0.1,
            lease_interval=0.2,
        )
        log = (tmp_path / "serve.log").open("ab")
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orderbot",
            "serve",
            env=cli_env(settings, HOST="127.0.0.1", PORT=str(port), ADMIN_TOKEN="s3cret-admin"),
            stdout=log,
            stderr=log,
        )
        log.close()
        try:
            await runtime.open()
            runtime.start()
            url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                for _ in range(300):
                    assert server.returncode is None, (tmp_path / "serve.log").read_text()
                    try:
                        if (await http.get("/ready")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
                yield Stack(
                    settings,
                    runtime,
                    chat2desk=chat2desk,
                    telegram=telegram,
                    receiver=receiver,
                    http=http,
                )
        finally:
            if server.returncode is None:
                server.terminate()
                await asyncio.wait_for(server.wait(), 20)
            await forget_clients(runtime.engine, namespace + "-")
            await runtime.aclose()
            await remove_namespace(namespace)


async def test_admin_api_alerts_and_status_notifications(stack: Stack) -> None:
    http = stack.http
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = await http.get("/api/orders", headers=headers)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert (await http.patch("/api/orders/1", json={"status": "confirmed"})).status_code == 401

    client = stack.prefix + "501"
    for text, until in [
        ("Hello", "address"),
        ("Chui <avenue> 120", "phone"),
        ("0555 123 456", "bottles"),
        ("3", "correct"),
        ("yes", "Order #"),
    ]:
        await stack.say(client, text, until)

    # New-order alerts: the admin chat on Telegram and the order webhook, once each.
    await wait_for(lambda: stack.telegram.texts(ADMIN_CHAT) and stack.receiver.bodies)
    (body,) = stack.receiver.bodies
    order_id = body["order"]["id"]
    assert body["order"]["client_id"] == client and body["order"]["address"] == "Chui <avenue> 120"
    assert stack.receiver.keys == [f"new-order:{order_id}:webhook"]
    (alert,) = stack.telegram.texts(ADMIN_CHAT)
    # the shop's language (DEFAULT_LANGUAGE, ru by default), every detail
    assert f"Новый заказ #{order_id}" in alert and "Chui <avenue> 120" in alert

    listed = (await http.get("/api/orders?status=new&limit=500", headers=ADMIN)).json()
    assert order_id in [o["id"] for o in listed["orders"]]
    order = (await http.get(f"/api/orders/{order_id}", headers=ADMIN)).json()
    assert (order["client_id"], order["status"], order["history"]) == (client, "new", [])

    for status in ("confirmed", "in_progress", "ready", "delivered"):
        r = await http.patch(
            f"/api/orders/{order_id}", json={"status": status, "note": "n"}, headers=ADMIN
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == status and r.json()["history"][-1]["to"] == status
        expected = status_notification(FLOW, status, "en", order_id=order_id)
        await wait_for(lambda expected=expected: expected in stack.chat2desk.texts(client))
    r = await http.patch(f"/api/orders/{order_id}", json={"status": "cancelled"}, headers=ADMIN)
    assert r.status_code == 409 and r.json()["error"] == "invalid_transition"
    missing = order_id + 10_000_000
    r = await http.patch(f"/api/orders/{missing}", json={"status": "confirmed"}, headers=ADMIN)
    assert r.status_code == 404
    assert (await http.get(f"/api/orders/{missing}", headers=ADMIN)).status_code == 404
    r = await http.patch(f"/api/orders/{order_id}", json={"status": "lost"}, headers=ADMIN)
    assert r.status_code == 422
    # Numbers past BIGINT are a 422, not a 503 from the database (issue 18).
    huge = "9223372036854775808"
    for r in (
        await http.get(f"/api/orders?offset={huge}", headers=ADMIN),
        await http.get(f"/api/orders/{huge}", headers=ADMIN),
        await http.patch(f"/api/orders/{huge}", json={"status": "confirmed"}, headers=ADMIN),
    ):
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
    assert (await http.get("/health")).status_code == 200
    # Each notification was sent once.
    notes = [t for t in stack.chat2desk.texts(client) if f"#{order_id}" in t]
    assert len(notes) == len(set(notes))


async def test_a_dead_letter_alerts_the_admin_chat_once_through_rabbitmq(stack: Stack) -> None:
    """Issue 19: the sender's alert goes through the RabbitMQ outbox to the admin chat, once
    for two dead letters in one ALERT_INTERVAL; ``orderbot serve`` shows it in /status from
    what the sender published to Redis."""
    for n in ("701", "702"):
        client = stack.prefix + n
        stack.chat2desk.fail_client(client, status=400)
        r = await stack.http.post(
            "/webhook/chat2desk",
            json={"client_id": client, "message_id": f"{client}-0", "text": "Hello"},
        )
        assert r.status_code == 200
    await wait_for(lambda: stack.runtime.sender.counts.dead == 2)
    await wait_for(
        lambda: any("dead-lettered" in t for t in stack.telegram.texts(ADMIN_CHAT)),
    )
    await stack.runtime.sender.monitor_once()  # publish now rather than in 10 s
    status = (await stack.http.get("/status", headers=ADMIN)).json()
    assert ("dead_letter", "chat2desk") in {(a["kind"], a["subject"]) for a in status["alerts"]}
    assert status["channels"]["chat2desk"]["circuit"] == "closed"
    await asyncio.sleep(0.5)  # a second alert would have reached the fake by now
    assert len([t for t in stack.telegram.texts(ADMIN_CHAT) if "dead-lettered" in t]) == 1


async def test_handoff_silence_and_handback_by_api_and_cli(stack: Stack) -> None:
    http, chat2desk = stack.http, stack.chat2desk
    client = stack.prefix + "601"
    await stack.say(client, "Hello", "address")
    await stack.say(client, "оператор", "operator")
    asked = f"{client}-{stack.count}"  # the message that asked for a person
    await wait_for(lambda: any(t["message_id"] == asked for t in chat2desk.transfers))
    (transfer,) = [t for t in chat2desk.transfers if t["message_id"] == asked]
    assert transfer["operator_id"] == 15
    handoffs = (await http.get("/api/handoffs", headers=ADMIN)).json()["handoffs"]
    assert ("chat2desk", client) in [(h["channel"], h["client_id"]) for h in handoffs]

    sent = len(chat2desk.texts(client))
    await stack.say(client, "Chui avenue 1", None)
    assert await stack.logged(client, f"{client}-{stack.count}") == "HANDOFF"
    r = await http.post(f"/api/handoffs/chat2desk/{client}/handback", headers=ADMIN)
    assert r.status_code == 200, r.text
    await wait_for(lambda: len(chat2desk.texts(client)) > sent)
    # Silent while handed off: the only new message is the comeback with the same question.
    (back,) = chat2desk.texts(client)[sent:]
    assert "operator has finished" in back and "address" in back
    r = await http.post(f"/api/handoffs/chat2desk/{client}/handback", headers=ADMIN)
    assert r.status_code == 404
    await stack.say(client, "Chui avenue 120, apt 5", "phone")  # resumes at the same step

    # The same through the CLI, another process.
    await stack.say(client, "/operator", "operator")
    sent = len(chat2desk.texts(client))
    command = [sys.executable, "-m", "orderbot", "handback", client, "--channel", "chat2desk"]
    done = await asyncio.to_thread(
        subprocess.run,
        command,
        env=cli_env(stack.settings),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    await wait_for(lambda: len(chat2desk.texts(client)) > sent)
    (back,) = chat2desk.texts(client)[sent:]
    assert "operator has finished" in back and "phone" in back
    await stack.say(client, "0555 123 456", "bottles")


async def test_handoff_timeout_gives_the_conversation_back(tmp_path: Path) -> None:
    require_services()
    await migrate_postgres()
    namespace = "e" + uuid.uuid4().hex[:10]
    client = namespace + "-701"
    async with FakeChat2Desk() as chat2desk:
        settings = distributed_settings(
            namespace,
            chat2desk_api_url=chat2desk.url,
            chat2desk_group_id=9,
            handoff_timeout=1.0,
            upload_dir=tmp_path / "uploads",
        )
        runtime = DistributedRuntime(
            settings,
            roles=("worker", "sender"),
            channels={"chat2desk": Chat2DeskChannel(api_url=chat2desk.url, token="test-token")},
            poll_interval=0.1,
            lease_interval=0.2,
        )
        try:
            await runtime.open()
            runtime.start()
            from orderbot.messages import InboundMessage

            async def say(number: int, text: str, until: str) -> None:
                before = len(chat2desk.texts(client))
                await runtime.inbound.put(
                    InboundMessage(
                        channel="chat2desk",
                        client_id=client,
                        message_id=f"{client}-{number}",
                        text=text,
                        received_at=time.time(),
                    )
                )
                await wait_for(lambda: any(until in t for t in chat2desk.texts(client)[before:]))

            await say(0, "Hello", "address")
            before = len(chat2desk.texts(client))
            await say(1, "manager", "operator")
            # Housekeeping (every quarter of HANDOFF_TIMEOUT) hands it back without a message.
            await wait_for(
                lambda: any("operator has finished" in t for t in chat2desk.texts(client)[before:])
            )
            assert "address" in chat2desk.texts(client)[-1]
            # The comeback is published before the handoff row is deleted (a crash in between
            # leaves the conversation with the operator): the row may outlive the message by
            # a moment, as it did once in CI.
            deadline = time.monotonic() + 10
            while client in [h["client_id"] for h in await runtime.admin.handoffs()]:
                assert time.monotonic() < deadline, "the handoff was not closed"
                await asyncio.sleep(0.05)
            await say(2, "Chui avenue 120, apt 5", "phone")
        finally:
            await forget_clients(runtime.engine, namespace + "-")
            await runtime.aclose()
            await remove_namespace(namespace)


async def test_an_operator_answering_in_chat2desk_takes_over_until_the_request_closes(
    stack: Stack,
) -> None:
    """Through ``orderbot serve``: the operator's outbox message hands the customer over,
    the bot's own autoreply echo does not, close_request hands back at the same step."""
    http, chat2desk = stack.http, stack.chat2desk
    client = stack.prefix + "701"
    await stack.say(client, "Hello", "address")
    echo = chat2desk.outbox_echo(chat2desk.received[-1])
    assert (await http.post("/webhook/chat2desk", json=echo)).status_code == 200
    operator = chat2desk.operator_says(client, "Anna here, what can I do?")
    assert (await http.post("/webhook/chat2desk", json=operator)).status_code == 200
    takeover = f"outbox:{operator['message_id']}"  # the event's message key in the log
    for _ in range(400):
        if await stack.logged(client, takeover):
            break
        await asyncio.sleep(0.05)
    assert await stack.logged(client, takeover) == "HANDOFF"
    await stack.say(client, "Chui avenue 1", None)  # silent: with the operator
    assert await stack.logged(client, f"{client}-{stack.count}") == "HANDOFF"
    sent = len(chat2desk.texts(client))
    closed = chat2desk.close_request(client)
    assert (await http.post("/webhook/chat2desk", json=closed)).status_code == 200
    await wait_for(lambda: len(chat2desk.texts(client)) > sent)
    (back,) = chat2desk.texts(client)[sent:]
    assert "operator has finished" in back and "address" in back


async def test_a_status_button_in_the_operators_chat_end_to_end(tmp_path: Path) -> None:
    """Issue 17 on the distributed profile: the Telegram updates as the ingress parses them go
    through RabbitMQ to the worker; the sender creates the customer's topic (remembered in Redis)
    and posts the new-order card there with its buttons; an operator's press of one changes the
    status in PostgreSQL as that operator, the customer is told once (the press redelivered
    changes nothing), and the topic gets the outcome with the next buttons."""
    from orderbot.desk.texts import status_name
    from orderbot.orders.alerts import status_buttons
    from tests.fakes.telegram import text_update

    require_services()
    await migrate_postgres()
    namespace = "e" + uuid.uuid4().hex[:10]
    group = -1002003004005
    chat = 700_000_000 + uuid.uuid4().int % 100_000_000  # PostgreSQL is shared: a fresh customer
    async with FakeTelegram() as fake:
        settings = distributed_settings(
            namespace, telegram_bot_token=TOKEN, telegram_api_url=fake.url
        )
        telegram = TelegramChannel(
            token=TOKEN, api_url=fake.url, chat_interval=0.0, operator_chat=str(group)
        )
        runtime = DistributedRuntime(
            settings,
            roles=("worker", "sender"),
            channels={"telegram": telegram},
            poll_interval=0.1,
            lease_interval=0.2,
        )

        async def post(update: dict[str, Any]) -> bool:
            message = telegram.parse_webhook(update, received_at=time.time())
            assert message is not None
            return await runtime.inbound.put(message)

        try:
            await runtime.open()
            runtime.start()
            for n, text in enumerate(["/start", "Chui avenue 120, apt 5", "0555 123 456", "2"], 1):
                await post(text_update(n, chat, text))
            await fake.wait_for(lambda: any("Всё верно?" in t for t in fake.texts(chat)), 20)
            await post(fake.press(5, chat, "Да"))
            await fake.wait_for(lambda: any("Новый заказ #" in t for t in fake.texts(group)), 20)
            await fake.wait_for(lambda: any("принят" in t for t in fake.texts(chat)), 20)
            ((thread, topic),) = fake.topics.items()
            assert topic["name"] == f"telegram:{chat}"
            (card,) = fake.sent(group)
            assert card["message_thread_id"] == thread
            order_id = int(card["_message"]["text"].split("Новый заказ #", 1)[1].split()[0])
            confirm = status_buttons(FLOW, order_id, "new", "ru")[0]

            told_before = len(fake.texts(chat))
            press = fake.press(6, group, confirm, thread_id=thread)
            await post(press)
            await fake.wait_for(lambda: any("(Anna)" in t for t in fake.in_topic(thread)), 20)
            await fake.wait_for(lambda: len(fake.texts(chat)) > told_before, 20)
            await post(press)  # redelivered: the worker drops it by its processed mark
            await asyncio.sleep(0.5)  # whatever else was going to arrive has arrived
            assert fake.texts(chat)[told_before:] == [f"Заказ №{order_id} подтверждён."]
            (outcome,) = [p for p in fake.sent(group) if "(Anna)" in p["_message"]["text"]]
            assert outcome["message_thread_id"] == thread
            assert status_name(FLOW, "confirmed", "ru") in outcome["_message"]["text"]
            labels = [b["text"] for row in outcome["reply_markup"]["inline_keyboard"] for b in row]
            assert labels == list(status_buttons(FLOW, order_id, "confirmed", "ru"))
            assert fake.params("answerCallbackQuery")[-1] == {"callback_query_id": "cq-6"}
            assert len(fake.params("createForumTopic")) == 1
            order = await runtime.admin.get(order_id)
            assert order is not None and order["status"] == "confirmed"
            assert order["history"][-1]["actor"] == "telegram:Anna"
        finally:
            await runtime.aclose()
            await remove_namespace(namespace)
