"""Publish strategies, table-driven over their edge cases, plus hypothesis for OnChange."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.strategies import AllStrategy, AnyStrategy, Every, OnChange, PublishStrategy
from agent.testing import FakeClock


def run(strategy: PublishStrategy, readings: list[dict], clock: FakeClock | None = None,
        step: float = 1.0) -> list[int]:  # fmt: skip
    """Feed ``readings`` as the framework does (first always published, previous = last
    published); return the indexes published. The clock moves ``step`` before each."""
    clock = clock or FakeClock()
    strategy._bind(clock)
    published: list[int] = []
    last: dict | None = None
    for i, reading in enumerate(readings):
        clock.advance(step)
        if i == 0 or strategy.should_publish(reading, last):
            published.append(i)
            last = reading
            strategy.on_published()
    return published


# -- Every --------------------------------------------------------------------------------


def test_every_n_publishes_every_nth_reading() -> None:
    assert run(Every(n=3), [{"v": i} for i in range(10)]) == [0, 3, 6, 9]


def test_every_seconds_uses_the_clock_port_at_most_once_per_period() -> None:
    # readings every 1 s, period 2.5 s: 0, then 3 (2.5 s after 0 is 2.5 → next reading 3)
    assert run(Every(seconds=2.5), [{"v": i} for i in range(10)]) == [0, 3, 6, 9]
    assert run(Every(seconds=1), [{"v": 1}] * 4) == [0, 1, 2, 3]  # == the period publishes


def test_every_seconds_unbound_never_holds_a_reading_back() -> None:
    every = Every(seconds=60)
    assert every.should_publish({}, {})


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"seconds": 1, "n": 1}, {"seconds": 0}, {"seconds": -1}, {"n": 0}, {"n": 1.5},
     {"n": True}, {"seconds": float("nan")}, {"seconds": float("inf")}, {"seconds": "5"}],
)  # fmt: skip
def test_every_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="Every"):
        Every(**kwargs)


# -- OnChange -----------------------------------------------------------------------------

NAN = float("nan")


@pytest.mark.parametrize(
    ("strategy", "previous", "current", "publish"),
    [
        (OnChange(), {"a": 1}, {"a": 1}, False),
        (OnChange(), {"a": 1}, {"a": 2}, True),
        (OnChange(), {"a": 1}, {"a": 1, "b": 2}, True),
        (OnChange(threshold=0.5), {"t": 20.0}, {"t": 20.5}, False),  # not strictly more
        (OnChange(threshold=0.5), {"t": 20.0}, {"t": 20.51}, True),
        (OnChange(threshold=0.5), {"t": 20.0}, {"t": 19.4}, True),
        (OnChange(threshold=0.5), {"s": "on"}, {"s": "off"}, True),  # non-numeric: !=
        (OnChange(threshold=5), {"b": True}, {"b": False}, True),  # bool is not a number
        (OnChange(threshold=0.5), {"x": {"t": 1.0}}, {"x": {"t": 1.2}}, False),  # nested leaf
        (OnChange(threshold=0.5), {"x": {"t": 1.0}}, {"x": {"t": 1.0, "u": 1}}, True),
        (OnChange(threshold=0.5), {"x": {"t": 1.0}}, {"x": 1.0}, True),  # dict became number
        (OnChange(threshold=0.5), {"t": 1.0}, {"t": NAN}, True),  # number → NaN
        (OnChange(threshold=0.5), {"t": NAN}, {"t": 1.0}, True),  # NaN → number
        (OnChange(threshold=0.5), {"t": NAN}, {"t": NAN}, False),
        (OnChange(), {"t": NAN}, {"t": NAN}, False),
        (OnChange(threshold=0), {"t": 1}, {"t": 1.0}, False),
        (OnChange(threshold=0), {"t": 1}, {"t": 1.000001}, True),
        (OnChange(threshold={"x.t": 1.0}), {"x": {"t": 1.0}, "h": 50}, {"x": {"t": 1.9}, "h": 50},
         False),
        (OnChange(threshold={"x.t": 1.0}), {"x": {"t": 1.0}, "h": 50}, {"x": {"t": 1.0}, "h": 51},
         True),  # "h" has no dead-band: exact
        (OnChange(threshold={"t": 1.0}), {"t": 1, "l": [1]}, {"t": 1, "l": [2]}, True),
    ],
)  # fmt: skip
def test_on_change_table(strategy: OnChange, previous: dict, current: dict, publish: bool) -> None:
    assert strategy.should_publish(current, previous) is publish


def test_dead_band_is_measured_against_the_last_published_value() -> None:
    # +0.3 per reading under a 0.5 dead-band: a slow drift must still publish.
    readings = [{"t": 20.0 + 0.3 * i} for i in range(8)]
    assert run(OnChange(threshold=0.5), readings) == [0, 2, 4, 6]


@pytest.mark.parametrize(
    "threshold", [-0.1, True, NAN, "1", {"a": -1}, {"a": True}, {"": 1.0}, {3: 1.0}]
)
def test_on_change_rejects_bad_thresholds(threshold: object) -> None:
    with pytest.raises(ValueError):
        OnChange(threshold=threshold)  # type: ignore[arg-type]


numbers = st.floats(allow_nan=True, allow_infinity=False, width=32)


@given(numbers, numbers, st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_on_change_threshold_property(before: float, now: float, band: float) -> None:
    decision = OnChange(threshold=band).should_publish({"v": now}, {"v": before})
    if math.isnan(before) or math.isnan(now):
        assert decision is (math.isnan(before) != math.isnan(now))
    else:
        assert decision is (abs(now - before) > band)


# -- composition ---------------------------------------------------------------------------


class Recorder:
    """A stateful child that says what it is told and records the calls it gets."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked = 0
        self.published = 0
        self.bound = False

    def _bind(self, clock: object) -> None:
        self.bound = True

    def should_publish(self, current: dict, previous: dict | None) -> bool:
        self.asked += 1
        return self.answer

    def on_published(self) -> None:
        self.published += 1


@pytest.mark.parametrize(("combine", "expected"), [(AnyStrategy, True), (AllStrategy, False)])
def test_composites_ask_every_child_and_tell_every_child(combine: type, expected: bool) -> None:
    yes, no = Recorder(True), Recorder(False)
    strategy = combine(yes, no) if combine is AnyStrategy else combine(no, yes)
    strategy._bind(FakeClock())
    assert strategy.should_publish({}, {}) is expected
    strategy.on_published()
    assert (yes.asked, no.asked, yes.published, no.published) == (1, 1, 1, 1)
    assert yes.bound and no.bound


def test_operators_build_flat_composites_and_every_n_keeps_counting() -> None:
    strategy = OnChange(threshold=0.5) | Every(n=3) | Every(seconds=100)
    assert isinstance(strategy, AnyStrategy) and len(strategy.children) == 3
    # the value never changes: only Every(n=3) publishes, and it counts every reading
    assert run(strategy, [{"t": 1.0}] * 7) == [0, 3, 6]
    both = OnChange() & Every(n=2)
    assert isinstance(both, AllStrategy)
    assert run(both, [{"t": i} for i in range(6)]) == [0, 2, 4]


def test_a_composite_refuses_what_is_not_a_strategy() -> None:
    with pytest.raises(TypeError):
        OnChange() | 5  # type: ignore[operator]
    with pytest.raises(ValueError):
        AnyStrategy()
