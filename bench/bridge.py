"""The bridge and throughput scenarios: agent against a minimal hand-written paho script.

The job (bench/bridge_app.py for agent, bench/bridge_baseline.py for the baseline): ten
telemetry devices publishing a retained QoS 1 state every second, and one command device
``echo``. Each round runs the baseline and agent one after the other (the order alternates
round by round), each on a topic prefix of its own, against the suite's one mosquitto.

**bridge** — one run of each implementation per round; from the spawn of the process:

* *start → first state*: spawn → the first state message of any device reaching a
  subscriber that was listening before the spawn (a client in this process, time stamped in
  its ``on_message``); in full mode the median of six spawns a round, this run's and five
  start-only ones (:func:`first_state_ms`, the two implementations in turns): one start is
  a noisy sample of ~0.1 s;
* *idle CPU*: CPU time of the process (its live threads' /proc/PID/task/TID/schedstat, in
  nanoseconds: 10 ms clock ticks are too coarse for an idle script) over the window
  ``[settle, settle + idle)`` after the first state (full: 10 s after 10 s; quick: 2 s after
  2 s): the ten devices publishing, no command;
* *RSS* and *HWM* (VmRSS, VmHWM) and *threads* at the end of that window (full: 20 s);
* *command round trip* at QoS 1 and QoS 0: a probe client in this process, driving paho's
  loop itself on this thread (no thread hand-off on the probe's side), sends
  ``"<seq> <qos>"`` to ``{prefix}/echo/set`` and waits for the answer (QoS 1: the retained
  state ``{"seq": seq}`` on ``{prefix}/echo/state``; QoS 0: the payload back on
  ``{prefix}/echo/reply``); one at a time, after 50 unmeasured ones; p50 and p99 of the
  round are figures of their own; all samples go to ``options.raw`` for the plot;
* *CPU per command*: the process's CPU time over the round trips, less what the idle window
  says the ten devices cost in that time, divided by the number of commands;
* *SIGTERM → exit, offline sent*: SIGTERM to the process exiting *and* ``offline`` having
  reached a subscriber of ``{prefix}/status``, whichever is later.

**throughput** — a run of its own per implementation and round, without the idle window
and the measured round trips (it settles 2 s and warms the command path up with 50 round
trips at each QoS); then ``"burst <n> <qos>"`` makes the command device (the baseline: a
thread of its own) publish ``n`` messages ``"<i>"`` back to back on
``{prefix}/echo/burst`` (``ctx.publish(..., qos=qos)``). A ``mosquitto_sub`` (C,
line-buffered through ``stdbuf``) subscribed at the same QoS receives them; the figure is
``n`` divided by the time from the command's publish to the ``n``-th line. *lost* counts
the indices that never arrived (must be 0): the run waits at most 60 s for them.

The broker is the suite's (bench.common.Broker: ``set_tcp_nodelay true``; queues bounded
well above a burst, so the broker drops nothing).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


from bench.common import (  # noqa: E402
    LAUNCHER,
    Broker,
    Children,
    Figure,
    Options,
    Target,
    agent_env,
    compile_agent,
    log_tail,
    median,
    new_client,
    percentile,
    proc_status,
    require_own_agent,
    thread_cpu_seconds,
)

IMPLS = ("baseline", "agent")
WARMUP_COMMANDS = 50
THROUGHPUT_SETTLE = 2.0  # s after the first state before a throughput run's warm-up


@dataclass(frozen=True)
class Plan:
    """The sizes of one invocation (quick or full)."""

    settle: float  # s after the first state before the idle window
    idle: float  # s of the idle window
    commands: int  # round trips per QoS
    burst: int  # messages per throughput burst
    starts: int  # start-only spawns per implementation and round, beside the measured run

    @classmethod
    def of(cls, quick: bool) -> Plan:
        if quick:
            return cls(settle=2.0, idle=2.0, commands=200, burst=2000, starts=0)
        return cls(settle=10.0, idle=10.0, commands=2000, burst=20000, starts=5)


def cpu_ns_exact(pid: int) -> float:
    """CPU seconds of the live threads of ``pid`` from schedstat (nanoseconds): the
    10 ms ticks of /proc/PID/stat read 0 for an idle baseline over a few seconds."""
    return sum(thread_cpu_seconds(pid).values())


class Listener:
    """A paho client on its own network thread that time stamps every message it gets."""

    def __init__(self, host: str, port: int, topics: list[str]) -> None:
        self._cond = threading.Condition()
        self.messages: list[tuple[float, str, bytes]] = []
        self._subscribed = False
        self._client = new_client(nodelay=True, client_id=f"bench-listen-{uuid.uuid4().hex[:8]}")
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.connect(host, port, keepalive=30)
        for topic in topics:
            self._client.subscribe(topic, 1)
        self._client.loop_start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._subscribed, 10.0):
                raise TimeoutError("the listener could not subscribe")

    def _on_subscribe(self, *args: Any) -> None:
        with self._cond:
            self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic()
        with self._cond:
            self.messages.append((now, msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def first(self, match: Callable[[str, bytes], bool], timeout: float) -> float | None:
        """The time stamp of the first message matching, waiting up to ``timeout`` s."""

        def find() -> float | None:
            return next((t for t, topic, p in self.messages if match(topic, p)), None)

        with self._cond:
            return self._cond.wait_for(find, timeout)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Probe:
    """A paho client without a network thread: this thread drives its loop, so a round trip
    is timed from the publish call to the ``on_message`` that matches, with no hand-off."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.prefix = prefix
        self._reply: bytes | None = None
        self._client = new_client(nodelay=True, client_id=f"bench-probe-{uuid.uuid4().hex[:8]}")
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=60)
        self._client.subscribe(f"{prefix}/echo/state", 1)
        self._client.subscribe(f"{prefix}/echo/reply", 0)
        self._loop_until(lambda: False, 0.3)  # CONNACK, SUBACKs

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self._reply = bytes(msg.payload)

    def _loop_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                return False
            self._client.loop(0.05)
        return True

    def round_trip(self, seq: int, qos: int, timeout: float = 5.0) -> float:
        """Seconds from sending ``"<seq> <qos>"`` to its answer; NaN if none came."""
        expected = json.dumps({"seq": seq}).encode() if qos == 1 else f"{seq} {qos}".encode()
        self._reply = None
        t0 = time.perf_counter()
        self._client.publish(f"{self.prefix}/echo/set", f"{seq} {qos}", qos=qos)
        if not self._loop_until(lambda: self._reply is not None and _same(self._reply, expected),
                                timeout):  # fmt: skip
            return math.nan
        return time.perf_counter() - t0

    def send(self, payload: str) -> None:
        info = self._client.publish(f"{self.prefix}/echo/set", payload, qos=1)
        self._loop_until(info.is_published, 5.0)

    def close(self) -> None:
        self._client.disconnect()


