"""``max_restarts=None`` and ``max_restart_cooldown``: a device that is never given up, whose
restarts come ever more rarely, and that stays ``offline`` until it really works again.

What the daemon relies on: a 1-wire sensor unplugged for an hour is read again once it is
plugged back in, without a service restart, and a device that cannot start does not flap
online/offline every five seconds.
"""

from __future__ import annotations

import logging
import shutil
import textwrap
from pathlib import Path

import pytest

import agent
from agent.daemon.app import build_app
from agent.daemon.config import load_config
from agent.runtime.restarts import RestartBudget, RestartPolicy
from agent.testing import AppHarness, FakeClock


def test_an_unlimited_budget_never_runs_out_and_its_cooldown_doubles_to_the_cap() -> None:
    policy = RestartPolicy(max_restarts=None, cooldown=5.0, max_cooldown=300.0)
    budget = RestartBudget(policy, FakeClock())
    assert all(budget.spend() for _ in range(1000))
    assert [policy.cooldown_before(n) for n in (1, 2, 3, 4, 6, 7, 100, 10**6)] == [
        5.0, 10.0, 20.0, 40.0, 160.0, 300.0, 300.0, 300.0,
    ]  # fmt: skip
    assert policy.restart_text(7) == "restart 7"
    assert [n for n in range(1, 40) if policy.worth_logging(n)] == [1, 2, 4, 8, 16, 32]


def test_a_bounded_budget_keeps_its_constant_cooldown_and_logs_every_restart() -> None:
    policy = RestartPolicy(max_restarts=3, cooldown=5.0)
    assert [policy.cooldown_before(n) for n in (1, 2, 3)] == [5.0, 5.0, 5.0]
    assert policy.restart_text(2) == "restart 2 of 3"
    assert all(policy.worth_logging(n) for n in (1, 2, 3))
    budget = RestartBudget(policy, FakeClock())
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_restarts": -1}, "max_restarts must be a whole number >= 0"),
        ({"max_restart_cooldown": -1.0}, "max_restart_cooldown must be a number of seconds"),
        ({"max_restart_cooldown": True}, "max_restart_cooldown must be a number of seconds"),
    ],
)
def test_bad_restart_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        agent.App("demo", **kwargs)  # type: ignore[arg-type]


def test_a_failing_telemetry_device_is_never_given_up_and_stays_offline_until_it_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = agent.App("demo", heartbeat_interval=None, max_restarts=None, max_restart_cooldown=60.0)
    working = [False]
    calls: list[float] = []

    @app.telemetry("probe", interval=1.0)
    def probe(clock: agent.ClockPort) -> dict[str, object]:
        calls.append(clock.now())
        if not working[0]:
            raise OSError("no answer")
        return {"ok": True}

    caplog.set_level(logging.DEBUG, logger="agent")
    with AppHarness(app, raise_errors=False) as h:
        h.advance(3600)
        availability = [m.payload for m in h.messages_for("demo/probe/availability")]
        # online once at the first start, offline at the first failure, and nothing
        # else through an hour of failures and restarts
        assert availability == ["online", "offline"], availability
        restarts = [r.getMessage() for r in caplog.records if "restart" in r.getMessage()]
        warned = [
            r.getMessage()
            for r in caplog.records
            if "restart" in r.getMessage() and r.levelno == logging.WARNING
        ]
        assert len(restarts) > 40  # 5 failures, then the cooldown: 5, 10, 20, 40, 60, 60 …
        assert [w.split(":")[1].split(" in ")[0].strip() for w in warned] == [
            f"restart {n}" for n in (1, 2, 4, 8, 16, 32)
        ]
        assert not [r for r in caplog.records if "given up" in r.getMessage()]
        working[0] = True
        h.advance(61)  # the longest cooldown, then the next tick
        assert h.messages_for("demo/probe/availability")[-1].payload == "online"
        h.assert_state("probe", {"ok": True})


def test_the_daemon_reads_an_unplugged_sensor_again_an_hour_later(tmp_path: Path) -> None:
    sensor = tmp_path / "sys" / "bus" / "w1" / "devices" / "28-0316a2794eff"
    sensor.mkdir(parents=True)
    (sensor / "w1_slave").write_text(
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
    )
    config = tmp_path / "agent.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [store]
            backend = "memory"
            [[device]]
            type = "w1_temperature"
            name = "w1"
            interval = 10
            sensors = {{ boiler = "28-0316a2794eff" }}
            sysfs_root = "{tmp_path / "sys"}"
            """
        )
    )
    app = build_app(load_config(config, env_file=None, environ={}))
    with AppHarness(app, raise_errors=False) as h:
        h.assert_state("w1-boiler", {"temperature": 23.125})
        shutil.move(sensor, tmp_path / "unplugged")
        h.advance(3600)
        assert h.messages_for("agent/w1-boiler/availability")[-1].payload == "offline"
        shutil.move(tmp_path / "unplugged", sensor)
        h.advance(310)  # at most the longest cooldown (300 s) and an interval
        assert h.messages_for("agent/w1-boiler/availability")[-1].payload == "online"
        assert h.messages_for("agent/w1-boiler/state")[-1].json() == {"temperature": 23.125}


def test_a_device_whose_first_init_failed_is_online_once_it_works() -> None:
    app = agent.App("demo", heartbeat_interval=None, restart_cooldown=5.0)
    attempts: list[float] = []

    def init(clock: agent.ClockPort) -> None:
        attempts.append(clock.now())
        if len(attempts) == 1:
            raise OSError("bus not ready yet")

    @app.telemetry("probe", interval=10.0, init=init)
    def probe() -> dict[str, object]:
        return {"ok": True}

    with AppHarness(app, raise_errors=False) as h:
        h.advance(20)
        assert len(attempts) == 2
        h.assert_state("probe", {"ok": True})
        availability = [m.payload for m in h.messages_for("demo/probe/availability")]
        assert availability[-1] == "online", availability


def test_a_slow_failing_device_keeps_its_growing_cooldown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Five failed readings two minutes apart are ten minutes of trouble, not "300 s
    healthy": the restart count, and with it the cooldown, keeps growing."""
    app = agent.App("demo", heartbeat_interval=None, max_restarts=None, max_restart_cooldown=300.0)

    @app.telemetry("w1", interval=120.0)
    def w1() -> dict[str, object]:
        raise OSError("sensor unplugged")

    caplog.set_level(logging.DEBUG, logger="agent")
    with AppHarness(app, raise_errors=False) as h:
        h.advance(4 * 3600)
    restarts = [
        r.getMessage().split(": ", 1)[1] for r in caplog.records if ": restart " in r.getMessage()
    ]
    assert restarts[:3] == ["restart 1 in 5 s", "restart 2 in 10 s", "restart 3 in 20 s"]
    assert restarts[-1].endswith("in 300 s") and restarts[-1] != "restart 1 in 5 s", restarts
    warned = [r for r in caplog.records if ": restart " in r.getMessage() and r.levelno >= 30]
    assert len(warned) <= 5, [r.getMessage() for r in warned]
