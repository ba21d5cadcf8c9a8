"""The threaded runtime with MockMqttClient and a FakeClock: no broker, no real waiting."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from agent.app import App
from agent.clock import ClockPort
from agent.context import AppContext, Command, DeviceContext
from agent.mqtt.fakes import MockMqttClient
from agent.settings import Settings
from agent.testing import FakeClock, eventually

BOUND = 5.0  # real seconds any wait in these tests may take before it is a failure
# How long a handler the test holds may wait for its release: far beyond the test's own
# steps (each up to BOUND on a loaded machine), so it never returns on its own first.
HOLD = 60.0


class Running:
    """An App running on a thread, driven by a fake clock and a mock MQTT client."""

    def __init__(
        self, app: App, clock: FakeClock | None = None, settings: Settings | None = None
    ) -> None:
        self.app = app
        self.settings = settings if settings is not None else Settings()
        self.mqtt = MockMqttClient()
        self.clock = clock or FakeClock()
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-app-run")

    def _run(self) -> None:
        try:
            self.app.run(
                mqtt=self.mqtt,
                settings=self.settings,
                shutdown_event=self.stop_event,
                clock=self.clock,
            )
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(BOUND)
        assert not self.thread.is_alive(), "App.run did not return after shutdown"
        if self.error is not None:
            raise self.error

    def until(self, predicate: Callable[[], object], what: str) -> None:
        """Wait (bounded) until ``predicate()`` holds, showing what was published if not."""
        eventually(predicate, BOUND, what, describe=lambda: f"published: {self.mqtt.published}")

    def states(self, topic: str) -> list[dict]:
        return [json.loads(p) for p, _retain, _qos in self.mqtt.get_messages_for(topic)]


def test_coroutine_handlers_are_rejected_at_registration() -> None:
    app = App("demo")

    async def reading() -> dict:
        return {}

    with pytest.raises(TypeError, match=r"'.*reading' is a coroutine function.*use def|def"):
        app.telemetry("t", interval=1)(reading)


def test_registration_validates_names_and_duplicates() -> None:
    app = App("demo")

    def f() -> None: ...

    for bad in ["", "a/b", "a+b", "a#", "a\x00b", "a\nb"]:
        with pytest.raises(ValueError, match="device"):
            app.add_device(bad, f)
    app.add_device("ok", f)
    with pytest.raises(ValueError, match="already registered"):
        app.add_device("ok", f)
    with pytest.raises(ValueError):
        App("bad/name")
    with pytest.raises(ValueError, match="reserved for broker topics"):
        App("$SYS")


def test_unannotated_parameter_is_rejected() -> None:
    app = App("demo")
    with pytest.raises(TypeError, match=r"'x'.*no type annotation"):

        @app.telemetry("t", interval=1)
        def t(x):  # type: ignore[no-untyped-def]
            return {}


def test_bad_interval_is_rejected() -> None:
    app = App("demo")
    for bad, exc in [
        (0, ValueError),
        (-1, ValueError),
        (float("nan"), ValueError),
        (True, TypeError),
    ]:
        with pytest.raises(exc, match="interval"):
            app.add_telemetry("t", lambda: {}, interval=bad)


def test_telemetry_publishes_on_start_and_every_interval() -> None:
    app = App("demo", "1.2.3")
    calls: list[str] = []

    @app.telemetry("temp", interval=10)
    def temp() -> dict:
        calls.append(threading.current_thread().name)
        return {"n": len(calls)}

    with Running(app) as r:
        r.until(lambda: len(r.states("demo/temp/state")) == 1, "first reading")
        r.clock.wait_for_waiters(2, timeout=BOUND)  # the scheduler and the device are parked
        r.clock.advance(9.9)
        r.clock.advance(0.1)
        r.until(lambda: len(r.states("demo/temp/state")) == 2, "second reading")
        r.clock.advance(10)
        r.until(lambda: len(r.states("demo/temp/state")) == 3, "third reading")
    assert r.states("demo/temp/state") == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert set(calls) == {"device:temp"}
    retained = {t: (retain, qos) for t, _p, retain, qos in r.mqtt.published}
    assert retained["demo/temp/state"] == (True, 1)


def test_slow_telemetry_does_not_pile_up_ticks() -> None:
    app = App("demo")
    release = threading.Event()
    entered = threading.Semaphore(0)

    @app.telemetry("slow", interval=1)
    def slow() -> dict:
        entered.release()
        release.wait(HOLD)
        return {"ok": True}

    with Running(app) as r:
        assert entered.acquire(timeout=BOUND)  # first reading is running, blocked
        r.clock.wait_for_waiters(1, timeout=BOUND)  # the scheduler is parked
        for _ in range(5):
            r.clock.advance(1)
            r.clock.wait_for_waiters(1, timeout=BOUND)
        r.mqtt.simulate_connect()  # publishes a heartbeat now
        release.set()
        # one pending tick ran, the other four were skipped, counted in the heartbeat
        assert entered.acquire(timeout=BOUND)
        r.until(lambda: len(r.states("demo/slow/state")) == 2, "the pending reading")
    # nothing more ran after the backlog: exactly two readings
    assert len(r.states("demo/slow/state")) == 2
    beats = [json.loads(p) for p, _r, _q in r.mqtt.get_messages_for("demo/status") if p[0] == "{"]
    assert beats[-1]["devices"]["slow"] == {"status": "busy", "skipped_ticks": 4}


def test_command_round_trip_and_subtopics() -> None:
    app = App("demo")
    seen: list[tuple[str, str, str]] = []

    @app.command("valve")
    def valve(topic: str, payload: str) -> dict:
        seen.append((threading.current_thread().name, topic, payload))
        return {"state": payload}

    @app.device("blind")
    def blind(ctx: DeviceContext) -> None:
        @ctx.on_command("position")
        def position(cmd: Command) -> None:
            ctx.publish_state(
                {"position": int(cmd.payload), "thread": threading.current_thread().name}
            )

        @ctx.on_command
        def plain(sub_topic: str | None, payload: str) -> None:
            ctx.publish_state({"plain": payload})

        while not ctx.shutdown_requested:
            ctx.sleep(60)

    with Running(app) as r:
        r.clock.wait_for_waiters(3, timeout=BOUND)
        assert sorted(r.mqtt.subscriptions) == sorted(["demo/set", "demo/+/set", "demo/+/+/set"])
        r.mqtt.deliver("demo/valve/set", "open")
        r.mqtt.deliver("demo/blind/position/set", "42")
        r.mqtt.deliver("demo/blind/set", "stop")
        r.until(
            lambda: r.states("demo/valve/state") and len(r.states("demo/blind/state")) == 2,
            "command results",
        )
    assert seen == [("device:valve", "demo/valve/set", "open")]
    assert r.states("demo/valve/state") == [{"state": "open"}]
    assert {"position": 42, "thread": "device:blind"} in r.states("demo/blind/state")
    assert {"plain": "stop"} in r.states("demo/blind/state")


def errors_for(r: Running, topic: str = "demo/error") -> list[dict]:
    return r.states(topic)


def test_bad_inbound_messages_are_reported_and_device_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("demo")

    @app.command("valve")
    def valve(payload: str) -> dict:
        if payload not in ("open", "close"):
            raise ValueError(f"expected open or close, got {payload!r}")
        return {"state": payload}

    with Running(app) as r:
        r.clock.wait_for_waiters(2, timeout=BOUND)
        r.mqtt.deliver("demo/valve/set", b"\xff\xfe")
        r.mqtt.deliver("demo/valve/set", b"x" * (256 * 1024 + 1))
        r.mqtt.deliver("demo/valve/set", "sideways")
        r.mqtt.deliver("demo/valve/set", "open", retain=True)  # ignored with a warning
        r.mqtt.deliver("demo/nosuch/set", "open")
        r.mqtt.deliver("demo/valve/set", "close")
        r.until(lambda: r.states("demo/valve/state"), "the good command")
    kinds = [e["error_type"] for e in errors_for(r)]
    assert kinds == ["invalid_payload", "payload_too_large", "error", "error"]
    logged = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert sum("rejected a command on demo/valve/set" in m for m in logged) == 2
    assert any("retained command on demo/valve/set" in m for m in logged)
    assert any("handler failed: ValueError: expected open or close" in m for m in logged)
    assert any("rejected a command on demo/nosuch/set" in m for m in logged)
    device_errors = errors_for(r, "demo/valve/error")
    assert [e["device"] for e in device_errors] == ["valve"] * 3
    assert "sideways" in device_errors[2]["message"]
    assert r.states("demo/valve/state") == [{"state": "close"}]
    assert all(not retain for t, _p, retain, _q in r.mqtt.published if t.endswith("/error"))


def test_command_queue_overflow_drops_oldest_and_reports_once_a_second() -> None:
    app = App("demo", command_queue_size=2)
    gate, busy = threading.Event(), threading.Event()
    got: list[str] = []

    @app.command("valve")
    def valve(payload: str) -> None:
        busy.set()
        gate.wait(HOLD)
        got.append(payload)

    with Running(app) as r:
        r.clock.wait_for_waiters(2, timeout=BOUND)
        r.mqtt.deliver("demo/valve/set", "1")
        assert busy.wait(BOUND)  # "1" is being handled; the queue holds two more
        for p in range(2, 11):
            r.mqtt.deliver("demo/valve/set", str(p))  # 4..10 each push out the oldest
        overflow = [e for e in errors_for(r) if e["error_type"] == "command_overflow"]
        assert [e["details"]["dropped"] for e in overflow] == [1]  # the rest is counted
        r.clock.advance(1.0)  # the scheduler's flush reports what was held back
        r.until(lambda: len(errors_for(r, "demo/valve/error")) == 2, "the aggregated report")
        gate.set()
        r.until(lambda: len(got) == 3, "the kept commands")
    overflow = [e for e in errors_for(r) if e["error_type"] == "command_overflow"]
    assert [e["details"]["dropped"] for e in overflow] == [1, 6]
    assert got == ["1", "9", "10"]  # the newest are kept


def test_an_empty_message_on_a_command_topic_is_not_a_command() -> None:
    app = App("demo")
    got: list[str] = []

    @app.command("valve")
    def valve(payload: str) -> None:
        got.append(payload)

    with Running(app) as r:
        r.clock.wait_for_waiters(2, timeout=BOUND)
        r.mqtt.deliver("demo/valve/set", "")
        r.mqtt.deliver("demo/nosuch/set", "")
        r.mqtt.deliver("demo/valve/set", "open")
        r.until(lambda: got, "the real command")
    assert got == ["open"]
    assert errors_for(r) == []


def test_heartbeat_availability_and_offline_at_shutdown() -> None:
    app = App("demo", "1.2.3", heartbeat_interval=30)

    @app.telemetry("temp", interval=100)
    def temp() -> dict:
        return {"t": 1}

    @app.telemetry(None, interval=100)
    def root() -> dict:
        return {"root": True}

    with Running(app) as r:
        r.until(lambda: r.mqtt.get_messages_for("demo/status"), "first heartbeat")
        r.until(
            lambda: (
                r.mqtt.get_messages_for("demo/temp/availability")
                and r.mqtt.get_messages_for("demo/availability")
            ),
            "availability",
        )
        # The heartbeat on connecting says "starting"; one more follows as soon as the
        # last device is up, not a heartbeat interval later.
        r.until(
            lambda: any(
                {n: d["status"] for n, d in json.loads(p)["devices"].items()}
                == {"temp": "ok", "root": "ok"}
                for p, _r, _q in r.mqtt.get_messages_for("demo/status")
            ),
            "the heartbeat once every device is up",
        )
        first = json.loads(r.mqtt.get_messages_for("demo/status")[0][0])
        assert {d["status"] for d in first["devices"].values()} <= {"starting", "ok"}
        r.clock.wait_for_waiters(3, timeout=BOUND)
        r.clock.advance(30)
        r.until(
            lambda: json.loads(r.mqtt.get_messages_for("demo/status")[-1][0])["uptime_s"] >= 29,
            "periodic heartbeat",
        )
    beats = [p for p, _r, _q in r.mqtt.get_messages_for("demo/status")]
    hb = json.loads(beats[-2])
    assert hb["status"] == "online" and hb["version"] == "1.2.3"
    assert hb["uptime_s"] == pytest.approx(30, abs=0.2)
    assert hb["devices"]["temp"]["status"] == "ok"
    assert beats[-1] == "offline"
    assert r.mqtt.get_messages_for("demo/temp/availability")[-1] == ("offline", True, 1)
    assert r.mqtt.get_messages_for("demo/availability")[-1] == ("offline", True, 1)
    assert r.states("demo/state") == [{"root": True}]


def test_reconnect_republishes_heartbeat_availability_and_state() -> None:
    app = App("demo")

    @app.telemetry("temp", interval=100)
    def temp() -> dict:
        return {"t": 21.5}

    with Running(app) as r:
        r.until(lambda: r.states("demo/temp/state"), "first state")
        r.mqtt.published.clear()
        r.mqtt.simulate_connect()
        order = [t for t, *_ in r.mqtt.published]
    assert order[:3] == ["demo/status", "demo/temp/availability", "demo/temp/state"]


def test_sleep_returns_at_shutdown_and_cleanup_runs() -> None:
    app = App("demo")
    cleaned = threading.Event()

    @app.device("loop")
    def loop(ctx: DeviceContext) -> None:
        while not ctx.shutdown_requested:
            ctx.sleep(3600)
        cleaned.set()

    with Running(app) as r:
        r.clock.wait_for_waiters(2, timeout=BOUND)
    assert cleaned.is_set()


def test_commands_iterator_yields_none_on_timeout() -> None:
    app = App("demo")
    got: list[object] = []

    @app.device("it")
    def it(ctx: DeviceContext) -> None:
        for cmd in ctx.commands(timeout=5):
            got.append(cmd if cmd is None else cmd.payload)

    with Running(app) as r:
        r.clock.wait_for_waiters(2, timeout=BOUND)
        r.mqtt.deliver("demo/it/set", "a")
        r.until(lambda: got == ["a"], "the command")
        r.clock.wait_for_waiters(2, timeout=BOUND)
        r.clock.advance(5)
        r.until(lambda: got == ["a", None], "the timeout")


def test_device_failure_is_reported_and_others_keep_running() -> None:
    app = App("demo")

    @app.device("broken")
    def broken() -> None:
        raise RuntimeError("sensor unplugged")

    @app.telemetry("fine", interval=1)
    def fine() -> dict:
        return {"ok": True}

    with Running(app) as r:
        r.until(lambda: r.states("demo/broken/error"), "the error report")
        r.until(lambda: r.states("demo/fine/state"), "the other device")
    err = r.states("demo/broken/error")[0]
    assert err["message"] == "sensor unplugged" and err["details"] == {"phase": "run"}
    assert ("offline", True, 1) in r.mqtt.get_messages_for("demo/broken/availability")


def test_injection_init_adapters_lifespan_and_configure() -> None:
    events: list[str] = []

    class Port:
        def read(self) -> int: ...

    class Impl:
        def __init__(self, settings: Settings) -> None:
            self.settings = settings

        def read(self) -> int:
            return 7

        def __enter__(self) -> Impl:
            events.append("adapter enter")
            return self

        def __exit__(self, *exc: object) -> None:
            events.append("adapter exit")

    class Counter:
        def __init__(self) -> None:
            self.n = 0

    @contextlib.contextmanager
    def lifespan(ctx: AppContext) -> Iterator[None]:
        assert isinstance(ctx.adapter(Port), Impl)
        events.append("lifespan enter")
        yield
        events.append("lifespan exit")

    app = App("demo", lifespan=lifespan, adapters={Port: Impl})

    @app.on_configure
    def configure(settings: Settings, port: Port, log: logging.Logger) -> None:
        events.append(f"configure {port.read()}")

    @app.telemetry("t", interval=1, init=Counter)
    def t(port: Port, counter: Counter, clock: ClockPort, settings: Settings) -> dict:
        counter.n += 1
        return {"v": port.read(), "n": counter.n}

    with Running(app) as r:
        r.until(lambda: r.states("demo/t/state"), "a reading")
    assert r.states("demo/t/state")[0] == {"v": 7, "n": 1}
    assert events == [
        "adapter enter",
        "lifespan enter",
        "configure 7",
        "lifespan exit",
        "adapter exit",
    ]


def test_state_that_is_not_json_is_reported() -> None:
    app = App("demo")

    @app.telemetry("t", interval=1)
    def t() -> dict:
        return {"v": float("nan")}

    with Running(app) as r:
        r.until(lambda: r.states("demo/t/error"), "the error")
    assert not r.mqtt.get_messages_for("demo/t/state")


class TwoMethodClock:
    """A clock with only the reference's two methods (real time underneath)."""

    def __init__(self) -> None:
        import time

        self._time = time

    def now(self) -> float:
        return self._time.monotonic()

    def sleep(self, seconds: float) -> None:
        self._time.sleep(seconds)


