"""Retry decisions as values: how long to wait before the next send, and when to stop calling.

:class:`RetryPolicy` answers "this reply failed N times; when next?" (quick tries after 1, 2,
4 s, then growing waits of 8, 16, 32, 60, 120 s, then a slow retry every 5 minutes, then the
dead-letter queue): a short outage is bridged in seconds, a long one costs few calls.
:class:`CircuitBreaker` answers "should we call this channel's API at all right now?" after a
run of server errors, so a dead API is probed by one trial call instead of being hammered by
every waiting reply.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from orderbot import metrics
from orderbot.errors import CircuitOpen, RateLimited, ServerError, Timeout

__all__ = ["CircuitBreaker", "CircuitState", "RetryPolicy"]

CircuitState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry a failed send.

    After the ``n``-th failed attempt the wait is ``quick_delays[n-1]`` while those last, then
    ``slow_delay``; once ``max_attempts`` attempts failed there is no next try (dead letter).
    """

    quick_delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 120.0)
    slow_delay: float = 300.0
    max_attempts: int = 50

    def __post_init__(self) -> None:
        if any(delay < 0 for delay in self.quick_delays):
            raise ValueError("quick_delays must not be negative")
        if self.slow_delay < 0:
            raise ValueError("slow_delay must not be negative")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def next_delay(self, attempts: int, error: BaseException | None = None) -> float | None:
        """Seconds to wait before the next try after ``attempts`` failed attempts, or None when
        the reply has had all its attempts. An API that asked for a wait (429 ``Retry-After``,
        an open circuit) gets at least that wait."""
        if attempts >= self.max_attempts:
            return None
        if attempts <= 0:
            delay = 0.0
        elif attempts <= len(self.quick_delays):
            delay = self.quick_delays[attempts - 1]
        else:
            delay = self.slow_delay
        if isinstance(error, (RateLimited, CircuitOpen)):
            delay = max(delay, error.retry_after)
        return delay


class CircuitBreaker:
    """Closed -> open after ``failure_threshold`` consecutive failures -> half-open after a
    cool-down -> one trial call; the trial's success closes it, its failure reopens it with
    the cool-down doubled (up to ``max_cooldown``).

    Only :class:`ServerError` and :class:`Timeout` count as failures: a 429 or a 4xx means the
    API is up and answering, so those count as successes for the breaker.
    """

    def __init__(
        self,
        name: str = "",
        *,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        max_cooldown: float = 300.0,
        trial_wait: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown <= 0 or max_cooldown < cooldown:
            raise ValueError("need 0 < cooldown <= max_cooldown")
        self.name = name
        self._threshold = failure_threshold
        self._base_cooldown = cooldown
        self._max_cooldown = max_cooldown
        # While the one trial call is out, others are told to come back this soon: if the
        # trial succeeds they should not sit out a whole cool-down.
        self._trial_wait = min(trial_wait, cooldown)
        self._clock = clock
        self._state: CircuitState = "closed"
        self._failures = 0
        self._cooldown = cooldown
        self._opened_at = 0.0
        self._trial_out = False
        self._publish()

    @property
    def state(self) -> CircuitState:
        """The state as of now (an open breaker whose cool-down ran out reads half-open)."""
        if self._state == "open" and self._clock() >= self._opened_at + self._cooldown:
            return "half_open"
        return self._state

    @property
    def cooldown(self) -> float:
        """The current cool-down (doubles while trials keep failing)."""
        return self._cooldown

    def before_call(self) -> None:
        """Raise :class:`CircuitOpen` when no call may be made now; otherwise let it through
        (in half-open, the caller that gets through makes the one trial call and must report
        its outcome with :meth:`record` or :meth:`cancel_trial`)."""
        if self._state == "closed":
            return
        now = self._clock()
        if self._state == "open":
            remaining = self._opened_at + self._cooldown - now
            if remaining > 0:
                raise CircuitOpen(
                    f"circuit {self.name} open for {remaining:.1f}s more", retry_after=remaining
                )
            self._state = "half_open"
        if self._trial_out:
            raise CircuitOpen(
                f"circuit {self.name} half-open, trial call in flight", retry_after=self._trial_wait
            )
        self._trial_out = True

    def record(self, error: BaseException | None) -> None:
        """Report a call's outcome: None for success, or the error it raised."""
        if isinstance(error, (ServerError, Timeout)):
            self.record_failure()
        else:
            self.record_success()

    def record_success(self) -> None:
        if self._state == "half_open":
            self._state = "closed"
            self._trial_out = False
            self._cooldown = self._base_cooldown
            self._publish()
        elif self._state == "closed":
            self._failures = 0
        # open: a call that started before the breaker opened; one lucky answer proves little.

    def record_failure(self) -> None:
        if self._state == "half_open":
            self._trial_out = False
            self._cooldown = min(self._cooldown * 2, self._max_cooldown)
            self._open()
        elif self._state == "closed":
            self._failures += 1
            if self._failures >= self._threshold:
                self._cooldown = self._base_cooldown
                self._open()
        # open: late failures of calls made before it opened must not extend the cool-down.

    def cancel_trial(self) -> None:
        """The trial call was abandoned without an answer (cancelled): let another caller try."""
        if self._state == "half_open":
            self._trial_out = False

    def _open(self) -> None:
        self._state = "open"
        self._failures = 0
        self._opened_at = self._clock()
        self._publish()

    def _publish(self) -> None:
        metrics.CIRCUIT_STATE.labels(channel=self.name).set(0 if self._state == "closed" else 1)
