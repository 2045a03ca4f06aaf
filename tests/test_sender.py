"""The sender against the fake Chat2Desk server and an in-memory outbox."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from orderbot.alerting import OperationsAlerts
from orderbot.channels.base import Channel
from orderbot.channels.chat2desk import Chat2DeskChannel
from orderbot.errors import OutsideWindow, QuotaExceeded
from orderbot.messages import OutboundMessage
from orderbot.queues.sqlite import SqliteInboundQueue, SqliteOutbox
from orderbot.ratelimit import LocalRateLimiter
from orderbot.retry import CircuitBreaker, RetryPolicy
from orderbot.sender import Sender
from orderbot.state.base import StepCommit
from orderbot.state.sqlite import SqliteStepStore
from orderbot.storage.sqlite import SqliteDatabase
from tests.fakes.chat2desk import FakeChat2Desk
from tests.fakes.memory_outbox import MemoryOutbox
from tests.test_sqlite_queues import inbound

FAST = RetryPolicy(quick_delays=(0.01, 0.02, 0.04), slow_delay=0.05, max_attempts=5)


@pytest.fixture
async def fake() -> AsyncIterator[FakeChat2Desk]:
    async with FakeChat2Desk() as server:
        yield server


@pytest.fixture
async def chat2desk(fake: FakeChat2Desk) -> AsyncIterator[Chat2DeskChannel]:
    async with Chat2DeskChannel(api_url=fake.url, token="tok", timeout=0.3) as adapter:
        yield adapter


@pytest.fixture
def outbox() -> MemoryOutbox:
    return MemoryOutbox()


def make_sender(
    outbox: MemoryOutbox,
    channels: dict[str, Channel],
    *,
    policy: RetryPolicy = FAST,
    breaker_factory: Callable[[str], CircuitBreaker] | None = None,
    **kwargs: object,
) -> Sender:
    return Sender(
        outbox,
        channels,
        rate_limiter=LocalRateLimiter(600_000),
        policy=policy,
        breaker_factory=breaker_factory or (lambda name: CircuitBreaker(name, cooldown=0.05)),
        poll_interval=0.05,
        **{"drain_timeout": 1.0, **kwargs},  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running(sender: Sender) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_all_replies_are_sent(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    for i in range(50):
        outbox.add("chat2desk", str(i % 7), f"reply {i}")
    sender = make_sender(outbox, {"chat2desk": chat2desk})
    async with running(sender):
        await eventually(lambda: len(outbox.sent) == 50)
    assert len(fake.received) == 50
    assert outbox.pending == {}
    assert {r["authorization"] for r in fake.received} == {"tok"}


async def test_replies_added_while_running_are_picked_up(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    sender = make_sender(outbox, {"chat2desk": chat2desk})
    async with running(sender):
        await asyncio.sleep(0.05)
        outbox.add("chat2desk", "1", "late")
        started = time.monotonic()
        await eventually(lambda: len(fake.received) == 1)
        # Woken by the outbox, not by the poll interval of 50 ms... give generous slack.
        assert time.monotonic() - started < 1.0


async def test_per_client_order_with_interleaved_clients(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    # Some failures along the way make retries reorder things if the lanes are wrong.
    fake.set_failure_rate(0.3, seed=3)
    for i in range(20):
        for client in ("1", "2", "3"):
            outbox.add("chat2desk", client, f"{client}-{i}")
    sender = make_sender(outbox, {"chat2desk": chat2desk}, policy=RetryPolicy((0.0,), 0.0, 50))
    async with running(sender):
        await eventually(lambda: len(outbox.sent) == 60)
    for client in ("1", "2", "3"):
        assert fake.texts(client) == [f"{client}-{i}" for i in range(20)]
    assert outbox.reschedules  # the failures did happen


async def test_a_failing_client_does_not_delay_others(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    fake.fail_client("100", status=500)
    outbox.add("chat2desk", "100", "A-1")
    outbox.add("chat2desk", "100", "A-2")
    for i in range(5):
        outbox.add("chat2desk", "200", f"B-{i}")
    slow = RetryPolicy(quick_delays=(0.2,), slow_delay=0.2, max_attempts=10)
    # A breaker that never opens: this test is about lanes, not about the breaker.
    sender = make_sender(
        outbox,
        {"chat2desk": chat2desk},
        policy=slow,
        breaker_factory=lambda name: CircuitBreaker(name, failure_threshold=1000),
    )
    async with running(sender):
        await eventually(lambda: len(fake.texts("200")) == 5, timeout=1.0)
        # B is done while A is still being retried, and A's second reply waits behind its first.
        assert fake.texts("200") == [f"B-{i}" for i in range(5)]
        assert len(outbox.dead) == 0
        a_handles = [h for h, item in outbox.pending.items() if item.message.client_id == "100"]
        assert len(a_handles) == 2
        assert outbox.pending[a_handles[0]].attempts >= 1
        assert outbox.pending[a_handles[1]].attempts == 0
    assert fake.texts("100") == []


async def test_429_waits_as_long_as_asked(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    fake.rate_limit_next(1, retry_after=0.4)
    outbox.add("chat2desk", "1", "hello")
    sender = make_sender(outbox, {"chat2desk": chat2desk})
    started = time.monotonic()
    async with running(sender):
        await eventually(lambda: len(fake.received) == 1)
    assert time.monotonic() - started >= 0.4
    _, attempts, _, error = outbox.reschedules[0]
    assert attempts == 1
    assert "RateLimited" in error


async def test_attempts_exhausted_goes_to_dead_letter_with_last_error(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    fake.fail_client("1", status=503)
    outbox.add("chat2desk", "1", "never")
    outbox.add("chat2desk", "1", "after")
    fake.fail_next(0)
    sender = make_sender(
        outbox,
        {"chat2desk": chat2desk},
        breaker_factory=lambda name: CircuitBreaker(name, failure_threshold=1000),
    )
    async with running(sender):
        await eventually(lambda: len(outbox.dead) == 2)
    dead = outbox.dead[0]
    assert dead.message.text == "never"
    assert dead.attempts == FAST.max_attempts
    assert "ServerError" in dead.last_error
    assert "503" in dead.last_error
    assert fake.attempts == 2 * FAST.max_attempts


async def test_permanent_error_is_dead_lettered_at_once_and_the_lane_continues(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    fake.fail_next(1, status=400)
    outbox.add("chat2desk", "1", "bad")
    outbox.add("chat2desk", "1", "good")
    sender = make_sender(outbox, {"chat2desk": chat2desk})
    async with running(sender):
        await eventually(lambda: len(outbox.sent) == 1)
    assert [d.message.text for d in outbox.dead] == ["bad"]
    assert outbox.dead[0].attempts == 1
    assert "PermanentError" in outbox.dead[0].last_error
    assert fake.texts() == ["good"]
    assert outbox.reschedules == []


async def test_unknown_channel_is_dead_lettered(
    chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    outbox.add("telegram", "1", "hi")
    outbox.add("chat2desk", "1", "hi")
    sender = make_sender(outbox, {"chat2desk": chat2desk})
    async with running(sender):
        await eventually(lambda: len(outbox.dead) == 1 and len(outbox.sent) == 1)
    assert "no channel adapter" in outbox.dead[0].last_error


async def test_breaker_opens_and_stops_calling(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    fake.set_failure_rate(1.0, status=500)
    for i in range(20):
        outbox.add("chat2desk", str(i), f"r{i}")
    breaker = CircuitBreaker("chat2desk-test", failure_threshold=3, cooldown=10)
    sender = make_sender(
        outbox, {"chat2desk": chat2desk}, breaker_factory=lambda name: breaker, concurrency=2
    )
    async with running(sender):
        await eventually(lambda: breaker.state == "open")
        await asyncio.sleep(0.3)
    # The threshold, plus at most the calls already in flight when it opened; then silence
    # (the cool-down of 10 s allows no trial during the test).
    assert 3 <= fake.attempts <= 3 + 2
    assert outbox.dead == []
    deferred = [r for r in outbox.reschedules if "CircuitOpen" in r[3] or r[1] == 0]
    assert deferred
    # Deferral by the breaker spends no attempt.
    assert all(item.attempts <= 1 for item in outbox.pending.values())


async def test_breaker_recovers_after_a_trial(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    fake.fail_next(2, status=500)
    for i in range(5):
        outbox.add("chat2desk", str(i), f"r{i}")
    breaker = CircuitBreaker("chat2desk-recover", failure_threshold=2, cooldown=0.1)
    sender = make_sender(
        outbox, {"chat2desk": chat2desk}, breaker_factory=lambda name: breaker, concurrency=1
    )
    async with running(sender):
        await eventually(lambda: len(outbox.sent) == 5)
    assert breaker.state == "closed"
    assert len(fake.received) == 5


async def test_stop_leaves_unfinished_items_in_the_outbox(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    fake.hang_next(1, seconds=0.2)
    outbox.add("chat2desk", "1", "slow")
    outbox.add("chat2desk", "1", "next")
    outbox.add("chat2desk", "2", "later", not_before=time.time() + 60)
    sender = make_sender(outbox, {"chat2desk": chat2desk})
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    await eventually(lambda: fake.attempts == 1)
    stop.set()
    started = time.monotonic()
    await asyncio.wait_for(task, 2)
    assert time.monotonic() - started < 1.0
    # The hung send finished (answer after 0.2 s); nothing else was started after stop.
    texts = sorted(item.message.text for item in outbox.pending.values())
    assert "later" in texts
    assert "next" in texts
    assert sender.in_hand == 0


async def test_not_before_is_honoured(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    outbox.put(
        OutboundMessage(key="w", channel="chat2desk", client_id="1", text="wait"),
        not_before=time.time() + 0.3,
    )
    outbox.add("chat2desk", "1", "behind")
    outbox.add("chat2desk", "2", "other")
    sender = make_sender(outbox, {"chat2desk": chat2desk})
    async with running(sender):
        await eventually(lambda: fake.texts("2") == ["other"], timeout=0.25)
        assert fake.texts("1") == []
        await eventually(lambda: len(fake.received) == 3)
    assert fake.texts("1") == ["wait", "behind"]


class ExplodingChannel(Channel):
    name = "boom"

    def parse_webhook(self, payload: object, *, received_at: float) -> None:
        return None

    async def send(self, message: OutboundMessage) -> None:
        raise RuntimeError(f"bug while sending {message.text}")


async def test_an_adapter_bug_is_dead_lettered_and_the_loop_survives(
    chat2desk: Chat2DeskChannel, outbox: MemoryOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    outbox.add("boom", "1", "secret address")
    outbox.add("chat2desk", "1", "fine")
    sender = make_sender(outbox, {"boom": ExplodingChannel(), "chat2desk": chat2desk})
    async with running(sender):
        await eventually(lambda: len(outbox.dead) == 1 and len(outbox.sent) == 1)
    assert "RuntimeError" in outbox.dead[0].last_error
    assert "secret address" not in outbox.dead[0].last_error
    assert "secret address" not in caplog.text


class BrokenCheckChannel(Channel):
    """Sends fine, but its check of an earlier, cut-off send raises (a bug in the adapter)."""

    name = "chat2desk"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def parse_webhook(self, payload: object, *, received_at: float) -> None:
        return None

    async def send(self, message: OutboundMessage) -> None:
        self.sent.append(message.text)

    async def was_delivered(self, message: OutboundMessage, since: float) -> bool | None:
        raise KeyError("bug in the delivery check")


async def test_a_reply_in_doubt_whose_delivery_check_breaks_is_sent_again(
    outbox: MemoryOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The check cannot tell, so the reply is sent (at least once): not lost in a failed lane,
    not dead-lettered for the adapter's fault."""
    handle = outbox.add("chat2desk", "1", "in doubt")
    outbox.pending[handle] = replace(outbox.pending[handle], in_doubt_since=time.time())
    outbox.add("chat2desk", "1", "after it")
    channel = BrokenCheckChannel()
    sender = make_sender(outbox, {"chat2desk": channel})
    async with running(sender):
        await eventually(lambda: len(outbox.sent) == 2)
    assert channel.sent == ["in doubt", "after it"]
    assert outbox.dead == []
    assert "the delivery check failed (KeyError); sending it again" in caplog.text
    assert "lane failed" not in caplog.text


