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
import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent import clock as clock_mod
from agent.clock import ClockPort, SystemClock
from agent.context import AppContext, Command, DeviceContext, StateCache
from agent.errors import ErrorPublisher
from agent.health import HealthReporter, build_will_config
from agent.injection import call_with_injection
from agent.registry import Default, Registration, check_interval
from agent.runtime.adapter_health import AdapterHealth, adapter_users
from agent.runtime.inbox import Inbox
from agent.runtime.persistence import DeviceStores
from agent.runtime.reporting import Reporter
from agent.runtime.routing import Route, Router
from agent.runtime.scheduler import Scheduler
from agent.runtime.stalls import CallWatch, default_timeout
from agent.runtime.supervisor import Supervisor
from agent.runtime.watchdog import SystemdLink, status_line
from agent.runtime.worker import (
    Member,
    TelemetryWorker,
    Worker,
    WriteHold,
    report_handler_failure,
)
from agent.settings import ConfigError
from agent.settings.conversion import _show
from agent.stores import STORE_ERROR_TYPES
from agent.systemd import notifier_from_environment
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
        adapters: dict[type, object] | None = None,
        device_stores: DeviceStores | None = None,
        dry_run: bool | None = None,
    ) -> None:
        """``adapters``, ``device_stores`` and ``dry_run`` override the App's for this run
        (the testing kit's scripted fakes, a fresh store per simulated restart)."""
        self.app = app
        self.settings = settings
        self.device_stores = device_stores if device_stores is not None else app.device_stores
        self._given_adapters = adapters
        self._dry_run = app.dry_run if dry_run is None else dry_run
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
                # a state and an availability per device, and the status: never dropped
                retained_topics=2 * len(app.registry) + 1,
            )
        self.mqtt = mqtt
        self.health = HealthReporter(mqtt, self.prefix, app.version, self.clock)
        error_types = dict(app.error_type_map)
        if device_stores is not None or app.device_stores is not None:
            error_types = {**STORE_ERROR_TYPES, **error_types}
        self.errors = ErrorPublisher(mqtt, self.prefix, error_types)
        self.reporter = Reporter(self.errors, self.clock)
        self.supervisor = Supervisor(
            policy=app.restart_policy,
            clock=self.clock,
            health=self.health,
            reporter=self.reporter,
            shutdown_event=shutdown_event,
            exit_on_device_failure=app.exit_on_device_failure,
            watchdog_stall_limit=app.watchdog_stall_limit,
        )
        self.systemd = SystemdLink(notifier_from_environment(), self.supervisor)
        self.health.set_agent_info(self._agent_info)
        self.states = StateCache()
        self.scheduler = Scheduler(self.clock)
        self.workers: list[Worker | TelemetryWorker] = []
        self._stack = contextlib.ExitStack()
        self.adapter_health: AdapterHealth | None = None  # built at start, with the adapters
        self._started_mqtt = False

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start everything, in the order of the module docstring."""
        app, settings = self.app, self.settings
        adapters = app.adapters.resolve(settings, dry_run=self._dry_run, given=self._given_adapters)
        providers: dict[Any, object] = {
            type(settings): settings,
            ClockPort: self.clock,
            type(self.clock): self.clock,
            **adapters,
        }
        if self.device_stores is not None:
            registry = app.registry

            def is_root(name: str) -> bool:
                reg = registry.get(name)
                return reg is not None and reg.is_root

            self.device_stores.bind(self.errors, is_root)
        self.adapter_health = AdapterHealth(
            adapters,
            adapter_users(app.registry, adapters),
            interval=app.health_check_interval,
            policy=app.restart_policy,
            clock=self.clock,
            health=self.health,
            reporter=self.reporter,
            device_down=self._failing_on_its_own,
        )
        self.health.hold_offline(self.adapter_health.holds_offline)
        routes = self._build_workers(adapters, providers)
        self._wire_mqtt(routes)
        self._enter_lifecycle(adapters, providers)
        intervals = self._resolve_intervals()  # after the hooks, before anything runs
        for worker in self.workers:
            for name in worker.device_names:
                reg = app.registry.get(name)
                self.health.expect(name, is_root=reg is not None and reg.is_root)
        scheduler = self.scheduler
        # Timers armed when needed: an idle agent wakes only for its real jobs. Wired before
        # anything can need them — a command may arrive, and its call stall, the moment
        # MQTT starts — and kept until the scheduler thread starts and runs them.
        self.reporter.arm = functools.partial(_at, scheduler, self.reporter.flush, "error-reports")
        self.supervisor.stalls.arm = functools.partial(
            _at, scheduler, self.supervisor.stalls.check, "stalls"
        )
        self.mqtt.start()  # never blocks on the broker; the fakes "connect" at once
        self._started_mqtt = True
        allow_waiting = getattr(self.mqtt, "wait_for_room_on", None)
        for worker in self.workers:
            if allow_waiting is not None:
                allow_waiting(worker.thread)
            worker.start()
        self._schedule_telemetry(intervals)
        if app.heartbeat_interval:
            self.scheduler.every(
                app.heartbeat_interval, self.health.publish_heartbeat, name="heartbeat"
            )
        if self.systemd.active:
            self.scheduler.every(1.0, self._update_status, name="systemd-status")
        self._add_vitals()
        self.scheduler.start()
        self.adapter_health.start()
        self.systemd.ready()  # not waiting for the broker: a Pi must boot without a network
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
        """A worker per enabled device — per coalescing group for telemetry devices that
        share a ``group`` — each with its inbox; the routes of those taking commands."""
        routes: list[Route] = []
        groups: dict[str, tuple[Inbox, list[Member]]] = {}
        for reg in self.app.registry:
            if not reg.enabled:
                log.info("device %r is disabled", reg.name)
                continue
            group = reg.telemetry.group if reg.kind == "telemetry" else None
            if group is not None and group in groups:
                inbox = groups[group][0]
            else:
                inbox = Inbox(self.clock, self.app.command_queue_size)
            watch = None
            if reg.kind != "telemetry":  # telemetry watches are made by their worker
                watch = self.supervisor.watch(reg, _timeout_of(reg, None))
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
                on_call=self._call_marker(watch) if watch is not None else None,
            )
            stores = self.device_stores
            store = stores.for_device(reg) if stores is not None and reg.wants_store else None
            if reg.kind == "telemetry":
                member = Member(reg, ctx, providers, store)
                key = group if group is not None else f"\0{reg.name}"  # never a group name
                groups.setdefault(key, (inbox, []))[1].append(member)
                continue
            self.workers.append(
                Worker(
                    reg,
                    ctx,
                    inbox,
                    providers,
                    health=self.health,
                    reporter=self.reporter,
                    supervisor=self.supervisor,
                    watch=watch,  # type: ignore[arg-type]
                    gate=self.adapter_health.calling,  # type: ignore[union-attr]
                    store=store,
                )
            )
            if reg.accepts_commands:
                routes.append(Route(reg.name, reg.is_root, inbox))
        for key, (inbox, members) in groups.items():
            self.workers.append(
                TelemetryWorker(
                    key.lstrip("\0"),
                    members,
                    inbox,
                    clock=self.clock,
                    health=self.health,
                    reporter=self.reporter,
                    supervisor=self.supervisor,
                    timeouts={},  # set once the intervals are known (_resolve_intervals)
                    reminder_interval=self.app.error_reminder_interval,
                    gate=self.adapter_health.calling,  # type: ignore[union-attr]
                    writes=_write_hold(self.mqtt, len(members)),
                )
            )
        return routes

    def _add_vitals(self) -> None:
        """What the watchdog checks before each ping (besides long stalls)."""
        supervisor, shutdown, scheduler = self.supervisor, self.shutdown_event, self.scheduler
        supervisor.add_vital(scheduler.problem)
        supervisor.add_vital(self.adapter_health.problem)
        real = SystemClock()  # the watchdog's question is in systemd's seconds
        progress = [scheduler.rounds, real.now()]

        def scheduler_moves() -> str | None:
            now = real.now()
            if scheduler.rounds != progress[0]:
                progress[:] = [scheduler.rounds, now]
                return None
            if now - progress[1] > SCHEDULER_WEDGED:
                return f"the scheduler thread is wedged (no round for {now - progress[1]:.0f} s)"
            return None

        supervisor.add_vital(scheduler_moves)
        supervisor.add_vital(self.mqtt.network_problem)
        workers = self.workers

        def devices() -> str | None:
            if shutdown.is_set():
                return None
            dead = [w.thread.name for w in workers if w.thread.ident and not w.thread.is_alive()]
            return f"device thread(s) died: {', '.join(dead)}" if dead else None

        supervisor.add_vital(devices)

    def _failing_on_its_own(self, device: str) -> bool:
        status = self.health.status_of(device)
        return status is not None and status.status in ("error", "circuit_open")

    def _update_status(self) -> None:
        self.systemd.status(status_line(self.health, self.mqtt.connected))

    def _agent_info(self) -> dict[str, object]:
        """The agent's own figures in the heartbeat."""
        info: dict[str, object] = {}
        info["mqtt"] = self.mqtt.stats()
        adapters = self.adapter_health.snapshot()
        if adapters:
            info["adapters"] = adapters
        info["threads"] = threading.active_count()
        rss = _resident_bytes()
        if rss is not None:
            info["rss_bytes"] = rss
        return info

    def _call_marker(self, watch: CallWatch) -> Callable[[], Callable[[], None]]:
        """For a device's context: mark a command handler's call start; returns its end."""
        supervisor = self.supervisor

        def begin() -> Callable[[], None]:
            watch.begin()
            return functools.partial(supervisor.call_returned, watch)

        return begin

    def _wire_mqtt(self, routes: list[Route]) -> None:
        """Inbound routing, command subscriptions and the reconnect hook."""
        router = Router(
            self.topics,
            routes,
            reporter=self.reporter,
            clock=self.clock,
            max_payload_bytes=self.settings.mqtt.max_payload_bytes,
        )
        self.mqtt.on_message(router.on_message)
        for topic in router.subscriptions():
            self.mqtt.subscribe(topic, qos=1)
        self.mqtt.on_connect(self._on_connected)

    def _enter_lifecycle(self, adapters: dict[type, object], providers: dict[Any, object]) -> None:
        """Adapters that are context managers, then the lifespan, then on_configure hooks."""
        app = self.app
        for port, adapter in adapters.items():
            if hasattr(adapter, "__enter__") and hasattr(adapter, "__exit__"):
                # through adapter health: a restart may exit and enter it again
                self._stack.enter_context(self.adapter_health.context(port))
        if app.lifespan is not None:
            manager = app.lifespan(
                AppContext(
                    settings=self.settings,
                    adapters=adapters,
                    mqtt=self.mqtt,
                    clock=self.clock,
                    prefix=self.prefix,
                    registry=app.registry,
                    republish=self._on_connected,
                )
            )
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

    def _resolve_intervals(self) -> dict[str, float]:
        """Every telemetry device's interval in seconds; a function of the settings is
        called now, after the ``on_configure`` hooks. A bad one stops start-up with a
        configuration error naming the device (exit 78 through the CLI)."""
        intervals: dict[str, float] = {}
        for worker in self.workers:
            if isinstance(worker, TelemetryWorker):
                for cycle in worker.cycles:
                    seconds = intervals[cycle.name] = _interval_of(cycle.reg, self.settings)
                    cycle.watch.timeout = _timeout_of(cycle.reg, seconds)
        return intervals

    def _schedule_telemetry(self, intervals: dict[str, float]) -> None:
        """One scheduler job per telemetry worker, their phases spread in slots.

        Up to :data:`DEVICES_PER_SLOT` devices share a phase (one wake for all of them);
        more are spread evenly over their interval, slot by slot (:func:`_phases`). 1,000
        devices at 1 s then wake 16 every 16 ms instead of all at once, which would make
        1,000 threads fight for the GIL and the last one run 100 ms late every second; ten
        groups of 100 get a slot each, 100 ms apart, instead of reading their 1,000 devices
        side by side (each group's readings late by whatever the others took, up to 20 ms).
        (The first reading of every device is at start-up, before this.) Ticks that find
        the previous one still waiting — a slow or retrying device — are skipped, counted
        and logged at 1, 10, 100…
        """
        workers = [w for w in self.workers if isinstance(w, TelemetryWorker)]
        periods = [min(intervals[m.reg.name] for m in w.members) for w in workers]
        phases = _phases([len(w.members) for w in workers], periods)
        now = self.clock.now()
        for worker, phase in zip(workers, phases, strict=True):
            members = [(m.reg.name, intervals[m.reg.name]) for m in worker.members]
            self.scheduler.telemetry(
                members,
                self._ticker(worker.inbox, intervals),
                name=f"telemetry:{worker.name}",
                start=now + phase,
            )

    def _ticker(self, inbox: Inbox, intervals: dict[str, float]) -> Callable[..., None]:
        skipped: Counter[str] = Counter()

        def tick(due: list[str], missed: dict[str, int]) -> None:
            pending = inbox.put_tick(due)
            if not pending and not missed:
                return  # the usual case, on every tick: no Counter to build
            counts = Counter(pending) + Counter(missed)
            for name, n in counts.items():
                before = skipped[name]
                skipped[name] += n
                self.health.set_device_status(name, "busy", skipped_ticks=skipped[name])
                if _crossed_power_of_ten(before, skipped[name]):
                    log.warning(
                        "device %r is slower than its interval of %ss: %d tick(s) skipped so far",
                        name,
                        intervals[name],
                        skipped[name],
                    )

        return tick

    def _handler_error(self, name: str, is_root: bool):  # type: ignore[no-untyped-def]
        def on_error(exc: BaseException, command: Command) -> None:
            report_handler_failure(self.reporter, exc, name, is_root, {"topic": command.topic})

        return on_error

    def _on_connected(self) -> None:
        """After every (re)connect: heartbeat, availability, then the latest states.

        Runs on paho's network thread (framework code only; every publish just queues).
        """
        self.health.publish_heartbeat()
        self.health.republish_availability()
        for topic, payload in self.states.items():
            self.mqtt.publish(topic, payload, retain=True, qos=1)

    # -- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        grace = self.app.shutdown_grace
        log.info("shutting down (grace period %ss)", grace)
        stop_waiting = getattr(self.mqtt, "stop_waiting", None)
        if stop_waiting is not None:  # a device waiting for room in the outbox gives up now
            stop_waiting()
        self.systemd.stopping()
        if not self.scheduler.stop(timeout=grace):
            log.error("the scheduler thread did not stop within %ss", grace)
        if self.adapter_health is not None:
            self.adapter_health.stop(grace)  # before the adapters are exited
        for worker in self.workers:
            dropped = worker.inbox.close()
            if dropped:
                log.warning(
                    "device %r: %d pending command(s) dropped at shutdown", worker.name, dropped
                )
        real = SystemClock()
        deadline = real.now() + grace
        for worker in self.workers:
            if worker.thread.ident is not None:
                worker.thread.join(max(0.0, deadline - real.now()))
        overrun = [w for w in self.workers if w.thread.is_alive()]
        if overrun:
            log.error(
                "still running after the %ss grace period, left behind: %s",
                grace,
                ", ".join(w.thread.name for w in overrun),
            )
        try:
            self._stack.close()
        except Exception:
            log.exception("error while exiting the lifespan/adapters")
        stores = self.device_stores
        if stores is not None:
            # Best effort for threads that did not end: their own save has not run.
            stores.save_all([name for w in overrun for name in w.device_names])
            stores.close()
        self.reporter.flush(everything=True)  # what was held back must not be lost
        self.health.shutdown()
        if self._started_mqtt:
            if not self.mqtt.flush(timeout=grace):
                log.warning("the broker did not acknowledge the final messages within %ss", grace)
            self.mqtt.stop()
        self.systemd.close()
        log.info("stopped")

    def wait(self) -> None:
        """Block the calling (main) thread until shutdown is requested."""
        clock_mod.wait(SystemClock(), self.shutdown_event, None)