def _same(reply: bytes, expected: bytes) -> bool:
    # The agent's JSON may be compact or not; compare values, not bytes.
    if reply == expected:
        return True
    with contextlib.suppress(ValueError):
        return bool(json.loads(reply) == json.loads(expected))
    return False


@dataclass
class Run:
    """What one run of one implementation measured."""

    impl: str
    start_samples: list[float] = field(default_factory=list)
    idle_cpu_ms: float = math.nan
    rss_mib: float = math.nan
    hwm_mib: float = math.nan
    threads: float = math.nan
    rtt_ms: dict[int, list[float]] = field(default_factory=dict)
    cpu_per_command_us: dict[int, float] = field(default_factory=dict)
    sigterm_ms: float = math.nan
    rate: dict[int, float] = field(default_factory=dict)  # msg/s by QoS
    lost: dict[int, int] = field(default_factory=dict)

    @property
    def start_ms(self) -> float:
        """Spawn → first state: the median of ``start_samples`` (this run's and any
        start-only spawns of its round)."""
        return median(self.start_samples)


class Session:
    """One process of one implementation, started, measured and stopped."""

    def __init__(self, impl: str, options: Options, folder: Path) -> None:
        self.impl = impl
        self.options = options
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.prefix = f"bench{impl[0]}{uuid.uuid4().hex[:6]}"
        self.log = folder / "process.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> tuple[list[str], dict[str, str]]:
        broker, python = self.options.broker, self.options.python
        if self.impl == "baseline":
            cmd = [python, str(BENCH / "bridge_baseline.py"), f"--host={broker.host}",
                   f"--port={broker.port}", f"--prefix={self.prefix}"]  # fmt: skip
            return cmd, dict(os.environ)
        shutil.copy(BENCH / "bridge_app.py", self.folder / "bridge_app.py")
        config = self.folder / "agent.toml"
        config.write_text(
            'app = "bridge_app:app"\n'
            "[mqtt]\n"
            f'host = "{broker.host}"\n'
            f"port = {broker.port}\n"
            "[logging]\n"
            'level = "WARNING"\n'
        )
        env = agent_env()
        env["BENCH_PREFIX"] = self.prefix
        root = self.options.agent_root
        if root is not None:  # another checkout: past the editable install's finder
            return [python, "-c", LAUNCHER, str(root), "--config", str(config)], env
        return [python, "-m", "agent", "--config", str(config)], env

    def start(self) -> float:
        """Spawn; returns ``time.monotonic()`` just before the spawn."""
        cmd, env = self.command()
        with open(self.log, "wb") as log:
            spawned = time.monotonic()
            self.proc = self.options.children.spawn(
                cmd, cwd=self.folder, env=env, stdout=log, stderr=log
            )
        return spawned

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def failed(self, what: str) -> RuntimeError:
        return RuntimeError(f"{self.impl}: {what} ({log_tail(self.log)})")


