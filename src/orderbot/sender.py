"""The sender: takes replies from the outbox and delivers them through their channel.

Rules it keeps (see DESIGN.md, "Correctness rules"):

* One client's replies go out strictly in order, one at a time: claimed items are queued in a
  *lane* per ``channel:client_id``; a lane sends its head, records the result, then moves on.
* No head-of-line blocking: lanes run concurrently (at most ``concurrency`` sends in flight), and
  a lane whose head waits for a retry time holds up only that client.
* Bounded retries (:class:`~orderbot.retry.RetryPolicy`), then the dead-letter queue; a
  :class:`~orderbot.errors.PermanentError` goes there at once.
* An exhausted API quota (:class:`~orderbot.errors.QuotaExceeded`) is rate limiting, not a
  failing reply: the reply waits as the quota asks without spending an attempt, so it is never
  dead-lettered for it.
* What needs a person is told through :class:`~orderbot.alerting.OperationsAlerts` (the admin
  chats, through the outbox in the background, and ``GET /status``): a dead letter, a circuit
  that opened (resolved when it closes), a used-up quota (resolved when a send through that
  channel succeeds), and, with ``webhook_status``, orderbot's Chat2Desk webhook disabled or
  missing. With ``report``, the sender's state (circuits, alerts) is published every
  ``monitor_interval`` seconds for a ``GET /status`` served by another process.
* One :class:`~orderbot.retry.CircuitBreaker` per channel. While it is open no call is made;
  the item is rescheduled to when a trial call is allowed *without* spending an attempt: nothing
  was tried, and spending attempts on a channel outage would dead-letter every reply of a long
  outage even though each reply is fine. Attempts stay bounded because each real call counts.
* Items are durable in the outbox until marked sent or dead-lettered; stopping (or crashing)
  leaves the rest there, so the worst case after a crash is a reply sent twice, never lost.

One module, one class: the claiming and the lanes, then one reply at a time: an attempt through
the channel's circuit breaker, the rate limit and (for a reply whose last call timed out) the
channel's own record of what it delivered, then the outcome recorded in the outbox: sent,
rescheduled by the retry policy, deferred without spending an attempt, or dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orderbot import metrics, outbound
from orderbot.alerting import OperationsAlerts
from orderbot.channels.base import Channel
from orderbot.errors import ChannelError, CircuitOpen, OutsideWindow, QuotaExceeded, Timeout
from orderbot.loggers import mask_text
from orderbot.loggers import sender as log
from orderbot.messages import OutboundMessage
from orderbot.queues.base import Outbox, OutboxItem
from orderbot.ratelimit import RateLimiter
from orderbot.retry import CircuitBreaker, RetryPolicy

__all__ = ["Sender"]

_DEFAULT_POLICY = RetryPolicy()
# The errors of a channel that was down (``last_error`` starts with the exception's name).
_OUTAGE_ERRORS = ("ServerError", "Timeout", "CircuitOpen")


@dataclass(eq=False)
class _Lane:
    """One client's claimed replies, in order; ``waiting_until`` is set while its head sleeps."""

    key: str
    items: deque[OutboxItem]
    task: asyncio.Task[None] | None = None
    waiting_until: float = 0.0
    busy: bool = False
    busy_since: float = 0.0  # monotonic time its head's attempt started
    reported: bool = False  # that attempt was logged as stuck
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # cut a retry wait short


# What a lane holds when the rate limiter itself fails (e.g. its Redis is down): not the
# reply's fault, so it is retried soon without spending an attempt.
_LIMITER_RETRY = 1.0


_OUTBOX_RETRY_MAX = 5.0


@dataclass(eq=False)
class _Deferred:
    """The call was not made (circuit open, limiter down); retry after ``delay`` seconds."""

    delay: float
    reason: str


@dataclass(eq=False)
class _Counts:
    sent: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0


