"""Wall-clock immunity, in process: the wall clock steps by ±1 hour or ±1 year while the
agent runs, and nothing that is *timed* notices.

A Raspberry Pi has no real-time clock; its wall clock leaps when NTP syncs. Here freezegun
plays NTP: it steps ``datetime.now()`` and ``time.time()`` in the middle of a run, while
the agent's clock port is a :class:`~agent.testing.FakeClock` that only the test moves,
exactly as in the other unit tests. Each case runs twice, without and with the step, and
both runs must agree with each other and with exact expected values:

* a 1 s telemetry device is called at fake times 0, 1, …, 10 and at no other: no cycle
  added (no catch-up burst after a forward step) and none lost (no stall after a backward
  one);
* its ``Every(seconds=3)`` publishes exactly the readings of seconds 0, 3, 6 and 9;
* the heartbeat's ``uptime_s`` is the fake clock's time at every beat: 0, 1, …, 10, never a
  year off or negative;
* retry backoff (``FixedBackoff`` and ``LinearBackoff`` without jitter) waits exactly its
  delays of clock-port time, the step landing in the middle of the first one;
* error payload timestamps (and ``details.first_seen``) *do* follow the wall clock: they
  are for people. The device fails at seconds 2 and 8; that the second report is one step
  later than the first proves the step really reached the agent's threads.

freezegun and threads: freezegun replaces the ``time`` and ``datetime`` functions in every
loaded module except those on its ignore list, ``threading`` among them, so ``threading``
keeps the real ``monotonic`` it bound at import: joins, ``Condition.wait`` and
``FakeClock.wait_for_waiters`` run on real time whatever the test does to the wall clock.
By default a faked function also answers the *real* time when one of the five innermost
frames of its caller belongs to an ignored module: a wall-clock read made shallowly under
``Thread.run`` would escape the step unseen. :func:`wall_clock` turns that inspection off
for the duration of the freeze, so every read on every thread is faked; the error
timestamps prove the step reached the device's thread.

freezegun fakes ``time.monotonic`` too, and moves it backward on a backward step. That is
harmless here because the agent reads time only through its clock port, the FakeClock,
which only ``advance`` moves (see ``docs/adr/004-time-and-waiting.md``). The test's own
waits stay bounded: ``tick=True`` keeps freezegun's time running, so ``eventually``'s
deadline comes; the wall clock steps only between two waits; and every wait on the clock
port is a ``wait_for_waiters`` with a timeout on real time.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import freezegun.api
import pytest
from freezegun import freeze_time
from freezegun.api import TickingDateTimeFactory
from test_runtime import BOUND, Running

from agent import App, Every, FixedBackoff, LinearBackoff
from agent.retry import BackoffStrategy
from agent.testing import FakeClock

START = datetime(2024, 3, 10, 12, 0, 0)  # naive: freezegun reads it as UTC
STEPS = {
    "+1h": timedelta(hours=1),
    "-1h": timedelta(hours=-1),
    "+1y": timedelta(days=365),
    "-1y": timedelta(days=-365),
}
# Real time a run may take at most: the slack allowed on wall-clock timestamps, which tick.
SLACK = timedelta(minutes=1)


@contextlib.contextmanager
def wall_clock() -> Iterator[TickingDateTimeFactory]:
    """freezegun's wall clock at :data:`START`, running (``tick``), faked on every thread.

    freezegun answers the *real* time to a call with a frame of an ignored module
    (``threading``) among its five innermost frames, so a wall-clock read made shallowly
    under ``Thread.run`` would escape it. ``call_stack_inspection_limit = 0`` (inside the
    freeze only) fakes every call; ``threading`` itself stays unpatched (its ``_time`` is
    the real ``monotonic``, bound at import), so joins and condition waits keep real time.
    """
    with freeze_time(START, tick=True) as frozen:
        limit = freezegun.api.call_stack_inspection_limit
        freezegun.api.call_stack_inspection_limit = 0
        try:
            yield frozen
        finally:  # before the freeze ends: with 0, an unfrozen fake would fail
            freezegun.api.call_stack_inspection_limit = limit


def step_wall_clock(frozen: TickingDateTimeFactory, by: timedelta) -> None:
    """Step freezegun's ticking wall clock by ``by``, as NTP would, and check it moved."""
    before = time.time()
    move_to = getattr(frozen, "move_to", None)
    if move_to is not None:  # freezegun >= 1.3
        move_to(frozen() + by)
    else:  # freezegun 1.2 (Debian 12): its ticking factory has no move_to
        frozen.time_to_freeze += by
    moved = time.time() - before
    assert abs(moved - by.total_seconds()) < SLACK.total_seconds(), (by, moved)


def advance(
    r: Running, threads: int, seconds: float, done: Callable[[], object], what: str
) -> None:
    """Once ``threads`` threads are parked on the clock, advance it; then wait for ``done``."""
    r.clock.wait_for_waiters(threads, timeout=BOUND)
    r.clock.advance(seconds)
    r.until(done, what)


def stamp(text: object) -> datetime:
    assert isinstance(text, str)
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0), text
    return moment.replace(tzinfo=None)


# -- cadence, Every, heartbeat and timestamps: ten seconds of one device --------------------


@dataclass
class TenSeconds:
    """What ten fake seconds of the app below put on the (mock) wire."""

    cadence: list[float]  # FakeClock times at which the handler ran
    published: list[int]  # "n" of the published states (Every(seconds=3) chose them)
    uptimes: list[float]  # heartbeat uptime_s, in publishing order
    error_stamps: list[datetime]  # error payload timestamps (UTC, naive)
    first_seen: list[datetime]  # their details.first_seen


