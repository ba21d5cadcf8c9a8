"""Benchmark of the stores: saves per second, bytes written per save, save latency.

Run from the repository root::

    build/venv-pypi/bin/python bench/stores.py                 # 30 s + 10 s + 5 s per store
    build/venv-pypi/bin/python bench/stores.py --quick         # a smoke run
    build/venv-pypi/bin/python bench/stores.py --dir /mnt/sd   # on another file system

For :class:`JsonFileStore` and :class:`SqliteStore`, ten device threads each own a
:class:`DeviceStore` (as the runtime will give them) over one shared store, and:

* **paced** — every device changes its state and saves once a second, all ten on the same
  tick (a scheduler firing ten 1 s telemetry devices together: the worst case for
  contention, and what group commit is for);
* **unchanged** — the same, but the state does not change: the dirty check must make those
  saves free;
* **saturated** — every device changes and saves in a loop, as fast as it can;
* **saturated, 1 device** — the same with one device alone: every save is a write of its
  own, which shows what group commit buys the ten.

Figures: *saves/s* (``save()`` calls, all of which returned True), *writes/s* (commits that
reached the disk: ``store.writes``; a JSON write is two fsyncs, file and directory, an
SQLite commit one fsync of the WAL plus its checkpoints), *syscall bytes/save* (``wchar``
of /proc/self/io: bytes handed to ``write()``), *device bytes/save* (``write_bytes``: pages
the process dirtied for the block device; file-system journal writes are not counted), and
the save time (p50, p99 — nearest rank —, max) as a device thread sees it. A device state
is about 250 bytes of JSON. Measurements, not tests: nothing here fails a build.

In the suite (``python -m bench``, :func:`run_stores`) this script runs as a child process
of the measured interpreter, once a round, with shorter runs, and hands its figures back as
JSON (``--json FILE``); ``--paced``, ``--unchanged`` and ``--saturated`` set the seconds of
each run, ``--order`` which store goes first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.persist import DeviceStore
from agent.stores import JsonFileStore, SqliteStore, StoreBase
from bench.common import (
    BENCH,
    Figure,
    Options,
    Target,
    agent_env,
    cpu_model,
    percentile,
    run_json_child,
)

DEVICES = 10
PACED, UNCHANGED, SATURATED = "paced, 1 save/s each", "paced, unchanged", "saturated"
SCENARIOS = (
    (PACED, "paced", True, True, DEVICES),
    (UNCHANGED, "unchanged", True, False, DEVICES),
    (SATURATED, "saturated", False, True, DEVICES),
    (SATURATED, "saturated", False, True, 1),
)
"""Each run: its name, which duration it takes (``--paced``, ...), paced, change, devices."""
STORES: dict[str, Callable[[Path], StoreBase]] = {
    "json": lambda d: JsonFileStore(d / "state.json"),
    "sqlite": lambda d: SqliteStore(d / "state.db"),
}


def proc_io() -> dict[str, int]:
    """This process's I/O counters (Linux)."""
    counters = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        name, _, value = line.partition(":")
        counters[name] = int(value)
    return counters


