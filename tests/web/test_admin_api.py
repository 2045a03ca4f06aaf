"""The admin API over a real server, end to end: webhooks in, orders, status changes notified
through the fake Chat2Desk and the fake Telegram, new-order alerts to admins and to an order
webhook, handoff with a Chat2Desk transfer and a handback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from orderbot.channels.chat2desk import Chat2DeskChannel
from orderbot.channels.order_webhook import OrderWebhookChannel
from orderbot.channels.telegram.client import TelegramChannel
from orderbot.config import Settings
from orderbot.desk.texts import status_notification
from orderbot.dialog.loader import load_flow
from orderbot.runtime.embedded import EmbeddedRuntime
from orderbot.web.app import create_app
from tests.fakes.chat2desk import FakeChat2Desk
from tests.fakes.telegram import TOKEN, FakeTelegram, text_update
from tests.support.servers import serving

TOKEN_HEADER = {"Authorization": "Bearer s3cret-admin"}
ADMIN_CHAT = 4242
FLOW = load_flow("water")


class Receiver:
    """A fake order-webhook endpoint: records JSON bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str] = []

    async def hook(self, request: Request) -> JSONResponse:
        self.bodies.append(await request.json())
        self.keys.append(request.headers.get("idempotency-key", ""))
        return JSONResponse({"ok": True})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[dict[str, Any]]:
    receiver = Receiver()
    async with (
        FakeChat2Desk() as chat2desk,
        FakeTelegram() as telegram,
        serving(receiver.app()) as hook_url,
    ):
        configured = settings.model_copy(
            update={
                "admin_token": "s3cret-admin",
                "admin_chat_ids": str(ADMIN_CHAT),
                "chat2desk_operator_id": 15,
                "telegram_bot_token": TOKEN,
            }
        )
        channels = {
            "chat2desk": Chat2DeskChannel(api_url=chat2desk.url, token="test-token"),
            "telegram": TelegramChannel(token=TOKEN, api_url=telegram.url, chat_interval=0.0),
            "order_webhook": OrderWebhookChannel(hook_url + "/hook"),
        }
        # orderbot's hook is registered: the admins hear of orders, not of a missing hook.
        async with Chat2DeskChannel(api_url=chat2desk.url, token="test-token") as registrar:
            await registrar.set_webhook("https://shop.example/webhook/chat2desk")
        runtime = EmbeddedRuntime(configured, channels=channels)
        async with serving(create_app(runtime)) as url, httpx.AsyncClient(base_url=url) as client:
            yield {
                "client": client,
                "chat2desk": chat2desk,
                "telegram": telegram,
                "receiver": receiver,
                "runtime": runtime,
            }


async def chat2desk_says(
    stack: dict[str, Any], client: str, number: int, text: str, until: str
) -> None:
    fake: FakeChat2Desk = stack["chat2desk"]
    before = len(fake.texts(client))
    r = await stack["client"].post(
        "/webhook/chat2desk",
        json={
            "client_id": client,
            "message_id": f"{client}-{number}",
            "text": text,
            "transport": "whatsapp",
            "channel_id": 3,
        },
    )
    assert r.status_code == 200, r.text
    await wait_for(lambda: any(until in t for t in fake.texts(client)[before:]))


