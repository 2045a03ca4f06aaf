"""Chat2Desk adapter: webhook parsing, and sending against the fake Chat2Desk server."""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest

from orderbot.channels.chat2desk import Chat2DeskChannel, parse_retry_after, render_buttons
from orderbot.errors import (
    InvalidPayload,
    PermanentError,
    RateLimited,
    ServerError,
    Timeout,
)
from orderbot.messages import OutboundMessage
from tests.fakes.chat2desk import FakeChat2Desk

REAL_INBOX: dict[str, Any] = {
    "message_id": 28780,
    "type": "from_client",
    "text": "test7",
    "transport": "widget",
    "client_id": 12568,
    "operator_id": None,
    "dialog_id": 942,
    "channel_id": 1,
    "photo": None,
    "coordinates": None,
    "audio": None,
    "pdf": None,
    "client": {
        "id": 12568,
        "phone": "[chat] 1d0b2f",
        "client_phone": None,
        "name": "Guest",
        "assigned_name": None,
        "external_id": None,
    },
    "hook_type": "inbox",
    "request_id": 5357,
    "attachments": [],
    "is_new_request": False,
    "is_new_client": False,
    "insta_comment": False,
    "extra_data": {},
    "is_new": True,
    "event_time": "2025-04-03T11:50:06.984494Z",
}

channel = Chat2DeskChannel(api_url="http://unused.invalid/v1", token="t")


def parse(payload: Any) -> Any:
    return channel.parse_webhook(payload, received_at=123.0)


def invalid(payload: Any) -> list[dict[str, str]]:
    with pytest.raises(InvalidPayload) as info:
        parse(payload)
    assert info.value.status == 422
    assert info.value.details
    return info.value.details


# parsing


def test_real_inbox_payload() -> None:
    message = parse(REAL_INBOX)
    assert message.channel == "chat2desk"
    assert message.client_id == "12568"
    assert message.message_id == "28780"
    assert message.text == "test7"
    assert message.received_at == 123.0
    assert message.attachments == ()
    assert message.route == {"transport": "widget", "channel_id": "1"}


def test_minimal_payload_with_string_ids_is_stripped() -> None:
    message = parse({"client_id": " 42 ", "message_id": "m-1", "text": "Привет"})
    assert (message.client_id, message.message_id, message.text) == ("42", "m-1", "Привет")
    assert message.route == {}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "not null"),
        (True, "boolean"),
        (False, "boolean"),
        (12.5, "number"),
        (12.0, "number"),
        ("", "empty"),
        ("   ", "empty"),
        ([1], "array"),
        ({"id": 1}, "object"),
        ("x" * 200, "longer"),
    ],
)
@pytest.mark.parametrize("field", ["client_id", "message_id"])
def test_bad_ids_are_rejected(field: str, value: Any, problem: str) -> None:
    payload = {"client_id": 1, "message_id": 2, "text": "hi", field: value}
    details = invalid(payload)
    assert details[0]["field"] == field
    if problem != "not null":
        assert problem in details[0]["problem"]


@pytest.mark.parametrize("field", ["client_id", "message_id"])
def test_missing_ids_are_rejected(field: str) -> None:
    payload = {"client_id": 1, "message_id": 2, "text": "hi"}
    del payload[field]
    assert invalid(payload) == [{"field": field, "problem": "missing"}]


@pytest.mark.parametrize("payload", [None, [], "text", 5, [REAL_INBOX]])
def test_payload_must_be_an_object(payload: Any) -> None:
    assert invalid(payload)[0]["field"] == "$"


@pytest.mark.parametrize("text", [5, ["a"], {"a": 1}, True])
def test_text_must_be_a_string(text: Any) -> None:
    assert invalid({"client_id": 1, "message_id": 2, "text": text})[0]["field"] == "text"


@pytest.mark.parametrize("text", [None, "", "  \n"])
def test_no_text_and_no_attachment_is_rejected(text: Any) -> None:
    payload: dict[str, Any] = {"client_id": 1, "message_id": 2}
    if text is not None:
        payload["text"] = text
    assert invalid(payload)[0]["field"] == "text"


