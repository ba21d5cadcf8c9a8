"""``gpio_input`` and ``gpio_output``: real gpiozero on its mock pin factory, the real daemon
config check and App, a fake clock.

gpiozero's mock pins are what a test can drive (``pin.drive_low()``) and read
(``pin.state``); they call edge callbacks on the thread that drives them — here the test's
— where real pins use a thread of gpiozero's. The device's thread takes it from there, so
after driving a pin a test lets the app settle (``h.advance(0)``) and asserts. Debounce is
the built-in's own, on the clock port, so it is timed exactly on the fake clock. Both
Debian 12's gpiozero 1.6 and PyPI's 2.x run these.
"""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from gpiozero import Device, DigitalInputDevice
from gpiozero.pins.mock import MockFactory

from agent import Entity, MemoryStore
from agent.clock import utc_now
from agent.daemon.app import build_app
from agent.daemon.builtins import BUILTINS
from agent.daemon.builtins.gpio import (
    GPIO_INPUT,
    GPIO_OUTPUT,
    InputOptions,
    OutputOptions,
    parse_command,
)
from agent.daemon.config import DaemonConfig, check_config
from agent.errors import InvalidPayload
from agent.settings import ConfigError
from agent.testing import AppHarness


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    """A fresh mock pin factory for the test (every pin high-impedance, nothing reserved)."""
    previous = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    yield factory
    factory.reset()
    Device.pin_factory = previous


def write(tmp_path: Path, devices: str, *, backend: str = "memory") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'[store]\nbackend = "{backend}"\n' + textwrap.dedent(devices))
    return path


def problems(tmp_path: Path, devices: str) -> list[str]:
    config, found = check_config(write(tmp_path, devices), env_file=None, environ={})
    assert config is None
    return [str(p).split(": ", 1)[1] for p in found]  # without the file's path


def load(tmp_path: Path, devices: str, *, backend: str = "memory") -> DaemonConfig:
    config, found = check_config(
        write(tmp_path, devices, backend=backend), env_file=None, environ={}
    )
    assert found == [], [str(p) for p in found]
    assert config is not None
    return config


class Runs:
    """Starts the App of a config, as often as a test wants (a restart shares ``store``)."""

    def __init__(self) -> None:
        self.running: list[AppHarness] = []

    def start(
        self, config: DaemonConfig, *, store: MemoryStore | None = None, raise_errors: bool = True
    ) -> AppHarness:
        h = AppHarness(build_app(config), store=store, raise_errors=raise_errors)
        self.running.append(h)
        return h.start()

    def stop_all(self) -> None:
        for h in self.running:
            h.stop()


@pytest.fixture
def runs(pins: MockFactory) -> Iterator[Runs]:
    runs = Runs()
    yield runs
    runs.stop_all()  # before the pins fixture resets the factory


def states(h: AppHarness, device: str) -> list[str]:
    return [m.json()["state"] for m in h.messages_for(f"agent/{device}/state")]


def events(h: AppHarness, device: str) -> list[tuple[str, str]]:
    return [(m.json()["event"], m.json()["state"]) for m in h.messages_for(f"agent/{device}/event")]


# -- checking the config -----------------------------------------------------------------


