"""Adapter health: check adapters, take their devices offline, restart them, or give up.

An adapter (the implementation of a port, ``app.adapter(GasMeterPort, SerialGasMeter)``) that
has a ``health_check() -> bool`` method is *watched*: every ``App(health_check_interval=30)``
seconds (``None``: never) it is asked whether it is well. One :class:`AdapterHealth` per run
watches all of them.

What a check is
    A check **fails** when ``health_check()`` raises, returns a false value, or *overruns*:
    gives no answer within one interval. Anything else passes.

What a failure does
    The adapter's status (``ok``, ``failing``, ``restarting``, ``failed``) and counters appear
    in the heartbeat under ``adapters``, keyed by the port's class name (:meth:`snapshot`)::

        "adapters": {"GasMeterPort": {"status": "failing", "failures": 2, "restarts": 0}}

    * **ok → failing** (the first failed check): one WARNING line and one error payload
      (:class:`AdapterUnhealthy` caused by what the check raised, ``device: null``,
      ``details``: ``adapter`` and ``reason`` — ``raised``, ``returned_false``, ``timeout``,
      ``still_running``), and every device that uses the adapter — had it injected into its
      handler or ``init`` — goes ``offline``. Further failed checks only count
      (``failures``, a DEBUG line each).
    * **failing → ok** (a check passes again): one INFO line; the devices come back
      ``online``, except a device that another adapter still holds down, or that is down for
      reasons of its own (heartbeat status ``offline``, ``stalled``, ``restarting``): its own
      recovery announces it.
    * **failing → restarting** after ``restart_after_failures`` failed checks in a row: one
      WARNING line, and the adapter is restarted — ``reset()`` when it has one, otherwise, as a
      context manager, ``__exit__(None, None, None)`` then ``__enter__()``. In order: the
      devices that use it are *blocked* (:meth:`blocked`: they get no calls), calls already
      running are given up to one interval to end (:meth:`calling` counts them), the adapter
      is exited, ``restart_cooldown`` seconds pass, then ``reset()`` or ``__enter__()`` starts
      it again. The devices are unblocked (still ``offline``) and the adapter is checked at
      once: a pass is a recovery, a failure starts the count towards the next restart.
      A ``reset()``/``__exit__``/``__enter__`` that raises is reported — its own exception,
      ``details.phase`` naming the step — and still was an attempt. An adapter with neither
      ``reset()`` nor ``__enter__``/``__exit__`` cannot be restarted: it stays ``failing``
      until a check passes (said once, at WARNING).
    * **restarting → failed** when a restart is due and ``max_restarts`` attempts are spent:
      one ERROR line and one ``restarts_exhausted`` error payload; the devices stay
      ``offline`` (heartbeat status ``offline`` too) and blocked until the process restarts.
      Its checks end.

    The budget is a :class:`~agent.runtime.restarts.RestartBudget`, as for devices: one
    attempt is one ``reset()`` or one exit/enter pair, successful or not, and after
    ``sustained_health_reset`` seconds without restart-worthy trouble (no restart, no run of
    ``restart_after_failures`` failed checks) the count starts again from zero — shown in the
    heartbeat at the first check that passes after that time, and applied by the budget at
    the next restart in any case.

The threads, and why two per adapter
    Each watched adapter has a **checker** thread, ``adapter-health:<Port>``, that keeps the
    time, judges, restarts and publishes; and the check itself runs on a short-lived **check
    thread**, ``adapter-check:<Port>``, started for each check. A check cannot be interrupted
    (Python cannot kill a thread), so if the checker called ``health_check()`` itself, a
    hanging check would stop the clock that is supposed to notice it. Instead the checker
    waits for the check's answer for at most one interval; no answer by then is a failed
    check (*overran*). The stuck check thread is left alone, and no second check of that
    adapter starts while it is stuck: at each later interval the checker finds it still
    running and counts one more failure — one failure per interval, never two checks at
    once. If the check returns at last, its late answer is dropped (that check has already
    been judged) and the next interval checks afresh.

    Checks are due at fixed times, one interval apart from the start (the first one interval
    after :meth:`start`); after a verdict the next check is the first due time after it, so
    an overrun judged exactly at the next due time does not count twice, and a thread that
    was starved does not catch up in a burst. After a restart the next check is due at once.

    Every timed wait — the next due time, an answer, the cooldown, calls in flight — is a
    :func:`agent.clock.wait` on the clock port with an event private to the checker, which
    :meth:`stop`, a check's answer and the end of a call set to wake it (ADR-004): a
    :class:`~agent.testing.FakeClock` drives all of it. All threads are daemons. :meth:`stop`
    wakes the checkers (a restart waiting for its cooldown is abandoned) and joins them, and
    any check still within its interval, within its bound (real seconds, like the runtime's
    grace period); a check already judged overrun is known to hang and is not waited for.
    What is left behind — a hung check, a restart hanging in ``reset()`` — is named in the
    log. A thread that ends unexpectedly says so at CRITICAL, and :meth:`problem` tells the
    systemd watchdog.

How the runtime uses it
    Devices are called only when :meth:`blocked` is false, ideally inside :meth:`calling`,
    which also lets a restart wait for calls in flight. A device's own "back online" is
    published only while :meth:`holds_offline` is false. Context-manager adapters are entered
    through :meth:`context`, so that an adapter a restart has exited and could not enter again
    is not exited a second time at shutdown. :func:`adapter_users` lists which devices use
    which adapter.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING

from agent import clock as clock_mod
from agent.clock import ClockPort, SystemClock
from agent.errors import AdapterUnhealthy, RestartsExhausted
from agent.injection import asks_for
from agent.runtime.restarts import RestartBudget, RestartPolicy

if TYPE_CHECKING:
    from agent.health import HealthReporter
    from agent.registry import Registration
    from agent.runtime.reporting import Reporter

__all__ = [
    "FAILED",
    "FAILING",
    "OK",
    "RESTARTING",
    "AdapterHealth",
    "AdapterUnhealthy",
    "adapter_users",
]

log = logging.getLogger("agent.adapter_health")

OK = "ok"
FAILING = "failing"
RESTARTING = "restarting"
FAILED = "failed"

_BLOCKING = frozenset({RESTARTING, FAILED})
"""Statuses in which an adapter's devices must not be called."""

