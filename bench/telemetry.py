"""Benchmark of telemetry cadence and scale: the agent against a minimal threaded paho script.

Run from the repository root with the PyPI venv (paho 2.x, agent installed editable)::

    build/venv-pypi/bin/python bench/telemetry.py --quick          # a smoke run, ~3 minutes
    build/venv-pypi/bin/python bench/telemetry.py                  # the full run, ~15 minutes
    build/venv-pypi/bin/python bench/telemetry.py --scenario single --duration 30 --pinning
    build/venv-pypi/bin/python bench/telemetry.py --scenario many --tracemalloc --profile
    build/venv-pypi/bin/python bench/telemetry.py --repeat 2 --keep   # each pair twice

The suite (``python -m bench``) runs the same machinery as two of its scenarios, with
shorter windows, several alternating rounds and one table row per figure:
:func:`run_cadence` (the ``single`` jobs) and :func:`run_scale` (the ``many`` jobs and a
sweep of RSS and CPU against the device count); their docstrings say what each row holds.

``--agent-root DIR`` measures another checkout's agent package instead of this one, e.g. a
commit: ``mkdir /tmp/a && git archive b29d7c3 agent | tar -x -C /tmp/a`` then
``--agent-root /tmp/a``. ``--python /usr/bin/python3`` runs agent and baseline with Debian's
Python and paho-mqtt 1.6. Every figure of every run is also saved as JSON (``results.json``
in the run folder, kept with ``--keep``), for comparing before and after a change.

What runs. One private mosquitto (agent.testing.mosquitto, ``set_tcp_nodelay true``; its
per-message debug log switched off, ``sys_interval 1``) serves every run of the invocation.
Each *job* runs twice, back to back: the **agent** — ``python -m agent --config agent.toml``
on bench/telemetry_app.py, N telemetry devices of the same interval, the agent from this
checkout (``PYTHONPATH`` = the repository root) — and the **baseline**,
bench/telemetry_baseline.py, one paho client and one thread per device looping on monotonic
deadlines. Both record ``time.monotonic()`` in each handler call and publish ``{"v": k}``
retained, QoS 1, to the device's own topic; both write every timestamp to a JSON file when
stopped (SIGTERM).

Scenarios (``--scenario``):

* ``single`` — 1 device every 100 ms for 60 s, twice: as is, and with the measured process
  pinned to core 0 while a busy loop (a second Python process) spins pinned to core 1;
  targets: 600 ± 1 ticks, p99 |jitter| ≤ 2 ms; ``--pinning`` adds a third time, pinned to
  core 0 with the other core idle, to tell the effect of pinning from that of the load;
* ``many`` — 1,000 devices every 1 s for 60 s, ungrouped and in 10 groups (``group=``, which
  the agent may not have yet: then "not available"); the baseline of the grouped job has one
  thread per group calling its 100 devices one after the other; targets: CPU ≤ 2× the
  baseline's, RSS ≤ 40 MiB, 0 skipped ticks, max |drift| and p99 |jitter| ≤ 15 ms;
* ``footprint`` — 0 devices and N devices for a short while: RSS and threads, so the cost of
  one device (thread, inbox, context, job) can be read off;
* ``all`` (default) — the three.

``--profile`` adds, after the measurements, one run of the agent (and one of the baseline)
of the ``many`` jobs with py-spy attached (``py-spy dump`` once, then
``py-spy record --gil --native`` for 20 s) and prints where the samples fall. py-spy pauses
what it watches, so those runs are never among the measured ones (and the agent logs
skipped ticks while it is watched).

How each figure is computed, identically for agent and baseline:

* **Measurement window.** The run is *ready* when every device has been called once (the
  app writes the ``time.monotonic()`` of that moment into a file). The window starts
  ``max(1 s, 2 intervals) + 1 s`` later and lasts ``--duration`` seconds; only timestamps in
  ``[start, end)`` count. So the agent's extra reading at start-up (a telemetry device reads
  once at once, then every interval) and the start-up of 1,000 threads are both outside it,
  and both implementations are held to the same ``duration / interval`` ticks per device.
* **ticks** per device in the window (min–max over devices), against ``duration/interval``.
* **skipped** — for each device, the gaps between consecutive timestamps measured in
  intervals: a gap of ``round(gap / interval) = m`` periods hides ``m - 1`` skipped ticks;
  plus all the expected ticks of a device that has none in the window. Counting gaps rather
  than ``expected - counted`` keeps a tick that lands just outside the window's edge from
  reading as skipped. The implementations' own counters (the ``skipped_ticks`` the agent's
  heartbeat would report, and its scheduler's missed periods; the baseline's skipped
  periods) cover the whole run and are shown beside it.
* **|jitter|** — per device, each timestamp ``t`` in the window is compared with the nearest
  point of the device's ideal cadence ``t0 + k*interval``; p50, p99 and max of the absolute
  deviation over all devices' ticks, in milliseconds. (Nearest point, so a skipped tick is
  counted as skipped instead of turning every later tick "late".) The cadence is anchored
  at the device's *median phase*: ``t0`` = its first timestamp in the window plus the
  median of every tick's offset from ``first + k*interval``. Anchored at the first
  timestamp itself, that one tick's own error shifts every deviation of the device: a
  baseline whose first tick came 2 ms late read p50 2.04 ms that way, 0.04 ms anchored at
  its median. That figure ("from the first tick") is printed too, and the targets show
  both.
* **drift** — per device, ``(last - first) - (n - 1) * interval`` over its ``n`` ticks in the
  window: how far the cadence slid over the window (a skipped tick adds a whole interval);
  the maximum of its absolute value over devices.
* **CPU** — ``utime + stime`` of the process (/proc/PID/stat: every thread, dead ones
  included) over the window, divided by the window's wall time: % of one core; also split
  into user and kernel time, per kind of thread (/proc/PID/task/TID/schedstat, the thread
  names from the ready report) and with the context switches per second of all threads
  (voluntary: a thread went to sleep, on a wait, a lock or the GIL; involuntary: the
  kernel preempted it).
* **RSS** — ``VmRSS`` sampled every second in the window (peak) and at its end, and
  ``VmHWM`` (the kernel's high-water mark of the whole run, start-up included) at its end;
  **threads** from /proc/PID/status. The timestamps themselves live in ``array('d')``:
  8 bytes a tick, 0.5 MB for 1,000 devices over 65 s, in both implementations.
* **packets** — what the broker counted (``$SYS/broker/messages/received``: every MQTT
  packet, mosquitto 2.0 leaves ``publish/messages/received`` at 0) from before the process
  started to after it stopped, beside the number of handler calls: a check that both did
  the whole job (dropped messages would show). Expected extras: CONNECT and DISCONNECT, and
  the observer's PINGREQ every 5 s, for both; for the agent also ``online`` and ``offline``
  for each device and for the app (2N + 2 more).
* **conditions** — load average before the run, the whole machine's busy time over the
  window (/proc/stat, in % of one core, so up to 200 on 2 cores), steal time, and the
  broker's CPU.

A measurement, not a test: it never fails, it prints Markdown tables (with each target and
met/MISSED) ready for docs/benchmarks.md. Everything it starts (broker, agent, baseline,
busy loop) is stopped by its own pid at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402 - after the path
    LAUNCHER,
    MEASURED_CORE,
    Broker,
    Children,
    Figure,
    Options,
    Target,
    agent_env,
    busy_loop,
    context_switches,
    cpu_model,
    cpu_seconds,
    cpu_split,
    describe_agent,
    load_average,
    log_tail,
    machine_jiffies,
    median,
    percentile,
    pinned_to,
    proc_status,
    py_spy,
    read_json,
    sleep_until,
    source_digest,
    thread_cpu_seconds,
)

# -- jobs and their results ---------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One thing to run, the same way for the agent and for the baseline."""

    scenario: str  # "single", "many", "footprint"
    label: str  # e.g. "1 device, other core busy"
    devices: int
    interval: float
    duration: float
    groups: int = 0  # 0: one thread per device
    busy_other_core: bool = False  # pin the measured process to core 0, spin on core 1
    pinned: bool = False  # pin the measured process to core 0 (implied by busy_other_core)
    tracemalloc: bool = False  # a diagnostic run: report where the Python memory went
    settle_s: float | None = None  # None: the default below (the suite's quick mode: less)

    @property
    def settle(self) -> float:
        """Seconds from "ready" to the start of the window."""
        if self.settle_s is not None:
            return self.settle_s
        return max(1.0, 2 * self.interval) + 1.0

    @property
    def expected_ticks(self) -> int:
        return round(self.duration / self.interval)


