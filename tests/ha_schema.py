"""Home Assistant's MQTT discovery schema, as a checker the tests run on every config published.

:func:`check_discovery` mirrors the voluptuous schemas of Home Assistant's MQTT integration
(``homeassistant/components/mqtt``: ``schemas.py`` for availability, device and origin,
``config.py`` for qos/encoding, and each platform's ``PLATFORM_SCHEMA_MODERN``; core 2026.2)
and its documentation: the keys each component takes and their types, the required ones,
the availability list's shape, the device and origin blocks, entity ids, and the unit /
device class / state class combinations it accepts (the tables in
:mod:`agent.daemon.ha_tables`, which are Home Assistant's own data). It is written apart from
the code that builds the configs, so that a mistake there shows up here. The tables are
shared with that code, so a wrong entry in them would pass both: for the device classes used
most (temperature, humidity, battery, power, energy) :data:`DOCUMENTED` says again, by hand
from Home Assistant's documentation, which units and state classes are right, and is checked
as well. Stricter than Home
Assistant in one way: a key it does not know is a problem (Home Assistant drops it without a
word, which hides typos), and so is ``object_id`` (deprecated in 2025.10, gone in 2026.4).

Not a test module: nothing here is collected.
"""

from __future__ import annotations

import re
from typing import Any

from agent.daemon import ha_tables

__all__ = ["check_discovery"]

# homeassistant.components.mqtt.discovery.TOPIC_MATCHER, after the discovery prefix
_TOPIC = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
# homeassistant.core.VALID_ENTITY_ID
_ENTITY_ID = re.compile(r"(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)")

STR = (str,)
NUMBER = (int, float)
OPT_STR = (str, type(None))

COMMON: dict[str, tuple[type, ...]] = {
    "availability": (list,),
    "availability_mode": STR,
    "availability_template": STR,
    "availability_topic": STR,
    "payload_available": STR,
    "payload_not_available": STR,
    "default_entity_id": STR,
    "device": (dict,),
    "enabled_by_default": (bool,),
    "encoding": STR,
    "entity_category": STR,
    "entity_picture": STR,
    "icon": STR,
    "json_attributes_template": STR,
    "json_attributes_topic": STR,
    "name": OPT_STR,
    "origin": (dict,),
    "qos": (int,),
    "unique_id": STR,
}
_READ = {"state_topic": STR, "value_template": STR}
_WRITE = {"command_topic": STR, "optimistic": (bool,), "retain": (bool,), "state_topic": STR}

PLATFORMS: dict[str, tuple[frozenset[str], dict[str, tuple[type, ...]]]] = {
    "sensor": (
        frozenset({"state_topic"}),
        {
            **_READ,
            "device_class": OPT_STR,
            "expire_after": (int,),
            "force_update": (bool,),
            "last_reset_value_template": STR,
            "options": (list,),
            "suggested_display_precision": (int,),
            "state_class": OPT_STR,
            "unit_of_measurement": OPT_STR,
        },
    ),
    "binary_sensor": (
        frozenset({"state_topic"}),
        {
            **_READ,
            "device_class": OPT_STR,
            "expire_after": (int,),
            "force_update": (bool,),
            "off_delay": (int,),
            "payload_off": STR,
            "payload_on": STR,
        },
    ),
    "switch": (
        frozenset({"command_topic"}),
        {
            **_WRITE,
            "command_template": STR,
            "payload_off": STR,
            "payload_on": STR,
            "state_off": STR,
            "state_on": STR,
            "value_template": STR,
            "device_class": OPT_STR,
        },
    ),
    "button": (
        frozenset({"command_topic"}),
        {
            "command_template": STR,
            "command_topic": STR,
            "device_class": OPT_STR,
            "payload_press": STR,
            "retain": (bool,),
        },
    ),
    "number": (
        frozenset({"command_topic"}),
        {
            **_WRITE,
            "command_template": STR,
            "device_class": OPT_STR,
            "max": NUMBER,
            "min": NUMBER,
            "mode": STR,
            "payload_reset": STR,
            "step": NUMBER,
            "unit_of_measurement": OPT_STR,
            "value_template": STR,
        },
    ),
    "select": (
        frozenset({"command_topic", "options"}),
        {**_WRITE, "command_template": STR, "options": (list,), "value_template": STR},
    ),
}

