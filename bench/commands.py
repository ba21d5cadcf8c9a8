"""Commands alone: what a command costs, the script and agent checkouts in turns.

Run from the repository root with the PyPI venv::

    build/venv-pypi/bin/python bench/commands.py --rounds 5
    build/venv-pypi/bin/python bench/commands.py --rounds 5 --agent-root /tmp/before --agent-root .

The suite's command figures (``python -m bench``, scenario ``bridge``) come from three runs
a side, each in its own stretch of minutes; on a shared machine the stretches differ more
than a change worth measuring, and CPU per command moves with the host's wake-up costs.
This measures the same figures — bench/bridge.py's ``Session`` and ``Probe``: ``"<seq>
<qos>"`` on ``{prefix}/echo/set``, one at a time, each answered before the next — in
rounds, each round running the script and then each agent checkout (``.`` or no
``--agent-root``: this checkout; another root runs through ``bench.common.LAUNCHER``),
a fresh process each, at QoS 1 and then QoS 0. Per command: the process's CPU (its
threads' schedstat, less its idle rate measured just before), its threads' context
switches, and the round trip's median. Prints each one's medians over the rounds and
their ratios to the script's.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bridge import (
    WARMUP_COMMANDS,
    Listener,
    Probe,
    Session,
    checkout_arguments,
    cpu_ns_exact,
    in_turns,
)
from bench.common import Options, context_switches, median

IDLE = 1.0
"""Seconds the process's idle CPU rate is measured for, before the commands."""


def command_costs(
    session: Session, options: Options, count: int
) -> dict[int, tuple[float, float, float]]:
    """Spawn ``session``; per QoS (1, then 0): (CPU µs, context switches, round trip ms
    median) per command, over ``count`` commands."""
    broker = options.broker
    listener = Listener(broker.host, broker.port, [f"{session.prefix}/+/state"])
    out: dict[int, tuple[float, float, float]] = {}
    try:
        session.start()
        if listener.first(lambda topic, _payload: True, 30.0) is None:
            raise session.failed("no state within 30 s")
        time.sleep(0.5)
        pid = session.pid
        cpu0, t0 = cpu_ns_exact(pid), time.monotonic()
        time.sleep(IDLE)
        idle_rate = (cpu_ns_exact(pid) - cpu0) / (time.monotonic() - t0)
        probe = Probe(broker.host, broker.port, session.prefix)
        try:
            for qos in (1, 0):
                for seq in range(WARMUP_COMMANDS):
                    probe.round_trip(seq, qos)
                rtts: list[float] = []
                c0, s0, w0 = cpu_ns_exact(pid), sum(context_switches(pid)), time.monotonic()
                for seq in range(WARMUP_COMMANDS, WARMUP_COMMANDS + count):
                    rtts.append(probe.round_trip(seq, qos) * 1000)
                c1, s1, w1 = cpu_ns_exact(pid), sum(context_switches(pid)), time.monotonic()
                if any(math.isnan(r) for r in rtts):
                    raise session.failed(f"a command at QoS {qos} got no answer")
                work = (c1 - c0) - idle_rate * (w1 - w0)
                out[qos] = (work / count * 1e6, (s1 - s0) / count, median(rtts))
        finally:
            probe.close()
    finally:
        if session.proc is not None:
            options.children.end(session.proc)
        listener.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="commands per QoS and run")
    args, roots = checkout_arguments(parser, 5, argv)
    names = ["script", *map(str, roots)]
    samples: dict[tuple[str, int], list[tuple[float, float, float]]] = {
        (n, q): [] for n in names for q in (1, 0)
    }

    def run(name: str, session: Session, _job: None) -> None:
        for qos, costs in command_costs(session, session.options, args.count).items():
            samples[(name, qos)].append(costs)

    in_turns(args, roots, (None,), run)
    print(f"{args.rounds} rounds; {args.count:,} commands a QoS and run, one at a time")
    for qos in (1, 0):
        script = [median([s[j] for s in samples[("script", qos)]]) for j in range(3)]
        for name in names:
            values = [median([s[j] for s in samples[(name, qos)]]) for j in range(3)]
            ratios = [v / b if b else math.nan for v, b in zip(values, script, strict=True)]
            cpu, switches, rtt = ratios
            print(
                f"  QoS {qos} {name}: CPU {values[0]:.0f} µs ({cpu:.2f}×), context switches"
                f" {values[1]:.2f} ({switches:.2f}×), round trip p50 {values[2]:.3f} ms"
                f" ({rtt:.2f}×)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
