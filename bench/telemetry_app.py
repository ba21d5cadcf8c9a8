"""The agent side of bench/telemetry.py: an App of N telemetry devices that time themselves.

bench/telemetry.py copies this file next to a generated TOML file and runs it the way a user
would, ``python -m agent --config agent.toml`` (``app = "telemetry_app:app"``); it can also
run as a script, ``python telemetry_app.py --config agent.toml``, through ``app.cli()``.
The job is described by environment variables, because devices are registered when the
module is imported, before any settings are read:

``BENCH_DEVICES``   how many telemetry devices (``d0``, ``d1``, ...); 0 is allowed (footprint)
``BENCH_INTERVAL``  their interval in seconds
``BENCH_GROUPS``    0: every device on its own thread; G > 0: ``group=f"g{i % G}"`` (the
                    keyword may not exist yet: the app then writes ``"unavailable"`` into
                    the result file and exits with :data:`EXIT_UNAVAILABLE`)
``BENCH_OUT``       where to write the result (JSON) at shutdown
``BENCH_READY``     a file written once every device has been called (JSON: the
                    ``time.monotonic()`` of that moment and the id and name of each thread),
                    so the benchmark knows when the warm-up is over
``BENCH_TRACEMALLOC`` optional: a file for a tracemalloc report of the Python memory the
                    devices and the runtime allocated (see :func:`memory_report`)

Each handler appends ``time.monotonic()`` to its device's ``array('d')`` (8 bytes a tick,
appended under the GIL: no lock) and returns ``{"v": k}``, which the agent publishes
retained with QoS 1 to ``benchagent/dK/state``. ``time.monotonic()`` is CLOCK_MONOTONIC,
one clock for every process of the machine, so the benchmark can cut the same measurement
window out of these timestamps and out of the baseline's.

At shutdown (the lifespan's exit, after every device thread has stopped; ``atexit`` as a
fallback should the runtime no longer run lifespans) it writes::

    {"impl": "agent", "ready": t, "stamps": {"d0": [t, ...], ...}, "own_counters": {...}}

``own_counters`` are the agent's own counts of ticks it did not deliver, found by
introspection (best effort, ``null`` when not found): ``heartbeat_skipped_ticks``, the sum
of what the heartbeat would report, and ``scheduler_missed``, the periods the scheduler
thread itself was too late for and skipped (see :func:`_own_counters`).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import agent

EXIT_UNAVAILABLE = 3
"""Exit code when the runtime lacks a feature the job needs (``group=``)."""

DEVICES = int(os.environ.get("BENCH_DEVICES", "1"))
INTERVAL = float(os.environ.get("BENCH_INTERVAL", "1.0"))
GROUPS = int(os.environ.get("BENCH_GROUPS", "0"))
OUT = Path(os.environ.get("BENCH_OUT", "telemetry-agent.json"))
READY = Path(os.environ.get("BENCH_READY", "telemetry-agent.ready"))
THREADS = READY.with_name(READY.name + ".threads")
TRACEMALLOC = os.environ.get("BENCH_TRACEMALLOC")
"""A path: trace Python allocations from here on and write where they went when ready
(a diagnostic run; tracing makes every allocation slower and bigger)."""

if TRACEMALLOC:
    import tracemalloc

    tracemalloc.start()
    _trace_base = tracemalloc.take_snapshot()


def memory_report() -> dict[str, Any]:
    """Python memory allocated since tracing began and still alive, by source file."""
    stats = tracemalloc.take_snapshot().compare_to(_trace_base, "filename")
    return {
        "total": sum(s.size_diff for s in stats),
        "count": sum(s.count_diff for s in stats),
        "by_file": [
            [s.traceback[0].filename, s.size_diff, s.count_diff]
            for s in stats[:25]
            if s.size_diff > 0
        ],
    }


_stamps: dict[str, array[float]] = {f"d{i}": array("d") for i in range(DEVICES)}
_ready_lock = threading.Lock()
_waiting = DEVICES  # devices not yet called once
_lifespan_entered = False
_ready_at: float | None = None
_dumped = False


def _thread_names() -> dict[str, str]:
    """OS thread id -> name of every thread that has begun running."""
    return {str(th.native_id): th.name for th in threading.enumerate() if th.native_id}


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)  # atomic: the benchmark never reads half a file


def _write_ready(t: float) -> None:
    """Write the ready file: when, and the OS thread id and name of every thread then, so
    the benchmark can read each thread's CPU time from /proc/PID/task/TID/stat.

    A thread started a moment ago may not have its id yet (the scheduler's, started after
    the devices), so the names are written again half a second later, to ``READY.threads``.
    """
    global _ready_at
    _ready_at = t
    if TRACEMALLOC:
        _write_json(Path(TRACEMALLOC), memory_report())
    _write_json(READY, {"t": t, "threads": _thread_names()})
    later = threading.Timer(0.5, lambda: _write_json(THREADS, {"threads": _thread_names()}))
    later.daemon = True
    later.start()


def _first_call() -> None:
    """Count down the devices not yet called; the last one (and the lifespan) marks ready."""
    global _waiting
    with _ready_lock:
        _waiting -= 1
        if _waiting == 0 and _lifespan_entered:
            _write_ready(time.monotonic())


def make_handler(stamps: array[float]) -> Callable[[], dict[str, int]]:
    """A telemetry handler that records when it runs. Plain ``def``, nothing injected."""

    def read() -> dict[str, int]:
        stamps.append(time.monotonic())
        k = len(stamps)
        if k == 1:
            _first_call()
        return {"v": k}

    return read


def _own_counters() -> dict[str, int] | None:
    """The agent's own counts of ticks it did not deliver, found by walking the heap.

    ``heartbeat_skipped_ticks`` is the sum of the ``skipped_ticks`` the heartbeat would
    carry now (``HealthReporter.build_heartbeat()``, public API; read at the lifespan's exit,
    before the reporter shuts down); ``scheduler_missed`` the sum of the scheduler jobs'
    ``missed`` periods (``schedule.Job`` instances; an internal counter, which the heartbeat
    may or may not include, depending on the runtime's version). Best effort: None for what
    cannot be found, and nothing here may break the shutdown.
    """
    import schedule

    out: dict[str, int] = {}
    try:
        missed = jobs = 0
        for obj in gc.get_objects():
            if isinstance(obj, schedule.Job) and isinstance(getattr(obj, "missed", None), int):
                missed += obj.missed
                jobs += 1
            elif type(obj).__name__ == "HealthReporter" and hasattr(obj, "build_heartbeat"):
                devices = obj.build_heartbeat().to_dict().get("devices", {})
                out["heartbeat_skipped_ticks"] = sum(
                    int(d.get("skipped_ticks", 0)) for d in devices.values()
                )
                out["heartbeat_devices"] = len(devices)
        if jobs:
            out["scheduler_missed"] = missed
            out["scheduler_jobs"] = jobs
    except Exception:  # a measurement aid must never break the shutdown
        pass
    return out or None


def dump() -> None:
    """Write the result file once (lifespan exit or atexit, whichever comes first)."""
    global _dumped
    if _dumped:
        return
    _dumped = True
    result: dict[str, Any] = {
        "impl": "agent",
        "agent_file": agent.__file__,
        "pid": os.getpid(),
        "devices": DEVICES,
        "interval": INTERVAL,
        "groups": GROUPS,
        "ready": _ready_at,
        "stamps": {name: list(values) for name, values in _stamps.items()},
        "own_counters": _own_counters(),
    }
    _write_json(OUT, result)


@contextlib.contextmanager
def lifespan(_ctx: agent.AppContext) -> Iterator[None]:
    """Marks the app started (ready at once when there are no devices); dumps at exit."""
    global _lifespan_entered
    with _ready_lock:
        _lifespan_entered = True
        if _waiting == 0:
            _write_ready(time.monotonic())
    try:
        yield
    finally:
        dump()


app = agent.App(
    "benchagent",
    "1.0.0",
    heartbeat_interval=3600.0,  # one heartbeat at connect, none during the measurement
    lifespan=lifespan,
)


def _register() -> None:
    for i, (name, stamps) in enumerate(_stamps.items()):
        if GROUPS <= 0:
            app.add_telemetry(name, make_handler(stamps), interval=INTERVAL)
            continue
        try:
            app.add_telemetry(
                name,
                make_handler(stamps),
                interval=INTERVAL,
                group=f"g{i % GROUPS}",  # type: ignore[call-arg]  # being added to the API
            )
        except TypeError as exc:
            if "group" not in str(exc):
                raise
            OUT.write_text(json.dumps({"impl": "agent", "unavailable": str(exc)}))
            print(f"telemetry_app: group= is not available: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_UNAVAILABLE) from None


_register()
atexit.register(dump)

if __name__ == "__main__":
    app.cli()