def test_a_clock_with_only_now_and_sleep_works() -> None:
    app = App("demo")
    stopped = threading.Event()

    @app.telemetry("fast", interval=0.05)
    def fast() -> dict:
        return {"ok": True}

    @app.device("loop")
    def loop(ctx: DeviceContext) -> None:
        while not ctx.shutdown_requested:
            ctx.sleep(3600)
        stopped.set()

    r = Running(app)
    r.clock = TwoMethodClock()  # type: ignore[assignment]
    with r:
        r.until(lambda: len(r.states("demo/fast/state")) >= 3, "three readings")
    assert stopped.is_set()


def test_thread_overrunning_the_grace_period_is_named_and_run_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("demo", shutdown_grace=0.2)
    never = threading.Event()

    @app.device("stuck")
    def stuck() -> None:
        never.wait()  # ignores shutdown: a wedged driver

    with caplog.at_level(logging.ERROR, logger="agent.runtime"), Running(app) as r:
        r.clock.wait_for_waiters(1, timeout=BOUND)  # the scheduler is parked
    never.set()
    assert any("device:stuck" in rec.getMessage() for rec in caplog.records), caplog.text


def test_dry_run_selects_the_dry_run_adapter() -> None:
    class Port: ...

    class Real(Port): ...

    class Fake(Port): ...

    app = App("demo", dry_run=True, adapters={Port: (Real, Fake)})
    seen: list[object] = []

    @app.telemetry("t", interval=1)
    def t(port: Port) -> None:
        seen.append(port)

    with Running(app) as r:
        r.until(lambda: seen, "a reading")
    assert isinstance(seen[0], Fake)