class Sender:
    """Delivers outbox items through ``channels`` (by channel name) until told to stop.

    ``clock`` is wall time, the clock of ``OutboxItem.not_before``. ``max_active_lanes`` bounds
    how many clients with sendable replies are held at once (default ``2 * concurrency``);
    ``max_in_hand`` bounds the claimed items kept in memory, waiting ones included. A reply in
    progress for longer than ``stuck_after`` seconds is logged once with where it waits.
    """

    def __init__(
        self,
        outbox: Outbox,
        channels: Mapping[str, Channel],
        *,
        rate_limiter: RateLimiter,
        policy: RetryPolicy = _DEFAULT_POLICY,
        concurrency: int = 100,
        clock: Callable[[], float] = time.time,
        breaker_factory: Callable[[str], CircuitBreaker] = CircuitBreaker,
        drain_timeout: float = 10.0,
        poll_interval: float = 1.0,
        max_active_lanes: int | None = None,
        max_in_hand: int = 50_000,
        stuck_after: float = 60.0,
        alerts: OperationsAlerts | None = None,
        webhook_status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        report: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        monitor_interval: float = 10.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._outbox = outbox
        self._channels = channels
        self._limiter = rate_limiter
        self._policy = policy
        self._concurrency = concurrency
        self._clock = clock
        self._breaker_factory = breaker_factory
        self._drain_timeout = drain_timeout
        self._poll_interval = poll_interval
        self._max_active_lanes = max_active_lanes or 2 * concurrency
        self._max_in_hand = max(max_in_hand, self._max_active_lanes)
        self._stuck_after = stuck_after
        self.alerts = alerts or OperationsAlerts(None)
        self._webhook_status = webhook_status
        self._report = report
        self._monitor_interval = monitor_interval
        self._stuck_checked = 0.0  # monotonic time of the last look for stuck replies
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lanes: dict[str, _Lane] = {}
        self._in_hand: dict[int, str] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._freed = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self._closing = False
        self.counts = _Counts()

    @property
    def in_hand(self) -> int:
        """How many claimed items this sender holds right now."""
        return len(self._in_hand)

    def circuits(self) -> dict[str, str]:
        """The circuit-breaker state of each channel this sender has called (``GET /status``)."""
        return {name: breaker.state for name, breaker in self._breakers.items()}

    def state(self) -> dict[str, Any]:
        """What ``GET /status`` shows of this sender: circuits and active alerts."""
        return {"circuits": self.circuits(), "alerts": self.alerts.active()}

    async def monitor_once(self) -> None:
        """One look around: conditions held back by the alert interval, the webhook, the
        report. Failures are logged; the next look tries again."""
        self.alerts.tick()
        if self._webhook_status is not None:
            try:
                hook = await self._webhook_status()
            except Exception as exc:
                log.warning("webhook check failed: %s", _describe(exc))
            else:
                if hook.get("state") in ("disabled", "missing"):
                    errors = "; ".join(map(str, hook.get("errors") or []))
                    self.alerts.alert(
                        "webhook", "chat2desk", f"{hook['state']}: {hook.get('hint', '')} {errors}"
                    )
                elif hook.get("state") == "ok":
                    self.alerts.resolve("webhook", "chat2desk")
        if self._report is not None:
            try:
                await self._report(self.state())
            except Exception as exc:
                log.warning("publishing the sender's state failed: %s", _describe(exc))

    async def _monitor(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.monitor_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._monitor_interval)

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set; then stop claiming, let in-flight sends finish (at most
        ``drain_timeout`` seconds) and return. Unfinished items stay in the outbox."""
        if self._stop is not None:
            raise RuntimeError("this Sender is already running")
        self._stop = stop
        self._closing = False
        stop_waiter: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        monitor = asyncio.create_task(self._monitor(stop), name="orderbot-sender-monitor")
        try:
            while not stop.is_set():
                await self._claim_round(stop_waiter)
        finally:
            self._closing = True
            stop_waiter.cancel()
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)
            await self._drain()
            await self.alerts.aclose()
            self._stop = None

    async def _drain(self) -> None:
        """Let the sends in flight finish (bounded), cancel lanes that only wait."""
        lanes = list(self._lanes.values())
        tasks = [lane.task for lane in lanes if lane.task is not None]
        for lane in lanes:
            if not lane.busy and lane.task is not None:
                lane.task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._drain_timeout)
        if pending:
            log.warning(
                "%d send(s) still in flight after %.1fs; abandoning them (they stay in the outbox)",
                len(pending),
                self._drain_timeout,
            )
            for task in pending:
                # Where each one waits (code locations only: nothing a customer sent).
                log.warning("  a send waits at %s", _where(task))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # claiming

    async def _claim_round(self, stop_waiter: asyncio.Future[Any]) -> None:
        self._report_stuck()
        self._freed.clear()
        if self._active_lanes() >= self._max_active_lanes or not self._room():
            await self._wait_first(stop_waiter, self._freed.wait())
            return
        limit = min(self._max_active_lanes, self._room())
        try:
            items = await self._outbox.claim(limit, set(self._in_hand))
        except Exception as exc:
            log.error("claiming replies failed (%s); retrying in %.1fs", _describe(exc), 1.0)
            await self._wait_first(stop_waiter, asyncio.sleep(self._poll_interval))
            return
        self._dispatch(items)
        if len(items) < limit:
            # Nothing more is pending now: sleep until the outbox signals new work. The timeout
            # covers outboxes fed by another process, whose notifications may not reach us.
            await self._wait_first(stop_waiter, self._outbox.wait(self._poll_interval))

    def _report_stuck(self) -> None:
        """Log, once per attempt, a reply in progress for longer than any send or outbox call
        should take, with where it waits: it holds up its client's later replies, and nothing
        else would say so (the loop itself is healthy). Looks at most once a second: claim
        rounds come often under load, and lanes can be many."""
        now = time.monotonic()
        if now - self._stuck_checked < 1.0:
            return
        self._stuck_checked = now
        for lane in self._lanes.values():
            if (
                lane.busy
                and not lane.reported
                and lane.task is not None
                and now - lane.busy_since > self._stuck_after
            ):
                lane.reported = True
                log.warning(
                    "reply %s has been in progress for %.0fs; it waits at %s",
                    lane.items[0].handle if lane.items else "?",
                    now - lane.busy_since,
                    _where(lane.task),
                )

    def _room(self) -> int:
        return self._max_in_hand - len(self._in_hand)

    def _active_lanes(self) -> int:
        now = self._clock()
        return sum(1 for lane in self._lanes.values() if lane.waiting_until <= now)

    async def _wait_first(self, stop_waiter: asyncio.Future[Any], *aws: Awaitable[object]) -> None:
        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(aw) for aw in aws]
        try:
            await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("waiting for work failed: %s", _describe(task.exception()))

    def _dispatch(self, items: list[OutboxItem]) -> None:
        for item in items:
            if item.handle in self._in_hand:  # an outbox that ignored ``exclude``
                continue
            key = outbound.client_key(item.message.channel, item.message.client_id)
            self._in_hand[item.handle] = key
            lane = self._lanes.get(key)
            if lane is not None:
                lane.items.append(item)
                continue
            lane = self._lanes[key] = _Lane(key, deque([item]))
            lane.task = asyncio.create_task(self._run_lane(lane), name=f"orderbot-lane-{key}")

    # one client's line

    async def _run_lane(self, lane: _Lane) -> None:
        try:
            while lane.items and not self._stopping():
                item = lane.items[0]
                delay = item.not_before - self._clock()
                if delay > 0:
                    lane.waiting_until = item.not_before
                    lane.wake.clear()
                    # A waiting lane no longer counts as active: let the claim loop fetch more.
                    self._freed.set()
                    try:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(lane.wake.wait(), delay)
                    finally:
                        lane.waiting_until = 0.0
                    continue
                lane.busy = True
                lane.busy_since = time.monotonic()
                lane.reported = False
                try:
                    updated = await self._process(item)
                finally:
                    lane.busy = False
                if updated is None:
                    lane.items.popleft()
                    self._release(item.handle)
                else:
                    lane.items[0] = updated
        except Exception as exc:  # _process catches per item; this is the last line of defence
            log.error("lane failed: %s; its replies will be claimed again", _describe(exc))
        finally:
            # Anything left is still pending in the outbox: give it back to be claimed again.
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]
            for item in lane.items:
                self._release(item.handle)
                self._outbox.give_back(item.handle)

    async def _channel_recovered(self, channel: str) -> None:
        """The breaker of ``channel`` closed after a successful probe: replies that wait for a
        retry because the channel was down go now (each lane keeps its order) instead of at
        their slow retry. Waits the API asked for (429, quota) are kept."""
        now = self._clock()
        released = 0
        for lane in self._lanes.values():
            if not lane.key.startswith(f"{channel}:") or lane.waiting_until <= now:
                continue
            head = lane.items[0] if lane.items else None
            if head is None or not head.last_error.startswith(_OUTAGE_ERRORS):
                continue
            lane.items[0] = replace(head, not_before=now)
            lane.wake.set()
            released += 1
        try:
            released += await self._outbox.release_waiting(channel, _OUTAGE_ERRORS)
        except Exception as exc:  # the replies still come at their retry time
            log.warning("releasing parked replies failed: %s", _describe(exc))
        if released:
            log.info("%s answers again: %d waiting repl(ies) released", channel, released)

    def _release(self, handle: int) -> None:
        self._in_hand.pop(handle, None)
        self._freed.set()

    def breaker(self, channel: str) -> CircuitBreaker:
        """The circuit breaker of ``channel`` (created on first use)."""
        found = self._breakers.get(channel)
        if found is None:
            found = self._breakers[channel] = self._breaker_factory(channel)
        return found

    def _stopping(self) -> bool:
        return self._closing or self._stop is None or self._stop.is_set()

    async def _process(self, item: OutboxItem) -> OutboxItem | None:
        """Try ``item`` once and record the outcome; return the item to keep at the head of
        its lane (rescheduled), or None when it is done with (sent, dead-lettered, or parked
        by an outbox that ``parks_retries``)."""
        name = item.message.channel
        channel = self._channels.get(name)
        if channel is None:
            await self._dead(item, item.attempts, f"no channel adapter named {name!r}")
            return None
        started = self._clock()  # no later than the call itself: a safe bound for reconciling
        breaker = self.breaker(name)
        outcome = await self._attempt(channel, breaker, item)
        if breaker.state == "closed":
            self.alerts.resolve("circuit_open", name)
        elif breaker.state == "open":
            self.alerts.alert("circuit_open", name, _describe_outcome(outcome))
        if isinstance(outcome, QuotaExceeded):
            self.alerts.alert(
                "quota",
                name,
                f"{outcome}. Replies are held and retried every {outcome.retry_after:g} s; "
                "none is dropped. Raise the limit with the provider if this lasts.",
            )
            outcome = _Deferred(outcome.retry_after, _describe(outcome))
        elif outcome is None:
            self.alerts.resolve("quota", name)
        elif isinstance(outcome, OutsideWindow):
            self.alerts.notice(
                f"window:{item.message.key}",
                f"orderbot: call the customer ({name} client {item.message.client_id}): "
                f"{_what(item.message)} could not be sent, {outcome}.\n\n{item.message.text}",
            )
        if outcome is None:
            if await self._outbox_call(
                "mark_sent", item, lambda: self._outbox.mark_sent(item.handle)
            ):
                self.counts.sent += 1
                metrics.REPLIES.labels(channel=name, result="sent").inc()
            return None
        if isinstance(outcome, _Deferred):
            not_before = self._clock() + outcome.delay
            error = item.last_error or outcome.reason
            log.debug("reply %s deferred %.1fs: %s", item.handle, outcome.delay, outcome.reason)
            parked = await self._outbox_call(
                "reschedule",
                item,
                lambda: self._outbox.reschedule(item.handle, item.attempts, not_before, error),
            )
            self.counts.deferred += 1
            if parked and self._outbox.parks_retries:
                return None  # the outbox hands it out again when due
            return replace(item, not_before=not_before)
        attempts = item.attempts + 1
        error = _describe(outcome)
        retryable = isinstance(outcome, ChannelError) and outcome.retryable
        delay = self._policy.next_delay(attempts, outcome) if retryable else None
        if delay is None:
            await self._dead(item, attempts, error)
            return None
        not_before = self._clock() + delay
        log.warning(
            "reply %s via %s failed (attempt %d): %s; retry in %.2fs",
            item.handle,
            name,
            attempts,
            type(outcome).__name__,
            delay,
        )
        parked = await self._outbox_call(
            "reschedule",
            item,
            lambda: self._outbox.reschedule(item.handle, attempts, not_before, error),
        )
        self.counts.retried += 1
        metrics.REPLIES.labels(channel=name, result="retried").inc()
        if parked and self._outbox.parks_retries:
            return None  # the outbox hands it out again when due
        # A timed-out call may still have been delivered: ask the channel before the next one.
        in_doubt = (item.in_doubt_since or started) if isinstance(outcome, Timeout) else None
        return replace(
            item,
            attempts=attempts,
            not_before=not_before,
            last_error=error,
            in_doubt_since=in_doubt,
        )

    async def _attempt(
        self, channel: Channel, breaker: CircuitBreaker, item: OutboxItem
    ) -> Exception | _Deferred | None:
        """One send within the concurrency bound, the breaker and the rate limit: None on
        success, the error it raised, or a deferral when no call was made."""
        async with self._slots:
            probing = breaker.state != "closed"
            try:
                breaker.before_call()
            except CircuitOpen as exc:
                return _Deferred(exc.retry_after, f"CircuitOpen: {exc}")
            try:
                await self._limiter.acquire()
            except Exception as exc:
                breaker.cancel_trial()
                log.error("rate limiter failed: %s", _describe(exc))
                return _Deferred(_LIMITER_RETRY, "rate limiter unavailable")
            except BaseException:
                breaker.cancel_trial()
                raise
            if item.in_doubt_since is not None:
                try:
                    delivered = await channel.was_delivered(item.message, item.in_doubt_since)
                except ChannelError as exc:
                    breaker.record(exc)
                    return exc
                except Exception as exc:
                    # A bug in the adapter's check: it cannot tell, so the reply is sent again
                    # (at least once), as for a channel that keeps no record.
                    log.warning(
                        "reply %s: the delivery check failed (%s); sending it again",
                        item.handle,
                        type(exc).__name__,
                    )
                    delivered = None
                if delivered:
                    breaker.record(None)
                    log.info("reply %s was already delivered; not sending it again", item.handle)
                    return None
            try:
                await self._outbox.begin_send(item.handle)
            except Exception as exc:
                breaker.cancel_trial()
                log.error("outbox begin_send of reply %s failed: %s", item.handle, _describe(exc))
                return _Deferred(_LIMITER_RETRY, "outbox unavailable")
            try:
                await channel.send(item.message)
            except ChannelError as exc:
                breaker.record(exc)
                return exc
            except Exception as exc:
                # A bug in the adapter says nothing about the API's health.
                breaker.cancel_trial()
                # The traceback's frames, not its message: the message may quote the text.
                log.debug(
                    "reply %s: unexpected %s from the adapter:\n%s",
                    item.handle,
                    type(exc).__name__,
                    "".join(traceback.format_tb(exc.__traceback__)),
                )
                return exc
            except BaseException:
                breaker.cancel_trial()
                raise
            breaker.record(None)
            if probing and breaker.state == "closed":
                await self._channel_recovered(item.message.channel)
            return None

    async def _dead(self, item: OutboxItem, attempts: int, error: str) -> None:
        log.error(
            "reply %s via %s dead-lettered after %d attempt(s): %s",
            item.handle,
            item.message.channel,
            attempts,
            error,
        )
        if await self._outbox_call(
            "dead_letter", item, lambda: self._outbox.dead_letter(item.handle, attempts, error)
        ):
            self.counts.dead += 1
            metrics.REPLIES.labels(channel=item.message.channel, result="dead").inc()
            self.alerts.alert(
                "dead_letter",
                item.message.channel,
                f"{_what(item.message)} to {item.message.client_id}: {error}. "
                "Replay it in the console (Dead letters) or with orderbot dlq.",
            )

    async def _outbox_call(
        self, what: str, item: OutboxItem, call: Callable[[], Awaitable[None]]
    ) -> bool:
        """Record an outcome, retrying while the outbox fails: the lane must not move on (or the
        item be claimed again) before its result is stored. False when given up on stop."""
        delay = 0.1
        while True:
            try:
                await call()
                return True
            except Exception as exc:
                log.error(
                    "outbox %s of reply %s failed (%s); retrying in %.1fs",
                    what,
                    item.handle,
                    _describe(exc),
                    delay,
                )
            if self._stopping():
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, _OUTBOX_RETRY_MAX)


def _where(task: asyncio.Task[Any]) -> str:
    """Where ``task`` waits: the chain of awaits from its coroutine down to the innermost one,
    as ``file:line function`` (the last few; asyncio's own ``get_stack`` shows only the
    outermost frame of a suspended task)."""
    places: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            places.append(type(awaited).__name__)  # a future, a task, a low-level awaitable
            break
        code = frame.f_code
        places.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " -> ".join(places[-5:]) or "(finished)"


def _what(message: OutboundMessage) -> str:
    """What a message is, for operators: the order's status notification, or a message."""
    parts = message.key.split(":")
    if parts[0] == "status" and len(parts) > 1:
        return f"the status notification of order #{parts[1]}"
    return "a message"


def _describe_outcome(outcome: object) -> str:
    if isinstance(outcome, BaseException):
        return _describe(outcome)
    if isinstance(outcome, _Deferred):
        return outcome.reason
    return ""


def _describe(exc: BaseException | None) -> str:
    """An error for logs and the dead-letter queue. Our channel errors are written without
    personal data; anything else is masked, since it may quote what was being sent."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, ChannelError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {mask_text(str(exc))}"