_OWN_TROUBLE = frozenset({"offline", "stalled", "restarting"})
"""A device's heartbeat statuses that mean it is down for reasons of its own: an adapter's
recovery does not announce it (its own recovery does)."""


def adapter_users(
    registrations: Iterable[Registration], ports: Iterable[type]
) -> dict[type, list[tuple[str, bool]]]:
    """Which enabled devices use which port: ``{port: [(device name, is_root), ...]}``.

    A device uses a port when its handler or its ``init`` factory asks for it by annotation
    (as injection matches it: the port, a subclass, or its name as an unevaluated string).
    A ``@app.device`` that only looks an adapter up through ``ctx.adapter(...)`` is not seen.
    """
    ports = list(ports)
    users: dict[type, list[tuple[str, bool]]] = {port: [] for port in ports}
    for reg in registrations:
        if not reg.enabled:
            continue
        params = [*reg.params, *(reg.init_params or [])]
        for port in ports:
            if asks_for(params, port) is not None:
                users[port].append((reg.name, reg.is_root))
    return users


class _Outcome:
    """The verdict on one check (read-only by convention: :data:`_PASSED` is shared)."""

    __slots__ = ("error", "passed", "reason", "text")

    def __init__(
        self,
        passed: bool,
        reason: str = "passed",
        text: str = "",
        error: BaseException | None = None,
    ) -> None:
        self.passed = passed
        self.reason = reason  # raised, returned_false, timeout, still_running, no_thread
        self.text = text  # for people: "raised OSError: port gone"
        self.error = error


_PASSED = _Outcome(True)


class _Entry:
    """Whether a context-manager adapter is entered now (see :meth:`AdapterHealth.context`)."""

    __slots__ = ("closed", "entered")

    def __init__(self, entered: bool = True, closed: bool = False) -> None:
        self.entered = entered  # the runtime enters adapters before the checks start
        self.closed = closed  # exited for good at shutdown: a restart must not enter it again


