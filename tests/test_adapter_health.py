"""Adapter health checks and restarts: AdapterHealth on a FakeClock with scripted adapters.

The health reporter, the error reporter and the mock MQTT client are the real ones, so each
test sees exactly what the broker would. Time moves only through ``clock.advance``; the only
real waits are bounded (``eventually``, ``Event.wait`` on a hung check's release, ``stop``'s
join bound). The pattern of every test: move time to the next due check, then wait until
:meth:`AdapterHealth.judged` says that check's verdict — with all its effects — is in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time

import pytest

from agent.app import App
from agent.errors import ErrorPublisher
from agent.health import HealthReporter
from agent.mqtt.fakes import MockMqttClient
from agent.runtime.adapter_health import AdapterHealth, adapter_users
from agent.runtime.reporting import Reporter
from agent.runtime.restarts import RestartPolicy
from agent.testing import FakeClock, eventually

BOUND = 5.0  # real seconds any wait in these tests may take before it is a failure
INTERVAL = 30.0
BLOCK = "block"  # a scripted step: the check hangs until the test releases it


class GasMeterPort:
    """A port: only its type matters here (the heartbeat key is its name)."""


class ValvePort:
    """A second port."""


class BusPort:
    """A port whose adapter has no health check."""


class FakeAdapter:
    """An adapter whose ``health_check`` a test scripts, step by step.

    Each check takes the next step of ``script`` (then ``default``): ``True``/``False`` is
    returned, an exception is raised, :data:`BLOCK` hangs until :attr:`release` is set.
    """

    def __init__(self, *script: object, default: object = True) -> None:
        self.script = list(script)
        self.default = default
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self.entered_check = threading.Event()  # set when a check begins
        self.release = threading.Event()  # ends a BLOCK step
        self._lock = threading.Lock()

    def health_check(self) -> bool:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            step = self.script.pop(0) if self.script else self.default
        self.entered_check.set()
        try:
            if step == BLOCK:
                self.release.wait(BOUND * 2)  # bounded: a forgotten release cannot leak
                return True
            if isinstance(step, BaseException):
                raise step
            return bool(step)
        finally:
            with self._lock:
                self.running -= 1


class ResettableAdapter(FakeAdapter):
    """An adapter restarted by ``reset()``."""

    def __init__(self, *script: object, default: object = True) -> None:
        super().__init__(*script, default=default)
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1


class ManagedAdapter(FakeAdapter):
    """A context-manager adapter (restarted by exit and enter); records what happened."""

    def __init__(self, *script: object, default: object = True, enter_fails: int = 0) -> None:
        super().__init__(*script, default=default)
        self.events: list[str] = []
        self.enter_fails = enter_fails  # how many __enter__ calls after the first raise

    def __enter__(self) -> ManagedAdapter:
        if self.events and self.enter_fails:
            self.enter_fails -= 1
            self.events.append("enter failed")
            raise OSError("device busy")
        self.events.append("enter")
        return self

    def __exit__(self, *exc: object) -> None:
        self.events.append("exit")


class NoCheckAdapter:
    """An adapter without a health check: never watched."""


POLICY = RestartPolicy(after_failures=3, max_restarts=2, cooldown=5.0, sustained_reset=300.0)


class Harness:
    """AdapterHealth with a fake clock, a real HealthReporter and Reporter on a mock client.

    The users' devices are announced ``online`` first, as the runtime does; what was
    published up to then is cleared, so tests see only what adapter health published.
    """

    def __init__(
        self,
        adapters: dict[type, object],
        users: dict[type, list[tuple[str, bool]]] | None = None,
        *,
        interval: float | None = INTERVAL,
        policy: RestartPolicy = POLICY,
        reporter: Reporter | None = None,
        device_down: object = None,
    ) -> None:
        self.clock = FakeClock()
        self.mqtt = MockMqttClient()
        self.health = HealthReporter(self.mqtt, "p", "1.0", self.clock)
        self.reporter = reporter or Reporter(ErrorPublisher(self.mqtt, "p"), self.clock)
        self.adapters = adapters
        users = users if users is not None else {GasMeterPort: [("meter", False)]}
        for devices in users.values():
            for name, is_root in devices:
                self.health.publish_device_available(name, is_root=is_root)
        self.mqtt.published.clear()
        self.watch = AdapterHealth(
            adapters,
            users,
            interval=interval,
            policy=policy,
            clock=self.clock,
            health=self.health,
            reporter=self.reporter,
            device_down=device_down,  # type: ignore[arg-type]
        )

    def __enter__(self) -> Harness:
        self.watch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.watch.stop(BOUND)
        for adapter in self.adapters.values():
            if isinstance(adapter, FakeAdapter):
                adapter.release.set()  # no hung check outlives its test

    def next_check(self, judged: int, name: str = "GasMeterPort") -> None:
        """Move to the next due check and wait until ``judged`` checks have a verdict."""
        self.clock.advance(INTERVAL)
        self.until_judged(judged, name)

    def until_judged(self, judged: int, name: str = "GasMeterPort") -> None:
        eventually(
            lambda: self.watch.judged(name) >= judged,
            BOUND,
            f"{judged} check(s) of {name} judged",
            describe=lambda: f"judged {self.watch.judged(name)}, {self.watch.snapshot()}",
        )
        assert self.watch.judged(name) == judged

    def state(self, name: str = "GasMeterPort") -> dict[str, object]:
        return self.watch.snapshot()[name]

    def availability(self, device: str) -> list[str]:
        topic = "p/availability" if device == "root" else f"p/{device}/availability"
        return [payload for payload, _retain, _qos in self.mqtt.get_messages_for(topic)]

    def errors(self) -> list[dict]:
        return [json.loads(p) for p, _r, _q in self.mqtt.get_messages_for("p/error")]

    def parked_until(self, deadline: float) -> None:
        """Wait until a thread is parked on the clock with exactly this deadline next."""
        eventually(
            lambda: self.clock.next_deadline == deadline,
            BOUND,
            f"a wait until {deadline}",
            describe=lambda: f"next deadline {self.clock.next_deadline}",
        )


def _threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "agent.adapter_health" and r.levelno == level
    ]


# -- what is watched ------------------------------------------------------------------------


def test_without_an_interval_nothing_is_watched_and_no_thread_starts() -> None:
    with Harness({GasMeterPort: FakeAdapter(False)}, interval=None) as h:
        assert _threads("adapter-") == []
        assert h.watch.snapshot() == {}
        assert not h.watch.blocked("meter")
        assert not h.watch.holds_offline("meter")
        with h.watch.calling("meter") as allowed:
            assert allowed


def test_only_adapters_with_a_health_check_are_watched_one_thread_each() -> None:
    adapters = {GasMeterPort: FakeAdapter(), BusPort: NoCheckAdapter(), ValvePort: FakeAdapter()}
    with Harness(adapters) as h:
        names = sorted(t.name for t in _threads("adapter-health:"))
        assert names == ["adapter-health:GasMeterPort", "adapter-health:ValvePort"]
        assert all(t.daemon for t in _threads("adapter-health:"))
        assert set(h.watch.snapshot()) == {"GasMeterPort", "ValvePort"}
    assert _threads("adapter-health:") == []  # stop() joined them


@pytest.mark.parametrize("bad", [0, -1.0, True, "30"])
def test_a_bad_interval_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="health_check_interval"):
        Harness({GasMeterPort: FakeAdapter()}, interval=bad)  # type: ignore[arg-type]


def test_the_first_check_is_one_interval_after_start() -> None:
    adapter = FakeAdapter()
    with Harness({GasMeterPort: adapter}) as h:
        h.clock.advance(INTERVAL - 0.1)
        h.parked_until(INTERVAL)
        assert adapter.calls == 0
        h.clock.advance(0.1)
        h.until_judged(1)
        assert adapter.calls == 1
        assert h.state() == {"status": "ok", "failures": 0, "restarts": 0}


# -- failing and recovering -----------------------------------------------------------------


def test_a_failing_adapter_takes_its_devices_offline_and_recovery_brings_them_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.adapter_health")
    adapter = FakeAdapter(True, False, OSError("port gone"), True)
    users = {GasMeterPort: [("meter", False), ("root", True)], ValvePort: [("valve", False)]}
    with Harness({GasMeterPort: adapter}, users) as h:
        h.next_check(1)
        assert h.state() == {"status": "ok", "failures": 0, "restarts": 0}
        assert h.mqtt.published == []

        h.next_check(2)  # returned False
        assert h.state() == {"status": "failing", "failures": 1, "restarts": 0}
        assert h.availability("meter") == ["offline"]
        assert h.availability("root") == ["offline"]
        assert h.availability("valve") == []  # another port's device
        assert h.watch.holds_offline("meter")
        assert not h.watch.blocked("meter")  # failing, not restarting: still called
        [report] = h.errors()
        assert report["device"] is None
        assert report["details"] == {"adapter": "GasMeterPort", "reason": "returned_false"}
        assert "returned false" in report["message"]
        assert h.health.status_of("meter").status == "ok"  # the device's own status

        h.next_check(3)  # raised
        assert h.state() == {"status": "failing", "failures": 2, "restarts": 0}
        assert len(h.errors()) == 1  # one report per failing streak
        assert h.availability("meter") == ["offline"]

        h.next_check(4)
        assert h.state() == {"status": "ok", "failures": 0, "restarts": 0}
        assert h.availability("meter") == ["offline", "online"]
        assert h.availability("root") == ["offline", "online"]
        assert not h.watch.holds_offline("meter")
        retained = {(retain, qos) for _t, _p, retain, qos in h.mqtt.published if "avail" in _t}
        assert retained == {(True, 1)}
    assert _messages(caplog, logging.WARNING) == [
        "adapter GasMeterPort is failing: its health check returned false"
    ]
    assert _messages(caplog, logging.INFO) == [
        "adapter GasMeterPort recovered after 2 failed check(s) in 60.0 s"
    ]
    assert any("raised OSError: port gone" in m for m in _messages(caplog, logging.DEBUG))


def test_an_exception_from_the_first_failed_check_is_the_reported_cause() -> None:
    with Harness({GasMeterPort: FakeAdapter(OSError("port gone"))}) as h:
        h.next_check(1)
        [report] = h.errors()
        assert report["details"] == {"adapter": "GasMeterPort", "reason": "raised"}
        assert report["message"] == (
            "adapter GasMeterPort failed its health check: its health check raised "
            "OSError: port gone"
        )
        assert report["error_type"] == "adapter_unhealthy"


def test_a_device_of_two_failing_adapters_comes_back_when_both_have_recovered() -> None:
    gas, valve = FakeAdapter(False, True), FakeAdapter(False, False, True)
    users = {GasMeterPort: [("meter", False)], ValvePort: [("meter", False)]}
    with Harness({GasMeterPort: gas, ValvePort: valve}, users) as h:
        h.clock.advance(INTERVAL)
        h.until_judged(1, "GasMeterPort")
        h.until_judged(1, "ValvePort")
        assert h.availability("meter") == ["offline"]  # once, not once per adapter
        h.clock.advance(INTERVAL)
        h.until_judged(2, "GasMeterPort")
        h.until_judged(2, "ValvePort")
        assert h.state("GasMeterPort")["status"] == "ok"
        assert h.availability("meter") == ["offline"]  # the valve still holds it down
        assert h.watch.holds_offline("meter")
        h.clock.advance(INTERVAL)
        h.until_judged(3, "ValvePort")
        assert h.availability("meter") == ["offline", "online"]


def test_recovery_does_not_announce_a_device_that_is_down_on_its_own() -> None:
    users = {GasMeterPort: [("stalled", False), ("flaky", False), ("fine", False)]}
    with Harness(
        {GasMeterPort: FakeAdapter(False, True)},
        users,
        device_down=lambda name: name == "flaky",
    ) as h:
        h.next_check(1)
        h.health.set_device_status("stalled", "stalled")  # its own trouble, meanwhile
        h.next_check(2)
        assert h.availability("fine") == ["offline", "online"]
        assert h.availability("stalled") == ["offline"]  # its own recovery announces it
        assert h.availability("flaky") == ["offline"]  # the runtime's predicate says so


# -- a check that hangs ---------------------------------------------------------------------


def test_a_hanging_check_fails_once_per_interval_and_no_second_check_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.adapter_health")
    adapter = FakeAdapter(BLOCK)
    policy = RestartPolicy(after_failures=10)
    with Harness({GasMeterPort: adapter}, policy=policy) as h:
        h.clock.advance(INTERVAL)
        assert adapter.entered_check.wait(BOUND)
        assert h.state()["status"] == "ok"  # still within its interval
        h.next_check(1)  # t=60: no answer within the interval
        assert h.state() == {"status": "failing", "failures": 1, "restarts": 0}
        assert h.errors()[0]["details"] == {"adapter": "GasMeterPort", "reason": "timeout"}
        assert h.availability("meter") == ["offline"]
        h.next_check(2)  # t=90: still hanging, judged without a second check
        h.next_check(3)  # t=120
        assert h.state() == {"status": "failing", "failures": 3, "restarts": 0}
        assert adapter.calls == 1
        assert [t.name for t in _threads("adapter-check:")] == ["adapter-check:GasMeterPort"]

        adapter.release.set()  # it returns at last (True): too late, and dropped
        eventually(lambda: _threads("adapter-check:") == [], BOUND, "the check thread ends")
        assert h.state()["status"] == "failing"
        h.next_check(4)  # t=150: a fresh check
        assert adapter.calls == 2
        assert adapter.most_at_once == 1
        assert h.state() == {"status": "ok", "failures": 0, "restarts": 0}
        assert h.availability("meter") == ["offline", "online"]
    assert any("returned after it was judged" in m for m in _messages(caplog, logging.DEBUG))


# -- restarts -------------------------------------------------------------------------------


def test_restart_by_reset_after_n_failures_honours_the_cooldown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent.adapter_health")
    adapter = ResettableAdapter(False, False, False)
    with Harness({GasMeterPort: adapter}) as h:
        h.next_check(1)
        h.next_check(2)
        assert h.state() == {"status": "failing", "failures": 2, "restarts": 0}
        h.next_check(3)  # t=90: the third failure in a row calls for a restart
        assert h.state() == {"status": "restarting", "failures": 3, "restarts": 1}
        assert h.watch.blocked("meter")
        with h.watch.calling("meter") as allowed:
            assert not allowed  # devices get no calls during a restart
        h.parked_until(90 + 5.0)  # the cooldown
        h.clock.advance(4.9)
        h.parked_until(95.0)
        assert adapter.resets == 0
        h.clock.advance(0.1)
        h.until_judged(4)  # reset, then checked at once: it passes
        assert adapter.resets == 1
        assert adapter.calls == 4
        assert h.state() == {"status": "ok", "failures": 0, "restarts": 1}
        assert not h.watch.blocked("meter")
        with h.watch.calling("meter") as allowed:
            assert allowed
        assert h.availability("meter") == ["offline", "online"]
    assert _messages(caplog, logging.WARNING) == [
        "adapter GasMeterPort is failing: its health check returned false",
        "adapter GasMeterPort: restart 1 of 2 after 3 failed check(s): reset() in 5 s",
    ]
    assert _messages(caplog, logging.INFO) == [
        "adapter GasMeterPort recovered after 3 failed check(s) in 65.0 s"
    ]


def test_a_failed_check_after_a_restart_counts_towards_the_next_one() -> None:
    adapter = ResettableAdapter(default=False)
    policy = RestartPolicy(after_failures=2, max_restarts=5, cooldown=0.0)
    with Harness({GasMeterPort: adapter}, policy=policy) as h:
        h.next_check(1)
        h.next_check(3)  # the second failure: restart (no cooldown), checked at once: fails
        assert adapter.resets == 1
        assert h.state() == {"status": "failing", "failures": 1, "restarts": 1}
        assert not h.watch.blocked("meter")  # restarted: called again, still offline
        assert h.watch.holds_offline("meter")
        assert len(h.errors()) == 1  # still the same failing streak
        h.next_check(5)
        assert adapter.resets == 2
        assert h.state() == {"status": "failing", "failures": 1, "restarts": 2}


def test_restart_by_exit_and_enter_for_a_context_manager() -> None:
    adapter = ManagedAdapter(False, False, False)
    with Harness({GasMeterPort: adapter}) as h, contextlib.ExitStack() as stack:
        stack.enter_context(h.watch.context(GasMeterPort))  # as the runtime enters it
        assert adapter.events == ["enter"]
        h.next_check(1)
        h.next_check(2)
        h.next_check(3)
        assert h.state()["status"] == "restarting"
        h.parked_until(95.0)
        assert adapter.events == ["enter", "exit"]  # stopped before the cooldown
        h.clock.advance(5.0)
        h.until_judged(4)
        assert adapter.events == ["enter", "exit", "enter"]  # started after it
        assert h.state() == {"status": "ok", "failures": 0, "restarts": 1}
    assert adapter.events == ["enter", "exit", "enter", "exit"]  # and exited at shutdown


def test_an_adapter_a_restart_could_not_enter_again_is_not_exited_at_shutdown() -> None:
    adapter = ManagedAdapter(default=False, enter_fails=1)
    policy = RestartPolicy(after_failures=1, max_restarts=1, cooldown=0.0)
    with Harness({GasMeterPort: adapter}, policy=policy) as h, contextlib.ExitStack() as stack:
        stack.enter_context(h.watch.context(GasMeterPort))
        h.next_check(2)  # fails; the restart's __enter__ raises; checked at once: given up
        assert adapter.events == ["enter", "exit", "enter failed"]
        assert h.state() == {"status": "failed", "failures": 1, "restarts": 1}
        # Same key as the failing report (no device, error_type "error"), in the same
        # second: the reporter held it back. Its next flush sends it.
        h.reporter.flush(everything=True)
        restart_failure = [e for e in h.errors() if e["details"].get("phase")]
        assert [e["details"] for e in restart_failure] == [
            {"adapter": "GasMeterPort", "phase": "__enter__"}
        ]
        assert restart_failure[0]["message"] == "device busy"
    assert adapter.events == ["enter", "exit", "enter failed"]  # no second exit


def test_calls_in_flight_end_before_a_restart(caplog: pytest.LogCaptureFixture) -> None:
    adapter = ResettableAdapter(False, True, False)
    policy = RestartPolicy(after_failures=1, max_restarts=3, cooldown=5.0)
    with Harness({GasMeterPort: adapter}, policy=policy) as h:
        call = h.watch.calling("meter")
        assert call.__enter__()  # a handler call of the meter is running
        h.next_check(1)
        assert h.watch.blocked("meter")
        h.parked_until(30 + INTERVAL)  # waiting for the call, one interval at most
        call.__exit__(None, None, None)
        h.parked_until(30 + 5.0)  # the call ended: now the cooldown
        assert adapter.resets == 0
        h.clock.advance(5.0)
        h.until_judged(2)
        assert adapter.resets == 1

        # A call that does not end in time does not stop the restart.
        caplog.set_level(logging.WARNING, logger="agent.adapter_health")
        stuck = h.watch.calling("meter")
        assert stuck.__enter__()
        h.next_check(3)  # t=65
        h.parked_until(65 + INTERVAL)
        h.clock.advance(INTERVAL)
        h.parked_until(95 + 5.0)
        assert "1 device call(s) still running, restarting it anyway" in "".join(
            _messages(caplog, logging.WARNING)
        )
        h.clock.advance(5.0)
        h.until_judged(4)
        assert adapter.resets == 2
        stuck.__exit__(None, None, None)


def test_a_spent_budget_leaves_the_adapter_failed_and_its_devices_offline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent.adapter_health")
    adapter = ResettableAdapter(default=False)
    policy = RestartPolicy(after_failures=1, max_restarts=1, cooldown=0.0)
    with Harness({GasMeterPort: adapter}, policy=policy) as h:
        h.next_check(2)  # fails, restart 1, checked at once: fails, budget spent
        assert adapter.resets == 1  # one attempt, not more
        assert h.state() == {"status": "failed", "failures": 1, "restarts": 1}
        assert h.watch.blocked("meter")
        with h.watch.calling("meter") as allowed:
            assert not allowed
        assert h.health.status_of("meter").status == "offline"
        assert h.availability("meter") == ["offline"]
        [failing, exhausted] = h.errors()
        assert failing["details"]["reason"] == "returned_false"
        assert exhausted["error_type"] == "restarts_exhausted"
        assert exhausted["details"] == {
            "adapter": "GasMeterPort",
            "restarts": 1,
            "reason": "returned_false",
        }
        # Its checks end, as they should: the watchdog sees nothing wrong.
        eventually(lambda: _threads("adapter-health:") == [], BOUND, "the checker ends")
        assert h.watch.problem() is None
        h.clock.advance(10 * INTERVAL)
        assert adapter.calls == 2
        assert h.state()["status"] == "failed"
    assert _messages(caplog, logging.ERROR) == [
        "adapter GasMeterPort given up after 1 restart(s): its health check returned false"
    ]
    assert len(_messages(caplog, logging.WARNING)) == 2  # failing, the one restart


def test_the_restart_count_starts_again_after_sustained_health(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent.adapter_health")
    adapter = ResettableAdapter(False)
    policy = RestartPolicy(after_failures=1, max_restarts=3, cooldown=0.0, sustained_reset=300.0)
    with Harness({GasMeterPort: adapter}, policy=policy) as h:
        h.next_check(2)  # t=30: fails, restarted, checked at once: passes
        assert h.state() == {"status": "ok", "failures": 0, "restarts": 1}
        for judged in range(3, 12):  # t=60 ... 300: healthy, but not for 300 s yet
            h.next_check(judged)
            assert h.state()["restarts"] == 1, h.clock.now()
        h.next_check(12)  # t=330: 300 s since the restart
        assert h.state() == {"status": "ok", "failures": 0, "restarts": 0}
    assert "adapter GasMeterPort: healthy for 300 s, its restart count starts again from 0" in (
        _messages(caplog, logging.INFO)
    )


def test_an_adapter_that_cannot_be_restarted_stays_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.adapter_health")
    policy = RestartPolicy(after_failures=1, max_restarts=1, cooldown=0.0)
    with Harness({GasMeterPort: FakeAdapter(default=False)}, policy=policy) as h:
        for judged in (1, 2, 3):
            h.next_check(judged)
        assert h.state() == {"status": "failing", "failures": 3, "restarts": 0}
        assert not h.watch.blocked("meter")
    assert _messages(caplog, logging.WARNING) == [
        "adapter GasMeterPort is failing: its health check returned false",
        "adapter GasMeterPort cannot be restarted (no reset(), not a context manager): it "
        "stays failing until a check passes",
    ]


# -- the heartbeat's view -------------------------------------------------------------------


def test_snapshot_shows_every_watched_adapter_by_port_name() -> None:
    def make(port_name: str) -> type:
        return type(port_name, (), {"__qualname__": f"other.{port_name}"})

    twin = make("GasMeterPort")  # a second port of the same class name
    adapters = {
        GasMeterPort: FakeAdapter(),
        ValvePort: ResettableAdapter(False),
        BusPort: NoCheckAdapter(),
        twin: FakeAdapter(),
    }
    with Harness(adapters) as h:
        qualified = f"{__name__}.GasMeterPort"
        h.clock.advance(INTERVAL)
        h.until_judged(1, qualified)
        h.until_judged(1, "ValvePort")
        assert h.watch.snapshot() == {
            qualified: {"status": "ok", "failures": 0, "restarts": 0},
            "ValvePort": {"status": "failing", "failures": 1, "restarts": 0},
            f"{__name__}.other.GasMeterPort": {"status": "ok", "failures": 0, "restarts": 0},
        }
        json.dumps(h.watch.snapshot())  # ready for the heartbeat


# -- threads --------------------------------------------------------------------------------


def test_stop_joins_its_threads_within_the_bound_even_with_a_hung_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter = FakeAdapter(BLOCK)
    h = Harness({GasMeterPort: adapter}, policy=RestartPolicy(after_failures=10))
    h.watch.start()
    try:
        h.clock.advance(INTERVAL)
        assert adapter.entered_check.wait(BOUND)
        h.next_check(1)  # judged overrun: known to hang
        started = time.monotonic()
        h.watch.stop(BOUND)
        assert time.monotonic() - started < BOUND / 2  # not waited for
        assert _threads("adapter-health:") == []
        [check] = _threads("adapter-check:")
        assert check.daemon  # it cannot keep the process alive
        assert any(
            r.levelno == logging.WARNING and "adapter-check:GasMeterPort" in r.getMessage()
            for r in caplog.records
        )
    finally:
        adapter.release.set()


def test_stop_waits_for_a_check_within_its_interval_only_as_long_as_the_bound() -> None:
    adapter = FakeAdapter(BLOCK)
    h = Harness({GasMeterPort: adapter})
    h.watch.start()
    try:
        h.clock.advance(INTERVAL)
        assert adapter.entered_check.wait(BOUND)
        started = time.monotonic()
        h.watch.stop(0.2)
        assert 0.2 <= time.monotonic() - started < BOUND
        assert _threads("adapter-health:") == []
    finally:
        adapter.release.set()


def test_stop_during_a_cooldown_abandons_the_restart() -> None:
    adapter = ResettableAdapter(default=False)
    policy = RestartPolicy(after_failures=1, max_restarts=3, cooldown=5.0)
    with Harness({GasMeterPort: adapter}, policy=policy) as h:
        h.next_check(1)
        h.parked_until(30 + 5.0)
        h.watch.stop(BOUND)
        assert _threads("adapter-health:") == []
        assert adapter.resets == 0


def test_a_checker_that_crashes_says_so(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    class BrokenReporter(Reporter):
        def report(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("reporter bug")

    crashed: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.thread.name))
    mqtt, clock = MockMqttClient(), FakeClock()
    h = Harness(
        {GasMeterPort: FakeAdapter(False)},
        reporter=BrokenReporter(ErrorPublisher(mqtt, "p"), clock),
    )
    with h:
        h.clock.advance(INTERVAL)
        eventually(lambda: crashed, BOUND, "the checker to crash")
        assert crashed == ["adapter-health:GasMeterPort"]
        assert h.watch.problem() == "adapter health thread(s) died: adapter-health:GasMeterPort"
    [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert record.getMessage() == "adapter GasMeterPort: its health thread ended unexpectedly"


def test_start_twice_is_a_bug() -> None:
    with Harness({GasMeterPort: FakeAdapter()}) as h, pytest.raises(RuntimeError):
        h.watch.start()


# -- who uses an adapter --------------------------------------------------------------------


class GasMeter:
    def health_check(self) -> bool:
        return True


def test_adapter_users_are_the_devices_that_ask_for_the_port() -> None:
    app = App("demo")
    app.adapter(GasMeterPort, GasMeter)

    @app.telemetry("meter", interval=10)
    def meter(port: GasMeterPort) -> dict:
        return {}

    def open_valve(port: GasMeterPort) -> object:
        return object()

    @app.command("valve", init=open_valve)
    def valve(payload: str) -> None: ...

    @app.telemetry(None, interval=10)
    def root(port: GasMeterPort | None) -> dict:
        return {}

    @app.telemetry("other", interval=10)
    def other() -> dict:
        return {}

    @app.telemetry("off", interval=10, enabled=False)
    def off(port: GasMeterPort) -> dict:
        return {}

    assert adapter_users(app.registry, [GasMeterPort, ValvePort]) == {
        GasMeterPort: [("meter", False), ("valve", False), ("root", True)],
        ValvePort: [],
    }