SCHEDULER_WEDGED = 10.0
"""Real seconds without a scheduler round (it has a job every second) that mean it is stuck."""

PHASE_SLOT = 0.01
"""Telemetry phases are at least this far apart (seconds): devices that share a slot share
a wake and their publishes go out together, which costs far less CPU than one wake each."""

DEVICES_PER_SLOT = 16
"""How many telemetry devices share a phase slot before another slot is opened. A shared
slot is one scheduler wake and one network-thread wake for all of them (ten devices at 1 s
wake the agent once a second, not ten times); 16 devices read together finish within a
few milliseconds of each other, where 1,000 would fight for the GIL for 20-100 ms. Counted
in devices, not threads: a coalescing group of more than 16 has a slot to itself."""


def _phases(sizes: list[int], intervals: list[float]) -> list[float]:
    """The offset in ``[0, interval)`` of each telemetry worker, of ``sizes[i]`` devices
    with the cadence ``intervals[i]``.

    The workers of one interval fill slots in order, up to :data:`DEVICES_PER_SLOT` devices
    a slot (a worker of more, a large group, has one to itself); the slots are spread evenly
    over the interval, at most ``interval / PHASE_SLOT`` positions (then several share one).
    """
    slots: dict[float, int] = {}  # interval -> the last slot opened
    filled: dict[float, int] = {}  # interval -> devices in that slot
    slot_of: list[int] = []
    for size, interval in zip(sizes, intervals, strict=True):
        slot, fill = slots.get(interval, 0), filled.get(interval, 0)
        if fill and fill + size > DEVICES_PER_SLOT:
            slot, fill = slot + 1, 0
        slots[interval], filled[interval] = slot, fill + size
        slot_of.append(slot)
    phases = []
    for slot, interval in zip(slot_of, intervals, strict=True):
        count = slots[interval] + 1
        positions = max(1, min(count, int(interval / PHASE_SLOT)))
        phases.append((slot * positions // count) / positions * interval)
    return phases


def _write_hold(mqtt: object, members: int) -> WriteHold | None:
    """The client, if it can hold writes back, for a group (a single device publishes one
    reading a tick: nothing to batch); None for a client without it (the fakes)."""
    if members > 1 and callable(getattr(mqtt, "hold_writes", None)):
        return mqtt  # type: ignore[return-value]
    return None


def _at(scheduler: Scheduler, func: Callable[[], object], name: str, when: float) -> None:
    scheduler.call_at(when, func, name=name)


def _resident_bytes() -> int | None:
    """This process's resident memory, from /proc/self/status (Linux), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _timeout_of(reg: Registration, interval: float | None) -> float | None:
    if isinstance(reg.timeout, Default):
        return default_timeout(reg.kind, interval)
    return reg.timeout


def _crossed_power_of_ten(before: int, now: int) -> bool:
    """True when a count went from ``before`` to ``now`` past 1, 10, 100, …"""
    power = 1
    while power <= now:
        if before < power:
            return True
        power *= 10
    return False


def _interval_of(reg: Registration, settings: Any) -> float:
    spec = reg.interval
    key = f"interval of telemetry device {reg.name!r}"
    if not callable(spec):
        return float(spec)  # type: ignore[arg-type]  # checked at registration
    try:
        value = spec(settings)
    except Exception as exc:
        raise ConfigError(
            key=key, detail=f"its interval function raised {type(exc).__name__}: {exc}"
        ) from exc
    try:
        return check_interval(value, key)
    except (TypeError, ValueError):
        raise ConfigError(
            key=key, expected="a finite number of seconds > 0", found=_show(value)
        ) from None
