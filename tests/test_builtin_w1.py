"""The ``w1_temperature`` built-in against a fake ``/sys/bus/w1/devices`` tree: the options'
mistakes, every refused reading, one device per sensor with its own availability."""

from __future__ import annotations

import logging
import shutil
import textwrap
from pathlib import Path
from typing import Any

import builtin_helpers as helpers
import pytest

from agent import App, Router
from agent.daemon.app import build_app
from agent.daemon.builtins import BUILTINS
from agent.daemon.builtins.w1_temperature import (
    W1_TEMPERATURE,
    BadReading,
    W1Options,
    find_sensors,
    parse_w1_slave,
)
from agent.daemon.config import check_config
from agent.daemon.types import DeviceSpec
from agent.testing import AppHarness

FLOW = "28-0316a2794eff"
RETURN = "28-0316a27a31ff"
OLD = "10-000802b5f0a1"  # a DS18S20


def w1_slave(millidegrees: int, *, crc: str = "YES", scratchpad: str = "") -> str:
    """A ``w1_slave`` text as the kernel writes it."""
    raw = round(millidegrees * 16 / 1000)
    pad = scratchpad or f"{raw & 0xFF:02x} {(raw >> 8) & 0xFF:02x} 4b 46 7f ff 0e 10 57"
    return f"{pad} : crc=57 {crc}\n{pad} t={millidegrees}\n"


def plug(sys_root: Path, sensor: str, millidegrees: int, **kwargs: Any) -> Path:
    directory = sys_root / "bus" / "w1" / "devices" / sensor
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "w1_slave").write_text(w1_slave(millidegrees, **kwargs))
    return directory


def checked(**table: Any) -> Any:
    return helpers.checked(W1_TEMPERATURE, table)


def problems_of(table: dict[str, Any]) -> list[tuple[str, str, str]]:
    return helpers.problems_of(W1_TEMPERATURE, table)


# -- check ------------------------------------------------------------------------------


def test_the_defaults_and_the_three_ways_to_name_sensors() -> None:
    assert checked() == W1Options(sensors=None, sysfs_root="/sys")
    assert checked(sensors="all").sensors is None
    assert checked(sensors=[FLOW, OLD]).sensors == ((FLOW, FLOW), (OLD, OLD))
    assert checked(sensors={"flow": FLOW, "return": RETURN.upper()}).sensors == (
        ("flow", FLOW),
        ("return", RETURN),  # the kernel's directories are lower case
    )
    assert BUILTINS["w1_temperature"] is W1_TEMPERATURE
    assert W1_TEMPERATURE.default_interval == 60.0


@pytest.mark.parametrize(
    ("table", "key", "expected", "found"),
    [
        ({"sensor": "all"}, "sensor", 'did you mean "sensors"?', "an unknown key"),
        ({"sensors": "al"}, "sensors", '"all", a list of 1-wire ids, or a table', '"al"'),
        ({"sensors": "ALL"}, "sensors", '(did you mean "all"?)', '"ALL"'),
        ({"sensors": "28-0316a2794eff"}, "sensors", "a list of 1-wire ids", ""),
        ({"sensors": 3}, "sensors", '"all", a list', "3"),
        ({"sensors": []}, "sensors", 'at least one sensor, or "all"', "an empty list"),
        ({"sensors": {}}, "sensors", 'at least one sensor, or "all"', "an empty table"),
        ({"sensors": ["28-xyz"]}, "sensors[1]", 'a 1-wire thermometer id like "28-', '"28-xyz"'),
        ({"sensors": [FLOW, 28]}, "sensors[2]", "a 1-wire thermometer id", "28"),
        ({"sensors": ["01-0316a2794eff"]}, "sensors[1]", "families 10, 22, 28, 3b, 42", ""),
        ({"sensors": [FLOW, FLOW.upper()]}, "sensors[2]", "not already listed (as sensors[1])", ""),
        ({"sensors": {"flow": "x"}}, "sensors.flow", "a 1-wire thermometer id", '"x"'),
        ({"sensors": {"a b": FLOW}}, "sensors.a b", "an alias of letters, digits, - and _", ""),
        ({"sensors": {"a": FLOW, "b": FLOW}}, "sensors.b", "(as sensors.a)", ""),
        ({"sysfs_root": "sys"}, "sysfs_root", "an absolute path (starting with /)", '"sys"'),
    ],
)
def test_each_mistake_is_reported_with_its_key(
    table: dict[str, Any], key: str, expected: str, found: str
) -> None:
    ((where, wanted, shown),) = problems_of(table)
    assert where == key and expected in wanted and found in shown