_DEVICE_KEYS: dict[str, tuple[type, ...]] = {
    "identifiers": (list, str),
    "connections": (list,),
    "manufacturer": STR,
    "model": STR,
    "model_id": STR,
    "name": STR,
    "hw_version": STR,
    "serial_number": STR,
    "sw_version": STR,
    "via_device": STR,
    "suggested_area": STR,
    "configuration_url": STR,
}
_ORIGIN_KEYS: dict[str, tuple[type, ...]] = {"name": STR, "sw_version": STR, "support_url": STR}
# Written by hand from Home Assistant's documentation, NOT from agent.daemon.ha_tables: the
# second opinion on the tables for the classes people use most. Units: "Available device
# classes", https://developers.home-assistant.io/docs/core/entity/sensor/#available-device-classes
# (the same lists: https://www.home-assistant.io/integrations/sensor/#device-class). State
# classes: energy is a total, never a measurement ("Long-term Statistics" on the first page:
# device_class must not be energy for measurement), the others are measurements (core's
# DEVICE_CLASS_STATE_CLASSES in homeassistant/components/sensor/const.py).
DOCUMENTED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "temperature": (frozenset({"°C", "°F", "K"}), frozenset({"measurement"})),
    "humidity": (frozenset({"%"}), frozenset({"measurement"})),
    "battery": (frozenset({"%"}), frozenset({"measurement"})),
    "power": (frozenset({"mW", "W", "kW", "MW", "GW", "TW"}), frozenset({"measurement"})),
    "energy": (
        frozenset(
            {"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh"}
            | {"cal", "kcal", "Mcal", "Gcal"}
        ),
        frozenset({"total", "total_increasing"}),
    ),
}
"""``{device_class: (units, state classes)}`` Home Assistant documents, for sensors (units
for numbers too)."""

_AVAILABILITY_KEYS: dict[str, tuple[type, ...]] = {
    "topic": STR,
    "payload_available": STR,
    "payload_not_available": STR,
    "value_template": STR,
}


def check_discovery(topic: str, payload: Any, *, prefix: str = "homeassistant") -> list[str]:
    """The problems Home Assistant (or this stricter reading of its docs) finds in the
    discovery config ``payload`` (a parsed JSON object) published on ``topic``, under the
    discovery prefix ``prefix``."""
    match = (
        _TOPIC.fullmatch(topic.removeprefix(f"{prefix}/"))
        if topic.startswith(f"{prefix}/")
        else None
    )
    if match is None:
        return [f"{topic!r} is not {prefix}/<component>/[<node_id>/]<object_id>/config"]
    component = match["component"]
    if component not in PLATFORMS:
        return [f"component {component!r} of {topic!r} is not one this checker knows"]
    if not isinstance(payload, dict):
        return [f"the payload is a {type(payload).__name__}, not a JSON object"]
    required, own = PLATFORMS[component]
    allowed = {**COMMON, **own}
    problems: list[str] = []
    for key in sorted(required | {"unique_id"}):
        if key not in payload:
            problems.append(f"{key} is required")
    for key, value in payload.items():
        if key == "object_id":
            problems.append("object_id is removed from Home Assistant: use default_entity_id")
        elif key not in allowed:
            problems.append(f"{key} is not an option of a {component}")
        elif not _is(value, allowed[key]):
            problems.append(f"{key} is a {type(value).__name__}: {value!r}")
    if problems:
        return problems
    problems += _common(payload, component)
    problems += _topics(payload)
    check = {
        "sensor": _sensor,
        "binary_sensor": _binary_sensor,
        "switch": _switch,
        "button": _button,
        "number": _number,
        "select": _select,
    }[component]
    problems += check(payload)
    return problems