async def test_logs_never_contain_the_text(
    fake: FakeChat2Desk,
    chat2desk: Chat2DeskChannel,
    outbox: MemoryOutbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="orderbot.sender")
    fake.fail_next(2, status=500)
    fake.fail_next(1, status=400)
    outbox.add("chat2desk", "996555123456", "ул. Токтогула 1, +996555123456")
    sender = make_sender(outbox, {"chat2desk": chat2desk})
    async with running(sender):
        await eventually(lambda: len(outbox.dead) == 1)
    assert "failed (attempt 1)" in caplog.text
    assert "Токтогула" not in caplog.text
    assert "555123456" not in caplog.text


def test_concurrency_must_be_positive(outbox: MemoryOutbox) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Sender(outbox, {}, rate_limiter=LocalRateLimiter(60), concurrency=0)


async def test_a_send_cut_off_by_a_crash_is_neither_repeated_nor_lost(
    fake: FakeChat2Desk, database: SqliteDatabase
) -> None:
    # A generous timeout: a timed-out call would be another doubt to resolve, not this test.
    chat2desk = Chat2DeskChannel(api_url=fake.url, token="tok", timeout=10)
    queue, store = SqliteInboundQueue(database), SqliteStepStore(database)
    await queue.put(inbound("77", "m1"))
    (delivery,) = await queue.fetch(1)
    replies = (
        OutboundMessage(key="a", channel="chat2desk", client_id="77", text="delivered before"),
        OutboundMessage(key="b", channel="chat2desk", client_id="77", text="never reached"),
    )
    await store.commit_step(
        StepCommit(delivery=delivery, state=None, state_name="-", replies=replies)
    )
    first, second = await SqliteOutbox(database).claim(10, set())
    before = SqliteOutbox(database)
    # The process that crashed: it started both sends; only the first reached the API.
    await before.begin_send(first.handle)
    await chat2desk.send(first.message)
    await before.begin_send(second.handle)

    restarted = SqliteOutbox(database)
    in_doubt = await restarted.claim(10, set())
    assert [i.in_doubt_since is not None for i in in_doubt] == [True, True]
    sender = make_sender(restarted, {"chat2desk": chat2desk})  # type: ignore[arg-type]
    async with running(sender):
        await eventually(lambda: len(fake.received) == 2, timeout=30)
        await eventually(lambda: sender.counts.sent == 2, timeout=30)
    await chat2desk.aclose()
    assert fake.texts("77") == ["delivered before", "never reached"]
    assert await restarted.claim(10, set()) == []


