"""Shared fixtures: a private broker per test, a wire observer connected to it, and the
``agent`` command run as a real subprocess.

Every test that takes the ``broker`` fixture runs twice: on a fresh mosquitto, and on
RabbitMQ's MQTT plugin (one node for the session, emptied before each test; see
tests/rabbitmq.py and docs/rabbitmq.md). Where RabbitMQ behaves differently the test asks
``broker.kind`` and asserts what it does. ``TEST_BROKERS=mosquitto`` runs the
mosquitto half only (the package builds do, having no RabbitMQ in their chroots).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_helpers import AgentProcess
from rabbitmq import RabbitMQ, SharedNode

from agent import logs
from agent.testing.mosquitto import Mosquitto, Observer


@pytest.fixture(autouse=True)
def _secrets_of_this_test_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets a test registers (a settings load with a password, often a short one like
    "pw") are forgotten after it: every later log line and error payload would have them
    replaced by ``***``."""
    monkeypatch.setattr(logs, "_secrets", logs._secrets)


BROKERS = ("mosquitto", "rabbitmq")


def _brokers() -> list[str]:
    # Not AGENT_...: the daemon refuses an AGENT_ variable it does not know (exit 78), and
    # the tests run the daemon with this environment.
    chosen = [b.strip() for b in os.environ.get("TEST_BROKERS", ",".join(BROKERS)).split(",")]
    unknown = sorted(set(chosen) - set(BROKERS))
    if unknown or not chosen:
        raise pytest.UsageError(f"TEST_BROKERS: expected some of {BROKERS}, got {chosen}")
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "broker" not in metafunc.fixturenames:
        return
    metafunc.parametrize("broker", _brokers(), indirect=True)


@pytest.fixture(scope="session")
def rabbitmq_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedNode]:
    """One RabbitMQ node for the session (about 10 s to boot), started when first needed."""
    node = RabbitMQ(directory=tmp_path_factory.mktemp("rabbitmq-shared"))
    try:
        node.start()
        yield SharedNode(node)
    finally:
        node.close()


@pytest.fixture
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mosquitto | SharedNode]:
    """A private broker on a free 127.0.0.1 port: a fresh mosquitto stopped at teardown,
    or the session's RabbitMQ node emptied for this test (``broker.kind == "rabbitmq"``).

    ``broker.stop()``, ``broker.kill()`` and ``broker.restart()`` (same port) are there
    for reconnection tests; ``broker.log_text()`` helps when one fails. A test marked
    ``@pytest.mark.persistent_broker`` gets a mosquitto that keeps its sessions and retained
    messages across a SIGTERM restart, as RabbitMQ does across a clean stop.
    """
    if getattr(request, "param", "mosquitto") == "rabbitmq":
        shared: SharedNode = request.getfixturevalue("rabbitmq_node")
        shared.reset()
        yield shared
        return
    folder = tmp_path_factory.mktemp("mosquitto")
    # RabbitMQ keeps sessions and retained messages on disk; mosquitto does with these
    persistent = request.node.get_closest_marker("persistent_broker") is not None
    extra = ["persistence true", f"persistence_location {folder}/"] if persistent else []
    server = Mosquitto(extra, directory=folder)
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
