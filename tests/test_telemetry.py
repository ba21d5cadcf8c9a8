"""The telemetry pipeline on a fake clock and the mock MQTT client: cycles, strategies,
retries, the circuit breaker, error streaks, availability and coalescing groups."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import pytest
from test_runtime import BOUND, Running

from agent import (
    App,
    CircuitBreaker,
    Every,
    ExponentialBackoff,
    FixedBackoff,
    LinearBackoff,
    OnChange,
)
from agent.mqtt import MockMqttClient
from agent.settings import ConfigError, Settings
from agent.testing import FakeClock


def states(r: Running, device: str) -> list[dict]:
    return r.states(f"demo/{device}/state")


def errors(r: Running, device: str) -> list[dict]:
    return r.states(f"demo/{device}/error")


def availability(r: Running, device: str) -> list[str]:
    return [p for p, _r, _q in r.mqtt.get_messages_for(f"demo/{device}/availability")]


def heartbeat(r: Running) -> dict:
    r.mqtt.simulate_connect()  # publishes a heartbeat now
    beats = [p for p, _r, _q in r.mqtt.get_messages_for("demo/status") if p.startswith("{")]
    return json.loads(beats[-1])


def tick(r: Running, seconds: float, done: Callable[[], object], what: str) -> None:
    """Advance fake time once everything is parked, then wait for the effect ``done``."""
    r.clock.wait_for_waiters(2, timeout=BOUND)
    r.clock.advance(seconds)
    r.until(done, what)


# -- the cycle ------------------------------------------------------------------------------


def test_ten_seconds_of_a_one_second_telemetry_are_ten_cycles_plus_the_first() -> None:
    app = App("demo")
    calls: list[float] = []

    @app.telemetry("t", interval=1)
    def t(clock: FakeClock) -> dict:
        calls.append(clock.now())
        return {"n": len(calls)}

    with Running(app) as r:
        r.until(lambda: len(calls) == 1, "the reading at start")
        for second in range(1, 11):
            tick(r, 1, lambda s=second: len(calls) == s + 1, f"cycle {second}")
        r.clock.wait_for_waiters(2, timeout=BOUND)
    assert calls == [float(s) for s in range(11)]
    assert [s["n"] for s in states(r, "t")] == list(range(1, 12))


def test_none_skips_the_cycle_and_other_results_are_type_errors() -> None:
    app = App("demo")
    results: list[object] = [None, ["not", "a", "dict"], {"ok": 1}]
    asked: list[object] = []

    class Spy(OnChange):
        def should_publish(self, current: dict, previous: dict | None) -> bool:
            asked.append(current)
            return True

    @app.telemetry("t", interval=1, publish=Spy())
    def t() -> object:
        return results.pop(0)

    with Running(app) as r:
        r.clock.wait_for_waiters(2, timeout=BOUND)  # the None cycle ran: nothing out
        assert states(r, "t") == [] and errors(r, "t") == []
        tick(r, 1, lambda: errors(r, "t"), "the TypeError report")
        tick(r, 1, lambda: states(r, "t"), "the good reading")
    [error] = errors(r, "t")
    assert error["error_type"] == "error"
    assert "returned list" in error["message"] and "dict" in error["message"]
    assert states(r, "t") == [{"ok": 1}]
    assert asked == []  # the first published reading never asks the strategy


def test_strategy_publishes_only_what_it_wants_measured_against_the_last_published() -> None:
    app = App("demo")
    readings = [20.0, 20.3, 20.6, 20.7, 21.2, 21.2]

    @app.telemetry("t", interval=1, publish=OnChange(threshold=0.5))
    def t() -> dict:
        return {"t": readings.pop(0)}

    with Running(app) as r:
        r.until(lambda: len(states(r, "t")) == 1, "the first reading")
        for _ in range(5):
            before = len(readings)
            tick(r, 1, lambda b=before: len(readings) == b - 1, "a cycle")
        r.clock.wait_for_waiters(2, timeout=BOUND)
    assert [s["t"] for s in states(r, "t")] == [20.0, 20.6, 21.2]


def test_every_seconds_runs_on_the_clock_port() -> None:
    app = App("demo")
    calls: list[float] = []

    @app.telemetry("t", interval=1, publish=Every(seconds=3))
    def t(clock: FakeClock) -> dict:
        calls.append(clock.now())
        return {"n": len(calls) - 1}

    with Running(app) as r:
        r.until(lambda: calls, "the first reading")
        for second in range(1, 8):
            tick(r, 1, lambda s=second: len(calls) == s + 1, f"second {second}")
        r.clock.wait_for_waiters(2, timeout=BOUND)
    assert [s["n"] for s in states(r, "t")] == [0, 3, 6]


# -- retries and backoff ----------------------------------------------------------------------


def test_retry_waits_the_backoff_on_the_clock_port_then_succeeds() -> None:
    app = App("demo")
    attempts: list[float] = []

    @app.telemetry("t", interval=100, retry=3, backoff=LinearBackoff(step=2, jitter=0))
    def t(clock: FakeClock) -> dict:
        attempts.append(clock.now())
        if len(attempts) < 3:
            raise TimeoutError("bus busy")  # an OSError: retried by default
        return {"ok": True}

    with Running(app) as r:
        r.until(lambda: len(attempts) == 1, "the first attempt")
        tick(r, 2, lambda: len(attempts) == 2, "retry 1 after 2 s")
        tick(r, 4, lambda: len(attempts) == 3, "retry 2 after 4 s more")
        r.until(lambda: states(r, "t"), "the reading")
    assert attempts == [0.0, 2.0, 6.0]
    assert errors(r, "t") == []  # retried failures are not failed cycles


def test_exceptions_outside_retry_on_fail_the_cycle_at_once() -> None:
    app = App("demo")
    attempts: list[int] = []

    @app.telemetry("t", interval=100, retry=5, retry_on=(TimeoutError,))
    def t() -> dict:
        attempts.append(1)
        raise ValueError("garbled frame")

    with Running(app) as r:
        r.until(lambda: errors(r, "t"), "the error report")
    assert len(attempts) == 1
    assert errors(r, "t")[0]["message"] == "garbled frame"


def test_shutdown_during_a_backoff_returns_at_once() -> None:
    app = App("demo", shutdown_grace=2)
    attempts: list[int] = []

    @app.telemetry("t", interval=1, retry=5, backoff=FixedBackoff(delay=3600, jitter=0))
    def t() -> dict:
        attempts.append(1)
        raise OSError("no such device")

    r = Running(app)
    with r:
        r.until(lambda: attempts, "the first attempt")
        r.clock.wait_for_waiters(2, timeout=BOUND)  # parked in its hour-long backoff
    assert r.error is None
    assert len(attempts) == 1
    assert not any(t.name == "device:t" and t.is_alive() for t in threading.enumerate())


# -- failure streaks, availability, breaker ---------------------------------------------------


def test_an_unplugged_sensor_reports_once_per_streak_with_reminders_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("demo", error_reminder_interval=10, restart_after_failures=100)
    plugged = threading.Event()
    failures = iter([OSError("unplugged")] * 11 + [ValueError("bad crc")] * 2)

    calls: list[int] = []

    @app.telemetry("probe", interval=1)
    def probe() -> dict:
        calls.append(1)
        if plugged.is_set():
            return {"t": 21.5}
        raise next(failures)

    caplog.set_level(logging.INFO, logger="agent.telemetry")
    with Running(app) as r:
        r.until(lambda: errors(r, "probe"), "the first report")
        assert availability(r, "probe") == ["online", "offline"]
        assert heartbeat(r)["devices"]["probe"]["status"] == "error"
        for second in range(1, 13):  # 9 quiet repeats, a reminder at 10 s, then a new type
            tick(r, 1, lambda s=second: len(calls) == s + 1, f"second {second}")
        r.clock.wait_for_waiters(2, timeout=BOUND)
        r.until(lambda: len(errors(r, "probe")) == 3, "reminder and type change")
        plugged.set()
        tick(r, 1, lambda: states(r, "probe"), "the recovery")
        r.until(lambda: availability(r, "probe")[-1] == "online", "back online")
        assert heartbeat(r)["devices"]["probe"]["status"] == "ok"
    first, reminder, changed = errors(r, "probe")
    assert (first["details"]["count"], first["message"]) == (1, "unplugged")
    assert reminder["details"]["count"] == 11 and reminder["message"] == "unplugged"
    assert reminder["details"]["first_seen"] == first["details"]["first_seen"]
    assert (changed["details"]["count"], changed["message"]) == (12, "bad crc")
    # (the test's simulated reconnects re-publish the current value, offline while failing)
    changes = [
        a
        for i, a in enumerate(availability(r, "probe"))
        if availability(r, "probe")[i - 1 : i] != [a]
    ]
    assert changes[:3] == ["online", "offline", "online"]
    recovered = [m for m in caplog.messages if "recovered after 13 failed cycle(s) in 13.0 s" in m]
    assert len(recovered) == 1


def test_circuit_breaker_skips_a_cycle_then_probes(caplog: pytest.LogCaptureFixture) -> None:
    app = App("demo")
    calls: list[float] = []
    healthy = threading.Event()

    @app.telemetry("t", interval=1, circuit_breaker=CircuitBreaker(threshold=2))
    def t(clock: FakeClock) -> dict:
        calls.append(clock.now())
        if not healthy.is_set():
            raise OSError("dead")
        return {"ok": True}

    caplog.set_level(logging.INFO, logger="agent.telemetry")
    with Running(app) as r:
        r.until(lambda: calls == [0.0], "cycle 1 fails")
        tick(r, 1, lambda: len(calls) == 2, "cycle 2 fails: the circuit opens")
        assert heartbeat(r)["devices"]["t"]["status"] == "circuit_open"
        tick(r, 1, lambda: "cycle skipped" in caplog.text, "cycle 3 skipped")
        tick(r, 1, lambda: len(calls) == 3, "cycle 4 probes and fails: open again")
        tick(r, 1, lambda: caplog.text.count("cycle skipped") == 2, "cycle 5 skipped")
        healthy.set()
        tick(r, 1, lambda: states(r, "t"), "cycle 6 probes and succeeds")
        assert heartbeat(r)["devices"]["t"]["status"] == "ok"
    assert calls == [0.0, 1.0, 3.0, 5.0]
    assert caplog.text.count("circuit opened") == 2
    assert caplog.text.count("circuit closed") == 1
    assert len(errors(r, "t")) == 1  # one streak, one report


# -- coalescing groups ---------------------------------------------------------------------------


def test_a_group_shares_one_thread_and_keeps_each_members_cadence() -> None:
    app = App("demo")
    runs: list[tuple[str, float, str]] = []

    def member(name: str) -> Callable[[FakeClock], dict]:
        def read(clock: FakeClock) -> dict:
            runs.append((name, clock.now(), threading.current_thread().name))
            return {"at": clock.now()}

        return read

    app.add_telemetry("fast", member("fast"), interval=1, group="bus")
    app.add_telemetry("slow", member("slow"), interval=2, group="bus")
    app.add_telemetry("alone", member("alone"), interval=2)

    with Running(app) as r:
        r.until(lambda: len(runs) == 3, "the readings at start")
        r.clock.wait_for_waiters(3, timeout=BOUND)
        for second in range(1, 5):
            r.clock.advance(1)
            # fast every 1 s, slow and alone every 2 s: two telemetry workers share one
            # phase slot (up to DEVICES_PER_SLOT devices do), so "alone" is due with "slow"
            expected = 3 + second + 2 * (second // 2)
            r.until(lambda e=expected: len(runs) == e, f"second {second}")
            r.clock.wait_for_waiters(3, timeout=BOUND)
    bus = [(n, t) for n, t, thread in runs if thread == "group:bus"]
    assert bus == [("fast", 0), ("slow", 0), ("fast", 1), ("fast", 2), ("slow", 2), ("fast", 3),
                   ("fast", 4), ("slow", 4)]  # fmt: skip
    assert {thread for n, _t, thread in runs if n == "alone"} == {"device:alone"}
    assert [t for n, t, _ in runs if n == "alone"] == [0, 2, 4]
    # members of one instant are handed to MQTT back to back
    topics = [t for t, _p, _r, _q in r.mqtt.published if t.endswith("/state")]
    at_two = [t for t in topics if t != "demo/alone/state"][3:5]
    assert at_two == ["demo/fast/state", "demo/slow/state"]


def test_groups_of_many_devices_get_phase_slots_of_their_own() -> None:
    """Phase slots are shared by up to DEVICES_PER_SLOT *devices*, not workers: two groups of
    16 run half a second apart, each alone, instead of both at once (where ten groups of 100
    made 1,000 readings fight for the GIL: each up to 20 ms late or not, tick by tick)."""
    app = App("demo")
    runs: list[tuple[str, float]] = []

    def member(name: str) -> Callable[[FakeClock], dict]:
        def read(clock: FakeClock) -> dict:
            runs.append((name, clock.now()))
            return {}

        return read

    for bus in ("a", "b"):
        for i in range(16):
            app.add_telemetry(f"{bus}{i}", member(bus), interval=1, group=bus)

    with Running(app) as r:
        r.until(lambda: len(runs) == 32, "the readings at start")
        r.clock.wait_for_waiters(3, timeout=BOUND)
        for step in range(1, 6):  # to 2.5 s: a group is due every other half second
            r.clock.advance(0.5)
            r.until(lambda s=step: len(runs) >= 32 + 16 * (s - 1), f"half-second {step}")
            r.clock.wait_for_waiters(3, timeout=BOUND)
    after_start = runs[32:]
    assert {t for n, t in after_start if n == "a"} == {1.0, 2.0}
    assert {t for n, t in after_start if n == "b"} == {1.5, 2.5}
    assert len(after_start) == 64


class HoldingMock(MockMqttClient):
    """The mock client with ``hold_writes``/``release_writes``: the topics published while
    held, one list per hold, kept at its release."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[list[str]] = []
        self._held = threading.local()

    def hold_writes(self) -> None:
        if getattr(self._held, "topics", None) is None:
            self._held.topics = []

    def release_writes(self) -> None:
        topics = getattr(self._held, "topics", None)
        self._held.topics = None
        if topics:
            self.blocks.append(topics)

    def publish(self, topic: str, payload: str | bytes, **kwargs: object) -> None:
        held = getattr(self._held, "topics", None)
        if held is not None:
            held.append(topic)
        super().publish(topic, payload, **kwargs)  # type: ignore[arg-type]


