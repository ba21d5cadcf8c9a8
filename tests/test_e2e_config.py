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
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from e2e_helpers import BOUND, EXAMPLES, AgentProcess, agent_env, write_config

from agent.testing.mosquitto import Message, Mosquitto, Observer

pytestmark = pytest.mark.integration

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"  # Debian's mosquitto package
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
    passwords = folder / "passwd"
    for user, password, create in (
        (AGENT_USER, AGENT_PASSWORD, ["-c"]),
        (OBSERVER_USER, OBSERVER_PASSWORD, []),
    ):
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", *create, str(passwords), user, password],
            check=True,
            capture_output=True,
            timeout=30,
        )
    passwords.chmod(0o600)
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
