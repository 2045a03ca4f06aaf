"""One reply at a time: an attempt through the channel's circuit breaker, the rate limit and (for
a reply whose last call timed out) the channel's own record of what it delivered, then the
outcome recorded in the outbox: sent, rescheduled by the retry policy, deferred without spending
an attempt, or dead-lettered. A part of :class:`~orderbot.sender.Sender`, mixed in.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

from orderbot import metrics
from orderbot.channels.base import Channel
from orderbot.errors import ChannelError, CircuitOpen, OutsideWindow, QuotaExceeded, Timeout
from orderbot.loggers import mask_text
from orderbot.loggers import sender as log
from orderbot.messages import OutboundMessage
from orderbot.queues.base import Outbox, OutboxItem
from orderbot.ratelimit import RateLimiter
from orderbot.retry import CircuitBreaker, RetryPolicy

__all__ = ["SendAttempts"]

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


class SendAttempts:
    """Trying a reply and recording the outcome; mixed into :class:`~orderbot.sender.Sender`,
    which sets the attributes."""

    _outbox: Outbox
    _channels: Mapping[str, Channel]
    _limiter: RateLimiter
    _policy: RetryPolicy
    _clock: Callable[[], float]
    _breaker_factory: Callable[[str], CircuitBreaker]
    _breakers: dict[str, CircuitBreaker]
    _slots: asyncio.Semaphore
    _stop: asyncio.Event | None
    _closing: bool
    _admin_chats: tuple[str, ...]
    _quota_told: set[str]
    counts: _Counts

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
        outcome = await self._attempt(channel, self.breaker(name), item)
        if isinstance(outcome, QuotaExceeded):
            await self._tell_quota(name, outcome)
            outcome = _Deferred(outcome.retry_after, _describe(outcome))
        elif outcome is None:
            self._quota_told.discard(name)
        elif isinstance(outcome, OutsideWindow):
            await self._tell_operators(
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

    async def _channel_recovered(self, channel: str) -> None:
        """Called when ``channel``'s breaker closes after a successful probe (the sender
        releases the replies waiting for a retry)."""

    async def _tell_quota(self, name: str, error: QuotaExceeded) -> None:
        """Tell the operators once that ``name``'s API quota is used up (replies wait)."""
        if name in self._quota_told:
            return
        self._quota_told.add(name)
        log.error(
            "%s: the API quota is used up (%s); replies wait and are retried, none is dropped",
            name,
            error,
        )
        if name == "telegram":
            return
        await self._tell_operators(
            f"quota:{name}",
            f"orderbot: the {name} API quota is used up ({error}). Replies to customers are "
            f"held and retried every {error.retry_after:g} s until the quota allows them; "
            "raise the limit with the provider if this lasts.",
        )

    async def _tell_operators(self, key: str, text: str) -> None:
        """Send ``text`` to the operators' Telegram chats (``admin_chats``) directly, best
        effort: it is about a channel that may be failing, so it does not queue behind it."""
        telegram = self._channels.get("telegram")
        if telegram is None:
            return
        for chat in self._admin_chats:
            try:
                await telegram.send(
                    OutboundMessage(
                        key=f"{key}:{chat}", channel="telegram", client_id=chat, text=text
                    )
                )
            except Exception as exc:  # telling is best effort
                log.warning("could not tell operator chat %s: %s", chat, _describe(exc))

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


def _what(message: OutboundMessage) -> str:
    """What a message is, for operators: the order's status notification, or a message."""
    parts = message.key.split(":")
    if parts[0] == "status" and len(parts) > 1:
        return f"the status notification of order #{parts[1]}"
    return "a message"


def _describe(exc: BaseException | None) -> str:
    """An error for logs and the dead-letter queue. Our channel errors are written without
    personal data; anything else is masked, since it may quote what was being sent."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, ChannelError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {mask_text(str(exc))}"
