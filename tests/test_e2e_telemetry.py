"""The telemetry pipeline through a real broker: ``python -m agent`` in a subprocess, a real
paho client watching the wire.

Timings are chosen with wide margins (a publish decision never sits within 0.25 s of a
boundary), so the machine's load cannot change which messages are expected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_helpers import BOUND, agent_env, write_app

from agent.testing import eventually
from agent.testing.mosquitto import Message, Mosquitto, Observer

pytestmark = pytest.mark.integration

STRATEGY_APP = """
import pathlib
import agent

app = agent.App("tele", heartbeat_interval=3600)
READINGS = [20.0, 20.2, 20.4, 20.6, 20.6, 20.7, 20.8, 20.9, 20.9, 25.0, 25.0, 25.0]
DONE = pathlib.Path(__file__).with_name("done")


@app.telemetry(
    "temp",
    interval=0.5,
    publish=agent.OnChange(threshold=0.5) | agent.Every(seconds=2.25),
)
def temp() -> dict | None:
    if not READINGS:
        DONE.touch()
        return None  # nothing more to say: no publish, strategy not asked
    return {"t": READINGS.pop(0)}
"""


def test_on_change_or_every_publishes_exactly_the_expected_readings(
    broker: Mosquitto, observer: Observer, tmp_path: Path, run_agent
) -> None:
    agent = run_agent(write_app(tmp_path, broker.port, STRATEGY_APP))
    eventually((tmp_path / "done").exists, BOUND, "the readings to run out", describe=agent.log)
    time.sleep(1.0)  # proving an absence: nothing may follow; give a straggler time to show
    got = [json.loads(m.payload)["t"] for m in observer.messages("tele/temp/state")]
    # 20.0 first; 20.6 moved > 0.5; 20.9 because 2.5 s passed (Every); 25.0 moved again
    assert got == [20.0, 20.6, 20.9, 25.0], agent.log()
    assert all(m.qos == 1 for m in observer.messages("tele/temp/state"))
    assert agent.terminate() == 0


SENSOR_APP = """
import pathlib
import agent

app = agent.App("tele", heartbeat_interval=3600, restart_after_failures=1000)
HERE = pathlib.Path(__file__).parent


@app.telemetry(
    "probe",
    interval=0.5,
    retry=3,
    backoff=agent.FixedBackoff(delay=0.05, jitter=0),
)
def probe() -> dict:
    with open(HERE / "attempts", "a") as log:
        log.write("x")
    return {"t": float((HERE / "w1_slave").read_text())}  # FileNotFoundError: an OSError
"""


def _payloads(observer: Observer, topic: str) -> list[bytes]:
    return [m.payload for m in observer.messages(topic)]


def test_an_unplugged_sensor_with_retries_reports_once_goes_offline_and_recovers(
    broker: Mosquitto, observer: Observer, tmp_path: Path, run_agent
) -> None:
    sensor = tmp_path / "w1_slave"
    sensor.write_text("21.5")
    agent = run_agent(write_app(tmp_path, broker.port, SENSOR_APP))
    observer.wait_for("tele/probe/state", timeout=BOUND)

    sensor.unlink()  # unplugged
    report: Message = observer.wait_for("tele/probe/error", timeout=BOUND)
    observer.wait_for("tele/probe/availability", lambda m: m.payload == b"offline", BOUND)
    attempts_at_report = (tmp_path / "attempts").read_text().count("x")
    time.sleep(2.0)  # proving an absence: 4 more failed cycles, no report (reminders: 1 h)
    assert len(_payloads(observer, "tele/probe/error")) == 1, agent.log()
    failed_cycles = ((tmp_path / "attempts").read_text().count("x") - attempts_at_report) // 4
    assert failed_cycles >= 2  # 1 try + 3 retries per cycle, and the cycles went on

    body = json.loads(report.payload)
    assert body["error_type"] == "error" and body["device"] == "probe"
    assert "w1_slave" in body["message"]
    assert body["details"]["phase"] == "telemetry" and body["details"]["count"] == 1
    assert body["details"]["first_seen"].endswith("+00:00")
    assert [m.payload for m in observer.messages("tele/error")] == [report.payload]

    sensor.write_text("22.0")  # plugged back in
    observer.wait_for("tele/probe/state", lambda m: json.loads(m.payload) == {"t": 22.0}, BOUND)
    eventually(
        lambda: _payloads(observer, "tele/probe/availability")[-1] == b"online", BOUND, "online"
    )
    changes = _payloads(observer, "tele/probe/availability")
    assert changes == [b"online", b"offline", b"online"]
    assert "recovered after" in agent.log()
    assert agent.terminate() == 0


BAD_INTERVAL_APP = """
import agent


class Settings(agent.Settings):
    poll: float = 5.0


app = agent.App("tele", settings_class=Settings)


@app.telemetry("meter", interval=lambda settings: settings.poll)
def meter() -> dict:
    return {}
"""


@pytest.mark.parametrize("poll", ["-1", "0"])
def test_a_bad_interval_from_the_settings_exits_78_with_one_line(
    broker: Mosquitto, tmp_path: Path, poll: str
) -> None:
    config = write_app(tmp_path, broker.port, BAD_INTERVAL_APP, extra=f"poll = {poll}\n")
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config), "--log-level", "WARNING"],
        cwd=tmp_path,
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "interval of telemetry device 'meter'" in lines[0]
    assert f"found {poll}" in lines[0] and "Traceback" not in done.stderr
