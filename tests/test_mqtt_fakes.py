"""The MQTT test doubles: what they record, and that they satisfy the ports."""

from __future__ import annotations

import logging
import threading

import pytest

from agent.mqtt.fakes import MockMqttClient, NullMqttClient
from agent.mqtt.port import (
    MqttConnectionEvents,
    MqttDiagnostics,
    MqttLifecycle,
    MqttMessageHandler,
    MqttPort,
    WillConfig,
)


def test_will_config_defaults_match_the_wire_contract() -> None:
    will = WillConfig("app/status")
    assert (will.topic, will.payload, will.qos, will.retain) == ("app/status", "offline", 1, True)


@pytest.mark.parametrize("cls", [MockMqttClient, NullMqttClient])
def test_fakes_implement_every_port_of_the_real_client(cls: type) -> None:
    fake = cls()
    for port in (MqttPort, MqttMessageHandler, MqttConnectionEvents, MqttLifecycle,
                 MqttDiagnostics):  # fmt: skip
        assert isinstance(fake, port), port
    assert fake.network_problem() is None
    assert set(fake.stats()) == {"connected", "reconnects", "queued", "dropped"}


def test_the_mock_connects_at_start_and_the_null_client_never() -> None:
    mock, null = MockMqttClient(), NullMqttClient()
    connects: list[str] = []
    mock.on_connect(lambda: connects.append("mock"))
    null.on_connect(lambda: connects.append("null"))
    mock.start()
    null.start()
    mock.stop()
    null.stop()
    assert connects == ["mock"]
    assert mock.connected and not null.connected


def test_mock_records_publishes_with_decoded_payloads() -> None:
    mock = MockMqttClient()
    mock.publish("a/state", '{"x": 1}', retain=True)
    mock.publish("a/error", b"boom", qos=0)
    assert mock.published == [("a/state", '{"x": 1}', True, 1), ("a/error", "boom", False, 0)]
    assert mock.get_messages_for("a/state") == [('{"x": 1}', True, 1)]
    assert mock.get_messages_for("nothing") == []


def test_mock_records_subscriptions_in_order() -> None:
    mock = MockMqttClient()
    mock.subscribe("a/set")
    mock.subscribe("b/set", qos=0)
    assert mock.subscriptions == ["a/set", "b/set"]


def test_mock_raise_on_publish_raises_and_records_nothing() -> None:
    mock = MockMqttClient(raise_on_publish=ConnectionError("down"))
    with pytest.raises(ConnectionError, match="down"):
        mock.publish("a/state", "x")
    assert mock.published == []


def test_mock_deliver_calls_every_callback_with_bytes() -> None:
    mock = MockMqttClient()
    seen: list[tuple[str, bytes, bool]] = []
    mock.on_message(lambda t, p, r: seen.append((t, p, r)))
    mock.on_message(lambda t, p, r: seen.append((t.upper(), p, r)))
    mock.deliver("a/set", "on")
    mock.deliver("b/set", b"\x00", retain=True)
    assert seen == [
        ("a/set", b"on", False),
        ("A/SET", b"on", False),
        ("b/set", b"\x00", True),
        ("B/SET", b"\x00", True),
    ]


def test_mock_callback_may_publish_back_without_deadlock() -> None:
    mock = MockMqttClient()
    mock.on_message(lambda t, p, r: mock.publish(t.replace("/set", "/state"), p))
    mock.deliver("a/set", "on")
    assert mock.published == [("a/state", "on", False, 1)]


def test_mock_simulate_connect_and_connection_state() -> None:
    mock = MockMqttClient()
    calls: list[str] = []
    mock.on_connect(lambda: calls.append("connected"))
    mock.simulate_connect()
    mock.simulate_connect()
    assert calls == ["connected", "connected"]
    assert mock.connected is True
    assert mock.flush(0.0) is True


def test_mock_reset_clears_everything() -> None:
    mock = MockMqttClient(raise_on_publish=RuntimeError("x"))
    mock.subscribe("a/set")
    calls: list[object] = []
    mock.on_message(lambda *a: calls.append(a))
    mock.on_connect(lambda: calls.append("c"))
    mock.reset()
    mock.publish("a/state", "ok")  # no longer raises
    mock.deliver("a/set", "on")
    mock.simulate_connect()
    assert mock.published == [("a/state", "ok", False, 1)]
    assert mock.subscriptions == []
    assert calls == []


def test_mock_is_thread_safe_under_concurrent_publishes() -> None:
    mock = MockMqttClient()

    def worker(n: int) -> None:
        for i in range(500):
            mock.publish(f"t/{n}", str(i))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(mock.published) == 2000
    assert [p for p, _, _ in mock.get_messages_for("t/3")] == [str(i) for i in range(500)]


def test_null_client_discards_and_logs_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    null = NullMqttClient()
    caplog.set_level(logging.DEBUG, logger="agent.mqtt.fakes")
    called: list[object] = []
    null.on_message(lambda *a: called.append(a))
    null.on_connect(lambda: called.append("c"))
    null.publish("a/state", "x", retain=True)
    null.subscribe("a/set")
    assert called == []
    assert null.connected is False
    assert null.flush(0.0) is True
    records = [r for r in caplog.records if r.name == "agent.mqtt.fakes"]
    assert len(records) == 4
    assert all(r.levelno == logging.DEBUG for r in records)
    assert any("a/state" in r.getMessage() for r in records)
