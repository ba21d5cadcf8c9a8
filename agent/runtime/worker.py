"""A device's thread: init, then its handler, loop or command handlers, one thing at a time.

Three archetypes share one worker:

* ``telemetry`` — take ticks from the inbox, call the handler, publish the dict it returns;
* ``command`` — take commands, call the handler with ``topic`` and ``payload``, publish a
  returned dict;
* ``device`` — call the user's function once (usually a loop around ``ctx.sleep`` or
  ``ctx.commands``); if it returns having registered ``on_command`` handlers, keep serving
  them until shutdown.

A failing handler call is reported (log + error payload) and the device goes on; a failing
``init`` or a device function that raises ends that device (reported, availability offline)
while the others keep running. The thread never dies silently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.context import Command, DeviceContext
from agent.injection import resolve
from agent.registry import Registration
from agent.runtime.inbox import TICK, Inbox
from agent.runtime.reporting import Reporter

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


class Worker:
    """Owns the thread of one device."""

    def __init__(
        self,
        reg: Registration,
        ctx: DeviceContext,
        inbox: Inbox,
        providers: dict[Any, object],
        *,
        health: Any,
        reporter: Reporter,
    ) -> None:
        self.reg = reg
        self.ctx = ctx
        self.inbox = inbox
        self._providers = providers
        self._health = health
        self._reporter = reporter
        self.thread = threading.Thread(target=self._run, name=f"device:{reg.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.reg.name

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        reg = self.reg
        try:
            kwargs = self._prepare()
        except Exception as exc:
            self._fail(exc, "init")
            return
        self._health.publish_device_available(reg.name, is_root=reg.is_root)
        try:
            if reg.kind == "telemetry":
                self._serve_telemetry(kwargs)
            elif reg.kind == "command":
                self._serve_commands(kwargs)
            else:
                reg.func(**kwargs)
                if self.ctx.command_handlers:
                    self._serve_handlers()
        except Exception as exc:
            self._fail(exc, "run")
        except BaseException:
            log.critical("device %r: thread ended by an unexpected exit", reg.name, exc_info=True)
            raise

    def _prepare(self) -> dict[str, object]:
        providers = dict(self._providers)
        if self.reg.init is not None:
            value = self.reg.init(
                **resolve(
                    self.reg.init_params or [],
                    providers,
                    role="init factory",
                    func_name=self.reg.init.__qualname__,
                )
            )
            if value is not None:
                providers[type(value)] = value
        return resolve(
            self.reg.params,
            providers,
            role=f"@app.{self.reg.kind} handler",
            func_name=self.reg.func.__qualname__,
        )

    def _fail(self, exc: Exception, phase: str) -> None:
        reg = self.reg
        self._reporter.report(
            exc,
            device=reg.name,
            is_root=reg.is_root,
            details={"phase": phase},
            log=log,
            message=f"device {reg.name!r} stopped: its {phase} raised {type(exc).__name__}: {exc}",
            level=logging.ERROR,
            traceback=True,
        )
        self._health.publish_device_unavailable(reg.name, is_root=reg.is_root)
        self._health.set_device_status(reg.name, "error")  # still listed in the heartbeat

    def _call(self, func: Callable[[], Any], details: dict[str, object]) -> None:
        """One handler call whose failure is reported and survived."""
        try:
            result = func()
            if result is not None:
                self.ctx.publish_state(result)
        except Exception as exc:
            report_handler_failure(self._reporter, exc, self.reg.name, self.reg.is_root, details)
            self._health.set_device_status(self.reg.name, "error")
        else:
            self._health.set_device_status(self.reg.name, "ok")

    def _serve_telemetry(self, kwargs: dict[str, object]) -> None:
        func = self.reg.func
        self.inbox.put_tick()  # the first reading right away, not one interval later
        while True:
            item = self.inbox.get()
            if item is None:
                return
            if item is TICK:
                self._call(lambda: func(**kwargs), {"phase": "telemetry"})

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

    def _serve_handlers(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            if isinstance(item, Command):
                self.ctx.dispatch(item)
