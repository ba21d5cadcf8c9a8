"""A device's inbox: the one queue its thread takes work from.

Three producers put into it — paho's network thread (commands), the scheduler thread
(telemetry ticks) and the supervisor (shutdown) — and exactly one consumer, the device's own
thread, takes from it. Producers never block:

* commands are bounded by ``capacity``; when full, the *oldest* pending command is dropped
  (the newest one carries the user's latest intent) and the put reports what was dropped;
* at most one telemetry tick is pending: a tick that finds one already waiting is skipped and
  counted, so a slow handler never builds a backlog.

The consumer waits through the clock port, so a fake clock drives it in tests.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from agent import clock as clock_mod
from agent.clock import ClockPort


@dataclass(frozen=True)
class Tick:
    """Time for a telemetry reading."""


TICK = Tick()


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
        self._tick_pending = False
        self._closed = False
        # Private to the consumer: producers, shutdown and the clock set it to wake it.
        self._waker = threading.Event()
        self.skipped_ticks = 0

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
                    if item is not TICK:
                        dropped = item
                        del self._items[i]
                        self._commands -= 1
                        break
            self._items.append(command)
            self._commands += 1
            self._waker.set()
        return dropped

    def put_tick(self) -> bool:
        """Queue a telemetry tick unless one is pending; False (and counted) when skipped."""
        with self._lock:
            if self._closed:
                return False
            if self._tick_pending:
                self.skipped_ticks += 1
                return False
            self._tick_pending = True
            self._items.append(TICK)
            self._waker.set()
            return True

    def close(self) -> int:
        """Stop taking items and wake the consumer; returns the number of dropped items."""
        with self._lock:
            self._closed = True
            dropped = len(self._items)
            self._items.clear()
            self._commands = 0
            self._tick_pending = False
            self._waker.set()
        return dropped

    def get(self, timeout: float | None = None) -> object | None:
        """Take the next item, or None when ``timeout`` clock-seconds pass or the inbox closes."""
        deadline = None if timeout is None else self._clock.now() + max(timeout, 0.0)
        while True:
            with self._lock:
                if self._items:
                    item = self._items.popleft()
                    if item is TICK:
                        self._tick_pending = False
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
