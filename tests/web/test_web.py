"""The HTTP API over a real server: webhook validation, secret path, duplicates, echoes, health."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from orderbot.config import Settings
from orderbot.runtime.embedded import EmbeddedRuntime
from orderbot.web.app import create_app
from tests.channels.test_chat2desk import REAL_INBOX
from tests.support.servers import serving

REAL_PAYLOAD = REAL_INBOX  # Chat2Desk's real inbox webhook, shared with the parser tests


async def _client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, EmbeddedRuntime]]:
    runtime = EmbeddedRuntime(settings)
    async with (
        serving(create_app(runtime, run_background=False)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        yield client, runtime


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, EmbeddedRuntime]]:
    async for pair in _client(settings):
        yield pair


async def stored(runtime: EmbeddedRuntime) -> list[tuple[str, str]]:
    rows = await runtime.db.run(
        lambda c: c.execute(
            "SELECT dedupe_key, client_key FROM inbound_queue ORDER BY id"
        ).fetchall()
    )
    return [tuple(r) for r in rows]


async def test_real_payload_is_stored_before_200(
    api: tuple[httpx.AsyncClient, EmbeddedRuntime],
) -> None:
    client, runtime = api
    r = await client.post("/webhook/chat2desk", json=REAL_PAYLOAD)
    assert r.status_code == 200
    assert r.json() == {"success": True}
    assert await stored(runtime) == [("chat2desk:28780", "chat2desk:12568")]
    raw = await runtime.db.run(
        lambda c: c.execute("SELECT payload FROM inbound_queue").fetchone()[0]
    )
    message = orjson.loads(raw)
    assert message["route"] == {"transport": "widget", "channel_id": "1"}
    assert message["text"] == "test7"


async def test_minimal_payload_with_string_ids(
    api: tuple[httpx.AsyncClient, EmbeddedRuntime],
) -> None:
    client, runtime = api
    r = await client.post(
        "/webhook/chat2desk", json={"client_id": "77", "message_id": "m-1", "text": "hi"}
    )
    assert r.status_code == 200
    assert await stored(runtime) == [("chat2desk:m-1", "chat2desk:77")]


async def test_duplicate_is_200_and_stored_once(
    api: tuple[httpx.AsyncClient, EmbeddedRuntime],
) -> None:
    client, runtime = api
    for _ in range(3):
        r = await client.post("/webhook/chat2desk", json=REAL_PAYLOAD)
        assert r.status_code == 200
    assert r.json() == {"success": True, "duplicate": True}
    assert len(await stored(runtime)) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"type": "to_client"},
        {"type": "system"},
        {"hook_type": "outbox"},
        {"hook_type": "dialog_closed"},
    ],
)
async def test_echo_and_other_hooks_are_acknowledged_and_ignored(
    api: tuple[httpx.AsyncClient, EmbeddedRuntime], change: dict[str, str]
) -> None:
    client, runtime = api
    r = await client.post("/webhook/chat2desk", json={**REAL_PAYLOAD, **change})
    assert r.status_code == 200
    assert r.json()["ignored"] is True
    assert await stored(runtime) == []


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b"", "application/json", 400, "malformed_json"),
        (b"[1, 2]", "application/json", 422, "invalid_payload"),
        (b'{"message_id": 1, "text": "x"}', "application/json", 422, "invalid_payload"),
        (b'{"client_id": 1, "text": "x"}', "application/json", 422, "invalid_payload"),
        (
            b'{"client_id": null, "message_id": 1, "text": "x"}',
            "application/json",
            422,
            "invalid_payload",
        ),
        (
            b'{"client_id": true, "message_id": 1, "text": "x"}',
            "application/json",
            422,
            "invalid_payload",
        ),
        (
            b'{"client_id": {"a": 1}, "message_id": 1, "text": "x"}',
            "application/json",
            422,
            "invalid_payload",
        ),
        (
            b'{"client_id": 1, "message_id": 1, "text": 5}',
            "application/json",
            422,
            "invalid_payload",
        ),
        (
            b'{"client_id": "", "message_id": 1, "text": "x"}',
            "application/json",
            422,
            "invalid_payload",
        ),
        (
            b'{"client_id": 1, "message_id": 1, "text": "x"}',
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (b'{"client_id": 1, "message_id": 1, "text": "x"}', "", 415, "unsupported_media_type"),
        (b"client_id=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    api: tuple[httpx.AsyncClient, EmbeddedRuntime],
    body: bytes,
    content_type: str,
    status: int,
    error: str,
) -> None:
    client, runtime = api
    headers = {"content-type": content_type} if content_type else {}
    r = await client.post("/webhook/chat2desk", content=body, headers=headers)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert r.json()["success"] is False
    assert r.json()["error"] == error
    assert await stored(runtime) == []


async def test_body_over_64_kib_is_413(api: tuple[httpx.AsyncClient, EmbeddedRuntime]) -> None:
    client, runtime = api
    big = orjson.dumps({"client_id": 1, "message_id": 1, "text": "x" * 70_000})
    r = await client.post(
        "/webhook/chat2desk", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(70):
            yield b" " * 1024

    r = await client.post(
        "/webhook/chat2desk", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert await stored(runtime) == []


async def test_unknown_channel_and_wrong_method(
    api: tuple[httpx.AsyncClient, EmbeddedRuntime],
) -> None:
    client, _ = api
    assert (await client.post("/webhook/viber", json=REAL_PAYLOAD)).status_code == 404
    assert (await client.post("/webhook/chat2desk/extra", json=REAL_PAYLOAD)).status_code == 404
    r = await client.get("/webhook/chat2desk")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"


async def test_secret_path(settings: Settings) -> None:
    settings = settings.model_copy(update={"webhook_secret": "s3cr3t-path"})
    async for client, runtime in _client(settings):
        assert (await client.post("/webhook/chat2desk", json=REAL_PAYLOAD)).status_code == 404
        assert (await client.post("/webhook/chat2desk/wrong", json=REAL_PAYLOAD)).status_code == 404
        assert (
            await client.post("/webhook/chat2desk/s3cr3t-pat", json=REAL_PAYLOAD)
        ).status_code == 404
        assert await stored(runtime) == []
        r = await client.post("/webhook/chat2desk/s3cr3t-path", json=REAL_PAYLOAD)
        assert r.status_code == 200
        assert len(await stored(runtime)) == 1


async def test_signature_check(settings: Settings) -> None:
    settings = settings.model_copy(update={"webhook_signature_header": "X-Signature"})
    body = orjson.dumps(REAL_PAYLOAD)
    key = hashlib.md5(b"test-token").hexdigest().encode()
    now = str(int(time.time())).encode()
    good = hmac.new(key, body + now, hashlib.sha256).hexdigest()
    async for client, runtime in _client(settings):
        headers = {"content-type": "application/json", "x-timestamp": now.decode()}
        r = await client.post(
            "/webhook/chat2desk", content=body, headers={**headers, "x-signature": "00" * 32}
        )
        assert r.status_code == 401
        r = await client.post("/webhook/chat2desk", content=body, headers=headers)
        assert r.status_code == 401
        r = await client.post(
            "/webhook/chat2desk", content=body, headers={**headers, "x-signature": good}
        )
        assert r.status_code == 200
        assert len(await stored(runtime)) == 1


async def test_storage_failure_is_503_with_retry_after(
    api: tuple[httpx.AsyncClient, EmbeddedRuntime],
) -> None:
    client, runtime = api
    await runtime.db.aclose()
    r = await client.post("/webhook/chat2desk", json=REAL_PAYLOAD)
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    health = await client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"


async def test_service_routes(api: tuple[httpx.AsyncClient, EmbeddedRuntime]) -> None:
    client, _ = api
    await client.post("/webhook/chat2desk", json=REAL_PAYLOAD)
    root = (await client.get("/")).json()
    assert root["name"] == "orderbot" and root["profile"] == "embedded"
    assert (await client.get("/live")).status_code == 200
    assert (await client.get("/ready")).status_code == 200
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json()["checks"]["queues"] == {"inbound": 1, "outbox": 0, "dead_letter": 0}
    metrics = (await client.get("/metrics")).text
    assert 'orderbot_webhooks_total{channel="chat2desk",result="stored"}' in metrics
    assert 'orderbot_queue_depth{queue="inbound"} 1.0' in metrics


async def test_openapi_describes_every_route(
    api: tuple[httpx.AsyncClient, EmbeddedRuntime],
) -> None:
    client, _ = api
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/webhook/{channel}",
        "/webhook/{channel}/{secret}",
        "/",
        "/health",
        "/live",
        "/ready",
        "/metrics",
    ):
        assert path in paths, path
    webhook = paths["/webhook/{channel}"]["post"]
    assert "application/json" in webhook["requestBody"]["content"]
    assert {"200", "400", "413", "415", "422"} <= set(webhook["responses"])
