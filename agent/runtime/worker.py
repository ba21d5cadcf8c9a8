"""Device threads: init, then the handler, loop or command handlers, one thing at a time.

* :class:`Worker` — a ``command`` device (take commands, call the handler with ``topic`` and
  ``payload``, publish a returned dict) or a ``device`` (call the user's function once,
  usually a loop around ``ctx.sleep`` or ``ctx.commands``; if it returns having registered
  ``on_command`` handlers, keep serving them until shutdown);
* :class:`TelemetryWorker` — a telemetry device, or a coalescing group of them: take ticks,
  run each due member's cycle (:mod:`agent.runtime.telemetry`). A thin loop: what a cycle
  does lives in that module.

A failing handler call is reported (log + error payload) and the device goes on; a failing
``init`` or a device function that raises ends that device (reported, availability offline)
while the others keep running. The thread never dies silently.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from agent.clock import ClockPort
from agent.context import Command, DeviceContext
from agent.errors import AdapterUnhealthy, InvalidPayload, RestartsExhausted
from agent.injection import Lazy, resolve
from agent.persist import DeviceStore, save_at_shutdown
from agent.registry import Registration
from agent.runtime.inbox import Inbox, Tick
from agent.runtime.reporting import Reporter
from agent.runtime.stalls import CallWatch
from agent.runtime.supervisor import Supervisor
from agent.runtime.telemetry import TelemetryCycle

log = logging.getLogger("agent.worker")

Gate = Callable[[str], AbstractContextManager[bool]]
"""``gate(device)`` wraps one handler call: it gives False when the device must not be called
now (an adapter it uses is restarting or failed; see :mod:`agent.runtime.adapter_health`)."""


def _open_gate(device: str) -> AbstractContextManager[bool]:
    return contextlib.nullcontext(True)


def report_handler_failure(
    reporter: Reporter,
    exc: BaseException,
    device: str,
    is_root: bool,
    details: dict[str, object],
) -> None:
    """One line at WARNING (a rejected payload is routine), the traceback at DEBUG, and the
    error payload — at the reporter's bounded rate."""
    reporter.report(
        exc,
        device=device,
        is_root=is_root,
        details=details,
        log=log,
        message=f"device {device!r}: handler failed: {type(exc).__name__}: {exc}",
        traceback=True,
    )


def _prepare(
    reg: Registration, ctx: DeviceContext, shared: dict[Any, object], store: DeviceStore | None
) -> dict[str, object]:
    """Run the ``init`` factory (its result becomes injectable by type), then resolve the
    handler's parameters from ``shared`` (settings, clock, adapters) and this device's own:
    its context, its logger (made only if asked for) and its store, loaded before ``init``.
    Built here, once, and dropped: 1,000 devices need not keep 1,000 provider tables."""
    providers = {
        **shared,
        DeviceContext: ctx,
        logging.Logger: Lazy(functools.partial(logging.getLogger, f"agent.device.{reg.name}")),
    }
    if store is not None:
        if not store.loaded:
            store.load()  # the same object across restarts: what is in memory is newer
        providers[DeviceStore] = store
    if reg.init is not None:
        value = reg.init(
            **resolve(
                reg.init_params or [],
                providers,
                role="init factory",
                func_name=reg.init.__qualname__,
            )
        )
        if value is not None:
            providers[type(value)] = value
    return resolve(
        reg.params, providers, role=f"@app.{reg.kind} handler", func_name=reg.func.__qualname__
    )


def _fail(reg: Registration, exc: Exception, phase: str, health: Any, reporter: Reporter) -> None:
    """A device that cannot go on as it is: reported, ``offline``, still in the heartbeat
    (the supervisor then restarts it or gives it up)."""
    reporter.report(
        exc,
        device=reg.name,
        is_root=reg.is_root,
        details={"phase": phase},
        log=log,
        message=f"device {reg.name!r} stopped: its {phase} raised {type(exc).__name__}: {exc}",
        level=logging.ERROR,
        traceback=True,
    )
    health.record_call(reg.name, exc)
    health.publish_device_unavailable(reg.name, is_root=reg.is_root, keep_tracking=True)
    health.set_device_status(reg.name, "error")


class DeviceReturned(RuntimeError):
    """A ``@app.device`` function returned while the agent runs, with no command handlers."""


