"""agent.health: heartbeat payloads, availability, the reporter and the last will."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading

import pytest

from agent.health import (
    DeviceStatus,
    HealthReporter,
    HeartbeatPayload,
    build_will_config,
)
from agent.mqtt.fakes import MockMqttClient
from agent.mqtt.port import WillConfig
from agent.testing import FakeClock


def make(
    prefix: str = "gas2mqtt", start: float = 1000.0
) -> tuple[HealthReporter, MockMqttClient, FakeClock]:
    mqtt = MockMqttClient()
    clock = FakeClock(start)
    return HealthReporter(mqtt, prefix, "0.1.0", clock), mqtt, clock


# -- payloads ------------------------------------------------------------------------------


def test_device_status_to_dict() -> None:
    assert DeviceStatus().to_dict() == {"status": "ok"}
    assert DeviceStatus("error").to_dict() == {"status": "error"}
    assert DeviceStatus("ok", skipped_ticks=3).to_dict() == {"status": "ok", "skipped_ticks": 3}
    with pytest.raises(dataclasses.FrozenInstanceError):
        DeviceStatus().status = "x"  # type: ignore[misc]


def test_heartbeat_payload_json() -> None:
    payload = HeartbeatPayload("online", 12.3, "0.1.0", {"gas": DeviceStatus()})
    expected = {
        "status": "online",
        "uptime_s": 12.3,
        "version": "0.1.0",
        "devices": {"gas": {"status": "ok"}},
    }
    assert payload.to_dict() == expected
    assert json.loads(payload.to_json()) == expected
    assert HeartbeatPayload("online", 0.0, "v").to_dict()["devices"] == {}


# -- availability --------------------------------------------------------------------------


def test_available_and_unavailable_topics_retained_qos1() -> None:
    reporter, mqtt, _ = make()
    reporter.publish_device_available("gas")
    reporter.publish_device_available("main", is_root=True)
    reporter.publish_device_unavailable("gas")
    reporter.publish_device_unavailable("main", is_root=True)
    assert mqtt.published == [
        ("gas2mqtt/gas/availability", "online", True, 1),
        ("gas2mqtt/availability", "online", True, 1),
        ("gas2mqtt/gas/availability", "offline", True, 1),
        ("gas2mqtt/availability", "offline", True, 1),
    ]


def test_available_tracks_ok_and_unavailable_forgets() -> None:
    reporter, _, _ = make()
    reporter.publish_device_available("gas")
    reporter.publish_device_available("main", is_root=True)
    assert reporter.build_heartbeat().devices == {"gas": DeviceStatus(), "main": DeviceStatus()}
    assert reporter.devices() == [("gas", False), ("main", True)]
    reporter.publish_device_unavailable("gas")
    assert reporter.devices() == [("main", True)]
    assert list(reporter.build_heartbeat().devices) == ["main"]


def test_set_device_status_updates_and_keeps_counters() -> None:
    reporter, _, _ = make()
    reporter.publish_device_available("gas")
    reporter.set_device_status("gas", "error", skipped_ticks=2)
    assert reporter.build_heartbeat().devices["gas"] == DeviceStatus("error", 2)
    reporter.set_device_status("gas")  # back to ok; skipped_ticks=None keeps the count
    assert reporter.build_heartbeat().devices["gas"] == DeviceStatus("ok", 2)
    reporter.set_device_status("gas", skipped_ticks=0)
    assert reporter.build_heartbeat().devices["gas"] == DeviceStatus("ok", 0)


def test_reannouncing_resets_status_but_keeps_counters() -> None:
    reporter, _, _ = make()
    reporter.publish_device_available("gas")
    reporter.set_device_status("gas", "error", skipped_ticks=5)
    reporter.publish_device_available("gas")
    assert reporter.build_heartbeat().devices["gas"] == DeviceStatus("ok", 5)


def test_status_only_devices_are_in_heartbeat_but_not_announced() -> None:
    reporter, mqtt, _ = make()
    reporter.set_device_status("helper", "starting")
    assert reporter.build_heartbeat().devices == {"helper": DeviceStatus("starting")}
    assert reporter.devices() == []
    assert mqtt.published == []


def test_remove_device_publishes_nothing() -> None:
    reporter, mqtt, _ = make()
    reporter.publish_device_available("gas")
    reporter.remove_device("gas")
    reporter.remove_device("never-seen")
    assert reporter.devices() == []
    assert reporter.build_heartbeat().devices == {}
    assert len(mqtt.published) == 1


# -- heartbeat -----------------------------------------------------------------------------


def test_heartbeat_uptime_from_monotonic_clock_rounded_to_tenths() -> None:
    reporter, _, clock = make(start=5000.0)
    assert reporter.build_heartbeat().uptime_s == 0.0
    clock.advance(12.34)
    assert reporter.build_heartbeat().uptime_s == 12.3
    clock.advance(0.02)
    assert reporter.build_heartbeat().uptime_s == 12.4


def test_publish_heartbeat_retained_json_on_status() -> None:
    reporter, mqtt, clock = make()
    reporter.publish_device_available("gas")
    reporter.set_device_status("gas", skipped_ticks=1)
    clock.advance(60)
    reporter.publish_heartbeat()
    topic, payload, retain, qos = mqtt.published[-1]
    assert (topic, retain, qos) == ("gas2mqtt/status", True, 1)
    assert json.loads(payload) == {
        "status": "online",
        "uptime_s": 60.0,
        "version": "0.1.0",
        "devices": {"gas": {"status": "ok", "skipped_ticks": 1}},
    }


def test_heartbeat_under_a_multi_level_prefix() -> None:
    reporter, mqtt, _ = make(prefix="home/gas")
    reporter.publish_heartbeat()
    assert mqtt.published[0][0] == "home/gas/status"


# -- shutdown ------------------------------------------------------------------------------


def test_shutdown_offline_for_each_device_then_status_then_clears() -> None:
    reporter, mqtt, _ = make()
    reporter.publish_device_available("gas")
    reporter.publish_device_available("main", is_root=True)
    reporter.set_device_status("helper")  # never announced: owed no offline
    mqtt.published.clear()
    reporter.shutdown()
    assert mqtt.published == [
        ("gas2mqtt/gas/availability", "offline", True, 1),
        ("gas2mqtt/availability", "offline", True, 1),
        ("gas2mqtt/status", "offline", True, 1),
    ]
    assert reporter.devices() == []
    assert reporter.build_heartbeat().devices == {}


def test_no_heartbeat_after_shutdown() -> None:
    reporter, mqtt, _ = make()
    reporter.shutdown()
    reporter.publish_heartbeat()
    assert [(t, p) for t, p, _, _ in mqtt.published] == [("gas2mqtt/status", "offline")]


# -- fire-and-forget -----------------------------------------------------------------------


def test_nothing_raises_when_mqtt_fails(caplog: pytest.LogCaptureFixture) -> None:
    mqtt = MockMqttClient(raise_on_publish=ConnectionError("broker gone"))
    reporter = HealthReporter(mqtt, "p", "1", FakeClock())
    with caplog.at_level(logging.WARNING, logger="agent.health"):
        reporter.publish_device_available("gas")
        reporter.publish_heartbeat()
        reporter.publish_device_unavailable("gas")
        reporter.publish_device_available("gas")
        reporter.shutdown()
    assert len(caplog.records) == 6
    assert all("broker gone" in r.getMessage() for r in caplog.records)
    assert reporter.devices() == []


def test_heartbeat_survives_a_broken_clock(caplog: pytest.LogCaptureFixture) -> None:
    class BreakingClock(FakeClock):
        broken = False

        def now(self) -> float:
            if self.broken:
                raise RuntimeError("clock gone")
            return super().now()

    clock = BreakingClock()
    mqtt = MockMqttClient()
    reporter = HealthReporter(mqtt, "p", "1", clock)
    clock.broken = True
    with caplog.at_level(logging.ERROR, logger="agent.health"):
        reporter.publish_heartbeat()
    assert mqtt.published == []
    assert "heartbeat" in caplog.text


def test_concurrent_use_from_many_threads() -> None:
    reporter, mqtt, _ = make()
    names = [f"dev{i}" for i in range(8)]
    barrier = threading.Barrier(len(names) + 1)
    errors: list[BaseException] = []

    def device(name: str) -> None:
        try:
            barrier.wait(5)
            reporter.publish_device_available(name)
            for i in range(200):
                reporter.set_device_status(name, "ok" if i % 2 else "busy", skipped_ticks=i)
            reporter.set_device_status(name, "done")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def heartbeats() -> None:
        try:
            barrier.wait(5)
            for _ in range(200):
                reporter.publish_heartbeat()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=device, args=(n,)) for n in names]
    threads.append(threading.Thread(target=heartbeats))
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    final = reporter.build_heartbeat().devices
    assert final == {n: DeviceStatus("done", 199) for n in names}
    beats = [p for t, p, _, _ in mqtt.published if t == "gas2mqtt/status"]
    assert len(beats) == 200
    assert all(json.loads(p)["status"] == "online" for p in beats)


# -- last will -----------------------------------------------------------------------------


def test_build_will_config() -> None:
    assert build_will_config("home/gas") == WillConfig("home/gas/status", "offline", 1, True)


def test_build_will_config_refuses_a_bad_prefix() -> None:
    with pytest.raises(ValueError, match="invalid topic prefix"):
        build_will_config("home/#")
