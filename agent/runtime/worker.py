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

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.clock import ClockPort
from agent.context import Command, DeviceContext
from agent.injection import Lazy, resolve
from agent.persist import DeviceStore, save_at_shutdown
from agent.registry import Registration
from agent.runtime.inbox import Inbox, Tick
from agent.runtime.reporting import Reporter
from agent.runtime.telemetry import TelemetryCycle

log = logging.getLogger("agent.worker")


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
    """A device that cannot go on: reported, ``offline``, still listed in the heartbeat."""
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
    health.publish_device_unavailable(reg.name, is_root=reg.is_root)
    health.set_device_status(reg.name, "error")


class Worker:
    """Owns the thread of one ``device`` or ``command`` device."""

    def __init__(
        self,
        reg: Registration,
        ctx: DeviceContext,
        inbox: Inbox,
        providers: dict[Any, object],
        *,
        health: Any,
        reporter: Reporter,
        store: DeviceStore | None = None,
    ) -> None:
        self.reg = reg
        self.ctx = ctx
        self.inbox = inbox
        self._providers = providers
        self._health = health
        self._reporter = reporter
        self.store = store
        self.thread = threading.Thread(target=self._run, name=f"device:{reg.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.reg.name

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            if self.store is not None:
                save_at_shutdown(self.store)  # on this thread, after the last handler call

    def _serve(self) -> None:
        reg = self.reg
        try:
            kwargs = _prepare(reg, self.ctx, self._providers, self.store)
        except Exception as exc:
            _fail(reg, exc, "init", self._health, self._reporter)
            return
        self._health.publish_device_available(reg.name, is_root=reg.is_root)
        try:
            if reg.kind == "command":
                self._serve_commands(kwargs)
            else:
                reg.func(**kwargs)
                if self.ctx.command_handlers:
                    self._serve_handlers()
        except Exception as exc:
            _fail(reg, exc, "run", self._health, self._reporter)
        except BaseException:
            log.critical("device %r: thread ended by an unexpected exit", reg.name, exc_info=True)
            raise

    def _serve_commands(self, kwargs: dict[str, object]) -> None:
        func = self.reg.func
        names = {p.name for p in self.reg.params if p.annotation is None}
        while True:
            item = self.inbox.get()
            if item is None:
                return
            if isinstance(item, Command):
                per_call = {"topic": item.topic, "payload": item.payload}
                args = {k: v for k, v in per_call.items() if k in names}
                self._call(lambda a=args: func(**a, **kwargs), {"topic": item.topic})

    def _call(self, func: Callable[[], Any], details: dict[str, object]) -> None:
        """One command handler call whose failure is reported and survived."""
        try:
            result = func()
            if result is not None:
                self.ctx.publish_state(result)
        except Exception as exc:
            report_handler_failure(self._reporter, exc, self.reg.name, self.reg.is_root, details)
            self._health.set_device_status(self.reg.name, "error")
        else:
            self._health.set_device_status(self.reg.name, "ok")

    def _serve_handlers(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            if isinstance(item, Command):
                self.ctx.dispatch(item)


@dataclass(frozen=True)
class Member:
    """A telemetry device run by a :class:`TelemetryWorker`."""

    reg: Registration
    ctx: DeviceContext
    providers: dict[Any, object]  # shared by all devices (see _prepare)
    store: DeviceStore | None = None


class TelemetryWorker:
    """Owns the thread of a telemetry device, or of a coalescing group of them.

    Each tick names the members due; they run one after another in registration order, each
    through its :class:`~agent.runtime.telemetry.TelemetryCycle`. A member whose ``init``
    fails is reported and dropped; the others go on.
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
        reminder_interval: float | None,
    ) -> None:
        self.name = name
        self.members = members
        self.inbox = inbox
        self._clock = clock
        self._health = health
        self._reporter = reporter
        self._reminder_interval = reminder_interval
        thread_name = f"group:{name}" if members[0].reg.telemetry.group else f"device:{name}"
        self.thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self._serve()
        finally:  # on this thread, after the last cycle
            for member in self.members:
                if member.store is not None:
                    save_at_shutdown(member.store)

    def _serve(self) -> None:
        cycles = [c for c in map(self._cycle, self.members) if c is not None]
        if not cycles:
            return
        self.inbox.put_tick([c.name for c in cycles])  # the first reading now, not later
        try:
            while True:
                item = self.inbox.get()
                if item is None:
                    return
                if isinstance(item, Tick):
                    for cycle in cycles:
                        if cycle.name in item.due:
                            cycle.run()
        except BaseException:
            log.critical("telemetry thread %r ended unexpectedly", self.name, exc_info=True)
            raise

    def _cycle(self, member: Member) -> TelemetryCycle | None:
        reg = member.reg
        try:
            kwargs = _prepare(reg, member.ctx, member.providers, member.store)
        except Exception as exc:
            _fail(reg, exc, "init", self._health, self._reporter)
            return None
        self._health.publish_device_available(reg.name, is_root=reg.is_root)
        return TelemetryCycle(
            reg,
            member.ctx,
            functools.partial(reg.func, **kwargs),
            inbox=self.inbox,
            clock=self._clock,
            health=self._health,
            reporter=self._reporter,
            reminder_interval=self._reminder_interval,
            store=member.store,
        )
