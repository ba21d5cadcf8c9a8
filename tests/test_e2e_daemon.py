"""End to end: the daemon, ``agent --config FILE``, as systemd runs it.

A real subprocess against a real mosquitto, watched by a real paho client: the shipped
``etc/agent.toml`` as it is; built-in devices and two user modules in one process (one
connection, one heartbeat, one store); a name used by two sources; ``agent check``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import BOUND, AgentProcess, agent_env, connected_client_ids
from ha_schema import check_discovery

from agent.testing.mosquitto import Mosquitto, Observer

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parent.parent / "etc" / "agent.toml"


def agent_command(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=cwd,
        env={**agent_env(), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def broker_env(broker: Mosquitto, folder: Path) -> dict[str, str]:
    """The shipped file as it is, pointed at the test's broker and a private state file
    through the environment, as a user would with ``systemctl edit``."""
    return {
        "AGENT_MQTT__HOST": broker.host,
        "AGENT_MQTT__PORT": str(broker.port),
        "AGENT_MQTT__RECONNECT_MIN_DELAY": "0.1",
        "AGENT_STORE__PATH": str(folder / "state.db"),
        "AGENT_LOGGING__FORMAT": "text",
    }


def state_of(observer: Observer, topic: str) -> dict[str, object]:
    message = observer.wait_for(topic, timeout=BOUND)
    assert message is not None, f"nothing on {topic}"
    value = json.loads(message.payload)
    assert isinstance(value, dict)
    return value


def test_the_shipped_config_checks_and_runs(
    tmp_path: Path, broker: Mosquitto, observer: Observer
) -> None:
    env = broker_env(broker, tmp_path)
    checked = agent_command("check", "--config", str(SHIPPED), env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip().splitlines() == [
        f"{SHIPPED}: OK; 1 device(s) enabled (system); store sqlite; Home Assistant discovery "
        f"off; broker {broker.host}:{broker.port}"
    ]
    config = tmp_path / "agent.toml"
    shutil.copy(SHIPPED, config)
    agent = AgentProcess(config, env=env)
    try:
        state = state_of(observer, "agent/system/state")
        assert "uptime_s" in state and "load_1" in state, state
        assert observer.wait_for("agent/system/availability", timeout=BOUND) is not None
        heartbeat = state_of(observer, "agent/status")
        assert heartbeat["status"] == "online", heartbeat
        assert agent.terminate() == 0, agent.log()
    finally:
        agent.kill()
    last = observer.messages("agent/status")[-1]
    assert last.payload == b"offline"


def test_home_assistant_discovery_for_the_shipped_system_device(
    tmp_path: Path, broker: Mosquitto, observer: Observer
) -> None:
    env = {**broker_env(broker, tmp_path), "AGENT_HOMEASSISTANT__ENABLED": "true"}
    config = tmp_path / "agent.toml"
    shutil.copy(SHIPPED, config)
    agent = AgentProcess(config, env=env)
    try:
        state = state_of(observer, "agent/system/state")
        # Every field of the state has its entity, and the agent its connectivity sensor.
        assert observer.wait_for(
            "homeassistant/binary_sensor/agent/connectivity/config", timeout=BOUND
        )
        topics = [m.topic for m in observer.messages()]
        for field in state:
            assert any(t.endswith(f"/agent/system_{field}/config") for t in topics), field
        configs = [m for m in observer.messages() if m.topic.startswith("homeassistant/")]
        for message in configs:
            payload = json.loads(message.payload)
            assert check_discovery(message.topic, payload) == [], (message.topic, payload)
        uptime = next(
            json.loads(m.payload) for m in configs if m.topic.endswith("/system_uptime_s/config")
        )
        assert uptime["state_topic"] == "agent/system/state"
        assert uptime["value_template"] == "{{ value_json.uptime_s }}"
        assert uptime["device_class"] == "duration" and uptime["unit_of_measurement"] == "s"
        assert agent.terminate() == 0, agent.log()
    finally:
        agent.kill()


MODULE_A = """
import agent

router = agent.Router("garden", prefix="garden-")

@router.telemetry("soil", interval=0.5)
def soil() -> dict:
    return {"moisture": 41}
"""

MODULE_B = """
import agent

lights = agent.Router("lights")

@lights.command("lamp")
def lamp(payload: str) -> dict:
    return {"state": payload}
"""


def daemon_config(folder: Path, broker: Mosquitto, body: str) -> Path:
    path = folder / "agent.toml"
    path.write_text(
        'name = "house"\n'
        f"{body}\n"
        "[mqtt]\n"
        f'host = "{broker.host}"\n'
        f"port = {broker.port}\n"
        "reconnect_min_delay = 0.1\n"
        "[store]\n"
        'backend = "json"\n'
        f'path = "{folder / "state.json"}"\n'
        "[logging]\n"
        'format = "text"\n'
    )
    return path


def test_builtins_and_two_modules_share_one_process(
    tmp_path: Path, broker: Mosquitto, observer: Observer
) -> None:
    (tmp_path / "garden.py").write_text(MODULE_A)
    (tmp_path / "lights.py").write_text(MODULE_B)
    reading = tmp_path / "reading"
    reading.write_text("21500\n")
    config = daemon_config(
        tmp_path,
        broker,
        'modules = ["garden", "lights:lights"]\n'
        "[[device]]\n"
        'type = "file"\n'
        'name = "boiler"\n'
        f'path = "{reading}"\n'
        'field = "temperature"\n'
        "scale = 0.001\n"
        "interval = 0.5\n",
    )
    agent = AgentProcess(config)
    try:
        assert state_of(observer, "house/boiler/state") == {"temperature": 21.5}
        assert state_of(observer, "house/garden-soil/state") == {"moisture": 41}
        observer.publish("house/lamp/set", "ON")
        assert state_of(observer, "house/lamp/state") == {"state": "ON"}
        assert agent.terminate() == 0, agent.log()
    finally:
        agent.kill()
    assert observer.messages("house/status")[-1].payload == b"offline"
    # One process, one connection: the broker saw one client besides the observer.
    clients = [c for c in connected_client_ids(broker) if c != "test-observer"]
    assert len(clients) == 1, clients


def test_a_name_used_by_a_module_and_a_builtin_stops_with_both_sources(tmp_path: Path) -> None:
    (tmp_path / "garden.py").write_text(MODULE_A)
    config = tmp_path / "agent.toml"
    config.write_text('modules = ["garden"]\n[[device]]\ntype = "system"\nname = "garden-soil"\n')
    for args in (["--config", str(config)], ["check", "--config", str(config)]):
        done = agent_command(*args, cwd=tmp_path)
        assert done.returncode == 78, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert f"{config}: modules[1]:" in lines[0], lines[0]
        assert "garden-soil" in lines[0] and "built-in devices" in lines[0], lines[0]
        assert "router 'garden'" in lines[0], lines[0]


def test_check_lists_every_problem_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'name = "a/b"\n'
        "[mqtt]\n"
        "prot = 1883\n"
        "[[device]]\n"
        'type = "sytem"\n'
        "[[device]]\n"
        'type = "system"\n'
        "interval = 0\n"
    )
    done = agent_command("check", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 78, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert [line.split(": ")[3] for line in lines] == [
        "mqtt.prot",
        "name",
        "device[1].type",
        "device[2].interval",
    ], lines
    assert 'did you mean "mqtt.port"?' in lines[0]
    assert 'did you mean "system"?' in lines[2]