def _is(value: object, types: tuple[type, ...]) -> bool:
    # JSON true is not a number, nor a qos, for Home Assistant's validators.
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _template(value: object) -> bool:
    return isinstance(value, str) and value.count("{{") == value.count("}}") and "{{" in value


def _topic_ok(topic: str, *, publish: bool) -> bool:
    if not topic or "\0" in topic or len(topic.encode()) > 65535:
        return False
    if publish:
        return "+" not in topic and "#" not in topic
    levels = topic.split("/")
    return all(
        ("+" not in lv or lv == "+") and ("#" not in lv or (lv == "#" and i == len(levels) - 1))
        for i, lv in enumerate(levels)
    )


def _common(p: dict[str, Any], component: str) -> list[str]:
    out: list[str] = []
    if "default_entity_id" in p:
        entity_id = p["default_entity_id"]
        if not _ENTITY_ID.fullmatch(entity_id) or not entity_id.startswith(f"{component}."):
            out.append(f"default_entity_id {entity_id!r} is not {component}.<lower_case_id>")
    if "qos" in p and p["qos"] not in (0, 1, 2):
        out.append(f"qos {p['qos']!r} is not 0, 1 or 2")
    if "icon" in p and ":" not in p["icon"]:
        out.append(f'icon {p["icon"]!r} is not "prefix:name"')
    if "entity_category" in p and p["entity_category"] not in ("config", "diagnostic"):
        out.append(f"entity_category {p['entity_category']!r} is not config or diagnostic")
    if "availability" in p and "availability_topic" in p:
        out.append("availability and availability_topic exclude each other")
    if "availability_mode" in p and p["availability_mode"] not in ("all", "any", "latest"):
        out.append(f"availability_mode {p['availability_mode']!r} is not all, any or latest")
    for index, entry in enumerate(p.get("availability", [])):
        if not isinstance(entry, dict) or not _is(entry.get("topic"), STR):
            out.append(f"availability[{index}] is not an object with a topic")
            continue
        for key, value in entry.items():
            if key not in _AVAILABILITY_KEYS or not _is(value, _AVAILABILITY_KEYS[key]):
                out.append(f"availability[{index}].{key} = {value!r} is not allowed")
        if not _topic_ok(entry["topic"], publish=False):
            out.append(f"availability[{index}].topic {entry['topic']!r} is not a topic")
        if "value_template" in entry and not _template(entry["value_template"]):
            out.append(f"availability[{index}].value_template is not a template")
    if "device" in p:
        device = p["device"]
        for key, value in device.items():
            if key not in _DEVICE_KEYS or not _is(value, _DEVICE_KEYS[key]):
                out.append(f"device.{key} = {value!r} is not allowed")
        identifiers = device.get("identifiers")
        if not identifiers and not device.get("connections"):
            out.append("device needs identifiers or connections")
        if isinstance(identifiers, list) and not all(isinstance(i, str) for i in identifiers):
            out.append("device.identifiers must be strings")
    if "origin" in p:
        origin = p["origin"]
        if not _is(origin.get("name"), STR):
            out.append("origin.name is required")
        for key, value in origin.items():
            if key not in _ORIGIN_KEYS or not _is(value, _ORIGIN_KEYS[key]):
                out.append(f"origin.{key} = {value!r} is not allowed")
    for key in ("value_template", "command_template", "json_attributes_template"):
        if key in p and not _template(p[key]):
            out.append(f"{key} {p[key]!r} is not a template")
    return out


def _topics(p: dict[str, Any]) -> list[str]:
    out = []
    for key in ("state_topic", "availability_topic", "json_attributes_topic"):
        if key in p and not _topic_ok(p[key], publish=False):
            out.append(f"{key} {p[key]!r} is not a topic to subscribe to")
    if "command_topic" in p and not _topic_ok(p["command_topic"], publish=True):
        out.append(f"command_topic {p['command_topic']!r} is not a topic to publish to")
    return out


