"""End to end: a command flood must not become an unbounded error flood.

Issue "a command flood becomes an unbounded error flood": when commands arrive faster than a
device handles them, its bounded queue drops the oldest ones. That is right; what must stay
bounded is everything around it. This test floods one command device of a real
``python -m agent --config FILE`` subprocess with 5,000 QoS 0 commands/s for 30 s through a
private mosquitto, then checks that:

* the agent's memory stays flat (peak VmRSS within 10 MiB of the settled baseline);
* an unrelated telemetry device keeps its cadence: no reading lost, each on the wire within
  one interval of its tick;
* a normal command after the flood is handled at once;
* drops are reported aggregated (about one ``command_overflow`` payload per second, each with
  ``details.dropped``) and the reports add up to exactly what was dropped;
* the log gets about one WARNING line per second, not one per dropped command;
* the agent is still alive and shuts down cleanly.

Everything is measured first and printed (``pytest -s``), then all requirement checks are
evaluated together so a failure names every broken bound with the figures measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from e2e_helpers import AgentProcess, agent_env

from agent.testing.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

PREFIX = "floodapp"
AGENT_CLIENT_ID = "floodapp-agent"  # fixed, so the broker's log can be read for it
COMMAND_TOPIC = f"{PREFIX}/valve/set"

METER_INTERVAL = 0.5
SETTLE_SECONDS = 2.0
FLOOD_RATE = 5000  # commands per second
FLOOD_SECONDS = 30.0
FLOOD_BATCH = 50  # published back to back every FLOOD_BATCH / FLOOD_RATE = 10 ms
AFTER_SECONDS = 3.0
SAMPLE_PERIOD = 0.1

RSS_LIMIT = 10 * 1024 * 1024
FINAL_LIMIT = 2.0
FINAL_WAIT = 5.0  # how long to look for it: past the limit, so the figure shows by how much
MAX_REPORTS = int(FLOOD_SECONDS) + 5  # about one per second of flood, plus partial windows
MAX_WARNING_LINES = MAX_REPORTS
MIN_RATE_FRACTION = 0.8  # below this the publisher, not the agent, is what was tested

BOUND = 10.0  # every wait for something that should come promptly

APP_SOURCE = f'''\
"""The app under test: a command device to flood and a telemetry device to keep time."""

import time

import agent

app = agent.App("{PREFIX}", heartbeat_interval=2)

_readings = 0
_handled = 0


@app.telemetry("meter", interval={METER_INTERVAL})
def meter() -> dict:
    # seq is the handler's own count, so a missing seq on the wire is a lost state
    global _readings
    seq, _readings = _readings, _readings + 1
    return {{"seq": seq, "t": time.time()}}


@app.command("valve")
def valve(payload: str) -> dict:
    # handled lets the test count what the agent executed, as retained states coalesce
    global _handled
    _handled += 1
    time.sleep(0.001)
    return {{"last": payload, "handled": _handled}}
'''

# The flood runs in its own process: in this one it would compete for the GIL with the
# recorders' network threads and make the recorded arrival times (and so the lateness
# asserted below) worse than what the agent actually did.
PUBLISHER_SOURCE = """\
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt

host, port, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rate, seconds, batch = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])

if hasattr(mqtt, "CallbackAPIVersion"):  # paho 2.x
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flood-publisher")
else:
    client = mqtt.Client(client_id="flood-publisher")
connected = threading.Event()
client.on_connect = lambda *args: connected.set()
client.connect(host, port, keepalive=30)
client.loop_start()
if not connected.wait(10):
    sys.exit("flood publisher: no CONNACK in 10 s")