THREADS = 2  # the scheduler thread and the device's thread park on the clock
STEP_AFTER = 5  # fake seconds before the wall clock steps
FAILING = (2.0, 8.0)  # a cycle fails at these fake times: one report before, one after


def run_ten_seconds(step: timedelta | None) -> TenSeconds:
    """Run a 1 s telemetry device with ``Every(seconds=3)`` and a 1 s heartbeat for ten
    fake seconds, stepping the wall clock after five (while every thread waits) if asked.

    One telemetry device only: the runtime spreads the phases of many devices (more than
    DEVICES_PER_SLOT) over their interval; this one keeps phase 0, so its cycles fall on whole
    seconds.
    """
    app = App("demo", heartbeat_interval=1)
    cadence: list[float] = []

    @app.telemetry("t", interval=1, publish=Every(seconds=3))
    def t(clock: FakeClock) -> dict:
        now = clock.now()
        cadence.append(now)
        if now in FAILING:  # each a fresh failure after a good cycle: reported at once
            raise ValueError("garbled frame")
        return {"n": int(now)}

    with wall_clock() as frozen, Running(app) as r:
        r.until(lambda: cadence, "the reading at start")
        for second in range(1, 11):
            if second == STEP_AFTER + 1 and step is not None:
                r.clock.wait_for_waiters(THREADS, timeout=BOUND)  # all wait: step now
                step_wall_clock(frozen, step)
            # ">=": a burst must reach the exact comparison below, not time out here
            advance(r, THREADS, 1, lambda s=second: len(cadence) >= s + 1, f"second {second}")
        r.clock.wait_for_waiters(THREADS, timeout=BOUND)  # the last cycle is published
    beats = [p for p, _r, _q in r.mqtt.get_messages_for("demo/status") if p.startswith("{")]
    errors = r.states("demo/t/error")
    return TenSeconds(
        cadence=cadence,
        published=[s["n"] for s in r.states("demo/t/state")],
        uptimes=[json.loads(b)["uptime_s"] for b in beats],
        error_stamps=[stamp(p["timestamp"]) for p in errors],
        first_seen=[stamp(p["details"]["first_seen"]) for p in errors],
    )


@pytest.mark.parametrize("step", list(STEPS.values()), ids=list(STEPS))
def test_a_wall_clock_step_changes_no_cadence_reading_or_uptime_only_timestamps(
    step: timedelta,
) -> None:
    baseline = run_ten_seconds(None)
    stepped = run_ten_seconds(step)

    seconds = [float(s) for s in range(11)]
    for run in (baseline, stepped):
        assert run.cadence == seconds  # every second once: no burst, no stall
        assert run.published == [0, 3, 6, 9]  # Every(seconds=3) on the clock port
        # the beat at connect, the one once every device is up, then one a second
        assert run.uptimes == [0.0, *seconds]
        assert len(run.error_stamps) == 2, run.error_stamps
        for seen, stamped in zip(run.first_seen, run.error_stamps, strict=True):
            assert abs(stamped - seen) < SLACK  # each report starts a streak of its own
        assert abs(run.error_stamps[0] - START) < SLACK
    assert stepped.cadence == baseline.cadence
    assert stepped.published == baseline.published
    assert stepped.uptimes == baseline.uptimes

    # The timestamps are for people: they follow the wall clock, step included.
    before, after = stepped.error_stamps
    assert abs((after - before) - step) < SLACK, (before, after)
    before, after = baseline.error_stamps
    assert timedelta(0) <= after - before < SLACK, (before, after)


# -- retry backoff -----------------------------------------------------------------------------

BACKOFFS: dict[str, tuple[Callable[[], BackoffStrategy], list[float]]] = {
    # (the backoff, the FakeClock times of the four attempts of one cycle)
    "fixed-2s": (lambda: FixedBackoff(delay=2, jitter=0), [0.0, 2.0, 4.0, 6.0]),
    "linear-2s": (lambda: LinearBackoff(step=2, jitter=0), [0.0, 2.0, 6.0, 12.0]),
}


def run_retries(backoff: BackoffStrategy, step: timedelta | None) -> tuple[list[float], list]:
    """One cycle that fails three times and then succeeds; the wall clock steps (if asked)
    while the first backoff runs. Time moves from deadline to deadline, so each attempt runs
    at exactly the fake time its backoff chose. Returns the attempts' times and the states."""
    app = App("demo")
    attempts: list[float] = []

    @app.telemetry("t", interval=1000, retry=3, backoff=backoff)
    def t(clock: FakeClock) -> dict:
        attempts.append(clock.now())
        if len(attempts) < 4:
            raise TimeoutError("bus busy")  # an OSError: retried by default
        return {"attempts": len(attempts)}

    with wall_clock() as frozen, Running(app) as r:
        r.until(lambda: attempts, "the first attempt")
        r.clock.wait_for_waiters(2, timeout=BOUND)  # the scheduler, the device in its backoff
        if step is not None:
            step_wall_clock(frozen, step)
        while len(attempts) < 4 and r.clock.now() < 100:
            r.clock.wait_for_waiters(2, timeout=BOUND)
            due = r.clock.next_deadline
            assert due is not None
            r.clock.advance(due - r.clock.now())
        r.until(lambda: r.states("demo/t/state"), "the reading")
        r.clock.wait_for_waiters(2, timeout=BOUND)
    return attempts, r.states("demo/t/state")


@pytest.mark.parametrize("step", list(STEPS.values()), ids=list(STEPS))
@pytest.mark.parametrize("kind", list(BACKOFFS))
def test_a_wall_clock_step_during_a_backoff_changes_no_delay(kind: str, step: timedelta) -> None:
    make, expected = BACKOFFS[kind]
    baseline = run_retries(make(), None)
    stepped = run_retries(make(), step)
    assert baseline == (expected, [{"attempts": 4}])
    assert stepped == baseline
