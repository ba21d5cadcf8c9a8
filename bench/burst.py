"""Bursts alone: 20,000 messages back to back, the script and agent checkouts in turns.

Run from the repository root with the PyPI venv::

    build/venv-pypi/bin/python bench/burst.py --rounds 5
    build/venv-pypi/bin/python bench/burst.py --rounds 5 --agent-root /tmp/before --agent-root .

The suite's throughput figure (``python -m bench``, scenario ``throughput``) has three bursts
a side per QoS, one per process, which settled 2 s and answered 100 warm-up commands before
its QoS 1 burst and then bursts at QoS 0; on a shared machine their spread is larger than a
change worth measuring. This measures the same figure, a fresh process per burst right
after its first state (no settle, no warm-up) — bench/bridge.py's ``Session``,
``Probe`` and ``burst``: the command device publishes ``n`` messages back to back, a
``mosquitto_sub`` receives them, messages per second from the command to the last one — in
rounds, each round running the script and then each agent checkout (``.`` or no
``--agent-root``: this checkout; another root runs through ``bench.common.LAUNCHER``) at
QoS 1 and at QoS 0, a fresh process per burst. Prints each one's median and its ratio of
medians to the script.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bridge import Listener, Probe, Session, burst, checkout_arguments, in_turns
from bench.common import Options, median


def burst_rate(session: Session, options: Options, count: int, qos: int) -> float:
    """Spawn ``session``, wait for its first state, and return one burst's messages/s."""
    broker = options.broker
    listener = Listener(broker.host, broker.port, [f"{session.prefix}/+/state"])
    try:
        session.start()
        if listener.first(lambda topic, _payload: True, 30.0) is None:
            raise session.failed("no state within 30 s")
        probe = Probe(broker.host, broker.port, session.prefix)
        try:
            rate, lost = burst(session, probe, count, qos)
        finally:
            probe.close()
        if lost:
            raise session.failed(f"{lost} of {count} messages lost at QoS {qos}")
        return rate
    finally:
        if session.proc is not None:
            options.children.end(session.proc)
        listener.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="messages per burst")
    args, roots = checkout_arguments(parser, 5, argv)
    names = ["script", *map(str, roots)]
    samples: dict[tuple[str, int], list[float]] = {(n, q): [] for n in names for q in (1, 0)}

    def run(name: str, session: Session, qos: int) -> None:
        samples[(name, qos)].append(burst_rate(session, session.options, args.count, qos))

    in_turns(args, roots, (1, 0), run)
    print(f"{args.rounds} rounds; {args.count:,} messages back to back, messages/s")
    for qos in (1, 0):
        script = median(samples[("script", qos)])
        for name in names:
            value = median(samples[(name, qos)])
            ratio = value / script if script and not math.isnan(script) else math.nan
            print(f"  QoS {qos} {name}: median {value:,.0f}, ratio {ratio:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
