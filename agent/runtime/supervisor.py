"""Supervision: never silently dead.

The :class:`Supervisor` is what the device threads turn to when something goes wrong, and
what the systemd watchdog asks before it pings:

* **failures and restarts** — each device has a :class:`~agent.runtime.restarts.RestartBudget`;
  a device that needs a restart asks :meth:`Supervisor.restart`, which reports, waits the
  cooldown (the device shows ``restarting``) and says whether to go on. A spent budget gives
  the device up: ``offline`` (availability and heartbeat), one ``restarts_exhausted`` error
  payload with ``details.restarts``; with ``App(exit_on_device_failure=True)`` the agent then
  shuts down cleanly and exits with 70 (EX_SOFTWARE) so systemd restarts it;
* **stalls** — every handler call is timed by a :class:`~agent.runtime.stalls.CallWatch`; the
  :class:`~agent.runtime.stalls.StallMonitor` (once a second, scheduler thread) reports a call
  past its timeout, and the device recovers when the call returns;
* **soundness** — :meth:`Supervisor.sound` is the watchdog's question: the scheduler thread
  and paho's network loop alive and not wedged, no device thread dead outside the restart
  policy, no stall longer than ``App(watchdog_stall_limit=600)``.

The start and stop order lives in :mod:`agent.runtime.lifecycle`; adapters' health checks in
:mod:`agent.runtime.adapter_health`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agent.clock import ClockPort
from agent.errors import HandlerStalled, RestartsExhausted
from agent.health import HealthReporter
from agent.registry import Registration
from agent.runtime.inbox import Inbox
from agent.runtime.reporting import Reporter
from agent.runtime.restarts import RestartBudget, RestartPolicy
from agent.runtime.stalls import CallWatch, StallMonitor

__all__ = ["EX_SOFTWARE", "Supervisor"]

log = logging.getLogger("agent.supervisor")

EX_SOFTWARE = 70
"""Exit code when a device failed for good and ``exit_on_device_failure`` is set."""


class Supervisor:
    """Restarts, stalls and the agent's soundness (see the module docstring)."""

    def __init__(
        self,
        *,
        policy: RestartPolicy,
        clock: ClockPort,
        health: HealthReporter,
        reporter: Reporter,
        shutdown_event: threading.Event,
        exit_on_device_failure: bool = False,
        watchdog_stall_limit: float | None = 600.0,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._health = health
        self._reporter = reporter
        self._shutdown = shutdown_event
        self._exit_on_failure = exit_on_device_failure
        self._stall_limit = watchdog_stall_limit
        self._budgets: dict[str, RestartBudget] = {}
        self._given_up: set[str] = set()
        self._lock = threading.Lock()
        self.stalls = StallMonitor(clock, self._stalled)
        self.exit_code: int | None = None
        self._vitals: list[Callable[[], str | None]] = []

    # -- stalls ---------------------------------------------------------------------------

    def watch(self, reg: Registration, timeout: float | None) -> CallWatch:
        """The call watch of a device (one per device; its thread marks its calls)."""
        return self.stalls.watch(reg.name, reg.is_root, timeout)

    def _stalled(self, watch: CallWatch, now: float) -> None:
        self._reporter.report(
            HandlerStalled(f"a handler call of {watch.name!r} has run past its timeout of "
                           f"{watch.timeout:g} s"),
            device=watch.name,
            is_root=watch.is_root,
            details={"timeout": watch.timeout},
            log=log,
            message=f"device {watch.name!r} stalled: a call has run for more than "
            f"{watch.timeout:g} s",
        )  # fmt: skip
        self._health.set_device_status(watch.name, "stalled")
        self._health.publish_device_unavailable(
            watch.name, is_root=watch.is_root, keep_tracking=True
        )

    def call_returned(self, watch: CallWatch) -> None:
        """After every handler call, on the device's thread: recover from a stall."""
        stalled = watch.end()
        if stalled is not None:
            log.info("device %r recovered: its call returned after %.1f s", watch.name, stalled)
            self._health.publish_device_available(watch.name, is_root=watch.is_root)

    # -- restarts -------------------------------------------------------------------------

    def budget(self, name: str) -> RestartBudget:
        with self._lock:
            budget = self._budgets.get(name)
            if budget is None:
                budget = self._budgets[name] = RestartBudget(self.policy, self._clock)
            return budget

    def restart(self, reg: Registration, inbox: Inbox, cause: BaseException) -> bool:
        """On the device's thread, after a failure that calls for a restart: True when the
        device may start again (the cooldown has passed), False to stop calling it (budget
        spent — given up — or the agent is shutting down)."""
        budget = self.budget(reg.name)
        if not budget.spend():
            self.give_up(reg, budget.restarts, cause)
            return False
        self._health.set_device_status(reg.name, "restarting")
        self._health.set_restarts(reg.name, budget.restarts)
        cooldown = self.policy.cooldown_before(budget.restarts)
        log.log(
            logging.WARNING if self.policy.worth_logging(budget.restarts) else logging.DEBUG,
            "device %r: %s in %g s",
            reg.name,
            self.policy.restart_text(budget.restarts),
            cooldown,
        )
        if inbox.wait_closed(cooldown):
            return False
        budget.restarted()
        return True

    def give_up(self, reg: Registration, restarts: int, cause: BaseException) -> None:
        """The device is not called again: offline, reported once; maybe the agent ends."""
        with self._lock:
            self._given_up.add(reg.name)
        self._reporter.report(
            RestartsExhausted(
                f"device {reg.name!r} failed again after {restarts} restart(s) "
                f"({type(cause).__name__}: {cause}); it is not called again"
            ),
            device=reg.name,
            is_root=reg.is_root,
            details={"restarts": restarts, "cause": type(cause).__name__},
            log=log,
            message=f"device {reg.name!r} given up after {restarts} restart(s)",
            level=logging.ERROR,
        )
        self._health.publish_device_unavailable(reg.name, is_root=reg.is_root, keep_tracking=True)
        self._health.set_device_status(reg.name, "offline")
        if self._exit_on_failure and not self._shutdown.is_set():
            log.error("exit_on_device_failure: shutting down with exit code %d", EX_SOFTWARE)
            self.exit_code = EX_SOFTWARE
            self._shutdown.set()

    def given_up(self, name: str) -> bool:
        with self._lock:
            return name in self._given_up

    # -- soundness -----------------------------------------------------------------------

    def add_vital(self, check: Callable[[], str | None]) -> None:
        """A check the watchdog asks: it returns why the agent is unsound, or None."""
        self._vitals.append(check)

    def unsound(self) -> str | None:
        """Why the agent is not sound (see the module docstring), or None when it is."""
        for check in self._vitals:
            try:
                problem = check()
            except Exception as exc:  # a broken check is itself a reason
                problem = f"a soundness check failed: {exc!r}"
            if problem is not None:
                return problem
        if self._stall_limit is not None:
            longest = self.stalls.longest_stall()
            if longest > self._stall_limit:
                return f"a device has been stalled for {longest:.0f} s"
        return None


def thread_is_sound(thread: threading.Thread | None, what: str) -> Callable[[], str | None]:
    """A vital check: ``thread`` (once started) must be alive."""

    def check() -> str | None:
        if thread is not None and thread.ident is not None and not thread.is_alive():
            return f"the {what} thread has died"
        return None

    return check
