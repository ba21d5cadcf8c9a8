"""The scheduler thread: turns intervals into ticks, on the ``schedule`` library.

``schedule`` reads the wall clock (``datetime.now()``), which jumps on a Raspberry Pi when NTP
syncs after boot. Here it is fed the clock port's monotonic time instead: job times are
``datetime`` values on a private axis (``_EPOCH + clock.now()`` seconds), and the two methods of
``schedule`` that read the wall clock are overridden to read the port. Next runs are computed
from the previous *due* time, not from when the job happened to run, so the cadence does not
drift; periods missed while the thread was starved are skipped and counted.

Jobs only hand work to other threads (a tick into a device inbox, a heartbeat publish that
never blocks); the thread sleeps on the clock port until the next due time and wakes early
only when someone calls ``call_soon`` or ``stop``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import deque
from collections.abc import Callable

import schedule

from agent import clock as clock_mod
from agent.clock import ClockPort

log = logging.getLogger("agent.scheduler")

_EPOCH = dt.datetime(2000, 1, 1)


def _on_axis(clock: ClockPort) -> dt.datetime:
    return _EPOCH + dt.timedelta(seconds=clock.now())


class _MonotonicJob(schedule.Job):
    """A ``schedule.Job`` on the clock port's time axis, drift-free."""

    def __init__(self, seconds: float, scheduler: _MonotonicScheduler, name: str) -> None:
        super().__init__(1, scheduler)
        self.unit = "seconds"
        self.period = dt.timedelta(seconds=seconds)
        self.name = name
        self.missed = 0
        self._clock = scheduler.clock

    @property
    def should_run(self) -> bool:
        return self.next_run is not None and _on_axis(self._clock) >= self.next_run

    def _schedule_next_run(self) -> None:
        now = _on_axis(self._clock)
        if self.next_run is None:
            self.next_run = now + self.period
            return
        following = self.next_run + self.period
        if following <= now:
            missed = (now - following) // self.period + 1
            following += missed * self.period
            self.missed += missed
        self.next_run = following

    def __repr__(self) -> str:
        return f"<job {self.name} every {self.period.total_seconds()}s>"


class _MonotonicScheduler(schedule.Scheduler):
    def __init__(self, clock: ClockPort) -> None:
        super().__init__()
        self.clock = clock

    @property
    def idle_seconds(self) -> float | None:  # type: ignore[override]
        if not self.jobs:
            return None
        return (min(self.jobs).next_run - _on_axis(self.clock)).total_seconds()


class Scheduler:
    """Owns the ``scheduler`` thread. Add jobs with ``every`` before or after ``start``."""

    def __init__(self, clock: ClockPort) -> None:
        self._clock = clock
        self._sched = _MonotonicScheduler(clock)
        self._lock = threading.RLock()  # a job may add jobs
        self._soon: deque[Callable[[], None]] = deque()
        self._waker = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def every(self, seconds: float, func: Callable[[], object], *, name: str) -> _MonotonicJob:
        """Run ``func`` on the scheduler thread every ``seconds`` (first run one period away)."""
        job = _MonotonicJob(seconds, self._sched, name)
        with self._lock:
            job.do(self._guarded(func, name))
        self._waker.set()
        return job

    def call_soon(self, func: Callable[[], None]) -> None:
        """Run ``func`` on the scheduler thread as soon as possible (thread-safe)."""
        with self._lock:
            self._soon.append(func)
        self._waker.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread; True when it ended within ``timeout`` real seconds."""
        self._stopping = True
        self._waker.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def jobs(self) -> list[_MonotonicJob]:
        return list(self._sched.jobs)  # type: ignore[arg-type]

    @staticmethod
    def _guarded(func: Callable[[], object], name: str) -> Callable[[], None]:
        def run() -> None:
            try:
                func()
            except Exception:  # a failing job must not end the thread
                log.exception("scheduled job %s failed", name)

        return run

    def _run(self) -> None:
        try:
            while True:
                self._waker.clear()
                with self._lock:
                    soon = list(self._soon)
                    self._soon.clear()
                for func in soon:
                    self._guarded(func, getattr(func, "__name__", "call_soon"))()
                if self._stopping:
                    return
                with self._lock:
                    self._sched.run_pending()
                    idle = self._sched.idle_seconds
                if idle is None or idle > 0:
                    clock_mod.wait(self._clock, self._waker, idle)
        except BaseException:  # never die silently
            log.critical("the scheduler thread crashed", exc_info=True)
            raise
