"""Tests of the S0 meter bridge, written with agent's testing kit: impulses from a fake
meter, the total in a MemoryStore across restarts, the wall clock frozen by freezegun while
the cadence runs on the fake clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from energy_meter import (
    FakeImpulses,
    ImpulsePort,
    MeterSettings,
    app,
    meter,
    power_filter,
    simulated_meter,
)
from freezegun import freeze_time

import agent
from agent.testing import AppHarness, make_settings

STATE = "energy2mqtt/meter/state"


@pytest.fixture
def start(harness: Callable[..., AppHarness]) -> Callable[..., AppHarness]:
    """``start(meter, store=..., **settings)``: the bridge on a fake meter and a MemoryStore
    (each start loads the store afresh, as a restarted process would)."""

    def start(
        meter: FakeImpulses, *, store: agent.Store | None = None, **settings: object
    ) -> AppHarness:
        store = store if store is not None else agent.MemoryStore()
        return harness(app, adapters={ImpulsePort: meter}, store=store, **settings)

    return start


def readings(h: AppHarness, key: str) -> list[object]:
    return [m.json()[key] for m in h.messages_for(STATE)]


@freeze_time("2024-03-10 12:00:00")
def test_the_handler_is_a_plain_function() -> None:
    settings = make_settings(MeterSettings, offset_kwh=100.0)
    store = agent.DeviceStore(agent.MemoryStore(), "meter")
    impulses = FakeImpulses()
    impulses.add(500)
    state = meter(impulses, store, power_filter(settings), settings)
    assert state == {"energy_kwh": 100.5, "power_w": 60000.0, "since": "2024-03-10T12:00:00+00:00"}
    assert store.to_dict() == {"impulses": 500, "since": "2024-03-10T12:00:00+00:00"}


def test_impulses_add_up_to_the_meter_reading(start: Callable[..., AppHarness]) -> None:
    meter = FakeImpulses()
    h = start(meter, offset_kwh=12345.0)
    h.assert_state("meter", {"energy_kwh": 12345.0, "power_w": 0.0})
    meter.add(250)
    h.advance(30)
    h.assert_state("meter", {"energy_kwh": 12345.25})
    h.assert_published(STATE, qos=1, retain=True)


def test_the_power_is_smoothed_by_a_pt1_filter(start: Callable[..., AppHarness]) -> None:
    meter = FakeImpulses()
    h = start(meter, poll_interval=30, power_time_constant=120)
    alpha = 30 / (120 + 30)  # Pt1Filter(tau=120, dt=30)
    meter.add(1)  # one watt-hour in 30 s: 120 W for that cycle
    h.advance(30)
    h.assert_state("meter", {"power_w": round(120 * alpha, 1)})  # 24 W, not 120 W
    for _ in range(40):  # a steady 120 W for 20 minutes
        meter.add(1)
        h.advance(30)
    h.assert_state("meter", {"power_w": 120.0})


def test_an_idle_meter_publishes_every_five_minutes(start: Callable[..., AppHarness]) -> None:
    h = start(FakeImpulses())
    h.advance(3600)
    assert len(h.messages_for(STATE)) == 1 + 12  # at start, then Every(seconds=300)


def test_only_cycles_that_counted_something_are_saved(start: Callable[..., AppHarness]) -> None:
    store = agent.MemoryStore()
    meter = FakeImpulses()
    h = start(meter, store=store)
    assert store.writes == 1  # the first cycle set "since"
    h.advance(600)  # twenty idle cycles: the store did not change, nothing is written
    assert store.writes == 1
    meter.add(3)
    h.advance(30)
    assert store.writes == 2
    assert store.load("meter")["impulses"] == 3  # type: ignore[index]


def test_the_count_survives_a_restart(start: Callable[..., AppHarness]) -> None:
    store = agent.MemoryStore()  # the disk, shared by two runs of the bridge
    meter = FakeImpulses()
    first = start(meter, store=store)
    meter.add(1234)
    first.advance(30)
    first.stop()  # as SIGTERM would

    second = start(FakeImpulses(), store=store)
    second.assert_state("meter", {"energy_kwh": 1.234, "power_w": 0.0})


def test_since_is_wall_clock_time_while_the_cadence_is_the_fake_clocks(
    start: Callable[..., AppHarness],
) -> None:
    store = agent.MemoryStore()
    # freezegun fixes the wall clock (timestamps for people); the fake clock times the
    # cadence. ignore= keeps the harness's real-time safety bounds on the real clock.
    with freeze_time("2024-03-10 12:00:00") as wall:
        h = start(FakeImpulses(), store=store)
        h.advance(6 * 3600)  # six hours of cycles, in one frozen wall-clock instant
        assert len(h.messages_for(STATE)) == 1 + 6 * 12
        assert set(readings(h, "since")) == {"2024-03-10T12:00:00+00:00"}
        h.stop()

        wall.move_to("2024-04-01 08:00:00")  # weeks later, a restart: since is kept
        again = start(FakeImpulses(), store=store)
        again.assert_state("meter", {"since": "2024-03-10T12:00:00+00:00"})


def test_the_dry_run_meter_simulates_about_500_w() -> None:
    meter = simulated_meter(make_settings(MeterSettings, poll_interval=36))
    assert sum(meter.take() for _ in range(100)) / 100 == pytest.approx(5, abs=0.5)
