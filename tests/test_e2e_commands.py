"""Commands on the wire: what is a command and what is not, through a real broker.

The quick example runs as ``python -m agent`` (see tests/test_e2e.py) against a private
broker (mosquitto, then RabbitMQ); a real paho client plays the user.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_helpers import BOUND, write_config

from agent.testing.mosquitto import Mosquitto, Observer

pytestmark = pytest.mark.integration


def test_clearing_a_retained_command_as_the_warning_says_runs_nothing(
    broker: Mosquitto, observer: Observer, tmp_path: Path, run_agent
) -> None:
    # A retained command left on the broker by some other tool, before the agent starts.
    observer.publish("gas2mqtt/valve/set", "open", retain=True)
    agent = run_agent(write_config(tmp_path, broker.port))
    observer.wait_for("gas2mqtt/valve/availability", lambda m: m.payload == b"online", BOUND)

    def warned() -> bool:
        return "ignored a retained command on gas2mqtt/valve/set" in agent.log()

    if broker.kind == "rabbitmq":
        # RabbitMQ sends retained messages to exact-topic subscriptions only; the agent's
        # are wildcards (gas2mqtt/+/set), so the stale command never reaches it at all.
        observer.publish("gas2mqtt/valve/set", "closed")  # a round trip behind it
        observer.wait_for("gas2mqtt/valve/state", timeout=BOUND)
        assert not warned(), agent.log()
        observer.clear()
    else:
        observer.wait_for("gas2mqtt/status", lambda m: warned(), timeout=BOUND)
        assert "clear it with an empty retained message" in agent.log()

    # The fix the warning gives. The broker forwards the empty retained publish to the
    # subscribed agent as a live, empty message: that is not a command.
    observer.publish("gas2mqtt/valve/set", b"", retain=True)
    observer.publish("gas2mqtt/valve/set", "closed")  # a real command, behind it in order
    state = observer.wait_for("gas2mqtt/valve/state", timeout=BOUND)
    assert state.payload == b'{"state":"closed"}'
    assert observer.messages("gas2mqtt/valve/error") == []
    assert observer.messages("gas2mqtt/error") == []
    assert [m.payload for m in observer.messages("gas2mqtt/valve/state")] == [b'{"state":"closed"}']
    assert agent.terminate() == 0
