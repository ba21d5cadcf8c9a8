"""relays2mqtt: a relay board on a Raspberry Pi's GPIO pins, switched over MQTT.

Topics, under the prefix ``relays2mqtt``:

* ``relays2mqtt/relays/<channel>/set`` — ``ON``, ``OFF``, ``TOGGLE`` or ``PULSE`` (on for
  ``pulse_seconds``, then off: the push button of a garage door opener);
* ``relays2mqtt/relays/state`` — every channel, retained: ``{"pump": "ON", "light": "OFF"}``;
* ``relays2mqtt/relays/error`` — a payload it could not take, or a channel it does not have.

Every switch is saved in the state store before it is published, so after a restart or a
power cut the relays come back as they were (a pulse always ends ``OFF``).

The board is a port: :class:`GpioRelays` (``relays_gpio.py``, gpiozero) on the Pi, imported
only then; :class:`FakeRelays` for ``--dry-run`` and the tests. On a laptop::

    agent --config examples/relays/relays.toml --dry-run
    mosquitto_pub -t relays2mqtt/relays/pump/set -m ON
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Protocol

import agent
from agent.settings import between

log = logging.getLogger("relays2mqtt")

ON, OFF = "ON", "OFF"


class RelayPort(Protocol):
    """What the bridge needs from the board: switch one channel on or off."""

    def switch(self, channel: str, on: bool) -> None: ...


class FakeRelays:
    """The board for ``--dry-run`` and the tests: remembers and logs what it was told."""

    def __init__(self) -> None:
        self.on: dict[str, bool] = {}
        self.switches: list[tuple[str, bool]] = []  # every call, in order

    def switch(self, channel: str, on: bool) -> None:
        self.on[channel] = on
        self.switches.append((channel, on))
        log.info("(dry run) relay %s %s", channel, ON if on else OFF)


class RelaySettings(agent.Settings):
    # channel name = BCM number of the GPIO pin driving that relay's input
    channels: dict[str, int] = {"pump": 17, "valve": 27, "light": 22, "door": 23}  # noqa: RUF012
    active_high: bool = False  # most opto-isolated boards switch a relay on with a low level
    pulse_seconds: Annotated[float, between(0.05, 10)] = 0.5


def state_file() -> Path:
    """Where the relay states live: systemd's ``StateDirectory=`` (``/var/lib/relays2mqtt``)
    when run as a service, else ``~/.local/state/relays2mqtt``."""
    directory = os.environ.get("STATE_DIRECTORY")
    if directory is None:
        state_home = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
        directory = str(Path(state_home) / "relays2mqtt")
    return Path(directory) / "relays.json"


app = agent.App(
    "relays2mqtt",
    "1.0.0",
    description="A GPIO relay board on MQTT",
    settings_class=RelaySettings,
    store=agent.JsonFileStore(state_file()),  # read at start-up, not at import
)
# The real board is a lazy "module:attribute": gpiozero is imported only on a real run.
app.adapter(RelayPort, "relays_gpio:GpioRelays", dry_run=FakeRelays)


def parse(payload: str, current: str) -> str:
    """The new state a command asks for: ``ON``/``OFF``/``TOGGLE``, in any case."""
    word = payload.strip().upper()
    if word == "TOGGLE":
        return OFF if current == ON else ON
    if word not in (ON, OFF):
        raise agent.InvalidPayload(f"expected ON, OFF, TOGGLE or PULSE, got {payload!r}")
    return word


@app.device("relays")
def relays(
    ctx: agent.DeviceContext,
    board: RelayPort,
    store: agent.DeviceStore,
    settings: RelaySettings,
    clock: agent.ClockPort,
) -> None:
    # Back as before the restart; channels new in the config start OFF.
    state = {name: ON if store.get(name) == ON else OFF for name in settings.channels}
    for name, value in state.items():
        board.switch(name, value == ON)

    def switch(name: str, value: str, *, save: bool = True) -> None:
        board.switch(name, value == ON)
        state[name] = value
        if save:
            store[name] = value
            store.save()  # on disk before anyone is told
        ctx.publish_state(state)

    def add_channel(name: str) -> None:
        @ctx.on_command(name)  # relays2mqtt/relays/<name>/set
        def command(cmd: agent.Command) -> None:
            if cmd.payload.strip().upper() == "PULSE":
                switch(name, ON, save=False)  # a power cut now leaves it OFF after the restart
                clock.sleep(settings.pulse_seconds)  # this device's other commands wait
                switch(name, OFF)
            else:
                switch(name, parse(cmd.payload, state[name]))

    for name in settings.channels:
        add_channel(name)

    ctx.publish_state(state)
    while not ctx.shutdown_requested:
        ctx.sleep(3600)  # commands are handled while it sleeps


if __name__ == "__main__":
    app.cli()
