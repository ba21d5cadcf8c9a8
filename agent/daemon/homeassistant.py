"""Home Assistant MQTT discovery for the daemon (``[homeassistant] enabled = true``).

Home Assistant learns about an entity from a retained JSON *discovery config* on
``<discovery_prefix>/<component>/<node_id>/<object_id>/config``; an empty retained payload
there deletes the entity. This module turns the :class:`~agent.Entity` declarations of an
App's devices (``entities=`` on every registration; the built-ins declare theirs) into those
configs, checks them against what Home Assistant accepts, and keeps them published.

Conventions (what a user sees in Home Assistant, and what must never change, or entities
would be duplicated):

* **One Home Assistant device per agent device**, identified as ``agent_<node>_<device>``
  and named after the device, its model saying what it is (``agent telemetry device``,
  ``agent command device``, ``agent device``); ``<node>`` is the topic prefix made an id.
  Its ``via_device`` is the agent itself (``agent_<node>``), a device of its own holding a
  ``connectivity`` binary sensor read from ``{prefix}/status``. The root (unnamed) device's
  entities belong to the agent's device.
* **Ids** keep ``[a-zA-Z0-9_-]`` and turn every other run of characters into ``_``
  (``sensor.temp`` → ``sensor_temp``): config topic
  ``<discovery_prefix>/<component>/<node>/<device>_<field>/config``, ``unique_id``
  ``agent_<node>_<device>_<field>``, ``default_entity_id`` ``<component>.<node>_<device>_<field>``
  in lower case with ``_`` for anything else (Home Assistant's entity id form; it replaced
  ``object_id``, which is never sent). Two entities whose ids would be equal are refused.
* **State**: ``state_topic`` is the device's state topic and ``value_template`` picks the
  field, ``{{ value_json.a.b }}`` for a dot path, ``{{ value_json['a-b'] }}`` where a name
  is not a plain identifier or is a dict method (``items``). A ``binary_sensor`` or
  ``switch`` without ``payload_on``/``payload_off`` speaks ``ON``/``OFF`` and reads its
  field as on when it is JSON ``true``, ``1``, or the text ``on`` or ``true`` in any case
  (``"ON"``, ``"True"``), and as off otherwise (``false``, ``0``, ``"OFF"``, ``"off"``,
  missing): a command handler may answer ``{"state": payload}`` with the ``OFF`` it was
  sent. With them, the field's value is compared as text and the same strings are sent as
  commands.
* **Availability**: both ``{prefix}/status`` (JSON while running, plain ``offline`` as last
  will: ``{{ value_json.status if value_json is mapping else value }}``) and the device's
  availability topic, with ``availability_mode: "all"``: with one MQTT connection only the
  status topic gets the last will, so a crash would otherwise leave every entity online.
* **Polled values expire**: a sensor or binary sensor of a telemetry device gets
  ``expire_after`` = 3 × the longest silence its publish strategy allows (the interval;
  ``Every(n=k)``: k intervals; ``Every(seconds=s)``: s rounded up to intervals), rounded up
  to whole seconds. A strategy that may stay silent for ever (``OnChange``) gets none.
* **Commands**: ``switch``, ``button``, ``number`` and ``select`` send to
  ``{prefix}/{device}/set`` (``{prefix}/{device}/{sub}/set`` with ``command_sub_topic``),
  with ``retain: false``: a retained command would be replayed at every reconnect. Only a
  ``@app.command`` or ``@app.device`` device takes commands; a command entity on a
  telemetry device is refused. A ``button`` sends its ``payload_on`` (default ``PRESS``).
* **Validity**: unit, ``device_class`` and ``state_class`` only in the combinations Home
  Assistant accepts (:mod:`agent.daemon.ha_tables`, taken from its source), each key only
  on the components that have it; :func:`entity_config_errors` lists everything else when
  the config file is loaded, one :class:`~agent.ConfigError` per problem naming the device
  and the field (:func:`check_app_entities` raises the first).

At run time (:func:`discovery_lifespan`) every config is published retained, and the config
topics published are remembered in the store, so that those of entities that no longer exist
(a device removed from the config file, a field renamed) are cleared at the next start:
retained configs alone leave ghost entities. When Home Assistant announces itself with
``online`` on its birth topic, ``status_topic`` (``homeassistant/status`` by default,
whatever the discovery prefix: Home Assistant's own default does not follow the prefix
either), after its own restart or the broker's, the configs and then the retained states go
out again after a random 0.5–3 s, so that a hundred agents do not answer in the same
millisecond.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import random
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated, Any

from agent.clock import ClockPort, SystemClock, wait
from agent.daemon import ha_tables as tables
from agent.entities import COMPONENTS, Entity
from agent.registry import Registration, check_interval
from agent.settings import ConfigError, Section
from agent.settings.conversion import _show
from agent.settings.fields import Check
from agent.stores import Store
from agent.strategies import AllStrategy, AnyStrategy, Every
from agent.topics import Topics, prefix_problem, validate_sub_topic

__all__ = [
    "STORE_KEY",
    "HomeAssistantSettings",
    "build_configs",
    "check_app_entities",
    "discovery_lifespan",
    "entity_config_errors",
    "entity_problems",
]

log = logging.getLogger("agent.homeassistant")

STORE_KEY = "agent/homeassistant"
"""Where the published config topics are remembered. A device's store key is its name, which
cannot hold a ``/``: no device can clash with it."""

THREAD_NAME = "agent-homeassistant"
JOIN_BOUND = 5.0
"""Real seconds the lifespan waits for its thread at exit (it only ever waits on an event)."""

_STATUS = "value_json.status if value_json is mapping else value"
STATUS_TEMPLATE = "{{ " + _STATUS + " }}"
"""``{prefix}/status`` carries the heartbeat JSON while running, plain ``offline`` otherwise."""
CONNECTIVITY_TEMPLATE = "{{ 'ON' if (" + _STATUS + ") == 'online' else 'OFF' }}"
ON_TEXTS = ("true", "1", "on")
"""What a boolean field reads as ``ON`` once made lower-case text (Jinja's ``string`` and
``lower`` filters): JSON ``true`` is ``"true"``, ``1`` is ``"1"``, ``"ON"`` is ``"on"``."""

_ID_JUNK = re.compile(r"[^a-zA-Z0-9_-]+")
_SLUG_JUNK = re.compile(r"[^a-z0-9]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Jinja resolves ``a.b`` as an attribute first: ``value_json.items`` is the dict method.
_DICT_ATTRIBUTES = frozenset(dir(dict))
_CONFIG_TOPIC = re.compile(
    r".+/(?:" + "|".join(COMPONENTS) + r")/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config"
)
_COMMAND_COMPONENTS = ("switch", "button", "number", "select")


def _is_topic(text: str) -> bool:
    return prefix_problem(text) is None


class HomeAssistantSettings(Section):
    """``[homeassistant]``: ``enabled`` (default false) turns discovery on;
    ``discovery_prefix`` (default ``homeassistant``) is Home Assistant's discovery prefix,
    as set in its MQTT integration; ``status_topic`` (default ``homeassistant/status``) is
    the topic of its birth message (``online``), as set there too.

    The two are separate settings because they are in Home Assistant: changing the
    discovery prefix to ``ha`` leaves the birth message on ``homeassistant/status``."""

    enabled: bool = False
    discovery_prefix: Annotated[
        str, Check(_is_topic, 'a topic prefix such as "homeassistant" (no "+", "#" or //)')
    ] = "homeassistant"
    # The rules of a prefix are those of a topic one subscribes to without wildcards: a "+"
    # or "#" here would take other clients' messages for Home Assistant's birth.
    status_topic: Annotated[
        str, Check(_is_topic, 'a topic without wildcards such as "homeassistant/status"')
    ] = "homeassistant/status"


# -- ids and templates -------------------------------------------------------------------


def ha_id(text: str) -> str:
    """``text`` as a Home Assistant discovery id (``[a-zA-Z0-9_-]``): ``"sensor.temp"`` →
    ``"sensor_temp"``. A name with nothing usable (``"温度"``) becomes a short hash of itself,
    so that it stays the same from run to run."""
    clean = _ID_JUNK.sub("_", text).strip("_")
    return clean or "x" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def entity_slug(text: str) -> str:
    """``text`` as the object part of an entity id: lower case, ``_`` for the rest."""
    return _SLUG_JUNK.sub("_", text.lower()).strip("_") or "agent"


def field_path(field: str) -> str:
    """The Jinja expression reading ``field`` (a dot path) from ``value_json``."""
    out = "value_json"
    for part in field.split("."):
        if _IDENTIFIER.fullmatch(part) and part not in _DICT_ATTRIBUTES:
            out += f".{part}"
        else:
            out += "['" + part.replace("\\", "\\\\").replace("'", "\\'") + "']"
    return out


def _pretty(field: str) -> str:
    words = field.replace(".", " ").replace("_", " ").split()
    text = " ".join(words) or field
    return text[:1].upper() + text[1:]


def _quoted(values: Iterable[str | None]) -> str:
    return ", ".join("no unit" if v is None else json.dumps(v, ensure_ascii=False) for v in values)


def _one_of(value: str, allowed: Iterable[str | None], what: str) -> str:
    """``(use one of "°C", "°F", "K")``, the closest first; long lists get a did-you-mean."""
    allowed = list(allowed)
    close = difflib.get_close_matches(value, [a for a in allowed if a is not None], n=3, cutoff=0.5)
    ordered = close + [a for a in allowed if a not in close]
    if len(ordered) <= 12:
        return f"(use one of {_quoted(ordered)})"
    hint = f"did you mean {_quoted(close[:1])}? " if close else ""
    return f"({hint}see Home Assistant's list of {what})"


# -- validation --------------------------------------------------------------------------


# Which components take each key of an Entity (Home Assistant's MQTT platform schemas).
_TAKES_KEY = {
    "device_class": ("sensor", "binary_sensor", "switch", "button", "number"),
    "unit": ("sensor", "number"),
    "state_class": ("sensor",),
    "payload_on": ("binary_sensor", "switch", "button"),
    "payload_off": ("binary_sensor", "switch"),
    "command_sub_topic": _COMMAND_COMPONENTS,
    "options": ("sensor", "select"),
    "minimum": ("number",),
    "maximum": ("number",),
    "step": ("number",),
}


def entity_problems(entity: Entity, reg: Registration) -> list[str]:
    """Why Home Assistant would refuse ``entity`` of device ``reg``, one phrase each (empty:
    it is fine). Checks the component's keys, the device class, the unit for it and the
    state class for both, as Home Assistant's MQTT schemas do."""
    problems: list[str] = []
    component = entity.component
    given = {
        "device_class": entity.device_class,
        "unit": entity.unit,
        "state_class": entity.state_class,
        "payload_on": entity.payload_on,
        "payload_off": entity.payload_off,
        "command_sub_topic": entity.command_sub_topic,
        "options": entity.options,
        "minimum": entity.minimum,
        "maximum": entity.maximum,
        "step": entity.step,
    }
    takes = [key for key, users in _TAKES_KEY.items() if component in users]
    for key, value in given.items():
        if value is not None and key not in takes:
            users = ", ".join(_TAKES_KEY[key])
            problems.append(f"{key} is not an option of a {component} (only of: {users})")
    if entity.icon is not None and (not isinstance(entity.icon, str) or ":" not in entity.icon):
        problems.append(f'icon {_show(entity.icon)} is not an icon name like "mdi:thermometer"')
    if any(part == "" for part in entity.field.split(".")):
        problems.append(f"field {_show(entity.field)} has an empty part in its dot path")
    if component in _COMMAND_COMPONENTS and not reg.accepts_commands:
        problems.append(
            f"a {component} sends commands, but {reg.kind} device {reg.name!r} takes none "
            "(register it with @app.command or @app.device)"
        )
    if entity.command_sub_topic is not None and "command_sub_topic" in takes:
        try:
            validate_sub_topic(entity.command_sub_topic)
        except (TypeError, ValueError) as err:
            problems.append(str(err))
    dc = entity.device_class
    classes = {
        "sensor": tables.SENSOR_DEVICE_CLASSES,
        "binary_sensor": tables.BINARY_SENSOR_DEVICE_CLASSES,
        "switch": tables.SWITCH_DEVICE_CLASSES,
        "button": tables.BUTTON_DEVICE_CLASSES,
        "number": tables.NUMBER_DEVICE_CLASSES,
        "select": (),
    }[component]
    if dc is not None and "device_class" in takes and dc not in classes:
        problems.append(
            f"device_class {_show(dc)} is not one of a {component} "
            + _one_of(str(dc), classes, f"{component} device classes")
        )
        dc = None
    if component in ("sensor", "number"):
        problems += _unit_problems(entity, dc)
    if component == "sensor":
        problems += _state_class_problems(entity, dc)
        if entity.options is not None and dc != "enum":
            problems.append('options are for a sensor with device_class "enum" only')
    if entity.options is not None and component in ("sensor", "select"):
        options = entity.options
        if not options or not all(isinstance(o, str) and o for o in options):
            problems.append(f"options must be non-empty strings, got {_show(options)}")
        elif len(set(options)) != len(options):
            problems.append(
                f"options {json.dumps(list(options), ensure_ascii=False)} repeat a choice"
            )
    if component == "select" and entity.options is None:
        problems.append("a select needs options (its choices)")
    if component == "number":
        problems += _number_problems(entity)
    return problems