def test_a_groups_readings_of_one_tick_are_written_together() -> None:
    """A group's quick readings of a tick are held back and released together (one
    ``hold_writes`` .. ``release_writes`` a tick); a device alone publishes one reading a
    tick and is never held."""
    app = App("demo")
    for i in range(3):
        app.add_telemetry(f"g{i}", lambda: {"v": 1}, interval=1, group="bus")
    app.add_telemetry("alone", lambda: {"v": 1}, interval=1)

    r = Running(app)
    r.mqtt = HoldingMock()
    with r:
        r.until(lambda: len(r.mqtt.blocks) >= 1, "the group's first tick")
        r.clock.wait_for_waiters(3, timeout=BOUND)
        r.clock.advance(1)
        r.until(lambda: len(r.mqtt.blocks) >= 2, "the group's second tick")
    group = ["demo/g0/state", "demo/g1/state", "demo/g2/state"]
    assert all([t for t in block if t.endswith("/state")] == group for block in r.mqtt.blocks)
    assert len(r.states("demo/alone/state")) >= 1  # published, outside any block


def test_a_slow_groups_readings_are_written_as_they_come() -> None:
    """A reading that takes longer than HOLD_AT_MOST (1-wire: 750 ms a sensor) is not held
    up: what waits goes out after it, and from its next cycle on, before it too."""
    from agent.runtime.worker import HOLD_AT_MOST

    app = App("demo")
    clock = FakeClock()
    reads: list[float] = []

    def slow() -> dict:
        reads.append(clock.now())
        clock.advance(2 * HOLD_AT_MOST)  # the read "takes" this long
        return {"v": 1}

    app.add_telemetry("quick", lambda: {"v": 1}, interval=10, group="wire")
    for i in range(2):
        app.add_telemetry(f"w{i}", slow, interval=10, group="wire")
    r = Running(app, clock=clock)
    r.mqtt = HoldingMock()
    with r:
        r.until(lambda: len(reads) == 2, "the readings at start")
        r.until(lambda: len(r.states("demo/w1/state")) == 1, "their states")
        r.clock.wait_for_waiters(2, timeout=BOUND)
        r.clock.advance(10)
        r.until(lambda: len(reads) == 4, "the readings of the next tick")
        r.until(lambda: len(r.states("demo/w1/state")) == 2, "their states")
    # At start nothing was known: "quick" and the first slow reading were held together
    # (released after it), the second slow one alone. Then the slow ones are known: only
    # "quick" is held, and released before the slow reading that follows it.
    assert [[t for t in block if t.endswith("/state")] for block in r.mqtt.blocks] == [
        ["demo/quick/state", "demo/w0/state"],
        ["demo/w1/state"],
        ["demo/quick/state"],
    ]


