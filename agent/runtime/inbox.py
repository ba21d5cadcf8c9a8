"""A device's inbox: the one queue its thread takes work from.

Four producers put into it — paho's network thread (commands), the scheduler thread
(telemetry ticks), the supervisor (shutdown) and any thread calling ``ctx.wake()`` (a
hardware library's callback) — and exactly one consumer, the device's own thread, takes from
it. Producers never block:

* commands are bounded by ``capacity``; when full, the *oldest* pending command is dropped
  (the newest one carries the user's latest intent) and the put reports what was dropped;
* at most one telemetry :class:`Tick` is pending. It names the devices that are due (one, or
  several members of a coalescing group); a device that falls due again while its tick still
  waits is skipped, and the put reports it, so a slow handler never builds a backlog;
* at most one :data:`WAKE` is pending: a thousand wakes before the device looks are one.

The consumer waits through the clock port, so a fake clock drives it in tests.
"""

from __future__ import annotations

import threading
from collections import deque

from agent import clock as clock_mod
from agent.clock import ClockPort


class Tick:
    """Time for telemetry readings: the devices due, in the order they fell due."""

    __slots__ = ("due",)

    def __init__(self, due: list[str]) -> None:
        self.due = due


class _Wake:
    def __repr__(self) -> str:
        return "WAKE"


WAKE = _Wake()
"""The item :meth:`Inbox.put_wake` queues: "look at your hardware's news"."""


class Inbox:
    """Bounded, clock-driven, single-consumer queue of a device's work items."""

    def __init__(self, clock: ClockPort, capacity: int = 64) -> None:
        if capacity < 1:
            raise ValueError(f"command queue capacity must be >= 1, got {capacity}")
        self._clock = clock
        self._capacity = capacity
        self._lock = threading.Lock()
        self._items: deque[object] = deque()
        self._commands = 0
        self._tick: Tick | None = None  # the pending tick, still in _items
        self._wake_pending = False  # a WAKE is in _items
        self._closed = False
        # Private to the consumer: producers, shutdown and the clock set it to wake it.
        self._waker = threading.Event()

    @property
    def capacity(self) -> int:
        """How many commands may wait."""
        return self._capacity

    @property
    def closed(self) -> bool:
        return self._closed

    def put_command(self, command: object) -> object | None:
        """Queue a command; returns the command dropped to make room, if any."""
        dropped = None
        with self._lock:
            if self._closed:
                return command
            if self._commands >= self._capacity:
                for i, item in enumerate(self._items):
                    if not isinstance(item, Tick):
                        dropped = item
                        del self._items[i]
                        self._commands -= 1
                        break
            self._items.append(command)
            self._commands += 1
            self._waker.set()
        return dropped

    def put_tick(self, due: list[str]) -> list[str]:
        """Queue a tick for the devices ``due``; returns those skipped because a tick for
        them is still pending (merged into the pending tick otherwise)."""
        with self._lock:
            if self._closed:
                return []
            pending = self._tick
            if pending is None:
                self._tick = Tick(list(due))
                self._items.append(self._tick)
                self._waker.set()
                return []
            skipped = [name for name in due if name in pending.due]
            pending.due.extend(name for name in due if name not in pending.due)
            return skipped

    def put_wake(self) -> None:
        """Queue a :data:`WAKE` unless one is pending already (from any thread)."""
        with self._lock:
            if self._closed or self._wake_pending:
                return
            self._wake_pending = True
            self._items.append(WAKE)
            self._waker.set()

    def close(self) -> int:
        """Stop taking items and wake the consumer; returns the number of dropped commands
        (a pending tick or wake is not news: the device is stopping anyway)."""
        with self._lock:
            self._closed = True
            dropped = self._commands
            self._items.clear()
            self._commands = 0
            self._tick = None
            self._wake_pending = False
            self._waker.set()
        return dropped

    def wait_closed(self, timeout: float) -> bool:
        """Wait ``timeout`` clock-seconds unless the inbox closes first (True then).

        For a consumer that must pause (a retry's backoff) yet stop at once at shutdown;
        items that arrive meanwhile stay queued.
        """
        deadline = self._clock.now() + max(timeout, 0.0)
        while True:
            with self._lock:
                if self._closed:
                    return True
                self._waker.clear()
            remaining = deadline - self._clock.now()
            if remaining <= 0:
                return False
            clock_mod.wait(self._clock, self._waker, remaining)

    def get(self, timeout: float | None = None) -> object | None:
        """Take the next item, or None when ``timeout`` clock-seconds pass or the inbox closes."""
        deadline = None if timeout is None else self._clock.now() + max(timeout, 0.0)
        while True:
            with self._lock:
                if self._items:
                    item = self._items.popleft()
                    if item is self._tick:
                        self._tick = None
                    elif item is WAKE:
                        self._wake_pending = False
                    else:
                        self._commands -= 1
                    return item
                if self._closed:
                    return None
                self._waker.clear()
            remaining = None
            if deadline is not None:
                remaining = deadline - self._clock.now()
                if remaining <= 0:
                    return None
            clock_mod.wait(self._clock, self._waker, remaining)

    def __len__(self) -> int:
        return len(self._items)
