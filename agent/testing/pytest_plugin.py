"""pytest fixtures for testing bridges, registered on installation (entry point ``pytest11``).

::

    def test_valve(harness):
        h = harness(app, poll_interval=5)      # started; stopped after the test
        h.send_command("valve", "open")
        h.assert_state("valve", {"state": "open"})

* ``harness`` — a factory: ``harness(app, settings=None, **options)`` takes what
  :class:`~agent.testing.AppHarness` takes (``raise_errors``, ``adapters``, ``store``,
  ``dry_run``, setting overrides) and returns it started; it is stopped at teardown;
* ``fake_clock`` — a fresh :class:`~agent.testing.FakeClock` at 0.0;
* ``mock_mqtt`` — a fresh :class:`~agent.mqtt.fakes.MockMqttClient`;
* ``device_context`` — a :class:`~agent.DeviceContext` named ``"device"`` under the prefix
  ``"test"``, on those two, for calling a handler directly.

Only pytest imports this module: ``import agent`` never imports pytest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent.app import App
from agent.context import DeviceContext
from agent.mqtt.fakes import MockMqttClient
from agent.settings import Settings
from agent.testing.clock import FakeClock
from agent.testing.harness import AppHarness, make_settings


@pytest.fixture
def fake_clock() -> FakeClock:
    """A fake monotonic clock at 0.0, moved only by ``advance``."""
    return FakeClock()


@pytest.fixture
def mock_mqtt() -> MockMqttClient:
    """An in-memory MQTT client recording every publish."""
    return MockMqttClient()


@pytest.fixture
def device_context(mock_mqtt: MockMqttClient, fake_clock: FakeClock) -> DeviceContext:
    """A device context for calling a handler directly: name ``"device"``, prefix ``"test"``."""
    return DeviceContext(
        name="device",
        settings=make_settings(),
        mqtt=mock_mqtt,
        topic_prefix="test",
        shutdown_event=threading.Event(),
        adapters={},
        clock=fake_clock,
    )


@pytest.fixture
def harness() -> Iterator[Callable[..., AppHarness]]:
    """``harness(app, **overrides)``: a started :class:`AppHarness`, stopped at teardown."""
    started: list[AppHarness] = []

    def start(app: App, settings: Settings | None = None, **options: Any) -> AppHarness:
        h = AppHarness(app, settings, **options)
        started.append(h)
        return h.start()

    yield start
    for h in reversed(started):
        h.stop()
