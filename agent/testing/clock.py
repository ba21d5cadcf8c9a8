"""A fake monotonic clock that tests move by hand, for code that runs in real threads.

The agent's threads wait through :func:`agent.clock.wait` and ``clock.sleep``. Given a
:class:`FakeClock`, those calls park the threads until the test calls :meth:`FakeClock.advance`,
so a test of "publish every 60 s" takes milliseconds and never races the real clock::

    clock = FakeClock()
    app_thread.start()                  # its scheduler parks in clock.wait(...)
    clock.wait_for_waiters(1)           # be sure it is parked before moving time
    clock.advance(60)                   # wakes it; it runs one cycle and parks again

``advance`` is exact: it moves time from deadline to deadline in order, wakes what falls due
at each one, and lets the threads it woke — and the threads *they* woke, a device thread
handed a tick by the scheduler — finish and wait on the clock again before time moves on.
So ``advance(10)`` on a 1 s telemetry runs exactly ten cycles, a retry's backoff ends at its
exact instant, and a device that sleeps 22 s from t=22 wakes at exactly t=44. It returns
when everything it woke is waiting on the clock (or its inbox) again, or has ended. A thread
that was busy before ``advance`` began (a test holding a handler on an event) is not waited
for; a woken thread that does not settle within ``settle`` real seconds is an error naming
it.

The agent's threads never poll: sleepers wait on a :class:`threading.Condition` that
``advance`` notifies, and waiters block on their own event, which ``advance`` sets when their
deadline has passed (the contract of :func:`agent.clock.wait` allows a clock to do that).
Only ``advance`` itself, while it lets woken threads settle, looks every 10 ms for one that
has ended (a thread's end notifies nobody).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field


def _real_now() -> float:
    # Not time.monotonic: freezegun patches that, and a frozen clock would make a bound
    # that should fail a stuck test wait forever instead.
    return time.clock_gettime(time.CLOCK_MONOTONIC)


__all__ = ["FakeClock"]

_DEATH_CHECK = 0.01  # real seconds between looks for woken threads that have ended


@dataclass(eq=False)
class _Parked:
    """One thread blocked in the clock: a sleeper (no event) or a waiter (its event)."""

    deadline: float | None
    event: threading.Event | None = None
    released: bool = field(default=False)
    thread: threading.Thread = field(default_factory=threading.current_thread)

    @property
    def waking(self) -> bool:
        """Released, or its event set by someone: its thread is about to run."""
        return self.released or (self.event is not None and self.event.is_set())


class FakeClock:
    """Deterministic :class:`agent.clock.ClockPort` (with ``wait``) for tests. Thread-safe.

    Time starts at ``start`` and moves only through :meth:`advance`. A deadline counts as
    reached when fake time is equal to it or later: a thread sleeping 10 s is released by
    ``advance(10)`` and not by ``advance(9.99)``.
    """

    def __init__(self, start: float = 0.0, *, settle: float = 5.0) -> None:
        self._now = float(start)
        self._cond = threading.Condition()
        self._parked: list[_Parked] = []
        self._busy: set[threading.Thread] = set()  # woke from the clock, not parked again
        self._ignored: set[threading.Thread] = set()  # busy before advance() began
        self.settle = settle  # real seconds a woken thread has to wait on the clock again

    # -- ClockPort ----------------------------------------------------------------------

    def now(self) -> float:
        """Return the current fake time."""
        with self._cond:
            return self._now

    def sleep(self, seconds: float) -> None:
        """Block until another thread advances fake time by ``seconds`` from now.

        ``sleep(0)`` (or less) returns at once, like :func:`time.sleep` would.
        """
        with self._cond:
            if not seconds > 0:
                return
            me = _Parked(deadline=self._now + seconds)
            self._park(me)
            try:
                # The predicate is ours alone: advance() flips it under this same lock.
                self._cond.wait_for(lambda: me.released)
            finally:
                self._unpark(me)

    def wait(self, event: threading.Event, timeout: float | None) -> None:
        """Block until ``event`` is set or fake time passes now + ``timeout``.

        When the time is up, the clock *sets* ``event`` to wake the waiter; the event
        belongs to the waiter (see :func:`agent.clock.wait`). ``timeout=None`` waits for the
        event alone; ``timeout <= 0`` returns at once.
        """
        with self._cond:
            if event.is_set():
                return
            if timeout is not None and not timeout > 0:
                return
            me = _Parked(
                deadline=None if timeout is None else self._now + timeout,
                event=event,
            )
            self._park(me)
        try:
            # Block outside the lock so advance() and other threads can run; this is a real,
            # non-polling wait: only event.set() ends it, by the test or by advance().
            event.wait()
        finally:
            with self._cond:
                self._unpark(me)

    # -- driving time -------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move fake time forward by ``seconds`` (>= 0), exactly (see the module docstring).

        Raises :class:`AssertionError` when a thread it woke has not waited on the clock again
        (nor ended) within :attr:`settle` real seconds: it is stuck outside the clock.
        """
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"FakeClock.advance needs a finite number >= 0, got {seconds!r}")
        with self._cond:
            target = self._now + seconds
            self._ignored = set(self._busy)
            while True:
                self._settle_locked()
                due = [
                    p.deadline
                    for p in self._parked
                    if not p.released and p.deadline is not None and p.deadline <= target
                ]
                if not due:
                    break
                self._now = max(self._now, min(due))
                self._release_due_locked()
            self._now = target
            self._settle_locked()

    def wait_until_parked(self, threads: list[threading.Thread]) -> None:
        """Wait (real time, bounded by :attr:`settle`) until each of ``threads`` waits
        quietly on the clock or has ended, and nothing else woken is still running."""

        def parked() -> bool:
            quiet = {p.thread for p in self._parked if not p.waking}
            return all(t in quiet or not t.is_alive() for t in threads) and self._quiet_locked()

        deadline = _real_now() + self.settle
        with self._cond:
            while not parked():
                remaining = deadline - _real_now()
                if remaining <= 0:
                    quiet = {p.thread for p in self._parked if not p.waking}
                    stuck = [t.name for t in threads if t.is_alive() and t not in quiet]
                    raise AssertionError(
                        f"FakeClock: within {self.settle} s (real time) these threads did not "
                        f"come to wait on the clock: {', '.join(stuck) or '(others woken)'}"
                    )
                self._cond.wait(min(remaining, _DEATH_CHECK))

    def settle_now(self) -> None:
        """Wait (real time, bounded by :attr:`settle`) until every thread woken since the
        clock last moved waits on it again: e.g. after handing a device a command."""
        with self._cond:
            self._settle_locked()

    # -- test helpers -------------------------------------------------------------------

    @property
    def waiters(self) -> int:
        """Threads now blocked in :meth:`sleep` or :meth:`wait`, neither released nor woken
        (a waiter whose event is set is about to run, not waiting)."""
        with self._cond:
            return self._count()

    @property
    def next_deadline(self) -> float | None:
        """The earliest deadline of a blocked thread, or ``None`` if no one has one.

        ``clock.advance(clock.next_deadline - clock.now())`` wakes the next timer due.
        """
        with self._cond:
            due = [p.deadline for p in self._parked if not p.released and p.deadline is not None]
            return min(due) if due else None

    def wait_for_waiters(self, n: int, timeout: float = 5.0) -> None:
        """Block (real time, at most ``timeout`` s) until at least ``n`` threads are parked
        (see :attr:`waiters`).

        Call it before :meth:`advance` so the move in time is not lost on a thread that
        has not reached its wait yet. Raises :class:`AssertionError` on timeout.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._count() >= n, timeout):
                raise AssertionError(
                    f"FakeClock: expected at least {n} thread(s) waiting on the clock within "
                    f"{timeout} s (real time), but {self._count()} are (fake time {self._now})"
                )

    def __repr__(self) -> str:
        with self._cond:
            return f"FakeClock(now={self._now!r}, waiters={self._count()})"

    # -- internals (call with self._cond held) -----------------------------------------

    def _count(self) -> int:
        # Not the waking ones: a thread whose event was set is about to run and will park
        # again with a deadline computed from the time it reads then. Counting it would let
        # a test advance time in between, and the deadline would land one advance late.
        return sum(1 for p in self._parked if not p.waking)

    def _release_due_locked(self) -> None:
        for parked in self._parked:
            if parked.released or parked.deadline is None or parked.deadline > self._now:
                continue
            parked.released = True
            if parked.event is not None:
                parked.event.set()
        self._cond.notify_all()

    def _quiet_locked(self) -> bool:
        self._busy = {t for t in self._busy if t.is_alive()}
        if self._busy - self._ignored:
            return False
        return not any(p.waking for p in self._parked if p.thread.is_alive())

    def _settle_locked(self) -> None:
        deadline = _real_now() + self.settle
        while not self._quiet_locked():
            remaining = deadline - _real_now()
            if remaining <= 0:
                break
            # Parking and waking notify us; a thread that *ends* does not, hence the slice.
            self._cond.wait(min(remaining, _DEATH_CHECK))
        else:
            return
        stuck = sorted(
            {t.name for t in self._busy - self._ignored}
            | {p.thread.name for p in self._parked if p.waking}
        )
        raise AssertionError(
            f"FakeClock: at fake time {self._now} these threads did not wait on the clock again "
            f"within {self.settle} s (real time): {', '.join(stuck)} — blocked outside the "
            "clock (a handler waiting on something else?)"
        )

    def _park(self, parked: _Parked) -> None:
        self._busy.discard(parked.thread)
        self._ignored.discard(parked.thread)  # settled: from now on it is waited for
        self._parked.append(parked)
        # Wakes wait_for_waiters(); sleepers re-check their own flag and sleep on.
        self._cond.notify_all()

    def _unpark(self, parked: _Parked) -> None:
        parked.released = True
        # Remove by identity: two parked records may compare equal by value.
        self._parked = [p for p in self._parked if p is not parked]
        self._busy.add(parked.thread)
        self._cond.notify_all()
