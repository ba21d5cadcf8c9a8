"""End to end: what ``python -m agent --config FILE`` makes of bad or careless config files.

A real subprocess, as a user or systemd would start it: a file the TOML parser chokes on or
a topic prefix MQTT cannot use stops it with exit code 78 and one line naming the file and
the key; a password that other users can read starts it anyway, with one warning saying
which ``chmod`` fixes it, against a real mosquitto that insists on the password.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from e2e_helpers import (
    BOUND,
    EXAMPLES,
    AgentProcess,
    agent_env,
    write_app,
    write_config,
    write_password_file,
)

from agent.testing.mosquitto import Message, Mosquitto, Observer

pytestmark = pytest.mark.integration

DEEP = 5000  # far beyond Python's recursion limit

# What a user runs: the agent command, and an app's own script calling App.cli().
COMMANDS = {
    "agent command": [sys.executable, "-m", "agent"],
    "App.cli()": [sys.executable, "quickstart.py"],
}


def run_to_exit(
    folder: Path, command: list[str], config: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, "--config", str(config)],
        cwd=folder,
        env=env if env is not None else agent_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def the_one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The configuration error: exit 78, one line on stderr, no traceback."""
    assert done.returncode == 78, (done.returncode, done.stdout, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return lines[0]


# -- files the TOML parser chokes on --------------------------------------------------------

HOSTILE = {
    "nested arrays": ("a = " + "[" * DEEP + "]" * DEEP, "nested too deeply"),
    "nested inline tables": ("a = " + "{b = " * DEEP + "1" + "}" * DEEP, "nested too deeply"),
    "deep table header": ("[" + ".".join(["a"] * DEEP) + "]", "nested too deeply"),
    "5000-digit integer": ("a = " + "7" * DEEP, "integer too large"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_config_exits_78_with_one_line(tmp_path: Path, case: str, command: str) -> None:
    shutil.copy(EXAMPLES / "quickstart.py", tmp_path / "quickstart.py")
    text, why = HOSTILE[case]
    config = tmp_path / "agent.toml"
    config.write_text(f'app = "quickstart:app"\n{text}\n')
    line = the_one_line(run_to_exit(tmp_path, COMMANDS[command], config))
    assert f"configuration error: {config}: invalid TOML: {why}" in line
    assert len(line) < 300


# -- topic prefixes MQTT cannot use ---------------------------------------------------------

BAD_PREFIXES = ["a//b", "/a", "a/", "a/ b", " a", "a ", "a\x01b", "a\tb", "$SYS/gas"]


@pytest.mark.parametrize("prefix", BAD_PREFIXES)
def test_bad_topic_prefix_in_the_file_exits_78(tmp_path: Path, prefix: str) -> None:
    config = write_config(tmp_path, 1883, mqtt_extra=f"topic_prefix = {json.dumps(prefix)}\n")
    line = the_one_line(run_to_exit(tmp_path, COMMANDS["agent command"], config))
    assert f"agent: configuration error: {config}: mqtt.topic_prefix: expected " in line
    assert "separated by '/'" in line
    assert f"found {json.dumps(prefix, ensure_ascii=False)} (level " in line


@pytest.mark.parametrize("prefix", BAD_PREFIXES)
def test_bad_topic_prefix_in_the_environment_exits_78(tmp_path: Path, prefix: str) -> None:
    config = write_config(tmp_path, 1883)
    env = {**agent_env(), "MQTT__TOPIC_PREFIX": prefix}
    line = the_one_line(run_to_exit(tmp_path, COMMANDS["agent command"], config, env))
    assert line.startswith(
        "agent: configuration error: environment: mqtt.topic_prefix (MQTT__TOPIC_PREFIX): expected "
    )


# -- a password other users can read ----------------------------------------------------------

AGENT_USER, AGENT_PASSWORD = "gasagent", "Pw-e2e-7q7q"
OBSERVER_USER, OBSERVER_PASSWORD = "watcher", "Obs-e2e-3k3k"
WARNING_TEXT = "other users can read it"


@pytest.fixture
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A private mosquitto that accepts only our two users, each with its password."""
    folder = tmp_path_factory.mktemp("secured-mosquitto")
    passwords = write_password_file(
        folder / "passwd", {AGENT_USER: AGENT_PASSWORD, OBSERVER_USER: OBSERVER_PASSWORD}
    )
    server = Mosquitto(["allow_anonymous false", f"password_file {passwords}"], directory=folder)
    server.start()
    try:
        yield server
    finally:
        server.close()


def is_heartbeat(message: Message) -> bool:
    return message.payload.startswith(b"{") and json.loads(message.payload)["status"] == "online"


def run_until_heartbeat(broker: Mosquitto, config: Path) -> str:
    """Run the agent until its heartbeat arrives, stop it, and return its log."""
    agent = AgentProcess(config)
    try:
        with closing(
            Observer(
                broker.host,
                broker.port,
                client_id="e2e-observer",
                username=OBSERVER_USER,
                password=OBSERVER_PASSWORD,
            )
        ) as observer:
            # Only an agent that logged in can publish: anonymous clients are refused.
            observer.wait_for("gas2mqtt/status", is_heartbeat, timeout=BOUND)
        assert agent.terminate() == 0, agent.log()
    finally:
        agent.kill()
    return agent.log()


def warnings_in(log: str) -> list[str]:
    return [line for line in log.splitlines() if WARNING_TEXT in line]


@pytest.mark.parametrize(
    ("mode", "warned"), [(0o644, True), (0o604, True), (0o600, False)], ids=["0644", "0604", "0600"]
)
def test_password_in_a_world_readable_config_file_warns_once(
    secured_broker: Mosquitto, tmp_path: Path, mode: int, warned: bool
) -> None:
    config = write_config(
        tmp_path,
        secured_broker.port,
        mqtt_extra=f'username = "{AGENT_USER}"\npassword = "{AGENT_PASSWORD}"\n',
    )
    config.chmod(mode)
    log = run_until_heartbeat(secured_broker, config)
    assert AGENT_PASSWORD not in log
    assert "Traceback" not in log
    found = warnings_in(log)
    if not warned:
        assert found == [], log
        return
    assert len(found) == 1, log
    (line,) = found
    assert "WARNING" in line
    assert f"{config} holds mqtt.password and {WARNING_TEXT} (mode {mode:04o})" in line
    assert f"chmod 0640 {config}" in line and f"chmod 0600 {config}" in line


@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o644, True), (0o640, False), (0o600, False)],
    ids=["0644", "0640", "0600"],
)
def test_world_readable_password_file_warns_once(
    secured_broker: Mosquitto, tmp_path: Path, mode: int, warned: bool
) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text(AGENT_PASSWORD + "\n")
    secret.chmod(mode)
    config = write_config(
        tmp_path,
        secured_broker.port,
        mqtt_extra=f'username = "{AGENT_USER}"\npassword_file = "{secret}"\n',
    )
    config.chmod(0o644)  # readable by all, but it holds no secret: no warning for it
    log = run_until_heartbeat(secured_broker, config)
    assert AGENT_PASSWORD not in log
    found = warnings_in(log)
    if not warned:
        assert found == [], log
        return
    assert len(found) == 1, log
    (line,) = found
    assert "WARNING" in line
    assert f"{secret} (mqtt.password_file) holds a secret and {WARNING_TEXT}" in line
    assert f"chmod 0640 {secret}" in line and f"chmod 0600 {secret}" in line
    assert str(config) not in line


LEAKY_APP = """
import agent

app = agent.App("leaky", heartbeat_interval=1)


@app.command("login")
def login(payload: str, settings: agent.Settings) -> dict:
    # A library that quotes the credentials it was given in its exception, as some do.
    secret = settings.mqtt.resolved_password()
    raise RuntimeError(f"login as {settings.mqtt.username}:{secret} refused ({payload})")


@app.telemetry("meter", interval=0.5)
def meter() -> dict:
    return {"ok": True}
"""


def test_the_password_never_leaves_the_agent_even_at_debug(
    secured_broker: Mosquitto, tmp_path: Path
) -> None:
    """Not in the log at DEBUG (paho's own lines included), not on the wire (heartbeats,
    states, error payloads quoting an exception that holds it), not in ``agent describe``."""
    secret = tmp_path / "mqtt-password"
    secret.write_text(AGENT_PASSWORD + "\n")
    secret.chmod(0o600)
    config = write_app(tmp_path, secured_broker.port, LEAKY_APP)
    text = config.read_text().replace('level = "INFO"', 'level = "DEBUG"')
    text = text.replace(
        "[mqtt]\n", f'[mqtt]\nusername = "{AGENT_USER}"\npassword_file = "{secret}"\n'
    )
    config.write_text(text)
    agent = AgentProcess(config)
    try:
        with closing(
            Observer(
                secured_broker.host,
                secured_broker.port,
                client_id="e2e-everything",
                username=OBSERVER_USER,
                password=OBSERVER_PASSWORD,
            )
        ) as everything:  # subscribed to '#': every byte the agent publishes
            everything.wait_for("leaky/status", is_heartbeat, timeout=BOUND)
            everything.publish("leaky/login/set", "now")
            error = everything.wait_for("leaky/login/error", timeout=BOUND)
            assert "login as gasagent:*** refused" in json.loads(error.payload)["message"]
            everything.wait_for("leaky/status", is_heartbeat, timeout=BOUND)  # one more beat
            wire = b"\n".join(m.topic.encode() + b" " + m.payload for m in everything.messages())
        assert agent.terminate() == 0, agent.log()
    finally:
        agent.kill()
    assert AGENT_PASSWORD.encode() not in wire
    log = agent.log()
    assert " DEBUG " in log and "login as gasagent:*** refused" in log
    assert AGENT_PASSWORD not in log
    described = subprocess.run(
        [sys.executable, "-m", "agent", "describe", "--config", str(config), "--json"],
        cwd=tmp_path,
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert described.returncode == 0, described.stderr
    assert AGENT_PASSWORD not in described.stdout + described.stderr


def test_a_refused_password_is_named_as_the_problem_and_never_shown(
    secured_broker: Mosquitto, tmp_path: Path
) -> None:
    wrong = "Wrong-e2e-9z9z"
    config = write_config(
        tmp_path,
        secured_broker.port,
        mqtt_extra=f'username = "{AGENT_USER}"\npassword = "{wrong}"\n',
    )
    config.chmod(0o600)
    text = config.read_text().replace('level = "INFO"', 'level = "DEBUG"')
    config.write_text(text)
    agent = AgentProcess(config)
    try:
        deadline = time.monotonic() + BOUND
        while "still cannot connect" not in agent.log() and time.monotonic() < deadline:
            time.sleep(0.05)  # bounded: the second refusal is logged within the backoff
        assert agent.terminate() == 0, agent.log()
    finally:
        agent.kill()
    log = agent.log()
    assert "check mqtt.username and the password" in log, log
    assert wrong not in log and AGENT_PASSWORD not in log
