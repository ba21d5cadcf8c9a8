"""Benchmark of a fleet: N agent processes of 10 telemetry devices each against one broker.

Run from the repository root with the PyPI venv::

    build/venv-pypi/bin/python bench/fleet.py --quick        # 5 agents, a smoke run (~20 s)
    build/venv-pypi/bin/python bench/fleet.py                # 100 agents, 2 rounds (~2.5 min)
    build/venv-pypi/bin/python bench/fleet.py --agents 50 --duration 60 --rounds 3 --keep
    build/venv-pypi/bin/python bench/fleet.py --python /usr/bin/python3   # Debian's paho 1.6

``python -m bench`` calls :func:`run_fleet` with its own broker; run alone, this module
starts its own :class:`~bench.common.Broker` (Debian's mosquitto on a free port of
127.0.0.1, ``set_tcp_nodelay true``, ``persistence false``, only errors and warnings
logged, ``sys_interval 1``) and prints the figures as a Markdown table.

What runs. A *fleet* is N processes started one after the other, then measured together:

* **agent** — N × ``python -m agent --config aNNN.toml`` on bench/fleet_app.py, which is
  bench/telemetry_app.py (``BENCH_DEVICES`` = 10 telemetry devices ``d0..d9`` every 1 s,
  each publishing ``{"v": k}`` retained, QoS 1, to its state topic) with the heartbeat
  every ``--heartbeat`` seconds instead of once an hour. Each agent has its own TOML file
  with its own ``mqtt.client_id`` (``fleetagent-aNNN``) and ``mqtt.topic_prefix``
  (``fleetagent/aNNN``), so the agents share nothing on the broker: states go to
  ``fleetagent/aNNN/dK/state``, heartbeats to ``fleetagent/aNNN/status``.
* **baseline** — N × bench/telemetry_baseline.py, one paho client (client id
  ``benchbase-PID``) and one thread per device, publishing the same payloads the same way to
  ``fleetbase/bNNN/dK/state``. It has no heartbeat.

The two fleets run alternately (agent, baseline, agent, ...) for ``rounds`` rounds each,
never at the same time; every figure is the median of its rounds.

How each figure is computed, the same way for both fleets:

* **Start-up.** The processes are spawned staggered: at most ``2 × CPUs`` of them are
  starting (spawned, not yet ready) at any moment, so a 2-core machine is not asked to
  import 100 Pythons at once and the figure measures start-up rather than a thundering herd.
  A process is *ready* once every device of it has been called once (telemetry_app's and
  the baseline's ``--ready`` file, which holds the ``time.monotonic()`` of that moment;
  CLOCK_MONOTONIC is one clock for every process of the machine). **fleet start** is the
  time from the spawn of the first process to the moment the last one was ready: about
  ``N × (spawn → ready of one) / (2 × CPUs)`` while the machine keeps up.
* **Window.** It starts ``settle`` seconds after the last process was ready (so the
  start-up of the last ones, their first heartbeat and the connection bursts are outside
  it) and lasts ``duration`` seconds. Each process's own start-up is also given as the
  median of spawn → ready (in the note).
* **fleet stop** — from SIGTERM to every process at once until the last has exited.
* **RSS** — ``VmRSS`` of each process (/proc/PID/status), sampled every second in the
  window; per process its peak; the figure is the median over the processes, and beside it
  the maximum. RSS counts the shared pages (the interpreter, libc, ...) in every process, so
  **fleet memory** shows what the machine really gave the fleet: the drop of ``MemAvailable``
  (/proc/meminfo) from just before the first spawn to the end of the window, for the whole
  fleet. (Other tenants of the shared machine move it too: read it as an estimate.)
* **threads** — ``Threads`` of /proc/PID/status at its highest in the window, median over
  the processes.
* **fleet CPU** — the sum over the processes of ``utime + stime`` (/proc/PID/stat, every
  thread) over the window, divided by the window's wall time: % of one core, so up to 200
  on 2 cores. **broker CPU** likewise for mosquitto.
* **broker messages/s** — mosquitto's ``$SYS/broker/messages/received`` (every MQTT packet
  it read, mosquitto 2.0) arrives every second; the rate is the difference of the last and
  the first value that arrived in the window (or in the 2 s after it, while the fleet still
  runs) over the time between their arrivals. Expected:
  ``N × devices / interval`` PUBLISH packets a second, plus ``N / heartbeat`` for the agent's
  heartbeats; the QoS 1 acknowledgements go from the broker to the publishers and are not
  counted. About one packet a second more comes from the $SYS observer of
  :class:`~bench.common.Broker`, which acknowledges each value it gets.
* **states missing** — an observer (a paho client in this process, subscribed at QoS 0 to
  every state and status topic of both fleets, so it adds no packet to the broker's count)
  keeps each state message that arrives from the window's start until 2 s after its end,
  with its ``v`` and ``time.monotonic()`` on arrival. Each process writes, when stopped, the
  time of every call of each device's handler (call ``k`` published ``{"v": k}``), so the
  states *published in the window* are known exactly, whatever the observer's own delays.
  Per device: *lost* are the states published in the window that never arrived (within the
  2 s); *not published* is the shortfall beyond one of the calls in the window against
  ``duration / interval`` (ticks skipped: one less is a tick that fell just outside the
  window). **states missing** = lost + not published, summed over the fleet; target 0. The
  note adds duplicates (a ``v`` that arrived twice) and the skipped ticks the processes
  counted themselves over their whole run (the agent's scheduler, the baseline's threads).
  A process that left no result file is judged by arrivals in the window alone.
* **state latency** — for every state published in the window, its arrival at the
  observer minus the call of its handler: p99 (the figure), p50 and max in the note. The
  observer runs in the benchmark's process, as one Python thread taking 1,000 messages a
  second: its own delay is in both fleets' figures alike.
* **heartbeats missing** (agent only) — the same observer records when each agent's
  heartbeat (a JSON ``{prefix}/status``; ``online``/``offline`` are not heartbeats) arrives
  in the window: ``duration / heartbeat`` are expected, ±1 at the edges. Per agent,
  *missing* is the larger of the shortfall beyond one and the beats hidden in the gaps
  between consecutive arrivals (a gap of ``round(gap / heartbeat) = m`` periods hides
  ``m − 1``). Summed over the fleet; the target is 0.

Targets. The issue sets none for the fleet; these are the suite's usual ones: RSS per
process ≤ 1.5× the baseline's, fleet CPU ≤ 2× (as for 1,000 devices in one process), broker
CPU ≤ 1.5× (the agent sends 2 % more packets, its heartbeats), broker messages ≥ 99 % of
the agent's expected rate, and nothing missing: no state, no heartbeat. Start, stop,
threads and memory are shown without a target.

Every process ends: SIGTERM to the whole fleet at once, then each is waited for; one still
running after 30 s gets SIGTERM and, 5 s later, SIGKILL (:class:`~bench.common.Children`).
A process that exits with another code than 0 is counted in the note of "fleet start", one
whose log holds a WARNING (or worse) in that of "fleet stop", each with the line that says
why. A round of the agent that ran other agent sources than the one before (others edit
agent/ too) is flagged there as well.
The machine's free memory (``MemAvailable``) before and after the whole scenario is printed
(and kept in ``options.raw["fleet.mem_available_mib"]``): the same figure twice shows
that nothing was left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


from bench.common import (  # noqa: E402 - after the path
    SYS_RECEIVED,
    Broker,
    Children,
    Figure,
    Options,
    Target,
    agent_env,
    cpu_model,
    cpu_seconds,
    describe_agent,
    interpreter_text,
    load_average,
    machine_jiffies,
    median,
    new_client,
    percentile,
    proc_status,
    sleep_until,
    source_digest,
)
from bench.report import notes, table  # noqa: E402

SCENARIO = "fleet"
AGENT_ROOT = "fleetagent"
"""First topic level of every agent of the fleet; each agent's prefix is ``fleetagent/aNNN``."""
BASE_ROOT = "fleetbase"
"""First topic level of every baseline process; each one's prefix is ``fleetbase/bNNN``."""
IMPLS = ("agent", "baseline")
GRACE = 2.0
"""Seconds after the window during which a state published in it may still arrive."""


