"""Benchmark of the signal filters: nanoseconds per sample, C++ against the Python references.

Run from the repository root, with the extension built (``pip install -e .[test]``)::

    .venv/bin/python bench/filters.py            # 10^6 samples for update_many
    .venv/bin/python bench/filters.py --quick    # smaller, for a smoke run
    .venv/bin/python bench/filters.py --median-path portable   # without AVX2/AVX-512

For each filter it measures, in one run and on the same pseudo-random signal:

* ``C++ update`` — a Python ``for`` loop calling the C++ ``update`` once per sample;
* ``Py update`` — the same loop over the pure-Python reference;
* ``C++ update_many`` — one call on an ``array('d')`` of the whole signal, right after
  another such call (warm caches and allocator, the steady state of a device filtering batch
  after batch); also shown: the first call after the Python loops (cold).

Each figure is the best of several rounds (the least disturbed one); the three measurements
of a filter are interleaved round by round, so a slow spell of the machine cannot favour one.
The ratios are checked against the targets of the project (issue 2) and the table is printed
as Markdown, ready for docs/benchmarks.md. This is a measurement, not a test: it never fails
a build.

``MedianFilter.update_many`` picks its code at run time on x86-64 (AVX-512, AVX2 or the
portable SSE2 pass, see cpp/filters.hpp); the header line says which one ran, and
``--median-path`` forces one of those this CPU has.

In the suite (``python -m bench``, :func:`run_filters`) this script runs as a child process
of the measured interpreter and hands every round's figures back as JSON (``--json FILE``).
An interpreter without the extension of this checkout (Debian's ``/usr/bin/python3`` with
``PYTHONPATH`` on the repository, which has only the sources) is given the compiled module
through ``BENCH_FILTERS_EXTENSION`` (a path to a ``_filters*.so`` built for its ABI, see
:func:`filters_env`), loaded as ``agent._filters`` before ``agent`` is imported.
"""

from __future__ import annotations

import argparse
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EXTENSION = os.environ.get("BENCH_FILTERS_EXTENSION")
"""A compiled ``agent._filters`` to load from this path (see the module docstring)."""


class _ExtensionAt(importlib.abc.MetaPathFinder):
    """Finds ``agent._filters`` at :data:`EXTENSION`, whatever ``agent.__path__`` holds."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "agent._filters" or not EXTENSION:
            return None
        return importlib.util.spec_from_file_location(name, EXTENSION)


if EXTENSION:
    sys.meta_path.insert(0, _ExtensionAt())

from agent import filters  # noqa: E402 - after the finder
from bench.common import (  # noqa: E402
    BENCH,
    REPO,
    Figure,
    Options,
    Target,
    agent_env,
    cpu_model,
    run_json_child,
)


@dataclass(frozen=True)
class Case:
    name: str
    make_cpp: Callable[[], Any]
    make_py: Callable[[], Any]
    single_target: float | None  # C++ update vs Python update, None: no target
    many_target: float  # C++ update_many vs Python loop over the reference


CASES = [
    Case(
        "Pt1(tau=1, dt=0.1)",
        lambda: filters.Pt1Filter(1.0, 0.1),
        lambda: filters.PyPt1Filter(1.0, 0.1),
        None,
        50.0,
    ),
    Case(
        "Median(window=31)",
        lambda: filters.MedianFilter(31),
        lambda: filters.PyMedianFilter(31),
        5.0,
        50.0,
    ),
    Case(
        "OneEuro(1, 0.007, 1, 0.01)",
        lambda: filters.OneEuroFilter(1.0, 0.007, 1.0, 0.01),
        lambda: filters.PyOneEuroFilter(1.0, 0.007, 1.0, 0.01),
        3.0,
        50.0,
    ),
]


def signal(n: int, seed: int = 2012) -> list[float]:
    """A slow sine with noise and the odd spike: what a sensor might send."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = 20.0 + 5.0 * ((i % 1000) / 1000.0) + rng.gauss(0.0, 0.3)
        if rng.random() < 0.01:
            x += rng.choice((-50.0, 50.0))
        out.append(x)
    return out


def loop_ns(make: Callable[[], Any], xs: Sequence[float]) -> int:
    """One timed pass of a Python ``for`` loop calling ``update`` on a fresh filter."""
    f = make()
    update = f.update  # what a caller in a hot loop would do
    t0 = time.perf_counter_ns()
    for x in xs:
        update(x)
    return time.perf_counter_ns() - t0