class Worker:
    """Owns the thread of one ``device`` or ``command`` device, restarting it as the
    supervisor allows (:mod:`agent.runtime.supervisor`)."""

    def __init__(
        self,
        reg: Registration,
        ctx: DeviceContext,
        inbox: Inbox,
        providers: dict[Any, object],
        *,
        health: Any,
        reporter: Reporter,
        supervisor: Supervisor,
        watch: CallWatch,
        gate: Gate = _open_gate,
        store: DeviceStore | None = None,
    ) -> None:
        self.reg = reg
        self._gate = gate
        self.ctx = ctx
        self.inbox = inbox
        self._providers = providers
        self._health = health
        self._reporter = reporter
        self._supervisor = supervisor
        self._watch = watch
        self.store = store
        self.thread = threading.Thread(target=self._run, name=f"device:{reg.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.reg.name

    @property
    def device_names(self) -> list[str]:
        return [self.reg.name]

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException:
            log.critical("device %r: thread ended unexpectedly", self.reg.name, exc_info=True)
            raise
        finally:
            if self.store is not None:
                save_at_shutdown(self.store)  # on this thread, after the last handler call

    def _serve(self) -> None:
        while True:
            cause = self._run_once()
            if cause is None or self.inbox.closed:
                return
            if not self._supervisor.restart(self.reg, self.inbox, cause):
                if self._supervisor.given_up(self.reg.name):
                    self._refuse_commands()
                return
            self.ctx.forget_handlers()  # the fresh call registers its own

    def _run_once(self) -> BaseException | None:
        """Start the device and serve it; the failure that calls for a restart, or None
        when it ended because the agent is shutting down."""
        reg = self.reg
        try:
            kwargs = _prepare(reg, self.ctx, self._providers, self.store)
        except Exception as exc:
            _fail(reg, exc, "init", self._health, self._reporter)
            return exc
        self._health.publish_device_available(reg.name, is_root=reg.is_root)
        try:
            if reg.kind == "command":
                return self._serve_commands(kwargs)
            reg.func(**kwargs)
            if self.ctx.command_handlers:
                self._serve_handlers()
                return None
            if self.ctx.shutdown_requested or self.inbox.closed:
                return None
            raise DeviceReturned(
                f"device {reg.name!r} returned while the agent runs and registered no "
                "command handlers (loop until ctx.shutdown_requested)"
            )
        except Exception as exc:
            _fail(reg, exc, "run", self._health, self._reporter)
            return exc

    def _serve_commands(self, kwargs: dict[str, object]) -> BaseException | None:
        # Bound once: per command only the message's own arguments are passed.
        handler = functools.partial(self.reg.func, **kwargs)
        names = {p.name for p in self.reg.params if p.annotation is None}
        wants_topic, wants_payload = "topic" in names, "payload" in names
        failures = 0
        while True:
            item = self.inbox.get()
            if item is None:
                return None
            if isinstance(item, Command):
                args: dict[str, object] = {}
                if wants_topic:
                    args["topic"] = item.topic
                if wants_payload:
                    args["payload"] = item.payload
                error = self._call(handler, args, item.topic)
                failures = 0 if error is None else failures + 1
                if error is not None:
                    self._supervisor.budget(self.reg.name).failed()
                    if failures >= self._supervisor.policy.after_failures:
                        return error

    def _call(
        self, handler: Callable[..., Any], args: dict[str, object], topic: str
    ) -> Exception | None:
        """One command handler call, ``handler(**args)``, timed; its failure is reported
        and survived."""
        with self._gate(self.reg.name) as allowed:
            if not allowed:  # an adapter it uses is restarting or failed: no call now
                self._reporter.report(
                    AdapterUnhealthy(
                        f"device {self.reg.name!r} is not called while an adapter it uses is "
                        "restarting or failed: command dropped"
                    ),
                    device=self.reg.name,
                    is_root=self.reg.is_root,
                    details={"topic": topic},
                    log=log,
                    message=f"device {self.reg.name!r}: command dropped, its adapter is down",
                    count_key="dropped",
                )
                return None
            return self._timed(handler, args, topic)

    def _timed(
        self, handler: Callable[..., Any], args: dict[str, object], topic: str
    ) -> Exception | None:
        self._watch.begin()
        try:
            result = handler(**args)
            if result is not None:
                self.ctx.publish_state(result)
        except InvalidPayload as exc:
            # The payload's fault, not the device's: reported like any failure, but it
            # counts towards no restart, or hostile input could get a sound device given up.
            report_handler_failure(
                self._reporter, exc, self.reg.name, self.reg.is_root, {"topic": topic}
            )
            return None
        except Exception as exc:
            report_handler_failure(
                self._reporter, exc, self.reg.name, self.reg.is_root, {"topic": topic}
            )
            self._health.record_call(self.reg.name, exc)
            self._health.set_device_status(self.reg.name, "error")
            return exc
        finally:
            self._supervisor.call_returned(self._watch)
        self._health.record_call(self.reg.name)
        self._health.set_device_status(self.reg.name, "ok")
        return None

    def _serve_handlers(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            if isinstance(item, Command):
                self.ctx.dispatch(item)

    def _refuse_commands(self) -> None:
        """A device given up: commands still arrive; each is reported, none is handled."""
        while (item := self.inbox.get()) is not None:
            if isinstance(item, Command):
                self._reporter.report(
                    RestartsExhausted(f"device {self.reg.name!r} was given up: command dropped"),
                    device=self.reg.name,
                    is_root=self.reg.is_root,
                    details={"topic": item.topic},
                    log=log,
                    message=f"device {self.reg.name!r} is given up: dropped a command",
                    count_key="dropped",
                )


HOLD_AT_MOST = 0.02
"""Seconds. A coalescing group's quick readings of one tick are held back and written to the
broker together (``MqttClient.hold_writes``: their acknowledgements then do not keep two
threads trading the GIL at every reading), but never for longer than this plus one quick
reading: a reading that took longer is *slow*, and what waits goes out before and after
it (1-wire: 750 ms a sensor). A member is judged by its previous cycle; a first cycle
counts as quick."""


class WriteHold(Protocol):
    """What :class:`TelemetryWorker` needs of the MQTT client to batch a group's writes."""

    def hold_writes(self) -> None: ...

    def release_writes(self) -> None: ...


class Member:
    """A telemetry device run by a :class:`TelemetryWorker` (read-only by convention)."""

    __slots__ = ("ctx", "providers", "reg", "store")

    def __init__(
        self,
        reg: Registration,
        ctx: DeviceContext,
        providers: dict[Any, object],
        store: DeviceStore | None = None,
    ) -> None:
        self.reg = reg
        self.ctx = ctx
        self.providers = providers  # shared by all devices (see _prepare)
        self.store = store


class TelemetryWorker:
    """Owns the thread of a telemetry device, or of a coalescing group of them.

    Each tick names the members due; they run one after another in registration order, each
    through its :class:`~agent.runtime.telemetry.TelemetryCycle`, which also starts (runs
    ``init``) and restarts its device without holding up the others.
    """

    def __init__(
        self,
        name: str,
        members: list[Member],
        inbox: Inbox,
        *,
        clock: ClockPort,
        health: Any,
        reporter: Reporter,
        supervisor: Supervisor,
        timeouts: dict[str, float | None],
        reminder_interval: float | None,
        gate: Gate = _open_gate,
        writes: WriteHold | None = None,
    ) -> None:
        self.name = name
        self.members = members
        self._writes = writes  # None: each reading is written as it comes
        self._clock = clock
        self._slow: set[str] = set()  # members whose last cycle took over HOLD_AT_MOST
        self._held_since: float | None = None  # clock time the writes began to be held
        self.inbox = inbox
        self.cycles = [
            TelemetryCycle(
                m.reg,
                m.ctx,
                functools.partial(self._start, m),
                inbox=inbox,
                clock=clock,
                health=health,
                reporter=reporter,
                supervisor=supervisor,
                watch=supervisor.watch(m.reg, timeouts.get(m.reg.name)),
                reminder_interval=reminder_interval,
                gate=gate,
                store=m.store,
                before_waiting=self._release if writes is not None else None,
            )
            for m in members
        ]
        self._health = health
        self._reporter = reporter
        self._supervisor = supervisor
        thread_name = f"group:{name}" if members[0].reg.telemetry.group else f"device:{name}"
        self.thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    @property
    def device_names(self) -> list[str]:
        return [m.reg.name for m in self.members]

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException:
            log.critical("telemetry thread %r ended unexpectedly", self.name, exc_info=True)
            raise
        finally:  # on this thread, after the last cycle
            for member in self.members:
                if member.store is not None:
                    save_at_shutdown(member.store)

    def _serve(self) -> None:
        self.inbox.put_tick([c.name for c in self.cycles])  # the first reading now
        while True:
            item = self.inbox.get()
            if item is None:
                return
            if isinstance(item, Tick):
                due = [cycle for cycle in self.cycles if cycle.name in item.due]
                if self._writes is None:
                    for cycle in due:
                        cycle.run()
                else:
                    self._run_holding(due, self._writes)

    def _run_holding(self, due: list[TelemetryCycle], writes: WriteHold) -> None:
        """Run the due cycles, holding their quick readings' writes back (see
        :data:`HOLD_AT_MOST`)."""
        clock = self._clock
        try:
            for cycle in due:
                if cycle.name in self._slow:
                    self._release()  # not kept waiting behind a slow reading
                elif self._held_since is None:
                    writes.hold_writes()
                    self._held_since = clock.now()
                began = clock.now()
                cycle.run()  # a retry's backoff releases first (before_waiting)
                ended = clock.now()
                if ended - began > HOLD_AT_MOST:
                    self._slow.add(cycle.name)
                else:
                    self._slow.discard(cycle.name)
                if self._held_since is not None and ended - self._held_since > HOLD_AT_MOST:
                    self._release()
        finally:
            self._release()

    def _release(self) -> None:
        """Write what is held (if anything) now; the next quick reading holds again."""
        assert self._writes is not None
        self._writes.release_writes()
        self._held_since = None

    def _start(self, member: Member) -> Callable[[], object]:
        """Run the member's ``init`` and plan its calls; raises what ``init`` raised (the
        cycle reports it and restarts the device)."""
        reg = member.reg
        try:
            kwargs = _prepare(reg, member.ctx, member.providers, member.store)
        except Exception as exc:
            _fail(reg, exc, "init", self._health, self._reporter)
            raise
        if self._supervisor.budget(reg.name).restarts == 0:
            # The first start. A restart follows failed readings: the device stays offline
            # until a reading succeeds (the cycle then says online), instead of flapping.
            self._health.publish_device_available(reg.name, is_root=reg.is_root)
        return functools.partial(reg.func, **kwargs)
