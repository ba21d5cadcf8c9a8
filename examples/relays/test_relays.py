"""Tests of the relay bridge, written with agent's testing kit: the fake board in place of
the GPIO one, exact time on a fake clock, and a MemoryStore that outlives a restart."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from relays import FakeRelays, RelayPort, app

import agent
from agent.testing import AppHarness, HandlerFailed

ALL_OFF = {"pump": "OFF", "valve": "OFF", "light": "OFF", "door": "OFF"}


@pytest.fixture
def start(harness: Callable[..., AppHarness]) -> Callable[..., AppHarness]:
    """``start(board, store=..., **settings)``: the bridge, started on a fake board and a
    MemoryStore (each start loads the store afresh, as a restarted process would)."""

    def start(
        board: FakeRelays | None = None,
        *,
        store: agent.Store | None = None,
        raise_errors: bool = True,
        **settings: object,
    ) -> AppHarness:
        return harness(
            app,
            adapters={RelayPort: board if board is not None else FakeRelays()},
            store=store if store is not None else agent.MemoryStore(),
            raise_errors=raise_errors,
            **settings,
        )

    return start


def test_every_relay_starts_off_and_the_state_says_so(start: Callable[..., AppHarness]) -> None:
    board = FakeRelays()
    h = start(board)
    assert board.on == {"pump": False, "valve": False, "light": False, "door": False}
    h.assert_published("relays2mqtt/relays/state", ALL_OFF, qos=1, retain=True)


def test_a_command_switches_the_relay_before_the_state_is_published(
    start: Callable[..., AppHarness],
) -> None:
    board = FakeRelays()
    h = start(board)
    h.send_command("relays", "ON", sub_topic="pump")  # returns once the handler has run
    assert board.on["pump"] is True
    h.assert_state("relays", {"pump": "ON", "valve": "OFF"})
    h.send_command("relays", "toggle", sub_topic="pump")
    h.send_command("relays", "toggle", sub_topic="light")
    h.assert_state("relays", {"pump": "OFF", "light": "ON"})
    assert board.switches[-2:] == [("pump", False), ("light", True)]


def test_a_pulse_is_on_for_exactly_pulse_seconds(start: Callable[..., AppHarness]) -> None:
    board = FakeRelays()
    h = start(board, pulse_seconds=2)
    # send_command returns when the app is idle: here, with the handler in clock.sleep(2).
    h.send_command("relays", "PULSE", sub_topic="door")
    h.assert_state("relays", {"door": "ON"})
    h.advance(1.999)
    h.assert_state("relays", {"door": "ON"})
    h.advance(0.001)
    h.assert_state("relays", {"door": "OFF"})
    assert board.switches[-2:] == [("door", True), ("door", False)]


def test_a_bad_payload_is_reported_and_switches_nothing(start: Callable[..., AppHarness]) -> None:
    board = FakeRelays()
    h = start(board, raise_errors=False)  # the failure is the subject: keep it as a payload
    h.send_command("relays", "BLINK", sub_topic="pump")
    error = h.assert_published("relays2mqtt/relays/error", qos=1, retain=False).json()
    assert error["error_type"] == "invalid_payload"
    assert error["message"] == "expected ON, OFF, TOGGLE or PULSE, got 'BLINK'"
    assert error["device"] == "relays"
    assert board.on["pump"] is False
    assert len(h.messages_for("relays2mqtt/relays/state")) == 1  # the one at start


def test_by_default_a_handler_that_raises_fails_the_test(start: Callable[..., AppHarness]) -> None:
    h = start()
    with pytest.raises(HandlerFailed, match="InvalidPayload: expected ON, OFF"):
        h.send_command("relays", "BLINK", sub_topic="pump")


def test_a_channel_it_does_not_have_is_an_error(start: Callable[..., AppHarness]) -> None:
    h = start(raise_errors=False)
    h.send_command("relays", "ON", sub_topic="sprinkler")
    error = h.assert_published("relays2mqtt/relays/error").json()
    assert "sprinkler" in error["message"]


def test_the_channels_come_from_the_settings(start: Callable[..., AppHarness]) -> None:
    board = FakeRelays()
    h = start(board, channels={"gate": 5, "bell": 6})  # make_settings: env and files ignored
    assert h.last_state("relays") == {"gate": "OFF", "bell": "OFF"}
    h.send_command("relays", "ON", sub_topic="bell")
    assert board.on == {"gate": False, "bell": True}


def test_the_relays_come_back_after_a_restart(start: Callable[..., AppHarness]) -> None:
    store = agent.MemoryStore()  # the disk, shared by two runs of the bridge
    first = start(store=store)
    first.send_command("relays", "ON", sub_topic="pump")
    first.send_command("relays", "ON", sub_topic="light")
    first.stop()  # as SIGTERM would

    board = FakeRelays()
    second = start(board, store=store)
    assert board.on == {"pump": True, "valve": False, "light": True, "door": False}
    second.assert_state("relays", {"pump": "ON", "light": "ON", "door": "OFF"})


def test_a_pulse_is_never_saved_on(start: Callable[..., AppHarness]) -> None:
    store = agent.MemoryStore()
    h = start(store=store)
    h.send_command("relays", "ON", sub_topic="pump")
    h.send_command("relays", "PULSE", sub_topic="door")
    h.assert_state("relays", {"pump": "ON", "door": "ON"})
    assert store.load("relays") == {"pump": "ON"}  # a power cut now: the door comes back OFF
    h.advance(0.5)
    assert store.load("relays") == {"pump": "ON", "door": "OFF"}
