"""Contract tests: each Chat2Desk API call orderbot makes, as documented or as real clients make
it (sources S1..S10 in docs/chat2desk-api.md), against the fake, which serves only those."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from orderbot.channels.chat2desk import WEBHOOK_EVENTS, Chat2DeskChannel
from orderbot.errors import OutsideWindow, PermanentError, QuotaExceeded
from orderbot.messages import (
    EVENT_DELIVERY_FAILED,
    EVENT_HANDBACK,
    EVENT_OPERATOR,
    OutboundMessage,
)
from tests.fakes.chat2desk import FakeChat2Desk, FakeState


@pytest.fixture
async def fake() -> AsyncIterator[FakeChat2Desk]:
    async with FakeChat2Desk(token="tok") as server:
        yield server


@pytest.fixture
async def chat2desk(fake: FakeChat2Desk) -> AsyncIterator[Chat2DeskChannel]:
    async with Chat2DeskChannel(api_url=fake.url, token="tok", timeout=2) as adapter:
        yield adapter


def transfer(client_id: str, **route: str) -> OutboundMessage:
    return OutboundMessage(
        key="t1", channel="chat2desk", client_id=client_id, text="", route=route, kind="transfer"
    )


def reply(text: str, client_id: str = "12", key: str = "chat2desk:m1:0") -> OutboundMessage:
    return OutboundMessage(key=key, channel="chat2desk", client_id=client_id, text=text)


# The fake answers only documented routes.


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/clients/12/transfer"),  # what orderbot used to call: no source has it
        ("GET", "/v1/nothing"),
        ("DELETE", "/v1/messages"),
    ],
)
async def test_undocumented_routes_are_404_page_not_found(
    fake: FakeChat2Desk, method: str, path: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, fake.base_url + path, headers={"Authorization": "tok"}) as answer,
    ):
        assert answer.status == 404
        assert (await answer.json())["message"] == "Page not found"


async def test_an_undocumented_route_is_a_permanent_error(chat2desk: Chat2DeskChannel) -> None:
    with pytest.raises(PermanentError, match="404"):
        await chat2desk._call("POST", "/clients/12/transfer", {"operator_id": 1})


# Transfers: GET /v1/messages/{id}/transfer?operator_id= (S6 Go client, S7 TypeScript and
# ADVPL clients) and /transfer_to_group?group_id= (S6).


async def test_transfer_to_an_operator_by_the_message_that_asked(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    inbox = fake.client_says(601, "оператор")
    await chat2desk.send(
        transfer("601", operator_id="15", message_id=str(inbox["message_id"]), transport="x")
    )
    assert fake.requests[-1] == (
        "GET",
        f"/v1/messages/{inbox['message_id']}/transfer?operator_id=15",
    )
    assert fake.transfers == [
        {"message_id": str(inbox["message_id"]), "operator_id": 15, "client_id": "601"}
    ]


async def test_transfer_to_a_group(fake: FakeChat2Desk, chat2desk: Chat2DeskChannel) -> None:
    inbox = fake.client_says(602, "person please")
    await chat2desk.send(transfer("602", group_id="9", message_id=str(inbox["message_id"])))
    assert fake.requests[-1] == (
        "GET",
        f"/v1/messages/{inbox['message_id']}/transfer_to_group?group_id=9",
    )
    assert fake.transfers[0]["group_id"] == 9


async def test_a_transfer_queued_without_a_message_id_uses_the_latest_client_message(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    fake.client_says(603, "hello")
    last = fake.client_says(603, "operator")
    fake.client_says(999, "someone else")
    await chat2desk.send(transfer("603", operator_id="15"))
    assert fake.transfers == [
        {"message_id": str(last["message_id"]), "operator_id": 15, "client_id": "603"}
    ]
    # found with documented filters only: client_id, type, limit, offset
    lookups = [path for method, path in fake.requests if path.startswith("/v1/messages?")]
    assert lookups == [
        "/v1/messages?client_id=603&type=from_client&limit=1&offset=0",
        "/v1/messages?client_id=603&type=from_client&limit=1&offset=1",
    ]


async def test_a_transfer_with_nobody_to_transfer_to_is_permanent(
    chat2desk: Chat2DeskChannel,
) -> None:
    with pytest.raises(PermanentError, match="neither"):
        await chat2desk.send(transfer("1", message_id="5"))


async def test_a_refused_transfer_is_permanent(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    with pytest.raises(PermanentError, match="not found"):  # S6: "operator ... not found"
        await chat2desk._call("GET", "/messages/5/transfer?operator_id=")


# Sending: POST /v1/messages with type and open_dialog (S2).


async def test_replies_are_autoreplies_that_leave_the_dialog_closed_by_default(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    await chat2desk.send(reply("Hi", key="chat2desk:m7:0"))
    (body,) = fake.received
    assert (body["type"], body["open_dialog"], body["external_id"]) == (
        "autoreply",
        False,
        "chat2desk:m7:0",
    )


async def test_reply_type_and_open_dialog_are_settings(fake: FakeChat2Desk) -> None:
    async with Chat2DeskChannel(
        api_url=fake.url, token="tok", reply_type="to_client", open_dialog=True
    ) as adapter:
        await adapter.send(reply("Hi"))
    assert (fake.received[0]["type"], fake.received[0]["open_dialog"]) == ("to_client", True)
    with pytest.raises(ValueError, match="reply_type"):
        Chat2DeskChannel(api_url=fake.url, token="t", reply_type="comment")


# Delivery check: GET /v1/messages with documented filters (S4, S5) and meta.total.


async def test_delivery_check_reads_the_newest_messages_by_meta_total(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    for n in range(25):  # more than one page of 20
        await chat2desk.send(reply(f"reply {n}", key=f"chat2desk:m{n}:0"))
    fake.requests.clear()
    assert await chat2desk.was_delivered(reply("reply 24"), since=0) is True
    assert await chat2desk.was_delivered(reply("never sent"), since=0) is False
    paths = [path for _, path in fake.requests]
    assert paths[:2] == [
        "/v1/messages?client_id=12&type=autoreply&limit=1&offset=0",
        "/v1/messages?client_id=12&type=autoreply&limit=20&offset=5",
    ]
    assert not any("order" in path for path in paths)


async def test_the_fake_refuses_an_undocumented_sort_parameter(fake: FakeChat2Desk) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            fake.url + "/messages?client_id=1&order=desc", headers={"Authorization": "tok"}
        ) as answer,
    ):
        assert answer.status == 400


async def test_delivery_check_cannot_tell_without_meta_total(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    await chat2desk.send(reply("Hi"))
    fake.omit_total = True
    assert await chat2desk.was_delivered(reply("Hi"), since=0) is None


# Quota: the body text decides, whatever the status (S4 CheckResponse).


@pytest.mark.parametrize(
    ("monthly", "status", "wait"), [(False, 200, 60.0), (False, 429, 60.0), (True, 403, 3600.0)]
)
async def test_quota_texts_are_rate_limiting_whatever_the_status(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, monthly: bool, status: int, wait: float
) -> None:
    fake.quota_next(1, monthly=monthly, status=status)
    with pytest.raises(QuotaExceeded) as info:
        await chat2desk.send(reply("Hi"))
    assert info.value.retry_after == wait and info.value.retryable
    await chat2desk.send(reply("Hi"))  # the next call goes through
    assert fake.texts() == ["Hi"]


# Webhooks: GET/POST /v1/webhooks (S3), PUT /v1/webhooks/{id} (issue 17).


async def test_set_webhook_is_idempotent_and_never_registers_a_second_hook(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    other = {"name": "crm", "url": "https://crm.example/hook", "events": ["inbox"]}
    async with aiohttp.ClientSession() as http:
        await http.post(fake.url + "/webhooks", json=other, headers={"Authorization": "tok"})
    first = await chat2desk.set_webhook("https://bot.example/webhook/chat2desk/s1")
    again = await chat2desk.set_webhook("https://bot.example/webhook/chat2desk/s1")
    assert (first["action"], again["action"]) == ("created", "unchanged")
    # a new WEBHOOK_SECRET: the same hook gets the new URL
    moved = await chat2desk.set_webhook("https://bot.example/webhook/chat2desk/s2")
    assert moved["action"] == "updated"
    ours = [h for h in fake.webhooks if h["name"] == "orderbot"]
    assert len(ours) == 1 and len(fake.webhooks) == 2
    assert ours[0]["url"].endswith("/s2") and ours[0]["events"] == list(WEBHOOK_EVENTS)
    assert ("PUT", f"/v1/webhooks/{ours[0]['id']}") in fake.requests
    # a hook Chat2Desk disabled is enabled again by the same command
    fake.disable_webhook("timeout")
    assert (await chat2desk.webhooks())[1]["status"] == "disabled"
    assert (await chat2desk.set_webhook(ours[0]["url"]))["action"] == "updated"
    assert ours[0]["status"] == "enabled"


# Webhook events (S3 inbox/outbox examples; S8 event names).


def parse(payload: dict[str, Any], channel: Chat2DeskChannel | None = None) -> Any:
    adapter = channel or Chat2DeskChannel(api_url="http://unused.invalid/v1", token="t")
    return adapter.parse_webhook(payload, received_at=1.0)


def test_an_operators_message_is_a_takeover() -> None:
    desk = FakeState()
    event = parse(desk.operator_says(601, "Hello, I am Anna", operator_id=41164))
    assert event.client_id == "601" and event.text == ""
    assert event.route["event"] == EVENT_OPERATOR and event.route["operator_id"] == "41164"
    assert event.message_id.startswith("outbox:")


async def test_the_bots_own_to_client_message_is_recognised_by_its_message_id(
    fake: FakeChat2Desk,
) -> None:
    async with Chat2DeskChannel(api_url=fake.url, token="tok", reply_type="to_client") as adapter:
        await adapter.send(reply("Which address?", client_id="601"))
        echo = fake.outbox_echo(fake.received[0])
        assert echo["type"] == "to_client"
        assert parse(echo, adapter) is None
        assert parse(fake.operator_says(601, "Anna here"), adapter) is not None


def test_the_bots_autoreplies_are_not_a_takeover() -> None:
    desk = FakeState()
    echo = desk.operator_says(601, "bot text")
    assert parse({**echo, "type": "autoreply", "operator_id": None}) is None


def test_closing_the_request_is_a_handback() -> None:
    event = parse(FakeState().close_request(601, request_id=77))
    assert event.client_id == "601" and event.route["event"] == EVENT_HANDBACK
    assert event.message_id.startswith("close_request:77:")
    nested = parse({"hook_type": "close_dialog", "client": {"id": 5}, "dialog_id": 3})
    assert nested.client_id == "5" and nested.route["event"] == EVENT_HANDBACK


def test_a_dialog_transferred_to_an_operator_is_a_takeover() -> None:
    event = parse(
        {"hook_type": "dialog_transferred", "client_id": 8, "operator_id": 3, "dialog_id": 1}
    )
    assert event.route["event"] == EVENT_OPERATOR


@pytest.mark.parametrize(
    ("transport", "phone", "offered"),
    [
        ("whatsapp", "996555123456", "+996555123456"),
        ("wa_dialog", "+79161234567", "+79161234567"),
        ("telegram", "[tg] 807892", None),
        ("widget", "[chat] 1d0b2f", None),
        ("whatsapp", "[chat] 1d0b2f", None),
        ("viber", "996555123456", None),
    ],
)
def test_client_phone_is_passed_on_for_whatsapp_transports_only(
    transport: str, phone: str, offered: str | None
) -> None:
    desk = FakeState()
    desk.clients["7"] = {"phone": phone}
    message = parse(desk.client_says(7, "hi", transport=transport))
    assert message.route.get("phone") == offered


# WhatsApp's 24-hour window (business-API transports): GET /v1/messages type=from_client.


async def test_a_late_notification_on_a_windowed_transport_is_not_sent(
    fake: FakeChat2Desk,
) -> None:
    now = [time.time()]
    async with Chat2DeskChannel(
        api_url=fake.url, token="tok", window_transports=("wa_dialog",), clock=lambda: now[0]
    ) as adapter:
        fake.client_says(42, "спасибо", transport="wa_dialog")
        late = OutboundMessage(
            key="status:7:3",
            channel="chat2desk",
            client_id="42",
            text="Order 7 is ready",
            route={"transport": "wa_dialog"},
        )
        await adapter.send(late)  # within 24 h: sent
        now[0] += 25 * 3600
        with pytest.raises(OutsideWindow, match="24-hour"):
            await adapter.send(late)
        asked = len(fake.requests)
        # a direct answer to the customer's message is inside by definition: no look-up
        await adapter.send(reply("Hi", client_id="42", key="chat2desk:m9:0"))
        # another transport has no window
        await adapter.send(
            OutboundMessage(
                key="status:8:1",
                channel="chat2desk",
                client_id="42",
                text="x",
                route={"transport": "telegram"},
            )
        )
        assert len(fake.requests) == asked + 2  # the two sends only
    assert fake.texts("42") == ["Order 7 is ready", "Hi", "x"]


def test_outbox_status_is_a_delivery_failure_record() -> None:
    event = parse(
        {
            "hook_type": "outbox_status",
            "message_id": 5,
            "client_id": 9,
            "status": "failed",
            "error": "Message failed to send because more than 24 hours have passed",
        }
    )
    assert event.route["event"] == EVENT_DELIVERY_FAILED and event.client_id == "9"
    assert "more than 24 hours" in event.text and event.message_id.startswith("outbox_status:5:")
    assert parse({"hook_type": "outbox_status", "message_id": 5}) is None