# -- the job --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One fleet, run the same way for agent and baseline."""

    agents: int  # processes in the fleet
    devices: int  # telemetry devices in each
    interval: float  # of every device, s
    heartbeat: float  # of every agent, s
    duration: float  # of the measurement window, s
    settle: float  # from the last process ready to the window, s
    start_timeout: float = 60.0  # for one process, from its spawn to ready

    @property
    def expected_states(self) -> int:
        """State messages of one device in the window."""
        return round(self.duration / self.interval)

    @property
    def expected_heartbeats(self) -> int:
        """Heartbeats of one agent in the window."""
        return round(self.duration / self.heartbeat)

    def expected_rate(self, impl: str) -> float:
        """PUBLISH packets the broker should receive a second from the fleet."""
        rate = self.agents * self.devices / self.interval
        return rate + (self.agents / self.heartbeat if impl == "agent" else 0.0)


def job_for(
    quick: bool,
    agents: int | None = None,
    devices: int | None = None,
    duration: float | None = None,
    heartbeat: float | None = None,
) -> Job:
    """Quick: 5 agents, a 6 s window, a heartbeat every 2 s (3 in the window); full: 100
    agents, 20 s, every 5 s (4 in the window)."""
    return Job(
        agents=agents if agents is not None else (5 if quick else 100),
        devices=devices if devices is not None else 10,
        interval=1.0,
        heartbeat=heartbeat if heartbeat is not None else (2.0 if quick else 5.0),
        duration=duration if duration is not None else (6.0 if quick else 20.0),
        settle=2.0 if quick else 5.0,
    )


