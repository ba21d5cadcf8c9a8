"""The testing kit: exact time, isolated settings, commands that return when handled, failing
handlers failing the test, and the pytest plugin. Hours of simulated time in real seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from agent import (
    App,
    DeviceContext,
    DeviceStore,
    FixedBackoff,
    MemoryStore,
    OnChange,
    Settings,
)
from agent.settings import ConfigError
from agent.testing import AppHarness, FakeClock, HandlerFailed, Message, make_settings

pytest_plugins = ["pytester"]


def test_advance_runs_every_tick_exactly_in_one_call() -> None:
    app = App("demo", heartbeat_interval=None)
    calls: list[float] = []

    @app.telemetry("t", interval=1)
    def t(clock: FakeClock) -> dict:
        calls.append(clock.now())
        return {"n": len(calls)}

    with AppHarness(app) as h:
        h.advance(10)
        assert calls == [float(s) for s in range(11)]  # ten cycles plus the one at start
        h.advance(3600)  # an hour: 3,600 real cycles, each run and published
        assert len(calls) == 11 + 3600
    assert h.last_state("t") == {"n": 3611}


def test_a_sleep_ends_at_its_exact_instant_and_commands_wait_their_turn() -> None:
    app = App("demo", heartbeat_interval=None)
    woke: list[float] = []
    handled: list[tuple[float, str]] = []

    @app.device("blind")
    def blind(ctx: DeviceContext, clock: FakeClock) -> None:
        @ctx.on_command
        def move(sub_topic: str | None, payload: str) -> None:
            handled.append((clock.now(), payload))

        ctx.sleep(22)
        woke.append(clock.now())
        ctx.sleep(22)
        woke.append(clock.now())
        while not ctx.shutdown_requested:
            ctx.sleep(1000)

    with AppHarness(app) as h:
        h.advance(21.5)
        h.send_command("blind", "up")  # served during the sleep, at once
        h.send_command("blind", "down")
        h.advance(30)
    assert woke == [22.0, 44.0]
    assert handled == [(21.5, "up"), (21.5, "down")]


def test_retry_delays_are_exact_with_a_fixed_backoff_and_no_jitter() -> None:
    app = App("demo", heartbeat_interval=None)
    attempts: list[float] = []

    @app.telemetry("probe", interval=60, retry=3, backoff=FixedBackoff(delay=2.5, jitter=0))
    def probe(clock: FakeClock) -> dict:
        attempts.append(clock.now())
        if len(attempts) < 4:
            raise TimeoutError("bus busy")
        return {"ok": True}

    with AppHarness(app) as h:
        h.advance(10)
    assert attempts == [0.0, 2.5, 5.0, 7.5]
    assert h.last_state("probe") == {"ok": True}


def test_send_command_returns_after_the_handler_and_its_publishes() -> None:
    app = App("demo", heartbeat_interval=None)

    @app.command("valve")
    def valve(payload: str) -> dict:
        return {"state": payload}

    with AppHarness(app) as h:
        for word in ("open", "close", "open"):
            h.send_command("valve", word)
            h.assert_state("valve", {"state": word})  # no waiting: it is there
        message = h.assert_published("demo/valve/state", {"state": "open"}, qos=1, retain=True)
    assert isinstance(message, Message) and message.json() == {"state": "open"}
    assert [m.json()["state"] for m in h.messages_for("demo/+/state")] == ["open", "close", "open"]


def test_a_failing_handler_fails_the_test_with_its_traceback_and_name() -> None:
    app = App("demo", heartbeat_interval=None)

    @app.command("valve")
    def set_valve(payload: str) -> None:
        raise ValueError(f"cannot parse {payload!r}")

    with AppHarness(app) as h:
        with pytest.raises(HandlerFailed, match=r"'.*set_valve' of device 'valve'") as info:
            h.send_command("valve", "sideways")
        assert isinstance(info.value.__cause__, ValueError)
        assert info.value.__cause__.__traceback__ is not None


def test_raise_errors_false_keeps_the_error_payload() -> None:
    app = App("demo", heartbeat_interval=None)

    @app.command("valve")
    def valve(payload: str) -> None:
        raise ValueError("nope")

    with AppHarness(app, raise_errors=False) as h:
        h.send_command("valve", "x")
        error = h.assert_published("demo/valve/error").json()
    assert error["message"] == "nope"


def test_bad_payloads_are_not_handler_failures() -> None:
    app = App("demo", heartbeat_interval=None)

    @app.command("valve")
    def valve(payload: str) -> None: ...

    with AppHarness(app) as h:
        h.send_command("valve", b"\xff\xfe")  # rejected by the router: reported, no raise
        assert h.assert_published("demo/error").json()["error_type"] == "invalid_payload"


def test_settings_are_isolated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    class MySettings(Settings):
        poll: float = 5.0

    monkeypatch.setenv("MQTT__TOPIC_PREFIX", "from-env")
    monkeypatch.setenv("POLL", "99")
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    with open(".env", "w") as env:
        env.write("POLL=77\n")
    settings = make_settings(MySettings, poll=2, mqtt__topic_prefix="t")
    assert (settings.poll, settings.mqtt.topic_prefix) == (2.0, "t")
    assert make_settings(MySettings).poll == 5.0
    assert make_settings(MySettings, mqtt={"port": 1884}).mqtt.port == 1884
    with pytest.raises(ConfigError, match=r"unknown key.*did you mean"):
        make_settings(MySettings, pol=1)
    with pytest.raises(ConfigError, match=r"mqtt\.port"):
        make_settings(MySettings, mqtt__port=0)


def test_stores_and_restarts_work_under_the_harness() -> None:
    app = App("demo", store=MemoryStore(), heartbeat_interval=None)

    @app.telemetry("counter", interval=1, publish=OnChange())
    def counter(store: DeviceStore) -> dict:
        store["n"] = store.get("n", 0) + 1
        return {"n": store["n"]}

    with AppHarness(app) as h:
        h.advance(4)
    assert h.last_state("counter") == {"n": 5}
    assert app.store is not None and app.store.load("counter") == {"n": 5}


def test_simulating_a_week_takes_seconds() -> None:
    app = App("demo")  # heartbeat every minute, error flush and stall checks every second

    @app.telemetry("meter", interval=300)
    def meter() -> dict:
        return {"ok": True}

    with AppHarness(app) as h:
        h.advance(7 * 24 * 3600)
        assert len(h.messages_for("demo/meter/state")) == 2017  # 7 days of 5 minutes, + 1
        assert len(h.messages_for("demo/status")) >= 7 * 24 * 60


def test_importing_agent_never_imports_pytest() -> None:
    code = "import agent, agent.testing, sys; print('pytest' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env
    )
    assert out.stdout.strip() == "False", out.stderr


def test_the_pytest_plugin_offers_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import agent

        app = agent.App("demo", heartbeat_interval=None)

        @app.command("valve")
        def valve(payload: str) -> dict:
            return {"state": payload}

        def test_harness(harness):
            h = harness(app)
            h.send_command("valve", "open")
            h.assert_state("valve", {"state": "open"})

        def test_the_others(fake_clock, mock_mqtt, device_context):
            assert fake_clock.now() == 0.0
            device_context.publish_state({"x": 1})
            assert mock_mqtt.published == [("test/device/state", '{"x":1}', True, 1)]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_stop_is_clean_even_while_a_handler_is_held(tmp_path: object) -> None:
    app = App("demo", heartbeat_interval=None, shutdown_grace=0.2)
    gate = threading.Event()

    @app.command("valve", timeout=None)
    def valve(payload: str) -> None:
        gate.wait(5)

    h = AppHarness(app).start()
    h.mqtt.deliver("demo/valve/set", "x")  # the test holds the handler; no waiting here
    h.stop()  # the grace period bounds it
    gate.set()
    assert h.mqtt.get_messages_for("demo/status")[-1] == ("offline", True, 1)


class RelayPort:
    def switch(self, on: bool) -> None: ...


class FakeRelay:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    def switch(self, on: bool) -> None:
        self.calls.append(on)


def test_given_adapters_replace_lazy_ones_which_are_never_imported() -> None:
    app = App("demo", heartbeat_interval=None)
    app.adapter(RelayPort, "no_such_hardware_library:Relay")

    @app.command("relay")
    def relay(payload: str, port: RelayPort) -> dict:
        port.switch(payload == "ON")
        return {"on": payload == "ON"}

    fake = FakeRelay()
    with AppHarness(app, adapters={RelayPort: fake}) as h:
        h.send_command("relay", "ON")
    assert fake.calls == [True]
    assert "no_such_hardware_library" not in sys.modules


def test_each_run_loads_the_store_afresh_and_starts_fresh_state() -> None:
    from agent import CircuitBreaker, Every

    backend = MemoryStore()
    app = App("demo", store=backend, heartbeat_interval=None)
    fail = [True]

    @app.telemetry("n", interval=1, publish=Every(n=2), circuit_breaker=CircuitBreaker(1))
    def n(store: DeviceStore) -> dict:
        if fail[0]:
            raise OSError("first run: broken")
        store["n"] = store.get("n", 0) + 1
        return {"n": store["n"]}

    with AppHarness(app, raise_errors=False) as h:
        h.advance(1)  # fails at 0 -> the breaker opens; skipped at 1
    fail[0] = False
    backend.save("n", {"n": 100})  # someone changed the stored state between the runs
    with AppHarness(app) as h:  # a restart: fresh breaker, fresh Every(n=), store reloaded
        h.advance(2)
    assert [m.json()["n"] for m in h.messages_for("demo/n/state")] == [101, 103]


def test_freezegun_cannot_hang_a_stuck_test() -> None:
    from freezegun import freeze_time

    app = App("demo", heartbeat_interval=None)
    gate = threading.Event()

    @app.telemetry("t", interval=1)
    def t(clock: FakeClock) -> dict:
        if clock.now() > 0:
            gate.wait(5)  # stuck outside the clock
        return {}

    with freeze_time("2024-01-01"), AppHarness(app) as h:
        h.clock.settle = 0.3
        with pytest.raises(AssertionError, match="did not wait on the clock again"):
            h.advance(1)
        gate.set()
