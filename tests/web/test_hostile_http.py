"""Hostile input at the HTTP edge (issue 18): ids and text are validated and normalised at
ingress, so nothing that cannot be stored, logged or sent back is ever acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from orderbot.channels.chat2desk import Chat2DeskChannel
from orderbot.channels.telegram.client import TelegramChannel
from orderbot.config import Settings
from orderbot.errors import InvalidPayload
from orderbot.logconfig import setup_logging
from orderbot.messages import OutboundMessage
from orderbot.runtime.embedded import EmbeddedRuntime
from orderbot.web.app import create_app
from orderbot.web.server import http_options
from tests.fakes.chat2desk import FakeChat2Desk
from tests.support.servers import serving

chat2desk = Chat2DeskChannel(api_url="http://127.0.0.1:9/v1", token="t")
telegram = TelegramChannel(token="1:x", api_url="http://127.0.0.1:9")


def c2d(**fields: Any) -> Any:
    return chat2desk.parse_webhook({"text": "hi", **fields}, received_at=1.0)


def c2d_problem(**fields: Any) -> dict[str, str]:
    with pytest.raises(InvalidPayload) as info:
        c2d(**fields)
    assert info.value.status == 422
    [detail] = info.value.details
    return detail


def tg_update(chat_id: Any = 42, update_id: Any = 7, text: str = "hi") -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {"chat": {"id": chat_id, "type": "private"}, "text": text},
    }


def test_control_characters_leave_text_but_newline_and_tab_stay() -> None:
    message = c2d(client_id=1, message_id=2, text="a\x00b\x1b[31mc\x7f\x85\td\r\ne\rf")
    assert message.text == "ab[31mc\td\ne\nf"
    update = telegram.parse_webhook(tg_update(text="x\x00y\nz"), received_at=1.0)
    assert update.text == "xy\nz"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a" * 65, "longer than 64 characters"),
        ("a" * 101, "longer than 64 characters"),  # 101-128 characters failed the PostgreSQL write
        ("1" * 65, "longer than 64 characters"),
        ("ab\x00c", "may hold only letters, digits and _ . : @ -"),
        ("ab\ncd", "may hold only letters, digits and _ . : @ -"),
        ("a b", "may hold only letters, digits and _ . : @ -"),
        ("", "must not be empty"),
        ("18446744073709551617", "out of range (a signed 64-bit integer)"),  # 2**64 + 1
        (2**64 + 1, "out of range (a signed 64-bit integer)"),
        (-5, "must not be negative"),
    ],
)
def test_bad_ids_are_a_422_naming_the_field(value: Any, problem: str) -> None:
    assert c2d_problem(client_id=value, message_id=1) == {"field": "client_id", "problem": problem}
    assert c2d_problem(client_id=1, message_id=value) == {"field": "message_id", "problem": problem}


def test_route_ids_are_checked_too() -> None:
    assert c2d_problem(client_id=1, message_id=1, channel_id="9" * 25)["field"] == "channel_id"
    assert c2d_problem(client_id=1, message_id=1, transport="wa\x00")["field"] == "transport"


def test_chat2desk_digit_ids_are_one_client_however_written() -> None:
    # Chat2Desk's ids are integers (its inbox webhook: "client_id": 12568, "message_id": 28780;
    # tests/test_chat2desk.py REAL_INBOX), so "07001", " 7001 " and 7001 are the same client.
    keys = {c2d(client_id=v, message_id="0028780").client_key for v in ("07001", " 7001 ", 7001)}
    assert keys == {"chat2desk:7001"}
    assert c2d(client_id=1, message_id="0028780").dedupe_key == "chat2desk:28780"
    assert c2d(client_id=1, message_id=1, channel_id="001").route == {"channel_id": "1"}
    assert c2d(client_id="m-1.x@y:z_", message_id=1).client_id == "m-1.x@y:z_"


def test_attachment_links_with_control_characters_are_refused() -> None:
    problem = c2d_problem(client_id=1, message_id=1, attachments=[{"link": "http://x/\x00a"}])
    assert problem["field"] == "attachments[0].link"
    message = c2d(
        client_id=1, message_id=1, attachments=[{"link": "http://x/a", "name": "a\x00.stl"}]
    )
    assert message.attachments[0].name == "a.stl"


@pytest.mark.parametrize("bad", [2**63, -(2**63), 2**64 + 1])
def test_telegram_ids_past_64_bits_are_refused(bad: int) -> None:
    for update, field in (
        (tg_update(chat_id=bad), "message.chat.id"),
        (tg_update(update_id=bad), "update_id"),
    ):
        with pytest.raises(InvalidPayload) as info:
            telegram.parse_webhook(update, received_at=1.0)
        assert info.value.details[0]["field"] == field


async def test_a_digit_id_past_64_bits_in_an_old_queued_reply_is_sent_as_a_string() -> None:
    # Ingress refuses such ids now; a reply queued before must still not die with a TypeError.
    async with (
        FakeChat2Desk() as fake,
        Chat2DeskChannel(api_url=fake.url, token="t", timeout=2) as channel,
    ):
        for client_id in ("18446744073709551617", "7001"):
            await channel.send(
                OutboundMessage(key="k", channel="chat2desk", client_id=client_id, text="x")
            )
    assert [body["client_id"] for body in fake.received] == ["18446744073709551617", 7001]


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, EmbeddedRuntime]]:
    runtime = EmbeddedRuntime(settings)
    async with (
        serving(create_app(runtime, run_background=False)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        yield client, runtime


async def test_ingress_answers_422_and_stores_nothing_for_a_poisoned_webhook(
    api: tuple[httpx.AsyncClient, EmbeddedRuntime],
) -> None:
    client, runtime = api
    for body in (
        {"client_id": "a" * 110, "message_id": 1, "text": "hi"},
        {"client_id": "1\x002", "message_id": 1, "text": "hi"},
        {"client_id": 1, "message_id": "18446744073709551617", "text": "hi"},
        {"client_id": "x\nINFO forged", "message_id": 1, "text": "hi"},
    ):
        r = await client.post(
            "/webhook/chat2desk",
            content=orjson.dumps(body),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422, body
        assert r.json()["error"] == "invalid_payload"
        assert r.json()["message"]
    rows = await runtime.db.run(
        lambda c: c.execute("SELECT count(*) FROM inbound_queue").fetchone()
    )
    assert rows[0] == 0
    r = await client.post(
        "/webhook/chat2desk", json={"client_id": "07001", "message_id": 1, "text": "a\x00b"}
    )
    assert r.status_code == 200
    raw = await runtime.db.run(
        lambda c: c.execute("SELECT payload FROM inbound_queue").fetchone()[0]
    )
    stored = orjson.loads(raw)
    assert (stored["client_id"], stored["text"]) == ("7001", "ab")


ADMIN = {"Authorization": "Bearer s3cret-admin"}
HUGE = "9223372036854775808"  # 2**63: past SQLite's and PostgreSQL's BIGINT


@pytest.fixture
async def admin_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    runtime = EmbeddedRuntime(settings.model_copy(update={"admin_token": "s3cret-admin"}))
    async with (
        serving(create_app(runtime, run_background=False)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        yield client


async def test_admin_numbers_past_64_bits_are_a_422(admin_api: httpx.AsyncClient) -> None:
    for r in (
        await admin_api.get(f"/api/orders?offset={HUGE}", headers=ADMIN),
        await admin_api.get(f"/api/orders/{HUGE}", headers=ADMIN),
        await admin_api.patch(f"/api/orders/{HUGE}", json={"status": "confirmed"}, headers=ADMIN),
    ):
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "invalid_request" and HUGE[:5] not in body["error"]
        assert "less than or equal to 9223372036854775807" in body["message"]
    assert (await admin_api.get("/api/orders?offset=0", headers=ADMIN)).status_code == 200


async def test_admin_422_is_exactly_the_documented_error_shape(
    admin_api: httpx.AsyncClient,
) -> None:
    """docs/http.md: errors are ``{"error", "message"}``; FastAPI's ``detail`` is not added."""
    for r in (
        await admin_api.get("/api/orders?limit=0", headers=ADMIN),
        await admin_api.get("/api/orders/twelve", headers=ADMIN),
        await admin_api.patch("/api/orders/1", json={"status": "lost"}, headers=ADMIN),
        await admin_api.patch("/api/orders/1", json={"note": "x"}, headers=ADMIN),
        await admin_api.patch(
            "/api/orders/1",
            content=b"{not json",
            headers={**ADMIN, "content-type": "application/json"},
        ),
    ):
        assert r.status_code == 422, r.text
        body = r.json()
        assert set(body) == {"error", "message"}, body
        assert body["error"] == "invalid_request" and body["message"]
    missing = await admin_api.patch("/api/orders/1", json={"note": "x"}, headers=ADMIN)
    assert "body.status: Field required" in missing.json()["message"]
    # The OpenAPI document promises the same shape, not FastAPI's HTTPValidationError.
    schema = (await admin_api.get("/openapi.json")).json()
    answer = schema["paths"]["/api/orders/{order_id}"]["patch"]["responses"]["422"]
    example = answer["content"]["application/json"]["example"]
    assert set(example) == {"error", "message"}
    assert "HTTPValidationError" not in str(schema["paths"]["/api/orders/{order_id}"])