def checkout_arguments(parser: Any, rounds: int, argv: list[str] | None) -> tuple[Any, list[Path]]:
    """The A/B tools' command line (bench/start.py, burst.py, commands.py): ``--rounds``,
    ``--agent-root`` (repeatable), ``--python``; parsed, with each checkout compiled."""
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument(
        "--agent-root",
        action="append",
        type=Path,
        help="a checkout to measure (repeatable; '.' is this one; default: this one)",
    )
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    roots = [r.resolve() for r in args.agent_root or [REPO]]
    if REPO in roots:  # run as python -m agent
        require_own_agent(args.python)
    for root in roots:
        compile_agent(args.python, root)
    return args, roots


def in_turns(
    args: Any, roots: list[Path], jobs: Sequence[Any], run: Callable[[str, Session, Any], None]
) -> None:
    """The A/B tools' rounds: in each, for each of ``jobs``, the script and then each checkout
    (a name: "script" or the root), a fresh ``Session`` each, measured by ``run(name,
    session, job)``; one broker for all, every process stopped at the end."""
    children, broker = Children(), Broker()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-turns-") as tmp:
            base = Options(False, args.rounds, args.python, Path(tmp), broker, children)
            runs = [("script", "baseline", base)] + [
                (str(root), "agent", replace(base, agent_root=None if root == REPO else root))
                for root in roots
            ]
            for k in range(args.rounds):
                for j, job in enumerate(jobs):
                    for i, (name, impl, options) in enumerate(runs):
                        run(name, Session(impl, options, Path(tmp) / f"{k}-{j}-{i}"), job)
                        time.sleep(0.2)  # the broker forgets the last client before the next
    finally:
        children.end_all()
        broker.close()


