"""One App from a checked config file: built-in devices, the user's modules, one store, Home
Assistant discovery — everything on one MQTT connection and one scheduler.

:func:`build_app` never connects and never touches hardware (built-ins open their files and
pins when their device starts), so ``agent check`` builds the App too: a user module that
does not import, or a device name used twice, is found before the service starts.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.app import App
from agent.daemon.config import (
    DaemonConfig,
    DaemonDevice,
    DaemonSettings,
    StoreSettings,
    module_spec_ok,
)
from agent.router import Router
from agent.settings import ConfigError
from agent.stores import JsonFileStore, MemoryStore, SqliteStore, Store
from agent.strategies import AllStrategy, AnyStrategy, OnChange

__all__ = ["build_app", "make_store"]

BUILTIN_SOURCE = "built-in devices"


def make_store(settings: StoreSettings) -> Store | None:
    """The store ``[store]`` asks for (None for ``backend = "none"``). Opens no file: the
    file stores read on first use and create their file at the first save."""
    path = settings.resolved_path()
    if settings.backend == "sqlite":
        assert path is not None
        return SqliteStore(path)
    if settings.backend == "json":
        assert path is not None
        return JsonFileStore(path)
    if settings.backend == "memory":
        return MemoryStore()
    return None


def build_app(config: DaemonConfig, *, problems: list[ConfigError] | None = None) -> App:
    """The App the config file describes (see the module docstring).

    Args:
        problems: collect every problem here and go on (``agent check``); the App returned
            then holds what was good, and must not run if anything was collected.

    Raises:
        ConfigError: (without ``problems``) the first of: a device table its type refused at
            registration, a filter or dead-band on a field the device does not have, a
            user module that cannot be imported or holds no Router, a device name used by
            two sources, a device that needs a store with ``backend = "none"``, Home
            Assistant metadata it would reject.
    """
    from agent import __version__

    report = _Report(problems)
    settings = config.settings
    store = make_store(settings.store)
    lifespan = None
    if settings.homeassistant.enabled:
        from agent.daemon.homeassistant import discovery_lifespan

        # The same store: what was announced to Home Assistant is remembered beside the
        # devices' state, so a device removed from the file has its entities cleared.
        lifespan = discovery_lifespan(settings.homeassistant, store=store)
    elif store is not None:
        from agent.daemon.homeassistant import cleanup_lifespan

        # Discovery was switched off: what an earlier run announced is cleared once.
        lifespan = cleanup_lifespan(store=store)
    app = App(
        settings.name,
        __version__,
        description="agent: devices on MQTT and in Home Assistant, from a config file",
        settings_class=DaemonSettings,
        store=store,
        lifespan=lifespan,
        # A daemon serves for years: a device is never given up (an unplugged sensor is
        # read again once it is back), and one that keeps failing is retried ever more
        # rarely, up to every five minutes, so it neither flaps nor fills the journal.
        max_restarts=None,
        max_restart_cooldown=300.0,
    )
    keys: dict[str, str] = {}  # device name -> where the file declares it, for messages
    for device in config.devices:
        # One Router per table: a clash or a store problem is reported at its device[N].
        router = Router(BUILTIN_SOURCE)
        try:
            device.type.register(router, device.spec, device.options)
        except ConfigError as err:
            err.source = err.source or config.path
            if not err.key.startswith(device.spec.key):
                err.key = f"{device.spec.key}.{err.key}" if err.key else device.spec.key
            report(err)
            continue
        except ValueError as err:  # the framework refused a registration
            report(ConfigError(source=config.path, key=device.spec.key, detail=str(err)))
            continue
        for err in _field_problems(router, device, config.path):
            report(err)
        if _include(app, router, config.path, device.spec.key, report):
            keys.update((reg.name, device.spec.key) for reg in router.registry)
    for index, module in enumerate(settings.modules, start=1):
        key = f"modules[{index}]"
        if not module_spec_ok(module):
            continue  # reported with the file's own problems
        try:
            router = load_router(module, config.path, key, settings.module_path)
        except ConfigError as err:
            report(err)
            continue
        if _include(app, router, config.path, key, report):
            keys.update((reg.name, key) for reg in router.registry)
    # Checked whether or not discovery is on: metadata Home Assistant would reject is a
    # mistake either way, better found now than the day discovery is switched on.
    from agent.daemon.homeassistant import entity_config_errors

    for err in entity_config_errors(app, settings.homeassistant, source=config.path, keys=keys):
        report(err)
    return app


class _Report:
    """Raise each problem, or collect it (``build_app(problems=...)``)."""

    def __init__(self, problems: list[ConfigError] | None) -> None:
        self.problems = problems

    def __call__(self, err: ConfigError) -> None:
        if self.problems is None:
            raise err
        self.problems.append(err)


def _field_problems(router: Router, device: DaemonDevice, source: str) -> list[ConfigError]:
    """A ``filter`` or an ``on_change`` dead-band naming a field the device does not have
    (a typo would otherwise just never filter anything). Only for types that know their
    fields (``fields()``, else the entities they declare); a JSON reading's fields are not
    known in advance."""
    spec = device.spec
    fields = {entity.field for reg in router.registry for entity in reg.entities}
    possible = getattr(device.type, "fields", None)
    if callable(possible):
        fields |= set(possible(device.options))
    if not fields:
        return []
    named = [(f"filter.{f.field}", f.field) for f in spec.filters]
    named += [(f"publish.on_change.{f}", f) for f in _dead_band_fields(spec.publish)]
    problems = []
    for key, field in named:
        if field not in fields:
            close = difflib.get_close_matches(field, sorted(fields), n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            problems.append(
                ConfigError(
                    source=source,
                    key=f"{spec.key}.{key}",
                    detail=f"not a field of this {spec.type} device{hint}; its fields are "
                    f"{', '.join(sorted(fields))}",
                )
            )
    return problems


def _dead_band_fields(strategy: object) -> list[str]:
    if isinstance(strategy, AnyStrategy | AllStrategy):
        return [f for child in strategy.children for f in _dead_band_fields(child)]
    if isinstance(strategy, OnChange) and isinstance(strategy.threshold, dict):
        return list(strategy.threshold)
    return []


def _include(app: App, router: Router, source: str, key: str, report: _Report) -> bool:
    """Include ``router``; False (after reporting why) when it cannot be."""
    if app.store is None:
        # Said in the config file's words rather than the registry's (App(store=...)).
        for reg in router.registry:
            if reg.wants_store:
                report(
                    ConfigError(
                        source=source,
                        key=key,
                        detail=f"device {reg.name!r} from {reg.source} keeps state in the "
                        'store, but [store] backend = "none": use "sqlite", "json" or "memory"',
                    )
                )
                return False
    try:
        app.include_router(router)
    except ValueError as err:
        report(ConfigError(source=source, key=key, detail=str(err)))
        return False
    return True


def load_router(spec: str, config_path: str, key: str, module_path: Sequence[str] = ()) -> Router:
    """Import the user's module ``"module"`` or ``"module:attribute"`` and return its
    :class:`~agent.Router`: the attribute named, else the module's one Router (the module's
    ``router`` when it has several).

    The folders of ``module_path`` (the config's ``module_path``; by default the config
    file's folder) are searched first, then ``sys.path``. What goes wrong is a
    ConfigError on ``key``; an exception raised by the module's own code names the file and
    line where it was raised."""
    module_name, _, attribute = spec.partition(":")
    # A relative entry is refused by the file's check; never searched, even by agent check.
    folders = [f for f in module_path if os.path.isabs(f)] or [
        str(Path(config_path).resolve().parent)
    ]
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise ConfigError(
                source=config_path,
                key=key,
                detail=f"cannot import {module_name!r}: no module named {err.name!r} "
                f"(put {module_name.replace('.', '/')}.py in {folders[0]} or install it)",
            ) from None
        raise ConfigError(
            source=config_path, key=key, detail=f"importing {module_name!r} failed: {_where(err)}"
        ) from err
    except Exception as err:
        raise ConfigError(
            source=config_path, key=key, detail=f"importing {module_name!r} failed: {_where(err)}"
        ) from err
    if attribute:
        router: Any = getattr(module, attribute, None)
        if not isinstance(router, Router):
            raise ConfigError(
                source=config_path,
                key=key,
                expected=f"an agent.Router named {attribute!r} in module {module_name!r}",
                found="nothing" if router is None else f"a {type(router).__name__}",
            )
        return router
    routers = {name: v for name, v in vars(module).items() if isinstance(v, Router)}
    if len(routers) == 1:
        return next(iter(routers.values()))
    if "router" in routers:
        return routers["router"]
    raise ConfigError(
        source=config_path,
        key=key,
        detail=(
            f"module {module_name!r} has no agent.Router: create one (router = "
            "agent.Router(__name__)) and register its devices with @router.telemetry, ..."
            if not routers
            else f"module {module_name!r} has several Routers ({', '.join(sorted(routers))}): "
            f'name one, e.g. "{module_name}:{sorted(routers)[0]}"'
        ),
    )


def _where(err: BaseException) -> str:
    """``ValueError: bad thing (mybridge.py line 12)``: the innermost frame of the user's
    code, for a one-line report."""
    if isinstance(err, SyntaxError):
        return f"SyntaxError: {err.msg} ({Path(err.filename or '?').name} line {err.lineno})"
    frames = traceback.extract_tb(err.__traceback__)
    # The innermost frame of the user's files, not of agent's own (a framework ValueError
    # raised in a decorator should point at the decorated line).
    own = Path(__file__).resolve().parent.parent
    mine = [f for f in frames if not Path(f.filename).resolve().is_relative_to(own)]
    last = mine[-1] if mine else (frames[-1] if frames else None)
    place = f" ({Path(last.filename).name} line {last.lineno})" if last is not None else ""
    text = " / ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return f"{type(err).__name__}: {text}{place}"
