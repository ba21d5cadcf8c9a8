"""``type = "w1_temperature"``: DS18B20-style 1-wire thermometers, read from sysfs.

::

    [[device]]
    type = "w1_temperature"
    name = "heating"
    sensors = { flow = "28-0316a2794eff", return = "28-0316a27a31ff" }
    # or: sensors = ["28-0316a2794eff", "28-0316a27a31ff"]
    # or: sensors = "all"          (the default: every thermometer on the bus at start-up)
    interval = 60                  # the default
    sysfs_root = "/sys"            # for tests against a fake tree

Enable the bus with ``dtoverlay=w1-gpio`` (GPIO 4) in ``/boot/firmware/config.txt``; each
sensor appears as ``<sysfs_root>/bus/w1/devices/<id>/``.

**Each sensor is a device of its own**, named ``<name>-<alias>`` (``heating-flow``) or
``<name>-<id>`` (``heating-28-0316a2794eff``), so each has its own state topic, error
reports and availability: one unplugged sensor goes ``offline`` alone. Its state is
``{"temperature": 21.437}`` (°C, the millidegrees the kernel gives). All sensors of one
table share one scheduler group — one thread reads the bus serially, which is what the bus
does anyway (a conversion takes 750 ms at 12 bits) — named after the table
(``group = "heating"``) unless the table sets ``group``.

A reading is refused (an error payload, the device ``offline`` until a good one; an
OSError, so ``retry = N`` retries it at once) when:

* the first line of ``w1_slave`` does not end in ``YES``: the CRC check failed (noise on a
  long cable);
* it is exactly 85 °C, the value the sensor holds after power-on before its first
  conversion (a loose supply wire); a real 85.000 °C is rare enough to lose;
* the scratchpad is all zeros: a shorted data line reads as zeros whose CRC is also zero,
  so the kernel says ``YES`` to a bogus 0 °C;
* it is outside the sensor's range (−55…125 °C; −270…1800 °C for the thermocouple
  converters of family ``3b``): what a half-working sensor or a library's "disconnected"
  value (−127) looks like.

A sensor whose directory is gone is not on the bus: an error payload ("not found"),
``offline``, and ``online`` again at its first good reading after it is back.

``sensors = "all"`` looks at the bus once, when the device is registered: the ids with a
thermometer family code (``10``, ``22``, ``28``, ``3b``, ``42``) become devices. Finding
none is not a config mistake — the bus driver may load later, and ``agent check`` may run
on another machine — so it is not reported by ``agent check``; instead the table's name
becomes one device that fails every cycle with an error saying so (a WARNING at start, an
error payload, ``offline``), and, once sensors have appeared, that a restart picks them up.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from agent.daemon.builtins._common import OptionReader, add_polled, read_text, show
from agent.daemon.types import DeviceSpec, Problem
from agent.entities import Entity
from agent.router import Router

__all__ = [
    "FAMILIES",
    "TYPES",
    "W1_TEMPERATURE",
    "BadReading",
    "NoSensors",
    "RestartNeeded",
    "SensorMissing",
    "W1Options",
    "W1TemperatureType",
    "find_sensors",
    "parse_w1_slave",
]

log = logging.getLogger("agent.daemon.w1_temperature")

KEYS = ("sensors", "sysfs_root")

FAMILIES = ("10", "22", "28", "3b", "42")
"""1-wire family codes of the thermometers the kernel's w1_therm driver reads: DS18S20,
DS1822, DS18B20, DS1825/MAX31850, DS28EA00."""

_ID = re.compile(r"([0-9A-Fa-f]{2})-[0-9A-Fa-f]{12}")
_ALIAS = re.compile(r"[A-Za-z0-9_-]+")
_ID_EXPECTED = 'a 1-wire thermometer id like "28-0316a2794eff" (families ' + ", ".join(FAMILIES)
_ID_EXPECTED += ")"

POWER_ON_MILLIDEGREES = 85000
_RANGE = {"3b": (-270.0, 1800.0)}  # thermocouple converters; the rest are DS18x20-like
_DEFAULT_RANGE = (-55.0, 125.0)

TEMPERATURE = Entity(
    "temperature", unit="°C", device_class="temperature", state_class="measurement"
)


class BadReading(OSError):
    """The sensor answered, but not with a temperature (an OSError: ``retry`` retries it)."""


class SensorMissing(OSError):
    """The sensor is not on the bus (its sysfs directory is gone)."""


class NoSensors(OSError):
    """``sensors = "all"`` found no thermometer at start-up, and there is still none."""


class RestartNeeded(OSError):
    """``sensors = "all"`` found none at start-up, and thermometers have appeared since.

    A class of its own so that it is reported at once: the framework reports a streak of
    failures once per exception type, and this is news after a streak of :class:`NoSensors`.
    """


@dataclasses.dataclass(frozen=True)
class W1Options:
    """A checked ``w1_temperature`` table: ``sensors`` pairs each device-name suffix (the
    alias, or the id) with the sensor's id; None is ``"all"``."""

    sensors: tuple[tuple[str, str], ...] | None = None
    sysfs_root: str = "/sys"

    @property
    def bus(self) -> str:
        return os.path.join(self.sysfs_root, "bus", "w1", "devices")


