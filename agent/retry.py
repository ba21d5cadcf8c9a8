"""Retrying a failed telemetry reading: backoff delays and the circuit breaker.

A 1-wire bus glitches, an I2C sensor answers ``EIO`` once a day, a serial port times out.
``@app.telemetry(..., retry=3)`` tries such a cycle again — for the exceptions in
``retry_on`` (default ``(OSError,)``, which covers ``TimeoutError``) — waiting
``backoff.delay(attempt)`` seconds of clock-port time between attempts::

    @app.telemetry("meter", interval=60, retry=3, backoff=LinearBackoff(step=1.0))

Each backoff multiplies its delay by a jitter factor drawn uniformly from ``1 ± jitter``
(default ±20 %, so many devices do not retry in lock-step) from ``rng``, a
:class:`random.Random`; pass ``jitter=0`` or a seeded ``rng`` and a test knows the delays
exactly.

A :class:`CircuitBreaker` gives a dead sensor a rest: after ``threshold`` failed cycles in a
row (retries exhausted) it *opens* and the next cycle is skipped without calling the handler;
then it is *half-open* and the next cycle is a probe — success closes it, failure opens it
again.
"""

from __future__ import annotations

import math
import random
from typing import Protocol, runtime_checkable

__all__ = [
    "BackoffStrategy",
    "CircuitBreaker",
    "ExponentialBackoff",
    "FixedBackoff",
    "LinearBackoff",
]


@runtime_checkable
class BackoffStrategy(Protocol):
    """How long to wait before retry number ``attempt`` (1-based), in seconds."""

    def delay(self, attempt: int) -> float: ...


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class _Jittered:
    """The jitter every backoff shares: a factor drawn uniformly from ``1 ± jitter``."""

    def __init__(self, jitter: float, rng: random.Random | None) -> None:
        if isinstance(jitter, bool) or not isinstance(jitter, int | float):
            raise ValueError(f"jitter must be a number, got {jitter!r}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be >= 0 and < 1, got {jitter!r}")
        self.jitter = float(jitter)
        self._rng = rng if rng is not None else random.Random()

    def delay(self, attempt: int) -> float:
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt!r}")
        raw = self._raw(attempt)
        if not self.jitter:
            return raw
        return raw * self._rng.uniform(1 - self.jitter, 1 + self.jitter)

    def _raw(self, attempt: int) -> float:
        raise NotImplementedError


class ExponentialBackoff(_Jittered):
    """``min(base · 2^(attempt−1), max_delay)``, jittered. The default backoff."""

    def __init__(
        self,
        base: float = 2.0,
        max_delay: float = 60.0,
        *,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(jitter, rng)
        self.base = _positive(base, "base")
        self.max_delay = _positive(max_delay, "max_delay")

    def _raw(self, attempt: int) -> float:
        # 2.0 ** 1100 overflows a float; the cap is reached long before.
        exponent = min(attempt - 1, 1023)
        return min(self.base * 2.0**exponent, self.max_delay)

    def __repr__(self) -> str:
        return f"ExponentialBackoff(base={self.base:g}, max_delay={self.max_delay:g})"


class LinearBackoff(_Jittered):
    """``min(step · attempt, max_delay)``, jittered."""

    def __init__(
        self,
        step: float = 2.0,
        max_delay: float = 60.0,
        *,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(jitter, rng)
        self.step = _positive(step, "step")
        self.max_delay = _positive(max_delay, "max_delay")

    def _raw(self, attempt: int) -> float:
        return min(self.step * attempt, self.max_delay)

    def __repr__(self) -> str:
        return f"LinearBackoff(step={self.step:g}, max_delay={self.max_delay:g})"


class FixedBackoff(_Jittered):
    """The same ``delay`` before every retry, jittered."""

    def __init__(
        self, delay: float = 5.0, *, jitter: float = 0.2, rng: random.Random | None = None
    ) -> None:
        super().__init__(jitter, rng)
        self.fixed = _positive(delay, "delay")

    def _raw(self, attempt: int) -> float:
        return self.fixed

    def __repr__(self) -> str:
        return f"FixedBackoff(delay={self.fixed:g})"


CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    """Stops calling a handler that keeps failing, and probes it now and then.

    ``record_failure()`` after a cycle whose retries were exhausted, ``record_success()``
    after a good one, ``should_attempt()`` before each cycle (see the module docstring for
    the states). One breaker belongs to one device: do not share an instance.
    """

    def __init__(self, threshold: int = 5) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ValueError(f"threshold must be a whole number >= 1, got {threshold!r}")
        self.threshold = threshold
        self.state = CLOSED
        self.consecutive_failures = 0

    def should_attempt(self) -> bool:
        """True when this cycle should call the handler; an open circuit skips one cycle
        and turns half-open (the next cycle is a probe)."""
        if self.state == OPEN:
            self.state = HALF_OPEN
            return False
        return True

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.state = CLOSED

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if self.state == HALF_OPEN or self.consecutive_failures >= self.threshold:
            self.state = OPEN

    def __repr__(self) -> str:
        return f"CircuitBreaker(threshold={self.threshold})"
