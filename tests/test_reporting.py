"""Error reports at a bounded rate: Throttle and Reporter on a fake clock, no threads."""

from __future__ import annotations

import json
import logging

import pytest

from agent.errors import CommandQueueFull, ErrorPublisher, InvalidPayload
from agent.mqtt.fakes import MockMqttClient
from agent.runtime.reporting import Reporter, Throttle
from agent.testing import FakeClock

log = logging.getLogger("test.reporting")


def test_throttle_admits_the_first_then_one_per_interval_and_counts_the_rest() -> None:
    clock = FakeClock()
    throttle: Throttle[str] = Throttle(clock, 1.0)
    assert throttle.admit("a") == 1
    assert [throttle.admit("a") for _ in range(5)] == [None] * 5
    assert throttle.admit("b") == 1  # keys are independent
    clock.advance(0.5)
    assert throttle.due() == []  # not yet
    clock.advance(0.5)
    assert throttle.due() == [("a", 5)]  # "b" had nothing held back
    assert throttle.admit("a") is None  # the flush restarted a's interval
    clock.advance(1.0)
    assert throttle.admit("a") == 2  # due but not flushed yet: folded into this report
    assert throttle.due() == []


def test_throttle_forgets_idle_keys_and_reports_everything_on_demand() -> None:
    clock = FakeClock()
    throttle: Throttle[int] = Throttle(clock, 1.0)
    for key in range(100):
        throttle.admit(key)
    throttle.admit(7)
    assert throttle.due(everything=True) == [(7, 1)]
    clock.advance(1.0)
    assert throttle.due() == []
    assert throttle._last == {}  # the table shrinks back once the keys are idle


@pytest.mark.parametrize("interval", [0, -1])
def test_throttle_rejects_a_non_positive_interval(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        Throttle(FakeClock(), interval)


def _reporter() -> tuple[Reporter, MockMqttClient, FakeClock]:
    mqtt, clock = MockMqttClient(), FakeClock()
    return Reporter(ErrorPublisher(mqtt, "p"), clock), mqtt, clock


def _errors(mqtt: MockMqttClient, topic: str = "p/error") -> list[dict]:
    return [json.loads(payload) for payload, _r, _q in mqtt.get_messages_for(topic)]


def test_a_flood_becomes_one_report_per_second_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter, mqtt, clock = _reporter()
    caplog.set_level(logging.DEBUG, logger="test.reporting")
    for i in range(5000):
        reporter.report(
            CommandQueueFull("queue full"),
            device="valve",
            details={"topic": f"p/valve/set#{i}"},
            log=log,
            message="valve overflow",
            count_key="dropped",
        )
    assert [e["details"] for e in _errors(mqtt)] == [{"topic": "p/valve/set#0", "dropped": 1}]
    assert len(_errors(mqtt, "p/valve/error")) == 1  # the device topic gets the same
    clock.advance(1.0)
    reporter.flush()
    reports = _errors(mqtt)
    assert len(reports) == 2
    assert reports[1]["details"] == {"topic": "p/valve/set#4999", "dropped": 4999}
    assert reports[1]["error_type"] == "command_overflow"
    lines = [r.getMessage() for r in caplog.records if r.name == "test.reporting"]
    assert lines == ["valve overflow", "valve overflow (4999 times since the last report)"]
    reporter.flush()
    assert len(_errors(mqtt)) == 2  # nothing more was held back


def test_keys_are_device_and_error_type(caplog: pytest.LogCaptureFixture) -> None:
    reporter, mqtt, _clock = _reporter()
    for device, error in [
        ("a", InvalidPayload("x")),
        ("a", CommandQueueFull("y")),
        ("b", InvalidPayload("x")),
        (None, LookupError("no such device")),
        ("a", InvalidPayload("again")),  # held back
    ]:
        reporter.report(error, device=device, log=log, message="m")
    assert [(e["device"], e["error_type"]) for e in _errors(mqtt)] == [
        ("a", "invalid_payload"),
        ("a", "command_overflow"),
        ("b", "invalid_payload"),
        (None, "error"),
    ]


def test_held_back_reports_go_out_at_shutdown_and_occurrences_only_when_folded() -> None:
    reporter, mqtt, _clock = _reporter()
    for message in ("first", "second", "third"):
        reporter.report(ValueError(message), device="d", log=log, message=message)
    reporter.flush(everything=True)
    reports = _errors(mqtt)
    assert [r["message"] for r in reports] == ["first", "third"]
    assert reports[0]["details"] == {}
    assert reports[1]["details"] == {"occurrences": 2}


def test_tracebacks_at_debug_for_routine_failures_inline_for_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter, _mqtt, _clock = _reporter()
    caplog.set_level(logging.DEBUG, logger="test.reporting")
    try:
        raise ValueError("boom")
    except ValueError as exc:
        reporter.report(exc, device="d", log=log, message="routine", traceback=True)
        reporter.report(
            KeyError("k"), device="e", log=log, message="fatal", level=logging.ERROR,
            traceback=True,
        )  # fmt: skip
    records = [r for r in caplog.records if r.name == "test.reporting"]
    assert [(r.levelno, r.exc_info is not None) for r in records] == [
        (logging.WARNING, False),
        (logging.DEBUG, True),
        (logging.ERROR, True),
    ]