def _unit_problems(entity: Entity, dc: str | None) -> list[str]:
    unit = entity.unit
    if unit is not None and (not isinstance(unit, str) or not unit.strip()):
        return [f"unit {_show(unit)} is not a unit (leave it out for none)"]
    if unit is not None:
        unit = tables.AMBIGUOUS_UNITS.get(unit, unit)
    if dc is None or dc not in tables.UNITS_OF:
        if dc in tables.NON_NUMERIC_DEVICE_CLASSES and unit is not None:
            return [f'device_class "{dc}" has no unit: leave out unit {_show(unit)}']
        return []
    allowed = tables.UNITS_OF[dc]
    if unit in allowed:
        return []
    if unit is None:
        return [f'device_class "{dc}" needs a unit ' + _one_of("", allowed, "units")]
    return [
        f'unit {_show(unit)} is not a unit of device_class "{dc}" '
        + _one_of(unit, allowed, "units")
    ]


def _state_class_problems(entity: Entity, dc: str | None) -> list[str]:
    sc = entity.state_class
    if sc is None:
        return []
    if sc not in tables.SENSOR_STATE_CLASSES:
        return [
            f"state_class {_show(sc)} is not a state class "
            + _one_of(str(sc), tables.SENSOR_STATE_CLASSES, "state classes")
        ]
    if dc is not None and dc in tables.STATE_CLASSES_OF:
        allowed = tables.STATE_CLASSES_OF[dc]
        if not allowed:
            return [f'device_class "{dc}" takes no state_class: leave out "{sc}"']
        if sc not in allowed:
            return [
                f'state_class "{sc}" is not one of device_class "{dc}" (use one of '
                f"{_quoted(allowed)}, or none)"
            ]
    units = tables.STATE_CLASS_UNITS.get(sc)
    unit = tables.AMBIGUOUS_UNITS.get(entity.unit or "", entity.unit)
    if units is not None and unit not in units:
        return [f'state_class "{sc}" needs unit {_quoted(units)}, not {_quoted([unit])}']
    return []