def measure_bridge(session: Session, plan: Plan, throughput: bool) -> Run:
    """The figures of one run; see the module docstring.

    A throughput run measures only its bursts: after the first state it settles
    :data:`THROUGHPUT_SETTLE` seconds and warms the command path up with
    :data:`WARMUP_COMMANDS` round trips at each QoS, without the bridge's idle window and
    measured round trips (two minutes of a full suite that nothing reported).
    """
    options, run = session.options, Run(session.impl)
    host, port, prefix = options.broker.host, options.broker.port, session.prefix
    listener = Listener(host, port, [f"{prefix}/+/state", f"{prefix}/status"])
    try:
        spawned = session.start()
        first = listener.first(lambda topic, _: topic.endswith("/state"), 30.0)
        if first is None:
            raise session.failed("no state within 30 s")
        run.start_samples.append((first - spawned) * 1000)
        settle = min(plan.settle, THROUGHPUT_SETTLE) if throughput else plan.settle
        time.sleep(max(0.0, first + settle - time.monotonic()))
        idle_rate = 0.0 if throughput else _measure_idle(session, plan, run)
        probe = Probe(host, port, prefix)
        try:
            for qos in (1, 0):
                for seq in range(WARMUP_COMMANDS):  # unmeasured, and unchecked as ever
                    probe.round_trip(seq, qos)
                if throughput:
                    continue
                c0, w0 = cpu_ns_exact(session.pid), time.monotonic()
                run.rtt_ms[qos] = _round_trips(session, probe, WARMUP_COMMANDS, plan.commands, qos)
                c1, w1 = cpu_ns_exact(session.pid), time.monotonic()
                work = (c1 - c0) - idle_rate * (w1 - w0)
                run.cpu_per_command_us[qos] = work / plan.commands * 1e6
            if throughput:
                for qos in (1, 0):
                    run.rate[qos], run.lost[qos] = burst(session, probe, plan.burst, qos)
        finally:
            probe.close()
        terminated = time.monotonic()
        assert session.proc is not None
        session.proc.send_signal(signal.SIGTERM)
        try:
            session.proc.wait(30)
        except subprocess.TimeoutExpired as exc:
            raise session.failed("still running 30 s after SIGTERM") from exc
        exited = time.monotonic()
        offline = listener.first(
            lambda topic, payload: topic.endswith("/status") and payload == b"offline", 5.0
        )
        if offline is None:
            raise session.failed("no offline on {prefix}/status after SIGTERM")
        run.sigterm_ms = (max(exited, offline) - terminated) * 1000
    finally:
        listener.close()
        if session.proc is not None:
            options.children.end(session.proc, timeout=5.0)
    return run


def _measure_idle(session: Session, plan: Plan, run: Run) -> float:
    """The idle window: CPU (returned as CPU seconds a second, and per 10 s into ``run``),
    then RSS, HWM and threads at its end."""
    cpu0, t0 = cpu_ns_exact(session.pid), time.monotonic()
    time.sleep(plan.idle)
    cpu1, t1 = cpu_ns_exact(session.pid), time.monotonic()
    idle_rate = (cpu1 - cpu0) / (t1 - t0)
    run.idle_cpu_ms = idle_rate * 10.0 * 1000  # per 10 s, as the table
    status = proc_status(session.pid)
    run.rss_mib, run.hwm_mib = status["VmRSS"] / 1024, status["VmHWM"] / 1024
    run.threads = status["Threads"]
    return idle_rate


def _round_trips(session: Session, probe: Probe, first: int, count: int, qos: int) -> list[float]:
    """``count`` round trips one at a time, sequence numbers from ``first``: milliseconds."""
    samples = [probe.round_trip(seq, qos) * 1000 for seq in range(first, first + count)]
    lost = sum(math.isnan(s) for s in samples)
    if lost:
        raise session.failed(f"{lost} command(s) at QoS {qos} got no answer")
    return samples