def test_settings_and_logger_are_injected_per_device() -> None:
    class MySettings(Settings):
        factor: float = 2.0

    app = App("demo", settings_class=MySettings)
    got: list[object] = []

    @app.telemetry("t", interval=1)
    def t(settings: MySettings, log: logging.Logger, ctx: DeviceContext) -> dict:
        got.append((settings.factor, log.name, ctx.name))
        return {}

    with Running(app, settings=MySettings()) as r:
        r.until(lambda: got, "a reading")
    assert got[0] == (2.0, "agent.device.t", "t")


def test_closing_an_inbox_counts_the_commands_it_drops_not_ticks_or_wakes() -> None:
    from agent.clock import SystemClock
    from agent.runtime.inbox import Inbox

    inbox = Inbox(SystemClock())
    inbox.put_tick(["d"])
    inbox.put_wake()
    inbox.put_command(Command(topic="p/d/set", payload="1", device="d", sub_topic=None))
    assert inbox.close() == 1  # the shutdown warning counts lost commands only


def test_a_command_is_a_value() -> None:
    """``Command`` is a plain class (ADR-012, decision 8) that keeps what handlers and their
    tests use of the dataclass it was: value equality and hash, repr, ``match``."""
    one = Command("p/d/set", "1", "d")
    assert one == Command(topic="p/d/set", payload="1", device="d", sub_topic=None)
    assert one != Command("p/d/set", "2", "d")
    assert len({one, Command("p/d/set", "1", "d")}) == 1
    assert repr(one) == (
        "Command(topic='p/d/set', payload='1', device='d', sub_topic=None, received_at=0.0)"
    )
    match one:
        case Command("p/d/set", payload, "d"):
            assert payload == "1"
        case _:
            pytest.fail("a command did not match its own fields")
