"""A network cut without a broker restart: a TCP proxy between agent and broker stops
forwarding (tests/tcp_proxy.py), so neither side sees the link close; only keepalives tell.

The agent must notice within 1.5 x keepalive (paho alone takes 2 x keepalive), the broker
must publish the last will, both must recover when traffic flows again, and the latest state
of every topic published during the cut must reach the broker. Runs on paho 2.x and 1.6.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from e2e_helpers import BOUND, subscriptions, write_config
from tcp_proxy import TcpProxy

from agent.mqtt.paho import MqttClient
from agent.mqtt.port import WillConfig
from agent.settings import MqttSettings
from agent.testing import eventually
from agent.testing.mosquitto import Mosquitto, Observer

pytestmark = pytest.mark.integration

KEEPALIVE = 5  # the smallest the settings allow


@pytest.fixture
def proxy(broker: Mosquitto) -> Iterator[TcpProxy]:
    forwarder = TcpProxy(broker.port)
    try:
        yield forwarder
    finally:
        forwarder.close()


def seconds_until(predicate: object, timeout: float, describe: object = None) -> float:
    """How long until ``predicate()`` holds (fails after ``timeout``, with ``describe()``)."""
    start = time.monotonic()
    eventually(predicate, timeout=timeout, describe=describe)  # type: ignore[arg-type]
    return time.monotonic() - start


def test_a_cut_is_noticed_within_a_keepalive_and_the_latest_states_arrive_after_it(
    broker: Mosquitto, observer: Observer, proxy: TcpProxy
) -> None:
    settings = MqttSettings(
        host=proxy.host,
        port=proxy.port,
        topic_prefix="t",
        keepalive=KEEPALIVE,
        reconnect_min_delay=0.05,
        reconnect_max_delay=0.5,
    )
    client = MqttClient(settings, WillConfig("t/status", "died"), retained_topics=3)
    client.start()
    try:
        eventually(lambda: client.connected, timeout=BOUND)
        client.publish("t/status", "online", retain=True)
        observer.wait_for("t/status", lambda m: m.payload == b"online", timeout=BOUND)

        # A healthy link with nothing to say stays up: the watch asks the broker for a
        # PINGRESP after keepalive / 2 of silence instead of dropping the link.
        time.sleep(KEEPALIVE * 1.3)
        assert client.connected and client.stats()["reconnects"] == 0

        proxy.cut()
        client.publish("t/a/state", "1", retain=True)  # into the dead link, unacknowledged
        noticed = seconds_until(lambda: not client.connected, timeout=KEEPALIVE * 2)
        print(f"cut noticed after {noticed:.2f} s (keepalive {KEEPALIVE} s)")
        assert noticed <= KEEPALIVE * 1.5, f"noticed the cut after {noticed:.1f} s"
        for value in ("2", "3"):  # while away: into the outbox, latest per topic
            client.publish("t/a/state", value, retain=True)
        client.publish("t/b/state", "x", retain=True)

        # The broker gives up on its side (mosquitto 2.0: 1.5 to 2.5 x keepalive after the
        # last packet, its keepalive check is coarse; RabbitMQ 3.10: 3 x) and publishes the
        # will.
        will_s = KEEPALIVE * (4 if broker.kind == "rabbitmq" else 3)
        observer.wait_for("t/status", lambda m: m.payload == b"died", timeout=will_s)

        proxy.restore()
        eventually(lambda: client.connected, timeout=BOUND, what="reconnected after the cut")
        # paho re-sends the unacknowledged "1" after the reconnect, and "2"/"3" wait for
        # its PUBACK (never overtaking it): so "1" may be seen first, "3" must be last.
        topics = subscriptions(broker, "t/a/state", "t/b/state")
        with closing(Observer(broker.host, broker.port, topics, client_id="after-cut")) as late:
            late.wait_for("t/a/state", lambda m: m.payload == b"3", timeout=BOUND)
            late.wait_for("t/b/state", lambda m: m.payload == b"x", timeout=BOUND)
            late.publish("t/probe", "x")
            late.wait_for("t/probe", timeout=BOUND)  # the broker handled all before this
            assert late.messages("t/a/state")[-1].payload == b"3"
        with closing(Observer(broker.host, broker.port, topics, client_id="retained-now")) as now:
            now.wait_for("t/b/state", timeout=BOUND)  # retained, delivered on subscribing
            now.publish("t/probe", "y")
            now.wait_for("t/probe", lambda m: m.payload == b"y", timeout=BOUND)
            # what the broker retains for the topic: the latest, and only that
            assert [m.payload for m in now.messages("t/a/state")] == [b"3"]
        assert client.stats()["reconnects"] == 1
    finally:
        client.stop(timeout=2)


def is_heartbeat(payload: bytes) -> bool:
    return payload.startswith(b"{") and json.loads(payload)["status"] == "online"


def test_the_agent_notices_a_cut_network_and_both_sides_recover(
    broker: Mosquitto, observer: Observer, proxy: TcpProxy, tmp_path: Path, run_agent
) -> None:
    agent = run_agent(write_config(tmp_path, proxy.port, keepalive=KEEPALIVE))
    observer.wait_for("gas2mqtt/status", lambda m: is_heartbeat(m.payload), timeout=BOUND)
    # Established: its subscriptions acknowledged (a cut before that is a failed attempt).
    eventually(lambda: "MQTT connected" in agent.log(), timeout=BOUND, describe=agent.log)
    observer.clear()

    proxy.cut()
    noticed = seconds_until(
        lambda: "MQTT lost connection" in agent.log(), KEEPALIVE * 2, describe=agent.log
    )
    assert noticed <= KEEPALIVE * 1.5, f"the agent noticed the cut after {noticed:.1f} s"
    observer.wait_for("gas2mqtt/status", lambda m: m.payload == b"offline", timeout=KEEPALIVE * 3)

    observer.clear()  # from here on, only what the agent sends on its new connection

    proxy.restore()
    # The agent reconnects by itself: heartbeat, availability and fresh states come back.
    observer.wait_for("gas2mqtt/status", lambda m: is_heartbeat(m.payload), timeout=BOUND)
    observer.wait_for(
        "gas2mqtt/counter/availability", lambda m: m.payload == b"online", timeout=BOUND
    )
    observer.wait_for("gas2mqtt/counter/state", timeout=BOUND)
    assert agent.terminate() == 0, agent.log()
    assert "Traceback" not in agent.log()