def test_every_bad_sensor_is_reported_at_once() -> None:
    problems = problems_of({"sensors": ["x", FLOW, "y"], "sysfs_root": 1})
    assert [p[0] for p in problems] == ["sensors[1]", "sensors[3]", "sysfs_root"]


# -- readings -----------------------------------------------------------------------------


def test_a_good_reading_is_in_degrees() -> None:
    assert parse_w1_slave(w1_slave(21437), FLOW) == 21.437
    assert parse_w1_slave(w1_slave(-10125), FLOW) == -10.125
    assert parse_w1_slave(w1_slave(-200000), "3b-0000017a2c44") == -200.0  # a thermocouple


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (w1_slave(21437, crc="NO"), "CRC check failed"),
        (w1_slave(85000), "85 °C is the power-on value"),
        (w1_slave(0, scratchpad=" ".join(["00"] * 9)), "the scratchpad is all zeros"),
        (w1_slave(-127000), "-127 °C is outside the sensor's range"),
        (w1_slave(126000), "126 °C is outside"),
        (w1_slave(21437).replace("t=", "x="), "no temperature in"),
        (w1_slave(21437).replace("t=21437", "t=2x"), "no temperature in"),
        ("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n", "expected two lines"),
        ("", "expected two lines"),
    ],
)
def test_refused_readings_are_bad_readings(text: str, message: str) -> None:
    with pytest.raises(BadReading) as info:
        parse_w1_slave(text, FLOW)
    assert isinstance(info.value, OSError)  # so that retry = N retries them
    assert str(info.value).startswith(FLOW + ": ") and message in str(info.value)


