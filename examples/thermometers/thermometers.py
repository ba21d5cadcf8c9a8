"""onewire2mqtt: DS18B20 thermometers of a heating system on the Pi's 1-wire bus.

Enable the bus with ``dtoverlay=w1-gpio`` (GPIO 4) in ``/boot/firmware/config.txt``; each
sensor appears as ``/sys/bus/w1/devices/28-…``. Put their ids in the config file's
``[sensors]`` table. Each role is a device, under the prefix ``onewire2mqtt``:

* ``onewire2mqtt/<role>/state`` — ``{"temperature_c": 45.25}``, retained: when it moved by
  more than 0.2 °C since the last one published, and at least every 5 minutes;
* ``onewire2mqtt/<role>/availability`` — ``offline`` while its readings fail;
* ``onewire2mqtt/<role>/error`` — why: ``sensor_missing`` (not on the bus: wiring),
  ``bad_reading`` (CRC mismatch, or the 85 °C a sensor reports before its first conversion).

A failed read is tried twice more, one second apart, before the cycle counts as failed.
All roles share one thread (``group="onewire"``): the bus converts one sensor at a time
anyway (750 ms each at 12 bits), so parallel reads would only queue in the kernel.

The bus is a port: ``w1_sysfs.py`` reads sysfs on the Pi; :class:`FakeThermometers` serves
``--dry-run`` and the tests. On a laptop::

    agent --config examples/thermometers/thermometers.toml --dry-run
"""

from __future__ import annotations

import errno
import logging
import random
from collections import Counter
from typing import Annotated, Protocol

import agent
from agent.settings import ConfigError, greater_than

log = logging.getLogger("onewire2mqtt")

ROLES = ("flow", "return", "hot_water", "outdoor")


class ThermometerPort(Protocol):
    """What the bridge needs from the bus: a sensor's ``w1_slave`` text."""

    def read(self, sensor_id: str) -> str:
        """The text of the sensor's ``w1_slave`` file; FileNotFoundError if it is not there."""
        ...


class BadReading(OSError):
    """The sensor answered, but not with a temperature (retried: OSError)."""


class SensorMissing(OSError):
    """The sensor is not on the bus (retried: OSError)."""


def parse_w1_slave(text: str) -> float:
    """The temperature in a ``w1_slave`` text, in °C: 23.125 for

    ``72 01 4b 46 7f ff 0e 10 57 : crc=57 YES`` (the CRC verdict) and
    ``72 01 4b 46 7f ff 0e 10 57 t=23125`` (millidegrees).
    """
    lines = text.splitlines()
    if len(lines) != 2 or not lines[0].rstrip().endswith("YES"):
        raise BadReading(f"CRC check failed: {text.strip()!r}")
    _, found, millidegrees = lines[1].rpartition("t=")
    if not found or not millidegrees.strip().lstrip("-").isdigit():
        raise BadReading(f"no temperature in {text.strip()!r}")
    celsius = int(millidegrees) / 1000
    if celsius == 85.0:
        raise BadReading("85 °C is the power-on value: the sensor did not convert")
    return celsius


def w1_slave_text(celsius: float, *, crc_ok: bool = True) -> str:
    """A ``w1_slave`` text as the kernel writes it, in the DS18B20's 1/16 °C steps."""
    raw = round(celsius * 16)
    scratchpad = f"{raw & 0xFF:02x} {(raw >> 8) & 0xFF:02x} 4b 46 7f ff 0e 10 57"
    return (
        f"{scratchpad} : crc=57 {'YES' if crc_ok else 'NO'}\n"
        f"{scratchpad} t={int(raw * 1000 / 16)}\n"
    )


class FakeThermometers:
    """The bus for ``--dry-run`` and the tests, scripted through its attributes:

    * ``celsius[id] = 45.0`` — what the sensor reads; an id not in it is not on the bus;
    * ``bad_crc[id] = 2`` — the next two reads of that sensor fail their CRC check;
    * ``reads[id]`` — how many times it was read.
    """

    def __init__(self, celsius: dict[str, float] | None = None, *, drift: float = 0.0) -> None:
        self.celsius: dict[str, float] = dict(celsius or {})
        self.bad_crc: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()
        self._drift = drift
        self._rng = random.Random(4)

    def read(self, sensor_id: str) -> str:
        self.reads[sensor_id] += 1
        if sensor_id not in self.celsius:
            path = f"/sys/bus/w1/devices/{sensor_id}/w1_slave"
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if self._drift:  # --dry-run: a slow random walk
            self.celsius[sensor_id] += self._rng.uniform(-self._drift, self._drift)
        if self.bad_crc[sensor_id] > 0:
            self.bad_crc[sensor_id] -= 1
            return w1_slave_text(self.celsius[sensor_id], crc_ok=False)
        return w1_slave_text(self.celsius[sensor_id])


class ThermoSettings(agent.Settings):
    # role = 1-wire id (ls /sys/bus/w1/devices)
    sensors: dict[str, str] = {  # noqa: RUF012
        "flow": "28-0316a2794eff",
        "return": "28-0316a27a31ff",
        "hot_water": "28-0416a1d3c2ff",
        "outdoor": "28-0516a0e8b1ff",
    }
    poll_interval: Annotated[float, greater_than(0)] = 30.0

    def validate(self) -> None:
        missing = [role for role in ROLES if role not in self.sensors]
        if missing:
            raise ConfigError(
                key="sensors",
                expected=f"a 1-wire id for each of {', '.join(ROLES)}",
                found=f"none for {', '.join(missing)}",
            )


def simulated_bus(settings: ThermoSettings) -> FakeThermometers:
    """The dry-run bus: every configured sensor present, drifting around a plausible value."""
    start = {"flow": 45.0, "return": 38.0, "hot_water": 52.0, "outdoor": 4.0}
    celsius = {sensor: start.get(role, 20.0) for role, sensor in settings.sensors.items()}
    return FakeThermometers(celsius, drift=0.15)


app = agent.App(
    "onewire2mqtt",
    "1.0.0",
    description="1-wire thermometers on MQTT",
    settings_class=ThermoSettings,
    error_type_map={SensorMissing: "sensor_missing", BadReading: "bad_reading"},
)
app.adapter(ThermometerPort, "w1_sysfs:SysfsThermometers", dry_run=simulated_bus)


def thermometer(role: str) -> None:
    """Register the device of one role."""

    @app.telemetry(
        role,
        interval=lambda settings: settings.poll_interval,
        group="onewire",  # one thread and one scheduler job for the whole bus
        publish=agent.OnChange(threshold=0.2) | agent.Every(seconds=300),
        retry=2,  # OSError (BadReading, SensorMissing too): twice more ...
        backoff=agent.FixedBackoff(delay=1.0, jitter=0),  # ... 1 s apart, exactly
    )
    def read(bus: ThermometerPort, settings: ThermoSettings) -> dict[str, float]:
        sensor = settings.sensors[role]
        try:
            text = bus.read(sensor)
        except FileNotFoundError:
            message = f"{role} sensor {sensor} is not on the bus: check its wiring"
            raise SensorMissing(message) from None
        return {"temperature_c": parse_w1_slave(text)}


for _role in ROLES:
    thermometer(_role)


if __name__ == "__main__":
    app.cli()
