"""Start-up alone: spawn → first retained state, the script and agent checkouts in turns.

Run from the repository root with the PyPI venv::

    build/venv-pypi/bin/python bench/start.py --rounds 30
    build/venv-pypi/bin/python bench/start.py --rounds 30 --agent-root /tmp/before --agent-root .

The suite's start figure (``python -m bench``, scenario ``bridge``) has 18 samples a side
(six spawns a round); on a shared machine their spread is still larger than a start-up
change worth measuring.
This measures that one figure the same way — bench/bridge.py's ``Session`` and ``Listener``:
the same app and config, environment, broker and clock — many times, alternating: each
round starts the bridge baseline, then each agent checkout in the order given (``.`` or no
``--agent-root``: this checkout, ``python -m agent``; another root runs through
``bench.common.LAUNCHER``). A process is ended as soon as its first state arrived. Prints
each one's median and minimum and its ratio of medians to the script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bridge import Session, checkout_arguments, first_state_ms, in_turns
from bench.common import median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args, roots = checkout_arguments(parser, 30, argv)
    samples: dict[str, list[float]] = {"script": [], **{str(r): [] for r in roots}}

    def run(name: str, session: Session, _job: None) -> None:
        samples[name].append(first_state_ms(session, session.options))

    in_turns(args, roots, (None,), run)
    script = median(samples["script"])
    print(f"{args.rounds} rounds; spawn → first state, ms")
    for name, values in samples.items():
        ratio = median(values) / script
        print(f"  {name}: median {median(values):.1f}, min {min(values):.1f}, ratio {ratio:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
