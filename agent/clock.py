"""Time, in one place: the only module of the framework that reads a clock.

Two kinds of time, never mixed:

* **Monotonic time** (:class:`ClockPort`) for everything that is *timed*: intervals,
  uptime, retry back-off, deadlines. It never jumps. A Raspberry Pi has no real-time
  clock, so its wall clock may leap by months when NTP syncs after boot; anything timed
  by the wall clock would then fire a burst or stall for months.
* **Wall-clock time** (:func:`utc_now`) only for *timestamps* in payloads and logs, where a
  human or a database wants a calendar date.

Waiting is done with :func:`wait` and nothing else, so a test can swap in
:class:`agent.testing.FakeClock` and drive every timer of the agent without real delays
(see ``docs/adr/004-time-and-waiting.md``).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

__all__ = [
    "FALLBACK_SLICE",
    "ClockPort",
    "SystemClock",
    "WaitingClock",
    "deadline_passed",
    "utc_now",
    "wait",
]

#: How many clock-seconds :func:`wait` sleeps between two looks at the event when the
#: clock has no ``wait`` method of its own. Smaller wakes the waiter sooner after the event
#: is set but costs more wake-ups while it waits; 50 ms is below anything a person or a
#: sensor poll notices and still only 20 wake-ups a second.
FALLBACK_SLICE = 0.05


@runtime_checkable
class ClockPort(Protocol):
    """Monotonic clock for timing measurements.

    ``now()`` returns seconds from an arbitrary epoch: only the difference between two
    calls means anything. ``sleep()`` blocks the calling thread for that many seconds of
    this clock's time (a fake clock lets a test decide when that is).

    A clock *may* also offer ``wait(event, timeout)`` (see :class:`WaitingClock`); the
    framework's :func:`wait` uses it when present, so that a waiter wakes at once when its
    event is set instead of polling.
    """

    def now(self) -> float:
        """Return monotonic time in seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds`` of this clock's time."""
        ...


@runtime_checkable
class WaitingClock(ClockPort, Protocol):
    """A :class:`ClockPort` that can also wait on an event without polling."""

    def wait(self, event: threading.Event, timeout: float | None) -> None:
        """Block until ``event`` is set or ``timeout`` clock-seconds have passed."""
        ...


class SystemClock:
    """Production clock: :func:`time.monotonic` and :func:`time.sleep`.

    Satisfies :class:`ClockPort` (and :class:`WaitingClock`) by structural subtyping::

        clock = SystemClock()
        start = clock.now()
        ...  # some work
        elapsed = clock.now() - start
    """

    def now(self) -> float:
        """Return :func:`time.monotonic`."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` real seconds (negative counts as zero)."""
        time.sleep(max(0.0, seconds))

    def wait(self, event: threading.Event, timeout: float | None) -> None:
        """Block until ``event`` is set or ``timeout`` seconds have passed.

        ``threading.Event.wait`` measures its timeout on the monotonic clock, so a wall
        clock jump does not shorten or stretch it.
        """
        event.wait(None if timeout is None else max(0.0, timeout))


def wait(clock: ClockPort, event: threading.Event, timeout: float | None) -> None:
    """The framework's one way to wait.

    Block until ``event`` is set or ``timeout`` seconds of ``clock`` time have passed
    (``None`` = no time limit). It may return early or spuriously: callers re-check their
    own condition (and the clock) and loop. The event belongs to the waiter; a clock may
    set it to wake the waiter when its time is up, so a caller must not read "the event is
    set" as "someone asked me to stop" without checking its own state too.

    A clock with a ``wait`` method is asked directly. For a clock that has only ``now()``
    and ``sleep()`` the wait is sliced: it sleeps at most :data:`FALLBACK_SLICE`
    clock-seconds at a time and looks at the event in between. Such a clock is therefore
    woken up to 20 times a clock-second while something waits, and notices a set event up
    to 50 ms late; a clock that wants neither implements ``wait``.
    """
    own_wait = getattr(clock, "wait", None)
    if callable(own_wait):
        own_wait(event, timeout)
        return
    if timeout is None:
        # Without a deadline the clock plays no part: only the event can end the wait.
        event.wait()
        return
    deadline = clock.now() + timeout
    while not event.is_set():
        remaining = deadline - clock.now()
        if remaining <= 0:
            return
        clock.sleep(min(remaining, FALLBACK_SLICE))


def deadline_passed(clock: ClockPort, deadline: float) -> bool:
    """Return whether ``clock`` has reached ``deadline`` (a value of ``clock.now()``)."""
    return clock.now() >= deadline


def utc_now() -> datetime:
    """Return the current wall-clock time as a timezone-aware UTC datetime.

    For timestamps in payloads and logs only; never use it to time anything.
    """
    return datetime.now(timezone.utc)