def burst(session: Session, probe: Probe, count: int, qos: int) -> tuple[float, int]:
    """(messages/s, lost) of one burst of ``count`` messages at ``qos``; see the docstring."""
    broker = session.options.broker
    topic = f"{session.prefix}/echo/burst"
    # A retained marker tells when mosquitto_sub is subscribed: its first line.
    marker = new_client(nodelay=True, client_id=f"bench-marker-{uuid.uuid4().hex[:8]}")
    marker.connect(broker.host, broker.port)
    marker.loop_start()
    marker.publish(topic, "subscribed", qos=1, retain=True).wait_for_publish(5)
    sub = session.options.children.spawn(
        ["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host, "-p", str(broker.port),
         "-t", topic, "-q", str(qos), "-C", str(count + 1)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    got: set[bytes] = set()
    last = [math.nan]
    ready = threading.Event()
    done = threading.Event()

    def read() -> None:
        assert sub.stdout is not None
        for line in sub.stdout:
            if line == b"subscribed\n":
                ready.set()
                continue
            got.add(line)
            if len(got) == count:
                last[0] = time.monotonic()
                break
        done.set()

    reader = threading.Thread(target=read, name="bench-burst-reader", daemon=True)
    reader.start()
    try:
        if not ready.wait(10):
            raise session.failed("mosquitto_sub did not subscribe")
        sent = time.monotonic()
        probe.send(f"burst {count} {qos}")
        done.wait(60)
    finally:
        session.options.children.end(sub, timeout=5.0)
        marker.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        marker.disconnect()
        marker.loop_stop()
        reader.join(5)
    lost = count - len(got)
    rate = count / (last[0] - sent) if not lost else math.nan
    return rate, lost


def _rounds(options: Options, throughput: bool, name: str) -> dict[str, list[Run]]:
    plan = Plan.of(options.quick)
    runs: dict[str, list[Run]] = {impl: [] for impl in IMPLS}
    folder = options.workdir / name
    for r in range(options.rounds):
        order = IMPLS if r % 2 == 0 else tuple(reversed(IMPLS))
        for impl in order:
            session = Session(impl, options, folder / f"{impl}-{r}")
            runs[impl].append(measure_bridge(session, plan, throughput))
        if not throughput:
            _more_starts(options, plan.starts, order, {i: runs[i][-1] for i in IMPLS}, folder, r)
    return runs


def _more_starts(
    options: Options, count: int, order: Sequence[str], last: dict[str, Run], folder: Path, r: int
) -> None:
    """``count`` start-only spawns of each implementation, in turns, added to the start
    samples of this round's runs (``last``): a start is one sample of a noisy ~0.1 s, so
    the figure of a round is the median of 1 + ``count`` of them, not one."""
    for k in range(count):
        for impl in order:
            session = Session(impl, options, folder / f"{impl}-{r}-start{k}")
            last[impl].start_samples.append(first_state_ms(session, options))
            time.sleep(0.2)  # the broker forgets the last client before the next


def first_state_ms(session: Session, options: Options) -> float:
    """Spawn ``session`` and return the milliseconds until its first state arrived; the
    process is ended then."""
    broker = options.broker
    listener = Listener(broker.host, broker.port, [f"{session.prefix}/+/state"])
    try:
        spawned = session.start()
        first = listener.first(lambda topic, _payload: True, 30.0)
        if first is None:
            raise session.failed("no state within 30 s")
        return (first - spawned) * 1000
    finally:
        if session.proc is not None:
            options.children.end(session.proc)
        listener.close()


def _figure(
    runs: dict[str, list[Run]],
    scenario: str,
    name: str,
    unit: str,
    value: Callable[[Run], float],
    target: Target | None = None,
) -> Figure:
    return Figure(
        scenario,
        name,
        unit,
        agent=[value(r) for r in runs["agent"]],
        baseline=[value(r) for r in runs["baseline"]],
        target=target,
    )


def _p(q: float, qos: int) -> Callable[[Run], float]:
    return lambda r: percentile(sorted(r.rtt_ms[qos]), q)


def run_bridge(options: Options) -> list[Figure]:
    """The bridge scenario: start, footprint, idle CPU, command round trips, SIGTERM.

    ``options.rounds`` rounds, each a measured run of the baseline and of agent (the order
    alternates) and, in full mode, five start-only spawns of each in turns. A measured run
    settles 10 s after its first state, measures 10 s idle (quick: 2 s and 2 s), then 2,000
    round trips at QoS 1 and 2,000 at QoS 0 (quick: 200) after 50 unmeasured ones each.
    """
    runs = _rounds(options, throughput=False, name="bridge")
    for impl in IMPLS:
        options.raw[f"bridge.start_ms.{impl}"] = [s for r in runs[impl] for s in r.start_samples]
        for qos in (1, 0):
            options.raw[f"bridge.rtt_ms.qos{qos}.{impl}"] = list(
                itertools.chain.from_iterable(r.rtt_ms[qos] for r in runs[impl])
            )
    s, ratio = "bridge", Target("ratio_max", 1.3)
    return [
        _figure(runs, s, "start → first state", "ms", lambda r: r.start_ms, ratio),
        _figure(runs, s, "RSS at 20 s" if not options.quick else "RSS", "MiB",
                lambda r: r.rss_mib, Target("ratio_max", 1.1)),
        _figure(runs, s, "VmHWM", "MiB", lambda r: r.hwm_mib),
        _figure(runs, s, "threads", "", lambda r: r.threads),
        _figure(runs, s, "CPU per 10 s idle", "ms", lambda r: r.idle_cpu_ms,
                Target("ratio_max", 1.5)),
        _figure(runs, s, "command round trip p50, QoS 1", "ms", _p(0.5, 1), ratio),
        _figure(runs, s, "command round trip p99, QoS 1", "ms", _p(0.99, 1), Target("max", 1.5)),
        _figure(runs, s, "command round trip p50, QoS 0", "ms", _p(0.5, 0), ratio),
        _figure(runs, s, "command round trip p99, QoS 0", "ms", _p(0.99, 0), Target("max", 1.5)),
        _figure(runs, s, "CPU per command, QoS 1", "µs", lambda r: r.cpu_per_command_us[1],
                Target("ratio_max", 1.5)),
        _figure(runs, s, "CPU per command, QoS 0", "µs", lambda r: r.cpu_per_command_us[0],
                Target("ratio_max", 1.5)),
        _figure(runs, s, "SIGTERM → exit, offline sent", "ms", lambda r: r.sigterm_ms,
                Target("ratio_max", 2.0)),
    ]  # fmt: skip


def run_throughput(options: Options) -> list[Figure]:
    """The throughput scenario: back-to-back bursts at QoS 1 and QoS 0, nothing lost.

    ``options.rounds`` rounds, each a run of the baseline and of agent (the order alternates)
    that bursts 20,000 messages (quick: 2,000) at QoS 1 and then at QoS 0. A missing
    ``mosquitto_sub`` fails this scenario, with the command that installs it.
    """
    if shutil.which("mosquitto_sub") is None:
        raise RuntimeError(
            "bench throughput: mosquitto_sub not found; install it: "
            "sudo apt-get install mosquitto-clients"
        )
    runs = _rounds(options, throughput=True, name="throughput")
    n = Plan.of(options.quick).burst
    s = "throughput"
    return [
        _figure(runs, s, f"{n:,} messages back to back, QoS 1", "msg/s", lambda r: r.rate[1],
                Target("ratio_min", 0.9)),
        _figure(runs, s, f"{n:,} messages back to back, QoS 0", "msg/s", lambda r: r.rate[0],
                Target("ratio_min", 0.7)),
        _figure(runs, s, "messages lost, QoS 1", "", lambda r: r.lost[1], Target("max", 0)),
        _figure(runs, s, "messages lost, QoS 0", "", lambda r: r.lost[0], Target("max", 0)),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Standalone: ``python bench/bridge.py [--quick] [--rounds N] [--only bridge|throughput]``."""
    import argparse
    import tempfile

    from bench.common import Broker, Children, compile_agent
    from bench.report import notes, summary, table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("bridge", "throughput"))
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    print(compile_agent(args.python, REPO))
    children, broker = Children(), Broker()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
            options = Options(args.quick, args.rounds, args.python, Path(tmp), broker, children)
            figures: list[Figure] = []
            if args.only in (None, "bridge"):
                figures += run_bridge(options)
            if args.only in (None, "throughput"):
                figures += run_throughput(options)
    finally:
        children.end_all()
        broker.close()
    print(table(figures) + notes(figures) + summary(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
