"""What an App would do, without doing it: :func:`build_registry_snapshot` and ``agent describe``.

::

    snapshot = agent.build_registry_snapshot(app, settings)
    snapshot["devices"]["telemetry"][0]["publishes"]["state"]   # 'gas2mqtt/counter/state'
    print(format_snapshot(snapshot))                            # the table of agent describe

The snapshot is plain data — dicts, lists, strings, numbers, booleans and None — so
``json.dumps(snapshot)`` needs no custom encoder. Its shape::

    {
      "name": "gas2mqtt", "version": "1.0.0", "description": "...",
      "prefix": "gas2mqtt",                 # mqtt.topic_prefix of the settings, else the name
      "dry_run": false,                     # App.dry_run (``--dry-run``)
      "publishes": {"status": "gas2mqtt/status", "error": "gas2mqtt/error"},
      "devices": {                          # by kind, each in registration order
        "device":    [{"name", "root", "enabled", "init", "timeout", "publishes", "subscribes"}],
        "telemetry": [{... the same, and "interval", "strategy", "group", "retry",
                       "retry_on", "backoff", "circuit_breaker", "persist"}],
        "command":   [{... the same}]
      },
      "adapters": {"GasMeterPort": {"impl": "mybridge.hw:SerialGasMeter",
                                    "dry_run": "FakeGasMeter", "active": "impl"}}
    }

Values mean what the runtime will use:

* ``publishes`` of a device: ``state``, ``availability`` and ``error`` topics (a root device's
  sit right under the prefix); ``subscribes``: ``{prefix}/{device}/set`` for command and
  device handlers, and ``{prefix}/{device}/+/set`` for devices (their ``ctx.on_command``
  sub-topics); telemetry subscribes to nothing.
* ``interval``: seconds; ``"callable"`` when it is a function of the settings and no settings
  were given, or the function raised or returned no usable number (``App.run`` would stop
  with a configuration error then; the snapshot only describes).
* ``timeout``: seconds per handler call, ``None`` for no bound, ``"default"`` when the
  default depends on an interval not known yet.
* ``strategy``, ``backoff``, ``circuit_breaker``, ``persist``: the objects' ``repr``
  (``"OnChange(threshold=0.5) | Every(seconds=60)"``); ``strategy`` ``None`` publishes every
  reading. ``retry_on`` (exception class names) and ``backoff`` are the effective ones —
  defaults filled in — when ``retry`` > 0, and ``None`` when nothing is retried.
* ``init``: the ``init=`` factory's qualified name, or ``None``.
* ``adapters``: keyed by the port's name (module-qualified when two ports share one); a class
  or factory by its qualified name, a lazy string as given; ``active`` says which variant a
  run with this ``dry_run`` would build.

Building a snapshot never connects to anything, never imports a lazy adapter string, never
builds or enters an adapter, and never reads a setting other than ``mqtt.topic_prefix`` —
apart from calling interval functions, whose value is shown only when it is a valid number
of seconds. So no password can end up in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.adapters import describe_spec
from agent.registry import Default, Registration, check_interval
from agent.runtime.stalls import default_timeout
from agent.runtime.telemetry import DEFAULT_RETRY_ON, _default_backoff
from agent.topics import Topics

if TYPE_CHECKING:
    from agent.app import App
    from agent.settings import Settings

__all__ = ["build_registry_snapshot", "format_snapshot"]

KINDS = ("device", "telemetry", "command")
CALLABLE = "callable"
"""An ``interval`` that is a function of the settings, not resolved."""


def build_registry_snapshot(app: App, settings: Settings | None = None) -> dict[str, Any]:
    """A JSON-serialisable description of ``app``: devices, topics, adapters.

    With ``settings`` the topics are under ``settings.mqtt.topic_prefix`` (else the app's
    name) and interval functions are resolved. See the module docstring for the shape.
    """
    prefix = _prefix(app, settings)
    topics = Topics(prefix)
    devices: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for reg in app.registry:
        devices[reg.kind].append(_device(reg, topics, settings))
    return {
        "name": app.name,
        "version": app.version,
        "description": app.description,
        "prefix": prefix,
        "dry_run": bool(app.dry_run),
        "publishes": {"status": topics.status, "error": topics.error()},
        "devices": devices,
        "adapters": _adapters(app),
    }


def _prefix(app: App, settings: Settings | None) -> str:
    if settings is None:
        return app.name
    # The one setting read: the prefix is checked when the settings load, never secret.
    return settings.mqtt.topic_prefix or app.name


def _device(reg: Registration, topics: Topics, settings: Settings | None) -> dict[str, Any]:
    name, root = reg.name, reg.is_root
    entry: dict[str, Any] = {
        "name": name,
        "root": root,
        "enabled": reg.enabled,
        "init": None if reg.init is None else _qualname(reg.init),
    }
    interval: float | str | None = None
    if reg.kind == "telemetry":
        interval = _interval(reg, settings)
        options = reg.telemetry
        retries = options.retry > 0
        retry_on = options.retry_on if options.retry_on is not None else DEFAULT_RETRY_ON
        backoff = options.backoff if options.backoff is not None else _default_backoff()
        entry.update(
            interval=interval,
            strategy=_repr(options.publish),
            group=options.group,
            retry=options.retry,
            retry_on=[cls.__name__ for cls in retry_on] if retries else None,
            backoff=repr(backoff) if retries else None,
            circuit_breaker=_repr(options.circuit_breaker),
            persist=_repr(options.persist),
        )
    entry["timeout"] = _timeout(reg, interval)
    entry["publishes"] = {
        "state": topics.state(name, root),
        "availability": topics.availability(name, root),
        "error": topics.error(name, root),
    }
    subscribes: list[str] = []
    if reg.accepts_commands:
        subscribes.append(topics.set(name, root))
    if reg.kind == "device":
        subscribes.append(topics.command(name, "+", root))  # its ctx.on_command sub-topics
    entry["subscribes"] = subscribes
    return entry


def _interval(reg: Registration, settings: Settings | None) -> float | str:
    spec = reg.interval
    if not callable(spec):
        return float(spec)  # type: ignore[arg-type]  # checked at registration
    if settings is None:
        return CALLABLE
    try:
        # Only a valid number of seconds is shown: whatever else the function returned
        # (a setting it should not have read, say) stays out of the snapshot.
        return check_interval(spec(settings))
    except Exception:
        return CALLABLE


def _timeout(reg: Registration, interval: float | str | None) -> float | str | None:
    if reg.timeout is None or not isinstance(reg.timeout, Default):
        return reg.timeout
    if reg.kind == "telemetry":
        if isinstance(interval, str):
            return "default"  # max(3 × interval, 30 s), and the interval is not known
        return default_timeout(reg.kind, interval)
    return default_timeout(reg.kind, None)


def _adapters(app: App) -> dict[str, dict[str, Any]]:
    entries = list(app.adapters)
    short = [entry.port.__qualname__ for entry in entries]
    out: dict[str, dict[str, Any]] = {}
    for entry, name in zip(entries, short, strict=True):
        if short.count(name) > 1:
            name = f"{entry.port.__module__}.{name}"
        uses_dry_run = app.dry_run and entry.dry_run is not None
        out[name] = {
            "impl": describe_spec(entry.impl),
            "dry_run": describe_spec(entry.dry_run),
            "active": "dry_run" if uses_dry_run else "impl",
        }
    return out


def _qualname(func: object) -> str:
    return describe_spec(func) or repr(func)  # type: ignore[arg-type]


def _repr(obj: object | None) -> str | None:
    return None if obj is None else repr(obj)


# -- the table of ``agent describe`` ---------------------------------------------------------


def format_snapshot(snapshot: dict[str, Any]) -> str:
    """The snapshot as text for people: the app, a table of devices, of telemetry options,
    of topics, and of adapters. Sections with nothing to show are left out."""
    lines = [f"{snapshot['name']} {snapshot['version']}: {snapshot['description']}"]
    mode = "dry run (dry-run adapters)" if snapshot["dry_run"] else "real adapters"
    lines.append(f"topic prefix {snapshot['prefix']!r}, {mode}")
    app_topics = snapshot["publishes"]
    lines.append(
        f"app publishes {app_topics['status']} (heartbeat), {app_topics['error']} (errors)"
    )
    devices = [(kind, d) for kind in KINDS for d in snapshot["devices"][kind]]
    if not devices:
        lines += ["", "no devices registered"]
    else:
        lines += ["", *_table(_DEVICE_COLUMNS, [_device_row(kind, d) for kind, d in devices])]
        telemetry = snapshot["devices"]["telemetry"]
        if any(_has_failure_options(d) for d in telemetry):
            rows = [[d["name"], *(_cell(d[key]) for key in _FAILURE_KEYS)] for d in telemetry]
            lines += ["", *_table(["TELEMETRY", *_FAILURE_HEADERS], rows)]
        lines += ["", *_table(["DEVICE", "PUBLISHES", "SUBSCRIBES"], _topic_rows(devices))]
    adapters = snapshot["adapters"]
    if adapters:
        rows = [
            [
                port,
                _cell(a["impl"]),
                _cell(a["dry_run"]),
                "dry run" if a["active"] == "dry_run" else "impl",
            ]
            for port, a in adapters.items()
        ]
        lines += ["", *_table(["PORT", "IMPLEMENTATION", "DRY RUN", "USED"], rows)]
    return "\n".join(lines)


_DEVICE_COLUMNS = ["DEVICE", "KIND", "ENABLED", "INTERVAL", "STRATEGY", "GROUP", "TIMEOUT", "INIT"]
_FAILURE_KEYS = ("retry", "retry_on", "backoff", "circuit_breaker", "persist")
_FAILURE_HEADERS = ["RETRY", "RETRY ON", "BACKOFF", "CIRCUIT BREAKER", "PERSIST"]


def _device_row(kind: str, device: dict[str, Any]) -> list[str]:
    telemetry = kind == "telemetry"
    return [
        device["name"] + (" (root)" if device["root"] else ""),
        kind,
        "yes" if device["enabled"] else "no",
        _seconds(device["interval"]) if telemetry else "-",
        (device["strategy"] or "every reading") if telemetry else "-",
        _cell(device.get("group")),
        _seconds(device["timeout"]),
        _cell(device["init"]),
    ]


def _has_failure_options(device: dict[str, Any]) -> bool:
    return bool(device["retry"] or device["circuit_breaker"] or device["persist"])


def _topic_rows(devices: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """One row per topic, the device named on its first row only."""
    rows: list[list[str]] = []
    for _kind, device in devices:
        publishes = list(device["publishes"].values())
        subscribes = device["subscribes"]
        for i in range(max(len(publishes), len(subscribes))):
            rows.append(
                [
                    device["name"] if i == 0 else "",
                    publishes[i] if i < len(publishes) else "",
                    subscribes[i] if i < len(subscribes) else ("-" if i == 0 else ""),
                ]
            )
    return rows


def _seconds(value: float | str | None) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    return f"{value:g} s"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return " ".join(str(value).split())  # a repr with a newline must not break the table


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, no trailing spaces."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