class W1TemperatureType:
    """The ``w1_temperature`` device type (see the module docstring)."""

    name = "w1_temperature"
    default_interval: float | None = 60.0

    def check(self, options: Mapping[str, Any], problem: Problem) -> W1Options:
        read = OptionReader(self.name, options, problem, known=KEYS)
        return W1Options(
            sensors=_sensors(read, options.get("sensors", "all")),
            sysfs_root=read.absolute_path("sysfs_root", "/sys"),
        )

    def register(self, router: Router, spec: DeviceSpec, options: W1Options) -> None:
        sensors = options.sensors
        if sensors is None:
            found = find_sensors(options.bus)
            if not found:
                log.warning(
                    "%s: no 1-wire thermometers under %s; the device %r reports it",
                    spec.key,
                    options.bus,
                    spec.name,
                )
                add_polled(
                    router,
                    spec,
                    _none_found(options.bus),
                    default_interval=self.default_interval or 60.0,
                    entities=[],
                )
                return
            log.info("%s: 1-wire thermometers found: %s", spec.key, ", ".join(found))
            sensors = tuple((sensor, sensor) for sensor in found)
        group = spec.group or spec.name
        for suffix, sensor in sensors:
            add_polled(
                router,
                spec.but(name=f"{spec.name}-{suffix}", group=group),
                make_reader(options.bus, sensor),
                default_interval=self.default_interval or 60.0,
                entities=[TEMPERATURE],
            )


def _sensor_id(read: OptionReader, key: str, value: Any) -> str | None:
    match = _ID.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(1).lower() not in FAMILIES:
        read.report(key, _ID_EXPECTED, show(value))
        return None
    return value.lower()  # the kernel names the directories in lower case


def _sensors(read: OptionReader, value: Any) -> tuple[tuple[str, str], ...] | None:
    """``"all"`` (None), a list of ids, or a table of alias = id, each item checked."""
    if value == "all":
        return None
    pairs: list[tuple[str, str, str]] = []  # (key for messages, suffix, id)
    if isinstance(value, list) and value:
        for index, item in enumerate(value, start=1):
            sensor = _sensor_id(read, f"sensors[{index}]", item)
            if sensor is not None:
                pairs.append((f"sensors[{index}]", sensor, sensor))
    elif isinstance(value, Mapping) and value:
        for alias, item in value.items():
            key = f"sensors.{alias}"
            if not _ALIAS.fullmatch(str(alias)):
                read.report(
                    key, "an alias of letters, digits, - and _ (it names a device)", show(alias)
                )
                continue
            sensor = _sensor_id(read, key, item)
            if sensor is not None:
                pairs.append((key, str(alias), sensor))
    elif isinstance(value, list | Mapping):
        shown = "an empty list" if isinstance(value, list) else "an empty table"
        read.report("sensors", 'at least one sensor, or "all" for every one found', shown)
        return None
    else:
        expected = '"all", a list of 1-wire ids, or a table of name = id'
        if isinstance(value, str) and difflib.get_close_matches(value.lower(), ["all"]):
            expected += ' (did you mean "all"?)'
        read.report("sensors", expected, show(value))
        return None
    seen: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for key, suffix, sensor in pairs:
        if sensor in seen:
            read.report(key, f"a sensor not already listed (as {seen[sensor]})", show(sensor))
            continue
        seen[sensor] = key
        out.append((suffix, sensor))
    return tuple(out)


