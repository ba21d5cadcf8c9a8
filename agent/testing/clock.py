"""A fake monotonic clock that tests move by hand, for code that runs in real threads.

The agent's threads wait through :func:`agent.clock.wait` and ``clock.sleep``. Given a
:class:`FakeClock`, those calls park the threads until the test calls :meth:`FakeClock.advance`,
so a test of "publish every 60 s" takes milliseconds and never races the real clock::

    clock = FakeClock()
    app_thread.start()                  # its scheduler parks in clock.wait(...)
    clock.wait_for_waiters(1)           # be sure it is parked before moving time
    clock.advance(60)                   # wakes it; it runs one cycle and parks again

Nothing in here polls: sleepers wait on a :class:`threading.Condition` that ``advance``
notifies, and waiters block on their own event, which ``advance`` sets when their deadline
has passed (the contract of :func:`agent.clock.wait` allows a clock to do that).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

__all__ = ["FakeClock"]


@dataclass(eq=False)
class _Parked:
    """One thread blocked in the clock: a sleeper (no event) or a waiter (its event)."""

    deadline: float | None
    event: threading.Event | None = None
    released: bool = field(default=False)


class FakeClock:
    """Deterministic :class:`agent.clock.ClockPort` (with ``wait``) for tests. Thread-safe.

    Time starts at ``start`` and moves only through :meth:`advance`. A deadline counts as
    reached when fake time is equal to it or later: a thread sleeping 10 s is released by
    ``advance(10)`` and not by ``advance(9.99)``.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._cond = threading.Condition()
        self._parked: list[_Parked] = []

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
        """Move fake time forward by ``seconds`` (>= 0) and wake everyone now due.

        Due waiters have their event set; due sleepers are released. Both stop counting
        in :attr:`waiters` at once, even before their threads have run again.
        """
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"FakeClock.advance needs a finite number >= 0, got {seconds!r}")
        with self._cond:
            self._now += seconds
            for parked in self._parked:
                if parked.released or parked.deadline is None or parked.deadline > self._now:
                    continue
                parked.released = True
                if parked.event is not None:
                    parked.event.set()
            self._cond.notify_all()

    # -- test helpers -------------------------------------------------------------------

    @property
    def waiters(self) -> int:
        """Threads now blocked in :meth:`sleep` or :meth:`wait` and not yet released."""
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
        """Block (real time, at most ``timeout`` s) until at least ``n`` threads are parked.

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
        return sum(1 for p in self._parked if not p.released)

    def _park(self, parked: _Parked) -> None:
        self._parked.append(parked)
        # Wakes wait_for_waiters(); sleepers re-check their own flag and sleep on.
        self._cond.notify_all()

    def _unpark(self, parked: _Parked) -> None:
        parked.released = True
        # Remove by identity: two parked records may compare equal by value.
        self._parked = [p for p in self._parked if p is not parked]
        self._cond.notify_all()