class HangingChannel(Channel):
    """A send that never returns (a call stuck beyond any timeout)."""

    name = "chat2desk"

    def parse_webhook(self, payload: object, *, received_at: float) -> None:
        return None

    async def send(self, message: OutboundMessage) -> None:
        await self.never_answers()

    async def never_answers(self) -> None:
        await asyncio.Event().wait()


async def test_a_send_still_stuck_at_shutdown_is_left_in_the_outbox_and_says_where_it_waits(
    outbox: MemoryOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    outbox.add("chat2desk", "1", "hello")
    sender = make_sender(outbox, {"chat2desk": HangingChannel()}, drain_timeout=0.2)
    with caplog.at_level("WARNING", logger="orderbot"):
        async with running(sender):
            await eventually(lambda: sender.in_hand == 1)
    assert "1 send(s) still in flight after 0.2s" in caplog.text
    (where,) = [r.getMessage() for r in caplog.records if "a send waits at" in r.getMessage()]
    # The chain of awaits down to the innermost one, customer text nowhere in it.
    assert "_attempt -> " in where and "send -> " in where and "never_answers -> " in where
    assert "locks.py" in where and "hello" not in where  # down to Event.wait
    assert outbox.sent == [] and len(outbox.pending) == 1


async def test_a_reply_in_progress_too_long_is_logged_once_with_where_it_waits(
    outbox: MemoryOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    outbox.add("chat2desk", "1", "hello")
    sender = make_sender(outbox, {"chat2desk": HangingChannel()}, stuck_after=0.2)
    with caplog.at_level("WARNING", logger="orderbot"):
        async with running(sender):
            await eventually(lambda: "has been in progress" in caplog.text)
            await asyncio.sleep(0.3)  # more claim rounds: still one line for this attempt
    stuck = [r.getMessage() for r in caplog.records if "has been in progress" in r.getMessage()]
    assert len(stuck) == 1
    assert "never_answers -> " in stuck[0] and "hello" not in stuck[0]


class _QuotaThenOk(Channel):
    """Answers like Chat2Desk with its quota used up ``times`` times, then sends."""

    name = "chat2desk"

    def __init__(self, times: int) -> None:
        self.times = times
        self.sent: list[str] = []

    def parse_webhook(self, payload: object, *, received_at: float) -> None:
        return None

    async def send(self, message: OutboundMessage) -> None:
        if self.times > 0:
            self.times -= 1
            raise QuotaExceeded(
                "chat2desk POST /messages: 200 Number of API requests exceeded", retry_after=0.02
            )
        self.sent.append(message.text)


async def test_quota_waits_without_spending_attempts_and_tells_the_operators_once(
    outbox: MemoryOutbox,
) -> None:
    channel = _QuotaThenOk(times=12)
    outbox.add("chat2desk", "1", "first")
    outbox.add("chat2desk", "1", "second")
    policy = RetryPolicy(quick_delays=(0.01,), slow_delay=0.01, max_attempts=2)
    queued: list[OutboundMessage] = []

    async def put(message: OutboundMessage) -> None:
        queued.append(message)

    sender = make_sender(
        outbox,
        {"chat2desk": channel},
        policy=policy,
        alerts=OperationsAlerts(put, chats=("500", "501"), clock=lambda: 1800.0),
    )
    async with running(sender):
        await eventually(lambda: len(outbox.sent) == 2)
    assert channel.sent == ["first", "second"]  # in order, none dead-lettered
    assert outbox.dead == []
    assert all(attempts == 0 for _, attempts, _, _ in outbox.reschedules)
    # told once per operator chat through the outbox, then resolved when a send succeeded
    assert [m.key for m in queued] == [
        "alert:quota:chat2desk:2:500",
        "alert:quota:chat2desk:2:501",
        "alert:quota:chat2desk:2:resolved:500",
        "alert:quota:chat2desk:2:resolved:501",
    ]
    assert "quota" in queued[0].text and queued[0].channel == "telegram"


async def test_after_the_probe_succeeds_replies_waiting_for_a_slow_retry_go_at_once(
    fake: FakeChat2Desk, chat2desk: Chat2DeskChannel, outbox: MemoryOutbox
) -> None:
    fake.fail_next(3, status=500)  # a, c fail; the first probe (a again) fails too
    outbox.add("chat2desk", "1", "a")
    outbox.add("chat2desk", "1", "b")
    outbox.add("chat2desk", "2", "c")
    slow = RetryPolicy(quick_delays=(0.01,), slow_delay=60.0, max_attempts=50)
    sender = make_sender(
        outbox,
        {"chat2desk": chat2desk},
        policy=slow,
        breaker_factory=lambda name: CircuitBreaker(name, failure_threshold=2, cooldown=0.2),
    )
    async with running(sender):
        # a's second failure put it on the 60 s slow retry; c's probe then succeeds
        await eventually(lambda: len(outbox.sent) == 3, timeout=10)
    assert fake.texts("1") == ["a", "b"] and fake.texts("2") == ["c"]
    assert any(attempts == 2 for _, attempts, _, _ in outbox.reschedules)  # a waited "60 s"


class _ClosedWindow(Channel):
    name = "chat2desk"

    def parse_webhook(self, payload: object, *, received_at: float) -> None:
        return None

    async def send(self, message: OutboundMessage) -> None:
        raise OutsideWindow("chat2desk: the customer last wrote 49 h ago, outside the window")


async def test_a_message_outside_the_window_is_dead_lettered_and_the_operators_are_told(
    outbox: MemoryOutbox,
) -> None:
    queued: list[OutboundMessage] = []

    async def put(message: OutboundMessage) -> None:
        queued.append(message)

    outbox.put(
        OutboundMessage(key="status:42:7", channel="chat2desk", client_id="5", text="Order ready")
    )
    sender = make_sender(
        outbox,
        {"chat2desk": _ClosedWindow()},
        alerts=OperationsAlerts(put, chats=("500",)),
    )
    async with running(sender):
        await eventually(
            lambda: len(outbox.dead) == 1 and "window:status:42:7:500" in [m.key for m in queued]
        )
    assert "OutsideWindow" in outbox.dead[0].last_error
    # the notice through the outbox, under its pinned key (and the dead letter's alert)
    notice = next(m for m in queued if m.key == "window:status:42:7:500")
    assert notice.client_id == "500" and notice.channel == "telegram"
    assert "order #42" in notice.text and "call the customer" in notice.text
    assert "Order ready" in notice.text
