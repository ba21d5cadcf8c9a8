"""``App``: the composition root. Register devices with decorators, then ``run()`` or ``cli()``.

::

    app = agent.App("gas2mqtt", "1.0.0")

    @app.telemetry("meter", interval=10)
    def meter(port: GasMeterPort) -> dict:
        return {"m3": port.read()}

    @app.command("valve")
    def valve(payload: str, ctx: agent.DeviceContext) -> dict:
        return {"open": payload == "open"}

    app.run()

Handlers are plain functions; each device runs on its own thread (see ``agent.runtime``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from agent.adapters import Adapters, AdapterSpec
from agent.clock import ClockPort
from agent.injection import check_plain_function
from agent.registrations import Registrations

if TYPE_CHECKING:
    from agent.router import Router
from agent.registry import Registry
from agent.runtime.persistence import DeviceStores
from agent.runtime.restarts import RestartPolicy
from agent.runtime.signals import SignalCatcher
from agent.settings import Settings
from agent.stores import Store
from agent.topics import prefix_problem, validate_name

F = TypeVar("F", bound=Callable[..., Any])
LifespanFunc = Callable[..., Any]
"""Takes an AppContext and returns a context manager (e.g. a @contextmanager function)."""

log = logging.getLogger("agent.app")


class App(Registrations):
    """Central composition root: device registrations, adapters, lifespan; runs them."""

    def __init__(
        self,
        name: str,
        version: str = "0.0.0",
        *,
        description: str = "IoT-to-MQTT bridge",
        settings_class: type[Settings] = Settings,
        dry_run: bool = False,
        heartbeat_interval: float | None = 60.0,
        health_check_interval: float | None = 30.0,
        lifespan: LifespanFunc | None = None,
        adapters: dict[type, AdapterSpec | tuple[AdapterSpec, AdapterSpec]] | None = None,
        error_type_map: dict[type[BaseException], str] | None = None,
        command_queue_size: int = 64,
        shutdown_grace: float = 5.0,
        error_reminder_interval: float | None = 3600.0,
        store: Store | None = None,
        restart_after_failures: int = 5,
        max_restarts: int | None = 3,
        restart_cooldown: float = 5.0,
        sustained_health_reset: float = 300.0,
        max_restart_cooldown: float | None = None,
        exit_on_device_failure: bool = False,
        watchdog_stall_limit: float | None = 600.0,
    ) -> None:
        self.name = validate_name(name, "app")
        if prefix_problem(name) is not None:  # without mqtt.topic_prefix the name is the prefix
            raise ValueError(f"invalid app name {name!r}: {prefix_problem(name)}")
        self.version = version
        self.description = description
        self.settings_class = settings_class
        self.dry_run = dry_run
        self.heartbeat_interval = heartbeat_interval
        if health_check_interval is not None and not health_check_interval > 0:
            raise ValueError(
                f"health_check_interval must be > 0 or None, got {health_check_interval}"
            )
        self.health_check_interval = health_check_interval
        # Supervision (agent/runtime/supervisor.py): restarts of devices and adapters.
        self.restart_policy = RestartPolicy(
            restart_after_failures,
            max_restarts,
            restart_cooldown,
            sustained_health_reset,
            max_restart_cooldown,
        )
        self.exit_on_device_failure = exit_on_device_failure
        if watchdog_stall_limit is not None and not watchdog_stall_limit > 0:
            raise ValueError(
                f"watchdog_stall_limit must be > 0 or None, got {watchdog_stall_limit}"
            )
        self.watchdog_stall_limit = watchdog_stall_limit
        if lifespan is not None:
            check_plain_function(lifespan, "lifespan")
        self.lifespan = lifespan
        self.error_type_map = dict(error_type_map or {})
        if command_queue_size < 1:
            raise ValueError(f"command_queue_size must be >= 1, got {command_queue_size}")
        self.command_queue_size = command_queue_size
        if shutdown_grace < 0:
            raise ValueError(f"shutdown_grace must be >= 0, got {shutdown_grace}")
        self.shutdown_grace = shutdown_grace
        if error_reminder_interval is not None and not error_reminder_interval > 0:
            raise ValueError(
                f"error_reminder_interval must be > 0 or None, got {error_reminder_interval}"
            )
        # A telemetry device that keeps failing reports again this often (None: never).
        self.error_reminder_interval = error_reminder_interval
        if store is not None and not isinstance(store, Store):
            raise TypeError(f"store= takes a Store (load and save), got {store!r}")
        self.store = store
        # One DeviceStore per device for the App's life, across runs and device restarts.
        self.device_stores = DeviceStores(store) if store is not None else None
        self.registry = Registry(has_store=store is not None)
        self.adapters = Adapters()
        self.configure_hooks: list[Callable[..., Any]] = []
        for port_type, spec in (adapters or {}).items():
            if isinstance(spec, tuple):
                self.adapter(port_type, spec[0], dry_run=spec[1])
            else:
                self.adapter(port_type, spec)
        self._settings: Settings | None = None

    # -- settings ---------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """Settings from the environment and ./.env, loaded on first use."""
        if self._settings is None:
            self._settings = self.settings_class.load()
        return self._settings

    # -- composing -----------------------------------------------------------------------

    def include_router(self, router: Router) -> None:
        """Add the devices, adapters and hooks a :class:`~agent.Router` holds.

        A device name or adapter port already here is a ``ValueError`` naming both sources;
        so is a device that needs a store when this App has none.
        """
        from agent.router import Router

        if not isinstance(router, Router):
            raise TypeError(f"include_router takes an agent.Router, got {router!r}")
        for entry in router.adapters:
            if entry.port in self.adapters:
                raise ValueError(
                    f"router {router.name!r} registers an adapter for {entry.port.__name__}, "
                    "which this App has already"
                )
        for reg in router.registry:
            self.registry.include(reg)
        for entry in router.adapters:
            self.adapters.register(entry.port, entry.impl, dry_run=entry.dry_run)
        self.configure_hooks.extend(router.configure_hooks)

    # -- running ----------------------------------------------------------------------------

    def run(
        self,
        *,
        mqtt: Any | None = None,
        settings: Settings | None = None,
        shutdown_event: threading.Event | None = None,
        clock: ClockPort | None = None,
    ) -> None:
        """Run until shutdown (blocking). SIGTERM/SIGINT start a graceful shutdown when no
        ``shutdown_event`` is given and this is the main thread. Raises :class:`DeviceFailed`
        after a clean shutdown caused by ``exit_on_device_failure``.

        The settings' :meth:`~agent.Settings.load_warnings` (a password in a file other
        users can read) are logged at WARNING first, once per run."""
        from agent.runtime.lifecycle import Runtime

        settings = settings if settings is not None else self.settings
        if not logging.getLogger().handlers:
            from agent.logs import configure_logging

            configure_logging(settings.logging, service=self.name, version=self.version)
        # Here rather than in Settings.load: the log is configured only now, and both the
        # command line and a program's own App.run(settings=...) pass through this point.
        for warning in settings.load_warnings():
            logging.getLogger("agent.settings").warning("%s", warning)
        signals = SignalCatcher() if shutdown_event is None else None
        event = signals.event if signals is not None else shutdown_event
        assert event is not None
        try:
            runtime = Runtime(self, settings=settings, mqtt=mqtt, shutdown_event=event, clock=clock)
            try:
                runtime.start()
                if signals is not None:
                    signals.keep_wakeup_fd()
                    signals.wait()
                else:
                    runtime.wait()
            finally:
                event.set()
                if signals is not None and signals.received:
                    log.info("received %s: shutting down", signals.received)
                runtime.stop()
        finally:
            if signals is not None:  # whatever raised: SIGTERM must kill again afterwards
                signals.restore()
        if runtime.supervisor.exit_code is not None:
            raise DeviceFailed(runtime.supervisor.exit_code)

    def cli(self, argv: list[str] | None = None) -> NoReturn:
        """Run with command-line arguments (``--config``, ``--dry-run``, ...) and exit the
        process: 0 after a clean shutdown, 78 for a configuration error, 1 otherwise."""
        from agent.cli import run_app

        raise SystemExit(run_app(self, argv))


class DeviceFailed(RuntimeError):
    """``App.run`` ended because a device was given up and ``exit_on_device_failure`` is
    set; the CLI exits with :attr:`exit_code` (70, EX_SOFTWARE) so systemd restarts the
    agent. The shutdown was clean: availability and status are ``offline``."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"a device failed for good (exit code {exit_code})")
        self.exit_code = exit_code
