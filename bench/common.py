"""What every benchmark of ``python -m bench`` shares: the private broker, the processes it
starts, readings of /proc, percentiles, and :class:`Figure` — one row of the suite's table.

A figure holds the value of each round for agent and for its baseline (a minimal hand-written
paho script doing the same job), and the target it is held to. Measurements, not tests:
nothing here fails a build, except a scenario that cannot run at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent.testing.mosquitto import Mosquitto, Observer  # noqa: E402 - after the path

SYS_RECEIVED = "$SYS/broker/messages/received"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MEASURED_CORE = 0
BUSY_CORE = 1
LAUNCHER = """\
import sys
root = sys.argv.pop(1)
def editable(finder):
    module = finder.__module__ if isinstance(finder, type) else type(finder).__module__
    return "editable" in module
sys.meta_path[:] = [f for f in sys.meta_path if not editable(f)]
sys.path.insert(0, root)
from agent.cli import main
sys.exit(main())
"""
"""``python -m agent`` for another checkout's package (``--agent-root``): an editable install
puts a finder in front of ``sys.meta_path`` that ``PYTHONPATH`` cannot override; this drops
it and puts the root first on the path."""


# -- the suite's table ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a figure is held to: ``ratio_max`` (agent / baseline ≤ value), ``ratio_min``
    (agent / baseline ≥ value), ``max`` (agent's own value ≤ value, in the figure's unit),
    ``min`` (agent's own value ≥ value)."""

    kind: str
    value: float

    def text(self, unit: str) -> str:
        return {
            "ratio_max": f"≤ {self.value:g}× baseline",
            "ratio_min": f"≥ {self.value:g}× baseline",
            "max": f"≤ {self.value:g} {unit}",
            "min": f"≥ {self.value:g} {unit}",
        }[self.kind]


@dataclass
class Figure:
    """One row of the suite's table: a figure measured for agent and baseline, round by round.

    ``agent`` and ``baseline`` hold one value per round (a median, a count, a p99 of that
    round...); the table shows their median across rounds and the ratio of the medians.
    ``baseline`` is empty where there is none (e.g. a store has no paho script to beat).
    """

    scenario: str
    name: str
    unit: str
    agent: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    target: Target | None = None
    note: str = ""

    @property
    def agent_median(self) -> float:
        return median(self.agent)

    @property
    def baseline_median(self) -> float:
        return median(self.baseline)

    @property
    def ratio(self) -> float:
        a, b = self.agent_median, self.baseline_median
        if math.isnan(a) or math.isnan(b) or b == 0:
            return math.nan
        return a / b

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None without a target or without the values."""
        if self.target is None:
            return None
        kind, value = self.target.kind, self.target.value
        x = self.ratio if kind.startswith("ratio") else self.agent_median
        if math.isnan(x):
            return None
        return x <= value if kind.endswith("max") else x >= value

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "name": self.name,
            "unit": self.unit,
            "agent": self.agent,
            "baseline": self.baseline,
            "target": None if self.target is None else self.target.text(self.unit),
            "met": self.met,
            "note": self.note,
        }


@dataclass
class Options:
    """What ``python -m bench`` hands every scenario's ``run(options) -> list[Figure]``."""

    quick: bool  # a smoke run of about a minute: the suite keeps working (CI)
    rounds: int  # agent and baseline each run this many times, alternately
    python: str  # the interpreter of agent, baselines and helpers
    workdir: Path  # a scenario writes under workdir / its name
    broker: Broker  # the one private mosquitto of the invocation
    children: Children  # every process started, ended at exit
    plots: Path | None = None  # where to write plots (PNG), None: none
    raw: dict[str, Any] = field(default_factory=dict)  # samples kept for the report/plots
    agent_root: Path | None = None  # measure another checkout's agent/ (bridge scenarios)


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


