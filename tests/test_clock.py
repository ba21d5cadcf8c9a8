"""agent.clock (SystemClock, wait, utc_now) and agent.testing.FakeClock, with real threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
from freezegun import freeze_time

from agent.clock import (
    FALLBACK_SLICE,
    ClockPort,
    SystemClock,
    WaitingClock,
    deadline_passed,
    utc_now,
    wait,
)
from agent.testing import FakeClock

BOUND = 5.0  # real seconds any thread gets to finish what it was released to do


def start(target: Callable[[], object]) -> tuple[threading.Thread, threading.Event]:
    """Run ``target`` in a daemon thread; the returned event is set when it has returned."""
    done = threading.Event()

    def run() -> None:
        target()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def finished(thread: threading.Thread, done: threading.Event) -> bool:
    ok = done.wait(BOUND)
    thread.join(BOUND)
    return ok and not thread.is_alive()


# -- SystemClock and helpers ---------------------------------------------------------------


def test_system_clock_satisfies_both_protocols() -> None:
    clock = SystemClock()
    assert isinstance(clock, ClockPort)
    assert isinstance(clock, WaitingClock)


def test_system_clock_now_is_monotonic() -> None:
    clock = SystemClock()
    readings = [clock.now() for _ in range(1000)]
    assert readings == sorted(readings)


def test_system_clock_sleep_and_wait_return() -> None:
    clock = SystemClock()
    begin = clock.now()
    clock.sleep(0)
    clock.sleep(-1)  # negative counts as zero rather than raising like time.sleep
    clock.sleep(0.01)
    event = threading.Event()
    clock.wait(event, 0.01)  # times out
    assert not event.is_set()
    event.set()
    clock.wait(event, None)  # already set: returns at once
    clock.wait(event, 1000)
    assert clock.now() - begin >= 0.02
    assert clock.now() - begin < BOUND


def test_system_clock_wait_is_woken_by_event() -> None:
    clock = SystemClock()
    event = threading.Event()
    thread, done = start(lambda: clock.wait(event, None))
    assert not done.wait(0.05)  # still blocked: no time limit, no event
    event.set()
    assert finished(thread, done)


def test_deadline_passed() -> None:
    clock = FakeClock(100.0)
    assert not deadline_passed(clock, 100.5)
    clock.advance(0.5)
    assert deadline_passed(clock, 100.5)
    assert deadline_passed(clock, 50.0)


def test_utc_now_is_aware_utc() -> None:
    now = utc_now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timezone.utc.utcoffset(None)


@freeze_time("2026-11-24 05:00:00")
def test_utc_now_reads_the_wall_clock() -> None:
    assert utc_now() == datetime(2026, 11, 24, 5, 0, tzinfo=timezone.utc)
    assert utc_now().isoformat() == "2026-11-24T05:00:00+00:00"


# -- wait(): delegation and the fallback for two-method clocks ----------------------------


class TwoMethodClock:
    """A ClockPort with only now() and sleep(); sleeping moves its time instantly."""

    def __init__(self, on_sleep: Callable[[int], None] | None = None) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self._on_sleep = on_sleep

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        if self._on_sleep is not None:
            self._on_sleep(len(self.sleeps))


def test_two_method_clock_is_a_clock_port_but_not_a_waiting_clock() -> None:
    assert isinstance(TwoMethodClock(), ClockPort)
    assert not isinstance(TwoMethodClock(), WaitingClock)


def test_wait_fallback_sleeps_in_slices_until_the_timeout() -> None:
    clock = TwoMethodClock()
    event = threading.Event()
    wait(clock, event, 1.0)
    assert not event.is_set()
    assert clock.now() == pytest.approx(1.0)
    assert all(0 < s <= FALLBACK_SLICE + 1e-12 for s in clock.sleeps)
    assert len(clock.sleeps) == pytest.approx(1.0 / FALLBACK_SLICE, abs=1)


def test_wait_fallback_last_slice_is_the_remainder() -> None:
    clock = TwoMethodClock()
    wait(clock, threading.Event(), 0.12)
    assert clock.sleeps[:2] == [FALLBACK_SLICE, FALLBACK_SLICE]
    assert clock.sleeps[2] == pytest.approx(0.02)
    assert len(clock.sleeps) == 3


def test_wait_fallback_returns_once_the_event_is_set() -> None:
    event = threading.Event()
    clock = TwoMethodClock(on_sleep=lambda n: event.set() if n == 3 else None)
    wait(clock, event, 100.0)
    assert len(clock.sleeps) == 3
    assert clock.now() == pytest.approx(3 * FALLBACK_SLICE)


def test_wait_fallback_with_event_already_set_does_not_sleep() -> None:
    clock = TwoMethodClock()
    event = threading.Event()
    event.set()
    wait(clock, event, 100.0)
    assert clock.sleeps == []


@pytest.mark.parametrize("timeout", [0.0, -1.0])
def test_wait_fallback_with_no_time_left_returns_at_once(timeout: float) -> None:
    clock = TwoMethodClock()
    wait(clock, threading.Event(), timeout)
    assert clock.sleeps == []


def test_wait_fallback_without_timeout_waits_for_the_event_only() -> None:
    clock = TwoMethodClock()
    event = threading.Event()
    thread, done = start(lambda: wait(clock, event, None))
    assert not done.wait(0.05)
    event.set()
    assert finished(thread, done)
    assert clock.sleeps == []  # the clock played no part


def test_wait_uses_the_clocks_own_wait() -> None:
    calls: list[tuple[threading.Event, float | None]] = []

    class Recording(TwoMethodClock):
        def wait(self, event: threading.Event, timeout: float | None) -> None:
            calls.append((event, timeout))

    clock = Recording()
    event = threading.Event()
    wait(clock, event, 2.5)
    wait(clock, event, None)
    assert calls == [(event, 2.5), (event, None)]
    assert clock.sleeps == []


# -- FakeClock -----------------------------------------------------------------------------


def test_fake_clock_is_a_waiting_clock_port() -> None:
    assert isinstance(FakeClock(), ClockPort)
    assert isinstance(FakeClock(), WaitingClock)


def test_fake_clock_time_moves_only_by_advance() -> None:
    clock = FakeClock(start=5.0)
    assert clock.now() == 5.0
    assert clock.now() == 5.0
    clock.advance(2.5)
    assert clock.now() == 7.5
    clock.advance(0)
    assert clock.now() == 7.5
    assert "7.5" in repr(clock)


@pytest.mark.parametrize("bad", [-0.001, float("nan"), float("inf"), "1"])
def test_fake_clock_advance_rejects_bad_values(bad: object) -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="advance"):
        clock.advance(bad)  # type: ignore[arg-type]
    assert clock.now() == 0.0


def test_fake_clock_sleep_zero_returns_at_once() -> None:
    clock = FakeClock()
    clock.sleep(0)  # no other thread exists to advance time: it must not block
    clock.sleep(-3)
    assert clock.waiters == 0


def test_fake_clock_sleeper_released_by_advance_10_not_9_99() -> None:
    clock = FakeClock()
    thread, done = start(lambda: clock.sleep(10))
    clock.wait_for_waiters(1)
    clock.advance(9.99)
    # advance() releases due sleepers synchronously, so this count is exact right now.
    assert clock.waiters == 1
    assert not done.is_set()
    clock.advance(0.01)
    assert finished(thread, done)
    assert clock.waiters == 0


def test_fake_clock_sleeper_released_by_one_big_advance() -> None:
    clock = FakeClock(start=100.0)
    thread, done = start(lambda: clock.sleep(10))
    clock.wait_for_waiters(1)
    clock.advance(10)
    assert clock.waiters == 0
    assert finished(thread, done)


def test_fake_clock_advance_wakes_only_the_due_sleepers() -> None:
    clock = FakeClock()
    short_thread, short_done = start(lambda: clock.sleep(1))
    long_thread, long_done = start(lambda: clock.sleep(3))
    clock.wait_for_waiters(2)
    assert clock.next_deadline == 1.0
    clock.advance(2)
    assert finished(short_thread, short_done)
    assert clock.waiters == 1
    assert not long_done.is_set()
    assert clock.next_deadline == 3.0
    clock.advance(1)
    assert finished(long_thread, long_done)
    assert clock.next_deadline is None


def test_fake_clock_wait_woken_by_its_event_without_time_moving() -> None:
    clock = FakeClock()
    event = threading.Event()
    thread, done = start(lambda: clock.wait(event, 100))
    clock.wait_for_waiters(1)
    event.set()
    assert finished(thread, done)
    assert clock.now() == 0.0
    assert clock.waiters == 0


def test_fake_clock_wait_times_out_on_advance_and_sets_the_event() -> None:
    clock = FakeClock()
    event = threading.Event()
    thread, done = start(lambda: clock.wait(event, 30))
    clock.wait_for_waiters(1)
    clock.advance(29.5)
    assert clock.waiters == 1
    assert not event.is_set()
    clock.advance(0.5)
    assert event.is_set()  # the clock woke the waiter through its own event
    assert finished(thread, done)


def test_fake_clock_wait_without_timeout_ignores_time() -> None:
    clock = FakeClock()
    event = threading.Event()
    thread, done = start(lambda: clock.wait(event, None))
    clock.wait_for_waiters(1)
    assert clock.next_deadline is None
    clock.advance(1e9)
    assert clock.waiters == 1
    assert not event.is_set()
    event.set()
    assert finished(thread, done)


def test_fake_clock_wait_returns_at_once_when_set_or_no_time_left() -> None:
    clock = FakeClock()
    event = threading.Event()
    clock.wait(event, 0)
    clock.wait(event, -1)
    assert not event.is_set()  # no time passed: nothing to wake
    event.set()
    clock.wait(event, None)
    clock.wait(event, 10)
    assert clock.waiters == 0


def test_framework_wait_drives_fake_clock_without_polling() -> None:
    clock = FakeClock()
    event = threading.Event()
    thread, done = start(lambda: wait(clock, event, 5))
    clock.wait_for_waiters(1)
    clock.advance(5)
    assert finished(thread, done)


def test_wait_for_waiters_times_out_with_a_clear_message() -> None:
    clock = FakeClock(start=3.0)
    with pytest.raises(AssertionError, match=r"at least 1 thread.*but 0 are.*fake time 3\.0"):
        clock.wait_for_waiters(1, timeout=0.05)


def test_wait_for_waiters_counts_sleepers_and_waiters() -> None:
    clock = FakeClock()
    events = [threading.Event() for _ in range(3)]
    started = [start(lambda e=e: clock.wait(e, None)) for e in events]
    started.append(start(lambda: clock.sleep(1)))
    clock.wait_for_waiters(4)
    assert clock.waiters == 4
    for e in events:
        e.set()
    clock.advance(1)
    assert all(finished(t, d) for t, d in started)
    assert clock.waiters == 0


def test_fake_clock_drives_a_periodic_loop_step_by_step() -> None:
    clock = FakeClock()
    ticks: list[float] = []
    stop = threading.Event()

    def loop() -> None:
        # The shape of a scheduler: wait with a private event, re-check, act, repeat.
        while not stop.is_set():
            woke = threading.Event()
            wait(clock, woke, 60)
            if not stop.is_set():
                ticks.append(clock.now())

    thread, done = start(loop)
    for _ in range(5):
        clock.wait_for_waiters(1)
        clock.advance(60)
    clock.wait_for_waiters(1)
    stop.set()
    clock.advance(60)
    assert finished(thread, done)
    assert ticks == [60.0, 120.0, 180.0, 240.0, 300.0]


def test_fake_clock_many_threads() -> None:
    clock = FakeClock()
    n = 20
    started = [start(lambda i=i: clock.sleep(i + 1)) for i in range(n)]
    clock.wait_for_waiters(n)
    for remaining in range(n, 0, -1):
        assert clock.waiters == remaining
        clock.advance(1)
    assert all(finished(t, d) for t, d in started)
    assert clock.waiters == 0


def test_a_waiter_whose_event_is_set_is_not_counted_as_waiting() -> None:
    """Woken by its event, a thread is about to run and will wait again with a deadline of
    the time it reads then: counting it would let a test advance time in between."""
    clock = FakeClock()
    event = threading.Event()
    done = threading.Event()

    def waiter() -> None:
        clock.wait(event, 10.0)
        done.wait(BOUND)

    thread = threading.Thread(target=waiter, name="waiter")
    thread.start()
    clock.wait_for_waiters(1, timeout=BOUND)
    assert clock.waiters == 1
    with clock._cond:  # hold the clock: the woken thread cannot unpark itself yet
        event.set()
        assert clock._count() == 0
    done.set()
    thread.join(BOUND)
    assert clock.waiters == 0