async def test_auth_and_openapi(settings: Settings) -> None:
    runtime = EmbeddedRuntime(settings)  # ADMIN_TOKEN unset: the API is off, not open
    async with (
        serving(create_app(runtime, run_background=False)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        r = await client.get("/api/orders", headers=TOKEN_HEADER)
        assert (
            r.status_code == 503 and r.json()["message"] == "admin API disabled (set ADMIN_TOKEN)"
        )
        spec = (await client.get("/openapi.json")).json()
    for path, method in (
        ("/api/orders", "get"),
        ("/api/orders/{order_id}", "get"),
        ("/api/orders/{order_id}", "patch"),
        ("/api/handoffs/{channel}/{client_id}/handback", "post"),
    ):
        operation = spec["paths"][path][method]
        assert {"401", "503"} <= set(operation["responses"]), path
        assert operation["security"] == [{"ADMIN_TOKEN": []}]
    assert "409" in spec["paths"]["/api/orders/{order_id}"]["patch"]["responses"]
    assert spec["components"]["securitySchemes"]["ADMIN_TOKEN"]["scheme"] == "bearer"

    runtime = EmbeddedRuntime(settings.model_copy(update={"admin_token": "s3cret-admin"}))
    async with (
        serving(create_app(runtime, run_background=False)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-admin"}):
            r = await client.get("/api/orders", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        r = await client.patch(
            "/api/orders/1", json={"status": "confirmed"}, headers={"Authorization": "Bearer nope"}
        )
        assert r.status_code == 401
        assert (await client.get("/api/orders", headers=TOKEN_HEADER)).json()["orders"] == []


async def test_orders_statuses_alerts_and_notifications_end_to_end(stack: dict[str, Any]) -> None:
    client: httpx.AsyncClient = stack["client"]
    chat2desk: FakeChat2Desk = stack["chat2desk"]
    telegram: FakeTelegram = stack["telegram"]
    receiver: Receiver = stack["receiver"]
    for i, (text, until) in enumerate(
        [
            ("Hello", "address"),
            ("Chui <avenue> 120", "phone"),
            ("0555 123 456", "bottles"),
            ("3", "correct"),
            ("yes", "Order #"),
        ]
    ):
        await chat2desk_says(stack, "501", i, text, until)

    # New-order alerts: the admin chat on Telegram and the order webhook, once each.
    await wait_for(lambda: telegram.texts(ADMIN_CHAT) and receiver.bodies)
    (order,) = (await client.get("/api/orders", headers=TOKEN_HEADER)).json()["orders"]
    order_id = order["id"]
    (alert,) = telegram.texts(ADMIN_CHAT)
    # the shop's language (DEFAULT_LANGUAGE, ru by default), every detail
    assert f"Новый заказ #{order_id}" in alert and "Chui <avenue> 120" in alert  # escaped, intact
    (body,) = receiver.bodies
    assert body["event"] == "order.created" and body["order"]["id"] == order_id
    assert body["order"]["address"] == "Chui <avenue> 120" and receiver.keys == [
        f"new-order:{order_id}:webhook"
    ]

    # Status changes: each one answered with the updated order and told to the customer.
    for status in ("confirmed", "in_progress", "ready", "delivered"):
        r = await client.patch(
            f"/api/orders/{order_id}", json={"status": status, "note": "n"}, headers=TOKEN_HEADER
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == status and r.json()["history"][-1]["to"] == status
        expected = status_notification(FLOW, status, "en", order_id=order_id)
        await wait_for(lambda expected=expected: expected in chat2desk.texts("501"))
    assert [
        h["to"]
        for h in (await client.get(f"/api/orders/{order_id}", headers=TOKEN_HEADER)).json()[
            "history"
        ]
    ] == ["confirmed", "in_progress", "ready", "delivered"]

    r = await client.patch(
        f"/api/orders/{order_id}", json={"status": "cancelled"}, headers=TOKEN_HEADER
    )
    assert r.status_code == 409 and r.json()["error"] == "invalid_transition"
    assert (
        await client.patch("/api/orders/9999", json={"status": "confirmed"}, headers=TOKEN_HEADER)
    ).status_code == 404
    assert (await client.get("/api/orders/9999", headers=TOKEN_HEADER)).json()[
        "error"
    ] == "not_found"
    assert (
        await client.patch(f"/api/orders/{order_id}", json={"status": "lost"}, headers=TOKEN_HEADER)
    ).status_code == 422
    assert (await client.get("/api/orders?status=lost", headers=TOKEN_HEADER)).status_code == 422
    listed = (
        await client.get("/api/orders?status=delivered&limit=5&offset=0", headers=TOKEN_HEADER)
    ).json()
    assert [o["id"] for o in listed["orders"]] == [order_id]

    # A Telegram customer is notified on Telegram.
    chat = 777
    for i, (text, until) in enumerate(
        [
            ("Привет", "адрес"),
            ("ул. Киевская 5", "телефон"),
            ("0555 123 456", "бутыл"),
            ("2", "верно"),
            ("да", "№"),
        ]
    ):
        before = len(telegram.texts(chat))
        assert (
            await client.post("/webhook/telegram", json=text_update(100 + i, chat, text))
        ).status_code == 200
        await wait_for(
            lambda before=before, until=until: any(
                until in t for t in telegram.texts(chat)[before:]
            )
        )
    tg_order = (await client.get("/api/orders?limit=1", headers=TOKEN_HEADER)).json()["orders"][0][
        "id"
    ]
    r = await client.patch(
        f"/api/orders/{tg_order}", json={"status": "confirmed"}, headers=TOKEN_HEADER
    )
    assert r.status_code == 200
    expected = status_notification(FLOW, "confirmed", "ru", order_id=tg_order)
    await wait_for(lambda: expected in telegram.texts(chat))


async def test_handoff_transfer_and_handback_through_the_api(stack: dict[str, Any]) -> None:
    client: httpx.AsyncClient = stack["client"]
    chat2desk: FakeChat2Desk = stack["chat2desk"]
    await chat2desk_says(stack, "601", 0, "Hello", "address")
    await chat2desk_says(stack, "601", 1, "оператор", "operator")
    await wait_for(lambda: chat2desk.transfers)
    # the documented call (GET /v1/messages/{id}/transfer?operator_id=), by the message that asked
    assert chat2desk.transfers == [{"message_id": "601-1", "operator_id": 15, "client_id": None}]
    handoffs = (await client.get("/api/handoffs", headers=TOKEN_HEADER)).json()["handoffs"]
    assert [(h["channel"], h["client_id"]) for h in handoffs] == [("chat2desk", "601")]

    sent = len(chat2desk.texts("601"))
    r = await client.post(
        "/webhook/chat2desk",
        json={"client_id": "601", "message_id": "601-2", "text": "Chui avenue 1"},
    )
    assert r.status_code == 200
    runtime: EmbeddedRuntime = stack["runtime"]

    async def handled() -> bool:
        row = await runtime.db.run(
            lambda c: c.execute(
                "SELECT done FROM inbound_queue WHERE dedupe_key = 'chat2desk:601-2'"
            ).fetchone()
        )
        return bool(row[0])

    for _ in range(500):
        if await handled():
            break
        await asyncio.sleep(0.02)
    assert await handled()
    r = await client.post("/api/handoffs/chat2desk/601/handback", headers=TOKEN_HEADER)
    assert r.status_code == 200, r.text
    await wait_for(lambda: len(chat2desk.texts("601")) > sent)
    # Silent while handed off: the only new message is the comeback with the same question.
    (back,) = chat2desk.texts("601")[sent:]
    assert "operator has finished" in back and "address" in back
    assert (
        await client.post("/api/handoffs/chat2desk/601/handback", headers=TOKEN_HEADER)
    ).status_code == 404
    await chat2desk_says(stack, "601", 3, "Chui avenue 120, apt 5", "phone")
    assert orjson.loads(orjson.dumps(chat2desk.transfers))[0]["operator_id"] == 15


async def test_an_operator_answering_in_chat2desk_takes_over_until_the_request_closes(
    stack: dict[str, Any],
) -> None:
    """Over HTTP, as Chat2Desk posts its events: the operator's outbox message hands the
    customer over (the bot's own autoreply echoes do not), close_request hands them back."""
    client: httpx.AsyncClient = stack["client"]
    chat2desk: FakeChat2Desk = stack["chat2desk"]
    await chat2desk_says(stack, "701", 0, "Hello", "address")
    # Chat2Desk echoes the bot's reply as an outbox event of type autoreply: not a takeover.
    echo = chat2desk.outbox_echo(chat2desk.received[-1])
    assert echo["type"] == "autoreply"
    assert (await client.post("/webhook/chat2desk", json=echo)).status_code == 200
    operator = chat2desk.operator_says("701", "Anna here, what can I do?")
    assert (await client.post("/webhook/chat2desk", json=operator)).status_code == 200

    async def handed_off() -> bool:
        rows = (await client.get("/api/handoffs", headers=TOKEN_HEADER)).json()["handoffs"]
        return ("chat2desk", "701") in [(h["channel"], h["client_id"]) for h in rows]

    for _ in range(500):
        if await handed_off():
            break
        await asyncio.sleep(0.02)
    assert await handed_off()
    sent = len(chat2desk.texts("701"))
    closed = chat2desk.close_request("701")
    assert (await client.post("/webhook/chat2desk", json=closed)).status_code == 200
    await wait_for(lambda: len(chat2desk.texts("701")) > sent)
    (back,) = chat2desk.texts("701")[sent:]
    assert "operator has finished" in back and "address" in back
    assert not await handed_off()