class _Watched:
    """One watched adapter. Fields below ``budget`` change under ``AdapterHealth._lock``;
    the checker thread is the only writer of the status and the counters."""

    __slots__ = (
        "adapter",
        "answer",
        "awaited",
        "budget",
        "check",
        "check_busy",
        "check_started",
        "check_stuck",
        "check_thread",
        "checker",
        "done",
        "entry",
        "failures",
        "generation",
        "held",
        "in_flight",
        "judged",
        "name",
        "status",
        "streak_checks",
        "streak_started",
        "trouble_at",
        "unrestartable_said",
        "users",
        "waker",
    )

    def __init__(
        self,
        name: str,
        adapter: object,
        check: Callable[[], object],
        users: list[tuple[str, bool]],
        budget: RestartBudget,
        entry: _Entry | None,
        status: str = OK,
        failures: int = 0,
        judged: int = 0,
        streak_checks: int = 0,
        streak_started: float | None = None,
        trouble_at: float = 0.0,
        unrestartable_said: bool = False,
        in_flight: int = 0,
        waker: threading.Event | None = None,
        checker: threading.Thread | None = None,
        done: bool = False,
        check_thread: threading.Thread | None = None,
        check_busy: bool = False,
        check_stuck: bool = False,
        check_started: float = 0.0,
        generation: int = 0,
        awaited: int | None = None,
        answer: _Outcome | None = None,
        held: set[str] | None = None,
    ) -> None:
        self.name = name
        self.adapter = adapter
        self.check = check
        self.users = users
        self.budget = budget
        self.entry = entry  # None: not a context manager
        self.status = status
        self.failures = failures  # failed checks in a row (since the last pass or restart)
        self.judged = judged  # checks judged so far
        self.streak_checks = streak_checks  # failed checks since the last pass, restarts included
        self.streak_started = streak_started  # clock time of the first of them
        self.trouble_at = trouble_at  # the last spend()/restarted() of the budget (clock time)
        self.unrestartable_said = unrestartable_said
        self.in_flight = in_flight  # calls of its devices running now (see calling())
        self.waker = waker  # the checker's private event, while it waits
        self.checker = checker
        self.done = done  # the checker ended as it should (stopped or gave up)
        self.check_thread = check_thread
        self.check_busy = check_busy  # a check thread is inside health_check()
        self.check_stuck = check_stuck  # ... and was judged overrun: known to hang, not waited for
        self.check_started = check_started
        self.generation = generation  # of the latest check started
        self.awaited = awaited  # the check the checker waits for; None: answers are late
        self.answer = answer
        self.held = set() if held is None else held  # devices this adapter holds offline


class _Managed:
    """Enters an adapter for the runtime's ``ExitStack`` and exits it only if it is still
    entered then (a restart may have exited it and failed to enter it again)."""

    def __init__(self, owner: AdapterHealth, name: str, adapter: object, entry: _Entry) -> None:
        self._owner = owner
        self._name = name
        self._adapter = adapter
        self._entry = entry

    def __enter__(self) -> object:
        # Like ExitStack.enter_context: the special method from the type; the value it
        # returns is not used, as devices are given the adapter instance itself.
        type(self._adapter).__enter__(self._adapter)  # type: ignore[attr-defined]
        with self._owner._lock:
            self._entry.entered, self._entry.closed = True, False
        return self._adapter

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        with self._owner._lock:
            self._entry.closed = True  # a restart still under way must not enter it again
            entered, self._entry.entered = self._entry.entered, False
        if not entered:
            log.info("adapter %s: not exited at shutdown, a restart left it exited", self._name)
            return None
        return type(self._adapter).__exit__(self._adapter, exc_type, exc, tb)  # type: ignore[attr-defined, no-any-return]