def test_nested_wrong_types_are_rejected() -> None:
    base = {"client_id": 1, "message_id": 2, "text": "hi"}
    assert invalid({**base, "attachments": "x"})[0]["field"] == "attachments"
    assert invalid({**base, "attachments": [5]})[0]["field"] == "attachments[0]"
    assert invalid({**base, "attachments": [{"name": "a"}]})[0]["field"] == "attachments[0].link"
    assert invalid({**base, "photo": 5})[0]["field"] == "photo"
    assert invalid({**base, "pdf": {"url": "x"}})[0]["field"] == "pdf"
    assert invalid({**base, "coordinates": [1, 2]})[0]["field"] == "coordinates"


@pytest.mark.parametrize(
    "change",
    [
        {"type": "to_client"},
        {"type": "system"},
        {"type": "autoreply"},
        {"hook_type": "outbox"},
        {"hook_type": "close_dialog"},
    ],
)
def test_echoes_and_other_events_are_ignored(change: dict[str, str]) -> None:
    assert parse({**REAL_INBOX, **change}) is None


def test_ignored_events_need_no_ids() -> None:
    assert parse({"hook_type": "new_request", "request_id": 5}) is None


def test_attachments_without_text() -> None:
    payload = copy.deepcopy(REAL_INBOX)
    payload.update(
        text=None,
        photo="https://files.example/p.jpg",
        pdf="https://files.example/order.pdf",
        coordinates="42.87, 74.59",
        attachments=[
            {"link": "https://files.example/model.stl", "name": "model.stl", "size": 2048},
            "https://files.example/raw.bin",
        ],
    )
    message = parse(payload)
    assert message.text == ""
    kinds = [(a.kind, a.url, a.name) for a in message.attachments]
    assert kinds == [
        ("photo", "https://files.example/p.jpg", ""),
        ("file", "https://files.example/order.pdf", ""),
        ("location", "geo:42.87,74.59", ""),
        ("file", "https://files.example/model.stl", "model.stl"),
        ("file", "https://files.example/raw.bin", ""),
    ]
    assert message.attachments[3].size == 2048


def test_parsing_is_fast() -> None:
    start = time.perf_counter()
    for _ in range(10_000):
        parse(REAL_INBOX)
    # Generous bound (about 50x slack): only catches an accidental heavy validator.
    assert time.perf_counter() - start < 1.0


# helpers


def test_render_buttons() -> None:
    assert render_buttons("Подтвердить?", ("Да", "Нет")) == "Подтвердить?\n1. Да\n2. Нет"
    assert render_buttons("hi", ()) == "hi"


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) == 1.0
    assert parse_retry_after("") == 1.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") == 1.0
    assert parse_retry_after("nan") == 1.0
    now = time.time()
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)


# sending


@pytest.fixture
async def fake() -> AsyncIterator[FakeChat2Desk]:
    async with FakeChat2Desk() as server:
        yield server


@pytest.fixture
async def chat2desk(fake: FakeChat2Desk) -> AsyncIterator[Chat2DeskChannel]:
    async with Chat2DeskChannel(api_url=fake.url, token="secret-token", timeout=0.5) as adapter:
        yield adapter


