"""Benchmark of the signal filters: nanoseconds per sample, C++ against the Python references.

Run from the repository root, with the extension built (``pip install -e .[test]``)::

    .venv/bin/python bench/filters.py            # 10^6 samples for update_many
    .venv/bin/python bench/filters.py --quick    # smaller, for a smoke run

For each filter it measures, in one run and on the same pseudo-random signal:

* ``C++ update`` — a Python ``for`` loop calling the C++ ``update`` once per sample;
* ``Py update`` — the same loop over the pure-Python reference;
* ``C++ update_many`` — one call on an ``array('d')`` of the whole signal.

Each figure is the best of several repeats (the least disturbed one). The ratios are checked
against the targets of the project (issue 2) and the table is printed as Markdown, ready for
docs/benchmarks.md. This is a measurement, not a test: it never fails a build.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent import filters


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


def ns_per_sample_loop(make: Callable[[], Any], xs: Sequence[float], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        f = make()
        update = f.update  # what a caller in a hot loop would do
        t0 = time.perf_counter_ns()
        for x in xs:
            update(x)
        best = min(best, time.perf_counter_ns() - t0)
    return best / len(xs)


def ns_per_sample_many(make: Callable[[], Any], xs: array[float], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        f = make()
        t0 = time.perf_counter_ns()
        f.update_many(xs)
        best = min(best, time.perf_counter_ns() - t0)
    return best / len(xs)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    args = parser.parse_args(argv)

    n_many = 100_000 if args.quick else 1_000_000
    n_loop = 20_000 if args.quick else 200_000
    repeats = 3 if args.quick else 5
    xs_list = signal(n_many)
    xs_loop = xs_list[:n_loop]
    xs_array = array("d", xs_list)

    if not filters.NATIVE:
        print("agent._filters is not built: C++ figures would be the Python ones.")
        print("Build it with `pip install -e .[test]` or `scripts/test`.")
        return 1

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {cpu_model()}")
    print(f"single update: {n_loop} samples in a Python loop; update_many: {n_many} samples")
    print("(ns per sample, best of", repeats, "runs)\n")
    header = (
        "| filter | C++ update | Py update | speed-up | target | "
        "C++ update_many | speed-up vs Py loop | target |"
    )
    print(header)
    print("|" + "---|" * 8)
    all_met = True
    for case in CASES:
        cpp = ns_per_sample_loop(case.make_cpp, xs_loop, repeats)
        py = ns_per_sample_loop(case.make_py, xs_loop, repeats)
        many = ns_per_sample_many(case.make_cpp, xs_array, repeats)
        single_ratio = py / cpp
        many_ratio = py / many
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
            f"| {case.name} | {cpp:.0f} | {py:.0f} | {single_ratio:.1f}× | {single_verdict} "
            f"| {many:.1f} | {many_ratio:.0f}× | {many_verdict} |"
        )
    print("\nall targets met" if all_met else "\nsome targets MISSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
