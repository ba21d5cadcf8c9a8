"""The daemon's config file: :class:`DaemonSettings`, and the ``[[device]]`` tables read into
:class:`~agent.daemon.types.DeviceSpec` objects.

::

    name = "agent"                  # the topic prefix: agent/<device>/state
    modules = ["mybridge"]          # the user's own modules (see agent.Router)
    module_path = ["/etc/agent"]    # folders searched for them first (default: this file's)

    [mqtt]                          # agent.MqttSettings
    [logging]                       # agent.LoggingSettings
    [store]                         # backend = "sqlite" | "json" | "memory" | "none", path
    [homeassistant]                 # enabled, discovery_prefix, ...

    [[device]]
    type = "system"                 # a built-in: system, w1_temperature, gpio_input, ...
    name = "pi"                     # the device's name (default: the type)
    interval = 60
    publish = { on_change = 0.5, every = 600 }
    filter = { cpu_temperature = { median = 5 } }

Every problem is collected, not only the first: :func:`check_config` returns them all, one
:class:`~agent.ConfigError` each, and ``agent check`` prints them one per line. A device key
is written ``device[N].key``, N counting the ``[[device]]`` tables from 1 as they appear in
the file.

Environment variables override the file as for any :class:`~agent.Settings`, with the prefix
``AGENT_``: ``AGENT_MQTT__HOST=broker``, ``AGENT_MQTT__PASSWORD_FILE=/etc/agent/secret``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from agent.daemon import DEFAULT_CONFIG  # defined with the (light) package
from agent.daemon.builtins import BUILTINS
from agent.daemon.filters import FILTER_KINDS
from agent.daemon.homeassistant import HomeAssistantSettings
from agent.daemon.types import COMMON_KEYS, DeviceSpec, DeviceType, FieldFilter
from agent.registry import check_interval
from agent.settings import ConfigError, Section, Settings
from agent.settings.conversion import _show
from agent.settings.fields import Check
from agent.strategies import AllStrategy, AnyStrategy, Every, OnChange, PublishStrategy
from agent.topics import prefix_problem

__all__ = [
    "COMMON_KEYS",
    "DEFAULT_CONFIG",
    "DaemonConfig",
    "DaemonSettings",
    "StoreSettings",
    "check_config",
    "load_config",
]


_STATE_DIR = "/var/lib/agent"


class StoreSettings(Section):
    """Where device state survives restarts (``[store]``).

    ``backend``: ``sqlite`` (the default), ``json`` (one readable file), ``memory`` (lost at
    exit) or ``none``. ``path``: the file; the default is ``/var/lib/agent/state.db`` for
    sqlite and ``/var/lib/agent/state.json`` for json (systemd's ``StateDirectory=agent``
    creates the folder for the service user).
    """

    backend: Literal["sqlite", "json", "memory", "none"] = "sqlite"
    path: str | None = None

    def validate(self) -> None:
        if self.path is not None and self.backend in ("memory", "none"):
            raise ConfigError(
                key="path",
                detail=f'path is set but backend is "{self.backend}", which keeps no file; '
                'remove path or use backend = "sqlite" or "json"',
            )
        if self.path is not None and not self.path.strip():
            raise ConfigError(key="path", expected="a file path", found='""')

    def resolved_path(self) -> str | None:
        """The file of a file-backed store (the default for its backend when unset)."""
        if self.backend == "sqlite":
            return self.path or f"{_STATE_DIR}/state.db"
        if self.backend == "json":
            return self.path or f"{_STATE_DIR}/state.json"
        return None


_PREFIX_EXPECTED = "one topic level: letters, digits, '-' and '_' are safest (no '/', '+' or '#')"


def _is_prefix(name: str) -> bool:
    return prefix_problem(name) is None and "/" not in name


class DaemonSettings(Settings):
    """The daemon's settings (see the module docstring for the file's shape)."""

    env_prefix: ClassVar[str] = "AGENT_"
    name: Annotated[str, Check(_is_prefix, _PREFIX_EXPECTED)] = "agent"
    # Section copies defaults per instance, so these lists are never shared.
    modules: list[str] = []  # noqa: RUF012
    module_path: list[str] = []  # noqa: RUF012
    store: StoreSettings = StoreSettings()
    homeassistant: HomeAssistantSettings = HomeAssistantSettings()
    device: list[dict[str, Any]] = []  # noqa: RUF012

    def module_problems(self, source: str) -> list[ConfigError]:
        """Every entry of ``modules`` and ``module_path`` that cannot be right (each its own
        problem: ``agent check`` lists them all, so this is no ``validate()`` hook, which
        stops at the first)."""
        return _module_problems(self.modules, self.module_path, source)


def module_spec_ok(spec: str) -> bool:
    """True for ``"module"`` or ``"module:attribute"`` (dotted module names allowed)."""
    return not _module_problems([spec], None, "")


def _module_problems(modules: Any, module_path: Any, source: str) -> list[ConfigError]:
    problems: list[ConfigError] = []
    if isinstance(module_path, list):
        for index, folder in enumerate(module_path, start=1):
            if isinstance(folder, str) and (not os.path.isabs(folder) or "\0" in folder):
                problems.append(
                    ConfigError(
                        source=source,
                        key=f"module_path[{index}]",
                        expected="an absolute folder path",
                        found=_show(folder),
                    )
                )
    for index, module in enumerate(modules if isinstance(modules, list) else [], start=1):
        if not isinstance(module, str):
            continue  # the settings loader reports the type
        name, colon, attribute = module.partition(":")
        if not name or not all(part.isidentifier() for part in name.split(".")):
            expected = (
                'a module name, optionally with ":router" (e.g. "mybridge" or "mybridge:garden")'
            )
        elif colon and not attribute.isidentifier():
            expected = "an attribute name after ':'"
        else:
            continue
        problems.append(
            ConfigError(
                source=source, key=f"modules[{index}]", expected=expected, found=_show(module)
            )
        )
    return problems


class DaemonDevice:
    """One checked ``[[device]]``: its type, the common keys, and what the type's
    :meth:`~agent.daemon.types.DeviceType.check` returned (read-only by convention)."""

    __slots__ = ("options", "spec", "type")

    def __init__(self, type: DeviceType, spec: DeviceSpec, options: Any) -> None:
        self.type = type
        self.spec = spec
        self.options = options


class DaemonConfig:
    """A config file with every problem checked away: the settings and the devices
    (read-only by convention)."""

    __slots__ = ("devices", "path", "settings")

    def __init__(
        self, path: str, settings: DaemonSettings, devices: tuple[DaemonDevice, ...]
    ) -> None:
        self.path = path
        self.settings = settings
        self.devices = devices

    def summary(self) -> str:
        """One line for ``agent check``."""
        enabled = [d for d in self.devices if d.spec.enabled]
        kinds = sorted({d.spec.type for d in enabled})
        parts = [
            f"{self.path}: OK",
            f"{len(enabled)} device(s) enabled" + (f" ({', '.join(kinds)})" if kinds else ""),
        ]
        if len(enabled) != len(self.devices):
            parts.append(f"{len(self.devices) - len(enabled)} disabled")
        if self.settings.modules:
            parts.append(f"modules {', '.join(self.settings.modules)}")
        parts.append(f"store {self.settings.store.backend}")
        parts.append(
            "Home Assistant discovery " + ("on" if self.settings.homeassistant.enabled else "off")
        )
        mqtt = self.settings.mqtt
        brokers = ", ".join(f"{host}:{port}" for host, port in mqtt.brokers())
        parts.append(f"broker {brokers}" + (" (TLS)" if mqtt.tls else ""))
        return "; ".join(parts)


def check_config(
    path: str | os.PathLike[str],
    *,
    env_file: str | os.PathLike[str] | None = ".env",
    environ: Mapping[str, str] | None = None,
) -> tuple[DaemonConfig | None, list[ConfigError]]:
    """Read and check the whole file: ``(config, [])``, or ``(None, every problem)``."""
    config, problems = read_config(path, env_file=env_file, environ=environ)
    return (None, problems) if problems else (config, [])


def read_config(
    path: str | os.PathLike[str],
    *,
    env_file: str | os.PathLike[str] | None = ".env",
    environ: Mapping[str, str] | None = None,
) -> tuple[DaemonConfig | None, list[ConfigError]]:
    """Read and check the whole file as far as it goes: every problem, and the config with
    the devices that passed (None when nothing could be read: a file that does not parse).

    For ``agent check``, which goes on to build the App of what is good, so that a user
    module that does not import is reported in the same run as a typo in a device table.
    Never run a config that came with problems."""
    source = str(path)
    settings, problems = DaemonSettings.check_best_effort(
        config_file=path, env_file=env_file, environ=environ
    )
    for problem in problems:
        if problem.detail == "unknown key" and "." not in problem.key and problem.source == source:
            # A top-level key the daemon does not know, not a typo of one it does: most
            # likely a framework config file (an App's own settings) without its app key.
            problem.detail += (
                "; the daemon does not know it (a config file for an App of your own names "
                'it: app = "module:attribute")'
            )
    if settings is None:
        return None, problems  # nothing could be read (a file that does not parse)
    # Even with problems so far, what was read (refused values at their defaults) is
    # checked on, devices and modules included: one run of agent check lists everything.
    problems.extend(settings.module_problems(source))
    devices = _check_devices(settings.device, source, problems)
    return DaemonConfig(source, settings, tuple(devices)), problems


def load_config(
    path: str | os.PathLike[str],
    *,
    env_file: str | os.PathLike[str] | None = ".env",
    environ: Mapping[str, str] | None = None,
) -> DaemonConfig:
    """:func:`check_config`, raising the first problem (for callers that stop at one)."""
    config, problems = check_config(path, env_file=env_file, environ=environ)
    if problems:
        raise problems[0]
    assert config is not None
    return config


# -- the [[device]] tables ---------------------------------------------------------------


class _Collector:
    """Problems of one device table, with its position in the file."""

    def __init__(self, source: str, at: str, problems: list[ConfigError]) -> None:
        self.source = source
        self.at = at
        self.problems = problems
        self.count = 0

    def __call__(self, key: str, expected: str, found: str) -> None:
        self.count += 1
        where = f"{self.at}.{key}" if key else self.at
        self.problems.append(
            ConfigError(source=self.source, key=where, expected=expected, found=found)
        )

    def detail(self, key: str, detail: str) -> None:
        self.count += 1
        where = f"{self.at}.{key}" if key else self.at
        self.problems.append(ConfigError(source=self.source, key=where, detail=detail))


def _check_devices(
    tables: list[dict[str, Any]], source: str, problems: list[ConfigError]
) -> list[DaemonDevice]:
    devices: list[DaemonDevice] = []
    names: dict[str, str] = {}
    for index, table in enumerate(tables, start=1):
        at = f"device[{index}]"
        report = _Collector(source, at, problems)
        device = _check_device(table, at, report)
        # Names are compared even for tables with other problems: one run lists it all.
        name = table.get("name", table.get("type"))
        if isinstance(name, str):
            if name in names:
                report.detail(
                    "name",
                    f"a second device named {_show(name)} (the first is "
                    f"{names[name]}); give each device its own name",
                )
                continue
            names[name] = at
        if device is not None:
            devices.append(device)
    return devices


def _check_device(table: Mapping[str, Any], at: str, report: _Collector) -> DaemonDevice | None:
    type_name = table.get("type")
    if not isinstance(type_name, str):
        report(
            "type",
            f"the device's type, one of {', '.join(sorted(BUILTINS))}",
            _show(type_name) if "type" in table else "nothing",
        )
        return None
    device_type = BUILTINS.get(type_name)
    if device_type is None:
        report.detail(
            "type",
            # _show: the value cut to a short quote, whatever its length (one clear line).
            f"unknown device type {_show(type_name)}{_suggest(type_name, list(BUILTINS))}"
            f"; the built-in types are {', '.join(sorted(BUILTINS))}",
        )
        return None
    before = report.count
    name = _name(table, type_name, report)
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        report("enabled", "true or false", _show(enabled))
    polled = device_type.default_interval is not None
    interval = _interval(table, device_type, report)
    publish = _publish(table.get("publish"), report) if "publish" in table else None
    filters = _filters(table.get("filter"), report) if "filter" in table else ()
    retry = table.get("retry", 0)
    if isinstance(retry, bool) or not isinstance(retry, int) or not 0 <= retry <= 100:
        report("retry", "a whole number of retries, 0-100", _show(retry))
    group = table.get("group")
    if group is not None and (not isinstance(group, str) or not group.strip()):
        report("group", "a group name (devices of one group share a thread)", _show(group))
    if not polled:
        for key in ("publish", "filter", "retry", "group"):
            if key in table:
                report.detail(
                    key,
                    f"a {type_name} device is not polled: remove {key}",
                )
    options = {k: v for k, v in table.items() if k not in COMMON_KEYS}
    checked = device_type.check(options, report)
    if report.count > before:
        return None
    spec = DeviceSpec(
        key=at,
        type=type_name,
        name=name,
        enabled=bool(enabled),
        interval=interval,
        publish=publish,
        filters=filters,
        retry=int(retry),
        group=group,
        options=options,
    )
    return DaemonDevice(device_type, spec, checked)


def _suggest(wrong: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(wrong, choices, n=1, cutoff=0.6)
    return f" (did you mean {json.dumps(close[0])}?)" if close else ""


def _name(table: Mapping[str, Any], type_name: str, report: _Collector) -> str:
    name = table.get("name", type_name)
    if not isinstance(name, str):
        report("name", "the device's name, one topic level", _show(name))
        return type_name
    problem = prefix_problem(name)
    if problem is not None or "/" in name:
        report("name", _PREFIX_EXPECTED, _show(name))
    return name


def _interval(
    table: Mapping[str, Any], device_type: DeviceType, report: _Collector
) -> float | None:
    if "interval" not in table:
        return device_type.default_interval
    if device_type.default_interval is None:
        report.detail(
            "interval",
            f"a {device_type.name} device is not polled: remove interval",
        )
        return None
    value = table["interval"]
    try:
        return check_interval(value)
    except (TypeError, ValueError):
        report("interval", "seconds between readings, a number > 0", _show(value))
        return None


_PUBLISH_KEYS = ("on_change", "every", "every_n", "combine")


def _publish(value: Any, report: _Collector) -> PublishStrategy | None:
    """``publish = { on_change = true | threshold | {field = threshold}, every = seconds,
    every_n = N, combine = "any" | "all" }``; several of them combine with ``any`` (the
    default: e.g. on a change, and at least every 10 minutes) or ``all``."""
    if not isinstance(value, dict):
        report("publish", "a table like { on_change = 0.5, every = 600 }", _show(value))
        return None
    parts: list[PublishStrategy] = []
    for key, item in value.items():
        where = f"publish.{key}"
        if key not in _PUBLISH_KEYS:
            report.detail(where, "unknown key" + _suggest(key, list(_PUBLISH_KEYS)))
            continue
        try:
            if key == "on_change":
                if item is False:
                    continue
                parts.append(OnChange(threshold=None if item is True else item))
            elif key == "every":
                parts.append(Every(seconds=item))
            elif key == "every_n":
                parts.append(Every(n=item))
        except (TypeError, ValueError):
            expected = {
                "on_change": "true, a threshold >= 0, or a table of field = threshold",
                "every": "seconds, a number > 0",
                "every_n": "a whole number >= 1",
            }[key]
            report(where, expected, _show(item))
    combine = value.get("combine", "any")
    if combine not in ("any", "all"):
        report("publish.combine", '"any" or "all"', _show(combine))
        return None
    if not parts:
        if not any(k in value for k in ("on_change", "every", "every_n")) and all(
            k in _PUBLISH_KEYS for k in value
        ):
            report("publish", "at least one of on_change, every, every_n", _show(value))
        return None
    if len(parts) == 1:
        return parts[0]
    return AnyStrategy(*parts) if combine == "any" else AllStrategy(*parts)


_FILTER_PARAMS = {
    "median": "a window of readings, a whole number 1-1000",
    "pt1": "a time constant tau in seconds, a number > 0",
    "one_euro": "a table { min_cutoff = 1.0, beta = 0.0, d_cutoff = 1.0 }",
}


def _filters(value: Any, report: _Collector) -> tuple[FieldFilter, ...]:
    """``filter = { field = { median = 5 } }`` (see :mod:`agent.daemon.filters`)."""
    if not isinstance(value, dict):
        report("filter", "a table of field = { median = N } (or pt1, one_euro)", _show(value))
        return ()
    out: list[FieldFilter] = []
    for field_name, spec in value.items():
        where = f"filter.{field_name}"
        if not isinstance(spec, dict) or len(spec) != 1:
            report(where, f"one of {{ {' | '.join(FILTER_KINDS)} = ... }}", _show(spec))
            continue
        ((kind, param),) = spec.items()
        if kind not in FILTER_KINDS:
            report.detail(
                f"{where}.{kind}",
                "unknown filter"
                + _suggest(kind, list(FILTER_KINDS))
                + f"; use one of {', '.join(FILTER_KINDS)}",
            )
            continue
        params = _filter_params(kind, param)
        if params is None:
            wrong = _one_euro_problem(param) if kind == "one_euro" else None
            if wrong is None:
                report(f"{where}.{kind}", _FILTER_PARAMS[kind], _show(param))
            else:  # name the key of the table that is wrong, not the whole table
                key, expected, found = wrong
                report(f"{where}.{kind}.{key}", expected, found)
            continue
        out.append(FieldFilter(field_name, kind, params))
    return tuple(out)


_ONE_EURO_EXPECTED = {
    "min_cutoff": "a cutoff frequency in Hz, a number > 0",
    "beta": "a number >= 0",
    "d_cutoff": "a cutoff frequency in Hz, a number > 0",
}


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _one_euro_problem(param: Any) -> tuple[str, str, str] | None:
    """``(key, expected, found)`` for the first wrong key of a one_euro table (None when
    ``param`` is no table at all: then the whole value is the problem)."""
    if not isinstance(param, dict):
        return None
    for key, value in param.items():
        expected = _ONE_EURO_EXPECTED.get(key)
        if expected is None:
            known = list(_ONE_EURO_EXPECTED)
            return key, "one of " + ", ".join(known) + _suggest(key, known), "an unknown key"
        too_low = _number(value) and (value < 0 if key == "beta" else value <= 0)
        if not _number(value) or too_low:
            return key, expected, _show(value)
    return None


def _filter_params(kind: str, param: Any) -> dict[str, float] | None:
    if kind == "median":
        ok = isinstance(param, int) and not isinstance(param, bool) and 1 <= param <= 1000
        return {"window": param} if ok else None
    if kind == "pt1":
        return {"tau": float(param)} if _number(param) and param > 0 else None
    if not isinstance(param, dict) or not set(param) <= {"min_cutoff", "beta", "d_cutoff"}:
        return None
    values = {"min_cutoff": 1.0, "beta": 0.0, "d_cutoff": 1.0, **param}
    if not all(_number(v) for v in values.values()):
        return None
    if values["min_cutoff"] <= 0 or values["d_cutoff"] <= 0 or values["beta"] < 0:
        return None
    return {k: float(v) for k, v in values.items()}