def reply(text: str = "Ваш заказ принят", **fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {"key": "k1", "channel": "chat2desk", "client_id": "12568"}
    values.update(fields)
    return OutboundMessage(text=text, **values)


async def test_send_body_and_authorization(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    await chat2desk.send(reply(route={"transport": "whatsapp", "channel_id": "7"}))
    assert fake.received == [
        {
            "client_id": 12568,
            "text": "Ваш заказ принят",
            "type": "to_client",
            "transport": "whatsapp",
            "channel_id": 7,
            "authorization": "secret-token",
        }
    ]


async def test_non_numeric_client_id_stays_a_string(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    await chat2desk.send(reply(client_id="abc-1"))
    assert fake.received[0]["client_id"] == "abc-1"
    assert "transport" not in fake.received[0]


async def test_buttons_become_numbered_lines(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    await chat2desk.send(reply("Всё верно?", buttons=("Да", "Нет")))
    assert fake.received[0]["text"] == "Всё верно?\n1. Да\n2. Нет"


async def test_server_error(fake: FakeChat2Desk, chat2desk: Chat2DeskChannel) -> None:
    fake.fail_next(1, status=500)
    with pytest.raises(ServerError, match="500"):
        await chat2desk.send(reply())
    assert fake.received == []


async def test_rate_limited_carries_the_wait(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    fake.rate_limit_next(1, retry_after=7)
    with pytest.raises(RateLimited) as info:
        await chat2desk.send(reply())
    assert info.value.retry_after == 7.0
    fake.rate_limit_next(1, retry_after=None)
    with pytest.raises(RateLimited) as info:
        await chat2desk.send(reply())
    assert info.value.retry_after == 1.0


async def test_hang_is_a_timeout(fake: FakeChat2Desk, chat2desk: Chat2DeskChannel) -> None:
    fake.hang_next(1, seconds=5)
    with pytest.raises(Timeout):
        await chat2desk.send(reply())


async def test_client_error_is_permanent_and_keeps_text_out(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    fake.fail_next(1, status=400)
    with pytest.raises(PermanentError) as info:
        await chat2desk.send(reply("адрес: ул. Токтогула 1, тел +996555123456"))
    message = str(info.value)
    assert "400" in message
    assert "Токтогула" not in message
    assert "555123456" not in message


async def test_status_error_in_a_200_is_permanent(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    fake.fail_next(1, status=200)
    with pytest.raises(PermanentError, match="status=error"):
        await chat2desk.send(reply())


async def test_wrong_token_is_permanent(fake: FakeChat2Desk) -> None:
    fake.token = "right"
    async with Chat2DeskChannel(api_url=fake.url, token="wrong") as adapter:
        with pytest.raises(PermanentError, match="401"):
            await adapter.send(reply())


async def test_connection_refused_is_a_server_error() -> None:
    async with Chat2DeskChannel(api_url="http://127.0.0.1:9/v1", token="t") as adapter:
        with pytest.raises(ServerError):
            await adapter.send(reply())


async def test_injected_client_is_not_closed(fake: FakeChat2Desk) -> None:
    async with aiohttp.ClientSession() as client:
        adapter = Chat2DeskChannel(api_url=fake.url, token="t", client=client)
        await adapter.send(reply())
        await adapter.aclose()
        await adapter.aclose()
        assert not client.closed


async def test_own_client_is_closed_idempotently(fake: FakeChat2Desk) -> None:
    adapter = Chat2DeskChannel(api_url=fake.url, token="t")
    await adapter.send(reply())
    session = adapter._client
    assert session is not None
    await adapter.aclose()
    await adapter.aclose()
    assert session.closed
    with pytest.raises(PermanentError):  # a closed channel does not quietly reopen
        await adapter.send(reply())


async def test_set_webhook_and_api_info(fake: FakeChat2Desk, chat2desk: Chat2DeskChannel) -> None:
    answer = await chat2desk.set_webhook("https://bot.example/webhook/chat2desk")
    assert answer["status"] == "success"
    assert fake.webhooks == [
        {"url": "https://bot.example/webhook/chat2desk", "name": "orderbot", "events": ["inbox"]}
    ]
    info = await chat2desk.api_info()
    assert info["data"]["hooks"] == 1
    assert "requests_limit" in info["data"]


async def test_api_info_errors_are_translated(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    fake.token = "other"
    with pytest.raises(PermanentError, match="401"):
        await chat2desk.api_info()


async def test_was_delivered_finds_a_reply_that_was_sent(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    before = time.time()
    sent = reply("Сколько бутылей?", buttons=("1", "2"))
    await chat2desk.send(sent)
    assert await chat2desk.was_delivered(sent, since=before) is True
    assert await chat2desk.was_delivered(reply("another text"), since=before) is False
    # sent long before the send in doubt started: the same text then is not this reply
    assert await chat2desk.was_delivered(sent, since=before + 60) is False
    other_client = reply("Сколько бутылей?", client_id="999", buttons=("1", "2"))
    assert await chat2desk.was_delivered(other_client, since=before) is False


def test_chat2desk_times_are_parsed() -> None:
    from orderbot.channels.chat2desk import _parse_time

    assert _parse_time("2025-04-03T11:50:06 UTC") == 1743681006.0
    assert _parse_time("2025-04-03T11:50:06Z") == 1743681006.0
    assert _parse_time(1743681006) == 1743681006.0
    assert _parse_time("yesterday") is None
    assert _parse_time(None) is None