def many_ns(make: Callable[[], Any], xs: array[float]) -> int:
    """One timed ``update_many`` call on a fresh filter (output allocation included)."""
    f = make()
    t0 = time.perf_counter_ns()
    f.update_many(xs)
    return time.perf_counter_ns() - t0


@dataclass(frozen=True)
class Timing:
    """ns per sample, each the best of its rounds."""

    cpp: float  # C++ update in a Python loop
    py: float  # the Python reference's update in the same loop
    many: float  # C++ update_many, a call right after another one (the steady state)
    many_first: float  # C++ update_many, the first call after the Python loops


def measure_rounds(
    case: Case, xs_loop: list[float], xs_array: array[float], rounds: int
) -> list[Timing]:
    """Time one filter ``rounds`` times: the four figures of :class:`Timing` of each round.

    They are interleaved round by round, so a slow spell of the machine (another process, a
    frequency change) hits all of them alike instead of one whole series; the garbage
    collector is off while timing. ``update_many`` is timed twice per round: right after the
    Python loops, when its 8 MB of input has left the caches and its output lands in memory
    fresh from the kernel (page faults), and once more at once, when both are warm, as in a
    device that filters batch after batch. The second is the figure held to the target, as
    it was when this benchmark took the best of back-to-back calls.
    """
    out: list[Timing] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            cpp = loop_ns(case.make_cpp, xs_loop) / len(xs_loop)
            py = loop_ns(case.make_py, xs_loop) / len(xs_loop)
            many_first = many_ns(case.make_cpp, xs_array) / len(xs_array)
            many = many_ns(case.make_cpp, xs_array) / len(xs_array)
            out.append(Timing(cpp, py, many, many_first))
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


def measure(case: Case, xs_loop: list[float], xs_array: array[float], rounds: int) -> Timing:
    """Each figure of :class:`Timing` the best of ``rounds`` (the least disturbed round)."""
    return best(measure_rounds(case, xs_loop, xs_array, rounds))


