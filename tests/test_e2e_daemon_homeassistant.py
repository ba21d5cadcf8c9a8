"""Home Assistant discovery from the daemon: ``python -m agent --config FILE`` with
``[homeassistant] enabled = true`` and two built-in ``file`` devices, run as a real
subprocess against a real mosquitto and watched by a real paho client.

What Home Assistant relies on, seen on the wire: the configs arrive retained (a client
subscribing afterwards gets them, as Home Assistant does when it starts) and pass the schema
checker; Home Assistant's birth message, ``online`` on ``homeassistant/status`` (not
retained, as Home Assistant sends it), brings the configs and then the states again; a
second run of a file with one ``[[device]]`` table removed, on the same store file, clears
that device's config with an empty retained payload, so the broker forgets it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_helpers import BOUND, AgentProcess, subscriptions
from ha_schema import check_discovery

from agent.testing import eventually
from agent.testing.mosquitto import Message, Mosquitto, Observer

pytestmark = pytest.mark.integration

BOILER = "sensor/house/boiler_temperature/config"  # each under the discovery prefix
ATTIC = "sensor/house/attic_humidity/config"
AGENT = "binary_sensor/house/connectivity/config"

# An hour between readings: a state seen after Home Assistant's birth message is the
# re-publish answering it, not a new reading.
BOILER_TABLE = """
[[device]]
type = "file"
name = "boiler"
path = "{folder}/boiler"
field = "temperature"
scale = 0.001
unit = "°C"
device_class = "temperature"
interval = 3600
"""

ATTIC_TABLE = """
[[device]]
type = "file"
name = "attic"
path = "{folder}/attic"
field = "humidity"
unit = "%"
device_class = "humidity"
interval = 3600
"""


def daemon_config(folder: Path, broker: Mosquitto, prefix: str, *tables: str) -> Path:
    """Write the daemon's ``agent.toml`` into ``folder`` with the discovery prefix
    ``prefix`` and the ``[[device]]`` tables given (and the files they read); the store
    file is the same from run to run."""
    (folder / "boiler").write_text("21500\n")
    (folder / "attic").write_text("40\n")
    path = folder / "agent.toml"
    path.write_text(
        'name = "house"\n'
        "[mqtt]\n"
        f'host = "{broker.host}"\n'
        f"port = {broker.port}\n"
        "reconnect_min_delay = 0.1\n"
        "[store]\n"
        'backend = "json"\n'
        f'path = "{folder / "state.json"}"\n'
        "[homeassistant]\n"
        "enabled = true\n"
        f'discovery_prefix = "{prefix}"\n'
        "[logging]\n"
        'format = "text"\n' + "".join(table.format(folder=folder) for table in tables)
    )
    return path


def retained(broker: Mosquitto, prefix: str, name: str) -> dict[str, Message]:
    """The discovery configs a client subscribing now gets from the broker's retained
    store, ``{topic without the prefix: message}`` (an empty payload, which clears one, is
    never kept)."""
    candidates = [f"{prefix}/{topic}" for topic in (AGENT, BOILER, ATTIC)]
    topics = subscriptions(broker, *candidates, wildcard=f"{prefix}/#")
    late = Observer(broker.host, broker.port, topics, client_id=name)
    try:
        # The broker sends the retained messages right after the SUBACK, which the Observer
        # waited for; the PUBACK of a publish of ours comes after all of them.
        late.publish("probe/done", "x")
        return {
            m.topic.removeprefix(f"{prefix}/"): m for m in late.messages(f"{prefix}/+/+/+/config")
        }
    finally:
        late.close()


# Home Assistant's birth topic stays homeassistant/status when the discovery prefix changes.
@pytest.mark.parametrize("prefix", ["homeassistant", "ha"])
def test_the_daemon_publishes_answers_and_clears_discovery(
    prefix: str,
    tmp_path: Path,
    broker: Mosquitto,
    observer: Observer,
    run_agent: Callable[[Path], AgentProcess],
) -> None:
    def configs() -> set[str]:
        return {
            m.topic.removeprefix(f"{prefix}/") for m in observer.messages(f"{prefix}/+/+/+/config")
        }

    config = daemon_config(tmp_path, broker, prefix, BOILER_TABLE, ATTIC_TABLE)
    first = run_agent(config)
    eventually(
        lambda: configs() == {AGENT, BOILER, ATTIC},
        BOUND,
        "the three configs",
        describe=first.log,
    )
    assert json.loads(observer.wait_for("house/boiler/state", timeout=BOUND).payload) == {
        "temperature": 21.5
    }
    observer.wait_for("house/attic/state", timeout=BOUND)

    # Retained with QoS 1, and what Home Assistant accepts.
    kept = retained(broker, prefix, "late-1")
    assert sorted(kept) == sorted([AGENT, ATTIC, BOILER])
    for topic, message in kept.items():
        assert message.retain and message.qos == 1, message
        payload = json.loads(message.payload)
        assert check_discovery(message.topic, payload, prefix=prefix) == [], (topic, payload)
    boiler = json.loads(kept[BOILER].payload)
    assert boiler["state_topic"] == "house/boiler/state"
    assert boiler["value_template"] == "{{ value_json.temperature }}"
    assert (boiler["device_class"], boiler["unit_of_measurement"]) == ("temperature", "°C")
    assert boiler["device"]["model"] == "agent telemetry device"

    # Home Assistant's birth message: the configs, then the states, again.
    observer.clear()
    observer.publish("homeassistant/status", "online", retain=False)
    observer.wait_for("house/boiler/state", timeout=BOUND)
    observer.wait_for("house/attic/state", timeout=BOUND)
    topics = [m.topic.removeprefix(f"{prefix}/") for m in observer.messages()]
    states = min(topics.index("house/boiler/state"), topics.index("house/attic/state"))
    assert {AGENT, BOILER, ATTIC} <= set(topics[:states]), topics
    assert first.terminate() == 0, first.log()

    # The attic's table is removed: its config is cleared at the next start.
    observer.clear()
    config = daemon_config(tmp_path, broker, prefix, BOILER_TABLE)
    second = run_agent(config)
    cleared = observer.wait_for(f"{prefix}/{ATTIC}", lambda m: m.payload == b"", timeout=BOUND)
    assert cleared.qos == 1
    observer.wait_for(f"{prefix}/{BOILER}", timeout=BOUND)
    assert sorted(retained(broker, prefix, "late-2")) == sorted([AGENT, BOILER])
    saved = (tmp_path / "state.json").read_text()
    assert BOILER in saved and ATTIC not in saved
    assert second.terminate() == 0, second.log()

    # Discovery switched off: what was announced is cleared, once.
    observer.clear()
    config.write_text(config.read_text().replace("enabled = true", "enabled = false"))
    third = run_agent(config)
    for topic in (AGENT, BOILER):
        observer.wait_for(f"{prefix}/{topic}", lambda m: m.payload == b"", timeout=BOUND)
    observer.wait_for("house/boiler/state", timeout=BOUND)
    assert retained(broker, prefix, "late-3") == {}
    assert third.terminate() == 0, third.log()