async def test_admin_authenticates_before_it_validates(admin_api: httpx.AsyncClient) -> None:
    json_type = {"content-type": "application/json"}
    for headers in (json_type, {**json_type, "Authorization": "Bearer wrong"}):
        for r in (
            await admin_api.patch("/api/orders/1", content=b"{not json", headers=headers),
            await admin_api.patch("/api/orders/x", json={"status": "lost"}, headers=headers),
            await admin_api.get(f"/api/orders?offset={HUGE}&limit=0", headers=headers),
        ):
            assert r.status_code == 401, r.text
            assert r.json()["error"] == "unauthorized"
    r = await admin_api.patch("/api/orders/1", content=b"{not json", headers={**json_type, **ADMIN})
    assert r.status_code == 422


def sign(body: bytes, timestamp: str) -> dict[str, str]:
    key = hashlib.md5(b"test-token").hexdigest().encode()
    signature = hmac.new(key, body + timestamp.encode(), hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "x-timestamp": timestamp, "x-signature": signature}


async def test_signed_webhooks_with_an_old_or_future_timestamp_are_refused(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={"webhook_signature_header": "X-Signature", "webhook_timestamp_tolerance": 300}
    )
    runtime = EmbeddedRuntime(settings)
    body = orjson.dumps({"client_id": 1, "message_id": 1, "text": "hi"})
    now = int(time.time())
    async with (
        serving(create_app(runtime, run_background=False)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        for stale in ("1", str(now - 3600), str(now + 3600), "nan", "inf", "", "x"):
            r = await client.post("/webhook/chat2desk", content=body, headers=sign(body, stale))
            assert r.status_code == 401, stale
            assert r.json()["error"] == "bad_signature"
        r = await client.post("/webhook/chat2desk", content=body, headers=sign(body, str(now - 60)))
        assert r.status_code == 200


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_newline_in_a_logged_value_cannot_forge_a_log_line(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("INFO", fmt)
        forged = "7001\n2026-12-07 10:00:00,000 INFO    orderbot: order 5 paid\x1b[2K\x00"
        logging.getLogger("orderbot.test").warning("client %s sent a message", forged)
        logging.getLogger("orderbot.test").warning("line\u2028separator")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert "\x1b" not in lines[0] and "\x00" not in lines[0]
    message = orjson.loads(lines[0])["msg"] if fmt == "json" else lines[0]
    assert (
        "client 7001\\n2026-12-07 10:00:00,000 INFO    orderbot: order 5 paid\\x1b[2K\\x00"
        in message
    )


@contextlib.asynccontextmanager
async def guarded_server(settings: Settings, **limits: Any) -> AsyncIterator[tuple[str, int]]:
    """``orderbot run``'s app and HTTP options (web.server.http_options) with tiny limits."""
    settings = settings.model_copy(update={"admin_token": "s3cret-admin", **limits})
    runtime = EmbeddedRuntime(settings)
    async with serving(create_app(runtime, run_background=False), **http_options(settings)) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (the test's own timeout
    fails the test if it never does)."""
    chunks = []
    while chunk := await reader.read(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (
            b"POST /webhook/chat2desk HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n",
            b"408",
        ),
        (
            b"PATCH /api/orders/1 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer s3cret-admin\r\n",
            b"408",
        ),
    ],
)
@pytest.mark.timeout(20)
async def test_a_body_that_never_arrives_gets_408_and_the_connection_closes(
    settings: Settings, request_head: bytes, status: bytes
) -> None:
    async with guarded_server(settings, http_body_timeout=0.3) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request_head + b'content-length: 100\r\n\r\n{"client_id": 1')
        await writer.drain()
        answer = await read_until_closed(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 " + status), answer
    assert b"connection: close" in answer.lower()
    assert b'"request_timeout"' in answer


@pytest.mark.timeout(20)
async def test_headers_that_never_end_are_cut_off(settings: Settings) -> None:
    async with guarded_server(settings, http_header_timeout=0.3) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /webhook/chat2desk HTTP/1.1\r\nhost: x\r\nx-slow: a")
        await writer.drain()
        assert await read_until_closed(reader) == b""
        writer.close()
        # A silent connection is cut off too; a normal request still works.
        reader, writer = await asyncio.open_connection(host, port)
        assert await read_until_closed(reader) == b""
        writer.close()
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            assert (await client.get("/live")).status_code == 200


@pytest.mark.timeout(20)
async def test_huge_headers_get_431(settings: Settings) -> None:
    async with guarded_server(settings, http_max_header_bytes=4096) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /live HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 10_000)
        await writer.drain()
        answer = await read_until_closed(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer
    assert answer.endswith(b'"headers_too_large", "message": "request headers are too large"}')


@pytest.mark.timeout(20)
async def test_connections_past_the_cap_get_503(settings: Settings) -> None:
    async with guarded_server(settings, http_max_connections=2) as (host, port):
        idle = [await asyncio.open_connection(host, port) for _ in range(2)]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        await writer.drain()
        answer = await read_until_closed(reader)
        writer.close()
        for _, w in idle:
            w.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer


async def test_docs_work_offline_and_load_nothing_from_another_host(
    api: tuple[httpx.AsyncClient, EmbeddedRuntime],
) -> None:
    client, _ = api
    page = await client.get("/docs")
    assert page.status_code == 200
    html = page.text
    assert "SwaggerUIBundle" in html
    # Every URL the page loads is on this server: no scheme-qualified or protocol-relative link.
    loads = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html) + re.findall(
        r"""url:\s*['"]([^'"]+)""", html
    )
    assert loads, html
    for url in loads:
        assert url.startswith("/") and not url.startswith("//"), url
        assert (await client.get(url)).status_code == 200, url
    assert not re.search(r"https?://|//cdn", html)
    assert '"validatorUrl": null' in html
    license_text = (await client.get("/static/swagger-ui/LICENSE")).text
    assert "Apache License" in license_text
