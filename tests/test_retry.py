"""Backoff delays (exact with jitter=0 or a seeded rng) and the circuit breaker's states."""

from __future__ import annotations

import random

import pytest

from agent.retry import (
    BackoffStrategy,
    CircuitBreaker,
    ExponentialBackoff,
    FixedBackoff,
    LinearBackoff,
)


def test_exponential_doubles_up_to_the_cap() -> None:
    backoff = ExponentialBackoff(base=2.0, max_delay=60.0, jitter=0)
    assert [backoff.delay(a) for a in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert backoff.delay(10_000) == 60  # no float overflow on a long outage


def test_linear_and_fixed() -> None:
    assert [LinearBackoff(step=1.5, max_delay=4, jitter=0).delay(a) for a in (1, 2, 3)] == [
        1.5,
        3.0,
        4.0,
    ]
    assert [FixedBackoff(delay=5, jitter=0).delay(a) for a in (1, 9)] == [5, 5]


@pytest.mark.parametrize(
    "make", [ExponentialBackoff, LinearBackoff, FixedBackoff], ids=lambda c: c.__name__
)
def test_jitter_is_within_the_band_and_reproducible_with_a_seed(make: type) -> None:
    plain = make(jitter=0)
    jittered = make(rng=random.Random(7))
    again = make(rng=random.Random(7))
    for attempt in range(1, 20):
        delay = jittered.delay(attempt)
        assert 0.8 * plain.delay(attempt) <= delay <= 1.2 * plain.delay(attempt)
        assert delay == again.delay(attempt)
    assert isinstance(plain, BackoffStrategy)


@pytest.mark.parametrize(
    "build",
    [
        lambda: ExponentialBackoff(base=0),
        lambda: ExponentialBackoff(max_delay=-1),
        lambda: LinearBackoff(step=0),
        lambda: LinearBackoff(max_delay=0),
        lambda: FixedBackoff(delay=-5),
        lambda: FixedBackoff(delay=float("inf")),
        lambda: FixedBackoff(jitter=-0.1),
        lambda: FixedBackoff(jitter=1.0),
        lambda: FixedBackoff(jitter=True),
        lambda: ExponentialBackoff(base="2"),
    ],
)
def test_bad_parameters_are_value_errors(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        build()


def test_attempts_are_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        FixedBackoff().delay(0)


def test_breaker_opens_skips_one_cycle_then_probes() -> None:
    breaker = CircuitBreaker(threshold=2)
    assert breaker.should_attempt()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.should_attempt()  # the skipped cycle
    assert breaker.state == "half-open"
    assert breaker.should_attempt()  # the probe
    breaker.record_failure()  # probe failed: open again at once
    assert breaker.state == "open"
    assert not breaker.should_attempt()
    assert breaker.should_attempt()
    breaker.record_success()  # probe succeeded
    assert (breaker.state, breaker.consecutive_failures) == ("closed", 0)


@pytest.mark.parametrize("threshold", [0, -1, 1.5, True])
def test_breaker_threshold_is_a_positive_whole_number(threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker(threshold=threshold)  # type: ignore[arg-type]
