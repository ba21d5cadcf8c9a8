"""Home Assistant discovery on a real broker, with ``python -m agent`` run as a user would.

An App with discovery (its lifespan) and a JSON store: the configs arrive retained — a client
subscribing afterwards gets them, as Home Assistant does when it starts — and each passes the
schema checker; Home Assistant's ``online`` on ``homeassistant/status`` brings the configs
and then the states again; a second run without one of the devices, on the same store file,
clears that device's config with an empty retained payload, so the broker forgets it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_helpers import BOUND, subscriptions, write_app
from ha_schema import check_discovery

from agent.testing import eventually
from agent.testing.mosquitto import Message, Mosquitto, Observer

pytestmark = pytest.mark.integration

APP = """
import pathlib

import agent
from agent.daemon.homeassistant import HomeAssistantSettings, discovery_lifespan

STORE = agent.JsonFileStore(pathlib.Path(__file__).parent / "state" / "state.json")
HA = HomeAssistantSettings(enabled=True)
app = agent.App(
    "house",
    heartbeat_interval=3600,
    store=STORE,
    lifespan=discovery_lifespan(HA, store=STORE, delay=(0.1, 0.3)),
)


@app.telemetry("hall", interval=3600, entities=[
    agent.Entity("t", device_class="temperature", unit="°C", state_class="measurement"),
])
def hall() -> dict:
    return {"t": 21.5}


@app.command("valve", entities=[agent.Entity("on", component="switch")])
def valve(payload: str) -> dict:
    return {"on": payload == "ON"}
"""

ATTIC = """

@app.telemetry("attic", interval=3600, entities=[
    agent.Entity("humidity", device_class="humidity", unit="%", state_class="measurement"),
])
def attic() -> dict:
    return {"humidity": 40}
"""

HALL = "homeassistant/sensor/house/hall_t/config"
VALVE = "homeassistant/switch/house/valve_on/config"
ATTIC_CONFIG = "homeassistant/sensor/house/attic_humidity/config"
AGENT = "homeassistant/binary_sensor/house/connectivity/config"
ALL = sorted([AGENT, ATTIC_CONFIG, HALL, VALVE])


def retained(broker: Mosquitto, name: str) -> dict[str, Message]:
    """What a client subscribing now gets from the broker's retained store: ``{topic:
    message}`` of the discovery configs (a fresh subscription, so retained flags are set)."""
    topics = subscriptions(broker, *ALL, wildcard="homeassistant/#")
    late = Observer(broker.host, broker.port, topics, client_id=name)
    try:
        # The broker sends the retained messages right after the SUBACK: once the connectivity
        # config (which is always there) has come, give the rest the same batch to arrive.
        late.wait_for(AGENT, timeout=BOUND)
        late.publish("probe/done", "x")  # a round trip behind the retained batch
        return {m.topic: m for m in late.messages("homeassistant/+/+/+/config")}
    finally:
        late.close()


def test_discovery_on_a_real_broker(
    broker: Mosquitto, observer: Observer, tmp_path: Path, run_agent
) -> None:
    config = write_app(tmp_path, broker.port, APP + ATTIC)
    first = run_agent(config)
    eventually(
        lambda: sorted({m.topic for m in observer.messages("homeassistant/+/+/+/config")}) == ALL,
        BOUND,
        "the four configs",
        describe=first.log,
    )
    observer.wait_for("house/hall/state", timeout=BOUND)

    # Retained, with QoS 1, and valid for Home Assistant.
    kept = retained(broker, "late-1")
    assert sorted(kept) == ALL
    for topic, message in kept.items():
        assert message.retain and message.qos == 1, message
        payload = json.loads(message.payload)
        assert check_discovery(topic, payload) == [], (topic, payload)
    hall = json.loads(kept[HALL].payload)
    assert hall["state_topic"] == "house/hall/state"
    assert hall["availability"][1] == {"topic": "house/hall/availability"}
    assert json.loads(kept[VALVE].payload)["command_topic"] == "house/valve/set"

    # Home Assistant's birth message: the configs, then the states, again.
    observer.clear()
    observer.publish("homeassistant/status", "online")
    observer.wait_for("house/hall/state", timeout=BOUND)
    topics = [m.topic for m in observer.messages() if m.topic != "homeassistant/status"]
    assert set(ALL) <= set(topics), topics
    assert max(topics.index(t) for t in ALL) < topics.index("house/hall/state"), topics
    assert "house/status" in topics and "house/hall/availability" in topics
    assert first.terminate() == 0, first.log()

    # The attic is removed: its config is cleared at the next start, the others stay.
    observer.clear()
    config = write_app(tmp_path, broker.port, APP)
    second = run_agent(config)
    cleared = observer.wait_for(ATTIC_CONFIG, lambda m: m.payload == b"", timeout=BOUND)
    assert cleared.qos == 1
    observer.wait_for(HALL, timeout=BOUND)
    assert sorted(retained(broker, "late-2")) == sorted([AGENT, HALL, VALVE])
    saved = json.loads((tmp_path / "state" / "state.json").read_text())
    assert ATTIC_CONFIG not in json.dumps(saved)
    assert second.terminate() == 0, second.log()
