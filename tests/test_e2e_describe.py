"""End to end: ``agent describe`` and lazy adapters, as ``python -m agent`` in a subprocess.

The app under test registers its relay as ``"no_such_hw_lib.gpio:Relay"`` — a hardware
library that is not installed here, as on a laptop — with ``FakeRelay`` as its dry-run
variant. Then:

* ``describe`` prints its devices, topics and adapters and connects to nothing: not to a
  bare TCP listener standing where the broker should be, and not to a real mosquitto, whose
  log shows no new connection (while it does show the test's own observer: the log works).
  The password in the config file is never printed.
* a run stops at start-up with exit 78 and exactly one line on stderr naming the module,
  before it connects;
* a ``--dry-run`` run uses ``FakeRelay`` — its reading arrives on the real broker — and
  stops with exit 0 on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import BOUND, agent_env, connected_client_ids, write_app
from rabbitmq import SharedNode

from agent.testing.mosquitto import Mosquitto, Observer

pytestmark = pytest.mark.integration

PASSWORD = "pw-e2e-describe-51c9"

APP = """
from typing import Protocol

import agent


class RelayPort(Protocol):
    def state(self) -> str: ...


class FakeRelay:
    def __init__(self, settings: agent.Settings) -> None:
        self.prefix = settings.mqtt.topic_prefix

    def state(self) -> str:
        return f"fake under {self.prefix}"


app = agent.App(
    "lazyhw",
    "1.0.0",
    heartbeat_interval=None,
    adapters={RelayPort: ("no_such_hw_lib.gpio:Relay", FakeRelay)},
)


@app.telemetry("relay", interval=0.5, publish=agent.OnChange())
def relay(port: RelayPort) -> dict:
    return {"relay": port.state()}


@app.command("valve")
def valve(payload: str) -> dict:
    return {"state": payload}
"""


def write_lazy_app(folder: Path, broker: Mosquitto | SharedNode | int) -> Path:
    """The app above and its config (``topic_prefix`` set, a password that must stay out
    of every output) for ``broker`` (or a bare port). The password is for a broker that
    lets anyone in; RabbitMQ checks whatever is given, so there the account is made."""
    if isinstance(broker, int):
        port = broker
    else:
        port = broker.port
        if broker.kind == "rabbitmq":
            broker.add_user("u", PASSWORD)
    config = write_app(folder, port, APP)
    text = config.read_text().replace(
        "[mqtt]\n",
        f'[mqtt]\ntopic_prefix = "lab/hw"\nusername = "u"\npassword = "{PASSWORD}"\n',
    )
    config.write_text(text)
    config.chmod(0o600)  # no permission warning: stderr stays empty
    return config


def agent_run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m agent ARGS`` in the config's folder, to its exit (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=config.parent,
        env=agent_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def describe(config: Path, *args: str) -> str:
    """``agent describe --config FILE ARGS``: exit 0, nothing on stderr, no secret."""
    done = agent_run(config, "describe", "--config", str(config), *args)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    assert done.stderr == ""
    assert PASSWORD not in done.stdout
    return done.stdout


def check_description(table: str, snapshot: dict[str, object]) -> None:
    for topic in ("lab/hw/relay/state", "lab/hw/valve/set", "lab/hw/status", "lab/hw/error"):
        assert topic in table
    relay = next(line for line in table.splitlines() if line.startswith("RelayPort"))
    assert relay.split() == ["RelayPort", "no_such_hw_lib.gpio:Relay", "FakeRelay", "impl"]
    assert snapshot["prefix"] == "lab/hw"
    telemetry = snapshot["devices"]["telemetry"]  # type: ignore[index]
    assert telemetry[0]["strategy"] == "OnChange()"
    assert snapshot["adapters"] == {
        "RelayPort": {
            "impl": "no_such_hw_lib.gpio:Relay",
            "dry_run": "FakeRelay",
            "active": "impl",
        }
    }


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A bare TCP listener where the broker would be: any connection attempt, even one
    closed again at once, waits in its backlog to be found."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    with contextlib.closing(sock):
        yield sock


def test_describe_needs_no_broker_and_connects_to_nothing(
    tmp_path: Path, listener: socket.socket
) -> None:
    config = write_lazy_app(tmp_path, listener.getsockname()[1])
    check_description(describe(config), json.loads(describe(config, "--json")))
    dry = json.loads(describe(config, "--json", "--dry-run"))
    assert dry["dry_run"] is True and dry["adapters"]["RelayPort"]["active"] == "dry_run"
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody knocked


def test_describe_leaves_no_connection_in_the_broker_log(
    tmp_path: Path, broker: Mosquitto, observer: Observer
) -> None:
    config = write_lazy_app(tmp_path, broker)
    before = connected_client_ids(broker)
    assert "test-observer" in before  # the log records connections
    mark = len(broker.log_text())
    table, snapshot = describe(config), json.loads(describe(config, "--json"))
    # A round trip through the broker after describe exited: had describe connected, the
    # broker would have logged it by now.
    observer.publish("probe/after-describe", "1")
    observer.wait_for("probe/after-describe")
    check_description(table, snapshot)
    assert connected_client_ids(broker) == before
    assert "New connection" not in broker.log_text()[mark:]  # mosquitto's, before CONNECT
    assert observer.messages("lab/hw/#") == []


def test_a_missing_adapter_module_stops_start_up_with_one_line(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = write_lazy_app(tmp_path, broker)
    before = connected_client_ids(broker)
    done = agent_run(config, "--config", str(config), "--log-level", "WARNING")
    assert done.returncode == 78, (done.returncode, done.stderr[-2000:])
    assert done.stderr.splitlines() == [
        "agent: configuration error: adapter for RelayPort: cannot import "
        "'no_such_hw_lib.gpio:Relay': no module named 'no_such_hw_lib' "
        "(install it, or run with --dry-run to use the dry-run variant)"
    ], done.stderr[-2000:]
    assert PASSWORD not in done.stdout + done.stderr
    assert connected_client_ids(broker) == before  # stopped before MQTT


def test_dry_run_uses_the_dry_run_adapter_on_a_real_broker(
    tmp_path: Path, broker: Mosquitto, observer: Observer
) -> None:
    config = write_lazy_app(tmp_path, broker)
    log_path = tmp_path / "agent.log"
    command = [sys.executable, "-X", "faulthandler", "-m", "agent", "--config", str(config)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*command, "--dry-run"],
            cwd=tmp_path,
            env=agent_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        state = observer.wait_for("lab/hw/relay/state", timeout=BOUND)
        assert json.loads(state.payload) == {"relay": "fake under lab/hw"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(BOUND) == 0, log_path.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack in the log
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(BOUND)
            proc.kill()
            proc.wait(BOUND)
    output = log_path.read_text(errors="replace")
    assert "no_such_hw_lib" not in output and PASSWORD not in output
    assert observer.wait_for("lab/hw/relay/availability", lambda m: m.payload == b"offline")