def test_every_mistake_in_gpio_tables_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        [[device]]
        type = "gpio_input"
        name = "a"
        pin = 40
        pull = "upp"
        active_low = "yes"
        debounce = -1
        bounce_time = 0.1
        device_class = "garage"
        icon = "door"

        [[device]]
        type = "gpio_input"
        name = "b"
        pin = "gpio17"
        debounce = 61
        interval = 5

        [[device]]
        type = "gpio_output"
        name = "c"
        pin = true
        initial = "last"
        device_class = "light"
        group = "g"

        [[device]]
        type = "gpio_output"
        name = "d"
        """,
    )
    pin = 'a BCM GPIO number 0-27, or a gpiozero pin name like "GPIO17", "BOARD11" or "J8:11"'
    binary_sensor_classes = found.pop(5)
    assert binary_sensor_classes.startswith('device[1].device_class: expected one of "battery", ')
    assert binary_sensor_classes.endswith('"window" (did you mean "garage_door"?), found "garage"')
    assert found == [
        "device[1].bounce_time: expected an option of gpio_input (did you mean "
        '"debounce"?), found an unknown key',
        f"device[1].pin: expected {pin}, found 40",
        'device[1].pull: expected one of "up", "down", "none" (did you mean "up"?), found "upp"',
        'device[1].active_low: expected true or false, found "yes"',
        "device[1].debounce: expected seconds, a number 0-60 (0: no debounce), found -1",
        'device[1].icon: expected an icon name like "mdi:door", found "door"',
        # the daemon's own message, for every type that is not polled
        "device[2].interval: a gpio_input device is not polled: remove interval",
        f'device[2].pin: expected {pin} (did you mean "GPIO17"?), found "gpio17"',
        "device[2].debounce: expected seconds, a number 0-60 (0: no debounce), found 61",
        "device[3].group: a gpio_output device is not polled: remove group",
        f"device[3].pin: expected {pin}, found true",
        'device[3].initial: expected one of "off", "on", "restore", found "last"',
        'device[3].device_class: expected one of "outlet", "switch", found "light"',
        f"device[4].pin: expected {pin}, found nothing",
    ]


def test_defaults_and_pin_names(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [[device]]
        type = "gpio_input"
        pin = 17

        [[device]]
        type = "gpio_input"
        name = "nc_contact"
        pin = "BOARD11"
        pull = "down"

        [[device]]
        type = "gpio_output"
        pin = "J8:12"
        """,
    )
    inputs = [d.options for d in config.devices]
    assert inputs == [
        InputOptions(17, "up", True, 0.05, None, None),  # a switch to ground: closed is ON
        InputOptions("BOARD11", "down", False, 0.05, None, None),
        OutputOptions("J8:12", False, "off", None, None),
    ]
    assert [d.spec.name for d in config.devices] == ["gpio_input", "nc_contact", "gpio_output"]
    assert BUILTINS["gpio_input"] is GPIO_INPUT and BUILTINS["gpio_output"] is GPIO_OUTPUT


def test_without_gpiozero_the_check_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # import gpiozero now raises
    found = problems(
        tmp_path,
        """
        [[device]]
        type = "gpio_output"
        pin = 18

        [[device]]
        type = "gpio_input"
        pin = 17
        """,
    )
    assert found == [
        "device[1].type: expected gpiozero installed for a gpio_output device (sudo apt install "
        'python3-gpiozero, or pip install gpiozero), found "gpio_output" without gpiozero',
        "device[2].type: expected gpiozero installed for a gpio_input device (sudo apt install "
        'python3-gpiozero, or pip install gpiozero), found "gpio_input" without gpiozero',
    ]


