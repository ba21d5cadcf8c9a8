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
the save time (p50, p99, max) as a device thread sees it. A device state is about 250 bytes
of JSON. Measurements, not tests: nothing here fails a build.
"""

from __future__ import annotations

import argparse
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.persist import DeviceStore
from agent.stores import JsonFileStore, SqliteStore, StoreBase

DEVICES = 10


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

    def row(self) -> str:
        times = sorted(self.times)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))] if times else 0.0
        p50 = statistics.median(times) if times else 0.0
        per = max(self.saves, 1)
        return (
            f"| {self.store} | {self.scenario} | {self.devices} | "
            f"{self.saves / self.seconds:,.1f} | {self.writes / self.seconds:,.1f} | "
            f"{self.wchar / per:,.0f} | "
            f"{self.write_bytes / per:,.0f} | {p50 * 1e3:.2f} | {p99 * 1e3:.2f} | "
            f"{max(times, default=0) * 1e3:.2f} |"
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
        raise SystemExit(f"saves failed: {failures[:3]}")
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


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke run)")
    parser.add_argument("--dir", default="/var/tmp", help="where the stores go (a temp dir)")
    args = parser.parse_args(argv)
    paced_s, unchanged_s, saturated_s = (3.0, 2.0, 1.0) if args.quick else (30.0, 10.0, 5.0)
    base = Path(tempfile.mkdtemp(prefix="agent-bench-stores-", dir=args.dir))
    try:
        print(
            f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} CPUs, {cpu_model()}, Linux {platform.release()}, "
            f"load average {os.getloadavg()[0]:.2f} at the start"
        )
        print(f"stores in {base}: {file_system(base)}")
        print(f"write 4 kB + fsync: {fsync_ms(base):.2f} ms (median of 50)")
        print(f"paced {paced_s:g} s, unchanged {unchanged_s:g} s, "
              f"saturated {saturated_s:g} s\n")  # fmt: skip
        print(
            "| store | scenario | devices | saves/s | writes/s | syscall bytes/save | "
            "device bytes/save | p50 ms | p99 ms | max ms |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        stores: list[tuple[str, Callable[[Path], StoreBase]]] = [
            ("json", lambda d: JsonFileStore(d / "state.json")),
            ("sqlite", lambda d: SqliteStore(d / "state.db")),
        ]
        for name, factory in stores:

            def make(
                factory: Callable[[Path], StoreBase] = factory, directory: Path = base / name
            ) -> StoreBase:
                return factory(directory)

            for scenario, seconds, paced, change, count in (
                ("paced, 1 save/s each", paced_s, True, True, DEVICES),
                ("paced, unchanged", unchanged_s, True, False, DEVICES),
                ("saturated", saturated_s, False, True, DEVICES),
                ("saturated", saturated_s, False, True, 1),
            ):
                result = run(scenario, make, seconds, paced=paced, change=change, count=count)
                print(result.row(), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
