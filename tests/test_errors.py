"""agent.errors: error payloads, the exact-class type map and the never-raising publisher."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from agent.errors import (
    DEFAULT_ERROR_TYPES,
    CommandQueueFull,
    ErrorPayload,
    ErrorPublisher,
    InvalidPayload,
    PayloadTooLarge,
    build_error_payload,
)
from agent.mqtt.fakes import MockMqttClient


@dataclass
class TopicFailingMqtt(MockMqttClient):
    """A MockMqttClient whose publishes to the topics in ``fail_on`` raise."""

    fail_on: tuple[str, ...] = ()

    def publish(
        self, topic: str, payload: str | bytes, *, retain: bool = False, qos: int = 1
    ) -> None:
        if topic in self.fail_on:
            raise ConnectionError(f"cannot publish to {topic}")
        super().publish(topic, payload, retain=retain, qos=qos)


FIXED = datetime(2026, 11, 24, 5, 0, tzinfo=timezone.utc)


def fixed_clock() -> datetime:
    return FIXED


class SensorError(Exception):
    pass


class FlakySensorError(SensorError):
    pass


# -- ErrorPayload --------------------------------------------------------------------------


def test_payload_to_dict_and_json() -> None:
    payload = ErrorPayload("timeout", "no answer", "gas", "2026-11-24T05:00:00+00:00", {"n": 3})
    expected = {
        "error_type": "timeout",
        "message": "no answer",
        "device": "gas",
        "timestamp": "2026-11-24T05:00:00+00:00",
        "details": {"n": 3},
    }
    assert payload.to_dict() == expected
    assert json.loads(payload.to_json()) == expected


def test_payload_is_frozen_and_details_default_empty() -> None:
    payload = ErrorPayload("error", "m", None, "t")
    assert payload.details == {}
    assert payload.to_dict()["device"] is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        payload.message = "x"  # type: ignore[misc]


def test_non_json_details_become_repr_instead_of_failing() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<Thing>"

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    cyclic: list[object] = []
    cyclic.append(cyclic)
    details: dict[str, object] = {
        "thing": Thing(),
        "broken": Broken(),
        "bytes": b"\x00\x01",
        "nan": float("nan"),
        "inf": float("-inf"),
        "tuple": (1, "a", None, True, 2.5),
        "set": {1},
        "nested": {"deep": [Thing(), {1: "int key", ("t",): "tuple key"}]},
        "cycle": cyclic,
    }
    data = json.loads(ErrorPayload("error", "m", None, "t", details).to_json())["details"]
    assert data["thing"] == "<Thing>"
    assert data["broken"] == "<unrepresentable Broken>"
    assert data["bytes"] == repr(b"\x00\x01")
    assert data["nan"] == "nan"
    assert data["inf"] == "-inf"
    assert data["tuple"] == [1, "a", None, True, 2.5]
    assert data["set"] == "{1}"
    assert data["nested"] == {"deep": ["<Thing>", {"1": "int key", "('t',)": "tuple key"}]}
    assert isinstance(data["cycle"], list)  # cut off at a depth limit, not a RecursionError


# -- build_error_payload -------------------------------------------------------------------


def test_build_defaults() -> None:
    payload = build_error_payload(SensorError("bus timeout"), clock=fixed_clock)
    assert payload == ErrorPayload(
        error_type="error",
        message="bus timeout",
        device=None,
        timestamp="2026-11-24T05:00:00+00:00",
        details={},
    )


def test_build_uses_the_class_name_for_an_empty_message() -> None:
    assert build_error_payload(SensorError(), clock=fixed_clock).message == "SensorError"


def test_type_map_matches_the_exact_class_only() -> None:
    mapping: dict[type[BaseException], str] = {SensorError: "sensor"}
    assert build_error_payload(SensorError("x"), error_type_map=mapping).error_type == "sensor"
    assert build_error_payload(FlakySensorError("x"), error_type_map=mapping).error_type == "error"
    mapping[FlakySensorError] = "flaky"
    assert build_error_payload(FlakySensorError("x"), error_type_map=mapping).error_type == "flaky"


def test_framework_types_and_user_map_wins() -> None:
    assert build_error_payload(InvalidPayload("x")).error_type == "invalid_payload"
    assert build_error_payload(PayloadTooLarge("x")).error_type == "payload_too_large"
    assert build_error_payload(CommandQueueFull("x")).error_type == "command_overflow"
    # ValueError is InvalidPayload's base; exact-class lookup leaves it unmapped.
    assert build_error_payload(ValueError("x")).error_type == "error"
    user = {InvalidPayload: "bad_command"}
    assert build_error_payload(InvalidPayload("x"), error_type_map=user).error_type == "bad_command"
    assert (
        build_error_payload(PayloadTooLarge("x"), error_type_map=user).error_type
        == "payload_too_large"
    )


def test_framework_exceptions_hierarchy_and_defaults_read_only() -> None:
    assert issubclass(InvalidPayload, ValueError)
    assert issubclass(PayloadTooLarge, InvalidPayload)
    assert issubclass(CommandQueueFull, RuntimeError)
    with pytest.raises(TypeError):
        DEFAULT_ERROR_TYPES[SensorError] = "x"  # type: ignore[index]


def test_build_device_and_details_are_copied() -> None:
    details: dict[str, object] = {"payload": "abc"}
    payload = build_error_payload(InvalidPayload("nan"), device="valve", details=details)
    details["payload"] = "changed"
    assert payload.device == "valve"
    assert payload.details == {"payload": "abc"}


@freeze_time("2026-11-24 05:00:00")
def test_timestamp_from_the_wall_clock_by_default() -> None:
    assert build_error_payload(SensorError("x")).timestamp == "2026-11-24T05:00:00+00:00"


def test_timestamp_from_clock_is_converted_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    aware = build_error_payload(
        SensorError("x"), clock=lambda: datetime(2026, 11, 24, 6, tzinfo=cet)
    )
    assert aware.timestamp == "2026-11-24T05:00:00+00:00"
    naive = build_error_payload(SensorError("x"), clock=lambda: datetime(2026, 11, 24, 5))
    assert naive.timestamp == "2026-11-24T05:00:00+00:00"


# -- ErrorPublisher ------------------------------------------------------------------------


def test_publisher_publishes_global_and_device_topics() -> None:
    mqtt = MockMqttClient()
    publisher = ErrorPublisher(mqtt, "home/gas", {SensorError: "sensor"}, clock=fixed_clock)
    publisher.publish(SensorError("bus"), device="meter", details={"try": 2})
    expected = {
        "error_type": "sensor",
        "message": "bus",
        "device": "meter",
        "timestamp": "2026-11-24T05:00:00+00:00",
        "details": {"try": 2},
    }
    assert [(t, r, q) for t, _, r, q in mqtt.published] == [
        ("home/gas/error", False, 1),
        ("home/gas/meter/error", False, 1),
    ]
    assert all(json.loads(p) == expected for _, p, _, _ in mqtt.published)


def test_publisher_without_device_or_for_root_uses_the_global_topic_only() -> None:
    mqtt = MockMqttClient()
    publisher = ErrorPublisher(mqtt, "p", clock=fixed_clock)
    publisher.publish(SensorError("a"))
    publisher.publish(SensorError("b"), device="main", is_root=True)
    assert [t for t, *_ in mqtt.published] == ["p/error", "p/error"]
    assert json.loads(mqtt.published[1][1])["device"] == "main"


def test_publisher_default_types_apply() -> None:
    mqtt = MockMqttClient()
    ErrorPublisher(mqtt, "p").publish(CommandQueueFull("full"), device="d")
    assert json.loads(mqtt.published[0][1])["error_type"] == "command_overflow"


def test_publisher_never_raises_when_mqtt_fails(caplog: pytest.LogCaptureFixture) -> None:
    mqtt = TopicFailingMqtt(fail_on=("p/error",))
    publisher = ErrorPublisher(mqtt, "p")
    with caplog.at_level(logging.WARNING, logger="agent.errors"):
        publisher.publish(SensorError("x"), device="d")
    # The global topic failed; the device topic was still tried and sent.
    assert [t for t, *_ in mqtt.published] == ["p/d/error"]
    assert "p/error" in caplog.text
    assert "cannot publish" in caplog.text


def test_publisher_never_raises_when_everything_fails(caplog: pytest.LogCaptureFixture) -> None:
    mqtt = MockMqttClient(raise_on_publish=ConnectionError("cannot publish"))
    with caplog.at_level(logging.WARNING, logger="agent.errors"):
        ErrorPublisher(mqtt, "p").publish(SensorError("x"), device="d")
    assert mqtt.published == []
    assert len(caplog.records) == 2


def test_publisher_never_raises_when_building_fails(caplog: pytest.LogCaptureFixture) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    def broken_clock() -> datetime:
        raise RuntimeError("clock broke")

    mqtt = MockMqttClient()
    with caplog.at_level(logging.ERROR, logger="agent.errors"):
        ErrorPublisher(mqtt, "p").publish(Unprintable())
        ErrorPublisher(mqtt, "p", clock=broken_clock).publish(SensorError("x"))
    assert mqtt.published == []
    assert [r.exc_info is not None for r in caplog.records] == [True, True]


def test_publisher_survives_non_json_details() -> None:
    mqtt = MockMqttClient()
    ErrorPublisher(mqtt, "p").publish(SensorError("x"), details={"obj": object()})
    assert json.loads(mqtt.published[0][1])["details"]["obj"].startswith("<object object")


def test_publisher_refuses_a_bad_prefix_at_construction() -> None:
    with pytest.raises(ValueError, match="invalid topic prefix"):
        ErrorPublisher(MockMqttClient(), "a/+/b")