@dataclass
class Metrics:
    """Cadence figures of one run, over the measurement window."""

    ticks_min: int = 0
    ticks_max: int = 0
    skipped: int = 0
    jitter_p50_ms: float = math.nan
    jitter_p99_ms: float = math.nan
    jitter_max_ms: float = math.nan
    jitter_p99_first_ms: float = math.nan  # the p99 anchored at the first tick instead
    drift_max_ms: float = math.nan
    handler_calls: int = 0  # every timestamp of the run, window or not


@dataclass
class Run:
    """What one run of one implementation produced."""

    job: Job
    impl: str  # "agent" or "baseline"
    status: str = "ok"  # "ok", "not available", "failed: ..."
    metrics: Metrics = field(default_factory=Metrics)
    cpu_pct: float = math.nan
    cpu_user_pct: float = math.nan  # of cpu_pct, in user mode
    cpu_sys_pct: float = math.nan  # of cpu_pct, in the kernel
    switches_per_s: tuple[float, float] = (math.nan, math.nan)  # voluntary, involuntary
    rss_peak_mb: float = math.nan
    rss_end_mb: float = math.nan
    hwm_mb: float = math.nan
    threads: int = 0
    ready_after_s: float = math.nan
    packets: int | None = None  # MQTT packets the broker received during the run
    own_counters: dict[str, Any] | None = None
    load_before: float = math.nan
    machine_busy_pct: float = math.nan
    steal_pct: float = math.nan
    broker_cpu_pct: float = math.nan
    log_warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    agent_file: str | None = None  # which agent/__init__.py the agent process imported
    window: tuple[float, float] | None = None  # time.monotonic() of the window's start, end
    cpu_by_role: dict[str, tuple[int, float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def cpu_threads_pct(self) -> float:
        """CPU of the window summed over the threads alive at its end (``cpu_by_role``, from
        /proc/PID/task/TID/schedstat, in nanoseconds): for a process that uses 1 % of a
        core, ``cpu_pct``'s 10 ms clock ticks are 10 % steps over a 10 s window, this is
        exact; it misses a thread that ended within the window (none do, in steady state)."""
        if not self.cpu_by_role:
            return self.cpu_pct
        return sum(pct for _, pct in self.cpu_by_role.values())


# -- reading /proc --------------------------------------------------------------------------


def thread_role_name(name: str) -> str:
    """A thread's name with its numbers folded: ``device:d17`` -> ``device:dN``."""
    return re.sub(r"[0-9]+", "N", name)


def cpu_by_role(
    before: dict[int, float], after: dict[int, float], names: dict[int, str], wall: float
) -> dict[str, tuple[int, float]]:
    """CPU of the window by kind of thread: ``{role: (threads, % of one core)}``. Threads
    not named in the ready report (started later) count as ``?``."""
    roles: dict[str, tuple[int, float]] = {}
    for tid, seconds in after.items():
        role = thread_role_name(names.get(tid, "?"))
        count, total = roles.get(role, (0, 0.0))
        roles[role] = (count + 1, total + (seconds - before.get(tid, 0.0)) / wall * 100)
    return dict(sorted(roles.items(), key=lambda item: -item[1][1]))


# -- the figures ----------------------------------------------------------------------------


def analyse(
    stamps: dict[str, list[float]], start: float, end: float, interval: float, expected: int
) -> Metrics:
    """The cadence figures of the module docstring, over the window ``[start, end)``."""
    counts: list[int] = []
    jitter: list[float] = []
    from_first: list[float] = []
    drift = 0.0
    skipped = 0
    calls = 0
    for series in stamps.values():
        calls += len(series)
        ts = sorted(t for t in series if start <= t < end)
        counts.append(len(ts))
        if not ts:
            skipped += expected
            continue
        first = ts[0]
        for prev, t in itertools.pairwise(ts):
            skipped += max(0, round((t - prev) / interval) - 1)
        offsets = [t - first - round((t - first) / interval) * interval for t in ts]
        phase = statistics.median(offsets)
        jitter.extend(abs(o - phase) for o in offsets)
        from_first.extend(abs(o) for o in offsets[1:])
        drift = max(drift, abs((ts[-1] - first) - (len(ts) - 1) * interval))
    jitter.sort()
    from_first.sort()
    return Metrics(
        ticks_min=min(counts, default=0),
        ticks_max=max(counts, default=0),
        skipped=skipped,
        jitter_p50_ms=percentile(jitter, 0.50) * 1e3,
        jitter_p99_ms=percentile(jitter, 0.99) * 1e3,
        jitter_max_ms=(jitter[-1] if jitter else math.nan) * 1e3,
        jitter_p99_first_ms=percentile(from_first, 0.99) * 1e3,
        drift_max_ms=drift * 1e3 if counts and max(counts) > 1 else math.nan,
        handler_calls=calls,
    )


# -- the processes --------------------------------------------------------------------------


def write_agent_config(folder: Path, host: str, port: int) -> Path:
    """agent.toml for bench/telemetry_app.py (copied next to it) on the private broker."""
    shutil.copy(BENCH / "telemetry_app.py", folder / "telemetry_app.py")
    path = folder / "agent.toml"
    path.write_text(
        'app = "telemetry_app:app"\n'
        "[mqtt]\n"
        f'host = "{host}"\n'
        f"port = {port}\n"
        "reconnect_min_delay = 0.1\n"
        "reconnect_max_delay = 0.5\n"
        "[logging]\n"
        'format = "text"\n'
        'level = "WARNING"\n'
    )
    return path


@dataclass
class Setup:
    """What every run of one invocation shares."""

    broker: Broker
    python: str  # the interpreter of agent, baseline and busy loop
    children: Children
    agent_root: Path | None  # None: this checkout, through ``python -m agent``
    count_packets: bool = True  # ask the broker before and after each run (~5 s a run)


def command_for(
    impl: str, job: Job, folder: Path, setup: Setup
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one run."""
    out, ready = folder / "result.json", folder / "ready"
    broker, python = setup.broker, setup.python
    if impl == "agent":
        config = write_agent_config(folder, broker.host, broker.port)
        env = agent_env()
        env.update(
            BENCH_DEVICES=str(job.devices),
            BENCH_INTERVAL=repr(job.interval),
            BENCH_GROUPS=str(job.groups),
            BENCH_OUT=str(out),
            BENCH_READY=str(ready),
        )
        if job.tracemalloc:
            env["BENCH_TRACEMALLOC"] = str(folder / "tracemalloc.json")
        if setup.agent_root is not None:
            return [python, "-c", LAUNCHER, str(setup.agent_root), "--config", str(config)], env
        return [python, "-m", "agent", "--config", str(config)], env
    cmd = [
        python,
        str(BENCH / "telemetry_baseline.py"),
        f"--host={broker.host}",
        f"--port={broker.port}",
        f"--devices={job.devices}",
        f"--interval={job.interval!r}",
        f"--groups={job.groups}",
        f"--out={out}",
        f"--ready={ready}",
    ]
    if job.tracemalloc:
        cmd.append(f"--tracemalloc={folder / 'tracemalloc.json'}")
    return cmd, dict(os.environ)


def warnings_in(path: Path) -> list[str]:
    """WARNING and worse lines of a run's log (the agent logs at WARNING)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [
        line
        for line in text.splitlines()
        if re.search(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b", line)
    ]


def start_run(
    impl: str, job: Job, folder: Path, setup: Setup
) -> tuple[subprocess.Popen[bytes], Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cmd, env = command_for(impl, job, folder, setup)
    log_path = folder / "process.log"
    with open(log_path, "wb") as log:
        proc = setup.children.spawn(
            cmd,
            cwd=folder,
            env=env,
            stdout=log,
            stderr=log,
            preexec_fn=pinned_to(MEASURED_CORE if job.pinned or job.busy_other_core else None),
        )
    return proc, log_path


def thread_names(data: dict[str, Any]) -> dict[int, str]:
    """The ``threads`` map of a ready report: OS thread id -> Python thread name."""
    threads = data.get("threads", {})
    return {int(tid): str(name) for tid, name in threads.items() if str(tid).isdigit()}


@dataclass(frozen=True)
class Ready:
    """What a run reports once every device has been called once."""

    t: float  # time.monotonic() of that moment
    threads: dict[int, str]  # OS thread id -> Python thread name, at that moment


def wait_ready(
    proc: subprocess.Popen[bytes], folder: Path, timeout: float
) -> tuple[Ready | None, str]:
    """The ready report of the run, or None and why not."""
    ready, out = folder / "ready", folder / "result.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
                data = json.loads(ready.read_text())
                return Ready(float(data["t"]), thread_names(data)), ""
        if proc.poll() is not None:
            result = read_json(out) or {}
            if "unavailable" in result:
                return None, "not available"
            return None, f"failed: exited with {proc.returncode}"
        time.sleep(0.05)
    return None, f"failed: not ready within {timeout:.0f} s"


def measure(impl: str, job: Job, folder: Path, setup: Setup) -> Run:
    """One run of one implementation: start, warm up, measure the window, stop, analyse."""
    run = Run(job, impl, load_before=load_average())
    broker, children = setup.broker, setup.children
    packets_before = broker.received() if setup.count_packets else None
    spawned = time.monotonic()
    proc, log_path = start_run(impl, job, folder, setup)
    try:
        ready, why = wait_ready(proc, folder, timeout=60.0 + 0.05 * job.devices)
        if ready is None:
            run.status = why
            if why.startswith("failed"):
                run.status += f" ({log_tail(log_path)})"
            elif result := read_json(folder / "result.json"):
                run.status += f": {result.get('unavailable', '')}"
            return run
        run.ready_after_s = ready.t - spawned
        start = ready.t + job.settle
        end = start + job.duration
        sleep_until(start)
        later = read_json(folder / "ready.threads")  # the agent's names, written 0.5 s later
        if later:
            ready.threads.update(thread_names(later))
        t_start = time.monotonic()
        cpu0 = cpu_split(proc.pid)
        threads0 = thread_cpu_seconds(proc.pid)
        switches0 = context_switches(proc.pid)
        broker0 = cpu_seconds(broker.pid) if broker.pid else math.nan
        machine0 = machine_jiffies()
        peak = 0
        threads = 0
        while True:
            status = proc_status(proc.pid)
            peak = max(peak, status.get("VmRSS", 0))
            threads = max(threads, status.get("Threads", 0))
            now = time.monotonic()
            if now >= end:
                break
            time.sleep(min(1.0, end - now))
        t_end = time.monotonic()
        cpu1 = cpu_split(proc.pid)
        threads1 = thread_cpu_seconds(proc.pid)
        switches1 = context_switches(proc.pid)
        broker1 = cpu_seconds(broker.pid) if broker.pid else math.nan
        machine1 = machine_jiffies()
        wall = t_end - t_start
        run.cpu_user_pct = (cpu1[0] - cpu0[0]) / wall * 100
        run.cpu_sys_pct = (cpu1[1] - cpu0[1]) / wall * 100
        run.cpu_pct = run.cpu_user_pct + run.cpu_sys_pct
        run.switches_per_s = (
            (switches1[0] - switches0[0]) / wall,
            (switches1[1] - switches0[1]) / wall,
        )
        run.cpu_by_role = cpu_by_role(threads0, threads1, ready.threads, wall)
        run.window = (start, end)
        run.broker_cpu_pct = (broker1 - broker0) / wall * 100
        total = machine1[0] - machine0[0]
        ncpu = os.cpu_count() or 1
        if total > 0:
            run.machine_busy_pct = (total - (machine1[1] - machine0[1])) / total * 100 * ncpu
            run.steal_pct = (machine1[2] - machine0[2]) / total * 100 * ncpu
        run.rss_peak_mb = peak / 1024
        run.rss_end_mb = status.get("VmRSS", 0) / 1024
        run.hwm_mb = status.get("VmHWM", 0) / 1024
        run.threads = threads
    except (OSError, ValueError) as exc:  # the process vanished under /proc
        run.status = f"failed: {type(exc).__name__}: {exc} ({log_tail(log_path)})"
        return run
    finally:
        code = children.end(proc)
    if code != 0:  # both exit with 0 after SIGTERM; the figures may still be there
        run.notes.append(f"exit code {code} ({log_tail(log_path)})")
    result = read_json(folder / "result.json")
    if result is None or "stamps" not in result:
        run.status = f"failed: no result file ({log_tail(log_path)})"
        return run
    run.metrics = analyse(result["stamps"], start, end, job.interval, job.expected_ticks)
    run.own_counters = result.get("own_counters")
    run.agent_file = result.get("agent_file")
    run.log_warnings = warnings_in(log_path)
    packets_after = broker.received() if setup.count_packets else None
    if packets_before is not None and packets_after is not None:
        run.packets = packets_after - packets_before
    return run


# -- profiling ------------------------------------------------------------------------------


BLOCKING = (
    "PyThread_acquire_lock_timed",
    "pthread_cond_timedwait",
    "pthread_cond_wait",
    "sem_clockwait",
    "sem_timedwait",
    "select (",
    "poll (",
    "epoll_wait",
    "nanosleep",
)
"""Native frames of a thread that sleeps in the kernel (a lock, an event, select, sleep)."""


def sample_state(stack: str) -> str:
    """``gil`` (waiting to take the GIL), ``blocked`` (asleep on a lock, event or socket) or
    ``running``. py-spy's own idle filter lets some sleeping threads through (it looks at
    them at the wrong moment), so the stacks are sorted here by their native frames."""
    if "take_gil" in stack:
        return "gil"
    if any(marker in stack for marker in BLOCKING):
        return "blocked"
    return "running"


def summarise_raw(path: Path, top: int = 12) -> str:
    """Where the samples of a ``py-spy record --native --format raw`` file fall (Markdown).

    First how the samples divide between running, waiting for the GIL and asleep; then, for
    the running ones only, by thread role, by leaf frame (self time, native frames included:
    that is where C code such as the JSON encoder shows) and by Python frame (inclusive).

    :func:`profile` records with ``--gil``: each sample is then the stack of the thread that
    holds the GIL, so the shares say where the interpreter's time goes (what one process can
    do at a time); which thread burns how much CPU in all is measured without py-spy, from
    /proc (:func:`cpu_by_role`). (Without ``--gil`` py-spy samples every thread it believes
    busy, and with 1,000 threads most of those samples are sleeping threads.)
    """
    states: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    gil_roles: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            re.sub(r":\d+\)$", ")", f)
            for f in stack.split(";")
            if f and not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        state = sample_state(stack)
        states[state] += count
        if state == "gil":
            gil_roles[thread_role(frames)] += count
        if state != "running":
            continue
        roles[thread_role(frames)] += count
        own[frames[-1]] += count
        for frame in {f for f in frames if ".py)" in f and not f.startswith("Thread.")}:
            inclusive[frame] += count
    total = sum(states.values())
    running = states["running"]
    if not total:
        return "(no samples)\n"

    def table(title: str, counter: Counter[str], n: int, of: int) -> str:
        rows = [f"| {title} | % |", "|---|---|"]
        for name, count in counter.most_common(n):
            rows.append(f"| `{name.replace('|', '/')}` | {100 * count / of:.1f} |")
        return "\n".join(rows) + "\n"

    gil_text = ", ".join(f"{role} {n}" for role, n in gil_roles.most_common())
    return (
        f"{total} samples: running {100 * running / total:.1f} %, waiting for the GIL "
        f"{100 * states['gil'] / total:.1f} %"
        + (f" ({gil_text})" if gil_text else "")
        + f", asleep {100 * states['blocked'] / total:.1f} % (excluded below)\n\n"
        + (
            table("running samples by thread role", roles, 10, running)
            + "\n"
            + table("leaf frame (self), % of running samples", own, top, running)
            + "\n"
            + table("Python frame (inclusive), % of running samples", inclusive, top * 2, running)
            if running
            else ""
        )
    )


def thread_role(frames: Sequence[str]) -> str:
    """Which kind of thread a stack belongs to, from the frames it holds."""
    text = ";".join(frames)
    if "scheduler.py" in text or "run_pending" in text:
        return "scheduler thread (agent)"
    if "worker.py" in text or "telemetry.py" in text:
        return "device threads (agent)"
    if "telemetry_baseline.py" in text and "_run" in text:
        return "device threads (baseline)"
    if "loop_forever" in text or "_thread_main" in text:
        return "paho network thread"
    if "supervisor.py" in text or "cli.py" in text or "telemetry_baseline.py" in text:
        return "main thread"
    return "other"


def thread_inventory(dump: str) -> str:
    """The threads of a ``py-spy dump``, by name with the digits folded (``device:dN``)."""
    names: Counter[str] = Counter()
    for match in re.finditer(r'^Thread \S+ \((\w+)\): "([^"]*)"', dump, flags=re.MULTILINE):
        names[f"{re.sub(r'[0-9]+', 'N', match.group(2))} ({match.group(1)})"] += 1
    return ", ".join(f"{name} ×{n}" for name, n in names.most_common()) or "(none)"


def profile(job: Job, impl: str, folder: Path, setup: Setup) -> str:
    """Run ``job`` with py-spy attached: one dump, then a native record; a Markdown summary."""
    spy = py_spy()
    if spy is None:
        return "py-spy not found: `build/venv-pypi/bin/pip install py-spy`\n"
    proc, log_path = start_run(impl, job, folder, setup)
    try:
        ready, why = wait_ready(proc, folder, timeout=60.0 + 0.05 * job.devices)
        if ready is None:
            return f"{why}\n"
        sleep_until(ready.t + job.settle)
        dump = subprocess.run(
            [spy, "dump", "--pid", str(proc.pid)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        (folder / "py-spy-dump.txt").write_text(dump.stdout + dump.stderr)
        raw = folder / "py-spy-record.txt"
        seconds = max(5, min(20, int(job.duration)))
        options = ["--gil", "--native", "--rate", "100", "--duration", str(seconds)]
        started = time.monotonic()
        record = subprocess.run(
            [spy, "record", "--pid", str(proc.pid), *options, "--format", "raw", "-o", str(raw)],
            capture_output=True,
            text=True,
            timeout=seconds * 20 + 120,  # 1,000 threads make every sample slow
        )
        took = time.monotonic() - started
        if not raw.exists():
            return f"py-spy record failed: {record.stderr.strip()[-500:]}\n"
        return (
            f"threads (py-spy dump, {folder / 'py-spy-dump.txt'}): "
            f"{thread_inventory(dump.stdout)}\n\n"
            f"`py-spy record {' '.join(options)}` ({raw}; took {took:.0f} s: py-spy pauses the "
            "process for every sample, and with many threads a sample is slow):\n\n"
            + summarise_raw(raw)
        )
    finally:
        setup.children.end(proc)
        if log_path.exists() and warnings_in(log_path):
            print(f"({impl} profile run logged warnings, see {log_path})")


def short_path(filename: str) -> str:
    """A source file's name without the folders that differ between machines and runs."""
    if filename.endswith(("/telemetry_app.py", "/telemetry_baseline.py")):
        return Path(filename).name
    short = re.sub(r"^.*/(?=agent/)", "", filename)  # this checkout or an --agent-root copy
    return re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", short)


def traced(job: Job, impl: str, folder: Path, setup: Setup) -> tuple[dict[str, Any], float]:
    """One run of ``job`` with tracemalloc on: its report and the VmRSS (MiB) when ready."""
    proc, _ = start_run(impl, replace(job, tracemalloc=True), folder, setup)
    try:
        ready, why = wait_ready(proc, folder, timeout=120.0 + 0.1 * job.devices)
        if ready is None:
            raise RuntimeError(why)
        sleep_until(ready.t + 1.0)
        rss = proc_status(proc.pid).get("VmRSS", 0) / 1024
    finally:
        setup.children.end(proc)
    report = read_json(folder / "tracemalloc.json")
    if not report:
        raise RuntimeError("no tracemalloc report")
    return report, rss


def memory_diagnostic(devices: int, impl: str, folder: Path, setup: Setup) -> str:
    """Where a device's Python memory goes: tracemalloc with 0 and with ``devices`` devices,
    the difference by source file divided by ``devices`` (what the runtime allocates once,
    lazy imports included, cancels out)."""
    reports = {}
    for n in (0, devices):
        job = Job("footprint", f"{n} devices (tracemalloc)", n, 1.0, 1.0)
        reports[n] = traced(job, impl, folder / f"{n}", setup)
    (zero, rss0), (full, rss1) = reports[0], reports[devices]
    n = max(devices, 1)
    by_file: Counter[str] = Counter()
    blocks: Counter[str] = Counter()
    for sign, report in ((-1, zero), (1, full)):
        for filename, size, count in report["by_file"]:
            short = short_path(filename)
            by_file[short] += sign * size
            blocks[short] += sign * count
    total = full["total"] - zero["total"]
    rows = [
        f"{devices} devices minus 0 devices: Python memory {total / 1024:.0f} KiB, "
        f"{total / n / 1024:.1f} KiB a device in {(full['count'] - zero['count']) / n:.0f} "
        f"blocks; RSS {rss1 - rss0:.1f} MiB more, {(rss1 - rss0) * 1024 / n:.1f} KiB a device "
        "(with tracemalloc's own overhead; the rest of the RSS is native: thread stacks, "
        "malloc arenas)\n",
        "| file | KiB per device | blocks per device |",
        "|---|---|---|",
    ]
    for name, size in by_file.most_common(12):
        if size > 0:
            rows.append(f"| `{name}` | {size / n / 1024:.2f} | {blocks[name] / n:.1f} |")
    return "\n".join(rows) + "\n"


# -- the report -----------------------------------------------------------------------------


def fmt(x: float, digits: int = 1) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def run_rows(runs: Iterable[Run]) -> str:
    header = (
        "| job | impl | ticks/device (expected) | skipped (own count) | "
        "\\|jitter\\| p50 / p99 / max ms (p99 from the first tick) | max \\|drift\\| ms | "
        "CPU % of a core | "
        "RSS peak / end / HWM MiB | threads | ready after s | packets at broker / handler calls |"
    )
    rows = [header, "|" + "---|" * 11]
    for r in runs:
        if not r.ok:
            rows.append(f"| {r.job.label} | {r.impl} | {r.status} |" + " |" * 8)
            continue
        m = r.metrics
        own = ""
        if r.own_counters:
            counters = r.own_counters
            if "skipped" in counters:  # the baseline
                own = f" ({counters['skipped']})"
            else:
                own = (
                    f" ({counters.get('heartbeat_skipped_ticks', '?')} heartbeat, "
                    f"{counters.get('scheduler_missed', '?')} scheduler)"
                )
        ticks = f"{m.ticks_min}" if m.ticks_min == m.ticks_max else f"{m.ticks_min}–{m.ticks_max}"
        ticks = f"{ticks} ({r.job.expected_ticks})" if r.job.devices else "—"
        rows.append(
            f"| {r.job.label} | {r.impl} | {ticks} | {m.skipped}{own} "
            f"| {fmt(m.jitter_p50_ms, 2)} / {fmt(m.jitter_p99_ms, 2)} / {fmt(m.jitter_max_ms, 2)} "
            f"({fmt(m.jitter_p99_first_ms, 2)}) "
            f"| {fmt(m.drift_max_ms, 2)} | {fmt(r.cpu_pct)} "
            f"| {fmt(r.rss_peak_mb)} / {fmt(r.rss_end_mb)} / {fmt(r.hwm_mb)} | {r.threads} "
            f"| {fmt(r.ready_after_s, 2)} | {r.packets if r.packets is not None else '—'}"
            f" / {m.handler_calls} |"
        )
    return "\n".join(rows) + "\n"


def condition_rows(runs: Iterable[Run]) -> str:
    rows = [
        "| job | impl | load avg (1 min) before | machine busy % (of 1 core, all CPUs) "
        "| steal % | broker CPU % |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        if r.ok:
            rows.append(
                f"| {r.job.label} | {r.impl} | {r.load_before:.2f} | {fmt(r.machine_busy_pct)} "
                f"| {fmt(r.steal_pct)} | {fmt(r.broker_cpu_pct)} |"
            )
    return "\n".join(rows) + "\n"


def thread_rows(runs: Iterable[Run]) -> str:
    """Where the CPU of the window went: user and kernel time of the process, context
    switches of all its threads, and CPU per kind of thread (names with numbers folded)."""
    rows = [
        "| job | impl | CPU % user / sys | context switches/s voluntary / involuntary "
        "| kind of thread ×count: CPU % of a core |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        if r.ok and r.cpu_by_role:
            cells = ", ".join(
                f"{role} ×{n}: {pct:.1f}" if n > 1 else f"{role}: {pct:.1f}"
                for role, (n, pct) in r.cpu_by_role.items()
            )
            total = sum(pct for _, pct in r.cpu_by_role.values())
            voluntary, involuntary = r.switches_per_s
            rows.append(
                f"| {r.job.label} | {r.impl} | {fmt(r.cpu_user_pct)} / {fmt(r.cpu_sys_pct)} "
                f"| {fmt(voluntary, 0)} / {fmt(involuntary, 0)} | {cells} (sum {total:.1f}) |"
            )
    return "\n".join(rows) + "\n"


def jitter_text(m: Metrics) -> str:
    """p99 |jitter| anchored at the median phase, and from the first tick in parentheses."""
    return f"{m.jitter_p99_ms:.2f} ms ({m.jitter_p99_first_ms:.2f} from the first tick)"


def target_rows(pairs: Iterable[tuple[Run, Run]]) -> str:
    """The issue's targets for each pair: the agent's figure (met/MISSED), the baseline's."""
    rows = ["| job | target | agent | baseline |", "|---|---|---|---|"]
    for agent, base in pairs:
        job = agent.job
        if not agent.ok:
            rows.append(f"| {job.label} | — | {agent.status} | {base.status} |")
            continue
        a, b = agent.metrics, base.metrics

        def row(target: str, value: str, ok: bool, base_value: str, label: str = job.label) -> None:
            rows.append(f"| {label} | {target} | {value} {verdict(ok)} | {base_value} |")

        def ticks(m: Metrics) -> str:
            return f"{m.ticks_min}–{m.ticks_max}"

        if job.scenario == "single":
            n = job.expected_ticks
            row(
                f"ticks {n} ± 1",
                ticks(a),
                n - 1 <= a.ticks_min and a.ticks_max <= n + 1,
                ticks(b) if base.ok else base.status,
            )
            row(
                "p99 \\|jitter\\| ≤ 2 ms",
                jitter_text(a),
                a.jitter_p99_ms <= 2.0,
                jitter_text(b) if base.ok else "—",
            )
        elif job.scenario == "many":
            if base.ok and base.cpu_pct > 0:
                ratio = agent.cpu_pct / base.cpu_pct
                row(
                    "CPU ≤ 2× baseline",
                    f"{agent.cpu_pct:.1f} % = {ratio:.2f}×",
                    ratio <= 2.0,
                    f"{base.cpu_pct:.1f} %",
                )
            row(
                "RSS ≤ 40 MiB (peak VmHWM)",
                f"{agent.hwm_mb:.1f} MiB",
                agent.hwm_mb <= 40.0,
                f"{base.hwm_mb:.1f} MiB" if base.ok else "—",
            )
            row("skipped ticks 0", str(a.skipped), a.skipped == 0, str(b.skipped))
            row(
                "max \\|drift\\| ≤ 15 ms",
                f"{a.drift_max_ms:.2f} ms",
                a.drift_max_ms <= 15.0,
                f"{b.drift_max_ms:.2f} ms" if base.ok else "—",
            )
            row(
                "p99 \\|jitter\\| ≤ 15 ms",
                jitter_text(a),
                a.jitter_p99_ms <= 15.0,
                jitter_text(b) if base.ok else "—",
            )
    return "\n".join(rows) + "\n"


def footprint_rows(runs: Sequence[Run]) -> str:
    """RSS and threads with 0 and N devices, and the cost of one device (each N-device run
    against the latest 0-device run of the same implementation before it)."""
    rows = [
        "| impl | devices | RSS end MiB | VmHWM MiB | threads | RSS per device KiB |",
        "|---|---|---|---|---|---|",
    ]
    for impl in ("agent", "baseline"):
        zero: Run | None = None
        for r in runs:
            if r.impl != impl or not r.ok:
                continue
            n = r.job.devices
            if n == 0:
                zero = r
            per = "—"
            if zero is not None and n > 0:
                per = f"{(r.rss_end_mb - zero.rss_end_mb) * 1024 / n:.1f}"
            rows.append(
                f"| {impl} | {n} | {r.rss_end_mb:.1f} | {r.hwm_mb:.1f} | {r.threads} | {per} |"
            )
    return "\n".join(rows) + "\n"


# -- the suite's scenarios (python -m bench) ------------------------------------------------


class RunsFailed(RuntimeError):
    """A scenario some of whose runs failed. It still carries the figures of the runs that
    worked (``figures``): ``python -m bench`` prints them, and fails the invocation."""

    def __init__(self, message: str, figures: list[Figure]) -> None:
        super().__init__(message)
        self.figures = figures


def suite_setup(options: Options) -> Setup:
    """The suite's broker, interpreter and children, this checkout's agent. No packet counts:
    asking the broker before and after a run costs ~5 s a run, and whether every message
    arrives is the throughput scenario's question."""
    return Setup(options.broker, options.python, options.children, None, count_packets=False)


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def rounds_of(job: Job, options: Options, setup: Setup, folder: Path) -> dict[str, list[Run]]:
    """``options.rounds`` runs of ``job`` for each implementation, alternately: the agent
    first in odd rounds, the baseline first in even ones, so that a slow spell of the shared
    machine, or whatever the first run of a pair leaves warm, does not always fall on the
    same side. With ``busy_other_core`` the busy loop spins through both runs of a round."""
    runs: dict[str, list[Run]] = {"agent": [], "baseline": []}
    for rnd in range(options.rounds):
        order = ("agent", "baseline") if rnd % 2 == 0 else ("baseline", "agent")
        with busy_loop(setup.children, setup.python, job.busy_other_core):
            for impl in order:
                where = folder / f"{slug(job.label)}-r{rnd + 1}-{impl}"
                run = measure_safely(impl, job, where, setup)
                runs[impl].append(run)
                print_progress(run, f"  round {rnd + 1}: ")
    return runs


Row = tuple[str, str, Callable[[Run], float], Target | None]
"""A row of a scenario: name, unit, the value of a run, the target."""


def figure(
    scenario: str,
    name: str,
    unit: str,
    value: Callable[[Run], float],
    target: Target | None,
    runs: dict[str, list[Run]],
) -> Figure:
    """One row: ``value`` of each round's run, NaN for a run that did not work (its status
    goes into the note)."""
    trouble = [
        f"round {i + 1} {impl}: {run.status[:100]}"
        for impl in ("agent", "baseline")
        for i, run in enumerate(runs[impl])
        if not run.ok
    ]
    return Figure(
        scenario,
        name,
        unit,
        agent=[float(value(r)) if r.ok else math.nan for r in runs["agent"]],
        baseline=[float(value(r)) if r.ok else math.nan for r in runs["baseline"]],
        target=target,
        note="; ".join(trouble),
    )


def raise_if_failed(scenario: str, runs: Iterable[Run], figures: list[Figure]) -> None:
    """Fail the scenario if a run failed ("not available" — a feature the agent lacks — is a
    figure's note, not a failure)."""
    failed = [r for r in runs if r.status.startswith("failed")]
    if failed:
        text = "; ".join(f"{r.job.label} / {r.impl}: {r.status[:300]}" for r in failed)
        raise RunsFailed(f"{len(failed)} run(s) of {scenario} failed: {text}", figures)


def ticks_off(run: Run) -> float:
    """How far a device's ticks in the window are from ``duration / interval``, at worst."""
    expected = run.job.expected_ticks
    m = run.metrics
    return max(abs(m.ticks_min - expected), abs(m.ticks_max - expected))


def run_cadence(options: Options) -> list[Figure]:
    """One telemetry device every 100 ms, as is and with the other core busy.

    Each job runs ``options.rounds`` times for agent and baseline, alternately (see
    :func:`rounds_of`); a window of 10 s (quick: 1 s, after a settle of 0.5 s instead of
    2 s). With the other core busy, the measured process is pinned to core 0 while a second
    Python process spins pinned to core 1, through both runs of a round. Rows, per job, one
    value per round (the table shows the median over rounds):

    * ``|ticks − N|`` — ticks in the window against ``N = duration / interval``; target ≤ 1;
    * ``skipped ticks`` — counted from the gaps (module docstring); target 0;
    * ``p99 |jitter|`` — anchored at the device's median phase; target ≤ 2 ms;
    * ``CPU`` — % of one core over the window, summed over the process's threads from
      schedstat (:attr:`Run.cpu_threads_pct`: at 1 % of a core, utime + stime in 10 ms
      ticks would be too coarse); no target (one device's CPU is small either way; the
      ratio says what the framework costs around it).
    """
    setup = suite_setup(options)
    quick = options.quick
    base = Job(
        "single",
        "1 device @ 100 ms",
        1,
        0.1,
        1.0 if quick else 10.0,
        settle_s=0.5 if quick else None,
    )
    jobs = [base, replace(base, label="1 device @ 100 ms, other core busy", busy_other_core=True)]
    figures: list[Figure] = []
    every: list[Run] = []
    for job in jobs:
        if job.busy_other_core and (os.cpu_count() or 1) < 2:
            print(f"  skipped {job.label}: needs 2 CPUs")
            continue
        runs = rounds_of(job, options, setup, options.workdir / "cadence")
        every += runs["agent"] + runs["baseline"]
        n = job.expected_ticks
        rows: list[Row] = [
            (f"|ticks − {n}|", "ticks", ticks_off, Target("max", 1)),
            ("skipped ticks", "ticks", lambda r: r.metrics.skipped, Target("max", 0)),
            ("p99 |jitter|", "ms", lambda r: r.metrics.jitter_p99_ms, Target("max", 2.0)),
            ("CPU", "% of a core", lambda r: r.cpu_threads_pct, None),
        ]
        figures += [figure("cadence", f"{job.label}: {name}", *rest, runs) for name, *rest in rows]
    raise_if_failed("cadence", every, figures)
    return figures


SWEEP_COUNTS = (0, 10, 100, 300)
"""Device counts of the full sweep, below the scale job's 1,000 (which is the last point)."""


def run_scale(options: Options) -> list[Figure]:
    """Many telemetry devices: 1,000 at 1 s, ungrouped and in 10 groups, then a sweep of RSS
    and CPU against the device count.

    Full mode: 1,000 devices every 1 s, a window of 10 s (10,000 ticks a run) after the
    usual 3 s settle; quick mode: 50 devices every 0.5 s, a window of 1.5 s after 1 s. Each
    of the two jobs runs ``options.rounds`` times for agent and baseline, alternately (the
    grouped baseline: one thread per group calling its devices one after the other). Rows,
    per job, one value per round:

    * ``CPU`` — utime + stime over the window, % of one core; target ≤ 2× the baseline's;
    * ``RSS (VmHWM)`` — the kernel's high-water mark of the whole run at the window's end,
      MiB (every memory figure here is in binary units, as /proc counts: kB there is
      KiB); target ≤ 40 MiB, the telemetry issue's "40 MB" read in those units;
    * ``threads`` — the most /proc/PID/status showed during the window;
    * ``skipped ticks`` (target 0), ``max |drift|`` and ``p99 |jitter|`` (targets ≤ 15 ms),
      as the module docstring defines them.

    The sweep runs 0, 10, 100 and 300 devices (quick: 0) at the same interval, once for
    each implementation (one round: it draws a curve, the table's figures come from the
    jobs above), a 5 s window after 1.5 s (quick: 1 s after 0.5 s); the ungrouped job's
    medians are its last point. ``options.raw`` gets ``scale.sweep.rss_mb.<impl>`` and
    ``scale.sweep.cpu_pct.<impl>``: ``[devices, value]`` pairs, VmRSS at the window's end
    (the steady state, without the start-up's peak) and CPU over the window, for the plot
    "RSS and CPU against device count". Two more rows come from it: ``RSS with 0 devices``
    (what the runtime and its imports cost) and ``RSS per device`` — ``(RSS(N) − RSS(0)) /
    N`` in KiB, N the ungrouped job's count: what one more device costs.
    """
    setup = suite_setup(options)
    quick = options.quick
    n = 50 if quick else 1000
    interval = 0.5 if quick else 1.0
    many = Job(
        "many",
        f"{n:,} devices @ {interval:g} s",
        n,
        interval,
        1.5 if quick else 10.0,
        settle_s=1.0 if quick else None,
    )
    grouped = replace(many, label=f"{many.label}, 10 groups", groups=10)
    figures: list[Figure] = []
    every: list[Run] = []
    medians: dict[str, tuple[float, float]] = {}  # the ungrouped job's RSS and CPU, per impl
    for job in (many, grouped):
        runs = rounds_of(job, options, setup, options.workdir / "scale")
        every += runs["agent"] + runs["baseline"]
        if job.groups == 0:
            for impl, those in runs.items():
                ok = [r for r in those if r.ok]
                medians[impl] = (
                    median([r.rss_end_mb for r in ok]),
                    median([r.cpu_pct for r in ok]),
                )
        rows: list[Row] = [
            ("CPU", "% of a core", lambda r: r.cpu_pct, Target("ratio_max", 2.0)),
            ("RSS (VmHWM)", "MiB", lambda r: r.hwm_mb, Target("max", 40.0)),
            ("threads", "threads", lambda r: r.threads, None),
            ("skipped ticks", "ticks", lambda r: r.metrics.skipped, Target("max", 0)),
            ("max |drift|", "ms", lambda r: r.metrics.drift_max_ms, Target("max", 15.0)),
            ("p99 |jitter|", "ms", lambda r: r.metrics.jitter_p99_ms, Target("max", 15.0)),
        ]
        figures += [figure("scale", f"{job.label}: {name}", *rest, runs) for name, *rest in rows]
    sweep = sweep_runs((0,) if quick else SWEEP_COUNTS, interval, options, setup)
    every += [run for pair in sweep for run in pair.values()]
    for impl in ("agent", "baseline"):
        points = [(p[impl].job.devices, p[impl]) for p in sweep if p[impl].ok]
        rss = [[float(d), r.rss_end_mb] for d, r in points]
        cpu = [[float(d), r.cpu_pct] for d, r in points]
        if impl in medians:
            rss.append([float(n), medians[impl][0]])
            cpu.append([float(n), medians[impl][1]])
        options.raw[f"scale.sweep.rss_mb.{impl}"] = rss
        options.raw[f"scale.sweep.cpu_pct.{impl}"] = cpu
    zero = {
        impl: next((p[impl].rss_end_mb for p in sweep if p[impl].job.devices == 0), math.nan)
        for impl in ("agent", "baseline")
    }
    figures.append(
        Figure("scale", "RSS with 0 devices (VmRSS)", "MiB", [zero["agent"]], [zero["baseline"]])
    )
    per_device = {
        impl: (medians.get(impl, (math.nan,))[0] - zero[impl]) * 1024 / n
        for impl in ("agent", "baseline")
    }
    figures.append(
        Figure(
            "scale",
            f"RSS per device, 0 → {n:,} devices (VmRSS)",
            "KiB",
            [per_device["agent"]],
            [per_device["baseline"]],
        )
    )
    raise_if_failed("scale", every, figures)
    return figures


def sweep_runs(
    counts: Sequence[int], interval: float, options: Options, setup: Setup
) -> list[dict[str, Run]]:
    """One run per implementation for each device count, alternating which goes first."""
    quick = options.quick
    out: list[dict[str, Run]] = []
    for i, count in enumerate(counts):
        job = Job(
            "footprint",
            f"{count:,} devices @ {interval:g} s (sweep)",
            count,
            interval,
            1.0 if quick else 5.0,
            settle_s=0.5 if quick else 1.5,
        )
        order = ("agent", "baseline") if i % 2 == 0 else ("baseline", "agent")
        pair: dict[str, Run] = {}
        for impl in order:
            where = options.workdir / "scale" / f"{slug(job.label)}-{impl}"
            pair[impl] = measure_safely(impl, job, where, setup)
            print_progress(pair[impl], "  sweep: ")
        out.append(pair)
    return out


# -- main -----------------------------------------------------------------------------------


def jobs_for(args: argparse.Namespace) -> list[Job]:
    quick = args.quick
    single_s = args.duration or (10.0 if quick else 60.0)
    many_s = args.duration or (10.0 if quick else 60.0)
    foot_s = min(args.duration or 10.0, 5.0 if quick else 10.0)
    n = args.devices or (100 if quick else 1000)
    jobs: list[Job] = []
    if args.scenario in ("single", "all"):
        one = Job("single", "1 device @ 100 ms", 1, 0.1, single_s)
        jobs.append(one)
        jobs.append(replace(one, label="1 device @ 100 ms, other core busy", busy_other_core=True))
        if args.pinning:
            label = "1 device @ 100 ms, pinned, other core idle"
            jobs.append(replace(one, label=label, pinned=True))
    if args.scenario in ("many", "all"):
        many = Job("many", f"{n} devices @ 1 s", n, 1.0, many_s)
        jobs.append(many)
        jobs.append(replace(many, label=f"{n} devices @ 1 s, 10 groups", groups=10))
    if args.scenario in ("footprint", "all"):
        jobs.append(Job("footprint", "0 devices (footprint)", 0, 1.0, foot_s))
        jobs.append(Job("footprint", f"{n} devices (footprint)", n, 1.0, foot_s))
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s runs, 100 devices (smoke)")
    parser.add_argument("--scenario", choices=["single", "many", "footprint", "all"], default="all")
    parser.add_argument("--duration", type=float, help="seconds of each measurement window")
    parser.add_argument("--devices", type=int, help="devices of the many/footprint jobs")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each pair this often (order alternates)"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy runs of the many jobs")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for agent and baseline"
    )
    parser.add_argument(
        "--agent-root",
        type=Path,
        help="run the agent package of this folder (e.g. a `git archive HEAD` copy) "
        "instead of this checkout's",
    )
    parser.add_argument(
        "--pinning",
        action="store_true",
        help="also the single job pinned to core 0 with the other core idle (which of the "
        "two, pinning or the busy core, changes the jitter)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also a diagnostic run of N devices per implementation: Python memory by file",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    args = parser.parse_args(argv)
    if args.agent_root is not None:
        args.agent_root = args.agent_root.resolve()
        if not (args.agent_root / "agent" / "__init__.py").exists():
            parser.error(f"--agent-root {args.agent_root}: no agent/__init__.py there")

    jobs = jobs_for(args)
    workdir = Path(tempfile.mkdtemp(prefix="bench-telemetry-"))
    children = Children()
    import paho.mqtt

    print(
        f"{dt.datetime.now():%Y-%m-%d %H:%M}, python {platform.python_version()}, "
        f"paho-mqtt {paho.mqtt.__version__}, {os.cpu_count()} CPUs ({cpu_model()}), "
        f"load average {Path('/proc/loadavg').read_text().split()[:3]}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(describe_agent(args.agent_root or REPO))
    digest_before = source_digest(args.agent_root or REPO)
    print(f"run folders: {workdir}\n")
    broker = Broker()
    setup = Setup(broker, args.python, children, args.agent_root)
    runs: list[Run] = []
    pairs: list[tuple[Run, Run]] = []
    try:
        run_pairs(jobs, args.repeat, workdir, setup, runs, pairs)
        digest_after = source_digest(args.agent_root or REPO)
        if digest_after != digest_before:
            print(
                f"\nWARNING: the agent sources changed during the benchmark (digest "
                f"{digest_before} -> {digest_after}): the runs may have measured different code"
            )
        print_report(runs, pairs)
        save_results(workdir / "results.json", runs)
        if args.tracemalloc:
            print("### Where the Python memory goes (tracemalloc; not measured runs)\n")
            n = args.devices or (100 if args.quick else 1000)
            for impl in ("agent", "baseline"):
                try:
                    text = memory_diagnostic(n, impl, workdir / f"tracemalloc-{impl}", setup)
                except Exception as exc:
                    text = f"failed: {type(exc).__name__}: {exc}\n"
                print(f"#### {impl}\n\n{text}", flush=True)
        if args.profile:
            many = [j for j in jobs if j.scenario == "many"] or [
                Job("many", "1000 devices @ 1 s", args.devices or 1000, 1.0, 30.0)
            ]
            print("### Profiles (py-spy; not measured runs)\n")
            for job in many:
                for impl in ("agent", "baseline"):
                    folder = workdir / f"profile-{impl}-{job.groups}"
                    try:
                        summary = profile(job, impl, folder, setup)
                    except Exception as exc:  # a profile is a bonus: never lose the figures
                        summary = f"profiling failed: {type(exc).__name__}: {exc}\n"
                    print(f"#### {job.label} / {impl}\n\n{summary}", flush=True)
    except KeyboardInterrupt:
        print("interrupted: stopping what was started")
        if runs:
            print_report(runs, pairs)
    finally:
        children.end_all()
        broker.close()
    if args.keep or args.profile:
        print(f"run folders kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run_pairs(
    jobs: Sequence[Job],
    repeat: int,
    workdir: Path,
    setup: Setup,
    runs: list[Run],
    pairs: list[tuple[Run, Run]],
) -> None:
    """Run every job for the agent and the baseline, back to back (the order alternates
    with each repetition), appending to ``runs`` and ``pairs`` as they finish."""
    for rep in range(repeat):
        for job in jobs:
            order = ("agent", "baseline") if rep % 2 == 0 else ("baseline", "agent")
            if (job.busy_other_core or job.pinned) and (os.cpu_count() or 1) < 2:
                print(f"skipped {job.label}: needs 2 CPUs")
                continue
            done: dict[str, Run] = {}
            with busy_loop(setup.children, setup.python, job.busy_other_core):
                for impl in order:
                    run = measure_safely(impl, job, workdir / f"{len(runs):02d}-{impl}", setup)
                    runs.append(run)
                    done[impl] = run
                    print_progress(run)
            pairs.append((done["agent"], done["baseline"]))


def measure_safely(impl: str, job: Job, folder: Path, setup: Setup) -> Run:
    """:func:`measure`, with an exception turned into a failed run: one broken run must not
    lose the others."""
    try:
        return measure(impl, job, folder, setup)
    except Exception as exc:
        return Run(job, impl, status=f"failed: {type(exc).__name__}: {exc}")


def print_progress(run: Run, prefix: str = "") -> None:
    """One line as a run ends, and its notes and first log warnings under it."""
    print(
        f"{prefix}{run.job.label} / {run.impl}: {run.status}, "
        f"ticks {run.metrics.ticks_min}–{run.metrics.ticks_max}, "
        f"p99 {fmt(run.metrics.jitter_p99_ms, 2)} ms, "
        f"CPU {fmt(run.cpu_pct)} %, HWM {fmt(run.hwm_mb)} MiB",
        flush=True,
    )
    for note in run.notes:
        print(f"    note: {note}")
    for line in run.log_warnings[:3]:
        print(f"    log: {line}")
    if len(run.log_warnings) > 3:
        print(f"    log: ... {len(run.log_warnings)} such lines")


def print_report(runs: Sequence[Run], pairs: Sequence[tuple[Run, Run]]) -> None:
    """All the tables, Markdown."""
    agent_files = {r.agent_file for r in runs if r.agent_file}
    if agent_files:
        print(f"\nthe agent runs imported {', '.join(sorted(agent_files))}")
    measured = [r for r in runs if r.job.scenario != "footprint"]
    if measured:
        print("\n### Runs\n")
        print(run_rows(measured))
    print("### Conditions\n")
    print(condition_rows(runs))
    print("### CPU by thread (over the window)\n")
    print(thread_rows(runs))
    target_pairs = [p for p in pairs if p[0].job.scenario != "footprint"]
    if target_pairs:
        print("### Targets\n")
        print(target_rows(target_pairs))
    footprint = [r for r in runs if r.job.scenario == "footprint"]
    if footprint:
        print("### Footprint\n")
        print(run_rows(footprint))
        print(footprint_rows(footprint))


def save_results(path: Path, runs: Sequence[Run]) -> None:
    """Every figure of every run as JSON, for comparing before and after a change."""
    data = [
        {
            **{k: v for k, v in vars(r).items() if k not in ("job", "metrics")},
            "job": vars(r.job),
            "metrics": vars(r.metrics),
        }
        for r in runs
    ]
    path.write_text(json.dumps(data, indent=1, default=str))
    print(f"figures saved to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
