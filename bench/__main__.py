"""The benchmark suite: ``python -m bench``, agent against hand-written paho baselines.

Run from the repository root with the PyPI venv::

    build/venv-pypi/bin/python -m bench --quick        # a smoke run, about a minute (CI)
    build/venv-pypi/bin/python -m bench                # the full run, about 14 minutes
    build/venv-pypi/bin/python -m bench --only cadence,scale --rounds 5 --keep
    build/venv-pypi/bin/python -m bench --python /usr/bin/python3   # Debian's Python, paho 1.6

It prints where and what it measures (date, machine, command line, the measured
interpreter's Python and paho-mqtt versions, mosquitto's version and the config file of the
broker it starts, which agent sources), starts one private mosquitto, and runs these
scenarios in this order (``--only`` picks some):

=========== ============================== ==============================================
bridge      bench.bridge:run_bridge        start, RSS, idle CPU, threads, command round
                                           trips at QoS 1 and 0, SIGTERM
throughput  bench.bridge:run_throughput    messages/s at QoS 1 and 0, nothing lost
cadence     bench.telemetry:run_cadence    one device at 100 ms, also with the other
                                           core busy
scale       bench.telemetry:run_scale      1,000 devices, ungrouped and in groups; RSS and
                                           CPU against the device count
stores      bench.stores:run_stores        JsonFileStore and SqliteStore
filters     bench.filters:run_filters      C++ filters against the Python references
fleet       bench.fleet:run_fleet          100 agent processes × 10 devices on one broker
=========== ============================== ==============================================

Each scenario is a function ``run_xxx(options) -> list[Figure]`` (bench/common.py), imported
only when its turn comes; a module that does not import, or lacks its function, is a
failure like any other. Within a scenario, agent and baseline run
alternately, ``--rounds`` times each (default 3; quick 1); each figure holds one value per
round, and the table shows the medians, their ratio (agent / baseline), and the target.

The end: one Markdown table of every figure (see bench/report.py for how each column is
computed), the JSON of every figure's per-round values and of the raw samples
(``--json FILE``; default ``results.json`` in the work folder, which is otherwise removed
unless ``--keep``), and the plots (``--plots DIR``; default ``docs/benchmarks/`` in full
mode, none in quick mode or with ``--agent-root``; see bench/plots.py).

Exit status: 0 when every scenario ran, whether or not its targets were met (these are
measurements, not tests); 1 when one raised (after the others ran and the table was
printed; a scenario's exception may carry the figures it still measured, as ``.figures``);
2 for a bad command line; 130 when interrupted. Every process it started ends with it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench.common import (
    REPO,
    Broker,
    Children,
    Figure,
    Options,
    compile_agent,
    cpu_model,
    describe_agent,
    interpreter_text,
    load_average,
    require_own_agent,
    source_digest,
)
from bench.report import notes, summary, table, write_json

SCENARIOS: dict[str, str] = {
    "bridge": "bench.bridge:run_bridge",
    "throughput": "bench.bridge:run_throughput",
    "cadence": "bench.telemetry:run_cadence",
    "scale": "bench.telemetry:run_scale",
    "stores": "bench.stores:run_stores",
    "filters": "bench.filters:run_filters",
    "fleet": "bench.fleet:run_fleet",
}
"""Name -> ``module:function``, in the order they run."""

Scenario = Callable[[Options], list[Figure]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute (CI)")
    parser.add_argument(
        "--only", help=f"comma-separated scenarios to run, of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--rounds", type=int, help="agent and baseline runs of each job (default 3; quick 1)"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter of agent, baselines and helpers (default: this one)",
    )
    parser.add_argument(
        "--plots",
        type=Path,
        help="write the plots (PNG) there (default: docs/benchmarks/ in full mode, none in "
        "quick mode)",
    )
    parser.add_argument(
        "--json", type=Path, help="write every figure there (default: the work folder's)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--agent-root",
        type=Path,
        help="bridge and throughput: measure the agent/ of another checkout (e.g. a "
        "`git worktree` of the commit before a change) instead of this one",
    )
    args = parser.parse_args(argv)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown or not names:
            parser.error(f"--only: unknown {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        args.only = set(names)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds: at least 1")
    if shutil.which(args.python) is None:
        parser.error(f"--python {args.python}: not found")
    return args


# -- what is measured where -----------------------------------------------------------------


def memory_text() -> str:
    """Total and available memory, from /proc/meminfo."""
    info: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info[key] = int(value.split()[0])  # kB
    if "MemTotal" not in info:
        return "memory unknown"
    gib = 1024 * 1024
    return (
        f"{info['MemTotal'] / gib:.1f} GiB memory "
        f"({info.get('MemAvailable', 0) / gib:.1f} GiB available)"
    )


def mosquitto_version() -> str:
    """The first line of ``mosquitto -h`` (which exits with 3 after printing it)."""
    from agent.testing.mosquitto import MOSQUITTO

    try:
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{MOSQUITTO}: {exc}"
    first = (out.stdout or out.stderr).strip().splitlines()
    return f"{MOSQUITTO}: {first[0] if first else 'unknown version'}"


def header(argv: Sequence[str], options: Options) -> dict[str, Any]:
    """Where and what is measured: printed first, and kept in the JSON file."""
    broker = options.broker
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": (
            f"{cpu_model()}, {os.cpu_count()} cores, {memory_text()}, "
            f"Linux {platform.release()} ({platform.machine()}), "
            f"load average {load_average():.2f} at the start"
        ),
        "command": shlex.join([Path(sys.executable).name, "-m", "bench", *argv]),
        "mode": f"{'quick' if options.quick else 'full'}, {options.rounds} round(s)",
        "measured interpreter": interpreter_text(options.python),
        "mosquitto": mosquitto_version(),
        "mosquitto config": broker.mosquitto.config_path.read_text(),
        "agent": describe_agent(options.agent_root or REPO),
        "agent bytecode": compile_agent(options.python, options.agent_root or REPO),
        "work folder": str(options.workdir),
    }


def print_header(info: dict[str, Any]) -> None:
    for key, value in info.items():
        if key == "mosquitto config":
            lines = str(value).strip().splitlines()
            print(f"{key}:\n" + "\n".join(f"    {line}" for line in lines))
        else:
            print(f"{key}: {value}")
    print(flush=True)


# -- running the scenarios ------------------------------------------------------------------


def load(target: str) -> Scenario:
    """The scenario function of ``module:function``; a module that fails to import, or has
    no such function, raises like a scenario that fails."""
    module_name, _, function = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, function)  # type: ignore[no-any-return]


def run_scenario(
    name: str, options: Options, figures: list[Figure], failures: dict[str, str]
) -> None:
    """Run one scenario: its figures appended to ``figures``; if it raises, why into
    ``failures`` (and the figures its exception carries, if any, into ``figures``)."""
    target = SCENARIOS[name]
    print(f"## {name} ({target})", flush=True)
    started = time.monotonic()
    try:
        scenario = load(target)
        got = scenario(options)
        if not isinstance(got, list) or not all(isinstance(f, Figure) for f in got):
            raise TypeError(f"{target} returned {type(got).__name__}, not a list of Figure")
        figures.extend(got)
        print(f"  done in {time.monotonic() - started:.0f} s, {len(got)} figures\n", flush=True)
    except Exception as exc:
        failures[name] = f"{type(exc).__name__}: {exc}"
        carried = getattr(exc, "figures", None)
        if isinstance(carried, list):
            figures.extend(f for f in carried if isinstance(f, Figure))
        print(f"  FAILED after {time.monotonic() - started:.0f} s:", flush=True)
        traceback.print_exc(file=sys.stdout)
        print(flush=True)


def terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the suite as Ctrl-C does: through the ``finally`` that stops every
    process it started."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    plots = args.plots
    if plots is None and not args.quick and args.agent_root is None:
        plots = REPO / "docs" / "benchmarks"  # another checkout's run must not replace them
    if plots is not None:
        from bench.plots import require_matplotlib

        require_matplotlib()  # now, not after minutes of measurements
    require_own_agent(args.python)
    rounds = args.rounds or (1 if args.quick else 3)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    json_path = args.json or workdir / "results.json"
    signal.signal(signal.SIGTERM, terminate)
    children = Children()
    broker: Broker | None = None
    figures: list[Figure] = []
    failures: dict[str, str] = {}
    info: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    status = 0
    suite_started = time.monotonic()
    try:
        broker = Broker()
        options = Options(
            quick=args.quick,
            rounds=rounds,
            python=args.python,
            workdir=workdir,
            broker=broker,
            children=children,
            plots=plots,
            raw=raw,
            agent_root=args.agent_root,
        )
        info = header(argv, options)
        print_header(info)
        digest = source_digest(REPO)
        for name in SCENARIOS:
            if args.only is None or name in args.only:
                run_scenario(name, options, figures, failures)
        if source_digest(REPO) != digest:
            print(
                "WARNING: the agent sources changed while the suite ran: the scenarios may "
                "have measured different code\n"
            )
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process the suite started", flush=True)
        status = 130
    finally:
        children.end_all()
        if broker is not None:
            broker.close()
    took = time.monotonic() - suite_started
    info["duration s"] = round(took, 1)
    mode = "quick" if args.quick else "full"
    print(f"### Results ({mode} mode, medians of {rounds} round(s), {took:.0f} s in all)\n")
    print(table(figures))
    if text := notes(figures):
        print(f"Notes:\n\n{text}")
    print(summary(figures))
    for name, why in failures.items():
        print(f"FAILED: {name}: {why}")
    write_json(json_path, info, figures, raw, failures)
    print(f"figures and raw samples: {json_path}")
    if plots is not None and status == 0:
        from bench.plots import draw_suite

        drawn = draw_suite(raw, plots)
        print(f"plots: {', '.join(str(p) for p in drawn) if drawn else 'none (no samples)'}")
    if args.keep:
        print(f"work folder kept: {workdir}")
    else:
        for entry in workdir.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            elif entry != json_path:
                entry.unlink()
        with contextlib.suppress(OSError):
            workdir.rmdir()  # only if empty: the JSON file may live there
    if status:
        return status
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