# -- what one round of one fleet produced ---------------------------------------------------


@dataclass
class FleetRun:
    """The figures of one round of one fleet (NaN where it could not be measured)."""

    impl: str
    status: str = "ok"
    start_s: float = math.nan  # first spawn -> last ready
    process_start_s: list[float] = field(default_factory=list)  # spawn -> ready, each
    rss_mib: list[float] = field(default_factory=list)  # peak in the window, each process
    threads: list[int] = field(default_factory=list)  # highest in the window, each process
    cpu_pct: list[float] = field(default_factory=list)  # over the window, each process
    fleet_cpu_pct: float = math.nan
    broker_cpu_pct: float = math.nan
    broker_rate: float = math.nan
    memory_mib: float = math.nan  # MemAvailable before spawn - at the window's end
    machine_busy_pct: float = math.nan
    load_before: float = math.nan
    states_expected: int = 0  # in the window, the whole fleet
    states_missing: int = 0  # lost + short
    states_lost: int = 0  # published in the window, never arrived
    states_short: int = 0  # never published: the shortfall beyond one
    states_duplicates: int = 0
    without_result: int = 0  # devices whose process left no result file
    own_skipped: int = 0  # what the processes counted as skipped, whole run
    per_device: list[int] = field(default_factory=list)  # delivered, each device
    latency_ms: list[float] = field(default_factory=list)  # handler call -> observer
    heartbeats: list[int] = field(default_factory=list)  # received, each agent
    heartbeats_missing: int = 0
    stop_s: float = math.nan  # SIGTERM to the fleet -> every process exited
    bad_exits: list[str] = field(default_factory=list)  # "a007: 1 (why)"
    warned: list[str] = field(default_factory=list)  # "a007: its first warning", each
    digest: str = ""  # of the agent sources when the round began (agent only)


# -- the observer ---------------------------------------------------------------------------


@dataclass
class Seen:
    """What the observer recorded while it was open."""

    states: dict[str, dict[int, float]]  # state topic -> ``v`` -> its first arrival
    duplicates: int  # state messages whose ``v`` had arrived before
    heartbeats: dict[str, list[float]]  # status topic -> arrival time of each heartbeat
    other: int  # state messages without a readable ``v``