def _device_class(p: dict[str, Any], classes: tuple[str, ...] | frozenset[str]) -> list[str]:
    dc = p.get("device_class")
    if dc is not None and dc not in classes:
        return [f"device_class {dc!r} is not one Home Assistant knows here"]
    return []


def _unit(p: dict[str, Any]) -> list[str]:
    dc, unit = p.get("device_class"), p.get("unit_of_measurement")
    if unit is not None:
        unit = ha_tables.AMBIGUOUS_UNITS.get(unit, unit)
    if dc in ha_tables.UNITS_OF and unit is not None and unit not in ha_tables.UNITS_OF[dc]:
        return [f"unit {unit!r} is not valid with device_class {dc!r}"]
    if dc in DOCUMENTED and unit is not None and unit not in DOCUMENTED[dc][0]:
        return [f"unit {unit!r} is not one Home Assistant documents for device_class {dc!r}"]
    return []


def _documented_state_class(p: dict[str, Any]) -> list[str]:
    dc, sc = p.get("device_class"), p.get("state_class")
    if sc is not None and dc in DOCUMENTED and sc not in DOCUMENTED[dc][1]:
        return [f"state_class {sc!r} is not one Home Assistant documents for {dc!r}"]
    return []


def _sensor(p: dict[str, Any]) -> list[str]:
    out = _device_class(p, ha_tables.SENSOR_DEVICE_CLASSES) + _unit(p)
    out += _documented_state_class(p)
    dc, sc, unit = p.get("device_class"), p.get("state_class"), p.get("unit_of_measurement")
    if sc is not None and sc not in ha_tables.SENSOR_STATE_CLASSES:
        out.append(f"state_class {sc!r} is not one Home Assistant knows")
    elif sc is not None and sc not in ha_tables.STATE_CLASSES_OF.get(dc, (sc,)):
        out.append(f"state_class {sc!r} is not valid with device_class {dc!r}")
    if sc in ha_tables.STATE_CLASS_UNITS and unit not in ha_tables.STATE_CLASS_UNITS[sc]:
        out.append(f"unit {unit!r} is not valid with state_class {sc!r}")
    if dc in ha_tables.NON_NUMERIC_DEVICE_CLASSES and unit is not None:
        out.append(f"device_class {dc!r} takes no unit")
    if "options" in p:
        options = p["options"]
        if not options or not all(isinstance(o, str) for o in options):
            out.append("options must be a non-empty list of strings")
        if sc or unit:
            out.append("options exclude state_class and unit_of_measurement")
        if dc != "enum":
            out.append('options need device_class "enum"')
    if "last_reset_value_template" in p and sc != "total":
        out.append('last_reset_value_template needs state_class "total"')
    if "expire_after" in p and p["expire_after"] < 0:
        out.append("expire_after must be >= 0")
    return out


def _binary_sensor(p: dict[str, Any]) -> list[str]:
    out = _device_class(p, ha_tables.BINARY_SENSOR_DEVICE_CLASSES)
    if "expire_after" in p and p["expire_after"] < 0:
        out.append("expire_after must be >= 0")
    return out


def _switch(p: dict[str, Any]) -> list[str]:
    return _device_class(p, ha_tables.SWITCH_DEVICE_CLASSES)


def _button(p: dict[str, Any]) -> list[str]:
    return _device_class(p, ha_tables.BUTTON_DEVICE_CLASSES)


def _number(p: dict[str, Any]) -> list[str]:
    out = _device_class(p, ha_tables.NUMBER_DEVICE_CLASSES) + _unit(p)
    if p.get("min", 1) > p.get("max", 100):
        out.append("max must be >= min")
    if p.get("step", 1) < 1e-3:
        out.append("step must be >= 0.001")
    if "mode" in p and p["mode"] not in ("auto", "box", "slider"):
        out.append(f"mode {p['mode']!r} is not auto, box or slider")
    return out


def _select(p: dict[str, Any]) -> list[str]:
    options = p["options"]
    if not options or not all(isinstance(o, str) for o in options):
        return ["options must be a non-empty list of strings"]
    return []
