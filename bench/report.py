"""The suite's report: one Markdown table of every figure, the notes under it, and the JSON
file of every round's value and of the raw samples.

The table has one row per :class:`~bench.common.Figure`:

* **baseline**, **agent** — the median of the figure's per-round values (a round that did
  not produce the value, NaN, is left out of the median); ``—`` where there is none (a
  store has no baseline);
* **agent / baseline** — the ratio of those two medians (not the median of per-round
  ratios: a round's agent and baseline runs are minutes apart at most, but the medians are
  what the columns show, and the ratio should be of what the reader sees);
* **target** and **met** — ✓ met, ✗ missed, – no target or no value. A ratio target is
  held against that ratio, any other against the agent's median.

Numbers keep three significant digits or so (``1,234``, ``56.7``, ``8.90``, ``0.123``);
the JSON keeps them whole.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import Figure

MET = {True: "✓", False: "✗", None: "–"}


def number(x: float, integral: bool = False) -> str:
    """A value for the table: ``—`` for NaN; a count (``integral``: every value of the
    figure is a whole number) or anything from 100 up with thousands separators and no
    decimals; else about three significant digits."""
    if x is None or math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if integral and x == int(x):
        return f"{int(x):,}"
    size = abs(x)
    if size >= 100:
        return f"{x:,.0f}"
    if size >= 10:
        return f"{x:.1f}"
    if size >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def ratio_text(x: float) -> str:
    """Three significant digits, trailing zeros kept (``1.40×``, ``0.0125×``, ``123×``)."""
    if math.isnan(x):
        return "—"
    return f"{x:.0f}×" if abs(x) >= 100 else f"{x:#.3g}×"


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell (``|jitter|`` would split the row)."""
    return text.replace("|", "\\|")


def table(figures: Sequence[Figure]) -> str:
    """The Markdown table of every figure, in the order given."""
    rows = [
        "| scenario | figure | unit | baseline | agent | agent / baseline | target | met |",
        "|---|---|---|---:|---:|---:|---|:-:|",
    ]
    for f in figures:
        target = f.target.text(f.unit) if f.target is not None else "—"
        counts = all(float(v).is_integer() for v in (*f.agent, *f.baseline) if not math.isnan(v))
        base, agent = number(f.baseline_median, counts), number(f.agent_median, counts)
        rows.append(
            f"| {cell(f.scenario)} | {cell(f.name)} | {cell(f.unit)} | {base} | {agent} "
            f"| {ratio_text(f.ratio)} | {cell(target)} | {MET[f.met]} |"
        )
    return "\n".join(rows) + "\n"


def notes(figures: Sequence[Figure]) -> str:
    """The notes of the figures that have one, a list under the table ('' if none)."""
    lines = [f"- {f.scenario} / {f.name}: {f.note}" for f in figures if f.note]
    return "\n".join(lines) + "\n" if lines else ""


def summary(figures: Sequence[Figure]) -> str:
    """How many targets were met, missed, or could not be judged."""
    judged = [f.met for f in figures if f.target is not None]
    return (
        f"{len(figures)} figures, {len(judged)} with a target: {judged.count(True)} met, "
        f"{judged.count(False)} missed, {judged.count(None)} without a value"
    )


def plain(value: Any) -> Any:
    """``value`` with what strict JSON cannot hold replaced: NaN and ±inf by None, tuples by
    lists, paths by strings (``json.dumps`` would write ``NaN``, which most readers
    reject)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(
    path: Path,
    header: Mapping[str, Any],
    figures: Sequence[Figure],
    raw: Mapping[str, Any],
    failures: Mapping[str, str],
) -> None:
    """Everything of the invocation: the header (date, machine, command, versions, broker
    config), each figure with every round's value, the raw samples, the failed scenarios."""
    data = {
        **header,
        "figures": [
            {
                **f.as_json(),
                "agent_median": f.agent_median,
                "baseline_median": f.baseline_median,
                "ratio": f.ratio,
            }
            for f in figures
        ],
        "raw": raw,
        "failures": failures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain(data), indent=1, allow_nan=False) + "\n")
