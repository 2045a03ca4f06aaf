"""Operations alerts (issue 19): what needs a person reaches the admin chats through the outbox
at most once per kind and channel per ALERT_INTERVAL, with a "resolved" message when it clears,
and shows in GET /status."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

import httpx
import pytest

from orderbot.alerting import OperationsAlerts
from orderbot.channels.chat2desk import Chat2DeskChannel, WebhookWatch
from orderbot.channels.telegram.client import TelegramChannel
from orderbot.config import Settings
from orderbot.desk.sqlite import insert_outbox
from orderbot.messages import OutboundMessage
from orderbot.retry import CircuitBreaker, RetryPolicy
from orderbot.runtime.embedded import EmbeddedRuntime
from orderbot.web.app import create_app
from tests.fakes.chat2desk import FakeChat2Desk
from tests.fakes.memory_outbox import MemoryOutbox
from tests.fakes.telegram import TOKEN, FakeTelegram
from tests.support.console import HTML, running_shop, signed_in, wait_for
from tests.support.servers import serving
from tests.test_sender import eventually, make_sender, running

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self, now: float = 9000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.queued: list[OutboundMessage] = []

    async def __call__(self, message: OutboundMessage) -> None:
        self.queued.append(message)

    @property
    def keys(self) -> list[str]:
        return [m.key for m in self.queued]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_condition_is_told_once_per_interval_and_resolved_once() -> None:
    clock, put = Clock(9000.0), Recorder()  # interval 900: bucket 10
    alerts = OperationsAlerts(put, chats=("-100",), interval=900, clock=clock)
    alerts.alert("circuit_open", "chat2desk", "ServerError: 503")
    alerts.alert("circuit_open", "chat2desk", "ServerError: 503")  # still the same episode
    await settle()
    assert put.keys == ["alert:circuit_open:chat2desk:10:-100"]
    assert put.queued[0].channel == "telegram" and put.queued[0].client_id == "-100"
    assert "circuit breaker opened" in put.queued[0].text
    assert [a["kind"] for a in alerts.active()] == ["circuit_open"]

    clock.now += 60
    alerts.resolve("circuit_open", "chat2desk")
    alerts.resolve("circuit_open", "chat2desk")
    await settle()
    assert put.keys[1:] == ["alert:circuit_open:chat2desk:10:resolved:-100"]
    assert "answers again" in put.queued[1].text
    assert alerts.active() == []

    # Open again within the same interval: held back (one per interval), not lost...
    clock.now += 60
    alerts.alert("circuit_open", "chat2desk", "ServerError: 503")
    alerts.tick()
    await settle()
    assert len(put.keys) == 2 and alerts.active()
    # ...told in the next interval if it still holds.
    clock.now = 9900.0
    alerts.tick()
    await settle()
    assert put.keys[2:] == ["alert:circuit_open:chat2desk:11:-100"]


async def test_a_condition_that_clears_before_it_was_told_sends_nothing() -> None:
    clock, put = Clock(), Recorder()
    alerts = OperationsAlerts(put, chats=("-100",), interval=900, clock=clock)
    alerts.alert("quota", "chat2desk")
    alerts.resolve("quota", "chat2desk")
    alerts.alert("quota", "chat2desk")  # held back in this interval
    alerts.resolve("quota", "chat2desk")  # and gone before it was told
    clock.now += 900
    alerts.tick()
    await settle()
    assert put.keys == ["alert:quota:chat2desk:10:-100", "alert:quota:chat2desk:10:resolved:-100"]


async def test_events_collapse_per_interval_and_kinds_and_channels_are_apart() -> None:
    clock, put = Clock(), Recorder()
    alerts = OperationsAlerts(put, chats=("-100", "-200"), interval=900, clock=clock)
    for _ in range(3):
        alerts.alert("dead_letter", "chat2desk", "PermanentError: 400")
    alerts.alert("dead_letter", "telegram", "PermanentError: 403")
    alerts.alert("quota", "chat2desk")
    await settle()
    assert put.keys == [
        "alert:dead_letter:chat2desk:10:-100",
        "alert:dead_letter:chat2desk:10:-200",
        "alert:dead_letter:telegram:10:-100",
        "alert:dead_letter:telegram:10:-200",
        "alert:quota:chat2desk:10:-100",
        "alert:quota:chat2desk:10:-200",
    ]
    clock.now += 900
    alerts.alert("dead_letter", "chat2desk", "PermanentError: 400")
    await settle()
    assert put.keys[6:] == [
        "alert:dead_letter:chat2desk:11:-100",
        "alert:dead_letter:chat2desk:11:-200",
    ]
    # Events show in the interval they happened in; the quota holds until resolved.
    assert {(a["kind"], a["subject"]) for a in alerts.active()} == {
        ("dead_letter", "chat2desk"),
        ("quota", "chat2desk"),
    }
    with pytest.raises(ValueError, match="unknown alert kind"):
        alerts.alert("weather", "chat2desk")


async def test_two_processes_seeing_the_same_condition_queue_it_once() -> None:
    """Senders in two processes: the same key in the same interval, so the outbox keeps one."""
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, key TEXT UNIQUE, channel TEXT,"
        " client_id TEXT, payload TEXT, status TEXT, attempts INT, not_before REAL,"
        " last_error TEXT, created_at REAL)"
    )

    async def put(message: OutboundMessage) -> None:
        insert_outbox(conn, message, message.created_at)

    first = OperationsAlerts(put, chats=("-100",), clock=Clock())
    second = OperationsAlerts(put, chats=("-100",), clock=Clock(9010.0))
    first.alert("webhook", "chat2desk", "disabled: Connection refused")
    second.alert("webhook", "chat2desk", "disabled: Connection refused")
    await first.aclose()
    await second.aclose()
    rows = conn.execute("SELECT key FROM outbox").fetchall()
    assert [r[0] for r in rows] == ["alert:webhook:chat2desk:10:-100"]


async def test_a_failing_outbox_never_stops_the_caller() -> None:
    async def broken(message: OutboundMessage) -> None:
        raise OSError("database is locked")

    alerts = OperationsAlerts(broken, chats=("-100",), clock=Clock())
    alerts.alert("dead_letter", "chat2desk", "x")  # returns at once; queued in the background
    await alerts.aclose()
    assert alerts.active()[0]["kind"] == "dead_letter"  # still shown


# -- the sender raises them


@pytest.fixture
async def fake() -> AsyncIterator[FakeChat2Desk]:
    async with FakeChat2Desk() as server:
        yield server


@pytest.fixture
async def chat2desk(fake: FakeChat2Desk) -> AsyncIterator[Chat2DeskChannel]:
    async with Chat2DeskChannel(api_url=fake.url, token="test-token") as adapter:
        yield adapter


async def test_the_sender_tells_a_circuit_that_opened_and_closed_again(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    outbox, put = MemoryOutbox(), Recorder()
    fake.fail_next(2, status=503)
    outbox.add("chat2desk", "1", "a")
    sender = make_sender(
        outbox,
        {"chat2desk": chat2desk},
        policy=RetryPolicy(quick_delays=(0.01,), slow_delay=0.01, max_attempts=10),
        breaker_factory=lambda name: CircuitBreaker(name, failure_threshold=2, cooldown=0.1),
        alerts=OperationsAlerts(put, chats=("-100",), clock=Clock()),
    )
    async with running(sender):
        await eventually(lambda: len(outbox.sent) == 1)
        await eventually(lambda: len(put.keys) == 2)
    assert put.keys == [
        "alert:circuit_open:chat2desk:10:-100",
        "alert:circuit_open:chat2desk:10:resolved:-100",
    ]
    assert "503" in put.queued[0].text
    assert sender.state() == {"circuits": {"chat2desk": "closed"}, "alerts": []}


async def test_the_sender_tells_a_dead_letter(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    outbox, put = MemoryOutbox(), Recorder()
    fake.fail_client("7", status=400)
    outbox.add("chat2desk", "7", "hello")
    sender = make_sender(
        outbox,
        {"chat2desk": chat2desk},
        alerts=OperationsAlerts(put, chats=("-100",), clock=Clock()),
    )
    async with running(sender):
        await eventually(lambda: len(outbox.dead) == 1 and len(put.keys) == 1)
    assert put.keys == ["alert:dead_letter:chat2desk:10:-100"]
    assert "400" in put.queued[0].text and "hello" not in put.queued[0].text
    (shown,) = sender.state()["alerts"]
    assert shown["kind"] == "dead_letter" and shown["subject"] == "chat2desk"


async def test_the_sender_watches_the_chat2desk_webhook(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel
) -> None:
    put = Recorder()
    published: list[dict[str, object]] = []

    async def report(state: dict[str, object]) -> None:
        published.append(state)

    sender = make_sender(
        MemoryOutbox(),
        {"chat2desk": chat2desk},
        alerts=OperationsAlerts(put, chats=("-100",), clock=Clock()),
        webhook_status=WebhookWatch(chat2desk, interval=0.0).status,
        report=report,
    )
    await chat2desk.set_webhook("https://shop.example/webhook/chat2desk")
    await sender.monitor_once()
    fake.disable_webhook("Connection refused")
    await sender.monitor_once()
    await sender.monitor_once()
    await chat2desk.set_webhook("https://shop.example/webhook/chat2desk")  # back on
    await sender.monitor_once()
    await sender.alerts.aclose()
    assert put.keys == [
        "alert:webhook:chat2desk:10:-100",
        "alert:webhook:chat2desk:10:resolved:-100",
    ]
    assert "disabled" in put.queued[0].text and "Connection refused" in put.queued[0].text
    assert [len(s["alerts"]) for s in published] == [0, 1, 1, 0]  # type: ignore[arg-type]


# -- the embedded profile end to end: the alert reaches the admin chat; /status shows it


async def test_embedded_a_dead_letter_reaches_the_admin_chat_and_status(
    settings: Settings,
) -> None:
    admin_chat = 4242
    async with FakeChat2Desk() as c2d, FakeTelegram() as telegram:
        configured = settings.model_copy(
            update={
                "telegram_bot_token": TOKEN,
                "admin_chat_ids": str(admin_chat),
                "admin_token": "s3cret-admin",
            }
        )
        channels = {
            "chat2desk": Chat2DeskChannel(api_url=c2d.url, token="test-token"),
            "telegram": TelegramChannel(token=TOKEN, api_url=telegram.url, chat_interval=0.0),
        }
        runtime = EmbeddedRuntime(configured, channels=channels)
        c2d.fail_client("888", status=400)
        async with (
            serving(create_app(runtime)) as url,
            httpx.AsyncClient(base_url=url, timeout=15) as http,
        ):
            r = await http.post(
                "/webhook/chat2desk",
                json={"client_id": "888", "message_id": "888-0", "text": "Hello"},
            )
            assert r.status_code == 200
            await wait_for(lambda: any("dead-lettered" in t for t in telegram.texts(admin_chat)))
            status = (
                await http.get("/status", headers={"Authorization": "Bearer s3cret-admin"})
            ).json()
        dead = [t for t in telegram.texts(admin_chat) if "dead-lettered" in t]
        assert len(dead) == 1 and "400" in dead[0]
        kinds = {(a["kind"], a["subject"]) for a in status["alerts"]}
        assert ("dead_letter", "chat2desk") in kinds
        # The fake has no hook registered: the cached check says so, and it is an alert too.
        assert status["chat2desk_webhook"]["state"] == "missing"
        assert ("webhook", "chat2desk") in kinds
        assert status["dead_letters"]["last_hour"] == 1
        assert status["channels"]["chat2desk"]["circuit"] == "closed"


async def test_the_console_shows_what_needs_a_person_on_every_page(settings: Settings) -> None:
    async with running_shop(settings) as shop:
        shop.chat2desk.fail_client("888", status=400)
        await shop.customer_says("888", 0, "<b>Hello</b>")
        await wait_for(lambda: shop.runtime.sender.counts.dead == 1)
        async with shop.client() as http:
            await signed_in(http)
            for path in ("/console", "/console/stats", "/console/dead-letters"):
                page = (await http.get(path, headers=HTML)).text
                assert 'class="alerts" role="alert"' in page, path
                assert "A reply could not be sent: chat2desk" in page
                # no hook registered at the fake: the sender's check says so
                assert "The Chat2Desk webhook does not work: chat2desk" in page
        async with shop.client() as anonymous:
            login = await anonymous.get("/console/login", headers=HTML)
        assert login.status_code == 200 and 'role="alert"' not in login.text  # nobody signed in
