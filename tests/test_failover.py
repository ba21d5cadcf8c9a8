"""Several brokers in ``mqtt.hosts``, tried in order: the agent moves on when one is down.

Two real mosquittos on loopback stand in for two nodes of a cluster (the RabbitMQ cluster
test in tests/test_rabbitmq.py runs the same against real cluster nodes). Runs on paho 2.x
and 1.6.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from e2e_helpers import BOUND, subscriptions, write_config

from agent.mqtt.paho import MqttClient
from agent.settings import ConfigError, MqttSettings, Settings
from agent.testing import eventually
from agent.testing.mosquitto import Mosquitto, Observer

pytestmark = pytest.mark.integration


# -- the setting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hosts", "brokers"),
    [
        ([], [("localhost", 1883)]),
        (["a"], [("a", 1883)]),
        (["a:1884", "b"], [("a", 1884), ("b", 1883)]),
        (["[::1]:1885", "[fe80::1]", "::1"], [("::1", 1885), ("fe80::1", 1883), ("::1", 1883)]),
    ],
)
def test_hosts_are_host_or_host_and_port(hosts: list[str], brokers: list[tuple[str, int]]) -> None:
    assert MqttSettings(hosts=hosts).brokers() == brokers


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('hosts = ["a:x"]', 'mqtt.hosts: expected "host", "host:port"'),
        ('hosts = ["a:70000"]', 'found "a:70000"'),
        ('hosts = [""]', 'found ""'),
        ('hosts = ["[::1"]', 'found "\\[::1"'),
        ('hosts = ["a:\u00b2"]', "expected"),
        ('host = "a"\nhosts = ["b"]', "host and hosts are both set"),
    ],
)
def test_a_bad_hosts_entry_is_a_config_error(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f"[mqtt]\n{body}\n")
    with pytest.raises(ConfigError, match=message) as info:
        Settings.load(config_file=path, env_file=None, environ={})
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_hosts_come_from_the_environment_too() -> None:
    settings = Settings.load(env_file=None, environ={"MQTT__HOSTS": "n1:1884,n2"})
    assert settings.mqtt.brokers() == [("n1", 1884), ("n2", 1883)]


# -- on the wire ---------------------------------------------------------------------------


@pytest.fixture
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    server = Mosquitto(directory=tmp_path_factory.mktemp("second"))
    server.start()
    try:
        yield server
    finally:
        server.close()


def settings_for(*brokers: Mosquitto) -> MqttSettings:
    return MqttSettings(
        hosts=[f"{b.host}:{b.port}" for b in brokers],
        topic_prefix="t",
        keepalive=5,
        reconnect_min_delay=0.05,
        reconnect_max_delay=0.5,
    )


def test_a_broker_that_is_down_is_passed_over_for_the_next(
    broker: Mosquitto, second: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    broker.stop()  # the first in the list is down from the start
    client = MqttClient(settings_for(broker, second))
    received: list[tuple[str, bytes]] = []
    client.subscribe("t/+/set")
    client.on_message(lambda topic, payload, retained: received.append((topic, payload)))
    with (
        caplog.at_level(logging.INFO, logger="agent.mqtt.paho"),
        closing(Observer(second.host, second.port, client_id="on-second")) as watcher,
    ):
        client.start()
        try:
            eventually(lambda: client.connected, timeout=BOUND)
            client.publish("t/status", "online", retain=True)
            watcher.wait_for("t/status", lambda m: m.payload == b"online", timeout=BOUND)
            watcher.publish("t/x/set", "go")
            eventually(lambda: received == [("t/x/set", b"go")], timeout=BOUND)
        finally:
            client.stop(timeout=2)
    text = caplog.text
    assert f"MQTT cannot connect to {broker.host}:{broker.port}" in text
    assert f"MQTT connected to {second.host}:{second.port}" in text


def test_when_the_broker_in_use_stops_the_client_moves_on_and_comes_back_round(
    broker: Mosquitto, second: Mosquitto
) -> None:
    client = MqttClient(settings_for(broker, second))
    received: list[tuple[str, bytes]] = []
    client.subscribe("t/+/set")
    client.on_message(lambda topic, payload, retained: received.append((topic, payload)))
    client.start()
    try:
        with closing(Observer(broker.host, broker.port, client_id="on-first")) as first:
            eventually(lambda: client.connected, timeout=BOUND)
            client.publish("t/state", "1", retain=True)
            first.wait_for("t/state", lambda m: m.payload == b"1", timeout=BOUND)
        broker.stop()
        with closing(Observer(second.host, second.port, client_id="on-second")) as other:
            eventually(lambda: client.stats()["reconnects"] == 1, timeout=BOUND)
            client.publish("t/state", "2", retain=True)
            other.wait_for("t/state", lambda m: m.payload == b"2", timeout=BOUND)
            other.publish("t/x/set", "on second")  # subscriptions were restored there
            eventually(lambda: ("t/x/set", b"on second") in received, timeout=BOUND)
        # Round and round: with the second gone too, the first (back again) takes over.
        broker.start()
        second.stop()
        with closing(Observer(broker.host, broker.port, client_id="on-first-again")) as back:
            eventually(lambda: client.stats()["reconnects"] == 2, timeout=BOUND)
            client.publish("t/state", "3", retain=True)
            back.wait_for("t/state", lambda m: m.payload == b"3", timeout=BOUND)
    finally:
        client.stop(timeout=2)


def test_the_agent_moves_to_the_next_broker_and_carries_on(
    broker: Mosquitto, second: Mosquitto, tmp_path: Path, run_agent
) -> None:
    hosts = f'hosts = ["{broker.host}:{broker.port}", "{second.host}:{second.port}"]\n'
    config = write_config(tmp_path, broker.port, keepalive=5)
    config.write_text(config.read_text().replace(f"port = {broker.port}\n", "", 1))
    config.write_text(config.read_text().replace('host = "127.0.0.1"\n', hosts, 1))
    agent = run_agent(config)

    def heartbeat(m: object) -> bool:
        payload = m.payload  # type: ignore[attr-defined]
        return payload.startswith(b"{") and json.loads(payload)["status"] == "online"

    topics = subscriptions(broker, "gas2mqtt/status")  # retained, even arriving late
    with closing(Observer(broker.host, broker.port, topics, client_id="obs-first")) as first:
        first.wait_for("gas2mqtt/status", heartbeat, timeout=BOUND)
    broker.stop()
    with closing(Observer(second.host, second.port, client_id="obs-second")) as other:
        # heartbeat, availability and the latest states on the other broker
        other.wait_for("gas2mqtt/status", heartbeat, timeout=BOUND)
        other.wait_for(
            "gas2mqtt/counter/availability", lambda m: m.payload == b"online", timeout=BOUND
        )
        other.wait_for("gas2mqtt/blind/state", timeout=BOUND)
        other.publish("gas2mqtt/valve/set", "open")  # commands are served there
        other.wait_for(
            "gas2mqtt/valve/state",
            lambda m: json.loads(m.payload) == {"state": "open"},
            timeout=BOUND,
        )
    assert agent.terminate() == 0, agent.log()
    assert "Traceback" not in agent.log()


class ClosesAtSubscribe:
    """A broker that accepts the connection (CONNACK 0) and closes it at the SUBSCRIBE, as
    a RabbitMQ node does when the session queue lives on a node that is down."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="closes-at-subscribe")
        self._thread.start()

    def _serve(self) -> None:
        self._server.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2.0)
                self.connections += 1
                with contextlib.suppress(OSError):
                    conn.recv(65536)  # CONNECT
                    conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
                    conn.recv(65536)  # SUBSCRIBE (and whatever came with it): close

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._server.close()


def test_a_broker_that_closes_at_every_subscribe_gets_the_backoff_and_few_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = ClosesAtSubscribe()
    settings = MqttSettings(
        host="127.0.0.1",
        port=broker.port,
        topic_prefix="t",
        reconnect_min_delay=0.05,
        reconnect_max_delay=0.4,
    )
    client = MqttClient(settings)
    client.subscribe("t/+/set")
    try:
        with caplog.at_level(logging.DEBUG, logger="agent.mqtt.paho"):
            client.start()
            time.sleep(3.0)  # what is measured: attempts in 3 s
    finally:
        client.stop(timeout=2)
        broker.close()
    # With paho's backoff restarting at every CONNACK it was one attempt per 0.05 s (60);
    # as failed attempts they back off to 0.4 s: 0.05 + 0.1 + 0.2 + 0.4 * n.
    assert 4 <= broker.connections <= 12, broker.connections
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "closed it before confirming the subscriptions" in warnings[0]
    assert not any("MQTT connected" in r.getMessage() for r in caplog.records)