class AdapterHealth:
    """Health checks and restarts of a run's adapters (see the module docstring).

    ``adapters`` maps each port type to its adapter instance (only those with a callable
    ``health_check`` are watched); ``users`` maps a port type to the ``(device name,
    is_root)`` of the devices that use it (:func:`adapter_users`). ``device_down``, if given,
    says whether a device is down for reasons of its own, so that an adapter's recovery
    must not announce it ``online`` (it adds to the heartbeat-status rule of the module
    docstring). Thread-safe.
    """

    def __init__(
        self,
        adapters: dict[type, object],
        users: dict[type, list[tuple[str, bool]]],
        *,
        interval: float | None,
        policy: RestartPolicy,
        clock: ClockPort,
        health: HealthReporter,
        reporter: Reporter,
        device_down: Callable[[str], bool] | None = None,
    ) -> None:
        if interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0
        ):
            raise ValueError(f"health_check_interval must be > 0 or None, got {interval!r}")
        self.interval = interval
        self.policy = policy
        self._clock = clock
        self._health = health
        self._reporter = reporter
        self._device_down = device_down
        self._lock = threading.Lock()
        self._stopping = False
        self._started = False
        self._entries: dict[type, _Entry] = {
            port: _Entry() for port, a in adapters.items() if _is_context_manager(a)
        }
        self._adapters = dict(adapters)
        self._names = names = _port_names(adapters)
        self._watched: list[_Watched] = []
        if interval is not None:
            for port, adapter in adapters.items():
                check = getattr(adapter, "health_check", None)
                if callable(check):
                    self._watched.append(
                        _Watched(
                            name=names[port],
                            adapter=adapter,
                            check=check,
                            users=list(users.get(port, ())),
                            budget=RestartBudget(policy, clock),
                            entry=self._entries.get(port),
                            trouble_at=clock.now(),
                        )
                    )
        # Fixed from here on, so the hot path (blocked, calling) reads it without a lock.
        self._uses: dict[str, tuple[_Watched, ...]] = {}
        for watched in self._watched:
            for device, _is_root in watched.users:
                self._uses[device] = (*self._uses.get(device, ()), watched)
        self._holds: dict[str, set[str]] = {}  # device -> adapters holding it offline

    # -- the run ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start one checker thread per watched adapter (none without an interval)."""
        if self._started:
            raise RuntimeError("AdapterHealth.start() was called twice")
        self._started = True
        if not self._watched:
            return
        assert self.interval is not None
        # Due times are fixed here, on the caller's thread: time a test moves right after
        # start() is never lost on a thread that has not read the clock yet.
        first = self._clock.now() + self.interval
        for watched in self._watched:
            watched.checker = threading.Thread(
                target=self._checker_main,
                args=(watched, first),
                name=f"adapter-health:{watched.name}",
                daemon=True,  # a reset() that hangs must not keep the process alive
            )
            watched.checker.start()

    def stop(self, timeout: float) -> None:
        """Stop the checks: wake the checkers (a restart in its cooldown is abandoned) and
        join them, and any check still within its interval, within ``timeout`` real seconds
        in all; name what is left behind. A check already judged overrun is not waited for."""
        with self._lock:
            self._stopping = True
            wakers = [w.waker for w in self._watched if w.waker is not None]
        for waker in wakers:
            waker.set()
        real = SystemClock()  # the bound is for systemd and people, not for a fake clock
        deadline = real.now() + timeout
        threads = [w.checker for w in self._watched if w.checker is not None]
        with self._lock:  # (check threads are only added under it)
            # A check already judged overrun is known to hang: shutdown does not wait for
            # it. One that was still within its interval gets what is left of the bound.
            threads += [
                w.check_thread
                for w in self._watched
                if w.check_thread is not None and not (w.check_busy and w.check_stuck)
            ]
        for thread in threads:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - real.now()))
        checkers = [w.checker.name for w in self._watched if _alive(w.checker)]
        checks = [w.check_thread.name for w in self._watched if _alive(w.check_thread)]
        if checkers:
            log.error(
                "adapter health thread(s) still running after %gs (a restart hangs), "
                "left behind: %s",
                timeout,
                ", ".join(checkers),
            )
        if checks:
            log.warning(
                "health check(s) still running after %gs, left behind: %s",
                timeout,
                ", ".join(checks),
            )

    def problem(self) -> str | None:
        """For the watchdog: why adapter health is unsound (a checker died), or None."""
        dead = [
            w.checker.name
            for w in self._watched
            if w.checker is not None
            and w.checker.ident is not None
            and not w.checker.is_alive()
            and not w.done
        ]
        return f"adapter health thread(s) died: {', '.join(dead)}" if dead else None

    # -- what the devices ask --------------------------------------------------------------

    def blocked(self, device: str) -> bool:
        """True while an adapter ``device`` uses is restarting or failed: do not call it."""
        adapters = self._uses.get(device)
        if not adapters:
            return False
        with self._lock:
            return any(w.status in _BLOCKING for w in adapters)

    def holds_offline(self, device: str) -> bool:
        """True while an adapter ``device`` uses is not ``ok``: its availability must stay
        ``offline`` whatever the device itself would announce."""
        if device not in self._uses:
            return False
        with self._lock:
            return bool(self._holds.get(device))

    def calling(self, device: str) -> AbstractContextManager[bool]:
        """Wrap one handler call of ``device``: gives False when the device is blocked (do
        not call), else True and counts the call as in flight, so a restart of an adapter it
        uses waits (up to one interval) for it to return. Not for a ``@app.device`` loop,
        whose one call lasts the whole run."""
        adapters = self._uses.get(device)
        if not adapters:
            return contextlib.nullcontext(True)
        return self._in_flight(adapters)

    @contextlib.contextmanager
    def _in_flight(self, adapters: tuple[_Watched, ...]) -> Iterator[bool]:
        with self._lock:
            allowed = not any(w.status in _BLOCKING for w in adapters)
            if allowed:
                for w in adapters:
                    w.in_flight += 1
        try:
            yield allowed
        finally:
            if allowed:
                with self._lock:
                    for w in adapters:
                        w.in_flight -= 1
                        if w.in_flight == 0 and w.waker is not None:
                            w.waker.set()  # a restart may be waiting for the calls to end

    def context(self, port: type) -> AbstractContextManager[object]:
        """Enter the context-manager adapter of ``port`` for the runtime's ``ExitStack``
        (``stack.enter_context(adapter_health.context(port))``); at shutdown it is exited only
        if it is still entered, and a restart under way does not enter it again."""
        entry = self._entries.get(port)
        if entry is None:
            raise TypeError(f"the adapter for {port.__name__} is not a context manager")
        return _Managed(self, self._names[port], self._adapters[port], entry)

    # -- what the heartbeat shows ----------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, object]]:
        """``{"GasMeterPort": {"status": "ok", "failures": 0, "restarts": 0}}`` for every
        watched adapter (empty without an interval)."""
        with self._lock:
            return {
                w.name: {"status": w.status, "failures": w.failures, "restarts": w.budget.restarts}
                for w in self._watched
            }

    def judged(self, name: str) -> int:
        """How many checks of the adapter of port ``name`` have been judged, passed or failed
        (all their effects published): a progress count for tests and diagnostics."""
        with self._lock:
            for w in self._watched:
                if w.name == name:
                    return w.judged
        raise KeyError(f"no watched adapter {name!r}")

    # -- the checker thread ----------------------------------------------------------------

    def _checker_main(self, w: _Watched, first: float) -> None:
        try:
            self._watch(w, first)
            w.done = True
        except BaseException:  # never die silently
            log.critical("adapter %s: its health thread ended unexpectedly", w.name, exc_info=True)
            raise

    def _watch(self, w: _Watched, due: float) -> None:
        assert self.interval is not None
        interval = self.interval
        while self._sleep_until(w, due):
            outcome = self._check(w)
            if outcome is None:
                return  # stopping
            verdict_at = self._clock.now()
            restart = self._judge(w, outcome)
            if w.status == FAILED:
                return  # given up: nothing more to check
            if restart:
                if not self._restart(w, verdict_at):
                    return  # stopping during the restart
                due = self._clock.now()  # did it work? check at once
                continue
            # The first due time after the verdict: an overrun judged exactly at the next
            # due time must not count that time again, and a starved thread skips, not bursts.
            now = self._clock.now()
            while due <= now:
                due += interval

    def _sleep_until(self, w: _Watched, deadline: float) -> bool:
        """Wait for ``deadline`` on the clock; False when stopping."""
        while True:
            now = self._clock.now()
            waker = threading.Event()
            with self._lock:
                if self._stopping:
                    return False
                if now >= deadline:
                    return True
                w.waker = waker
            clock_mod.wait(self._clock, waker, deadline - now)

    def _check(self, w: _Watched) -> _Outcome | None:
        """Run one check on a check thread and wait for its answer for at most one
        interval; None when stopping."""
        assert self.interval is not None
        now = self._clock.now()
        with self._lock:
            busy, started = w.check_busy, w.check_started
            if not busy:
                w.generation += 1
                generation = w.generation
                w.check_busy, w.check_stuck, w.check_started = True, False, now
                w.awaited, w.answer = generation, None
        if busy:
            return _Outcome(
                False,
                "still_running",
                f"its health check has not returned for {now - started:g} s",
            )
        thread = threading.Thread(
            target=self._run_check,
            args=(w, generation),
            name=f"adapter-check:{w.name}",
            daemon=True,  # a check that hangs forever must not keep the process alive
        )
        with self._lock:
            w.check_thread = thread  # before it runs: stop() must find every check thread
        try:
            thread.start()
        except RuntimeError as exc:  # no more threads: the system is in trouble, say so
            with self._lock:
                w.check_busy, w.awaited, w.check_thread = False, None, None
            return _Outcome(False, "no_thread", f"its check thread did not start: {exc}", exc)
        bound = now + self.interval
        while True:
            now = self._clock.now()
            waker = threading.Event()
            with self._lock:
                if w.answer is not None:
                    answer, w.answer, w.awaited = w.answer, None, None
                    return answer
                if self._stopping:
                    w.awaited = None
                    return None
                if now >= bound:
                    w.awaited = None  # from now on its answer is late, and dropped
                    w.check_stuck = True
                    return _Outcome(
                        False,
                        "timeout",
                        f"its health check did not return within {self.interval:g} s",
                    )
                w.waker = waker  # the check thread sets it when it answers
            clock_mod.wait(self._clock, waker, bound - now)

    def _run_check(self, w: _Watched, generation: int) -> None:
        """The check thread: one ``health_check()`` call, its answer handed to the checker."""
        outcome = _Outcome(False, "raised", "its health check thread crashed")
        try:
            try:
                if w.check():
                    outcome = _PASSED
                else:
                    outcome = _Outcome(False, "returned_false", "its health check returned false")
            except Exception as exc:
                outcome = _Outcome(
                    False, "raised", f"its health check raised {type(exc).__name__}: {exc}", exc
                )
        except BaseException:  # SystemExit and the like: never silently
            log.critical("adapter %s: its check thread ended unexpectedly", w.name, exc_info=True)
            raise
        finally:
            with self._lock:
                w.check_busy = False
                late = w.awaited != generation
                if not late:
                    w.answer = outcome
                    if w.waker is not None:
                        w.waker.set()
            if late:
                log.debug("adapter %s: a health check returned after it was judged overrun", w.name)

    def _judge(self, w: _Watched, outcome: _Outcome) -> bool:
        """Apply a verdict: status, counters, devices, logs and reports. True when a restart
        is due (the status is ``restarting`` then)."""
        now = self._clock.now()
        restart = False
        if outcome.passed:
            with self._lock:
                was, checks = w.status, w.streak_checks
                since = w.streak_started if w.streak_started is not None else now
                w.status, w.failures, w.streak_checks, w.streak_started = OK, 0, 0, None
                renewed = bool(w.budget.restarts) and (
                    now - w.trouble_at >= self.policy.sustained_reset
                )
                if renewed:
                    w.budget.restarts = 0
                back = self._release(w) if was != OK else []
            if was != OK:
                log.info(
                    "adapter %s recovered after %d failed check(s) in %.1f s",
                    w.name,
                    checks,
                    now - since,
                )
            if renewed:
                log.info(
                    "adapter %s: healthy for %g s, its restart count starts again from 0",
                    w.name,
                    self.policy.sustained_reset,
                )
            for device, is_root in back:
                if not self._down_on_its_own(device):
                    self._health.publish_device_available(device, is_root=is_root)
        else:
            restartable = w.entry is not None or callable(getattr(w.adapter, "reset", None))
            with self._lock:
                first = w.status == OK
                w.failures += 1
                w.streak_checks += 1
                if first:
                    w.status, w.streak_started = FAILING, now
                gone = self._hold(w) if first else []
                failures = w.failures
                if failures >= self.policy.after_failures and restartable:
                    if w.budget.spend():
                        w.status, restart = RESTARTING, True
                    else:
                        w.status = FAILED
                    w.trouble_at = now
            if first:
                self._reporter.report(
                    _unhealthy(w.name, outcome),
                    device=None,
                    details={"adapter": w.name, "reason": outcome.reason},
                    log=log,
                    message=f"adapter {w.name} is failing: {outcome.text}",
                    traceback=outcome.error is not None,
                )
                for device, is_root in gone:
                    self._health.publish_device_unavailable(
                        device, is_root=is_root, keep_tracking=True
                    )
            else:
                log.debug(
                    "adapter %s: check failed (%d in a row): %s", w.name, failures, outcome.text
                )
            if w.status == FAILED:
                self._give_up(w, outcome)
            elif (
                failures >= self.policy.after_failures
                and not restartable
                and not w.unrestartable_said
            ):
                w.unrestartable_said = True
                log.warning(
                    "adapter %s cannot be restarted (no reset(), not a context manager): "
                    "it stays failing until a check passes",
                    w.name,
                )
        with self._lock:
            w.judged += 1  # last: whoever sees it sees every effect of the verdict
        return restart

    def _give_up(self, w: _Watched, outcome: _Outcome) -> None:
        restarts = w.budget.restarts
        self._reporter.report(
            RestartsExhausted(
                f"adapter {w.name} failed again after {restarts} restart(s) ({outcome.text}); "
                "its devices stay offline until the agent restarts"
            ),
            device=None,
            details={"adapter": w.name, "restarts": restarts, "reason": outcome.reason},
            log=log,
            message=f"adapter {w.name} given up after {restarts} restart(s): {outcome.text}",
            level=logging.ERROR,
        )
        for device, _is_root in w.users:
            self._health.set_device_status(device, "offline")

    def _restart(self, w: _Watched, since: float) -> bool:
        """One restart attempt (the status is ``restarting`` since ``since``); False when
        stopping. Its waits count from ``since``, not from when this thread got here."""
        assert self.interval is not None
        reset = getattr(w.adapter, "reset", None)
        how = "reset()" if callable(reset) else "exit and enter"
        cooldown = self.policy.cooldown_before(w.budget.restarts)
        log.log(
            logging.WARNING if self.policy.worth_logging(w.budget.restarts) else logging.DEBUG,
            "adapter %s: %s after %d failed check(s): %s in %g s",
            w.name,
            self.policy.restart_text(w.budget.restarts),
            w.failures,
            how,
            cooldown,
        )
        ended = self._let_calls_end(w, since, since + self.interval)
        if ended is None:
            return False
        if not callable(reset):
            self._exit(w)
        if not self._sleep_until(w, ended + cooldown):
            return False
        if callable(reset):
            self._attempt(w, "reset", reset)
        else:
            self._enter(w)
        now = self._clock.now()
        with self._lock:
            w.budget.restarted()
            w.trouble_at = now
            # Unblocked, still offline: the check that follows at once decides.
            w.status, w.failures = FAILING, 0
        return True

    def _let_calls_end(self, w: _Watched, since: float, deadline: float) -> float | None:
        """Wait until no call of the adapter's devices is running, at most until
        ``deadline``. Returns when the wait ended (``since`` if there was none to wait for),
        None when stopping."""
        waited = False
        while True:
            now = self._clock.now()
            waker = threading.Event()
            with self._lock:
                if self._stopping:
                    return None
                if w.in_flight == 0:
                    return now if waited else since
                if now >= deadline:
                    running = w.in_flight
                    break
                w.waker = waker  # the end of the last call sets it
            waited = True
            clock_mod.wait(self._clock, waker, deadline - now)
        log.warning(
            "adapter %s: %d device call(s) still running, restarting it anyway", w.name, running
        )
        return now

    def _exit(self, w: _Watched) -> None:
        entry = w.entry
        assert entry is not None
        with self._lock:
            entered, entry.entered = entry.entered, False
        if entered:  # an earlier attempt may have failed to enter it again
            exit_ = type(w.adapter).__exit__  # type: ignore[attr-defined]
            self._attempt(w, "__exit__", lambda: exit_(w.adapter, None, None, None))

    def _enter(self, w: _Watched) -> None:
        entry = w.entry
        assert entry is not None
        with self._lock:
            if entry.closed:
                return  # shut down meanwhile: stay exited
        enter = type(w.adapter).__enter__  # type: ignore[attr-defined]
        if not self._attempt(w, "__enter__", lambda: enter(w.adapter)):
            return
        with self._lock:
            too_late = entry.closed  # exited at shutdown while __enter__ ran
            entry.entered = not too_late
        if too_late:
            exit_ = type(w.adapter).__exit__  # type: ignore[attr-defined]
            self._attempt(w, "__exit__", lambda: exit_(w.adapter, None, None, None))

    def _attempt(self, w: _Watched, step: str, call: Callable[[], object]) -> bool:
        """One step of a restart; its failure is reported (the attempt still counts)."""
        try:
            call()
        except Exception as exc:
            self._reporter.report(
                exc,
                device=None,
                details={"adapter": w.name, "phase": step},
                log=log,
                message=f"adapter {w.name}: restart failed: {step} raised "
                f"{type(exc).__name__}: {exc}",
                traceback=True,
            )
            return False
        return True

    # -- devices held offline (call with self._lock held) ----------------------------------

    def _hold(self, w: _Watched) -> list[tuple[str, bool]]:
        """Hold the adapter's devices offline; those no other adapter held already."""
        newly = []
        for device, is_root in w.users:
            holders = self._holds.setdefault(device, set())
            if not holders:
                newly.append((device, is_root))
            holders.add(w.name)
            w.held.add(device)
        return newly

    def _release(self, w: _Watched) -> list[tuple[str, bool]]:
        """Release the adapter's devices; those no other adapter holds any more."""
        freed = []
        for device, is_root in w.users:
            if device not in w.held:
                continue
            holders = self._holds.get(device, set())
            holders.discard(w.name)
            if not holders:
                self._holds.pop(device, None)
                freed.append((device, is_root))
        w.held.clear()
        return freed

    def _down_on_its_own(self, device: str) -> bool:
        status = self._health.status_of(device)
        if status is None or status.status in _OWN_TROUBLE:
            return True  # not announced yet, given up, stalled or restarting by itself
        return self._device_down is not None and self._device_down(device)


def _unhealthy(name: str, outcome: _Outcome) -> AdapterUnhealthy:
    error = AdapterUnhealthy(f"adapter {name} failed its health check: {outcome.text}")
    error.__cause__ = outcome.error  # the traceback shows the check's own exception
    return error


def _is_context_manager(adapter: object) -> bool:
    # The runtime's own test (duck typing), so both agree on what gets entered.
    return hasattr(adapter, "__enter__") and hasattr(adapter, "__exit__")


def _alive(thread: threading.Thread | None) -> bool:
    return thread is not None and thread.is_alive()


def _port_names(adapters: dict[type, object]) -> dict[type, str]:
    """The heartbeat key of each port: its class name, or module.qualname for two ports
    of the same name (a heartbeat key must name one adapter)."""
    counts: dict[str, int] = {}
    for port in adapters:
        counts[port.__name__] = counts.get(port.__name__, 0) + 1
    return {
        port: port.__name__
        if counts[port.__name__] == 1
        else f"{port.__module__}.{port.__qualname__}"
        for port in adapters
    }
