"""The console on the distributed profile, end to end: an account made with ``orderbot operators
add`` (PostgreSQL), the console served by a real ``orderbot serve`` process, a worker and a
sender in this process talking to the fake Chat2Desk. Signing in, a webhook's order on the
board's poll, a status button notifying the customer through RabbitMQ, a handoff reply and the
handback, a dead letter deleted, numbers and the CSV. A database of its own: the shared test
database is left at the revision other branches know."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from orderbot.channels.chat2desk import Chat2DeskChannel
from orderbot.desk.texts import flow_text, status_notification
from orderbot.runtime.distributed import DistributedRuntime
from orderbot.storage import sql as db
from tests.distributed.conftest import (
    PG_URL,
    distributed_settings,
    remove_namespace,
    require_services,
)
from tests.fakes.chat2desk import FakeChat2Desk
from tests.support.console import HTML, csrf_of, sign_in, wait_for
from tests.support.desk_bots import FLOW
from tests.support.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

PASSWORD = "olga-password-1"


@pytest.fixture
async def database() -> AsyncIterator[str]:
    require_services()
    name = f"console_{uuid.uuid4().hex[:12]}"
    admin = db.create_engine(PG_URL)
    async with admin.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        async with admin.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def test_console_on_the_distributed_profile(database: str, tmp_path: Path) -> None:
    namespace = "c" + uuid.uuid4().hex[:10]
    port = free_port()
    async with FakeChat2Desk() as chat2desk:
        settings = distributed_settings(
            namespace, database_url=database, chat2desk_api_url=chat2desk.url
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CHAT2DESK_", "WEBHOOK_"))},
            "DATABASE_URL": database,
            "REDIS_URL": settings.redis_url,
            "RABBITMQ_URL": settings.rabbitmq_url,
            "QUEUE_PREFIX": namespace,
            "QUEUE_SHARDS": str(settings.queue_shards),
            "LOG_LEVEL": "WARNING",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "ADMIN_TOKEN": "s3cret-admin",
        }
        made = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "orderbot",
                "operators",
                "add",
                "olga",
                "--role",
                "admin",
                "--password-stdin",
            ],
            input=PASSWORD + "\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr  # migrates the new database, too
        runtime = DistributedRuntime(
            settings,
            roles=("worker", "sender"),
            channels={"chat2desk": Chat2DeskChannel(api_url=chat2desk.url, token="test-token")},
            poll_interval=0.1,
            lease_interval=0.2,
        )
        log = (tmp_path / "serve.log").open("ab")
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orderbot", "serve", env=env, stdout=log, stderr=log
        )
        log.close()
        try:
            await runtime.open()
            runtime.start()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as http:
                for _ in range(300):
                    assert server.returncode is None, (tmp_path / "serve.log").read_text()
                    try:
                        if (await http.get("/ready")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
                await _work_the_console(http, chat2desk)
        finally:
            if server.returncode is None:
                server.terminate()
                await asyncio.wait_for(server.wait(), 20)
            await runtime.aclose()
            await remove_namespace(namespace)


async def _say(
    http: httpx.AsyncClient, chat2desk: FakeChat2Desk, client: str, n: int, said: str
) -> None:
    before = len(chat2desk.texts(client))
    r = await http.post(
        "/webhook/chat2desk",
        json={
            "client_id": client,
            "message_id": f"{client}-{n}",
            "text": said,
            "transport": "whatsapp",
            "channel_id": 3,
        },
    )
    assert r.status_code == 200, r.text
    await wait_for(lambda: len(chat2desk.texts(client)) > before, timeout=20)


async def _work_the_console(http: httpx.AsyncClient, chat2desk: FakeChat2Desk) -> None:
    assert (await http.get("/console")).status_code == 401
    assert (await sign_in(http, "olga", "wrong-password")).status_code == 401
    assert (await sign_in(http, "olga", PASSWORD)).status_code == 303
    csrf = csrf_of((await http.get("/console", headers=HTML)).text)

    for n, said in enumerate(["Hello", "Chui <b>avenue</b> 120", "0555 123 456", "3", "yes"]):
        await _say(http, chat2desk, "501", n, said)
    polled: dict[str, Any] = {}

    async def poll() -> bool:
        polled.update((await http.get("/console/orders/new?after=0")).json())
        return bool(polled["count"])

    for _ in range(100):
        if await poll():
            break
        await asyncio.sleep(0.1)
    assert polled["count"] == 1 and "Chui &lt;b&gt;avenue&lt;/b&gt; 120" in polled["html"]
    order_id = int(polled["newest"])

    page = (await http.get(f"/console/orders/{order_id}", headers=HTML)).text
    assert "0555 123 456" in page and 'name="status" value="confirmed"' in page
    assert (
        await http.post(f"/console/orders/{order_id}/status", data={"status": "confirmed"})
    ).status_code == 403
    r = await http.post(
        f"/console/orders/{order_id}/status", data={"status": "confirmed", "csrf_token": csrf}
    )
    assert r.status_code == 303
    expected = status_notification(FLOW, "confirmed", "en", order_id=order_id)
    await wait_for(lambda: expected in chat2desk.texts("501"), timeout=20)
    page = (await http.get(f"/console/orders/{order_id}", headers=HTML)).text
    assert "by olga" in page

    await _say(http, chat2desk, "777", 0, "Hello")
    await _say(http, chat2desk, "777", 1, "operator")
    connecting = flow_text(FLOW, "handoff_started", "en")
    await wait_for(lambda: connecting in chat2desk.texts("777"), timeout=20)  # handed off
    page = (await http.get("/console/handoffs/chat2desk/777", headers=HTML)).text
    nonce = page.split('name="nonce" value="')[1].split('"')[0]
    r = await http.post(
        "/console/handoffs/chat2desk/777/reply",
        data={"csrf_token": csrf, "nonce": nonce, "text": "Olga here"},
    )
    assert r.status_code == 303
    await wait_for(lambda: "Olga here" in chat2desk.texts("777"), timeout=20)
    before = len(chat2desk.texts("777"))
    r = await http.post("/console/handoffs/chat2desk/777/handback", data={"csrf_token": csrf})
    assert r.status_code == 303
    await wait_for(lambda: len(chat2desk.texts("777")) > before, timeout=20)

    # "Talk to the customer" on the order page: the bot goes quiet for them (the handoffs row
    # and the Redis flag), until the handback.
    r = await http.post(f"/console/orders/{order_id}/handoff", data={"csrf_token": csrf})
    assert r.status_code == 303
    sent = len(chat2desk.texts("501"))
    await http.post(
        "/webhook/chat2desk",
        json={"client_id": "501", "message_id": "501-99", "text": "where is my driver?"},
    )
    for _ in range(200):
        page = (await http.get("/console/handoffs/chat2desk/501", headers=HTML)).text
        if "where is my driver?" in page:
            break
        await asyncio.sleep(0.1)
    assert "where is my driver?" in page and len(chat2desk.texts("501")) == sent
    r = await http.post("/console/handoffs/chat2desk/501/handback", data={"csrf_token": csrf})
    assert r.status_code == 303
    await wait_for(lambda: len(chat2desk.texts("501")) > sent, timeout=20)
    # The first thing the customer got after their question is the bot's comeback: it never
    # answered while they were with a person.
    resumed = {flow_text(FLOW, "handoff_resumed", language) for language in ("ru", "en")}
    assert any(text in chat2desk.texts("501")[sent] for text in resumed)

    chat2desk.fail_client("888", status=400)
    r = await http.post(
        "/webhook/chat2desk", json={"client_id": "888", "message_id": "888-0", "text": "Hello"}
    )
    assert r.status_code == 200
    ids: list[str] = []
    for _ in range(100):
        page = (await http.get("/console/dead-letters", headers=HTML)).text
        ids = [part.split('"')[0] for part in page.split('name="id" value="')[1:]]
        if ids:
            break
        await asyncio.sleep(0.2)
    assert ids
    r = await http.post("/console/dead-letters/delete", data={"csrf_token": csrf, "id": ids[0]})
    assert r.status_code == 303
    page = (await http.get("/console/dead-letters", headers=HTML)).text
    assert 'name="id" value="' not in page

    # The sender logs what it could not deliver in batches: the row may follow the dead letter.
    # The sender (another process for serve) publishes its breakers and alerts to Redis every
    # 10 s; /status shows them.
    for _ in range(300):
        status = (await http.get("/status")).json()
        kinds = {(a["kind"], a["subject"]) for a in status["alerts"]}
        if status["channels"]["chat2desk"]["last_error"] and ("dead_letter", "chat2desk") in kinds:
            break
        await asyncio.sleep(0.1)
    assert status["profile"] == "distributed" and status["oldest_waiting_reply_seconds"] is None
    assert status["channels"]["chat2desk"]["circuit"] == "closed"
    assert "400" in status["channels"]["chat2desk"]["last_error"]
    assert ("dead_letter", "chat2desk") in kinds
    for _ in range(100):  # the console reads the alerts for its banner every 5 s
        page = (await http.get("/console", headers=HTML)).text
        if "A reply could not be sent: chat2desk" in page:
            break
        await asyncio.sleep(0.1)
    assert "A reply could not be sent: chat2desk" in page
    numbers = (
        await http.get("/api/stats", headers={"Authorization": "Bearer s3cret-admin"})
    ).json()
    assert numbers["orders"] == 1 and numbers["completed"] == 1
    exported = await http.get("/console/orders.csv")
    assert (
        exported.content.startswith(b"\xef\xbb\xbf")
        and b"Chui <b>avenue</b> 120" in exported.content
    )
