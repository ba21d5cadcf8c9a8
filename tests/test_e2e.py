"""End to end: the ``agent`` command in a real subprocess, a real mosquitto, a real paho observer.

Each test starts its own broker (tests/conftest.py: mosquitto, then RabbitMQ) and runs the
quick example (examples/quickstart.py) through ``python -m agent --config FILE``, exactly as
a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from e2e_helpers import BOUND, EXAMPLES, agent_env, subscriptions, write_config

from agent.testing.mosquitto import Message, Mosquitto, Observer

pytestmark = pytest.mark.integration


def payload_json(message: Message) -> object:
    return json.loads(message.payload)


def is_heartbeat(message: Message) -> bool:
    return message.payload.startswith(b"{") and payload_json(message)["status"] == "online"


def test_quick_example_end_to_end(
    broker: Mosquitto, observer: Observer, tmp_path: Path, run_agent
) -> None:
    agent = run_agent(write_config(tmp_path, broker.port))

    observer.wait_for("gas2mqtt/status", is_heartbeat, timeout=BOUND)
    for device in ("counter", "valve", "blind"):
        observer.wait_for(
            f"gas2mqtt/{device}/availability", lambda m: m.payload == b"online", timeout=BOUND
        )
    state = observer.wait_for("gas2mqtt/counter/state", timeout=BOUND)
    assert set(payload_json(state)) == {"impulses", "volume_m3"}
    # a second reading arrives after poll_interval
    observer.wait_for("gas2mqtt/counter/state", lambda m: m is not state, timeout=BOUND)
    # a subscriber arriving now gets heartbeat, availability and state as retained QoS 1
    retained = (
        "gas2mqtt/status",
        "gas2mqtt/counter/availability",
        "gas2mqtt/blind/availability",
        "gas2mqtt/counter/state",
        "gas2mqtt/blind/state",
    )
    late_topics = subscriptions(broker, *retained)
    with closing(Observer(broker.host, broker.port, late_topics, client_id="late")) as late:
        for topic in retained:
            message = late.wait_for(topic, timeout=BOUND)
            assert message.retain and message.qos == 1, message

    # command round trip, and a sub-topic of a @app.device
    observer.publish("gas2mqtt/valve/set", "open")
    observer.wait_for(
        "gas2mqtt/valve/state", lambda m: payload_json(m) == {"state": "open"}, timeout=BOUND
    )
    observer.publish("gas2mqtt/blind/position/set", "42")
    observer.wait_for(
        "gas2mqtt/blind/state", lambda m: payload_json(m) == {"position": 42}, timeout=BOUND
    )

    # each kind of bad input gives an error payload and the device keeps serving
    observer.publish("gas2mqtt/valve/set", b"\xff\xfe")
    observer.publish("gas2mqtt/valve/set", b"x" * (256 * 1024 + 1))
    observer.publish("gas2mqtt/valve/set", "sideways")
    observer.publish("gas2mqtt/blind/position/set", "400")  # rejected by the handler
    observer.publish("gas2mqtt/blind/position/set", "abc")  # int() raises inside it

    def error_of(kind: str, device: str):  # type: ignore[no-untyped-def]
        def match(m: Message) -> bool:
            body = payload_json(m)
            return body["error_type"] == kind and body["device"] == device

        return match

    for kind in ("invalid_payload", "payload_too_large", "error"):
        err = observer.wait_for("gas2mqtt/valve/error", error_of(kind, "valve"), timeout=BOUND)
        assert err.qos == 1
        body = payload_json(err)
        assert set(body) == {"error_type", "message", "device", "timestamp", "details"}
        assert body["timestamp"].endswith("+00:00")
    blind_errors = [
        payload_json(m)["message"]
        for m in (
            observer.wait_for("gas2mqtt/blind/error", lambda m, t=t: t in m.payload, timeout=BOUND)
            for t in (b"0-100", b"invalid literal")
        )
    ]
    assert "position must be 0-100, got 400" in blind_errors[0]
    observer.publish("gas2mqtt/valve/set", "closed")
    observer.wait_for(
        "gas2mqtt/valve/state", lambda m: payload_json(m) == {"state": "closed"}, timeout=BOUND
    )
    late_topics = subscriptions(broker, "gas2mqtt/valve/state", "gas2mqtt/valve/error")
    with closing(Observer(broker.host, broker.port, late_topics, client_id="late-2")) as late:
        late.wait_for("gas2mqtt/valve/state", timeout=BOUND)  # retained ones arrived ...
        assert not late.messages("gas2mqtt/+/error")  # ... errors are events, not retained
        assert not late.messages("gas2mqtt/error")

    # graceful shutdown: offline for every device and the app, cleanup code ran, exit 0
    assert agent.terminate() == 0, agent.log()
    for device in ("counter", "valve", "blind"):
        observer.wait_for(
            f"gas2mqtt/{device}/availability", lambda m: m.payload == b"offline", timeout=BOUND
        )
    observer.wait_for("gas2mqtt/status", lambda m: m.payload == b"offline", timeout=BOUND)
    log = agent.log()
    assert "blind parked at 42% before exit" in log
    assert "Traceback" not in log


def test_last_will_after_kill_9(
    broker: Mosquitto, observer: Observer, tmp_path: Path, run_agent
) -> None:
    agent = run_agent(write_config(tmp_path, broker.port, keepalive=5))
    observer.wait_for("gas2mqtt/status", is_heartbeat, timeout=BOUND)
    observer.clear()
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(BOUND)
    # the broker notices and publishes the will: mosquitto after 1.5 x keepalive,
    # RabbitMQ's MQTT plugin 3.10 after up to 3 x (docs/rabbitmq.md)
    timeout = 20 if broker.kind == "rabbitmq" else 15
    will = observer.wait_for("gas2mqtt/status", lambda m: m.payload == b"offline", timeout)
    assert will.qos == 1


def test_a_storm_of_sigterms_still_stops_cleanly(
    broker: Mosquitto, observer: Observer, tmp_path: Path, run_agent
) -> None:
    """SIGTERMs microseconds apart (``timeout`` forwarding the one ``kill`` also sent, or
    Ctrl-C pressed twice) once wedged the agent for good; it must still say offline and
    stop cleanly."""
    agent = run_agent(write_config(tmp_path, broker.port))
    observer.wait_for("gas2mqtt/status", is_heartbeat, timeout=BOUND)
    observer.clear()
    for i in range(200):
        os.kill(agent.proc.pid, signal.SIGTERM)
        deadline = time.perf_counter() + (i % 50) * 2e-6
        while time.perf_counter() < deadline:
            pass
    # 0, or SIGTERM's own death when the tail of the burst lands after App.run gave the
    # default handler back (shutdown done; systemd counts both as a clean stop)
    assert agent.terminate() in (0, -signal.SIGTERM), agent.log()
    observer.wait_for("gas2mqtt/status", lambda m: m.payload == b"offline", timeout=BOUND)
    assert "INFO agent.runtime: stopped" in agent.log()
    assert "Traceback" not in agent.log()


def test_broker_restart_while_running(broker: Mosquitto, tmp_path: Path, run_agent) -> None:
    agent = run_agent(write_config(tmp_path, broker.port))
    retained = ("gas2mqtt/status", "gas2mqtt/blind/availability", "gas2mqtt/blind/state")
    topics = subscriptions(broker, *retained)
    with closing(Observer(broker.host, broker.port, topics, client_id="obs-1")) as first:
        first.wait_for("gas2mqtt/blind/state", timeout=BOUND)
        # mosquitto's persistence is off here: every retained message is gone with it.
        # RabbitMQ keeps them on disk: cleared, so that only the agent's republish can
        # answer (it sends availability and this state only on connecting); the heartbeat
        # must show the reconnect it counted.
        for topic in retained:
            first.publish(topic, b"", retain=True)
    broker.stop()
    broker.start()
    with closing(Observer(broker.host, broker.port, topics, client_id="obs-2")) as second:
        # after the reconnect: heartbeat, availability and the latest states come back
        second.wait_for(
            "gas2mqtt/status",
            lambda m: is_heartbeat(m) and payload_json(m)["mqtt"]["reconnects"] >= 1,
            timeout=BOUND,
        )
        second.wait_for(
            "gas2mqtt/blind/availability", lambda m: m.payload == b"online", timeout=BOUND
        )
        second.wait_for("gas2mqtt/blind/state", timeout=BOUND)
        # and the command subscriptions were restored
        second.publish("gas2mqtt/valve/set", "open")
        second.wait_for(
            "gas2mqtt/valve/state", lambda m: payload_json(m) == {"state": "open"}, timeout=BOUND
        )
    with closing(Observer(broker.host, broker.port, topics, client_id="obs-3")) as third:
        assert third.wait_for("gas2mqtt/blind/state", timeout=BOUND).retain  # retained again
    assert agent.terminate() == 0, agent.log()


def test_starts_without_a_broker_and_connects_when_it_appears(tmp_path: Path, run_agent) -> None:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(directory=tmp_path / "broker")  # a port, a config; not started yet
    try:
        agent = run_agent(write_config(tmp_path, broker.port))
        # the agent is up and retrying; nothing listens yet
        with pytest.raises(subprocess.TimeoutExpired):
            agent.proc.wait(1.0)
        broker.start()
        with closing(Observer(broker.host, broker.port, client_id="late-observer")) as observer:
            observer.wait_for("gas2mqtt/status", is_heartbeat, timeout=BOUND)
            observer.wait_for("gas2mqtt/counter/state", timeout=BOUND)
        assert agent.terminate() == 0, agent.log()
    finally:
        broker.close()


BAD_CONFIGS = [
    ("unknown key", '[mqtt]\nhots = "x"\n', r"agent\.toml: mqtt\.hots: unknown key.*mqtt\.host"),
    ("wrong type", '[mqtt]\nport = "abc"\n', r"agent\.toml: mqtt\.port: expected .*found"),
    ("out of range", "[mqtt]\nport = 70000\n", r"agent\.toml: mqtt\.port: expected .*70000"),
    ("invalid TOML", "[mqtt\nport = 1\n", r"agent\.toml: line 2: invalid TOML"),
    ("bad choice", '[logging]\nformat = "xml"\n', r"agent\.toml: logging\.format: expected"),
    (
        "no app",
        "poll_interval = 1.0\n",
        r"agent\.toml: (line 1: )?poll_interval: unknown key; the daemon does not know it \(a "
        r'config file for an App of your own names it: app = "module:attribute"\)',
    ),
    ("app not found", 'app = "nosuchmodule:app"\n', r"agent\.toml: app: cannot import"),
    ("app wrong attribute", 'app = "quickstart:nope"\n', r"agent\.toml: app: .*no attribute"),
    (
        "app setting bad",
        'app = "quickstart:app"\npoll_interval = "soon"\n',
        r"agent\.toml: poll_interval: expected",
    ),
]


@pytest.mark.parametrize(("case", "text", "pattern"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_exits_78_with_one_line(
    tmp_path: Path, case: str, text: str, pattern: str
) -> None:
    import re

    shutil.copy(EXAMPLES / "quickstart.py", tmp_path / "quickstart.py")
    config = tmp_path / "agent.toml"
    if not case.startswith(("app", "no app")):
        text = 'app = "quickstart:app"\n' + text  # reach the settings of the app
    config.write_text(text)
    env = agent_env()
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_missing_config_file_exits_78(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(tmp_path / "no.toml")],
        cwd=tmp_path,
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78
    assert str(tmp_path / "no.toml") in done.stderr and "not found" in done.stderr


def test_version_flag() -> None:
    import agent

    done = subprocess.run(
        [sys.executable, "-m", "agent", "--version"],
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"agent {agent.__version__}"
