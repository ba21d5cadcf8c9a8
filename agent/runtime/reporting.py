"""Error reports at a bounded rate: one log line and one error payload per second at most.

Every failure the runtime reports — a rejected command, a full command queue, a failing
handler — goes through the one :class:`Reporter` of a run. A flood must not become a flood
of reports: 5,000 bad commands a second would otherwise mean 5,000 log lines and 10,000
error publishes a second, crowding out the states the agent exists to deliver.

The rule, per *report key* — the device and the ``error_type`` (so a full queue never
hides an invalid payload, and one noisy device never hides another):

* the first occurrence is logged and published at once;
* further occurrences within :data:`REPORT_INTERVAL` clock-seconds of the last report are
  counted, and the latest of them is kept;
* when the interval is over, :meth:`Reporter.flush` (a timer the reporter arms on the
  scheduler when it first holds something back, and once at shutdown) logs and publishes
  that latest one with the count in its ``details`` — under ``dropped`` for a full command
  queue ("how many commands were dropped since the last report"), under ``occurrences``
  otherwise.

So nothing is lost silently and nothing floods: at most one line and one payload per key
per interval. :class:`Throttle` is the counting part on its own, reusable wherever a
repeating event needs a bounded rate (the telemetry pipeline's error reminders).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

from agent.clock import ClockPort
from agent.errors import ErrorPublisher

__all__ = ["REPORT_INTERVAL", "Reporter", "Throttle"]

REPORT_INTERVAL = 1.0
"""Seconds (clock port) between two reports of the same key."""

K = TypeVar("K", bound=Hashable)


class Throttle(Generic[K]):
    """Admits the first event of a key and then at most one per ``interval``; counts the rest.

    Not thread-safe: the owner locks. Time is the clock port's, so a wall-clock step cannot
    open or shut the gate.
    """

    def __init__(self, clock: ClockPort, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self._clock = clock
        self._interval = interval
        self._last: dict[K, float] = {}  # when the key was last admitted
        self._held: dict[K, int] = {}  # occurrences counted since then

    def admit(self, key: K) -> int | None:
        """Record one occurrence of ``key``.

        Returns how many occurrences to report now (this one plus any held back), or None
        when it is held back to be reported by :meth:`due`.
        """
        now = self._clock.now()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0) + 1

    def next_due(self) -> float | None:
        """The clock time at which the earliest held-back key is due, or None."""
        if not self._held:
            return None
        return min(self._last[key] for key in self._held) + self._interval

    def due(self, *, everything: bool = False) -> list[tuple[K, int]]:
        """Keys whose interval is over and that have occurrences held back, with their
        counts (``everything``: all that are held, e.g. at shutdown). Forgets idle keys."""
        now = self._clock.now()
        out: list[tuple[K, int]] = []
        for key in list(self._held):
            if everything or now - self._last[key] >= self._interval:
                out.append((key, self._held.pop(key)))
                self._last[key] = now
        for key in [k for k, t in self._last.items() if k not in self._held]:
            if now - self._last[key] >= self._interval:
                del self._last[key]  # keeps the table as small as the set of active keys
        return out


class _Occurrence:
    """One reported error, as :meth:`Reporter.report` got it (read-only by convention)."""

    __slots__ = ("count_key", "details", "device", "error", "is_root", "level", "log", "message")

    def __init__(
        self,
        error: BaseException,
        device: str | None,
        is_root: bool,
        details: Mapping[str, object],
        log: logging.Logger,
        message: str,
        level: int,
        count_key: str | None,
    ) -> None:
        self.error = error
        self.device = device
        self.is_root = is_root
        self.details = details
        self.log = log
        self.message = message
        self.level = level
        self.count_key = count_key


class Reporter:
    """Logs and publishes error reports, at most one per key per interval (see module)."""

    def __init__(
        self, errors: ErrorPublisher, clock: ClockPort, interval: float = REPORT_INTERVAL
    ) -> None:
        self._errors = errors
        self._throttle: Throttle[tuple[str | None, str]] = Throttle(clock, interval)
        self._latest: dict[tuple[str | None, str], _Occurrence] = {}
        self._lock = threading.Lock()
        # Arms a timer that calls flush() at a clock time (the runtime's scheduler); without
        # one, someone must call flush() now and then.
        self.arm: Callable[[float], None] | None = None
        self._armed_at: float | None = None

    def report(
        self,
        error: BaseException,
        *,
        device: str | None,
        is_root: bool = False,
        details: Mapping[str, object] | None = None,
        log: logging.Logger,
        message: str,
        level: int = logging.WARNING,
        traceback: bool = False,
        count_key: str | None = None,
    ) -> None:
        """Report ``error``: log ``message`` and publish the error payload, or count it.

        ``traceback`` adds the exception's traceback to a reported occurrence: in the same
        line at ERROR and above, else as a DEBUG line (a rejected payload is routine).
        ``count_key`` names the ``details`` entry that carries the count (always present
        then); without it, ``occurrences`` appears once more than one is folded in.
        """
        occurrence = _Occurrence(
            error, device, is_root, dict(details or {}), log, message, level, count_key
        )
        key = (device, self._errors.error_type(error))
        with self._lock:
            count = self._throttle.admit(key)
            if count is None:
                self._latest[key] = occurrence
                self._arm_locked()
                return
            self._latest.pop(key, None)
        self._emit(occurrence, count, with_traceback=traceback and level >= logging.ERROR)
        if traceback and level < logging.ERROR:
            log.debug("%s: traceback", message, exc_info=error)

    def flush(self, *, everything: bool = False) -> None:
        """Report what was held back and is due (``everything``: all of it, at shutdown)."""
        with self._lock:
            due = [(self._latest.pop(key), count) for key, count in self._throttle.due(
                everything=everything
            )]  # fmt: skip
            self._armed_at = None
            self._arm_locked()  # for what is held back and not due yet
        for occurrence, count in due:
            self._emit(occurrence, count)

    def _arm_locked(self) -> None:
        when = self._throttle.next_due()
        if when is None or self.arm is None:
            return
        if self._armed_at is None or when < self._armed_at:
            self._armed_at = when
            self.arm(when)

    def _emit(self, occurrence: _Occurrence, count: int, *, with_traceback: bool = False) -> None:
        details = dict(occurrence.details)
        if occurrence.count_key is not None:
            details[occurrence.count_key] = count
        elif count > 1:
            details["occurrences"] = count
        line = occurrence.message
        if count > 1:
            line = f"{line} ({count} times since the last report)"
        occurrence.log.log(
            occurrence.level, "%s", line, exc_info=occurrence.error if with_traceback else None
        )
        self._errors.publish(
            occurrence.error,
            device=occurrence.device,
            is_root=occurrence.is_root,
            details=details,
        )
