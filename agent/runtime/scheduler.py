"""The scheduler thread: turns intervals into ticks, on the ``schedule`` library.

``schedule`` gives the job model (``Job`` with ``period`` and ``next_run``, a ``Scheduler``
that owns the job list). Three things are done differently here:

* **Monotonic time.** ``schedule`` reads the wall clock (``datetime.now()``), which jumps on
  a Raspberry Pi when NTP syncs after boot. Here job times are ``datetime`` values on a
  private axis (``_EPOCH + clock.now()`` seconds) fed by the clock port, and our jobs' ``run``
  never reads the wall clock. Next runs are computed from the previous *due* time, not from
  when the job happened to run, so the cadence does not drift; periods missed while the
  thread was starved are skipped and counted — never caught up in a burst.
* **A heap beside the list.** ``schedule.Scheduler.run_pending`` and ``idle_seconds`` walk
  every job on every wake; with 1,000 devices whose due times differ by microseconds that
  is O(n) work per wake and O(n²) per second. Here a heap of ``(next_run, job)`` is kept
  beside ``jobs``: a wake costs O(log n) per job due.
* **Coalesced wakes.** One wake runs every job due within :data:`COALESCE` of now (jobs run
  at most that much early), so devices started microseconds apart share a wake instead of
  waking the thread once each.

A :class:`TelemetryJob` serves one telemetry worker — one device, or a coalescing group of
several, each member with its own interval and drift-free cadence; at each instant where
members are due it hands the worker the list of them in one call.

Jobs only hand work to other threads (a tick into a device inbox, a heartbeat publish that
never blocks); the thread sleeps on the clock port until the next due time and wakes early
only when someone calls ``call_soon``, adds a job or stops it.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence

import schedule

from agent import clock as clock_mod
from agent.clock import ClockPort

log = logging.getLogger("agent.scheduler")

_EPOCH = dt.datetime(2000, 1, 1)

COALESCE = dt.timedelta(milliseconds=1)
"""Jobs due within this of a wake run in that wake."""


def _on_axis(clock: ClockPort) -> dt.datetime:
    return _EPOCH + dt.timedelta(seconds=clock.now())


def _next_due(due: dt.datetime, period: dt.timedelta, now: dt.datetime) -> tuple[dt.datetime, int]:
    """The first due time after ``due`` that is still ahead of ``now``, and how many
    periods were skipped to get there (a starved thread does not catch up in a burst)."""
    following = due + period
    if following > now:
        return following, 0
    missed = (now - following) // period + 1
    return following + missed * period, missed


class _MonotonicJob(schedule.Job):
    """A ``schedule.Job`` on the clock port's time axis, drift-free."""

    def __init__(
        self,
        seconds: float,
        scheduler: _MonotonicScheduler,
        name: str,
        start: float | None = None,
    ) -> None:
        super().__init__(1, scheduler)
        self.unit = "seconds"
        self.period = dt.timedelta(seconds=seconds)
        self.name = name
        self.missed = 0
        self._clock = scheduler.clock
        self._start = start

    @property
    def should_run(self) -> bool:
        return self.next_run is not None and _on_axis(self._clock) >= self.next_run

    def _schedule_next_run(self) -> None:
        if self.next_run is None:
            base = _EPOCH + dt.timedelta(seconds=self._start) if self._start is not None else None
            self.next_run = (base or _on_axis(self._clock)) + self.period
            return
        self.next_run, missed = _next_due(self.next_run, self.period, _on_axis(self._clock))
        self.missed += missed

    def run(self) -> object:
        # schedule's own run() reads the wall clock (last_run, until()); ours does not.
        ret = self.job_func()
        self._schedule_next_run()
        return ret

    def __repr__(self) -> str:
        return f"<job {self.name} every {self.period.total_seconds()}s>"


class _OneShotJob(_MonotonicJob):
    """Runs once, at a clock time, then leaves the scheduler."""

    one_shot = True

    def __init__(self, when: float, scheduler: _MonotonicScheduler, name: str) -> None:
        self._when = when
        super().__init__(1.0, scheduler, name)

    def _schedule_next_run(self) -> None:
        self.next_run = _EPOCH + dt.timedelta(seconds=self._when)


class _Member:
    """One device of a telemetry job, with its own cadence."""

    __slots__ = ("missed", "name", "next_due", "period")

    def __init__(
        self, name: str, period: dt.timedelta, next_due: dt.datetime, missed: int = 0
    ) -> None:
        self.name = name
        self.period = period
        self.next_due = next_due
        self.missed = missed


class TelemetryJob(_MonotonicJob):
    """The job of one telemetry worker: one device or a group, each member on its own
    drift-free cadence; runs ``func(due_names, missed)`` whenever members are due, ``missed``
    naming those whose earlier periods were skipped because this thread was starved."""

    def __init__(
        self,
        members: Sequence[tuple[str, float]],
        scheduler: _MonotonicScheduler,
        name: str,
        start: float,
    ) -> None:
        first = _EPOCH + dt.timedelta(seconds=start)
        self.members = [
            _Member(member, dt.timedelta(seconds=s), first + dt.timedelta(seconds=s))
            for member, s in members
        ]
        super().__init__(min(s for _, s in members), scheduler, name, start)

    def _schedule_next_run(self) -> None:
        self.next_run = min(m.next_due for m in self.members)

    def run(self) -> object:
        now = _on_axis(self._clock)
        due = [m for m in self.members if m.next_due <= now + COALESCE]
        missed: dict[str, int] = {}
        for member in due:
            member.next_due, skipped = _next_due(member.next_due, member.period, now)
            if skipped:
                missed[member.name] = skipped
                member.missed += skipped
                self.missed += skipped
        self._schedule_next_run()
        return self.job_func([m.name for m in due], missed) if due else None

    def __repr__(self) -> str:
        return f"<telemetry job {self.name} ({len(self.members)} device(s))>"


