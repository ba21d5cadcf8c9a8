"""energy2mqtt: an electricity meter's S0 impulse output on a GPIO pin.

A DIN-rail meter's S0 output closes a contact for every watt-hour or so (the rate is printed
on it: ``1000 imp/kWh``). Wire S0+ to 3.3 V and S0- to a GPIO pin. Under the prefix
``energy2mqtt``:

* ``energy2mqtt/meter/state`` — retained, ``{"energy_kwh": 12345.678, "power_w": 512.3,
  "since": "2024-03-10T12:00:00+00:00"}``: the meter's reading (``offset_kwh`` plus what
  the bridge counted since ``since``) and the power, smoothed by a PT1 low-pass.
  Published when anything moved (the power by more than 10 W), at least every 5 minutes.

The impulse count is persisted (``SaveOnChange``: after every cycle that counted some; an
SD card takes those 2,880 small writes a day at most), so a restart loses nothing but the
impulses of the last ``poll_interval``. The power is the count of one cycle — at 1000
imp/kWh and 30 s one impulse is 120 W, so 500 W reads 480 or 600 W — smoothed by
:class:`agent.Pt1Filter` with a time constant of ``power_time_constant``.

The meter is a port: ``s0_gpio.py`` (gpiozero) on the Pi; :class:`FakeImpulses` for
``--dry-run`` (a simulated load) and the tests::

    agent --config examples/energy_meter/energy_meter.toml --dry-run
"""

from __future__ import annotations

import os
import random
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Protocol

import agent
from agent.settings import at_least, greater_than


class ImpulsePort(Protocol):
    """What the bridge needs from the meter: the impulses counted since the last call."""

    def take(self) -> int: ...


class FakeImpulses:
    """The meter for ``--dry-run`` and the tests. A test calls :meth:`add`; with ``load_w``
    each :meth:`take` also adds the impulses a load of that many watts would make, on
    average, in ``seconds`` (``--dry-run``)."""

    def __init__(
        self, load_w: float = 0.0, *, impulses_per_kwh: int = 1000, seconds: float = 30.0
    ) -> None:
        self._lock = threading.Lock()  # add() may come from another thread
        self._pending = 0
        self._per_take = load_w / 1000 * impulses_per_kwh * seconds / 3600
        self._rng = random.Random(1)

    def add(self, impulses: int) -> None:
        with self._lock:
            self._pending += impulses

    def take(self) -> int:
        simulated = int(self._per_take + self._rng.random())  # rounded up or down at random
        with self._lock:
            taken, self._pending = self._pending, 0
        return taken + simulated


class MeterSettings(agent.Settings):
    gpio_pin: int = 24  # BCM number of the pin S0- is wired to
    impulses_per_kwh: Annotated[int, at_least(1)] = 1000
    offset_kwh: float = 0.0  # the meter's reading when the bridge started counting
    poll_interval: Annotated[float, greater_than(0)] = 30.0
    power_time_constant: Annotated[float, greater_than(0)] = 120.0  # seconds


def simulated_meter(settings: MeterSettings) -> FakeImpulses:
    """The dry-run meter: a house drawing about 500 W."""
    return FakeImpulses(
        500, impulses_per_kwh=settings.impulses_per_kwh, seconds=settings.poll_interval
    )


def state_file() -> Path:
    """systemd's ``StateDirectory=`` (``/var/lib/energy2mqtt``), else
    ``~/.local/state/energy2mqtt``."""
    directory = os.environ.get("STATE_DIRECTORY")
    if directory is None:
        state_home = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
        directory = str(Path(state_home) / "energy2mqtt")
    return Path(directory) / "meter.json"


app = agent.App(
    "energy2mqtt",
    "1.0.0",
    description="An S0 electricity meter on MQTT",
    settings_class=MeterSettings,
    store=agent.JsonFileStore(state_file()),
)
app.adapter(ImpulsePort, "s0_gpio:GpioImpulseCounter", dry_run=simulated_meter)


def power_filter(settings: MeterSettings) -> agent.Pt1Filter:
    """Made once when the device starts (``init=``); handed to every call by its type."""
    return agent.Pt1Filter(tau=settings.power_time_constant, dt=settings.poll_interval)


@app.telemetry(
    "meter",
    interval=lambda settings: settings.poll_interval,
    init=power_filter,
    persist=agent.SaveOnChange(),
    publish=agent.OnChange(threshold={"power_w": 10.0}) | agent.Every(seconds=300),
)
def meter(
    impulses: ImpulsePort,
    store: agent.DeviceStore,
    power: agent.Pt1Filter,
    settings: MeterSettings,
) -> dict[str, object]:
    if "since" not in store:  # the first cycle ever: counting starts now (wall clock)
        store["since"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    new = impulses.take()
    store["impulses"] = store.get("impulses", 0) + new
    watts = new / settings.impulses_per_kwh * 3_600_000 / settings.poll_interval
    return {
        "energy_kwh": round(settings.offset_kwh + store["impulses"] / settings.impulses_per_kwh, 3),
        "power_w": round(power.update(watts), 1),
        "since": store["since"],
    }


if __name__ == "__main__":
    app.cli()
