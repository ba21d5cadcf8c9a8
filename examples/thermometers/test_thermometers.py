"""Tests of the 1-wire bridge, written with agent's testing kit: a scripted fake bus, exact
cadences and retries on the fake clock, errors as their payloads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from freezegun import freeze_time
from thermometers import (
    BadReading,
    FakeThermometers,
    ThermometerPort,
    ThermoSettings,
    app,
    parse_w1_slave,
    simulated_bus,
    w1_slave_text,
)

from agent.settings import ConfigError
from agent.testing import AppHarness, make_settings

SENSORS = {"flow": "28-f", "return": "28-r", "hot_water": "28-w", "outdoor": "28-o"}
HEATING = {"28-f": 45.0, "28-r": 38.0, "28-w": 52.0, "28-o": 4.0}


@pytest.fixture
def start(harness: Callable[..., AppHarness]) -> Callable[..., AppHarness]:
    """``start(bus, **settings)``: the bridge on a fake bus, these sensors, a 30 s poll."""

    def start(
        bus: FakeThermometers, *, raise_errors: bool = True, **settings: object
    ) -> AppHarness:
        settings = {"sensors": SENSORS, "poll_interval": 30, **settings}
        return harness(app, adapters={ThermometerPort: bus}, raise_errors=raise_errors, **settings)

    return start


def states(h: AppHarness, role: str) -> list[float]:
    return [m.json()["temperature_c"] for m in h.messages_for(f"onewire2mqtt/{role}/state")]


# -- the w1_slave text, without the app -----------------------------------------------------


def test_parse_w1_slave_reads_the_millidegrees() -> None:
    text = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
    assert parse_w1_slave(text) == 23.125
    assert parse_w1_slave(w1_slave_text(-10.5)) == -10.5


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (w1_slave_text(21.0, crc_ok=False), "CRC check failed"),
        (w1_slave_text(85.0), "power-on value"),
        ("", "CRC check failed"),
    ],
)
def test_parse_w1_slave_refuses_what_is_not_a_temperature(text: str, why: str) -> None:
    with pytest.raises(BadReading, match=why):
        parse_w1_slave(text)


def test_every_role_needs_a_sensor() -> None:
    with pytest.raises(ConfigError, match=r"sensors: expected a 1-wire id .* none for return"):
        make_settings(
            ThermoSettings, sensors={"flow": "28-f", "hot_water": "28-w", "outdoor": "28-o"}
        )


def test_the_dry_run_bus_serves_every_configured_sensor() -> None:
    bus = simulated_bus(make_settings(ThermoSettings, sensors=SENSORS))
    assert all(-50 < parse_w1_slave(bus.read(sensor)) < 100 for sensor in SENSORS.values())


# -- cadence and publishing -----------------------------------------------------------------


def test_read_every_30_s_and_published_every_5_minutes_when_steady(
    start: Callable[..., AppHarness],
) -> None:
    bus = FakeThermometers(HEATING)
    h = start(bus)
    assert dict(bus.reads) == dict.fromkeys(HEATING, 1)  # the first read, at start
    h.advance(299)
    assert dict(bus.reads) == dict.fromkeys(HEATING, 10)  # t = 0, 30, ..., 270
    assert states(h, "flow") == [45.0]
    h.advance(1)
    assert dict(bus.reads) == dict.fromkeys(HEATING, 11)
    assert states(h, "flow") == [45.0, 45.0]  # t = 300: Every(seconds=300)
    h.advance(3600)
    assert len(states(h, "outdoor")) == 2 + 12


def test_a_move_of_more_than_0_2_degrees_is_published_at_the_next_read(
    start: Callable[..., AppHarness],
) -> None:
    bus = FakeThermometers(HEATING)
    h = start(bus)
    for celsius in (45.125, 45.1875, 45.25):  # 1/16 °C steps: a slow rise
        bus.celsius["28-f"] = celsius
        h.advance(30)
    # measured against the last *published* 45.0, so the slow drift is not lost
    assert states(h, "flow") == [45.0, 45.25]
    h.assert_state("flow", {"temperature_c": 45.25})
    h.assert_published("onewire2mqtt/flow/state", {"temperature_c": 45.25}, qos=1, retain=True)


# -- retries and errors ---------------------------------------------------------------------


def test_a_bad_read_is_retried_after_exactly_one_second(start: Callable[..., AppHarness]) -> None:
    bus = FakeThermometers(HEATING)
    bus.bad_crc["28-f"] = 2  # the first two reads of the flow sensor fail
    h = start(bus)  # t = 0: first read of flow fails; the retry waits on the fake clock
    assert bus.reads["28-f"] == 1
    h.advance(0.999)
    assert bus.reads["28-f"] == 1
    h.advance(0.001)  # t = 1.0: FixedBackoff(1.0, jitter=0), to the microsecond
    assert bus.reads["28-f"] == 2
    assert states(h, "flow") == []
    h.advance(1)  # t = 2.0: third attempt, good
    assert bus.reads["28-f"] == 3
    assert states(h, "flow") == [45.0]
    # The group shares one thread: the other sensors were read after flow, at t = 2.0.
    assert states(h, "return") == [38.0]
    assert h.messages_for("onewire2mqtt/+/error") == []  # a retry that succeeds is no error


def test_a_vanished_sensor_is_reported_once_and_comes_back(
    start: Callable[..., AppHarness],
) -> None:
    bus = FakeThermometers(HEATING)
    h = start(bus, raise_errors=False)  # the failure is the subject: keep it as a payload
    del bus.celsius["28-o"]  # unplugged
    h.advance(32)  # t = 30, 31, 32: three reads, three failures
    assert bus.reads["28-o"] == 1 + 3
    error = h.assert_published("onewire2mqtt/outdoor/error", qos=1, retain=False).json()
    assert error["error_type"] == "sensor_missing"
    assert error["message"] == "outdoor sensor 28-o is not on the bus: check its wiring"
    h.assert_published("onewire2mqtt/outdoor/availability", "offline", retain=True)

    h.advance(298)  # nine more failed cycles: the same streak, no new report
    assert len(h.messages_for("onewire2mqtt/outdoor/error")) == 1
    assert states(h, "flow") == [45.0, 45.0]  # the others go on

    bus.celsius["28-o"] = 3.5  # plugged in again
    h.advance(30)
    assert states(h, "outdoor") == [4.0, 3.5]
    assert h.messages_for("onewire2mqtt/outdoor/availability")[-1].payload == "online"


def test_an_error_report_has_the_wall_clock_time_and_the_cadence_does_not(
    start: Callable[..., AppHarness],
) -> None:
    # freezegun fixes the wall clock (timestamps for people); the fake clock times the
    # cadence. ignore= keeps the harness's real-time safety bounds on the real clock.
    with freeze_time("2024-01-15 06:30:00"):
        bus = FakeThermometers(HEATING)
        bus.bad_crc["28-w"] = 3  # all three attempts of the first read fail
        h = start(bus, raise_errors=False)
        h.advance(3600)
        error = h.assert_published("onewire2mqtt/hot_water/error").json()
    assert error["error_type"] == "bad_reading"
    assert error["timestamp"] == "2024-01-15T06:30:00+00:00"
    assert bus.reads["28-w"] == 3 + 120  # the failed start, then every 30 s for an hour