class _MonotonicScheduler(schedule.Scheduler):
    """``schedule.Scheduler`` with a heap of due times beside its job list."""

    def __init__(self, clock: ClockPort) -> None:
        super().__init__()
        self.clock = clock
        self._heap: list[tuple[dt.datetime, int, _MonotonicJob]] = []
        self._live: set[_MonotonicJob] = set()  # ``jobs`` as a set: O(1) membership
        self._order = itertools.count()  # ties in due time: first added runs first

    def add(self, job: _MonotonicJob) -> None:
        """Track a job that ``Job.do`` has just appended to ``jobs``."""
        assert job.next_run is not None
        self._live.add(job)
        heapq.heappush(self._heap, (job.next_run, next(self._order), job))

    def cancel_job(self, job: schedule.Job) -> None:
        super().cancel_job(job)
        self._live.discard(job)  # type: ignore[arg-type]

    def clear(self, tag: object = None) -> None:
        super().clear(tag)  # type: ignore[arg-type]
        self._live = set(self.jobs)  # type: ignore[arg-type]

    def _top(self) -> tuple[dt.datetime, int, _MonotonicJob] | None:
        # Cancelled jobs and stale entries leave the heap lazily.
        while self._heap:
            entry = self._heap[0]
            job = entry[2]
            if job in self._live and job.next_run == entry[0]:
                return entry
            heapq.heappop(self._heap)
        return None

    def run_pending(self) -> None:
        horizon = _on_axis(self.clock) + COALESCE
        due: list[_MonotonicJob] = []
        while (top := self._top()) is not None and top[0] <= horizon:
            heapq.heappop(self._heap)
            due.append(top[2])
        for job in due:
            self._run_job(job)
            if getattr(job, "one_shot", False):
                self.cancel_job(job)
            if job in self._live and job.next_run is not None:
                heapq.heappush(self._heap, (job.next_run, next(self._order), job))

    @property
    def idle_seconds(self) -> float | None:  # type: ignore[override]
        top = self._top()
        if top is None:
            return None
        return (top[0] - _on_axis(self.clock)).total_seconds()


class Scheduler:
    """Owns the ``scheduler`` thread. Add jobs with ``every`` or ``telemetry`` before or
    after ``start``."""

    def __init__(self, clock: ClockPort) -> None:
        self._clock = clock
        self._sched = _MonotonicScheduler(clock)
        self._lock = threading.RLock()  # a job may add jobs
        self._soon: deque[Callable[[], None]] = deque()
        self._waker = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._rounds = 0  # loops of the thread, for the watchdog's "not wedged"

    @property
    def rounds(self) -> int:
        """Loops of the thread so far: it loops at least once a second while a job runs
        every second (the runtime's stall check does), so a count that stops moving means a
        wedged thread (the watchdog's question)."""
        return self._rounds

    def problem(self) -> str | None:
        """Why the scheduler thread is not sound (dead), or None."""
        thread = self._thread
        if thread is not None and not self._stopping and not thread.is_alive():
            return "the scheduler thread has died"
        return None

    def every(self, seconds: float, func: Callable[[], object], *, name: str) -> _MonotonicJob:
        """Run ``func`` on the scheduler thread every ``seconds`` (first run one period away)."""
        return self._add(_MonotonicJob(seconds, self._sched, name), func)

    def telemetry(
        self,
        members: Sequence[tuple[str, float]],
        func: Callable[[list[str], dict[str, int]], object],
        *,
        name: str,
        start: float,
    ) -> TelemetryJob:
        """Run ``func(due, missed)`` whenever members (``(name, seconds)``) are due, ``due``
        in the members' order; a member's *k*-th due time is ``start + k·seconds``."""
        job = TelemetryJob(members, self._sched, name, start)
        self._add(job, func)
        return job

    def _add(self, job: _MonotonicJob, func: Callable[..., object]) -> _MonotonicJob:
        with self._lock:
            job.do(self._guarded(func, job.name))
            self._sched.add(job)
        self._waker.set()
        return job

    def call_at(self, when: float, func: Callable[[], object], *, name: str) -> None:
        """Run ``func`` once on the scheduler thread at clock time ``when`` (thread-safe).

        For timers that are armed only when needed (a held-back error report, a handler
        call's timeout): an idle agent then has no wake-up at all between its real jobs.
        """
        job = _OneShotJob(when, self._sched, name)
        self._add(job, func)

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
    def _guarded(func: Callable[..., object], name: str) -> Callable[..., None]:
        def run(*args: object) -> None:
            try:
                func(*args)
            except Exception:  # a failing job must not end the thread
                log.exception("scheduled job %s failed", name)

        return run

    def _run(self) -> None:
        try:
            while True:
                self._rounds += 1
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
