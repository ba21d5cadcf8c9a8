"""Supervision as a user meets it: ``python -m agent`` on a real broker, and under a test
``NOTIFY_SOCKET`` standing in for systemd.

Timings have wide margins: cooldowns over a second keep each error report out of the rate
limit's one-second window, so the exact messages can be asserted.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import BOUND, AgentProcess, write_app

from agent.testing import eventually
from agent.testing.mosquitto import Mosquitto, Observer

pytestmark = pytest.mark.integration


def payloads(observer: Observer, topic: str) -> list[bytes]:
    return [m.payload for m in observer.messages(topic)]


RESTART_APP = """
import agent

app = agent.App("sup", heartbeat_interval=0.5, max_restarts=2, restart_cooldown=1.1)


@app.device("pump")
def pump(ctx: agent.DeviceContext) -> None:
    raise OSError("relay board not answering")


@app.telemetry("meter", interval=0.2)
def meter() -> dict:
    return {"ok": True}
"""


def test_a_device_that_always_raises_is_restarted_then_given_up_the_rest_goes_on(
    broker: Mosquitto, observer: Observer, tmp_path: Path, run_agent
) -> None:
    agent = run_agent(write_app(tmp_path, broker.port, RESTART_APP))
    eventually(
        lambda: any(b'"restarts_exhausted"' in p for p in payloads(observer, "sup/pump/error")),
        BOUND,
        "the pump given up",
        describe=agent.log,
    )
    meter_before = len(observer.messages("sup/meter/state"))
    eventually(lambda: len(observer.messages("sup/meter/state")) > meter_before + 3, BOUND, "meter")
    reports = [json.loads(p) for p in payloads(observer, "sup/pump/error")]
    assert [r["error_type"] for r in reports] == ["error", "error", "error", "restarts_exhausted"]
    assert reports[-1]["details"]["restarts"] == 2
    assert all(r["message"] == "relay board not answering" for r in reports[:3])
    stamps = [r["timestamp"] for r in reports[:3]]
    gaps = [_seconds(later) - _seconds(earlier) for earlier, later in itertools.pairwise(stamps)]
    assert all(gap >= 1.1 for gap in gaps), gaps  # the cooldown, honoured
    changes = [p for p, _ in itertools.groupby(payloads(observer, "sup/pump/availability"))]
    # Up and down with each start, down for good at the end. (A retained "online" that is
    # still waiting in the outbox when "offline" follows is superseded: only the latest
    # state of a topic matters, so the exact count of ups is not part of the contract.)
    assert changes[-1] == b"offline" and b"online" in changes, changes
    beat = observer.wait_for(
        "sup/status",
        lambda m: (
            m.payload.startswith(b"{")
            # the heartbeat sent on connecting may come before the devices are listed
            and json.loads(m.payload)["devices"].get("pump", {}).get("status") == "offline"
        ),
        BOUND,
    )
    assert json.loads(beat.payload)["devices"]["pump"]["restarts"] == 2
    # "busy" is healthy too: a 0.2 s meter on a loaded machine may skip a tick now and then
    assert json.loads(beat.payload)["devices"]["meter"]["status"] in ("ok", "busy")
    assert payloads(observer, "sup/meter/error") == []
    assert agent.terminate() == 0


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


STALL_APP = """
import threading
import agent

app = agent.App("sup", heartbeat_interval=3600, shutdown_grace=1.0)
forever = threading.Event()


@app.command("valve", timeout=1.0)
def valve(payload: str) -> None:
    forever.wait()  # a handler that never returns


@app.telemetry("meter", interval=0.2)
def meter() -> dict:
    return {"ok": True}
"""


def test_a_handler_that_blocks_forever_is_stalled_others_go_on_shutdown_within_grace(
    broker: Mosquitto, observer: Observer, tmp_path: Path, run_agent
) -> None:
    agent = run_agent(write_app(tmp_path, broker.port, STALL_APP))
    observer.wait_for("sup/valve/availability", lambda m: m.payload == b"online", BOUND)
    sent = time.monotonic()
    observer.publish("sup/valve/set", "open")
    report = observer.wait_for("sup/valve/error", timeout=BOUND)
    reported_after = time.monotonic() - sent
    assert json.loads(report.payload)["error_type"] == "stalled"
    assert 1.0 <= reported_after <= 3.0  # the 1 s timeout, seen by a check once a second
    observer.wait_for("sup/valve/availability", lambda m: m.payload == b"offline", BOUND)
    before = len(observer.messages("sup/meter/state"))
    time.sleep(1.0)  # proving the meter goes on: about five readings a second
    assert len(observer.messages("sup/meter/state")) - before >= 3
    started = time.monotonic()
    assert agent.terminate() == 0
    assert time.monotonic() - started < 5.0  # the grace period (1 s) bounds the stuck thread
    assert "left behind: device:valve" in agent.log()


# -- systemd ---------------------------------------------------------------------------------


class NotifySocket:
    """A test stand-in for systemd's notification socket, recording what arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def times(self, message: str) -> list[float]:
        with self._lock:
            return [t for t, m in self.messages if m == message]

    def texts(self) -> list[str]:
        with self._lock:
            return [m for _t, m in self.messages]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(BOUND)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    receiver = NotifySocket(tmp_path / "notify")
    try:
        yield receiver
    finally:
        receiver.close()


