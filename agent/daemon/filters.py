"""Signal filters on state fields, from the config file's ``filter`` table.

::

    [[device]]
    type = "w1_temperature"
    filter = { temperature = { median = 5 }, power = { pt1 = 30 } }

:func:`filtered` wraps a telemetry handler: each named numeric field of the state it returns
goes through its own filter (the C++ filters of :mod:`agent.filters`) before the publish
strategy sees it. ``median = N`` is a median of the last N readings, ``pt1 = tau`` a
first-order low-pass with time constant ``tau`` seconds, ``one_euro = {min_cutoff, beta,
d_cutoff}`` the 1€ filter; the time step is the device's interval. A field that is missing
or not a number in a reading passes through untouched (and the filter keeps its state).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from agent.daemon.types import FieldFilter
from agent.filters import MedianFilter, OneEuroFilter, Pt1Filter

__all__ = ["FILTER_KINDS", "filtered", "make_filter"]

FILTER_KINDS = ("median", "pt1", "one_euro")


def make_filter(spec: FieldFilter, dt: float) -> Any:
    """The filter object for ``spec`` (raises ValueError for bad parameters)."""
    p = dict(spec.params)
    if spec.kind == "median":
        return MedianFilter(int(p["window"]))
    if spec.kind == "pt1":
        return Pt1Filter(float(p["tau"]), dt)
    if spec.kind == "one_euro":
        return OneEuroFilter(
            float(p.get("min_cutoff", 1.0)),
            float(p.get("beta", 0.0)),
            float(p.get("d_cutoff", 1.0)),
            dt,
        )
    raise ValueError(f"unknown filter {spec.kind!r}: use one of {', '.join(FILTER_KINDS)}")


def filtered(
    handler: Callable[..., Any], filters: Sequence[FieldFilter], dt: float
) -> Callable[..., Any]:
    """``handler`` with each field of its returned state filtered (see the module)."""
    if not filters:
        return handler
    live = [(f.field.split("."), make_filter(f, dt)) for f in filters]

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = handler(*args, **kwargs)
        if isinstance(state, dict):
            for path, filt in live:
                _apply(state, path, filt)
        return state

    return wrapper


def _apply(state: dict[str, Any], path: list[str], filt: Any) -> None:
    node: Any = state
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return
    value = node.get(path[-1])
    if isinstance(value, int | float) and not isinstance(value, bool):
        node[path[-1]] = filt.update(float(value))