# -- reading /proc --------------------------------------------------------------------------


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, all its threads (those that ended too), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14, 15 of proc(5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (those that ended too), in seconds."""
    return sum(cpu_split(pid))


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches summed over the live threads of a process:
    a thread that goes to sleep (a wait, a lock, the GIL) switches voluntarily; one the
    kernel preempts, involuntarily."""
    voluntary = involuntary = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time of each live thread of a process, by OS thread id, in seconds.

    From /proc/PID/task/TID/schedstat (nanoseconds on the CPU, exact) where the kernel has
    it; the ``utime + stime`` of a thread's ``stat`` count in 10 ms clock ticks, and for
    1,000 threads that each run for a few hundred microseconds a second they lose most of
    it. (The process's own total, :func:`cpu_seconds`, is exact either way.)
    """
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            try:
                out[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
            except OSError:
                text = (task / "stat").read_text()
                fields = text[text.rindex(")") + 2 :].split()
                out[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) and Threads from /proc/PID/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def machine_jiffies() -> tuple[int, int, int]:
    """(total, idle + iowait, steal) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return total, idle + iowait, steal


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def agent_env() -> dict[str, str]:
    """The environment for ``python -m agent``: this checkout's package first on the path,
    none of the settings variables of the calling shell (as tests/e2e_helpers.agent_env)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT__", "LOGGING__"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def new_client(client_id: str, *, nodelay: bool = False) -> Any:
    """A paho client for either API (2.x needs the callback API version, 1.6 has none);
    ``nodelay`` turns Nagle's algorithm off, as agent and the bridge baseline have it
    (otherwise a small publish may wait ~40 ms for a delayed ACK)."""
    import paho.mqtt.client as mqtt

    if hasattr(mqtt, "CallbackAPIVersion"):  # paho 2.x
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    else:
        client = mqtt.Client(client_id=client_id)
    if nodelay:

        def no_delay(client: Any, userdata: Any, sock: Any) -> None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        client.on_socket_open = no_delay
    return client


def run_json_child(
    options: Options,
    cmd: Sequence[str],
    env: dict[str, str],
    out: Path,
    log_path: Path,
    timeout: float,
    lines: int = 5,
) -> dict[str, Any]:
    """Run a benchmark script as a child process of the suite (its output into
    ``log_path``) and return the JSON report it wrote to ``out``; RuntimeError with the
    log's tail when it failed or wrote none."""
    with open(log_path, "wb") as log:
        proc = options.children.spawn(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=timeout)
        finally:
            options.children.end(proc)
    if code != 0 or not out.exists():
        name = Path(cmd[1]).name if len(cmd) > 1 else cmd[0]
        raise RuntimeError(f"bench/{name} exited with {code}: {log_tail(log_path, lines)}")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def require_own_agent(python: str) -> None:
    """Exit with the fix unless ``python -m agent``, as the suite runs it, imports this
    checkout's ``agent/``.

    An editable install (``pip install -e .``, as scripts/test makes one) puts a finder in
    front of ``sys.meta_path`` that ``PYTHONPATH`` cannot override: the suite run from
    another checkout (a ``git worktree``) would measure the installed one's code while
    reporting its own sources.
    """
    code = "import pathlib, agent; print(pathlib.Path(agent.__file__).resolve().parent)"
    exe = os.path.abspath(python) if os.sep in python else python  # run from "/"
    done = subprocess.run(
        [exe, "-c", code], capture_output=True, text=True, env=agent_env(), cwd="/",
        timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench: {python} cannot import agent: {reason}")
    imported, own = done.stdout.strip(), str((REPO / "agent").resolve())
    if imported != own:
        raise SystemExit(
            f"bench: {python} -m agent imports {imported}, not {own}"
            " (an editable install of another checkout): run this from that checkout, or"
            f" pip install -e {REPO}; from there --agent-root {REPO} measures this one"
            " (bridge, throughput and the A/B tools)"
        )


def compile_agent(python: str, root: Path) -> str:
    """Byte-compile ``root/agent`` for ``python``, as pip and dpkg do when they install it.

    A checkout has no bytecode of its own, and with ``PYTHONDONTWRITEBYTECODE`` set (as on
    these machines) a run never writes it: every agent process would compile its ~75
    modules from source at each start — tens of milliseconds and a few MiB that an
    installed agent never pays, and the baseline's paho (installed) does not either.
    """
    done = subprocess.run(
        [python, "-m", "compileall", "-q", str(root / "agent")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"compileall of {root / 'agent'} failed: {done.stdout}{done.stderr}")
    return f"bytecode of {root / 'agent'} compiled by {python} -m compileall, as an install does"


def source_digest(root: Path) -> str:
    """A short sha256 of every ``agent/**/*.py`` under ``root``: which code was measured,
    also when it was an uncommitted working tree."""
    digest = hashlib.sha256()
    for path in sorted((root / "agent").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def interpreter_text(python: str) -> str:
    """The measured interpreter's Python and paho-mqtt versions, asked of it."""
    code = (
        "import platform, paho.mqtt; "
        "print(platform.python_implementation(), platform.python_version(), paho.mqtt.__version__)"
    )
    try:
        out = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{python}: cannot ask it ({exc})"
    if len(out) != 3:
        return f"{python}: no paho-mqtt?"
    return f"{python}: {out[0]} {out[1]}, paho-mqtt {out[2]}"


def describe_agent(root: Path) -> str:
    """HEAD, uncommitted changes under agent/ and the source digest of the measured agent."""
    parts = [f"agent sources {root / 'agent'} (digest {source_digest(root)})"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--short", "--", "agent"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
        if head:
            parts.append(f"git HEAD {head}, {len(dirty)} uncommitted path(s) under agent/")
    return ", ".join(parts)


def pinned_to(core: int | None):  # type: ignore[no-untyped-def]
    """A ``preexec_fn`` pinning the child (and every thread it will start) to ``core``."""
    if core is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {core})

    return pin


class Children:
    """Every process this benchmark starts, so that all of them (and only them) end."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, **kwargs)
        self._procs.append(proc)
        return proc

    def end(self, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; the exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)
        return proc.returncode

    def end_all(self) -> None:
        for proc in list(self._procs):
            self.end(proc, timeout=10.0)


@contextlib.contextmanager
def busy_loop(children: Children, python: str, enabled: bool) -> Iterator[None]:
    """A Python process spinning on the other core while the block runs (if ``enabled``)."""
    if not enabled:
        yield
        return
    proc = children.spawn([python, "-c", "while True: pass"], preexec_fn=pinned_to(BUSY_CORE))
    try:
        yield
    finally:
        children.end(proc, timeout=5.0)


class Broker:
    """The private mosquitto of this invocation, quiet, with $SYS counters every second."""

    def __init__(self) -> None:
        # Queues far above a burst (bench/bridge.py): the broker must never be what drops.
        self.mosquitto = Mosquitto(
            extra_config=["sys_interval 1", "max_queued_messages 1000000", "max_queued_bytes 0"]
        )
        # The helper logs every packet (log_type all), for tests; at 1,000 messages a
        # second that is mosquitto writing 2,000 lines a second. Errors and warnings only.
        config = self.mosquitto.config_path
        config.write_text(
            config.read_text().replace("log_type all\n", "log_type error\nlog_type warning\n")
        )
        self.mosquitto.start()
        self.host, self.port = self.mosquitto.host, self.mosquitto.port
        self.observer = Observer(self.host, self.port, [SYS_RECEIVED], client_id="bench-sys")
        process = getattr(self.mosquitto, "_process", None)
        self.pid: int | None = getattr(process, "pid", None)

    def received(self, stable: float = 2.5, timeout: float = 10.0) -> int | None:
        """The broker's count of MQTT packets received, once it has stopped changing.

        mosquitto refreshes ``$SYS`` every second (``sys_interval 1``) and only when a value
        changed, so the latest message may be a second old: wait until no new value came
        for ``stable`` seconds (at most ``timeout``). The observer's own PINGREQ (every
        5 s) still counts, one or two a run.
        """
        deadline = time.monotonic() + timeout
        last: bytes | None = None
        since = time.monotonic()
        while time.monotonic() < deadline:
            messages = self.observer.messages(SYS_RECEIVED)
            value = messages[-1].payload if messages else None
            if value != last:
                last, since = value, time.monotonic()
            elif time.monotonic() - since >= stable:
                break
            time.sleep(0.1)
        try:
            return int(last) if last is not None else None
        except ValueError:
            return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.observer.close()
        self.mosquitto.close()


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def py_spy() -> str | None:
    """py-spy next to the running Python (a venv's bin/), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")
