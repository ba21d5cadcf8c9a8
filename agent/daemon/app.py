"""One App from a checked config file: built-in devices, the user's modules, one store, Home
Assistant discovery — everything on one MQTT connection and one scheduler.

:func:`build_app` never connects and never touches hardware (built-ins open their files and
pins when their device starts), so ``agent check`` builds the App too: a user module that
does not import, or a device name used twice, is found before the service starts.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.app import App
from agent.daemon.config import DaemonConfig, DaemonSettings, StoreSettings
from agent.router import Router
from agent.settings import ConfigError
from agent.stores import JsonFileStore, MemoryStore, SqliteStore, Store

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


def build_app(config: DaemonConfig) -> App:
    """The App the config file describes (see the module docstring).

    Raises:
        ConfigError: a user module that cannot be imported or holds no Router, a device name
            used by two sources, a device that needs a store with ``backend = "none"``.
    """
    from agent import __version__

    settings = config.settings
    store = make_store(settings.store)
    lifespan = None
    if settings.homeassistant.enabled:
        from agent.daemon.homeassistant import discovery_lifespan

        # The same store: what was announced to Home Assistant is remembered beside the
        # devices' state, so a device removed from the file has its entities cleared.
        lifespan = discovery_lifespan(settings.homeassistant, store=store)
    app = App(
        settings.name,
        __version__,
        description="agent: devices on MQTT and in Home Assistant, from a config file",
        settings_class=DaemonSettings,
        store=store,
        lifespan=lifespan,
    )
    builtins = Router(BUILTIN_SOURCE)
    for device in config.devices:
        try:
            device.type.register(builtins, device.spec, device.options)
        except ConfigError as err:
            err.source = err.source or config.path
            if not err.key.startswith(device.spec.key):
                err.key = f"{device.spec.key}.{err.key}" if err.key else device.spec.key
            raise
        except ValueError as err:  # the framework refused a registration
            raise ConfigError(source=config.path, key=device.spec.key, detail=str(err)) from None
    _include(app, builtins, config.path, "device")
    for index, module in enumerate(settings.modules, start=1):
        key = f"modules[{index}]"
        router = load_router(module, config.path, key, settings.module_path)
        _include(app, router, config.path, key)
    if settings.homeassistant.enabled:
        from agent.daemon.homeassistant import check_app_entities

        check_app_entities(app, settings.homeassistant, source=config.path)
    return app


def _include(app: App, router: Router, source: str, key: str) -> None:
    if app.store is None:
        # Said in the config file's words rather than the registry's (App(store=...)).
        for reg in router.registry:
            if reg.wants_store:
                raise ConfigError(
                    source=source,
                    key=key,
                    detail=f"device {reg.name!r} from {reg.source} keeps state in the store, "
                    'but [store] backend = "none": use "sqlite", "json" or "memory"',
                )
    try:
        app.include_router(router)
    except ValueError as err:
        raise ConfigError(source=source, key=key, detail=str(err)) from None


def load_router(spec: str, config_path: str, key: str, module_path: Sequence[str] = ()) -> Router:
    """Import the user's module ``"module"`` or ``"module:attribute"`` and return its
    :class:`~agent.Router`: the attribute named, else the module's one Router (the module's
    ``router`` when it has several).

    The folders of ``module_path`` (the config's ``module_path``; by default the config
    file's folder) are searched first, then ``sys.path``. What goes wrong is a
    ConfigError on ``key``; an exception raised by the module's own code names the file and
    line where it was raised."""
    module_name, _, attribute = spec.partition(":")
    folders = list(module_path) or [str(Path(config_path).resolve().parent)]
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
    last = frames[-1] if frames else None
    place = f" ({Path(last.filename).name} line {last.lineno})" if last is not None else ""
    return f"{type(err).__name__}: {err}{place}"