def test_a_retrying_member_releases_what_waits_before_its_backoff() -> None:
    """Readings held before a member that now fails and retries go out before its backoff,
    not after it (it was quick last cycle, so it ran while they were held)."""
    app = App("demo")
    failing = threading.Event()
    attempts: list[float] = []

    app.add_telemetry("a", lambda: {"v": 1}, interval=10, group="bus")

    @app.telemetry("b", interval=10, group="bus", retry=1, backoff=FixedBackoff(delay=5, jitter=0))
    def b(clock: FakeClock) -> dict:
        attempts.append(clock.now())
        if failing.is_set() and len(attempts) == 2:
            raise TimeoutError("bus busy")
        return {"v": 1}

    app.add_telemetry("c", lambda: {"v": 1}, interval=10, group="bus")
    r = Running(app)
    r.mqtt = HoldingMock()
    with r:
        r.until(lambda: len(r.mqtt.blocks) == 1, "the first tick")
        failing.set()
        r.clock.wait_for_waiters(2, timeout=BOUND)
        r.clock.advance(10)
        r.until(lambda: len(attempts) == 2, "b's failed attempt")
        r.clock.wait_for_waiters(2, timeout=BOUND)  # b in its backoff
        # "a" is out while b waits its 5 s; nothing of b or c yet.
        assert [t for t in r.mqtt.blocks[1] if t.endswith("/state")] == ["demo/a/state"]
        r.clock.advance(5)
        r.until(lambda: len(r.mqtt.blocks) == 3, "b's retry and c")
        assert attempts == [0.0, 10.0, 15.0]
    # b's retried reading went out as it came (its cycle took the backoff: slow); c is
    # held anew.
    assert len(r.states("demo/b/state")) == 2
    assert [t for t in r.mqtt.blocks[2] if t.endswith("/state")] == ["demo/c/state"]