def state(device: int, n: int) -> dict[str, object]:
    """A plausible device state, about 250 bytes of JSON, different for every ``n``."""
    return {
        "counter": n,
        "energy_kwh": round(1234.5 + n * 0.01, 2),
        "temperature": round(21.0 + (n % 50) / 10, 1),
        "humidity": 40 + n % 20,
        "valve": "open" if n % 2 else "closed",
        "history": [n - 4, n - 3, n - 2, n - 1, n],
        "device": f"device-{device}",
        "firmware": "1.4.2",
        "errors": {"crc": n // 100, "timeout": n // 250},
    }


@dataclass
class Result:
    scenario: str
    devices: int
    store: str
    seconds: float
    saves: int
    writes: int
    wchar: int
    write_bytes: int
    times: list[float]

    def summary(self) -> dict[str, Any]:
        """The figures of the table row (rates per second, bytes per save, times in ms)."""
        times = sorted(self.times)
        per = max(self.saves, 1)
        return {
            "store": self.store,
            "scenario": self.scenario,
            "devices": self.devices,
            "seconds": self.seconds,
            "saves_per_s": self.saves / self.seconds,
            "writes_per_s": self.writes / self.seconds,
            "writes_per_save": self.writes / per,
            "syscall_bytes_per_save": self.wchar / per,
            "device_bytes_per_save": self.write_bytes / per,
            "p50_ms": (statistics.median(times) if times else 0.0) * 1e3,
            "p99_ms": (percentile(times, 0.99) if times else 0.0) * 1e3,
            "max_ms": max(times, default=0.0) * 1e3,
        }

    def row(self) -> str:
        f = self.summary()
        return (
            f"| {self.store} | {self.scenario} | {self.devices} | "
            f"{f['saves_per_s']:,.1f} | {f['writes_per_s']:,.1f} | "
            f"{f['syscall_bytes_per_save']:,.0f} | "
            f"{f['device_bytes_per_save']:,.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | "
            f"{f['max_ms']:.2f} |"
        )


def run(
    scenario: str,
    make_store: Callable[[], StoreBase],
    seconds: float,
    *,
    paced: bool,
    change: bool,
    count: int = DEVICES,
) -> Result:
    backend = make_store()
    devices = [DeviceStore(backend, f"device-{i}") for i in range(count)]
    for i, device in enumerate(devices):  # a first state on disk, outside the measurement
        device.update(state(i, 0))
        device.save()
    stop = threading.Event()
    start = threading.Barrier(count + 1)
    times: list[list[float]] = [[] for _ in range(count)]
    saves = [0] * count
    failures: list[str] = []

    def device_loop(index: int) -> None:
        device = devices[index]
        n = 0
        start.wait()
        began = time.monotonic()
        while not stop.is_set():
            if paced:
                # The next whole second after the start: every device on the same tick.
                tick = began + (saves[index] + 1)
                if stop.wait(max(0.0, tick - time.monotonic())):
                    return
            if change:
                n += 1
                device.update(state(index, n))
            t0 = time.perf_counter()
            ok = device.save()
            times[index].append(time.perf_counter() - t0)
            saves[index] += 1
            if not ok:
                failures.append(f"device-{index}: {device.failures.last_error}")
                return

    threads = [threading.Thread(target=device_loop, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    writes0, io0 = backend.writes, proc_io()
    start.wait()
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    io1 = proc_io()
    backend.close()
    if failures:
        raise RuntimeError(f"saves failed: {failures[:3]}")  # a failure of this scenario
    return Result(
        scenario,
        count,
        type(backend).__name__,
        elapsed,
        sum(saves),
        backend.writes - writes0,
        io1["wchar"] - io0["wchar"],
        io1["write_bytes"] - io0["write_bytes"],
        [x for per_device in times for x in per_device],
    )


def fsync_ms(directory: Path, rounds: int = 50) -> float:
    """Median time of writing 4 kB to a file and fsyncing it: what the medium charges for
    durability, the floor under every write of both stores."""
    times = []
    fd = os.open(directory / "fsync-probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            os.pwrite(fd, os.urandom(4096), 0)
            os.fsync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(directory / "fsync-probe")
    return statistics.median(times) * 1e3


def file_system(path: Path) -> str:
    """The file system type and device of ``path`` (the longest matching mount point)."""
    best = ("", "unknown", "")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        mount_point = left.split()[4]
        fs_type, source = right.split()[:2]
        inside = str(path) == mount_point or str(path).startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > len(best[0]):
            best = (mount_point, fs_type, source)
    return f"{best[1]} on {best[2]} (mounted at {best[0]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke run)")
    parser.add_argument("--dir", default="/var/tmp", help="where the stores go (a temp dir)")
    parser.add_argument("--paced", type=float, help="seconds of the paced runs")
    parser.add_argument("--unchanged", type=float, help="seconds of the unchanged run")
    parser.add_argument("--saturated", type=float, help="seconds of each saturated run")
    parser.add_argument("--order", default="json,sqlite", help="which store runs first")
    parser.add_argument("--json", type=Path, help="also write every figure there (JSON)")
    args = parser.parse_args(argv)
    quick = args.quick
    seconds = {
        "paced": args.paced or (3.0 if quick else 30.0),
        "unchanged": args.unchanged or (2.0 if quick else 10.0),
        "saturated": args.saturated or (1.0 if quick else 5.0),
    }
    order = [name.strip() for name in args.order.split(",")]
    if sorted(order) != sorted(STORES):
        parser.error(f"--order: each of {', '.join(STORES)} once")
    base = Path(tempfile.mkdtemp(prefix="agent-bench-stores-", dir=args.dir))
    results: list[Result] = []
    try:
        where = file_system(base)
        fsync = fsync_ms(base)
        print(
            f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} CPUs, {cpu_model()}, Linux {platform.release()}, "
            f"load average {os.getloadavg()[0]:.2f} at the start"
        )
        print(f"stores in {base}: {where}")
        print(f"write 4 kB + fsync: {fsync:.2f} ms (median of 50)")
        print(", ".join(f"{name} {s:g} s" for name, s in seconds.items()) + "\n")
        print(
            "| store | scenario | devices | saves/s | writes/s | syscall bytes/save | "
            "device bytes/save | p50 ms | p99 ms | max ms |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name in order:

            def make(
                factory: Callable[[Path], StoreBase] = STORES[name], directory: Path = base / name
            ) -> StoreBase:
                return factory(directory)

            for scenario, duration, paced, change, count in SCENARIOS:
                result = run(
                    scenario, make, seconds[duration], paced=paced, change=change, count=count
                )
                results.append(result)
                print(result.row(), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        report = {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "file_system": where,
            "fsync_ms": fsync,
            "results": [r.summary() for r in results],
        }
        args.json.write_text(json.dumps(report, indent=1))
    return 0


# -- the suite's scenario (python -m bench) -------------------------------------------------


def run_stores(options: Options) -> list[Figure]:
    """JsonFileStore and SqliteStore side by side, ``options.rounds`` times.

    Each round runs this script as a child of ``options.python`` (the measured interpreter,
    with this checkout's agent first on its path): paced 8 s, unchanged 2 s, saturated 2 s
    for each store (quick: 2, 0.5 and 0.5 s), the store that goes first alternating from
    round to round. A store has no paho script to beat, so the rows have no baseline: each
    store is its own row, one value per round, and the table shows the median. Per store:

    * ``paced: writes per save`` — commits that reached the disk divided by ``save()``
      calls, ten devices saving on the same tick: 1 without group commit, 0.2 when the
      first save writes alone and the nine others share the next write;
    * ``paced: p99 save`` — ms, nearest-rank p99 of every save time of the run (a device
      thread's view: the write in progress, then its own);
    * ``unchanged: writes`` — per second, the state not changing: target 0, the dirty check
      makes such saves free;
    * ``saturated, 10 devices`` and ``saturated, 1 device`` — ``save()`` calls per second,
      every device changing and saving in a loop.
    """
    paced, unchanged, saturated = (2.0, 0.5, 0.5) if options.quick else (8.0, 2.0, 2.0)
    durations = [f"--paced={paced}", f"--unchanged={unchanged}", f"--saturated={saturated}"]
    folder = options.workdir / "stores"
    folder.mkdir(parents=True, exist_ok=True)
    rounds: list[dict[str, Any]] = []
    for rnd in range(options.rounds):
        order = "json,sqlite" if rnd % 2 == 0 else "sqlite,json"
        out, log_path = folder / f"round{rnd + 1}.json", folder / f"round{rnd + 1}.log"
        cmd = [options.python, str(BENCH / "stores.py"), "--json", str(out), "--order", order]
        report = run_json_child(options, [*cmd, *durations], agent_env(), out, log_path, 300)
        rounds.append(report)
        print(
            f"  round {rnd + 1}: {order}, fsync {report['fsync_ms']:.2f} ms, "
            f"{report['file_system']}",
            flush=True,
        )

    def per_round(store: str, scenario: str, devices: int, key: str) -> list[float]:
        return [
            next(
                r[key]
                for r in report["results"]
                if r["store"] == store and r["scenario"] == scenario and r["devices"] == devices
            )
            for report in rounds
        ]

    figures: list[Figure] = []
    for store in ("JsonFileStore", "SqliteStore"):
        rows: list[tuple[str, str, str, int, str, Target | None]] = [
            ("paced: writes per save", "writes/save", PACED, DEVICES, "writes_per_save", None),
            ("paced: p99 save", "ms", PACED, DEVICES, "p99_ms", None),
            ("unchanged: writes", "writes/s", UNCHANGED, DEVICES, "writes_per_s", Target("max", 0)),
            ("saturated, 10 devices", "saves/s", SATURATED, DEVICES, "saves_per_s", None),
            ("saturated, 1 device", "saves/s", SATURATED, 1, "saves_per_s", None),
        ]
        for name, unit, scenario, devices, key, target in rows:
            values = per_round(store, scenario, devices, key)
            figures.append(Figure("stores", f"{store}: {name}", unit, values, [], target))
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
