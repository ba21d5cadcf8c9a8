"""Helpers for end-to-end tests: run ``python -m agent --config FILE`` as a user would.

Shared by test_e2e.py (the quick example on a broker) and test_e2e_config.py (what the
agent makes of bad or careless config files). Not a test module: nothing here is collected.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BOUND = 10.0


def subscriptions(broker: object, *retained: str, wildcard: str = "#") -> list[str]:
    """Topics for an observer of ``wildcard`` that must also get the retained messages on
    the topics ``retained``.

    mosquitto sends retained messages to every matching subscription: ``wildcard`` is
    enough. RabbitMQ sends them only to a subscription of that exact topic (as Home
    Assistant's are), and delivers a message once however many of one client's
    subscriptions match it.
    """
    if getattr(broker, "kind", "mosquitto") == "rabbitmq":
        return [wildcard, *retained]
    return [wildcard]


def connected_client_ids(broker: object) -> list[str]:
    """The client id of every connection the broker's log records so far, in order."""
    if getattr(broker, "kind", "mosquitto") == "rabbitmq":
        pattern = r"accepting MQTT connection .*, client id: (.*)\)$"
    else:
        pattern = r"New client connected from \S+ as (\S+) \("
    return re.findall(pattern, broker.log_text(), re.M)  # type: ignore[attr-defined]


def agent_env() -> dict[str, str]:
    """The environment for ``python -m agent``: the same agent package as this test process
    (source tree, editable install or a staged build), none of our settings variables."""
    import agent

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT__", "LOGGING__"))}
    home = str(Path(agent.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
    return env


MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"  # Debian's mosquitto package


def write_password_file(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto ``password_file`` (mode 0600) for ``users`` (name -> password)."""
    for i, (user, password) in enumerate(users.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", *create, str(path), user, password],
            check=True,
            capture_output=True,
            timeout=30,
        )
    path.chmod(0o600)
    return path


def write_config(
    folder: Path, port: int, *, keepalive: int = 60, extra: str = "", mqtt_extra: str = ""
) -> Path:
    """Copy the quick example into ``folder`` and write its ``agent.toml`` for ``port``.

    ``extra`` goes at the top level (the app's own settings), ``mqtt_extra`` into the
    ``[mqtt]`` table (``username = "u"``).
    """
    shutil.copy(EXAMPLES / "quickstart.py", folder / "quickstart.py")
    path = folder / "agent.toml"
    path.write_text(
        'app = "quickstart:app"\n'
        "poll_interval = 0.5\n"
        f"{extra}"
        "[mqtt]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f"keepalive = {keepalive}\n"
        "reconnect_min_delay = 0.1\n"
        "reconnect_max_delay = 0.5\n"
        f"{mqtt_extra}"
        "[logging]\n"
        'format = "text"\n'
        'level = "INFO"\n'
    )
    return path


def write_app(folder: Path, port: int, source: str, *, extra: str = "") -> Path:
    """Write an app module ``app_under_test.py`` (``source`` must define ``app``) and its
    ``agent.toml`` into ``folder``; return the config's path. ``extra`` goes at the top
    level of the TOML file (the app's own settings)."""
    (folder / "app_under_test.py").write_text(source)
    path = folder / "agent.toml"
    path.write_text(
        'app = "app_under_test:app"\n'
        f"{extra}"
        "[mqtt]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        "reconnect_min_delay = 0.1\n"
        "reconnect_max_delay = 0.5\n"
        "[logging]\n"
        'format = "text"\n'
        'level = "INFO"\n'
    )
    return path


class AgentProcess:
    """``python -m agent --config PATH`` with its stderr kept in a file."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        """``env``: extra environment variables for the agent (e.g. ``NOTIFY_SOCKET``)."""
        self.log_path = config.parent / "agent.log"
        env = {**agent_env(), **(env or {})}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-X", "faulthandler", "-m", "agent", "--config", str(config)],
                cwd=config.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = BOUND) -> int:
        """SIGTERM, then the exit code; a shutdown that overruns ``timeout`` fails with the
        agent's log and the stacks of its threads (faulthandler, on SIGABRT)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler dumps every thread
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(BOUND)
            raise AssertionError(
                f"the agent did not stop within {timeout} s of SIGTERM:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(BOUND)