def best(timings: Sequence[Timing]) -> Timing:
    """Each figure the least of its rounds."""
    return Timing(*(min(getattr(t, f.name) for t in timings) for f in fields(Timing)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument(
        "--rounds",
        type=int,
        help="interleaved rounds (default 7, quick 3); each figure is the best",
    )
    parser.add_argument(
        "--median-path",
        help="force the median's batch code: portable, avx2 or avx512 (default: the widest)",
    )
    parser.add_argument("--json", type=Path, help="also write every round's figures there (JSON)")
    args = parser.parse_args(argv)

    n_many = 100_000 if args.quick else 1_000_000
    n_loop = 20_000 if args.quick else 200_000
    rounds = args.rounds or (3 if args.quick else 7)
    xs_list = signal(n_many)
    xs_loop = xs_list[:n_loop]
    xs_array = array("d", xs_list)

    if not filters.NATIVE:
        print("agent._filters is not built: C++ figures would be the Python ones.")
        print("Build it with `pip install -e .[test]` or `scripts/test`.")
        return 1

    from agent import _filters

    if args.median_path is not None:
        try:
            _filters._set_simd_path(args.median_path)
        except ValueError as exc:  # names the paths this CPU has
            parser.error(str(exc))
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {cpu_model()}")
    print(f"compiled filters: {_filters.__file__}")
    print(
        f"median update_many path: {_filters._simd_path()} "
        f"(this CPU: {', '.join(_filters._simd_paths())})"
    )
    print(f"single update: {n_loop} samples in a Python loop; update_many: {n_many} samples")
    print(f"(ns per sample, best of {rounds} interleaved rounds)\n")
    header = (
        "| filter | C++ update | Py update | speed-up | target | "
        "C++ update_many | speed-up vs Py loop | target | first call after the loops |"
    )
    print(header)
    print("|" + "---|" * 9)
    all_met = True
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "extension": _filters.__file__,
        "median_path": _filters._simd_path(),
        "loop_samples": n_loop,
        "many_samples": n_many,
        "cases": {},
    }
    for case in CASES:
        timings = measure_rounds(case, xs_loop, xs_array, rounds)
        report["cases"][case.name] = [asdict(t) for t in timings]
        t = best(timings)
        single_ratio = t.py / t.cpp
        many_ratio = t.py / t.many
        if case.single_target is None:
            single_verdict = "—"
        else:
            ok = single_ratio >= case.single_target
            all_met &= ok
            single_verdict = f"≥ {case.single_target:g}× {'met' if ok else 'MISSED'}"
        ok = many_ratio >= case.many_target
        all_met &= ok
        many_verdict = f"≥ {case.many_target:g}× {'met' if ok else 'MISSED'}"
        print(
            f"| {case.name} | {t.cpp:.0f} | {t.py:.0f} | {single_ratio:.1f}× | {single_verdict} "
            f"| {t.many:.1f} | {many_ratio:.0f}× | {many_verdict} "
            f"| {t.many_first:.1f} ({t.py / t.many_first:.0f}×) |"
        )
    print("\nall targets met" if all_met else "\nsome targets MISSED")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


# -- the suite's scenario (python -m bench) -------------------------------------------------


UNIT = "ns/sample"


def filters_env(python: str) -> dict[str, str]:
    """The environment in which ``python`` runs this script on this checkout's filters.

    ``agent_env()`` (the repository first on the path); if ``python`` cannot import
    ``agent._filters`` from there (the extension lives in the venv that built it, not in
    the source tree), also ``BENCH_FILTERS_EXTENSION``: the compiled module of this
    interpreter (the suite's own, if its ABI suffix matches the measured one's), else
    Debian's build of it (``build/debian``, ``packaging/build-deb``). Without either, the
    script says the extension is not built and the scenario fails.
    """
    env = agent_env()
    probe = subprocess.run(
        [
            python,
            "-W",
            "ignore",
            "-c",
            "import sysconfig, agent.filters as f; "
            "print(f.NATIVE, sysconfig.get_config_var('EXT_SUFFIX'))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    native, _, suffix = probe.stdout.strip().partition(" ")
    if probe.returncode != 0 or native == "True":
        return env  # a broken interpreter speaks for itself when the script runs
    candidates: list[Path] = []
    spec = importlib.util.find_spec("agent._filters")
    if spec is not None and spec.origin and spec.origin.endswith(suffix):
        candidates.append(Path(spec.origin))
    candidates.append(REPO / "build" / "debian" / f"_filters{suffix}")
    for candidate in candidates:
        if candidate.exists():
            env["BENCH_FILTERS_EXTENSION"] = str(candidate)
            break
    return env


def run_filters(options: Options) -> list[Figure]:
    """The C++ filters against their pure-Python references (the "baseline").

    This script runs once, as a child of ``options.python``, with ``max(options.rounds,
    5)`` interleaved rounds (cheap: a few seconds) on 20,000 / 100,000 samples (quick) or
    200,000 / 10^6 (full). Rows, per filter, one value per round in ns per sample, the
    table showing the medians (not the best round, as the standalone table does):

    * ``update in a Python loop`` — agent: the C++ ``update`` called in a ``for`` loop;
      baseline: the Python reference's ``update`` in the same loop; target: the speed-up of
      issue 2 (Median ≥ 5×, OneEuro ≥ 3×) as agent / baseline ≤ 1 / speed-up;
    * ``update_many (warm)`` — agent: one ``update_many`` call on an ``array('d')`` right
      after another; baseline: the Python reference's loop; target ≥ 50× (≤ 0.02×).
    """
    rounds = max(options.rounds, 5)
    folder = options.workdir / "filters"
    folder.mkdir(parents=True, exist_ok=True)
    out, log_path = folder / "filters.json", folder / "filters.log"
    cmd = [options.python, str(BENCH / "filters.py"), "--json", str(out), f"--rounds={rounds}"]
    if options.quick:
        cmd.append("--quick")
    report = run_json_child(options, cmd, filters_env(options.python), out, log_path, 600, 8)
    print(
        f"  {report['loop_samples']:,} / {report['many_samples']:,} samples, "
        f"{len(next(iter(report['cases'].values())))} rounds, median path "
        f"{report['median_path']}, extension {report['extension']}",
        flush=True,
    )
    figures: list[Figure] = []
    for case in CASES:
        timings = report["cases"][case.name]
        cpp = [t["cpp"] for t in timings]
        py = [t["py"] for t in timings]
        many = [t["many"] for t in timings]
        # Rounded: the table prints the target, and "≤ 0.333333×" says no more than 0.333×.
        single = (
            None
            if case.single_target is None
            else Target("ratio_max", round(1 / case.single_target, 3))
        )
        batch = Target("ratio_max", round(1 / case.many_target, 3))
        name = case.name
        figures.append(Figure("filters", f"{name}: update in a Python loop", UNIT, cpp, py, single))
        figures.append(Figure("filters", f"{name}: update_many (warm)", UNIT, many, py, batch))
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
