"""Publish strategies: which telemetry readings are worth sending.

A telemetry handler may be polled far more often than its value changes: a temperature read
every 10 s that moves by 0.01 °C, a meter that stands still all night. A strategy decides,
reading by reading, whether to publish::

    @app.telemetry("temp", interval=10, publish=OnChange(threshold=0.2) | Every(seconds=300))

* ``Every(seconds=S)`` — at most once per S seconds (the clock port's monotonic time, so a
  wall-clock jump changes nothing); ``Every(n=N)`` — every Nth reading.
* ``OnChange()`` — when anything differs; ``OnChange(threshold=t)`` — when a number moved by
  *more than* ``t`` (a dead-band), ``OnChange(threshold={"sensor.temp": 0.5})`` per field.
* ``a | b`` publishes when either says so, ``a & b`` when both do.

The framework always publishes the first reading of a run, then asks the strategy with the
last *published* reading as ``previous`` — so a dead-band is measured against what consumers
last saw, and a slow drift eventually publishes. After each publish it calls
``on_published()``.

Write your own by implementing :class:`PublishStrategy`, or subclass :class:`StrategyBase`
to get ``|`` and ``&``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from agent.clock import ClockPort

__all__ = ["AllStrategy", "AnyStrategy", "Every", "OnChange", "PublishStrategy", "StrategyBase"]


@runtime_checkable
class PublishStrategy(Protocol):
    """Decides whether a telemetry reading is published.

    ``_bind(clock)`` is called once before the first reading; ``should_publish(current,
    previous)`` for every reading after the first (``previous`` is the last published one);
    ``on_published()`` after each publish.
    """

    def _bind(self, clock: ClockPort) -> None: ...

    def should_publish(
        self, current: dict[str, object], previous: dict[str, object] | None
    ) -> bool: ...

    def on_published(self) -> None: ...


class StrategyBase:
    """Base of the shipped strategies: ``|`` and ``&`` composition, no-op hooks."""

    def __or__(self, other: PublishStrategy) -> AnyStrategy:
        return AnyStrategy(self, other)

    def __and__(self, other: PublishStrategy) -> AllStrategy:
        return AllStrategy(self, other)

    def _bind(self, clock: ClockPort) -> None:
        """Receive the clock; only time-based strategies need it."""

    def should_publish(
        self, current: dict[str, object], previous: dict[str, object] | None
    ) -> bool:
        raise NotImplementedError

    def on_published(self) -> None:
        """Reset after a publish; only stateful strategies need it."""


def _positive_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class Every(StrategyBase):
    """Publish at most once per ``seconds`` of clock time, or every ``n``-th reading.

    Exactly one of the two, positive; anything else is a ``ValueError``.
    """

    def __init__(self, *, seconds: float | None = None, n: int | None = None) -> None:
        if (seconds is None) == (n is None):
            raise ValueError("Every() takes exactly one of seconds= or n=")
        self.seconds = None if seconds is None else _positive_number(seconds, "Every(seconds=)")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"Every(n=) must be a whole number >= 1, got {n!r}")
        self.n = n
        self._clock: ClockPort | None = None
        self._last: float | None = None
        self._count = 0

    def _bind(self, clock: ClockPort) -> None:
        self._clock = clock
        self._last = clock.now()

    def should_publish(
        self, current: dict[str, object], previous: dict[str, object] | None
    ) -> bool:
        if self.n is not None:
            self._count += 1
            return self._count >= self.n
        if self._clock is None or self._last is None:
            return True  # not bound (used outside the framework): never hold a reading back
        assert self.seconds is not None
        return self._clock.now() - self._last >= self.seconds

    def on_published(self) -> None:
        self._count = 0
        if self._clock is not None:
            self._last = self._clock.now()

    def __repr__(self) -> str:
        return f"Every(seconds={self.seconds:g})" if self.n is None else f"Every(n={self.n})"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_threshold(value: object, what: str) -> float:
    if not _is_number(value):
        raise ValueError(f"{what} must be a number, got {value!r}")
    assert isinstance(value, int | float)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return float(value)


class OnChange(StrategyBase):
    """Publish when the reading differs from the last published one.

    * ``threshold=None`` — any difference (``!=``).
    * ``threshold=t`` — every numeric leaf (int or float, not bool) must move by strictly
      more than ``t`` to count; other leaves compare with ``!=``.
    * ``threshold={"a.b": t, ...}`` — a dead-band per leaf, by dot path; leaves not listed
      compare exactly.

    Nested dicts are compared leaf by leaf; a key added or removed at any level always
    publishes. NaN is treated as a value of its own: a number becoming NaN or NaN becoming a
    number is a change, NaN staying NaN is not.
    """

    def __init__(self, *, threshold: float | Mapping[str, float] | None = None) -> None:
        self._default: float | None = None
        self._per_field: dict[str, float] = {}
        if isinstance(threshold, Mapping):
            for path, value in threshold.items():
                if not isinstance(path, str) or not path:
                    raise ValueError(f"OnChange threshold keys are dot paths, got {path!r}")
                self._per_field[path] = _check_threshold(value, f"threshold for {path!r}")
        elif threshold is not None:
            self._default = _check_threshold(threshold, "OnChange(threshold=)")
        self.threshold = threshold

    def should_publish(
        self, current: dict[str, object], previous: dict[str, object] | None
    ) -> bool:
        if previous is None:
            return True
        return self._changed(current, previous, "")

    def _changed(
        self, current: Mapping[str, object], previous: Mapping[str, object], at: str
    ) -> bool:
        if current.keys() != previous.keys():
            return True
        for key, now in current.items():
            before = previous[key]
            path = f"{at}{key}"
            if isinstance(now, Mapping) and isinstance(before, Mapping):
                if self._changed(now, before, f"{path}."):
                    return True
            elif self._leaf_changed(now, before, path):
                return True
        return False

    def _leaf_changed(self, now: object, before: object, path: str) -> bool:
        band = self._per_field.get(path, self._default)
        if _is_number(now) and _is_number(before):
            assert isinstance(now, int | float) and isinstance(before, int | float)
            if math.isnan(now) or math.isnan(before):
                return math.isnan(now) != math.isnan(before)
            if band is not None:
                return abs(now - before) > band
        return bool(now != before)

    def __repr__(self) -> str:
        return "OnChange()" if self.threshold is None else f"OnChange(threshold={self.threshold!r})"


class _Composite(StrategyBase):
    _symbol = "?"

    def __init__(self, *children: PublishStrategy) -> None:
        flat: list[PublishStrategy] = []
        for child in children:
            if not isinstance(child, PublishStrategy):
                raise TypeError(f"not a publish strategy: {child!r}")
            flat.extend(child.children if type(child) is type(self) else [child])  # type: ignore[attr-defined]
        if not flat:
            raise ValueError(f"{type(self).__name__} needs at least one strategy")
        self.children: tuple[PublishStrategy, ...] = tuple(flat)

    def _bind(self, clock: ClockPort) -> None:
        for child in self.children:
            child._bind(clock)

    def _votes(self, current: dict[str, object], previous: dict[str, object] | None) -> list[bool]:
        # Every child is asked, always: a stateful one (Every(n=)) must count every reading.
        return [child.should_publish(current, previous) for child in self.children]

    def on_published(self) -> None:
        for child in self.children:
            child.on_published()

    def __repr__(self) -> str:
        return f" {self._symbol} ".join(repr(c) for c in self.children)


class AnyStrategy(_Composite):
    """Publishes when any of its strategies says so (``a | b``)."""

    _symbol = "|"

    def should_publish(
        self, current: dict[str, object], previous: dict[str, object] | None
    ) -> bool:
        return any(self._votes(current, previous))


class AllStrategy(_Composite):
    """Publishes when all of its strategies say so (``a & b``)."""

    _symbol = "&"

    def should_publish(
        self, current: dict[str, object], previous: dict[str, object] | None
    ) -> bool:
        return all(self._votes(current, previous))
