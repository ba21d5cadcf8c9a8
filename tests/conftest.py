"""Shared fixtures: a private mosquitto per test, a wire observer connected to it, and the
``agent`` command run as a real subprocess."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_helpers import AgentProcess

from agent import logs
from agent.testing.mosquitto import Mosquitto, Observer


@pytest.fixture(autouse=True)
def _secrets_of_this_test_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets a test registers (a settings load with a password, often a short one like
    "pw") are forgotten after it: every later log line and error payload would have them
    replaced by ``***``."""
    monkeypatch.setattr(logs, "_secrets", logs._secrets)


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A private mosquitto on a free 127.0.0.1 port, stopped at teardown.

    ``broker.stop()``, ``broker.kill()`` and ``broker.restart()`` (same port) are there
    for reconnection tests; ``broker.log_text()`` helps when one fails.
    """
    server = Mosquitto(directory=tmp_path_factory.mktemp("mosquitto"))
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def observer(broker: Mosquitto) -> Iterator[Observer]:
    """A real paho client subscribed to ``#`` on ``broker``, closed at teardown."""
    watcher = Observer(broker.host, broker.port, client_id="test-observer")
    try:
        yield watcher
    finally:
        watcher.close()


@pytest.fixture
def run_agent() -> Iterator[Callable[[Path], AgentProcess]]:
    """Start ``python -m agent --config PATH`` (see e2e_helpers); killed at teardown."""
    started: list[AgentProcess] = []

    def start(config: Path) -> AgentProcess:
        agent = AgentProcess(config)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()