def test_quick_readings_are_held_for_at_most_hold_at_most_together() -> None:
    """Quick readings that add up past HOLD_AT_MOST are released there, and the next ones
    are held anew: nothing of a tick waits much longer than HOLD_AT_MOST."""
    from agent.runtime.worker import HOLD_AT_MOST

    app = App("demo")
    clock = FakeClock()

    def quick() -> dict:
        clock.advance(HOLD_AT_MOST * 0.4)  # quick alone, but three are more than the bound
        return {"v": 1}

    for i in range(6):
        app.add_telemetry(f"q{i}", quick, interval=10, group="bus")
    r = Running(app, clock=clock)
    r.mqtt = HoldingMock()
    with r:
        r.until(lambda: len(r.states("demo/q5/state")) == 1, "the first tick")
        r.until(lambda: len(r.mqtt.blocks) == 2, "its release")
    assert [[t for t in block if t.endswith("/state")] for block in r.mqtt.blocks] == [
        ["demo/q0/state", "demo/q1/state", "demo/q2/state"],
        ["demo/q3/state", "demo/q4/state", "demo/q5/state"],
    ]


@pytest.mark.parametrize(
    ("sizes", "intervals", "expected"),
    [
        ([1] * 10, [1.0] * 10, [0.0] * 10),  # ten devices: one slot, one wake a second
        ([2, 1], [2.0, 2.0], [0.0, 0.0]),  # a small group and a device share theirs
        ([100] * 10, [1.0] * 10, [k / 10 for k in range(10)]),  # a slot each, 100 ms apart
        ([100] + [1] * 10, [1.0] * 11, [0.0] + [0.5] * 10),  # the singles together
        ([1] * 8 + [100], [1.0] * 9, [0.0] * 8 + [0.5]),  # the group alone
        ([100] * 10 + [1] * 100, [60.0] * 10 + [0.25] * 100, None),  # intervals apart
        ([1] * 1000, [1.0] * 1000, None),  # 63 slots of 16, over 63 positions
    ],
)
def test_phase_slots_count_devices(
    sizes: list[int], intervals: list[float], expected: list[float] | None
) -> None:
    from agent.runtime.lifecycle import DEVICES_PER_SLOT, _phases

    phases = _phases(sizes, intervals)
    if expected is not None:
        assert phases == pytest.approx(expected)
    assert all(0 <= p < i for p, i in zip(phases, intervals, strict=True))
    counts: dict[tuple[float, float], int] = {}
    for phase, size, interval in zip(phases, sizes, intervals, strict=True):
        counts[interval, phase] = counts.get((interval, phase), 0) + size
    # No phase holds more than a slot's share, or a worker that alone is bigger.
    assert max(counts.values()) <= max(max(sizes), DEVICES_PER_SLOT)