total = int(rate * seconds)
period = batch / rate
sent = 0
info = None
start = time.monotonic()
while sent < total:
    for _ in range(min(batch, total - sent)):
        info = client.publish(topic, f"f{sent}", qos=0)
        sent += 1
    # paced against the start, so a late batch is caught up rather than the rate drifting
    delay = start + (sent // batch) * period - time.monotonic()
    if delay > 0:
        time.sleep(delay)
queued = time.monotonic()
# QoS 0 counts as published once paho has written it to the socket
info.wait_for_publish(10)
written = time.monotonic()
ok = info.is_published()
client.disconnect()
client.loop_stop()
print(json.dumps({
    "sent": sent,
    "all_written": ok,
    "queue_seconds": queued - start,
    "write_seconds": written - start,
    "rate": sent / (written - start),
}))
"""


@dataclass(frozen=True)
class Arrival:
    """One message as the recorder got it."""

    topic: str
    payload: bytes
    retain: bool
    wall: float  # time.time(): comparable with the agent's own time.time() on this machine
    mono: float  # time.monotonic(): for durations measured by this test

    def json(self) -> Any:
        return json.loads(self.payload)


def _new_client(client_id: str) -> Any:
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho 2.x
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    return mqtt.Client(client_id=client_id)


class Recorder:
    """A paho client (1.6 or 2.x) stamping every message with its arrival time.

    The ``observer`` fixture subscribes to ``#`` and would take all 50,000 flood commands in
    this process too; these only subscribe to what the agent publishes.
    """

    def __init__(self, host: str, port: int, topics: list[str], client_id: str) -> None:
        self._cond = threading.Condition()
        self._by_topic: dict[str, list[Arrival]] = {}
        self._topics = topics
        self._pending_subacks: set[int] = set()
        self._ready = False
        self._client = _new_client(client_id)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()
        with self._cond:
            ready = self._cond.wait_for(lambda: self._ready, BOUND)
        if not ready:
            self.close()
            raise TimeoutError(f"recorder could not connect and subscribe to {host}:{port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        if (rc if isinstance(rc, int) else getattr(rc, "value", rc)) != 0:
            return
        _, mid = client.subscribe([(topic, 1) for topic in self._topics])
        with self._cond:
            self._pending_subacks.add(mid)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        with self._cond:
            self._pending_subacks.discard(mid)
            self._ready = not self._pending_subacks
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        arrival = Arrival(
            msg.topic, bytes(msg.payload), bool(msg.retain), time.time(), time.monotonic()
        )
        with self._cond:
            self._by_topic.setdefault(arrival.topic, []).append(arrival)
            self._cond.notify_all()

    def on(self, topic: str) -> list[Arrival]:
        """Everything recorded so far on exactly ``topic``, in arrival order."""
        with self._cond:
            return list(self._by_topic.get(topic, ()))

    def first(
        self, topic: str, predicate: Callable[[Arrival], bool], timeout: float
    ) -> Arrival | None:
        """The first arrival on ``topic`` satisfying ``predicate``, waiting up to ``timeout``.

        Only new arrivals are examined on each wake-up, so a busy topic stays cheap; the
        time that matters is the arrival's own stamp, never when this returns.
        """
        checked = 0
        found: list[Arrival] = []

        def scan() -> bool:
            nonlocal checked
            arrivals = self._by_topic.get(topic, [])
            for arrival in arrivals[checked:]:
                if predicate(arrival):
                    found.append(arrival)
                    return True
            checked = len(arrivals)
            return False

        with self._cond:
            self._cond.wait_for(scan, timeout)
        return found[0] if found else None

    def publish(self, topic: str, payload: str) -> None:
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(BOUND)
        if not info.is_published():
            raise TimeoutError(f"recorder publish to {topic} not acknowledged in {BOUND} s")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def vm_rss(pid: int) -> int | None:
    """The resident set size of ``pid`` in bytes, None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def delivered_by_broker(broker: Mosquitto, client_id: str, topic: str) -> int | None:
    """How many messages on ``topic`` mosquitto sent to ``client_id``, from its log.

    mosquitto drops QoS 0 messages for a client that does not keep up, so the count sent by
    the flood publisher is only an upper bound of what reached the agent. The fixture's
    broker logs every PUBLISH (``log_type all``); None when its log does not show them
    (RabbitMQ logs no PUBLISH).
    """
    if broker.kind != "mosquitto":
        return None
    marker = f"Sending PUBLISH to {client_id} ("
    quoted = f"'{topic}'"
    count = 0
    with open(broker.log_path, errors="replace") as log:
        for line in log:
            if marker in line and quoted in line:
                count += 1
    return count or None


@pytest.fixture
def states(broker: Mosquitto) -> Iterator[Recorder]:
    """What the agent publishes as state, availability and heartbeat.

    Kept apart from the error reports: a client taking an error flood falls behind, and
    the broker queues (and past its limit drops) everything else for it in order, so on one
    client the meter's lateness would measure this test's intake rather than the agent.
    """
    topics = [f"{PREFIX}/status", f"{PREFIX}/+/availability", f"{PREFIX}/+/state"]
    watcher = Recorder(broker.host, broker.port, topics, client_id="flood-states")
    try:
        yield watcher
    finally:
        watcher.close()


@pytest.fixture
def errors(broker: Mosquitto) -> Iterator[Recorder]:
    """The error reports, app-wide and per device."""
    topics = [f"{PREFIX}/error", f"{PREFIX}/+/error"]
    watcher = Recorder(broker.host, broker.port, topics, client_id="flood-errors")
    try:
        yield watcher
    finally:
        watcher.close()


@pytest.fixture
def agent_process(
    broker: Mosquitto, tmp_path: Path, states: Recorder, errors: Recorder
) -> Iterator[AgentProcess]:
    # After the recorders: every state they see is live, none a retained replay.
    (tmp_path / "floodapp.py").write_text(APP_SOURCE)
    config = tmp_path / "agent.toml"
    config.write_text(
        'app = "floodapp:app"\n'
        "[mqtt]\n"
        'host = "127.0.0.1"\n'
        f"port = {broker.port}\n"
        f'client_id = "{AGENT_CLIENT_ID}"\n'
        "reconnect_min_delay = 0.1\n"
        "reconnect_max_delay = 0.5\n"
        "[logging]\n"
        'format = "text"\n'
        'level = "INFO"\n'
    )
    process = AgentProcess(config)
    try:
        yield process
    finally:
        process.kill()


def is_heartbeat(arrival: Arrival) -> bool:
    return arrival.payload.startswith(b"{") and arrival.json().get("status") == "online"


def overflow_reports(arrivals: list[Arrival]) -> list[dict[str, Any]]:
    reports = []
    for arrival in arrivals:
        with suppress(ValueError):
            body = arrival.json()
            if isinstance(body, dict) and body.get("error_type") == "command_overflow":
                reports.append(body)
    return reports


def dropped_of(report: dict[str, Any]) -> int | None:
    details = report.get("details")
    value = details.get("dropped") if isinstance(details, dict) else None
    # bool is an int in Python, but not a count
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def test_command_flood_stays_bounded(
    broker: Mosquitto,
    states: Recorder,
    errors: Recorder,
    agent_process: AgentProcess,
    tmp_path: Path,
) -> None:
    agent = agent_process
    pid = agent.proc.pid

    # -- up and settled ----------------------------------------------------------------
    assert states.first(f"{PREFIX}/status", is_heartbeat, BOUND), agent.log()
    for device in ("valve", "meter"):
        online = states.first(
            f"{PREFIX}/{device}/availability", lambda a: a.payload == b"online", BOUND
        )
        assert online, f"{device} not online within {BOUND} s:\n{agent.log()}"
    time.sleep(SETTLE_SECONDS)
    baseline = vm_rss(pid)
    assert baseline, f"no VmRSS for pid {pid}: the agent is gone?\n{agent.log()}"

    # -- the flood, RSS sampled throughout and for a while after -------------------------
    (tmp_path / "flood_publisher.py").write_text(PUBLISHER_SOURCE)
    publisher = subprocess.Popen(
        [
            sys.executable,
            str(tmp_path / "flood_publisher.py"),
            broker.host,
            str(broker.port),
            COMMAND_TOPIC,
            str(FLOOD_RATE),
            str(FLOOD_SECONDS),
            str(FLOOD_BATCH),
        ],
        env=agent_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples: list[int] = []
    try:
        flood_deadline = time.monotonic() + FLOOD_SECONDS + BOUND
        while publisher.poll() is None and time.monotonic() < flood_deadline:
            rss = vm_rss(pid)
            if rss is not None:
                samples.append(rss)
            time.sleep(SAMPLE_PERIOD)
        out, err = publisher.communicate(timeout=BOUND)
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait(BOUND)
    assert publisher.returncode == 0, f"flood publisher failed ({publisher.returncode}): {err}"
    flood = json.loads(out)
    flooded = int(flood["sent"])
    after_deadline = time.monotonic() + AFTER_SECONDS
    while time.monotonic() < after_deadline:
        rss = vm_rss(pid)
        if rss is not None:
            samples.append(rss)
        time.sleep(SAMPLE_PERIOD)
    alive_after_flood = agent.proc.poll() is None
    # read now, before the final command is sent on the same topic
    delivered = delivered_by_broker(broker, AGENT_CLIENT_ID, COMMAND_TOPIC)

    # -- one normal command ------------------------------------------------------------
    published_final = time.monotonic()
    states.publish(COMMAND_TOPIC, "final")
    final = states.first(
        f"{PREFIX}/valve/state", lambda a: a.json().get("last") == "final", FINAL_WAIT
    )
    final_latency = None if final is None else final.mono - published_final

    # -- shutdown ----------------------------------------------------------------------
    meter_states = states.on(f"{PREFIX}/meter/state")  # before shutdown adds anything
    try:
        exit_code: int | None = agent.terminate(BOUND)
    except subprocess.TimeoutExpired:
        exit_code = None
        agent.kill()
    log_lines = agent.log().splitlines()

    # -- figures -----------------------------------------------------------------------
    valve_states = [a.json() for a in states.on(f"{PREFIX}/valve/state")]
    handled_max = max((s.get("handled", 0) for s in valve_states), default=0)
    # the final command's state carries the count including itself
    handled_in_flood = (final.json()["handled"] - 1) if final else handled_max

    app_reports = overflow_reports(errors.on(f"{PREFIX}/error"))
    device_reports = overflow_reports(errors.on(f"{PREFIX}/valve/error"))
    app_counts = [dropped_of(r) for r in app_reports]
    device_counts = [dropped_of(r) for r in device_reports]
    device_dropped = sum(c for c in device_counts if c is not None)
    app_dropped = sum(c for c in app_counts if c is not None)
    bad_reports = [r for r, c in zip(app_reports, app_counts, strict=True) if c is None or c < 1]
    misshapen = [
        r
        for r in app_reports
        if set(r) != {"error_type", "message", "device", "timestamp", "details"}
        or r["device"] != "valve"
    ]
    # what the agent must have dropped: everything that reached it and was not handled
    must_have_dropped = (delivered if delivered is not None else flooded) - handled_in_flood

    warning_lines = [line for line in log_lines if " WARNING " in line and "valve" in line]

    meter = [(a.json()["seq"], a.json()["t"], a.wall) for a in meter_states]
    seqs = [seq for seq, _, _ in meter]
    missing = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs)) if seqs else []
    lateness = [wall - t for _, t, wall in meter]
    # The tick of reading n is anchor + n * interval (the scheduler is drift-free); the
    # anchor is estimated from the readings themselves, so the estimate errs on the lenient
    # side. A skipped tick shifts every later reading by an interval and shows up here,
    # where the handler's own t cannot show it. Reading 0 is taken at start, off schedule.
    scheduled = [(seq, t, wall) for seq, t, wall in meter if seq >= 1]
    anchor = min((t - seq * METER_INTERVAL for seq, t, _ in scheduled), default=0.0)
    tick_lateness = [wall - (anchor + seq * METER_INTERVAL) for seq, _, wall in scheduled]

    peak = max(samples, default=0)
    mib = 1024 * 1024
    figures = {
        "baseline_rss_mib": round(baseline / mib, 2),
        "peak_rss_mib": round(peak / mib, 2),
        "rss_growth_mib": round((peak - baseline) / mib, 2),
        "rss_samples": len(samples),
        "flooded": flooded,
        "flood_rate_achieved": round(flood["rate"]),
        "flood_write_seconds": round(flood["write_seconds"], 2),
        "delivered_to_agent_by_broker": delivered,
        "handled_in_flood": handled_in_flood,
        "valve_states_seen": len(valve_states),
        "overflow_reports_app_topic": len(app_reports),
        "overflow_reports_device_topic": len(device_reports),
        "reported_dropped_device_topic": device_dropped,
        "reported_dropped_app_topic": app_dropped,
        "must_have_dropped": must_have_dropped,
        "warning_lines_valve": len(warning_lines),
        "log_lines": len(log_lines),
        "meter_states": len(meter),
        "meter_seq_range": (seqs[0], seqs[-1]) if seqs else None,
        "meter_missing_seqs": len(missing),
        "meter_max_lateness_s": round(max(lateness, default=0.0), 3),
        "meter_max_tick_lateness_s": round(max(tick_lateness, default=0.0), 3),
        "final_latency_s": None if final_latency is None else round(final_latency, 3),
        "alive_after_flood": alive_after_flood,
        "exit_code": exit_code,
    }
    summary = json.dumps(figures)
    print("\nflood figures:", json.dumps(figures, indent=1))

    # -- the harness did what it claims ------------------------------------------------
    assert flood["all_written"] and flooded == int(FLOOD_RATE * FLOOD_SECONDS), flood
    assert flood["rate"] >= MIN_RATE_FRACTION * FLOOD_RATE, (
        f"the publisher reached only {flood['rate']:.0f} msg/s of {FLOOD_RATE}: "
        f"this machine cannot run the flood test as specified ({summary})"
    )
    expected_samples = (FLOOD_SECONDS + AFTER_SECONDS) / SAMPLE_PERIOD
    assert len(samples) >= expected_samples / 2, f"too few RSS samples: {summary}"
    assert delivered is None or handled_in_flood <= delivered <= flooded, summary
    assert len(seqs) >= 2, f"too few meter states to judge: {summary}"

    # -- the requirement, every bound evaluated before failing -------------------------
    failures: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            failures.append(message)

    check(
        peak - baseline <= RSS_LIMIT,
        f"RSS grew by {(peak - baseline) / mib:.1f} MiB (baseline {baseline / mib:.1f} MiB, "
        f"peak {peak / mib:.1f} MiB), limit {RSS_LIMIT / mib:.0f} MiB",
    )
    check(alive_after_flood, f"the agent died during the flood (exit {agent.proc.returncode})")
    check(
        not missing,
        f"{len(missing)} meter states lost between seq {seqs[0]} and {seqs[-1]}: {missing[:20]}",
    )
    late = [round(x, 3) for x in lateness if x > METER_INTERVAL]
    check(
        not late,
        f"{len(late)} of {len(meter)} meter states arrived more than {METER_INTERVAL} s after "
        f"their reading (arrival - t), worst {max(lateness):.3f} s: {late[:20]}",
    )
    tick_late = [round(x, 3) for x in tick_lateness if x > METER_INTERVAL]
    check(
        not tick_late,
        f"{len(tick_late)} meter states arrived more than {METER_INTERVAL} s after their "
        f"scheduled tick (a tick was skipped or served late), worst "
        f"{max(tick_lateness, default=0.0):.3f} s: {tick_late[:20]}",
    )
    check(
        final_latency is not None and final_latency <= FINAL_LIMIT,
        f"the 'final' command's state came after {final_latency} s (None: not within "
        f"{FINAL_WAIT} s), limit {FINAL_LIMIT} s",
    )
    check(
        0 < len(app_reports) <= MAX_REPORTS,
        f"{len(app_reports)} command_overflow reports on {PREFIX}/error for a "
        f"{FLOOD_SECONDS:g} s flood, expected 1..{MAX_REPORTS}",
    )
    check(
        not bad_reports,
        f"{len(bad_reports)} of {len(app_reports)} command_overflow reports lack an int "
        f"details.dropped >= 1, e.g. {bad_reports[:1]}",
    )
    check(not misshapen, f"{len(misshapen)} malformed overflow reports, e.g. {misshapen[:1]}")
    check(
        1 <= device_dropped <= flooded and device_dropped == must_have_dropped,
        f"command_overflow reports on {PREFIX}/valve/error add up to {device_dropped} "
        f"dropped, but {must_have_dropped} commands were dropped (delivered "
        f"{delivered if delivered is not None else flooded}, handled {handled_in_flood})",
    )
    check(
        len(warning_lines) <= MAX_WARNING_LINES,
        f"{len(warning_lines)} WARNING log lines about the valve during the flood, limit "
        f"{MAX_WARNING_LINES}; first: {warning_lines[:2]}",
    )
    check(exit_code == 0, f"exit code after SIGTERM: {exit_code} (None: not within {BOUND} s)")
    assert not failures, "\n".join(["the flood broke these bounds:", *failures, summary])