class FleetObserver:
    """One paho client that sees every state and heartbeat of both fleets, and $SYS.

    It subscribes at QoS 0: a QoS 1 subscription would send the broker a PUBACK for every
    message, which it would count in ``messages/received`` beside the fleet's own packets.
    Messages are kept only while it is open (:meth:`open`), stamped with
    ``time.monotonic()`` on arrival; the ``$SYS`` received count is kept always.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self._lock = threading.Lock()
        self._span = (math.inf, -math.inf)
        self._seen = Seen({}, 0, {}, 0)
        self.sys_received: list[tuple[float, int]] = []  # (arrival, value)
        self._subscribed = threading.Event()
        self._topics = [
            f"{AGENT_ROOT}/+/+/state",
            f"{AGENT_ROOT}/+/status",
            f"{BASE_ROOT}/+/+/state",
            SYS_RECEIVED,
        ]
        self._client = new_client(f"bench-fleet-observer-{os.getpid()}")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=60)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise TimeoutError(f"fleet observer: no subscription at {host}:{port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        client.subscribe([(topic, 0) for topic in self._topics])

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        t = time.monotonic()
        topic, payload = msg.topic, bytes(msg.payload)
        if topic == SYS_RECEIVED:
            with contextlib.suppress(ValueError):
                self.sys_received.append((t, int(payload)))
            return
        with self._lock:
            start, end = self._span
            if not start <= t < end:
                return
            seen = self._seen
            if topic.endswith("/status"):
                if payload.startswith(b"{"):  # not "online"/"offline": a heartbeat
                    seen.heartbeats.setdefault(topic, []).append(t)
                return
            try:
                v = int(json.loads(payload)["v"])
            except (ValueError, KeyError, TypeError):
                seen.other += 1
                return
            arrived = seen.states.setdefault(topic, {})
            if v in arrived:
                seen.duplicates += 1
            else:
                arrived[v] = t

    def open(self, start: float, end: float) -> None:
        """Keep what arrives in ``[start, end)`` (monotonic), forgetting what was kept."""
        with self._lock:
            self._seen = Seen({}, 0, {}, 0)
            self._span = (start, end)

    def take(self) -> Seen:
        """What was kept; the observer is closed until the next :meth:`open`."""
        with self._lock:
            self._span = (math.inf, -math.inf)
            return self._seen

    def rate(self, start: float, end: float) -> float:
        """Packets a second the broker received between the first and the last ``$SYS``
        value that arrived in ``[start, end]``."""
        samples = [(t, v) for t, v in list(self.sys_received) if start <= t <= end]
        if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
            return math.nan
        (t0, v0), (t1, v1) = samples[0], samples[-1]
        return (v1 - v0) / (t1 - t0)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()


# -- counting what arrived ------------------------------------------------------------------


def count_states(
    run: FleetRun,
    seen: Seen,
    devices: Sequence[tuple[str, Sequence[float] | None]],
    window: tuple[float, float],
    expected: int,
) -> None:
    """Fill the state figures of ``run`` (see the module's docstring).

    ``devices``: each device's state topic and the ``time.monotonic()`` of each call of its
    handler, from its process's result file (call ``k``, from 1, published ``{"v": k}``);
    None when the process left no result file: then only what arrived in the window counts.
    """
    start, end = window
    run.states_expected = expected * len(devices)
    run.states_duplicates = seen.duplicates
    for topic, stamps in devices:
        arrived = seen.states.get(topic, {})
        if stamps is None:
            got = sum(1 for t in arrived.values() if t < end)
            run.without_result += 1
            run.per_device.append(got)
            run.states_missing += max(0, expected - 1 - got)
            continue
        produced = [v for v, t in enumerate(stamps, start=1) if start <= t < end]
        delivered = [v for v in produced if v in arrived]
        short = max(0, expected - 1 - len(produced))
        run.per_device.append(len(delivered))
        run.states_lost += len(produced) - len(delivered)
        run.states_short += short
        run.states_missing += len(produced) - len(delivered) + short
        run.latency_ms.extend((arrived[v] - stamps[v - 1]) * 1000 for v in delivered)


def count_heartbeats(
    run: FleetRun, seen: Seen, topics: Sequence[str], window: tuple[float, float], job: Job
) -> None:
    """Fill the heartbeat figures of ``run`` (agent only; see the module's docstring)."""
    start, end = window
    expected = job.expected_heartbeats
    for topic in topics:
        times = sorted(t for t in seen.heartbeats.get(topic, []) if start <= t < end)
        hidden = sum(
            max(0, round((b - a) / job.heartbeat) - 1) for a, b in itertools.pairwise(times)
        )
        run.heartbeats.append(len(times))
        run.heartbeats_missing += max(hidden, expected - 1 - len(times), 0)


def read_result(member: Member) -> dict[str, Any]:
    """The result file a member wrote when it stopped (telemetry_app's or the baseline's),
    {} without one."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(member.ready_path.with_suffix(".json").read_text())
        if isinstance(data, dict):
            return data
    return {}


def own_skipped(result: dict[str, Any]) -> int:
    """The ticks a process counted as skipped itself, over its whole run: the agent's
    scheduler's missed periods (or its heartbeat's ``skipped_ticks``), the baseline's."""
    counters = result.get("own_counters") or {}
    keys = ("scheduler_missed", "heartbeat_skipped_ticks", "skipped")
    return max((int(counters.get(key) or 0) for key in keys), default=0)


# -- the processes --------------------------------------------------------------------------


def mem_available_mib() -> float:
    """MemAvailable of /proc/meminfo, MiB: what the machine could still give out."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return math.nan


@dataclass
class Member:
    """One process of a fleet."""

    name: str  # a007 / b007: its files in the round's folder carry this name
    prefix: str  # its topic prefix
    proc: subprocess.Popen[bytes]
    spawned: float  # time.monotonic() just before the spawn
    ready_path: Path
    log_path: Path
    ready: float | None = None


def write_agent_config(folder: Path, name: str, prefix: str, broker: Broker) -> Path:
    """The TOML file of one agent: its own client id and topic prefix on the private broker."""
    path = folder / f"{name}.toml"
    path.write_text(
        'app = "fleet_app:app"\n'
        "[mqtt]\n"
        f'host = "{broker.host}"\n'
        f"port = {broker.port}\n"
        f'client_id = "{AGENT_ROOT}-{name}"\n'
        f'topic_prefix = "{prefix}"\n'
        "reconnect_min_delay = 0.1\n"
        "reconnect_max_delay = 0.5\n"
        "[logging]\n"
        'format = "text"\n'
        'level = "WARNING"\n'
    )
    return path


def spawn(impl: str, index: int, job: Job, folder: Path, options: Options) -> Member:
    """Start process ``index`` of a fleet, its output going to ``<name>.log``."""
    broker = options.broker
    name = f"{impl[0]}{index:03d}"
    prefix = f"{AGENT_ROOT if impl == 'agent' else BASE_ROOT}/{name}"
    ready, out = folder / f"{name}.ready", folder / f"{name}.json"
    if impl == "agent":
        config = write_agent_config(folder, name, prefix, broker)
        env = agent_env()
        env.update(
            BENCH_DEVICES=str(job.devices),
            BENCH_INTERVAL=repr(job.interval),
            BENCH_GROUPS="0",
            BENCH_HEARTBEAT=repr(job.heartbeat),
            BENCH_OUT=str(out),
            BENCH_READY=str(ready),
        )
        cmd = [options.python, "-m", "agent", "--config", str(config)]
    else:
        env = dict(os.environ)
        cmd = [
            options.python,
            str(BENCH / "telemetry_baseline.py"),
            f"--host={broker.host}",
            f"--port={broker.port}",
            f"--devices={job.devices}",
            f"--interval={job.interval!r}",
            f"--prefix={prefix}",
            f"--out={out}",
            f"--ready={ready}",
        ]
    log_path = folder / f"{name}.log"
    with open(log_path, "wb") as log:
        spawned = time.monotonic()
        proc = options.children.spawn(cmd, cwd=folder, env=env, stdout=log, stderr=log)
    return Member(name, prefix, proc, spawned, ready, log_path)


def read_ready(member: Member) -> float | None:
    """The monotonic time in the member's ready file, once it is there."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return float(json.loads(member.ready_path.read_text())["t"])
    return None


def start_fleet(impl: str, job: Job, folder: Path, options: Options) -> tuple[list[Member], str]:
    """Spawn the fleet staggered (at most 2 × CPUs starting at once) and wait until every
    process is ready; the members (all that were spawned) and "" or why it failed."""
    limit = max(2, 2 * (os.cpu_count() or 1))
    members: list[Member] = []
    starting: list[Member] = []
    while len(members) < job.agents or starting:
        while len(members) < job.agents and len(starting) < limit:
            member = spawn(impl, len(members), job, folder, options)
            members.append(member)
            starting.append(member)
        for member in list(starting):
            member.ready = read_ready(member)
            if member.ready is not None:
                starting.remove(member)
            elif member.proc.poll() is not None:
                code = member.proc.returncode
                return members, f"{member.name} exited with {code} ({why_failed(member.log_path)})"
            elif time.monotonic() - member.spawned > job.start_timeout:
                return members, f"{member.name} not ready within {job.start_timeout:.0f} s"
        time.sleep(0.02)
    return members, ""


WARNED = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b")


def first_warning(log: Path) -> str | None:
    """The first WARNING-or-worse line of a log (the agents log at WARNING), shortened."""
    with contextlib.suppress(OSError), open(log, errors="replace") as lines:
        for line in lines:
            if WARNED.search(line):
                line = line.strip()
                return line if len(line) <= 120 else line[:117] + "..."
    return None


def why_failed(log: Path) -> str:
    """The last line of a log that names an error (else its last line), shortened."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    line = (errors or lines or [""])[-1].strip()
    return line if len(line) <= 120 else line[:117] + "..."


def stop_fleet(
    members: Sequence[Member], children: Children, timeout: float = 30.0
) -> tuple[float, list[str]]:
    """SIGTERM to every member at once, then wait for each; a member still running after
    ``timeout`` s gets :meth:`Children.end` (SIGTERM again, SIGKILL 5 s later). The seconds
    from the first SIGTERM until every member had exited (NaN if one had to be killed), and
    the members that did not exit with 0, each with the line of its log that says why."""
    signalled = time.monotonic()
    for member in members:
        if member.proc.poll() is None:
            member.proc.send_signal(signal.SIGTERM)
    deadline = signalled + timeout
    for member in members:
        with contextlib.suppress(subprocess.TimeoutExpired):
            member.proc.wait(max(0.1, deadline - time.monotonic()))
    stopped = time.monotonic() - signalled
    if any(member.proc.poll() is None for member in members):
        stopped = math.nan
    bad = []
    for member in members:
        code = children.end(member.proc, timeout=5.0)
        if code != 0:
            bad.append(f"{member.name}: {code} ({why_failed(member.log_path)})")
    return stopped, bad


def measure_window(
    run: FleetRun, members: Sequence[Member], start: float, end: float, options: Options
) -> float:
    """Sample the fleet over ``[start, end)``; MemAvailable (MiB) at the window's end."""
    broker = options.broker
    sleep_until(start)
    t0 = time.monotonic()
    cpu0 = [cpu_seconds(m.proc.pid) for m in members]
    broker0 = cpu_seconds(broker.pid) if broker.pid else math.nan
    machine0 = machine_jiffies()
    peaks = [0] * len(members)
    threads = [0] * len(members)
    while True:
        for i, member in enumerate(members):
            status = proc_status(member.proc.pid)
            peaks[i] = max(peaks[i], status.get("VmRSS", 0))
            threads[i] = max(threads[i], status.get("Threads", 0))
        now = time.monotonic()
        if now >= end:
            break
        time.sleep(min(1.0, end - now))
    t1 = time.monotonic()
    cpu1 = [cpu_seconds(m.proc.pid) for m in members]
    broker1 = cpu_seconds(broker.pid) if broker.pid else math.nan
    machine1 = machine_jiffies()
    available = mem_available_mib()
    wall = t1 - t0
    run.cpu_pct = [(b - a) / wall * 100 for a, b in zip(cpu0, cpu1, strict=True)]
    run.fleet_cpu_pct = sum(run.cpu_pct)
    run.broker_cpu_pct = (broker1 - broker0) / wall * 100
    total = machine1[0] - machine0[0]
    if total > 0:
        busy = total - (machine1[1] - machine0[1])
        run.machine_busy_pct = busy / total * 100 * (os.cpu_count() or 1)
    run.rss_mib = [kb / 1024 for kb in peaks]
    run.threads = threads
    return available


def run_once(
    impl: str, job: Job, folder: Path, options: Options, observer: FleetObserver
) -> FleetRun:
    """One round of one fleet: start it, measure the window, stop it, count what arrived."""
    folder.mkdir(parents=True, exist_ok=True)
    run = FleetRun(impl, load_before=load_average())
    if impl == "agent":
        for module in ("fleet_app.py", "telemetry_app.py"):
            shutil.copy(BENCH / module, folder / module)
        # Others may be editing agent/ while this runs: a round that ran other code says so.
        run.digest = source_digest(REPO)
    available = mem_available_mib()
    members: list[Member] = []
    try:
        members, why = start_fleet(impl, job, folder, options)
        if why:
            run.status = f"failed: {why}"
            return run
        first = min(m.spawned for m in members)
        run.start_s = max(m.ready or math.nan for m in members) - first
        run.process_start_s = [(m.ready or math.nan) - m.spawned for m in members]
        start = max(m.ready or 0.0 for m in members) + job.settle
        window = (start, start + job.duration)
        # A state published just before the window's end arrives just after it.
        observer.open(start, window[1] + GRACE)
        run.memory_mib = available - measure_window(run, members, *window, options)
        sleep_until(window[1] + GRACE)  # the window's last $SYS value comes up to 1 s late
        run.broker_rate = observer.rate(start, window[1] + GRACE)
    except (OSError, ValueError) as exc:  # a process vanished under /proc
        run.status = f"failed: {type(exc).__name__}: {exc}"
    finally:
        run.stop_s, run.bad_exits = stop_fleet(members, options.children)
        for member in members:
            if (line := first_warning(member.log_path)) is not None:
                run.warned.append(f"{member.name}: {line}")
    seen = observer.take()
    if run.status != "ok":
        return run
    devices: list[tuple[str, Sequence[float] | None]] = []
    for member in members:
        result = read_result(member)
        run.own_skipped += own_skipped(result)
        stamps = result.get("stamps") or {}
        for k in range(job.devices):
            devices.append((f"{member.prefix}/d{k}/state", stamps.get(f"d{k}")))
    count_states(run, seen, devices, window, job.expected_states)
    if impl == "agent":
        topics = [f"{m.prefix}/status" for m in members]
        count_heartbeats(run, seen, topics, window, job)
    return run


# -- the scenario ---------------------------------------------------------------------------


def run_fleet(options: Options, job: Job | None = None) -> list[Figure]:
    """The fleet of agents and the fleet of baselines, alternately, ``options.rounds`` times
    each; the figures of the table (``job``: :func:`job_for` of ``options.quick``)."""
    job = job or job_for(options.quick)
    folder = options.workdir / SCENARIO
    runs: dict[str, list[FleetRun]] = {impl: [] for impl in IMPLS}
    before = mem_available_mib()
    observer = FleetObserver(options.broker.host, options.broker.port)
    try:
        for round_ in range(1, options.rounds + 1):
            for impl in IMPLS if round_ % 2 else tuple(reversed(IMPLS)):  # first in turns
                run = run_once(impl, job, folder / f"round{round_}-{impl}", options, observer)
                runs[impl].append(run)
                print(f"fleet: round {round_}, {impl}: {progress(run)}", file=sys.stderr)
    finally:
        observer.close()
    after = mem_available_mib()
    options.raw["fleet.mem_available_mib"] = {"before": before, "after": after}
    options.raw["fleet.job"] = dataclasses.asdict(job)
    options.raw["fleet.conditions"] = [
        {"impl": r.impl, "round": i, "load_before": r.load_before, "busy_pct": r.machine_busy_pct}
        for impl in IMPLS
        for i, r in enumerate(runs[impl], start=1)
    ]
    for impl in IMPLS:
        ok = [r for r in runs[impl] if r.status == "ok"]
        options.raw[f"fleet.rss_mib.{impl}"] = [x for r in ok for x in r.rss_mib]
        options.raw[f"fleet.cpu_pct.{impl}"] = [x for r in ok for x in r.cpu_pct]
        options.raw[f"fleet.process_start_s.{impl}"] = [x for r in ok for x in r.process_start_s]
        options.raw[f"fleet.states_per_device.{impl}"] = [x for r in ok for x in r.per_device]
    options.raw["fleet.heartbeats_per_agent"] = [
        x for r in runs["agent"] if r.status == "ok" for x in r.heartbeats
    ]
    return figures(job, runs, before, after)


def progress(run: FleetRun) -> str:
    if run.status != "ok":
        return run.status
    return (
        f"start {run.start_s:.1f} s, RSS {median(run.rss_mib):.1f} MiB, "
        f"CPU {run.fleet_cpu_pct:.1f} %, broker {run.broker_rate:.0f} msg/s, "
        f"states missing {run.states_missing}, heartbeats missing {run.heartbeats_missing}"
    )


def span(values: Sequence[float]) -> str:
    """``min–max`` of the values (one number when they agree), ``–`` when there are none."""
    if not values:
        return "–"
    low, high = min(values), max(values)
    return f"{low:g}" if low == high else f"{low:g}–{high:g}"


def figures(job: Job, runs: dict[str, list[FleetRun]], before: float, after: float) -> list[Figure]:
    """The rows of the table, one value per round (NaN for a round that failed)."""
    n, limit = job.agents, max(2, 2 * (os.cpu_count() or 1))

    def values(impl: str, get: Any) -> list[float]:
        return [float(get(r)) if r.status == "ok" else math.nan for r in runs[impl]]

    def pooled(impl: str, get: Any) -> list[float]:
        return [x for r in runs[impl] if r.status == "ok" for x in get(r)]

    def both(
        name: str, unit: str, get: Any, target: Target | None = None, note: str = ""
    ) -> Figure:
        return Figure(
            SCENARIO, name, unit, values("agent", get), values("baseline", get), target, note
        )

    failures = [
        f"round {i}, {impl}: {r.status}"
        for impl in IMPLS
        for i, r in enumerate(runs[impl], start=1)
        if r.status != "ok"
    ]
    bad_exits = [f"{impl} {b}" for impl in IMPLS for r in runs[impl] for b in r.bad_exits]
    start_note = (
        f"{n} × {job.devices} devices, ≤ {limit} starting at once; spawn → ready per process "
        f"(median) {median(pooled('agent', lambda r: r.process_start_s)):.2f} s / "
        f"{median(pooled('baseline', lambda r: r.process_start_s)):.2f} s"
    )
    if failures:
        start_note += "; FAILED " + "; ".join(failures)
    if bad_exits:
        start_note += f"; {len(bad_exits)} exit(s) ≠ 0, e.g. {bad_exits[0]}"
    digests = [r.digest for r in runs["agent"]]
    if len(set(digests)) > 1:
        start_note += "; AGENT SOURCES CHANGED between rounds: " + ", ".join(digests)
    expected_states = job.expected_states * n * job.devices
    per_device = {impl: pooled(impl, lambda r: r.per_device) for impl in IMPLS}
    heartbeats = pooled("agent", lambda r: r.heartbeats)
    stop_note = (
        "SIGTERM to every process at once; the agents publish offline for each device and "
        "the app first, the baselines only disconnect"
    )
    warned = [f"{impl} {w}" for impl in IMPLS for r in runs[impl] for w in r.warned]
    if warned:
        stop_note += (
            f"; {len(warned)} process log(s) with warnings (start to stop), e.g. {warned[0]}"
        )

    def total(impl: str, get: Any) -> int:
        return sum(get(r) for r in runs[impl] if r.status == "ok")

    def both_totals(get: Any) -> str:
        return f"{total('agent', get)} / {total('baseline', get)}"

    states_note = (
        f"of {expected_states:,} a round ({job.expected_states} a device ±1); delivered per "
        f"device {span(per_device['agent'])} / {span(per_device['baseline'])}; all rounds: "
        f"lost {both_totals(lambda r: r.states_lost)}, not published "
        f"{both_totals(lambda r: r.states_short)}, duplicates "
        f"{both_totals(lambda r: r.states_duplicates)}; skipped ticks the processes counted "
        f"themselves, whole run: {both_totals(lambda r: r.own_skipped)}"
    )
    if any(r.without_result for impl in IMPLS for r in runs[impl]):
        states_note += "; devices without a result file (judged by arrival): " + both_totals(
            lambda r: r.without_result
        )

    def latency(q: float) -> Any:
        return lambda r: percentile(sorted(r.latency_ms), q)

    return [
        both(f"fleet start, {n} processes", "s", lambda r: r.start_s, note=start_note),
        both(
            "fleet stop (SIGTERM → all exited)",
            "s",
            lambda r: r.stop_s,
            note=stop_note,
        ),
        both(
            "RSS per process (median)",
            "MiB",
            lambda r: median(r.rss_mib),
            Target("ratio_max", 1.5),
            "peak VmRSS in the window, median over the processes",
        ),
        both("RSS per process (max)", "MiB", lambda r: max(r.rss_mib, default=math.nan)),
        both(
            "threads per process",
            "",
            lambda r: median(r.threads),
            note=f"{job.devices} devices; highest in the window, median over the processes",
        ),
        both(
            "fleet memory (MemAvailable drop)",
            "MiB",
            lambda r: r.memory_mib,
            note=f"per process {median(values('agent', lambda r: r.memory_mib / n)):.1f} / "
            f"{median(values('baseline', lambda r: r.memory_mib / n)):.1f} MiB; MemAvailable "
            f"{before:,.0f} MiB before the scenario, {after:,.0f} MiB after",
        ),
        both(
            "fleet CPU",
            "% of one core",
            lambda r: r.fleet_cpu_pct,
            Target("ratio_max", 2.0),
            f"per process (median) {median(pooled('agent', lambda r: r.cpu_pct)):.2f} / "
            f"{median(pooled('baseline', lambda r: r.cpu_pct)):.2f} %; machine busy "
            f"{median(values('agent', lambda r: r.machine_busy_pct)):.0f} / "
            f"{median(values('baseline', lambda r: r.machine_busy_pct)):.0f} % "
            f"of {100 * (os.cpu_count() or 1)}",
        ),
        both("broker CPU", "% of one core", lambda r: r.broker_cpu_pct, Target("ratio_max", 1.5)),
        both(
            "broker messages received",
            "msg/s",
            lambda r: r.broker_rate,
            Target("min", round(0.99 * job.expected_rate("agent"), 1)),
            f"expected {job.expected_rate('agent'):g} / {job.expected_rate('baseline'):g}: "
            f"{n} × {job.devices} states every {job.interval:g} s, agent + {n} heartbeats "
            f"every {job.heartbeat:g} s",
        ),
        both(
            "states missing",
            "msgs",
            lambda r: r.states_missing,
            Target("max", 0),
            states_note,
        ),
        both(
            "state latency p99",
            "ms",
            latency(0.99),
            note=f"handler call → observer, every state of the window; p50 "
            f"{median(values('agent', latency(0.5))):.2f} / "
            f"{median(values('baseline', latency(0.5))):.2f} ms, max "
            f"{median(values('agent', latency(1.0))):.1f} / "
            f"{median(values('baseline', latency(1.0))):.1f} ms",
        ),
        Figure(
            SCENARIO,
            "heartbeats missing",
            "msgs",
            values("agent", lambda r: r.heartbeats_missing),
            [],
            Target("max", 0),
            f"of {job.expected_heartbeats * n} a round ({job.expected_heartbeats} an agent "
            f"±1, every {job.heartbeat:g} s); received per agent {span(heartbeats)}; "
            "the baseline has none",
        ),
    ]


# -- standalone -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 agents, a 6 s window")
    parser.add_argument("--agents", type=int, help="processes in a fleet (100; quick 5)")
    parser.add_argument("--devices", type=int, help="telemetry devices in each (10)")
    parser.add_argument("--duration", type=float, help="window, s (20; quick 6)")
    parser.add_argument("--heartbeat", type=float, help="the agents' heartbeat, s (5; quick 2)")
    parser.add_argument("--rounds", type=int, help="rounds of each fleet (2; quick 1)")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter of agent and baseline"
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder of the run")
    args = parser.parse_args(argv)
    job = job_for(args.quick, args.agents, args.devices, args.duration, args.heartbeat)
    rounds = args.rounds or (1 if args.quick else 2)
    # SIGTERM to the benchmark must still end the fleet: through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="agent-bench-fleet-"))
    children = Children()
    broker: Broker | None = None
    began = time.monotonic()
    try:
        broker = Broker()
        config = broker.mosquitto.config_path.read_text().splitlines()
        print(
            f"{dt.datetime.now():%Y-%m-%d %H:%M}, `{' '.join(sys.argv)}`\n"
            f"{os.cpu_count()} CPUs, {cpu_model()}, Linux {platform.release()}, "
            f"MemAvailable {mem_available_mib():,.0f} MiB, load {load_average():.2f}\n"
            f"python {interpreter_text(args.python)}; "
            f"{describe_agent(REPO)}\n"
            f"mosquitto: {'; '.join(line for line in config if line)}\n"
            f"{job.agents} processes × {job.devices} devices every {job.interval:g} s, "
            f"heartbeat {job.heartbeat:g} s, window {job.duration:g} s after {job.settle:g} s, "
            f"{rounds} round(s)\n",
            flush=True,
        )
        options = Options(args.quick, rounds, args.python, workdir, broker, children)
        figures = run_fleet(options, job)
        print(table(figures) + notes(figures))
        print(f"\n{time.monotonic() - began:.0f} s")
    finally:
        children.end_all()
        if broker is not None:
            broker.close()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