# -- registration and configuration errors ------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"publish": OnChange},  # the class, not an instance
        {"publish": "on change"},
        {"retry": -1},
        {"retry": 1.5},
        {"retry": True},
        {"retry_on": ()},
        {"retry_on": (ValueError, "x")},
        {"retry_on": [OSError]},
        {"backoff": ExponentialBackoff},
        {"backoff": 2.0},
        {"circuit_breaker": CircuitBreaker},
        {"group": ""},
        {"group": "  "},
    ],
)
def test_bad_telemetry_options_are_value_errors_at_registration(options: dict) -> None:
    app = App("demo")
    with pytest.raises(ValueError) as info:
        app.add_telemetry("t", lambda: {}, interval=1, **options)
    assert next(iter(options)) in str(info.value)


def test_one_breaker_cannot_serve_two_devices_but_a_strategy_is_copied() -> None:
    app = App("demo")
    breaker, strategy = CircuitBreaker(), Every(n=2)
    app.add_telemetry("a", lambda: {}, interval=1, circuit_breaker=breaker, publish=strategy)
    with pytest.raises(ValueError, match="already used"):
        app.add_telemetry("b", lambda: {}, interval=1, circuit_breaker=breaker)
    app.add_telemetry("c", lambda: {}, interval=1, publish=strategy)
    a, c = app.registry.get("a"), app.registry.get("c")
    assert a is not None and c is not None
    assert a.telemetry.publish is not c.telemetry.publish


@pytest.mark.parametrize("bad", [0, -5, "often", None, float("nan")])
def test_a_bad_interval_function_stops_start_up_with_a_config_error(bad: object) -> None:
    class MySettings(Settings):
        poll: float = 1.0

    app = App("demo", settings_class=MySettings)
    configured: list[str] = []

    @app.on_configure
    def configure() -> None:
        configured.append("hook")

    @app.telemetry("meter", interval=lambda s: bad)
    def meter() -> dict:
        return {}

    r = Running(app, settings=MySettings())
    r.thread.start()
    r.thread.join(BOUND)
    assert isinstance(r.error, ConfigError), r.error
    assert "interval of telemetry device 'meter'" in str(r.error)
    assert configured == ["hook"]  # resolved after the hooks ran