def test_all_finds_the_thermometers_on_the_bus(tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    for sensor in (RETURN, OLD, FLOW, "3b-0000017a2c44"):
        plug(sys_root, sensor, 20000)
    devices = sys_root / "bus/w1/devices"
    (devices / "w1_bus_master1").mkdir()
    (devices / "01-0000112b2c3d").mkdir()  # a DS2401 serial number: no thermometer
    assert find_sensors(str(devices)) == [OLD, FLOW, RETURN, "3b-0000017a2c44"]
    assert find_sensors(str(tmp_path / "nothing")) == []


# -- the devices --------------------------------------------------------------------------


def registered(tmp_path: Path, *, group: str | None = None, **table: Any) -> Router:
    router = Router("built-ins")
    spec = DeviceSpec(key="device[1]", type="w1_temperature", name="heat", group=group)
    W1_TEMPERATURE.register(router, spec, checked(sysfs_root=str(tmp_path / "sys"), **table))
    return router


def test_each_sensor_is_a_device_of_its_own_in_one_group(tmp_path: Path) -> None:
    plug(tmp_path / "sys", FLOW, 45000)
    plug(tmp_path / "sys", OLD, 38000)
    router = registered(tmp_path)
    registrations = list(router.registry)
    assert [r.name for r in registrations] == [f"heat-{OLD}", f"heat-{FLOW}"]
    assert {r.telemetry.group for r in registrations} == {"heat"}  # type: ignore[union-attr]
    assert {r.interval for r in registrations} == {60.0}
    for _, entity in router.entities:
        assert (entity.field, entity.unit, entity.device_class, entity.state_class) == (
            "temperature",
            "°C",
            "temperature",
            "measurement",
        )
    aliased = registered(tmp_path, group="bus", sensors={"flow": FLOW, "attic": RETURN})
    assert [r.name for r in aliased.registry] == ["heat-flow", "heat-attic"]
    assert {r.telemetry.group for r in aliased.registry} == {"bus"}  # type: ignore[union-attr]


def start(router: Router) -> AppHarness:
    app = App("agent", heartbeat_interval=None)
    app.include_router(router)
    return AppHarness(app, raise_errors=False).start()


def test_a_vanished_sensor_goes_offline_alone_and_comes_back(tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    flow = plug(sys_root, FLOW, 45250)
    plug(sys_root, RETURN, 38000)
    h = start(registered(tmp_path, sensors={"flow": FLOW, "return": RETURN}))
    try:
        h.assert_state("heat-flow", {"temperature": 45.25})
        h.assert_state("heat-return", {"temperature": 38.0})
        shutil.move(flow, tmp_path / "unplugged")
        h.advance(60)
        error = h.assert_published("agent/heat-flow/error").json()
        assert error["message"] == (
            f"{FLOW}: not found on the 1-wire bus ({flow} is gone: wiring?)"
        )
        h.assert_published("agent/heat-flow/availability", "offline", retain=True)
        assert h.messages_for("agent/heat-return/error") == []
        assert h.messages_for("agent/heat-return/availability")[-1].payload == "online"
        h.advance(120)
        assert len(h.messages_for("agent/heat-flow/error")) == 1  # one report per streak
        shutil.move(tmp_path / "unplugged", flow)
        h.advance(60)
        h.assert_published("agent/heat-flow/availability", "online", retain=True)
        h.assert_state("heat-flow", {"temperature": 45.25})
    finally:
        h.stop()


def test_bad_crc_and_the_power_on_value_are_errors_not_states(tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    plug(sys_root, FLOW, 21000)
    h = start(registered(tmp_path))
    try:
        h.assert_state(f"heat-{FLOW}", {"temperature": 21.0})
        plug(sys_root, FLOW, 85000)
        h.advance(60)
        error = h.assert_published(f"agent/heat-{FLOW}/error").json()
        assert "85 °C is the power-on value" in error["message"]
        plug(sys_root, FLOW, 21500, crc="NO")
        h.advance(60)  # the same kind of failure in one streak: no second report
        assert len(h.messages_for(f"agent/heat-{FLOW}/error")) == 1
        states = [m.json()["temperature"] for m in h.messages_for(f"agent/heat-{FLOW}/state")]
        assert states == [21.0]
        plug(sys_root, FLOW, 21500)
        h.advance(60)
        h.assert_state(f"heat-{FLOW}", {"temperature": 21.5})
        h.assert_published(f"agent/heat-{FLOW}/availability", "online", retain=True)
        plug(sys_root, FLOW, 21500, crc="NO")  # a new streak: reported
        h.advance(60)
        error = h.assert_published(f"agent/heat-{FLOW}/error").json()
        assert error["message"].startswith(f"{FLOW}: CRC check failed (")
    finally:
        h.stop()


def test_all_with_an_empty_bus_says_so_on_the_tables_device(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.daemon.w1_temperature")
    router = registered(tmp_path)
    assert [r.name for r in router.registry] == ["heat"]
    assert caplog.messages == [
        f"device[1]: no 1-wire thermometers under {tmp_path}/sys/bus/w1/devices; "
        "the device 'heat' reports it"
    ]
    h = start(router)
    try:
        error = h.assert_published("agent/heat/error").json()
        assert error["message"].startswith(f"no 1-wire thermometers under {tmp_path}/sys/")
        assert "dtoverlay=w1-gpio" in error["message"]
        h.assert_published("agent/heat/availability", "offline", retain=True)
        plug(tmp_path / "sys", FLOW, 20000)
        h.advance(60)
        again = h.assert_published("agent/heat/error").json()
        assert again["message"] == (
            f"1-wire thermometers appeared after start-up ({FLOW}): restart the agent to read them"
        )
        assert h.last_state("heat") is None
    finally:
        h.stop()


def test_a_config_file_with_w1_devices_checks_builds_and_runs(tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    plug(sys_root, FLOW, 45000)
    plug(sys_root, RETURN, 38000)
    config = tmp_path / "agent.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [store]
            backend = "memory"

            [[device]]
            type = "w1_temperature"
            name = "heating"
            sensors = {{ flow = "{FLOW}", return = "{RETURN}" }}
            sysfs_root = "{sys_root}"
            interval = 30
            filter = {{ temperature = {{ median = 3 }} }}

            [[device]]
            type = "w1_temperature"
            name = "all"
            sysfs_root = "{sys_root}"
            publish = {{ every = 300 }}
            """
        )
    )
    checked_config, problems = check_config(config, env_file=None, environ={})
    assert problems == [] and checked_config is not None
    app = build_app(checked_config)
    assert [r.name for r in app.registry] == [
        "heating-flow",
        "heating-return",
        f"all-{FLOW}",
        f"all-{RETURN}",
    ]
    with AppHarness(app) as h:
        h.assert_state("heating-flow", {"temperature": 45.0})
        plug(sys_root, FLOW, 60000)  # a spike: each device has its own median
        h.advance(30)
        h.assert_state("heating-flow", {"temperature": 52.5})
        plug(sys_root, FLOW, 45500)
        h.advance(30)
        h.assert_state("heating-flow", {"temperature": 45.5})
        h.assert_state("heating-return", {"temperature": 38.0})
        # The unfiltered table publishes every 300 s only: the spike was never sent.
        assert [m.json() for m in h.messages_for(f"agent/all-{FLOW}/state")] == [
            {"temperature": 45.0}
        ]


def test_a_config_file_reports_the_w1_table_mistakes(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[[device]]\ntype = "w1_temperature"\nsensors = ["28-1", "all"]\n')
    checked_config, problems = check_config(config, env_file=None, environ={})
    assert checked_config is None
    lines = [str(p) for p in problems]
    assert len(lines) == 2, lines
    assert (
        'device[1].sensors[1]: expected a 1-wire thermometer id like "28-0316a2794eff"' in lines[0]
    )
    assert "device[1].sensors[2]" in lines[1]