WATCHDOG_APP = """
import threading
import agent

app = agent.App("sup", heartbeat_interval=3600, watchdog_stall_limit=2.0)
release = threading.Event()


@app.command("valve", timeout=0.3)
def valve(payload: str) -> None:
    release.wait(float(payload))  # blocks for as long as the command says
"""


def run_under_systemd(config: Path, notify: NotifySocket, **extra: str) -> AgentProcess:
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000", **extra}
    return AgentProcess(config, env=env)


def test_ready_watchdog_pings_through_a_short_stall_and_stop_during_a_long_one(
    broker: Mosquitto, observer: Observer, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    agent = run_under_systemd(write_app(tmp_path, broker.port, WATCHDOG_APP), notify_socket)
    try:
        eventually(lambda: "READY=1" in notify_socket.texts(), BOUND, "READY=1", describe=agent.log)
        eventually(lambda: len(notify_socket.times("WATCHDOG=1")) >= 4, BOUND, "pings")
        pings = notify_socket.times("WATCHDOG=1")
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert all(0.3 <= gap <= 0.8 for gap in gaps), gaps  # half of WatchdogSec=1 s

        observer.publish("sup/valve/set", "1.0")  # stalled after 0.3 s, back after 1 s
        observer.wait_for("sup/valve/error", timeout=BOUND)
        short = time.monotonic()
        eventually(lambda: any(t > short + 2.0 for t in notify_socket.times("WATCHDOG=1")),
                   BOUND, "pings going on through the short stall")  # fmt: skip
        pings = [t for t in notify_socket.times("WATCHDOG=1") if t > short - 1.0]
        assert max(b - a for a, b in itertools.pairwise(pings)) <= 0.8

        observer.publish("sup/valve/set", "60")  # stalled for longer than the 2 s limit
        long = time.monotonic()
        time.sleep(4.0)  # proving an absence: no ping once the stall is past 2 s
        late = [t for t in notify_socket.times("WATCHDOG=1") if t > long + 3.0]
        assert late == [], "pinged during a stall longer than watchdog_stall_limit"
        assert any("stalled" in text for text in notify_socket.texts() if "STATUS=" in text)
        assert "withholding the systemd watchdog ping" in agent.log()
    finally:
        code = agent.terminate()
    assert code == 0
    assert "STOPPING=1" in notify_socket.texts()


DEAD_SCHEDULER_APP = """
import ctypes
import threading
import agent

app = agent.App("sup", heartbeat_interval=3600)


@app.device("saboteur")
def saboteur(ctx: agent.DeviceContext) -> None:
    ctx.sleep(1.0)
    # The scheduler thread dies (as from a bug): an exception raised inside it.
    target = next(t for t in threading.enumerate() if t.name == "scheduler")
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(target.ident), ctypes.py_object(SystemExit)
    )
    while not ctx.shutdown_requested:
        ctx.sleep(1.0)
"""


def test_no_watchdog_ping_once_the_scheduler_thread_is_dead(
    broker: Mosquitto, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    agent = run_under_systemd(write_app(tmp_path, broker.port, DEAD_SCHEDULER_APP), notify_socket)
    try:
        eventually(lambda: "the scheduler thread crashed" in agent.log(), BOUND, "the crash",
                   describe=agent.log)  # fmt: skip
        died = time.monotonic()
        time.sleep(2.0)  # proving an absence
        assert [t for t in notify_socket.times("WATCHDOG=1") if t > died + 0.6] == []
        assert "the scheduler thread has died" in agent.log()
    finally:
        agent.terminate()


def test_ready_does_not_wait_for_the_broker(tmp_path: Path, notify_socket: NotifySocket) -> None:
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = run_under_systemd(write_app(tmp_path, port, RESTART_APP), notify_socket)
    try:
        eventually(lambda: "READY=1" in notify_socket.texts(), BOUND, "READY=1", describe=agent.log)
        assert "MQTT cannot connect" in agent.log() or "connecting" in agent.log()
    finally:
        assert agent.terminate() == 0
    assert os.path.exists(notify_socket.path)


ADAPTER_APP = """
import pathlib
import threading
from typing import Protocol

import agent

HERE = pathlib.Path(__file__).parent


class MeterPort(Protocol):
    def read(self) -> float: ...


class SerialMeter:
    '''Its health is whatever the test writes into the file "health": ok, fail or hang.'''

    def __init__(self) -> None:
        self.stuck = threading.Event()

    def read(self) -> float:
        return 1.0

    def health_check(self) -> bool:
        mode = (HERE / "health").read_text().strip()
        if mode == "hang":
            self.stuck.wait(30)  # a check that never answers in time
        return mode == "ok"

    def reset(self) -> None:
        # As closing and reopening a port ends a read that hangs on it, and cures the hang.
        if (HERE / "health").read_text().strip() == "hang":
            (HERE / "health").write_text("ok")
        self.stuck.set()
        self.stuck = threading.Event()
        with open(HERE / "resets", "a") as resets:
            resets.write("x")


app = agent.App(
    "sup",
    heartbeat_interval=0.25,
    health_check_interval=0.3,
    restart_after_failures=3,
    restart_cooldown=0.2,
    max_restarts=1,
    adapters={MeterPort: SerialMeter},
)


@app.telemetry("meter", interval=0.2)
def meter(port: MeterPort) -> dict:
    return {"v": port.read()}
"""


def _adapter_status(observer: Observer) -> str | None:
    beats = [m for m in observer.messages("sup/status") if m.payload.startswith(b"{")]
    if not beats:
        return None
    return json.loads(beats[-1].payload).get("adapters", {}).get("MeterPort", {}).get("status")


def test_an_adapter_that_fails_hangs_and_recovers_under_its_budget(
    broker: Mosquitto, observer: Observer, tmp_path: Path, run_agent
) -> None:
    health = tmp_path / "health"
    health.write_text("ok")
    agent = run_agent(write_app(tmp_path, broker.port, ADAPTER_APP))

    def meter_is(state: bytes) -> None:
        eventually(
            lambda: payloads(observer, "sup/meter/availability")[-1:] == [state],
            BOUND,
            f"meter {state!r}",
            describe=lambda: f"{payloads(observer, 'sup/meter/availability')}\n{agent.log()}",
        )

    meter_is(b"online")
    eventually(lambda: _adapter_status(observer) == "ok", BOUND, "adapter ok")

    health.write_text("fail")  # one failed check: the meter goes offline
    meter_is(b"offline")
    report = json.loads(observer.wait_for("sup/error", timeout=BOUND).payload)
    assert report["error_type"] == "adapter_unhealthy"
    assert report["details"] == {"adapter": "MeterPort", "reason": "returned_false"}
    health.write_text("ok")  # recovered before a restart was due
    meter_is(b"online")
    assert not (tmp_path / "resets").exists()

    health.write_text("hang")  # overruns count as failures: after three, a restart
    eventually(lambda: (tmp_path / "resets").exists(), BOUND, "reset()", describe=agent.log)
    assert payloads(observer, "sup/meter/availability").count(b"offline") == 2  # the hang
    meter_is(b"online")  # the reset cured the hang
    eventually(lambda: _adapter_status(observer) == "ok", BOUND, "adapter ok again")

    health.write_text("fail")  # the budget (one restart) is spent: given up
    eventually(lambda: _adapter_status(observer) == "failed", BOUND, "adapter failed",
               describe=agent.log)  # fmt: skip
    meter_is(b"offline")
    assert (tmp_path / "resets").read_text() == "x"  # exactly one attempt
    exhausted = [json.loads(p) for p in payloads(observer, "sup/error")]
    assert any(e["error_type"] == "restarts_exhausted" for e in exhausted)
    states_before = len(observer.messages("sup/meter/state"))
    health.write_text("ok")  # too late: failed until the process restarts
    time.sleep(1.0)  # proving an absence: the meter is not called any more
    assert len(observer.messages("sup/meter/state")) == states_before
    assert payloads(observer, "sup/meter/availability")[-1] == b"offline"
    assert agent.terminate() == 0
