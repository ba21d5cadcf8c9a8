"""One telemetry cycle, start to end — the place to read what a tick does.

A cycle, run on the device's (or its group's) thread when a tick arrives:

1. **circuit breaker** — an open circuit skips this cycle without calling the handler;
2. **call** the handler, retrying up to ``retry`` times for the exceptions in ``retry_on``,
   waiting ``backoff.delay(attempt)`` clock-seconds in between (returns at once when the
   agent shuts down);
3. **result → state** — a dict is the state; ``None`` ends the cycle quietly (nothing
   published, the strategy not asked); anything else is a ``TypeError``, a failed cycle;
4. **ask the strategy** — the first reading of a run is always published; later ones when
   ``publish.should_publish(state, last_published)`` says so;
5. **publish** the state (retained, QoS 1) and **tell** the strategy (``on_published``);
6. **persist** — after every cycle that called the handler, ``persist=`` decides whether
   the device's store is saved (:func:`agent.persist.save_after_cycle`).

Failures are reported once per *streak*: the first failed cycle publishes an error payload
and turns the device ``offline`` (heartbeat status ``error``); further failures of the same
exception type publish nothing, except a reminder every ``error_reminder_interval``
seconds with ``details.count`` and ``details.first_seen``; a different type publishes again.
The next good cycle ends the streak: one INFO line with the outage's length, the device
``online`` and ``ok`` again. A sensor unplugged for a week neither floods the broker nor
goes quiet for good.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.clock import ClockPort, utc_now
from agent.persist import DeviceStore, save_after_cycle
from agent.retry import CLOSED, HALF_OPEN, OPEN, ExponentialBackoff
from agent.runtime.reporting import Reporter
from agent.runtime.stalls import CallWatch
from agent.runtime.supervisor import Supervisor

if TYPE_CHECKING:
    from agent.context import DeviceContext
    from agent.health import HealthReporter
    from agent.registry import Registration
    from agent.runtime.inbox import Inbox

log = logging.getLogger("agent.telemetry")

DEFAULT_RETRY_ON: tuple[type[BaseException], ...] = (OSError,)


@functools.cache
def _default_backoff() -> ExponentialBackoff:
    # One shared instance: its random.Random holds 2.5 KB of state, 2.5 MB for 1,000
    # devices if each had its own; delays need no per-device randomness.
    return ExponentialBackoff()


class _Blocked(Exception):
    """An adapter the device uses is restarting or failed: the device is not called now."""


class _ShutDown(Exception):
    """The agent began shutting down while a cycle waited to retry."""


class _Streak:
    """A run of failed cycles, from the first failure to the next success."""

    __slots__ = ("count", "first_seen", "last_report", "last_type", "started")

    def __init__(
        self,
        started: float,
        first_seen: datetime,
        count: int,
        last_type: type[BaseException],
        last_report: float,
    ) -> None:
        self.started = started  # clock port time
        self.first_seen = first_seen  # wall clock, for people
        self.count = count
        self.last_type = last_type
        self.last_report = last_report  # clock port time of the last published report


class TelemetryCycle:
    """Runs the cycles of one telemetry device (see the module docstring)."""

    def __init__(
        self,
        reg: Registration,
        ctx: DeviceContext,
        start: Callable[[], Callable[[], object]],
        *,
        inbox: Inbox,
        clock: ClockPort,
        health: HealthReporter,
        reporter: Reporter,
        supervisor: Supervisor,
        watch: CallWatch,
        reminder_interval: float | None,
        gate: Callable[[str], AbstractContextManager[bool]] | None = None,
        store: DeviceStore | None = None,
        before_waiting: Callable[[], None] | None = None,
    ) -> None:
        self.reg = reg
        # Called before a retry's backoff: a group's held writes must not wait that long.
        self._before_waiting = before_waiting
        self._gate = gate
        self._store = store
        self.ctx = ctx
        self._start = start  # runs init; returns the handler call
        self._call: Callable[[], object] | None = None  # None: (re)start due
        self._start_at = clock.now()
        self._given_up = False
        self._supervisor = supervisor
        self.watch = watch
        self._inbox = inbox
        self._clock = clock
        self._health = health
        self._reporter = reporter
        self._reminder_interval = reminder_interval
        options = reg.telemetry
        # Fresh copies for this run: a strategy counts, a breaker remembers failures, a
        # seeded backoff draws from its rng. Two runs of one App (a test's restart) must
        # not share that state, just as two processes would not.
        self._strategy = copy.deepcopy(options.publish)
        if self._strategy is not None:
            self._strategy._bind(clock)
        self._retries = options.retry
        self._retry_on = options.retry_on if options.retry_on is not None else DEFAULT_RETRY_ON
        self._backoff = (
            copy.deepcopy(options.backoff) if options.backoff is not None else _default_backoff()
        )
        self._breaker = copy.deepcopy(options.circuit_breaker)
        self._published: dict[str, object] | None = None
        self._has_published = False
        self._streak: _Streak | None = None

    @property
    def name(self) -> str:
        return self.reg.name

    def run(self) -> None:
        """One cycle. Never raises for anything the handler does."""
        if self._given_up:
            return
        if self._call is None:
            if self._clock.now() < self._start_at:
                return  # waiting out a restart's cooldown: no call, no report
            try:
                self._call = self._start()
            except Exception as exc:  # init failed (reported): try again after a cooldown
                self._plan_restart(exc)
                return
            self._supervisor.budget(self.name).restarted()  # healthy time counts from here
        if self._breaker is not None and not self._breaker.should_attempt():
            log.info("device %r: circuit open, cycle skipped (next one probes)", self.name)
            self._health.set_device_status(self.name, "circuit_open")
            return
        published = False
        try:
            result = self._call_with_retries()
            if result is not None:
                if not isinstance(result, dict):
                    raise TypeError(
                        f"telemetry handler returned {type(result).__name__}; "
                        "return a dict (the state) or None (publish nothing)"
                    )
                published = self._offer(result)
        except (_ShutDown, _Blocked):
            return  # shutting down, or an adapter it uses is restarting: no cycle now
        except Exception as exc:
            self._failed(exc)
        else:
            self._succeeded()
        self._persist(published)

    def _persist(self, published: bool) -> None:
        # After a failed cycle too: a handler may have changed its store before raising.
        if self._store is not None:
            save_after_cycle(self._store, self.reg.telemetry.persist, published=published)  # type: ignore[arg-type]

    # -- the steps ----------------------------------------------------------------------

    def _call_with_retries(self) -> object:
        attempt = 0
        while True:
            try:
                return self._timed_call()
            except self._retry_on as exc:
                if attempt >= self._retries:
                    raise
                attempt += 1
                delay = self._backoff.delay(attempt)
                log.debug(
                    "device %r: attempt %d failed (%s: %s); retry in %.2f s",
                    self.name,
                    attempt,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                if self._before_waiting is not None:
                    self._before_waiting()
                if self._inbox.wait_closed(delay):
                    raise _ShutDown from exc

    def _timed_call(self) -> object:
        assert self._call is not None
        gate = self._gate(self.name) if self._gate is not None else contextlib.nullcontext(True)
        with gate as allowed:
            if not allowed:
                raise _Blocked
            self.watch.begin()
            try:
                return self._call()
            finally:
                self._supervisor.call_returned(self.watch)

    def _plan_restart(self, cause: BaseException) -> None:
        """Restart the device (its ``init`` again) after the cooldown, if the budget allows;
        without blocking the thread, which a group's other members share."""
        self._call = None
        budget = self._supervisor.budget(self.name)
        if not budget.spend():
            self._given_up = True
            self._supervisor.give_up(self.reg, budget.restarts, cause)
            return
        policy = budget.policy
        cooldown = policy.cooldown_before(budget.restarts)
        log.log(
            logging.WARNING if policy.worth_logging(budget.restarts) else logging.DEBUG,
            "device %r: %s in %g s",
            self.name,
            policy.restart_text(budget.restarts),
            cooldown,
        )
        self._health.set_device_status(self.name, "restarting")
        self._health.set_restarts(self.name, budget.restarts)
        self._start_at = self._clock.now() + cooldown

    def _offer(self, state: dict[str, object]) -> bool:
        """Publish ``state`` if it is the first or the strategy wants it; True if published."""
        strategy = self._strategy
        if (
            self._has_published
            and strategy is not None
            and not strategy.should_publish(state, self._published)
        ):
            return False
        self.ctx.publish_state(state)
        self._has_published = True
        if strategy is not None:
            # A copy: a handler that mutates and returns the same dict must not change
            # what the next reading is compared with.
            self._published = copy.deepcopy(state)
            strategy.on_published()
        return True

    # -- outcomes -----------------------------------------------------------------------

    def _succeeded(self) -> None:
        self._health.record_call(self.name)
        breaker = self._breaker
        if breaker is not None and breaker.state != CLOSED:
            log.info("device %r: circuit closed, the probe succeeded", self.name)
        if breaker is not None:
            breaker.record_success()
        streak, self._streak = self._streak, None
        if streak is not None:
            log.info(
                "device %r recovered after %d failed cycle(s) in %.1f s",
                self.name,
                streak.count,
                self._clock.now() - streak.started,
            )
        if streak is not None or not self._health.is_online(self.name):
            # Back from failed readings, or from a restart (announced by this success, not
            # by the restart: see Member start in worker.py).
            self._health.publish_device_available(self.name, is_root=self.reg.is_root)
        self._health.set_device_status(self.name, "ok")

    def _failed(self, exc: Exception) -> None:
        self._health.record_call(self.name, exc)
        self._supervisor.budget(self.name).failed()
        self._trip_breaker()
        now = self._clock.now()
        streak = self._streak
        if streak is None:
            streak = self._streak = _Streak(now, utc_now(), 1, type(exc), now)
            self._report(exc, streak, "failed")
            self._health.publish_device_unavailable(
                self.name, is_root=self.reg.is_root, keep_tracking=True
            )
        else:
            streak.count += 1
            if type(exc) is not streak.last_type:
                streak.last_type = type(exc)
                streak.last_report = now
                self._report(exc, streak, "now fails differently")
            elif (
                self._reminder_interval is not None
                and now - streak.last_report >= self._reminder_interval
            ):
                streak.last_report = now
                self._report(exc, streak, "still failing")
            else:
                log.debug(
                    "device %r: cycle failed again (%d in a row): %s: %s",
                    self.name,
                    streak.count,
                    type(exc).__name__,
                    exc,
                )
        status = "circuit_open" if self._breaker and self._breaker.state == OPEN else "error"
        self._health.set_device_status(self.name, status)
        if streak.count % self._supervisor.policy.after_failures == 0:
            self._plan_restart(exc)

    def _trip_breaker(self) -> None:
        breaker = self._breaker
        if breaker is None:
            return
        before = breaker.state
        breaker.record_failure()
        if breaker.state == OPEN and before != OPEN:
            log.warning(
                "device %r: circuit opened after %d failed cycle(s)%s: the next cycle is "
                "skipped, then one probes",
                self.name,
                breaker.consecutive_failures,
                " (the probe failed)" if before == HALF_OPEN else "",
            )

    def _report(self, exc: Exception, streak: _Streak, what: str) -> None:
        details: dict[str, Any] = {
            "phase": "telemetry",
            "count": streak.count,
            "first_seen": streak.first_seen.isoformat(),
        }
        self._reporter.report(
            exc,
            device=self.name,
            is_root=self.reg.is_root,
            details=details,
            log=log,
            message=(
                f"device {self.name!r}: telemetry {what} ({streak.count} cycle(s) in a row): "
                f"{type(exc).__name__}: {exc}"
            ),
            traceback=True,
        )
