"""Stalls: a handler call that outlives its timeout.

Every handler call has a timeout — ``timeout=`` on the registration, ``None`` for none; by
default 30 s for commands and ``max(3 × interval, 30 s)`` for telemetry. *Busy* means slower
than the interval (ticks are skipped and counted); *stalled* means past the timeout.

A thread cannot be killed, so a stall is reported, not cured: one error payload
(``error_type`` ``stalled``), heartbeat status ``stalled``, availability ``offline``. Ticks
keep being skipped and counted, commands queue up to their bound and then follow the
overflow rule. When the call returns at last, the device recovers by itself: ``online``
again and one INFO line with the stall's length. Other devices never notice, and a stalled
device never delays shutdown past the grace period (its thread is a daemon).

Each device has a :class:`CallWatch` that its thread marks at the start and end of a call;
the :class:`StallMonitor` looks at all of them on the scheduler thread when the earliest
timeout of the calls in flight is due (a timer armed by the calls themselves: an idle agent
has nothing to check).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent.clock import ClockPort

__all__ = ["CallWatch", "StallMonitor", "default_timeout"]

COMMAND_TIMEOUT = 30.0


def default_timeout(kind: str, interval: float | None) -> float:
    """30 s for a command, ``max(3 × interval, 30 s)`` for a telemetry reading."""
    if kind == "telemetry" and interval is not None:
        return max(3.0 * interval, COMMAND_TIMEOUT)
    return COMMAND_TIMEOUT


class CallWatch:
    """The handler call one device is in, if any; thread-safe."""

    def __init__(
        self,
        name: str,
        is_root: bool,
        timeout: float | None,
        clock: ClockPort,
        on_begin: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self.is_root = is_root
        self.timeout = timeout
        self._clock = clock
        self._on_begin = on_begin  # told when this call's timeout falls due
        self._lock = threading.Lock()
        self._started: float | None = None
        self._stalled = False

    def begin(self) -> None:
        with self._lock:
            started = self._started = self._clock.now()
            self._stalled = False
        if self.timeout is not None and self._on_begin is not None:
            self._on_begin(started + self.timeout)

    def due_at(self) -> float | None:
        """When the current call's timeout falls due (None: no call, or already stalled)."""
        with self._lock:
            if self._started is None or self._stalled or self.timeout is None:
                return None
            return self._started + self.timeout

    def end(self) -> float | None:
        """The call returned; how long it had been stalled for (None if it had not)."""
        with self._lock:
            started, stalled = self._started, self._stalled
            self._started, self._stalled = None, False
        if not stalled or started is None:
            return None
        return self._clock.now() - started

    def newly_stalled(self, now: float) -> bool:
        """True once per call, when it first is seen past its timeout."""
        with self._lock:
            if self._started is None or self._stalled or self.timeout is None:
                return False
            if now - self._started <= self.timeout:
                return False
            self._stalled = True
            return True

    def stalled_for(self, now: float) -> float:
        """How long the current call has been running if it is stalled, else 0."""
        with self._lock:
            if not self._stalled or self._started is None:
                return 0.0
            return now - self._started


class StallMonitor:
    """Finds newly stalled calls among all devices' watches, when a timeout falls due.

    ``arm(when)`` schedules :meth:`check` at a clock time (the runtime's scheduler); a
    watch's call start arms it for its timeout unless an earlier check is armed already.
    """

    def __init__(self, clock: ClockPort, on_stall: Callable[[CallWatch, float], None]) -> None:
        self._clock = clock
        self._on_stall = on_stall
        self._watches: list[CallWatch] = []
        self.arm: Callable[[float], None] | None = None
        self._armed_at: float | None = None
        self._lock = threading.Lock()

    def watch(self, name: str, is_root: bool, timeout: float | None) -> CallWatch:
        watch = CallWatch(name, is_root, timeout, self._clock, self._due)
        self._watches.append(watch)
        return watch

    def _due(self, when: float) -> None:
        # Just past the deadline: a call is stalled when it has run *more* than its timeout.
        when += _PAST
        with self._lock:
            if self.arm is None or (self._armed_at is not None and self._armed_at <= when):
                return
            self._armed_at = when
        self.arm(when)

    def check(self) -> None:
        now = self._clock.now()
        with self._lock:
            self._armed_at = None
        for watch in self._watches:
            if watch.newly_stalled(now):
                self._on_stall(watch, now)
        pending = [d for d in (w.due_at() for w in self._watches) if d is not None]
        if pending:
            self._due(min(pending))

    def longest_stall(self) -> float:
        """The longest current stall in seconds (0 when nothing is stalled)."""
        now = self._clock.now()
        return max((w.stalled_for(now) for w in self._watches), default=0.0)


_PAST = 0.001  # seconds after a timeout at which the check runs
