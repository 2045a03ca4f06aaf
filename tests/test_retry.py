"""RetryPolicy's delay table and the circuit breaker's transitions (with a fake clock)."""

from __future__ import annotations

import pytest

from orderbot import metrics
from orderbot.errors import CircuitOpen, PermanentError, RateLimited, ServerError, Timeout
from orderbot.retry import CircuitBreaker, RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_delay_table() -> None:
    policy = RetryPolicy()
    assert [policy.next_delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 120]
    assert all(policy.next_delay(n) == 300.0 for n in range(9, 50))
    assert policy.next_delay(50) is None
    assert policy.next_delay(51) is None


def test_zero_attempts_means_no_wait() -> None:
    assert RetryPolicy().next_delay(0) == 0.0


def test_retry_after_overrides_when_longer() -> None:
    policy = RetryPolicy()
    assert policy.next_delay(1, RateLimited("429", retry_after=7.5)) == 7.5
    assert policy.next_delay(5, RateLimited("429", retry_after=7.5)) == 16.0
    assert policy.next_delay(9, RateLimited("429", retry_after=7.5)) == 300.0
    assert policy.next_delay(2, CircuitOpen("open", retry_after=30)) == 30.0
    assert policy.next_delay(2, ServerError("500")) == 2.0
    assert policy.next_delay(50, RateLimited("429", retry_after=1)) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"quick_delays": (-1.0,)}, {"slow_delay": -1.0}, {"max_attempts": 0}],
)
def test_policy_is_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the field
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 3  # type: ignore[misc]


def test_breaker_opens_after_consecutive_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("t-open", failure_threshold=3, cooldown=30, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record(ServerError("500"))
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.record(Timeout("slow"))
    assert breaker.state == "open"
    assert metrics.CIRCUIT_STATE.labels(channel="t-open")._value.get() == 1
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(30)
    clock.advance(10)
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(20)


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker("t-reset", failure_threshold=3, clock=FakeClock())
    for _ in range(2):
        breaker.record(ServerError("500"))
    breaker.record(None)
    for _ in range(2):
        breaker.record(ServerError("500"))
    assert breaker.state == "closed"


@pytest.mark.parametrize("error", [RateLimited("429", retry_after=1), PermanentError("400")])
def test_429_and_permanent_errors_do_not_trip(error: Exception) -> None:
    breaker = CircuitBreaker("t-notrip", failure_threshold=2, clock=FakeClock())
    for _ in range(10):
        breaker.record(error)
    assert breaker.state == "closed"


def test_half_open_allows_one_trial_and_success_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("t-half", failure_threshold=1, cooldown=30, clock=clock)
    breaker.record(ServerError("500"))
    clock.advance(30)
    assert breaker.state == "half_open"
    breaker.before_call()  # the trial
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()  # a second caller while the trial is out
    assert info.value.retry_after == pytest.approx(1.0)
    breaker.record(None)
    assert breaker.state == "closed"
    assert metrics.CIRCUIT_STATE.labels(channel="t-half")._value.get() == 0
    breaker.before_call()


def test_failed_trial_doubles_the_cooldown_up_to_the_cap() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "t-double", failure_threshold=1, cooldown=30, max_cooldown=100, clock=clock
    )
    breaker.record(ServerError("500"))
    cooldowns = []
    for _ in range(4):
        clock.advance(breaker.cooldown)
        breaker.before_call()
        breaker.record(ServerError("500"))
        cooldowns.append(breaker.cooldown)
        assert breaker.state == "open"
    assert cooldowns == [60, 100, 100, 100]
    clock.advance(100)
    breaker.before_call()
    breaker.record(None)
    assert breaker.state == "closed"
    assert breaker.cooldown == 30


def test_cancelled_trial_lets_another_caller_try() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("t-cancel", failure_threshold=1, cooldown=5, clock=clock)
    breaker.record(ServerError("500"))
    clock.advance(5)
    breaker.before_call()
    breaker.cancel_trial()
    breaker.before_call()


def test_late_failures_while_open_do_not_extend_it() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("t-late", failure_threshold=1, cooldown=10, clock=clock)
    breaker.record(ServerError("500"))
    clock.advance(9)
    breaker.record(ServerError("late"))
    clock.advance(1)
    assert breaker.state == "half_open"