def _number_problems(entity: Entity) -> list[str]:
    problems = []
    for key in ("minimum", "maximum", "step"):
        value = getattr(entity, key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            problems.append(f"{key} must be a finite number, got {_show(value)}")
    low, high, step = entity.minimum, entity.maximum, entity.step
    if not problems:
        # Home Assistant's defaults: min 1, max 100, step 1; its step must be >= 0.001.
        if (low if low is not None else 1) > (high if high is not None else 100):
            problems.append(f"minimum {low} is above maximum {high if high is not None else 100}")
        if step is not None and step < 1e-3:
            problems.append(f"step must be at least 0.001, got {step}")
    return problems


# -- building the configs ----------------------------------------------------------------


class _Ids:
    __slots__ = ("entity_id", "object_id", "unique_id")

    def __init__(self, object_id: str, unique_id: str, entity_id: str) -> None:
        self.object_id = object_id
        self.unique_id = unique_id
        self.entity_id = entity_id


def _ids(node: str, reg: Registration, entity: Entity) -> _Ids:
    object_id = f"{ha_id(reg.name)}_{ha_id(entity.field)}"
    return _Ids(
        object_id,
        f"agent_{node}_{object_id}",
        f"{entity.component}.{entity_slug(f'{node}_{object_id}')}",
    )


def _problems_of(
    registrations: Iterable[Registration], node: str, *, disabled: bool
) -> list[tuple[Registration, Entity, str]]:
    """Every problem of every entity (of the ``disabled`` devices too, if asked), and ids
    two entities would share."""
    out: list[tuple[Registration, Entity, str]] = []
    seen: dict[tuple[str, str], tuple[Registration, Entity]] = {}
    for reg in registrations:
        if not (reg.enabled or disabled):
            continue
        for entity in reg.entities:
            out.extend((reg, entity, p) for p in entity_problems(entity, reg))
            ids = _ids(node, reg, entity)
            for key in ((entity.component, ids.object_id), (entity.component, ids.entity_id)):
                other = seen.setdefault(key, (reg, entity))
                if other[0] is not reg or other[1] is not entity:
                    out.append(
                        (
                            reg,
                            entity,
                            f"its Home Assistant id {key[1]!r} is the one of field "
                            f"{other[1].field!r} of device {other[0].name!r}: rename one",
                        )
                    )
                    break
    return out


def _describe(reg: Registration, entity: Entity, problem: str, *, with_source: bool = True) -> str:
    """``device 'boiler', sensor 'flow': <problem>``, with where the device was declared
    after its name when ``with_source`` (nothing else would say it)."""
    source = f" ({reg.source})" if with_source and reg.source else ""
    return f"device {reg.name!r}{source}, {entity.component} {entity.field!r}: {problem}"


def entity_config_errors(
    app: Any, ha: HomeAssistantSettings, *, source: str, keys: Mapping[str, str]
) -> list[ConfigError]:
    """Every entity of every device of ``app`` that Home Assistant would refuse: one
    :class:`ConfigError` per problem (empty: all fine), for ``agent check`` to print one
    per line.

    Each error has ``source=source`` (the config file), ``key=keys.get(device name, "")``
    and a detail naming the device and the field, e.g. ``keys={"boiler": "device[2]"}``
    gives ``agent.toml: device[2]: device 'boiler', sensor 'flow': unit "C" is not a unit
    of device_class "temperature" (use one of "°C", "K", "°F")`` (closest units first). A
    device without a key (not in ``keys``) is named with where it was registered instead,
    ``device 'boiler' (router 'heating' (module heating)), ...``, so that it can still be
    found. Two entities that would get the same Home Assistant id are one problem, on the
    second.

    Disabled devices are checked too: enabling one later must not be what reveals its
    mistake.

    Args:
        app: the :class:`~agent.App`, every device registered.
        ha: the ``[homeassistant]`` settings.
        source: where the configuration came from, for the errors.
        keys: device name → its place in the config file (``"device[2]"``,
            ``"modules[1]"``).
    """
    node = ha_id(app.name)  # the prefix is not known before the settings: ids only compared
    return [
        ConfigError(
            source=source,
            key=keys.get(reg.name, ""),
            detail=_describe(reg, entity, problem, with_source=reg.name not in keys),
        )
        for reg, entity, problem in _problems_of(app.registry, node, disabled=True)
    ]


def check_app_entities(app: Any, ha: HomeAssistantSettings, *, source: str) -> None:
    """Check the entities of every device of ``app`` against what Home Assistant accepts;
    the raising form of :func:`entity_config_errors`, for a caller that stops at the first
    problem (an App started without ``agent check``).

    Raises:
        ConfigError: the first of :func:`entity_config_errors` (no keys: each device is
            named with where it was registered), e.g. ``device 'boiler' (module heating),
            sensor 'flow': unit "C" is not a unit of device_class "temperature" (use one of
            "°C", "K", "°F")``, followed by how many more there are, if any.
    """
    errors = entity_config_errors(app, ha, source=source, keys={})
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first.detail = f"{first.detail} (and {len(errors) - 1} more)"
        raise first


def _max_silence(strategy: object, interval: float) -> float | None:
    """The longest a telemetry device with ``strategy`` may go without publishing (None:
    without bound)."""
    if strategy is None:
        return interval
    if isinstance(strategy, Every):
        if strategy.n is not None:
            return strategy.n * interval
        assert strategy.seconds is not None
        return max(1, math.ceil(strategy.seconds / interval - 1e-9)) * interval
    if isinstance(strategy, AnyStrategy | AllStrategy):
        bounds = [_max_silence(child, interval) for child in strategy.children]
        known = [b for b in bounds if b is not None]
        if isinstance(strategy, AnyStrategy):
            return min(known) if known else None
        return max(known) if len(known) == len(bounds) else None
    return None  # OnChange, or a strategy of the user's: it may be silent for ever


def _expire_after(reg: Registration, settings: Any) -> int | None:
    spec = reg.interval
    try:
        interval = check_interval(spec(settings) if callable(spec) else spec)
    except Exception:  # the runtime reports a bad interval function itself, at start
        return None
    silence = _max_silence(reg.telemetry.publish, interval)
    return None if silence is None else max(1, math.ceil(3 * silence - 1e-9))


def build_configs(
    registrations: Iterable[Registration],
    *,
    prefix: str,
    ha: HomeAssistantSettings,
    settings: Any,
    version: str,
    name: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Every discovery config of the enabled devices of ``registrations``:
    ``{config topic: payload}``, the agent's connectivity sensor included. Pure: nothing
    is published.

    Args:
        prefix: the App's topic prefix.
        settings: the App's settings (intervals given as functions of them are called).
        version: the ``sw_version`` of the devices and of the origin.
        name: the agent's device name in Home Assistant (default: ``prefix``).

    Raises:
        ConfigError: an entity Home Assistant would refuse (see :func:`check_app_entities`).
    """
    registrations = list(registrations)
    node = ha_id(prefix)
    problems = _problems_of(registrations, node, disabled=False)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(key="homeassistant", detail=_describe(*problems[0]) + more)
    topics = Topics(prefix)
    # No support_url: the project publishes none (pyproject.toml has no [project.urls]),
    # and a made-up one would send users nowhere.
    origin = {"name": "agent", "sw_version": version}
    agent_device = {
        "identifiers": [f"agent_{node}"],
        "name": name or prefix,
        "sw_version": version,
        "model": "agent",
    }
    disc = ha.discovery_prefix
    configs: dict[str, dict[str, Any]] = {
        f"{disc}/binary_sensor/{node}/connectivity/config": {
            "name": "Connectivity",
            "unique_id": f"agent_{node}_connectivity",
            "default_entity_id": f"binary_sensor.{entity_slug(node)}_connectivity",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": topics.status,
            "value_template": "{{ 'ON' if ("
            + STATUS_TEMPLATE[3:-3]
            + ") == 'online' else 'OFF' }}",
            "qos": 1,
            "device": agent_device,
            "origin": origin,
        }
    }
    for reg in registrations:
        if not reg.enabled:
            continue  # not running: its configs are cleared like a removed device's
        if reg.is_root:
            device = agent_device
        else:
            device = {
                "identifiers": [f"agent_{node}_{ha_id(reg.name)}"],
                "name": reg.name,
                "sw_version": version,
                # "agent device" for an @app.device, not "agent device device".
                "model": "agent device" if reg.kind == "device" else f"agent {reg.kind} device",
                "via_device": f"agent_{node}",
            }
        availability = [
            {"topic": topics.status, "value_template": STATUS_TEMPLATE},
            {"topic": topics.availability(reg.name, reg.is_root)},
        ]
        expire = _expire_after(reg, settings) if reg.kind == "telemetry" else None
        for entity in reg.entities:
            ids = _ids(node, reg, entity)
            config: dict[str, Any] = {
                "name": _pretty(entity.field) if entity.name is None else (entity.name or None),
                "unique_id": ids.unique_id,
                "default_entity_id": ids.entity_id,
                "availability": availability,
                "availability_mode": "all",
                "qos": 1,
                "device": device,
                "origin": origin,
            }
            config.update(_component_keys(entity, reg, topics, expire))
            if entity.icon is not None:
                config["icon"] = entity.icon
            configs[f"{disc}/{entity.component}/{node}/{ids.object_id}/config"] = config
    return configs


def _component_keys(
    entity: Entity, reg: Registration, topics: Topics, expire: int | None
) -> dict[str, Any]:
    component = entity.component
    state = topics.state(reg.name, reg.is_root)
    value = "{{ " + field_path(entity.field) + " }}"
    out: dict[str, Any] = {}
    if component != "button":
        out["state_topic"] = state
        out["value_template"] = value
    if component in _COMMAND_COMPONENTS:
        sub = entity.command_sub_topic
        out["command_topic"] = (
            topics.set(reg.name, reg.is_root)
            if sub is None
            else topics.command(reg.name, sub, reg.is_root)
        )
        out["retain"] = False
    if component in ("binary_sensor", "switch"):
        on, off = entity.payload_on, entity.payload_off
        if on is None and off is None:
            # Not Jinja's truth: "OFF" is a non-empty string, so true. A number is on when
            # it is not 0 (JSON true is one too); text compares lower-case, so "ON", "on",
            # "True" and "1" alike (see ON_TEXTS).
            texts = ", ".join(f"'{t}'" for t in ON_TEXTS)
            value = field_path(entity.field)
            out["value_template"] = (
                f"{{{{ 'ON' if ({value} is number and {value} != 0) or "
                f"({value} | string | lower) in [{texts}] else 'OFF' }}}}"
            )
            on, off = "ON", "OFF"
        else:
            on, off = on or "ON", off or "OFF"
        out["payload_on"], out["payload_off"] = on, off
        if component == "switch":
            out["state_on"], out["state_off"] = on, off
    if component == "button":
        out["payload_press"] = entity.payload_on or "PRESS"
    if component in ("sensor", "number") and entity.unit is not None:
        out["unit_of_measurement"] = tables.AMBIGUOUS_UNITS.get(entity.unit, entity.unit)
    if entity.device_class is not None:
        out["device_class"] = entity.device_class
    if component == "sensor" and entity.state_class is not None:
        out["state_class"] = entity.state_class
    if entity.options is not None:
        out["options"] = list(entity.options)
    if component == "number":
        for key, ha_key in (("minimum", "min"), ("maximum", "max"), ("step", "step")):
            if getattr(entity, key) is not None:
                out[ha_key] = getattr(entity, key)
    if component in ("sensor", "binary_sensor") and expire is not None:
        out["expire_after"] = expire
    return out


# -- run time ----------------------------------------------------------------------------


def discovery_lifespan(
    ha: HomeAssistantSettings,
    *,
    store: Store | None,
    version: str | None = None,
    delay: tuple[float, float] = (0.5, 3.0),
    rng: random.Random | None = None,
) -> Callable[[Any], AbstractContextManager[None]]:
    """A lifespan for ``App(lifespan=...)`` that keeps the App's discovery configs published.

    On entry it builds the configs (a :class:`ConfigError` for an entity Home Assistant
    would refuse), subscribes to ``ha.status_topic``, publishes every config
    retained with QoS 1, clears (an empty retained payload) the configs remembered in
    ``store`` from an earlier run that are not produced any more, and remembers the new set.
    The MQTT client queues all of it until the broker is there.

    Afterwards one thread, ``agent-homeassistant``, waits for Home Assistant's ``online``
    and then, after a random ``delay`` (seconds of the App's clock, drawn from ``rng``),
    publishes the configs again and then the heartbeat, availability and retained states
    (``ctx.republish()``). Several ``online`` during the delay make one re-publish. At exit
    the thread is stopped, even mid-delay, and joined within a bound.

    With ``store=None`` (``[store] backend = "none"``) the configs are published all the
    same, but nothing is remembered: the entities of removed devices cannot be cleared, and
    stay in Home Assistant until deleted there.

    Args:
        version: the ``sw_version`` shown in Home Assistant (default: agent's version).
    """
    low, high = delay
    if not 0 <= low <= high or not math.isfinite(high):
        raise ValueError(f"delay must be (low, high) with 0 <= low <= high, got {delay!r}")

    @contextmanager
    def homeassistant_discovery(ctx: Any) -> Iterator[None]:
        from agent import __version__

        publisher = _Publisher(
            ha, ctx, store=store, version=version or __version__, delay=delay, rng=rng
        )
        publisher.start()
        try:
            yield
        finally:
            publisher.stop()

    return homeassistant_discovery


def clear_remembered(
    mqtt: Any,
    store: Store | None,
    *,
    keep: Mapping[str, Any],
    quiet: bool = False,
    why: str = "of entities that no longer exist",
) -> None:
    """Clear (an empty retained payload) the discovery configs an earlier run remembered in
    ``store`` that are not in ``keep``, and remember ``keep`` instead. ``quiet``: a store
    that cannot be read is no news (discovery is off; the store's own users report it)."""
    if store is None:
        return
    try:
        saved = store.load(STORE_KEY) or {}
    except Exception as err:  # a store that cannot be read must not stop the agent
        if quiet:
            return
        log.warning(
            "cannot read the discovery configs published before (%s): "
            "removed entities are not cleared this time",
            err,
        )
        saved = {}
    before = saved.get("configs") if isinstance(saved, dict) else None
    gone = sorted(
        topic
        for topic in (before if isinstance(before, list) else [])
        # Only discovery config topics: a damaged store must not clear anything else.
        if isinstance(topic, str) and _CONFIG_TOPIC.fullmatch(topic) and topic not in keep
    )
    for topic in gone:
        mqtt.publish(topic, "", retain=True, qos=1)
    if gone:
        log.info("cleared %d discovery config(s) %s", len(gone), why)
    if not gone and not keep and not before:
        return  # nothing was ever published: leave the store alone
    try:
        store.save(STORE_KEY, {"configs": sorted(keep)})
    except Exception as err:
        log.warning(
            "cannot remember the discovery configs published (%s): entities "
            "removed before the next start will not be cleared",
            err,
        )


def cleanup_lifespan(*, store: Store | None) -> Callable[[Any], AbstractContextManager[None]]:
    """The lifespan of a daemon whose discovery is off: the configs an earlier run published
    (discovery on then) are cleared once, so that switching discovery off removes the
    entities from Home Assistant instead of leaving them unavailable for ever."""

    @contextmanager
    def homeassistant_cleanup(ctx: Any) -> Iterator[None]:
        clear_remembered(
            ctx.mqtt, store, keep={}, quiet=True, why="(Home Assistant discovery is off)"
        )
        yield

    return homeassistant_cleanup


class _Publisher:
    """The run-time half of :func:`discovery_lifespan` (see there)."""

    def __init__(
        self,
        ha: HomeAssistantSettings,
        ctx: Any,
        *,
        store: Store | None,
        version: str,
        delay: tuple[float, float],
        rng: random.Random | None,
    ) -> None:
        self.ctx = ctx
        self.mqtt = ctx.mqtt
        self.clock: ClockPort = ctx.clock if ctx.clock is not None else SystemClock()
        self.store = store
        self.delay = delay
        self.rng = rng if rng is not None else random.Random()
        self.status_topic = ha.status_topic
        self.configs = {
            topic: json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
            for topic, payload in build_configs(
                ctx.registry, prefix=ctx.prefix, ha=ha, settings=ctx.settings, version=version
            ).items()
        }
        self._lock = threading.Lock()
        self._wake = threading.Event()  # set by the network thread, stop() and the clock
        self._online = False  # Home Assistant said online since the thread last looked
        self._stopping = False
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)

    def start(self) -> None:
        self.mqtt.on_message(self._on_message)
        self.mqtt.subscribe(self.status_topic, qos=1)
        self._publish_configs()
        self._clear_removed()
        self.thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self._wake.set()
        if self.thread.ident is not None:
            self.thread.join(JOIN_BOUND)
            if self.thread.is_alive():
                log.error("thread %s did not stop within %s s", THREAD_NAME, JOIN_BOUND)

    def _publish_configs(self) -> None:
        for topic, payload in self.configs.items():
            self.mqtt.publish(topic, payload, retain=True, qos=1)

    def _clear_removed(self) -> None:
        """Clear what an earlier run published and this one does not; remember this run's."""
        clear_remembered(self.mqtt, self.store, keep=self.configs)

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        # On the network thread: only note it and wake ours.
        if topic != self.status_topic or payload.strip() != b"online":
            return
        with self._lock:
            self._online = True
        self._wake.set()

    def _run(self) -> None:
        due: float | None = None  # when to re-publish (clock time), or None: nothing to do
        while True:
            self._wake.clear()  # before looking: a set() from now on ends the next wait
            with self._lock:
                if self._stopping:
                    return
                if self._online:
                    self._online = False
                    if due is None:
                        due = self.clock.now() + self.rng.uniform(*self.delay)
            if due is not None and self.clock.now() >= due:
                due = None
                self._republish()
                continue
            wait(self.clock, self._wake, None if due is None else due - self.clock.now())

    def _republish(self) -> None:
        try:
            self._publish_configs()
            self.ctx.republish()
        except Exception:  # a publish refused must not end discovery for good
            log.exception("re-publishing discovery after Home Assistant's restart failed")
        log.info("Home Assistant is online: discovery and states published again")