def test_without_gpiozero_at_start_the_device_reports_it_and_the_rest_runs(
    tmp_path: Path, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load(tmp_path, '[[device]]\ntype = "gpio_input"\npin = 17\n')
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # uninstalled after agent check
    h = runs.start(config, raise_errors=False)
    error = h.assert_published("agent/gpio_input/error").json()
    assert error["message"] == (
        "gpio_input 'gpio_input' needs gpiozero, which is not installed (sudo apt install "
        "python3-gpiozero, or pip install gpiozero)"
    )
    # The pin is opened by the device's init: it fails before the device is announced.
    assert (error["error_type"], error["details"]) == ("error", {"phase": "init"})
    h.assert_published("agent/gpio_input/availability", "offline")
    assert h.messages_for("agent/gpio_input/state") == []
    h.advance(3600)  # an hour of restarts, ever more rarely: never online, no flapping
    availability = [m.payload for m in h.messages_for("agent/gpio_input/availability")]
    assert "online" not in availability, availability
    assert len(h.messages_for("agent/gpio_input/error")) < 20


def test_the_home_assistant_entities(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [[device]]
        type = "gpio_input"
        name = "door"
        pin = 17
        device_class = "door"
        icon = "mdi:door"

        [[device]]
        type = "gpio_output"
        name = "heater"
        pin = 18
        device_class = "outlet"
        """,
    )
    app = build_app(config)
    door, heater = app.registry.get("door"), app.registry.get("heater")
    assert door is not None and heater is not None
    assert door.entities == (
        Entity(
            "state",
            component="binary_sensor",
            name="",
            payload_on="ON",
            payload_off="OFF",
            device_class="door",
            icon="mdi:door",
        ),
    )
    assert heater.entities == (
        Entity(
            "state",
            component="switch",
            name="",
            payload_on="ON",
            payload_off="OFF",
            device_class="outlet",
        ),
    )


# -- gpio_input ------------------------------------------------------------------------------

DOOR = """
[[device]]
type = "gpio_input"
name = "door"
pin = 17
debounce = 0
"""


def test_an_input_publishes_its_level_then_every_edge_in_order(
    tmp_path: Path, runs: Runs, pins: MockFactory
) -> None:
    before = utc_now()
    h = runs.start(load(tmp_path, DOOR))
    pin = pins.pin(17)
    assert pin.pull == "up" and pin.state is True  # pulled up, the contact open
    assert states(h, "door") == ["OFF"]
    assert events(h, "door") == []  # the level at start is no edge

    pin.drive_low()  # three edges before the device thread runs: each one counts
    pin.drive_high()
    pin.drive_low()
    h.advance(0)
    assert events(h, "door") == [("activated", "ON"), ("deactivated", "OFF"), ("activated", "ON")]
    assert states(h, "door") == ["OFF", "ON", "OFF", "ON"]
    on_door = [m for m in h.published if m.topic.startswith("agent/door/")]
    assert [(m.topic.rsplit("/", 1)[1], m.retain) for m in on_door[-6:]] == [
        ("event", False),
        ("state", True),
        ("event", False),
        ("state", True),
        ("event", False),
        ("state", True),
    ]
    at = datetime.fromisoformat(h.messages_for("agent/door/event")[0].json()["at"])
    assert before <= at <= utc_now()

    pin.drive_high()
    h.advance(0)
    assert states(h, "door")[-1] == "OFF"
    assert events(h, "door")[-1] == ("deactivated", "OFF")


def test_a_storm_of_edges_publishes_only_changes_and_ends_at_the_pins_level(
    tmp_path: Path, runs: Runs, pins: MockFactory
) -> None:
    h = runs.start(load(tmp_path, DOOR))
    pin = pins.pin(17)
    for _ in range(1500):  # more than the edge queue holds, while the device thread runs
        pin.drive_low()
        pin.drive_high()
    pin.drive_low()
    h.advance(0)
    published = states(h, "door")
    assert published[-1] == "ON"
    assert all(a != b for a, b in itertools.pairwise(published))  # each one a change
    assert [state for _, state in events(h, "door")] == published[1:]


def test_a_change_still_settling_at_shutdown_is_not_published(
    tmp_path: Path, runs: Runs, pins: MockFactory
) -> None:
    h = runs.start(load(tmp_path, DOOR.replace("debounce = 0", "debounce = 0.05")))
    pins.pin(17).drive_low()
    h.advance(0.01)
    h.stop()
    assert states(h, "door") == ["OFF"]
    assert events(h, "door") == []


def test_debounce_counts_a_level_that_held_for_exactly_that_long(
    tmp_path: Path, runs: Runs, pins: MockFactory
) -> None:
    h = runs.start(load(tmp_path, DOOR.replace("debounce = 0", "debounce = 0.05")))
    pin = pins.pin(17)
    pin.drive_low()
    h.advance(0.049)
    assert states(h, "door") == ["OFF"]
    pin.drive_high()  # the contact bounces at t = 0.049 ...
    pin.drive_low()  # ... and settles low: the 50 ms start again
    h.advance(0.049)
    assert states(h, "door") == ["OFF"]
    h.advance(0.001)  # t = 0.099: low for 50 ms
    assert states(h, "door") == ["OFF", "ON"]
    assert events(h, "door") == [("activated", "ON")]

    pin.drive_high()  # a pulse shorter than the debounce is no change
    h.advance(0.02)
    pin.drive_low()
    h.advance(10)
    assert states(h, "door") == ["OFF", "ON"]
    assert events(h, "door") == [("activated", "ON")]


def test_polarity_follows_active_low_whatever_the_pull(
    tmp_path: Path, runs: Runs, pins: MockFactory
) -> None:
    config = load(
        tmp_path,
        """
        [[device]]
        type = "gpio_input"
        name = "nc"          # a normally-closed contact on a pulled-up pin: open is ON
        pin = 17
        active_low = false
        debounce = 0

        [[device]]
        type = "gpio_input"
        name = "pir"         # a sensor driving the pin high when it sees motion
        pin = 27
        pull = "down"
        debounce = 0

        [[device]]
        type = "gpio_input"
        name = "ext"         # an external pull-up resistor, active low
        pin = 22
        pull = "none"
        active_low = true
        debounce = 0
        """,
    )
    pins.pin(22).drive_high()  # the external resistor
    h = runs.start(config)
    assert (pins.pin(17).pull, pins.pin(27).pull, pins.pin(22).pull) == ("up", "down", "floating")
    assert [states(h, d) for d in ("nc", "pir", "ext")] == [["ON"], ["OFF"], ["OFF"]]
    pins.pin(17).drive_low()
    pins.pin(27).drive_high()
    pins.pin(22).drive_low()
    h.advance(0)
    assert [states(h, d) for d in ("nc", "pir", "ext")] == [
        ["ON", "OFF"],
        ["OFF", "ON"],
        ["OFF", "ON"],
    ]
    assert events(h, "nc") == [("deactivated", "OFF")]


def test_a_command_to_an_input_is_reported_and_the_input_goes_on(
    tmp_path: Path, runs: Runs, pins: MockFactory
) -> None:
    h = runs.start(load(tmp_path, DOOR), raise_errors=False)
    h.send_command("door", "ON")
    error = h.assert_published("agent/door/error").json()
    assert "has no handler for its command topic" in error["message"]
    pins.pin(17).drive_low()
    h.advance(0)
    assert states(h, "door") == ["OFF", "ON"]


def test_pins_are_opened_at_start_and_closed_at_shutdown(
    tmp_path: Path, runs: Runs, pins: MockFactory
) -> None:
    config = load(tmp_path, DOOR + '\n[[device]]\ntype = "gpio_output"\nname = "lamp"\npin = 18\n')
    build_app(config)  # what agent check does
    assert pins.pins == {}  # no pin touched

    h = runs.start(config)
    assert pins.pin(18).function == "output"
    h.stop()
    assert pins.pin(18).function == "input"  # released: gpiozero's idle state
    again = DigitalInputDevice(17)  # free again: the input closed its pin
    again.close()
    assert h.last_state("door") == {"state": "OFF"}


def test_a_pin_used_twice_stops_the_second_device_with_its_pin_named(
    tmp_path: Path, runs: Runs, pins: MockFactory
) -> None:
    config = load(tmp_path, DOOR + '\n[[device]]\ntype = "gpio_output"\nname = "lamp"\npin = 17\n')
    h = runs.start(config, raise_errors=False)
    errors = [m.json() for m in h.messages_for("agent/+/error")]
    assert len(errors) == 1
    device = errors[0]["device"]  # whichever thread came second
    kind = {"door": "gpio_input", "lamp": "gpio_output"}[device]
    assert errors[0]["message"].startswith(
        f"cannot open GPIO pin 17 for {kind} '{device}': GPIOPinInUse: "
    )
    assert "GPIOPinInUse" in errors[0]["message"]


# -- gpio_output -----------------------------------------------------------------------------

LAMP = """
[[device]]
type = "gpio_output"
name = "lamp"
pin = 18
"""


def test_an_output_starts_at_its_initial_level_with_its_polarity(
    tmp_path: Path, runs: Runs, pins: MockFactory
) -> None:
    config = load(
        tmp_path,
        LAMP
        + """
        [[device]]
        type = "gpio_output"
        name = "relay"
        pin = 23
        active_low = true
        initial = "on"
        """,
    )
    h = runs.start(config)
    assert pins.pin(18).state is False and pins.pin(23).state is False  # the relay: on = low
    assert states(h, "lamp") == ["OFF"] and states(h, "relay") == ["ON"]
    h.send_command("relay", "OFF")
    assert pins.pin(23).state is True
    h.assert_state("relay", {"state": "OFF"})


@pytest.mark.parametrize(
    ("payload", "pin", "state"),
    [
        ("ON", True, "ON"),
        (" on\n", True, "ON"),
        ("TOGGLE", True, "ON"),
        ('{"state": "ON"}', True, "ON"),
        ('{"state": "toggle"}', True, "ON"),
        ("OFF", False, "OFF"),
    ],
)
def test_an_output_takes_on_off_toggle_and_json(
    tmp_path: Path, runs: Runs, pins: MockFactory, payload: str, pin: bool, state: str
) -> None:
    h = runs.start(load(tmp_path, LAMP))
    h.send_command("lamp", payload)
    assert pins.pin(18).state is pin
    assert states(h, "lamp") == ["OFF", state]  # published after the command, changed or not
    h.assert_published("agent/lamp/state", {"state": state}, retain=True, qos=1)


def test_toggle_switches_back_and_forth(tmp_path: Path, runs: Runs, pins: MockFactory) -> None:
    h = runs.start(load(tmp_path, LAMP))
    levels = []
    for _ in range(3):
        h.send_command("lamp", "TOGGLE")
        levels.append(pins.pin(18).state)
    assert levels == [True, False, True]
    assert states(h, "lamp") == ["OFF", "ON", "OFF", "ON"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("BLINK", 'expected ON, OFF, TOGGLE or {"state": "ON"}, got \'BLINK\''),
        ('{"state": "DIM"}', "expected ON, OFF, TOGGLE or {"),
        ('{"state": "ON", "brightness": 3}', 'expected a JSON object {"state": "ON"}'),
        ("{oops", "not valid JSON: "),
        ("[1]", "expected ON, OFF, TOGGLE or {"),
    ],
)
def test_a_bad_payload_is_reported_and_changes_nothing(
    tmp_path: Path, runs: Runs, pins: MockFactory, payload: str, message: str
) -> None:
    h = runs.start(load(tmp_path, LAMP + 'initial = "on"\n'), raise_errors=False)
    h.send_command("lamp", payload)
    error = h.assert_published("agent/lamp/error", retain=False).json()
    assert error["error_type"] == "invalid_payload"
    assert message in error["message"]
    assert pins.pin(18).state is True
    assert states(h, "lamp") == ["ON"]  # no state for a refused command
    h.send_command("lamp", "OFF")  # and the next good one is taken
    assert pins.pin(18).state is False


def test_parse_command() -> None:
    assert parse_command("toggle", current=True) is False
    assert parse_command('{"state":"off"}', current=True) is False
    for bad in ("", "1", "true", '"ON"', '{"state": 1}', "{}"):
        with pytest.raises(InvalidPayload):
            parse_command(bad, current=False)


def test_restore_brings_the_output_back_after_a_restart(
    tmp_path: Path, runs: Runs, pins: MockFactory
) -> None:
    config = load(tmp_path, LAMP + 'initial = "restore"\n')
    store = MemoryStore()
    first = runs.start(config, store=store)
    assert states(first, "lamp") == ["OFF"]  # nothing stored yet: off
    first.send_command("lamp", "ON")
    assert store.load("lamp") == {"state": "ON"}  # saved before it was published
    first.stop()
    assert pins.pin(18).function == "input"

    second = runs.start(config, store=store)
    assert pins.pin(18).state is True  # on from the moment the pin is an output
    assert states(second, "lamp") == ["ON"]
    second.send_command("lamp", "OFF")
    second.stop()
    third = runs.start(config, store=store)
    assert states(third, "lamp") == ["OFF"] and pins.pin(18).state is False


def test_off_and_on_need_no_store_but_restore_does(tmp_path: Path, runs: Runs) -> None:
    build_app(load(tmp_path, LAMP + 'initial = "on"\n', backend="none"))
    with pytest.raises(ConfigError, match=r'\[store\] backend = "none"'):
        build_app(load(tmp_path, LAMP + 'initial = "restore"\n', backend="none"))
