"""Supervision on a fake clock and the mock MQTT client: device restarts and their budget,
stalls, the heartbeat's truth, exit_on_device_failure."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from test_runtime import BOUND, HOLD, Running

from agent import App, DeviceContext, DeviceFailed
from agent.testing import FakeClock


def availability(r: Running, device: str) -> list[str]:
    return [p for p, _r, _q in r.mqtt.get_messages_for(f"demo/{device}/availability")]


def errors(r: Running, device: str) -> list[dict]:
    return r.states(f"demo/{device}/error")


def heartbeat(r: Running) -> dict:
    r.mqtt.simulate_connect()
    beats = [p for p, _r, _q in r.mqtt.get_messages_for("demo/status") if p.startswith("{")]
    return json.loads(beats[-1])


def advance_to(r: Running, when: float, parked: int) -> None:
    """Move fake time to ``when`` once ``parked`` threads wait on the clock."""
    r.clock.wait_for_waiters(parked, timeout=BOUND)
    r.clock.advance(when - r.clock.now())


def test_a_device_that_keeps_raising_is_restarted_then_given_up() -> None:
    app = App("demo", max_restarts=2, restart_cooldown=5, heartbeat_interval=None)
    starts: list[float] = []

    def init(clock: FakeClock) -> None:
        starts.append(clock.now())

    @app.device("pump", init=init)
    def pump(ctx: DeviceContext) -> None:
        raise OSError("relay board not answering")

    @app.telemetry("meter", interval=1)
    def meter(clock: FakeClock) -> dict:
        return {"t": clock.now()}

    with Running(app) as r:
        r.until(lambda: starts == [0.0], "the first start")
        r.until(lambda: heartbeat(r)["devices"]["pump"]["status"] == "restarting", "cooldown")
        advance_to(r, 5, parked=3)  # pump's cooldown, the meter, the scheduler
        r.until(lambda: starts == [0.0, 5.0], "restart 1 after the cooldown")
        advance_to(r, 10, parked=3)
        r.until(lambda: starts == [0.0, 5.0, 10.0], "restart 2")
        r.until(lambda: availability(r, "pump")[-1] == "offline", "given up")
        beat = heartbeat(r)
        advance_to(r, 20, parked=2)  # the pump is never called again
        r.until(lambda: r.states("demo/meter/state")[-1] == {"t": 20.0}, "the meter going on")
    assert starts == [0.0, 5.0, 10.0]
    reports = errors(r, "pump")
    assert [e["error_type"] for e in reports] == ["error", "error", "error", "restarts_exhausted"]
    assert reports[-1]["details"]["restarts"] == 2
    assert beat["devices"]["pump"]["status"] == "offline"
    assert beat["devices"]["pump"]["restarts"] == 2
    assert beat["devices"]["pump"]["last_error"] == "OSError"
    assert beat["devices"]["meter"]["status"] == "ok"
    assert errors(r, "meter") == []


def test_a_device_that_returns_early_is_restarted_and_one_with_handlers_is_not() -> None:
    app = App("demo", restart_cooldown=1, heartbeat_interval=None)
    calls: list[str] = []

    @app.device("quitter")
    def quitter(ctx: DeviceContext) -> None:
        calls.append("quitter")  # returns at once, no command handlers

    @app.device("server")
    def server(ctx: DeviceContext) -> None:
        calls.append("server")
        ctx.on_command(lambda cmd: None)  # returns, but serves commands: fine

    with Running(app) as r:
        r.until(lambda: calls.count("quitter") == 1, "first call")
        advance_to(r, 1, parked=3)
        r.until(lambda: calls.count("quitter") == 2, "restarted")
    assert calls.count("server") == 1
    assert "returned while the agent runs" in errors(r, "quitter")[0]["message"]


def test_a_command_device_is_restarted_after_failures_in_a_row() -> None:
    app = App("demo", restart_after_failures=2, restart_cooldown=1, max_restarts=1,
              heartbeat_interval=None)  # fmt: skip
    inits: list[float] = []
    handled: list[str] = []

    def init(clock: FakeClock) -> None:
        inits.append(clock.now())

    @app.command("valve", init=init)
    def valve(payload: str) -> dict:
        handled.append(payload)
        if payload.startswith("bad"):
            raise ValueError(payload)
        return {"state": payload}

    with Running(app) as r:
        r.until(lambda: inits == [0.0], "init")
        r.mqtt.deliver("demo/valve/set", "bad1")
        r.mqtt.deliver("demo/valve/set", "open")  # a success breaks the streak
        r.mqtt.deliver("demo/valve/set", "bad2")
        r.mqtt.deliver("demo/valve/set", "bad3")  # two in a row: restart
        r.until(lambda: heartbeat(r)["devices"]["valve"]["status"] == "restarting", "restart")
        r.mqtt.deliver("demo/valve/set", "close")  # waits in the queue during the cooldown
        advance_to(r, 1, parked=2)
        r.until(lambda: handled[-1:] == ["close"], "served after the restart")
        assert inits == [0.0, 1.0]
        r.mqtt.deliver("demo/valve/set", "bad4")
        r.mqtt.deliver("demo/valve/set", "bad5")  # budget (1) spent: given up
        r.until(lambda: availability(r, "valve")[-1] == "offline", "given up")
        r.mqtt.deliver("demo/valve/set", "open")  # refused, reported, not handled
        advance_to(r, 2, parked=2)  # a second later the rate limit lets the report out
        r.until(
            lambda: any("command dropped" in e["message"] for e in errors(r, "valve")),
            "the refusal",
        )
    assert "open" not in handled[handled.index("close") :]
    [refusal] = [e for e in errors(r, "valve") if "command dropped" in e["message"]]
    assert refusal["error_type"] == "restarts_exhausted" and refusal["details"]["dropped"] == 1


def test_telemetry_restarts_without_holding_up_its_group() -> None:
    app = App("demo", restart_after_failures=2, restart_cooldown=3, max_restarts=1,
              heartbeat_interval=None)  # fmt: skip
    inits: list[float] = []
    calls: list[tuple[str, float]] = []

    def init(clock: FakeClock) -> None:
        inits.append(clock.now())

    def broken(clock: FakeClock) -> dict:
        calls.append(("broken", clock.now()))
        raise OSError("no such device")

    def fine(clock: FakeClock) -> dict:
        calls.append(("fine", clock.now()))
        return {"ok": True}

    app.add_telemetry("broken", broken, interval=1, group="bus", init=init)
    app.add_telemetry("fine", fine, interval=1, group="bus")

    with Running(app) as r:
        r.until(lambda: len(calls) == 2, "the first readings")
        for second in range(1, 9):
            advance_to(r, second, parked=2)
            r.until(lambda s=second: ("fine", float(s)) in calls, f"second {second}")
        r.clock.wait_for_waiters(2, timeout=BOUND)
    broken_at = [t for n, t in calls if n == "broken"]
    # fails at 0 and 1 -> restart planned, cooldown 3 s: init again at 4, fails 4 and 5 ->
    # budget spent: never called again
    assert broken_at == [0.0, 1.0, 4.0, 5.0]
    assert inits == [0.0, 4.0]
    assert [t for n, t in calls if n == "fine"] == [float(s) for s in range(9)]
    assert errors(r, "broken")[-1]["error_type"] == "restarts_exhausted"


def test_the_restart_count_resets_after_sustained_health() -> None:
    app = App("demo", max_restarts=1, restart_cooldown=1, sustained_health_reset=10,
              heartbeat_interval=None)  # fmt: skip
    starts: list[float] = []
    fail_at = {0.0, 20.0}

    @app.device("flaky")
    def flaky(ctx: DeviceContext, clock: FakeClock) -> None:
        starts.append(clock.now())
        while not ctx.shutdown_requested:
            if clock.now() in fail_at:
                raise OSError("hiccup")
            ctx.sleep(20 - clock.now() % 20 if clock.now() < 20 else 100)

    with Running(app) as r:
        r.until(lambda: starts == [0.0], "start")
        advance_to(r, 1, parked=2)  # restart 1 of 1 after the failure at 0
        r.until(lambda: starts == [0.0, 1.0], "restart")
        advance_to(r, 20, parked=2)  # healthy for 19 s > 10: the count is reset
        r.until(lambda: len(starts) == 2 and r.clock.waiters >= 1, "the failure at 20")
        advance_to(r, 21, parked=2)
        r.until(lambda: starts == [0.0, 1.0, 21.0], "restarted again, not given up")
    assert [e["error_type"] for e in errors(r, "flaky")] == ["error", "error"]


def test_exit_on_device_failure_shuts_down_cleanly_and_raises_70() -> None:
    app = App("demo", max_restarts=0, exit_on_device_failure=True, heartbeat_interval=None)

    @app.device("pump")
    def pump(ctx: DeviceContext) -> None:
        raise OSError("gone")

    r = Running(app)
    r.thread.start()
    r.thread.join(BOUND)
    assert not r.thread.is_alive()
    assert isinstance(r.error, DeviceFailed) and r.error.exit_code == 70
    assert availability(r, "pump")[-1] == "offline"
    assert r.mqtt.get_messages_for("demo/status")[-1] == ("offline", True, 1)


def test_a_stalled_handler_is_reported_and_recovers_when_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("demo", heartbeat_interval=None)
    release = threading.Event()
    entered = threading.Event()

    @app.command("valve", timeout=2)
    def valve(payload: str) -> dict:
        entered.set()
        # Held until the test releases it (HOLD, not BOUND: it must not return before the
        # stall check on a loaded machine, where each step of the test may take BOUND).
        release.wait(HOLD)
        return {"state": payload}

    caplog.set_level(logging.INFO)
    with Running(app) as r:
        r.clock.wait_for_waiters(1, timeout=BOUND)
        r.mqtt.deliver("demo/valve/set", "open")
        assert entered.wait(BOUND)
        advance_to(r, 2, parked=1)  # not past the timeout yet
        r.clock.wait_for_waiters(1, timeout=BOUND)
        assert errors(r, "valve") == []
        advance_to(r, 3, parked=1)  # the stall check at 3 s sees 3 > 2
        r.until(lambda: errors(r, "valve"), "the stall report")
        assert availability(r, "valve")[-1] == "offline"
        assert heartbeat(r)["devices"]["valve"]["status"] == "stalled"
        release.set()
        r.until(lambda: availability(r, "valve")[-1] == "online", "the recovery")
    [report] = errors(r, "valve")
    assert report["error_type"] == "stalled" and report["details"]["timeout"] == 2
    assert any("recovered: its call returned after" in m for m in caplog.messages)


def test_the_heartbeat_tells_the_truth() -> None:
    app = App("demo", heartbeat_interval=None)
    outcomes = iter([ValueError("bad"), ValueError("worse"), None])

    @app.command("valve")
    def valve(payload: str) -> dict:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome
        return {"state": payload}

    with Running(app) as r:
        r.clock.wait_for_waiters(1, timeout=BOUND)
        r.mqtt.deliver("demo/valve/set", "a")
        r.mqtt.deliver("demo/other/set", "x")  # different keys: both reported
        r.mqtt.deliver("demo/valve/set", "b")
        r.until(lambda: heartbeat(r)["devices"]["valve"].get("failures") == 2, "two failures")
        failing = heartbeat(r)
        r.mqtt.deliver("demo/valve/set", "c")
        r.until(lambda: r.states("demo/valve/state"), "the success")
        healed = heartbeat(r)
    assert failing["devices"]["valve"]["status"] == "error"
    assert failing["devices"]["valve"]["last_error"] == "ValueError"
    assert "last_success" not in failing["devices"]["valve"]
    assert healed["devices"]["valve"]["status"] == "ok"
    assert "failures" not in healed["devices"]["valve"]
    assert healed["devices"]["valve"]["last_success"].endswith("+00:00")
    assert healed["threads"] >= 3 and healed["rss_bytes"] > 10_000_000
    assert set(healed) >= {"status", "uptime_s", "version", "devices", "threads"}
