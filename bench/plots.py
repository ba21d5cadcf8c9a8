"""The suite's plots, PNG files drawn with matplotlib (a bench-only dependency: the extra
``bench`` of pyproject.toml, ``pip install -e .[bench]``; nothing else imports matplotlib).

Two kinds, where a picture says more than a table's median and p99:

* :func:`latency_cdf` — the distribution of round-trip samples, agent against baseline: the
  empirical CDF, x (the latency) on a log axis, y on a logit axis (0.5, 0.9, 0.99, 0.999
  evenly spaced), so that the tail — where a framework's extra work shows — takes as much
  room as the bulk; p50 and p99 of each series in the legend, its p99 as a dotted line;
* :func:`versus` — a figure against a parameter, one line per implementation (RSS and CPU
  against the device count).

matplotlib is imported only when a plot is drawn, with the Agg backend (files, no display).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import percentile

INSTALL = "build/venv-pypi/bin/pip install matplotlib   (or: pip install -e '.[bench]')"
"""What to run when matplotlib is missing."""

COLOURS = {"agent": "tab:blue", "baseline": "tab:orange"}


def require_matplotlib() -> None:
    """Stop at once, with the pip command to run, when plots are asked for and matplotlib is
    not installed (before any scenario ran, not after minutes of measurements)."""
    if importlib.util.find_spec("matplotlib") is None:
        raise SystemExit(f"plots need matplotlib, which is not installed: {INSTALL}")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(values: Sequence[float]) -> list[float]:
    return sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))


def latency_cdf(
    path: Path, title: str, series: Mapping[str, Sequence[float]], unit: str
) -> Path | None:
    """The empirical CDF of each series (``name -> samples``); None if none has samples.

    A sample at rank ``i`` of ``n`` (sorted) is drawn at ``(i + 0.5) / n``, so that neither
    end touches 0 or 1, which a logit axis cannot show. Samples ≤ 0 cannot go on the log
    axis and are left out (a round trip is never 0).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    drawn = 0
    for name, values in series.items():
        xs = [x for x in _finite(values) if x > 0]
        if not xs:
            continue
        n = len(xs)
        ys = [(i + 0.5) / n for i in range(n)]
        p50, p99 = percentile(xs, 0.50), percentile(xs, 0.99)
        colour = COLOURS.get(name)
        label = f"{name}: n={n:,}, p50 {p50:.3g} {unit}, p99 {p99:.3g} {unit}"
        (line,) = ax.step(xs, ys, where="post", label=label, color=colour, linewidth=1.4)
        ax.axvline(p99, color=line.get_color(), linestyle=":", linewidth=1.0)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    # A round trip spans a decade or two: label 2 and 5 of each decade too, not only 1.
    ax.xaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")
    )
    ax.set_yscale("logit")
    low, high = ax.get_ylim()
    ticks = [q for q in (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999) if low <= q <= high]
    ax.set_yticks(ticks, [f"{q * 100:g} %" for q in ticks])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"round trip ({unit}, log scale)")
    ax.set_ylabel("samples ≤ x")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def versus(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
) -> Path | None:
    """One line with markers per series (``name -> [(x, y), ...]``, drawn in x order);
    None if no series has a point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    drawn = 0
    for name, points in series.items():
        clean = sorted(
            (float(x), float(y))
            for x, y in points
            if math.isfinite(float(x)) and math.isfinite(float(y))
        )
        if not clean:
            continue
        xs, ys = zip(*clean, strict=True)
        ax.plot(xs, ys, marker="o", label=name, color=COLOURS.get(name))
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def draw_suite(raw: Mapping[str, Any], directory: Path) -> list[Path]:
    """The plots of ``python -m bench`` from the raw samples the scenarios left
    (``Options.raw``); a plot whose samples are missing (its scenario did not run) is
    skipped. Returns the files written.

    * ``rtt-qos1.png``, ``rtt-qos0.png`` — command round trip distributions, from
      ``bridge.rtt_ms.<qos>.<impl>`` (lists of ms, every round's samples);
    * ``scale-rss.png``, ``scale-cpu.png`` — VmRSS and CPU against the device count, from
      ``scale.sweep.rss_mb.<impl>`` and ``scale.sweep.cpu_pct.<impl>`` (``[devices, value]``).
    """
    written: list[Path | None] = []
    impls = ("agent", "baseline")
    for qos in ("qos1", "qos0"):
        series = {
            i: raw[f"bridge.rtt_ms.{qos}.{i}"] for i in impls if f"bridge.rtt_ms.{qos}.{i}" in raw
        }
        if series:
            title = f"Command round trip at QoS {qos[-1]}: agent against the baseline script"
            written.append(latency_cdf(directory / f"rtt-{qos}.png", title, series, "ms"))
    for key, name, label in (
        ("rss_mb", "scale-rss.png", "VmRSS at the window's end (MiB)"),
        ("cpu_pct", "scale-cpu.png", "CPU over the window (% of one core)"),
    ):
        points = {
            i: raw[f"scale.sweep.{key}.{i}"] for i in impls if f"scale.sweep.{key}.{i}" in raw
        }
        if points:
            what = "RSS" if key == "rss_mb" else "CPU"
            title = f"{what} against the number of telemetry devices (one thread each)"
            written.append(versus(directory / name, title, "telemetry devices", label, points))
    return [path for path in written if path is not None]
