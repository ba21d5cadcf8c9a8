"""The baseline of bench/telemetry.py: the same telemetry job in a minimal threaded paho script.

What someone would write without the framework: one paho client with its network thread
(``loop_start``), and one thread per device (or, with ``--groups G``, one thread per group
of devices) that loops on monotonic deadlines::

    start = time.monotonic()               # when the thread begins
    k = 0
    while not stopped:
        wait until start + k * interval
        for each device of this thread:
            record time.monotonic(); publish {"v": n} retained, QoS 1, to bench/dI/state
        k += 1, or, if that deadline has already passed, the next one still in the future

Deadlines are absolute (``start + k*interval``), so nothing drifts; a thread that falls
more than a period behind skips the missed periods (and counts them), as the agent's
scheduler does, instead of firing a burst to catch up. Works with paho-mqtt 1.6 (Debian
12) and 2.x (PyPI).

It runs until SIGTERM/SIGINT, then stops its threads, disconnects and writes the same result
file as bench/telemetry_app.py (``"impl": "baseline"``; ``own_counters.skipped`` are the
periods its threads skipped). ``--ready FILE`` is written once every device has published
once (and the client is connected): the ``time.monotonic()`` of that moment and the id and name
of each thread, as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
import tracemalloc
from array import array
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt


def new_client(client_id: str) -> Any:
    """A paho client for either API: 2.x needs the callback API version, 1.6 has none."""
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho 2.x
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    return mqtt.Client(client_id=client_id)


class Baseline:
    """Devices as plain threads publishing through one shared paho client."""

    def __init__(
        self, client: Any, devices: int, interval: float, groups: int, prefix: str
    ) -> None:
        self.client = client
        self.interval = interval
        self.stop = threading.Event()
        self.stamps = [array("d") for _ in range(devices)]
        self.topics = [f"{prefix}/d{i}/state" for i in range(devices)]
        self.skipped = [0] * max(devices, 1)
        if groups > 0:
            members = [list(range(g, devices, groups)) for g in range(groups)]
        else:
            members = [[i] for i in range(devices)]
        self.threads = [
            threading.Thread(target=self._run, args=(m,), name=f"dev{n}", daemon=True)
            for n, m in enumerate(members)
            if m
        ]

    def _run(self, indices: list[int]) -> None:
        """One thread: wait for each deadline, then read and publish its devices."""
        interval, stop, client = self.interval, self.stop, self.client
        start = time.monotonic()
        k = 0
        while True:
            delay = start + k * interval - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            if stop.is_set():
                return
            for i in indices:
                stamps = self.stamps[i]
                stamps.append(time.monotonic())
                payload = json.dumps({"v": len(stamps)})
                client.publish(self.topics[i], payload, qos=1, retain=True)
            k += 1
            behind = time.monotonic() - (start + k * interval)
            if behind >= interval:  # the next deadline is more than a period gone: skip
                missed = math.floor(behind / interval)
                k += missed
                self.skipped[indices[0]] += missed

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def all_called(self) -> bool:
        return all(len(s) > 0 for s in self.stamps)

    def join(self, timeout: float) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--groups", type=int, default=0, help="0: one thread per device")
    parser.add_argument("--prefix", default="benchbase")
    parser.add_argument("--out", type=Path, default=Path("telemetry-baseline.json"))
    parser.add_argument("--ready", type=Path, default=Path("telemetry-baseline.ready"))
    parser.add_argument(
        "--tracemalloc", type=Path, help="write where the Python memory went, when ready"
    )
    args = parser.parse_args(argv)

    stop_requested = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_requested.set())

    connected = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        if (rc if isinstance(rc, int) else getattr(rc, "value", rc)) == 0:
            connected.set()

    client = new_client(f"benchbase-{os.getpid()}")
    client.on_connect = on_connect
    client.reconnect_delay_set(0.1, 0.5)
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()
    if not connected.wait(10.0):
        print(f"baseline: no connection to {args.host}:{args.port}", file=sys.stderr)
        client.loop_stop()
        return 1

    if args.tracemalloc:
        tracemalloc.start()
        base = tracemalloc.take_snapshot()
    bench = Baseline(client, args.devices, args.interval, args.groups, args.prefix)
    bench.start()
    ready_at: float | None = None
    while not stop_requested.wait(0.01):  # polls only until ready: it costs CPU
        if bench.all_called():
            ready_at = time.monotonic()
            if args.tracemalloc:
                stats = tracemalloc.take_snapshot().compare_to(base, "filename")
                report = {
                    "total": sum(s.size_diff for s in stats),
                    "count": sum(s.count_diff for s in stats),
                    "by_file": [
                        [s.traceback[0].filename, s.size_diff, s.count_diff]
                        for s in stats[:25]
                        if s.size_diff > 0
                    ],
                }
                args.tracemalloc.write_text(json.dumps(report))
            threads = {str(t.native_id): t.name for t in threading.enumerate() if t.native_id}
            tmp = args.ready.with_suffix(".tmp")
            tmp.write_text(json.dumps({"t": ready_at, "threads": threads}))
            tmp.replace(args.ready)
            break
    stop_requested.wait()  # a signal interrupts the wait (POSIX), its handler sets the event

    bench.join(timeout=5.0)
    client.disconnect()
    client.loop_stop()
    result = {
        "impl": "baseline",
        "pid": os.getpid(),
        "devices": args.devices,
        "interval": args.interval,
        "groups": args.groups,
        "ready": ready_at,
        "stamps": {f"d{i}": list(s) for i, s in enumerate(bench.stamps)},
        "own_counters": {"skipped": sum(bench.skipped)},
    }
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
