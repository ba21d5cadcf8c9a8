"""The runtime of one ``App.run()``: start everything in order, wait, stop in reverse.

Start: adapters → MQTT port wiring (router, reconnect hook) → adapters entered → lifespan →
``on_configure`` hooks → MQTT start (never blocks on the broker) → one thread per device →
the scheduler thread (telemetry ticks, heartbeat).

Stop (when the shutdown event is set): scheduler stopped → every inbox closed, which wakes
every ``ctx.sleep`` and ``ctx.commands`` → device threads joined within the grace period
(real seconds: the bound is for systemd and the user, not for the simulated time of a fake
clock) → lifespan and adapters exited → ``offline`` for every device and the app, waited for
until the broker acknowledges → disconnect. A thread that overruns the grace period is named
in the log; it is a daemon thread, so the process still exits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from agent import clock as clock_mod
from agent.clock import ClockPort, SystemClock
from agent.context import AppContext, Command, DeviceContext, StateCache
from agent.errors import ErrorPublisher
from agent.health import HealthReporter, build_will_config
from agent.injection import call_with_injection
from agent.runtime.inbox import Inbox
from agent.runtime.reporting import REPORT_INTERVAL, Reporter
from agent.runtime.routing import Route, Router
from agent.runtime.scheduler import Scheduler
from agent.runtime.worker import Worker, report_handler_failure
from agent.topics import Topics

if TYPE_CHECKING:
    from agent.app import App

log = logging.getLogger("agent.runtime")


class Runtime:
    """Everything one run of an App owns; built by ``App.run``."""

    def __init__(
        self,
        app: App,
        *,
        settings: Any,
        mqtt: Any | None,
        shutdown_event: threading.Event,
        clock: ClockPort | None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.clock: ClockPort = clock if clock is not None else SystemClock()
        self.shutdown_event = shutdown_event
        mqtt_settings = settings.mqtt
        self.prefix = mqtt_settings.topic_prefix or app.name
        self.topics = Topics(self.prefix)
        if mqtt is None:
            from agent.mqtt.paho import MqttClient  # only the real run needs paho
            from agent.settings import default_client_id

            mqtt = MqttClient(
                mqtt_settings,
                will=build_will_config(self.prefix),
                client_id=mqtt_settings.client_id or default_client_id(self.prefix),
            )
        self.mqtt = mqtt
        self.health = HealthReporter(mqtt, self.prefix, app.version, self.clock)
        self.errors = ErrorPublisher(mqtt, self.prefix, dict(app.error_type_map))
        self.reporter = Reporter(self.errors, self.clock)
        self.states = StateCache()
        self.scheduler = Scheduler(self.clock)
        self.workers: list[Worker] = []
        self._stack = contextlib.ExitStack()
        self._started_mqtt = False

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start everything, in the order of the module docstring."""
        app, settings = self.app, self.settings
        adapters = app.adapters.resolve(settings, dry_run=app.dry_run)
        providers: dict[Any, object] = {
            type(settings): settings,
            ClockPort: self.clock,
            type(self.clock): self.clock,
            **adapters,
        }
        routes = self._build_workers(adapters, providers)
        self._wire_mqtt(routes)
        self._enter_lifecycle(adapters, providers)
        if hasattr(self.mqtt, "start"):
            self.mqtt.start()
            self._started_mqtt = True
        if getattr(self.mqtt, "connected", False) or not hasattr(self.mqtt, "on_connect"):
            self._on_connected()  # already connected (a test double): no event will come
        for worker in self.workers:
            worker.start()
        for worker in self.workers:
            if worker.reg.kind == "telemetry":
                self._schedule_telemetry(worker)
        if app.heartbeat_interval:
            self.scheduler.every(
                app.heartbeat_interval, self.health.publish_heartbeat, name="heartbeat"
            )
        self.scheduler.every(REPORT_INTERVAL, self.reporter.flush, name="error-reports")
        self.scheduler.start()
        log.info(
            "%s %s started: %d device(s), prefix %r",
            app.name,
            app.version,
            len(self.workers),
            self.prefix,
        )

    def _build_workers(
        self, adapters: dict[type, object], providers: dict[Any, object]
    ) -> list[Route]:
        """One inbox, context and worker per enabled device; the routes of those taking
        commands."""
        routes: list[Route] = []
        for reg in self.app.registry:
            if not reg.enabled:
                log.info("device %r is disabled", reg.name)
                continue
            inbox = Inbox(self.clock, self.app.command_queue_size)
            ctx = DeviceContext(
                name=reg.name,
                settings=self.settings,
                mqtt=self.mqtt,
                topic_prefix=self.prefix,
                shutdown_event=self.shutdown_event,
                adapters=adapters,
                clock=self.clock,
                is_root=reg.is_root,
                inbox=inbox,
                states=self.states,
                on_handler_error=self._handler_error(reg.name, reg.is_root),
            )
            device_providers = {
                **providers,
                DeviceContext: ctx,
                logging.Logger: logging.getLogger(f"agent.device.{reg.name}"),
            }
            self.workers.append(
                Worker(
                    reg, ctx, inbox, device_providers, health=self.health, reporter=self.reporter
                )
            )
            if reg.accepts_commands:
                routes.append(Route(reg.name, reg.is_root, inbox))
        return routes

    def _wire_mqtt(self, routes: list[Route]) -> None:
        """Inbound routing, command subscriptions and the reconnect hook."""
        router = Router(
            self.topics,
            routes,
            reporter=self.reporter,
            clock=self.clock,
            max_payload_bytes=self.settings.mqtt.max_payload_bytes,
        )
        if hasattr(self.mqtt, "on_message"):
            self.mqtt.on_message(router.on_message)
        for topic in router.subscriptions():
            self.mqtt.subscribe(topic, qos=1)
        if hasattr(self.mqtt, "on_connect"):
            self.mqtt.on_connect(self._on_connected)

    def _enter_lifecycle(self, adapters: dict[type, object], providers: dict[Any, object]) -> None:
        """Adapters that are context managers, then the lifespan, then on_configure hooks."""
        app = self.app
        for adapter in adapters.values():
            if hasattr(adapter, "__enter__") and hasattr(adapter, "__exit__"):
                self._stack.enter_context(adapter)  # type: ignore[arg-type]
        if app.lifespan is not None:
            manager = app.lifespan(AppContext(settings=self.settings, adapters=adapters))
            if not (hasattr(manager, "__enter__") and hasattr(manager, "__exit__")):
                raise TypeError(
                    f"lifespan {app.lifespan.__qualname__!r} returned {type(manager).__name__}, "
                    "not a context manager: decorate it with contextlib.contextmanager "
                    "(agent runs no asyncio, so not asynccontextmanager)"
                )
            self._stack.enter_context(manager)
        hook_providers = {**providers, logging.Logger: logging.getLogger(f"agent.{app.name}")}
        for hook in app.configure_hooks:
            call_with_injection(hook, hook_providers, "on_configure hook")

    def _schedule_telemetry(self, worker: Worker) -> None:
        from agent.registry import check_interval

        spec = worker.reg.interval
        seconds = check_interval(
            spec(self.settings) if callable(spec) else spec, f"interval of {worker.name!r}"
        )
        inbox, name = worker.inbox, worker.name

        def tick() -> None:
            if not inbox.put_tick():
                skipped = inbox.skipped_ticks
                self.health.set_device_status(name, "busy", skipped_ticks=skipped)
                if _is_power_of_ten(skipped):
                    log.warning(
                        "device %r is slower than its interval of %ss: %d tick(s) skipped so far",
                        name,
                        seconds,
                        skipped,
                    )

        self.scheduler.every(seconds, tick, name=f"telemetry:{name}")

    def _handler_error(self, name: str, is_root: bool):  # type: ignore[no-untyped-def]
        def on_error(exc: BaseException, command: Command) -> None:
            report_handler_failure(self.reporter, exc, name, is_root, {"topic": command.topic})

        return on_error

    def _on_connected(self) -> None:
        """After every (re)connect: heartbeat, availability, then the latest states.

        Runs on paho's network thread (framework code only; every publish just queues).
        """
        self.health.publish_heartbeat()
        for name, is_root in self.health.devices():
            self.health.publish_device_available(name, is_root=is_root)
        for topic, payload in self.states.items():
            self.mqtt.publish(topic, payload, retain=True, qos=1)

    # -- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        grace = self.app.shutdown_grace
        log.info("shutting down (grace period %ss)", grace)
        if not self.scheduler.stop(timeout=grace):
            log.error("the scheduler thread did not stop within %ss", grace)
        for worker in self.workers:
            dropped = worker.inbox.close()
            if dropped:
                log.warning(
                    "device %r: %d pending item(s) dropped at shutdown", worker.name, dropped
                )
        real = SystemClock()
        deadline = real.now() + grace
        for worker in self.workers:
            if worker.thread.ident is not None:
                worker.thread.join(max(0.0, deadline - real.now()))
        overrun = [w.thread.name for w in self.workers if w.thread.is_alive()]
        if overrun:
            log.error(
                "still running after the %ss grace period, left behind: %s",
                grace,
                ", ".join(overrun),
            )
        try:
            self._stack.close()
        except Exception:
            log.exception("error while exiting the lifespan/adapters")
        self.reporter.flush(everything=True)  # what was held back must not be lost
        self.health.shutdown()
        if self._started_mqtt:
            if hasattr(self.mqtt, "flush") and not self.mqtt.flush(timeout=grace):
                log.warning("the broker did not acknowledge the final messages within %ss", grace)
            self.mqtt.stop()
        log.info("stopped")

    def wait(self) -> None:
        """Block the calling (main) thread until shutdown is requested."""
        clock_mod.wait(SystemClock(), self.shutdown_event, None)


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1