def find_sensors(bus: str) -> list[str]:
    """The thermometer ids under ``bus`` (sorted); none when the bus is not there."""
    try:
        names = os.listdir(bus)
    except OSError:
        return []
    return sorted(
        name
        for name in names
        if (match := _ID.fullmatch(name)) is not None and match.group(1).lower() in FAMILIES
    )


def parse_w1_slave(text: str, sensor: str) -> float:
    """The temperature in °C in the ``w1_slave`` text of ``sensor``::

        72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
        72 01 4b 46 7f ff 0e 10 57 t=23125

    Raises BadReading for every case the module docstring lists.
    """
    lines = text.strip().splitlines()
    if len(lines) < 2:
        raise BadReading(f"{sensor}: expected two lines in w1_slave, found {show(text)}")
    verdict, reading = lines[0].strip(), lines[1].strip()
    if not verdict.endswith("YES"):
        raise BadReading(f"{sensor}: CRC check failed ({verdict})")
    scratchpad = verdict.partition(":")[0].split()
    if scratchpad and all(byte == "00" for byte in scratchpad):
        raise BadReading(f"{sensor}: the scratchpad is all zeros (data line shorted?)")
    _, found, millidegrees = reading.rpartition("t=")
    try:
        value = int(millidegrees) if found else None
    except ValueError:
        value = None
    if value is None:
        raise BadReading(f"{sensor}: no temperature in {show(reading)}")
    if value == POWER_ON_MILLIDEGREES:
        raise BadReading(
            f"{sensor}: 85 °C is the power-on value: the sensor did not convert (check its supply)"
        )
    celsius = value / 1000
    low, high = _RANGE.get(sensor[:2], _DEFAULT_RANGE)
    if not low <= celsius <= high:
        raise BadReading(f"{sensor}: {celsius:g} °C is outside the sensor's range")
    return celsius


def make_reader(bus: str, sensor: str) -> Callable[[], dict[str, Any]]:
    """The telemetry handler of one sensor."""
    directory = os.path.join(bus, sensor)

    def read_sensor() -> dict[str, Any]:
        try:
            text = read_text(os.path.join(directory, "w1_slave"))
        except FileNotFoundError:
            raise SensorMissing(
                f"{sensor}: not found on the 1-wire bus ({directory} is gone: wiring?)"
            ) from None
        return {"temperature": parse_w1_slave(text, sensor)}

    return read_sensor


def _none_found(bus: str) -> Callable[[], dict[str, Any]]:
    """The handler standing in for ``sensors = "all"`` when the bus had none at start."""

    def no_sensors() -> dict[str, Any]:
        found = find_sensors(bus)
        if found:
            raise RestartNeeded(
                f"1-wire thermometers appeared after start-up ({', '.join(found)}): "
                "restart the agent to read them"
            )
        raise NoSensors(
            f"no 1-wire thermometers under {bus}: enable the bus (dtoverlay=w1-gpio in "
            "/boot/firmware/config.txt), connect them, and restart the agent"
        )

    return no_sensors


W1_TEMPERATURE = W1TemperatureType()
TYPES = (W1_TEMPERATURE,)
