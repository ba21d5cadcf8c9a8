"""Signal filters for sensor readings: PT1 low-pass, sliding-window median, and the 1€ filter.

``Pt1Filter``, ``MedianFilter`` and ``OneEuroFilter`` are the C++ classes of the compiled
extension ``agent._filters``. This module also holds their pure-Python references,
``PyPt1Filter``, ``PyMedianFilter`` and ``PyOneEuroFilter``: the same maths, messages, return
types and state dicts, line for line (one exception: the C++ ``Pt1Filter.update_many`` takes
four samples per step in a shorter arithmetic chain, a few ulps from one-by-one rounding).
They exist for comparison (the tests hold the two to 1e-9) and as the documented fallback: if
the extension cannot be imported, the three public names are the Python classes, a
``RuntimeWarning`` is issued, and :data:`NATIVE` is False.
Build the extension with ``pip install -e .[test]`` or ``scripts/test``.

Every filter follows the :class:`Filter` protocol:

* ``update(raw)`` filters one sample and returns the filtered value. The first update seeds
  the filter and returns ``raw`` unchanged.
* ``value`` is the current filtered value, ``None`` before the first update.
* ``reset()`` forgets all history (``value`` is ``None`` again).

and also offers:

* ``update_many(values)`` — a whole sequence at once. A 1-D buffer of doubles (``array('d')``,
  ``memoryview``, numpy ``float64``) gives an ``array('d')``; any other iterable of numbers gives
  a ``list[float]``. Every value is checked first; a bad one raises (``values[17] must be
  finite, got inf``) and leaves the state unchanged.
* ``get_state()`` / ``set_state(state)`` — the signal history (not the parameters) as a plain
  JSON-able dict, the same from C++ and Python, so a device can persist it across restarts.
* pickling and ``copy.copy`` (parameters and state).

Inputs must be real numbers (``int``, ``float``, any ``numbers.Real``); ``bool`` is a
``TypeError``, a non-finite value a ``ValueError``. Messages name the culprit, e.g.
``tau must be a finite number > 0, got -1.0``. Sensor values are assumed to be of sane
magnitude: near ``±1.8e308`` the arithmetic overflows (to ``inf``/``nan``) in both
implementations alike.

Thread safety: in C++ the GIL is held for the whole of every call, so concurrent calls cannot
corrupt memory; but each filter is one stream of state: one filter per device thread (the
framework runs each device's code on one thread). The Python references are no safer.
"""

from __future__ import annotations

import logging
import math
import numbers
import operator
import sys
import warnings
from array import array
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "MAX_WINDOW",
    "NATIVE",
    "Filter",
    "MedianFilter",
    "OneEuroFilter",
    "Pt1Filter",
    "PyMedianFilter",
    "PyOneEuroFilter",
    "PyPt1Filter",
]

_log = logging.getLogger(__name__)

#: The largest ``window`` a median filter accepts (each update costs O(window)).
MAX_WINDOW = 1_000_000
_STATE_VERSION = 1
# Struct formats of a native double, as buffers describe it (numpy says "<d" or "d").
_DOUBLE_FORMATS = frozenset(
    {"d", "@d", "=d", "<d"} if sys.byteorder == "little" else {"d", "@d", "=d", ">d", "!d"}
)


@runtime_checkable
class Filter(Protocol):
    """What every signal filter offers: ``update(raw) -> float``, ``value`` and ``reset()``.

    The first ``update`` seeds the filter and returns ``raw`` unchanged (there is no history
    to smooth against yet). ``value`` is ``None`` until then, and again after ``reset()``.
    """

    def update(self, raw: float) -> float:
        """Filter one sample and return the filtered value."""
        ...

    @property
    def value(self) -> float | None:
        """The current filtered value, or ``None`` before the first update."""
        ...

    def reset(self) -> None:
        """Forget all history."""
        ...


# --- number checks shared by the references (the C++ binding words them identically) -------


def _as_float(value: object, name: str) -> float:
    """``value`` as a float; ``TypeError`` for bool and non-numbers. Finiteness is not checked."""
    if type(value) is float:  # the common case first: single updates must stay cheap
        return value
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, not bool")
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"{name} is too large for a float") from None
    raise TypeError(f"{name} must be a number, not {type(value).__name__}")


def _finite(value: object, name: str) -> float:
    x = _as_float(value, name)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x!r}")
    return x


def _require_positive(x: float, name: str) -> None:
    if not (math.isfinite(x) and x > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {x!r}")


def _require_non_negative(x: float, name: str) -> None:
    if not (math.isfinite(x) and x >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")


def _as_window(window: object) -> int:
    if isinstance(window, bool):
        raise TypeError("window must be an integer, not bool")
    try:
        w = operator.index(window)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"window must be an integer, not {type(window).__name__}") from None
    if w < 1:
        raise ValueError(f"window must be an integer >= 1, got {w!r}")
    if w > MAX_WINDOW:
        raise ValueError(f"window must be an integer <= {MAX_WINDOW}, got {w!r}")
    return w


def _batch(values: object) -> tuple[list[float], bool]:
    """Every input of ``update_many`` as floats, and whether the input was a double buffer.

    All values are converted and checked before any is filtered (all-or-nothing).
    """
    is_buffer = False
    try:
        view = memoryview(values)  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        with view:
            if view.ndim == 1 and view.itemsize == 8 and view.format in _DOUBLE_FORMATS:
                xs = view.tolist()
                is_buffer = True
    if not is_buffer:
        try:
            items = iter(values)  # type: ignore[call-overload]
        except TypeError:
            raise TypeError(
                f"values must be an iterable of numbers, not {type(values).__name__}"
            ) from None
        xs = [_as_float(v, f"values[{i}]") for i, v in enumerate(items)]
    for i, x in enumerate(xs):
        if not math.isfinite(x):
            raise ValueError(f"values[{i}] must be finite, got {x!r}")
    return xs, is_buffer


def _check_header(state: object, kind: str) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, not {type(state).__name__}")
    kind_seen = _state_key(state, "filter")
    if not (isinstance(kind_seen, str) and kind_seen == kind):
        raise ValueError(f"state['filter'] must be {kind!r}, got {kind_seen!r}")
    version = _state_key(state, "version")
    if type(version) is not int or version != _STATE_VERSION:
        raise ValueError(f"state['version'] must be {_STATE_VERSION}, got {version!r}")
    return state


def _state_key(state: dict[str, Any], key: str) -> Any:
    try:
        return state[key]
    except KeyError:
        raise ValueError(f"state is missing the key '{key}'") from None


def _state_optional_float(state: dict[str, Any], key: str) -> float | None:
    v = _state_key(state, key)
    return None if v is None else _finite(v, f"state['{key}']")


def _header(kind: str) -> dict[str, Any]:
    return {"filter": kind, "version": _STATE_VERSION}


# --- the references ---------------------------------------------------------------------------


class _Reference:
    """What the three pure-Python references share: the public calls around ``_step``."""

    def _step(self, x: float) -> float:
        raise NotImplementedError

    def _params(self) -> tuple[float, ...]:
        """The constructor arguments, for pickling and copying."""
        raise NotImplementedError

    def get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def update(self, raw: float) -> float:
        """Filter one sample; the first one seeds the filter and comes back unchanged."""
        return self._step(_finite(raw, "raw"))

    def update_many(self, values: Iterable[float]) -> list[float] | array[float]:
        """Filter a sequence: ``array('d')`` in → ``array('d')`` out, else ``list[float]``."""
        xs, is_buffer = _batch(values)
        out = [self._step(x) for x in xs]
        return array("d", out) if is_buffer else out

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle and copy as (parameters, state dict), like the C++ class: the copy owns its
        # own history.
        return (type(self), self._params(), self.get_state())

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.set_state(state)


class PyPt1Filter(_Reference):
    """First-order low-pass (PT1) filter, pure Python reference of :class:`Pt1Filter`.

    ``alpha = dt / (tau + dt)``; each update does ``y += alpha * (x - y)``. ``tau`` and ``dt``
    (same time unit) must be finite and > 0. ``value`` is ``None`` before the first update.
    One filter per device thread.
    """

    def __init__(self, tau: float, dt: float) -> None:
        t = _as_float(tau, "tau")
        d = _as_float(dt, "dt")
        _require_positive(t, "tau")
        _require_positive(d, "dt")
        self._tau = t
        self._dt = d
        self._alpha = d / (t + d)
        self._y: float | None = None

    @property
    def tau(self) -> float:
        return self._tau

    @property
    def dt(self) -> float:
        return self._dt

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def value(self) -> float | None:
        """The current filtered value, or ``None`` before the first update."""
        return self._y

    def _step(self, x: float) -> float:
        y = self._y
        if y is None:
            self._y = x
            return x
        y += self._alpha * (x - y)
        self._y = y
        return y

    def reset(self) -> None:
        """Forget all history."""
        self._y = None

    def get_state(self) -> dict[str, Any]:
        """``{'filter': 'pt1', 'version': 1, 'y': float | None}``."""
        return {**_header("pt1"), "y": self._y}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state` dict; a bad one raises and changes nothing."""
        self._y = _state_optional_float(_check_header(state, "pt1"), "y")

    def _params(self) -> tuple[float, ...]:
        return (self._tau, self._dt)

    def __repr__(self) -> str:
        return f"PyPt1Filter(tau={self._tau!r}, dt={self._dt!r})"


class PyMedianFilter(_Reference):
    """Sliding-window median filter, pure Python reference of :class:`MedianFilter`.

    The median of the last ``window`` samples (mean of the two middle ones for an even count;
    during warm-up, of the samples seen so far). A deque keeps arrival order and a sorted list
    is kept up to date with bisect: O(window) per update, never a re-sort.
    ``value`` is ``None`` before the first update. One filter per device thread.
    """

    def __init__(self, window: int) -> None:
        self._window = _as_window(window)
        self._ring: deque[float] = deque()
        self._sorted: list[float] = []

    @property
    def window(self) -> int:
        return self._window

    def _median(self) -> float:
        s = self._sorted
        n = len(s)
        mid = n // 2
        if n % 2:
            return s[mid]
        # Halving is exact, so a/2 + b/2 equals (a + b)/2 rounded once, without its overflow.
        return s[mid - 1] / 2 + s[mid] / 2

    @property
    def value(self) -> float | None:
        """The current median, or ``None`` before the first update."""
        return self._median() if self._sorted else None

    def _step(self, x: float) -> float:
        ring = self._ring
        s = self._sorted
        if len(ring) == self._window:
            del s[bisect_left(s, ring.popleft())]
        ring.append(x)
        insort(s, x)
        return self._median()

    def reset(self) -> None:
        """Forget all history."""
        self._ring.clear()
        self._sorted.clear()

    def get_state(self) -> dict[str, Any]:
        """``{'filter': 'median', 'version': 1, 'samples': [oldest, ..., newest]}``."""
        return {**_header("median"), "samples": list(self._ring)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state` dict; a smaller window keeps the newest samples."""
        samples = _state_key(_check_header(state, "median"), "samples")
        if not isinstance(samples, (list, tuple)):
            raise TypeError(f"state['samples'] must be a list, not {type(samples).__name__}")
        xs = [_finite(v, f"state['samples'][{i}]") for i, v in enumerate(samples)]
        kept = xs[len(xs) - min(len(xs), self._window) :]
        self._ring = deque(kept)
        self._sorted = sorted(kept)

    def _params(self) -> tuple[float, ...]:
        return (self._window,)

    def __repr__(self) -> str:
        return f"PyMedianFilter(window={self._window!r})"


class PyOneEuroFilter(_Reference):
    """The 1€ filter (Casiez, Roussel, Vogel 2012), pure Python reference of :class:`OneEuroFilter`.

    With a fixed period ``dt``: ``alpha(fc) = dt / (dt + 1/(2π·fc))``. The derivative
    ``(x - x_prev) / dt`` — ``x_prev`` is the previous *raw* sample, as in Casiez's reference
    code (``LowPassFilter.lastValue()`` is the last raw input) — is low-passed with
    ``d_cutoff``; then ``fc = min_cutoff + beta·|dx_hat|`` and ``y`` is low-passed with
    ``alpha(fc)``. The first update seeds ``y = x_prev = x``, ``dx_hat = 0``. Cutoffs (Hz) and
    ``dt`` (s) must be finite and > 0, ``beta`` finite and >= 0. ``value`` is ``None`` before
    the first update. One filter per device thread.
    """

    def __init__(
        self,
        min_cutoff: float = 1.0,
        beta: float = 0.0,
        d_cutoff: float = 1.0,
        dt: float = 1.0,
    ) -> None:
        mc = _as_float(min_cutoff, "min_cutoff")
        b = _as_float(beta, "beta")
        dc = _as_float(d_cutoff, "d_cutoff")
        d = _as_float(dt, "dt")
        _require_positive(mc, "min_cutoff")
        _require_non_negative(b, "beta")
        _require_positive(dc, "d_cutoff")
        _require_positive(d, "dt")
        self._min_cutoff = mc
        self._beta = b
        self._d_cutoff = dc
        self._dt = d
        # The same constants, computed the same way, as cpp/filters.cpp: both round alike.
        self._inv_dt = 1.0 / d
        self._two_pi_dt = 2.0 * math.pi * d
        self._alpha_d = self._smoothing(dc)
        self._y: float | None = None  # the filtered value
        self._dx = 0.0  # the smoothed derivative dx_hat
        self._x: float | None = None  # the previous raw sample

    @property
    def min_cutoff(self) -> float:
        return self._min_cutoff

    @property
    def beta(self) -> float:
        return self._beta

    @property
    def d_cutoff(self) -> float:
        return self._d_cutoff

    @property
    def dt(self) -> float:
        return self._dt

    @property
    def value(self) -> float | None:
        """The current filtered value, or ``None`` before the first update."""
        return self._y

    def _smoothing(self, cutoff: float) -> float:
        # dt / (dt + 1/(2π·fc)) multiplied through by 2π·fc: one division instead of two.
        t = self._two_pi_dt * cutoff
        return t / (t + 1.0)

    def _step(self, x: float) -> float:
        x_prev = self._x
        if x_prev is None:
            self._y = self._x = x
            self._dx = 0.0
            return x
        dx_hat = self._dx
        dx_hat += self._alpha_d * ((x - x_prev) * self._inv_dt - dx_hat)
        y: float = self._y  # type: ignore[assignment]  # seeded together with _x
        y += self._smoothing(self._min_cutoff + self._beta * abs(dx_hat)) * (x - y)
        self._y = y
        self._dx = dx_hat
        self._x = x
        return y

    def reset(self) -> None:
        """Forget all history."""
        self._y = None
        self._dx = 0.0
        self._x = None

    def get_state(self) -> dict[str, Any]:
        """``{'filter': 'one_euro', 'version': 1, 'y': ..., 'dx': ..., 'x': ...}``.

        ``y`` is the filtered value, ``dx`` the smoothed derivative, ``x`` the previous raw
        sample: all three floats, or all ``None`` before the first update.
        """
        seeded = self._y is not None
        return {
            **_header("one_euro"),
            "y": self._y,
            "dx": self._dx if seeded else None,
            "x": self._x,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state` dict; a bad one raises and changes nothing."""
        y = _state_optional_float(_check_header(state, "one_euro"), "y")
        if y is None:
            for key in ("dx", "x"):
                v = _state_key(state, key)
                if v is not None:
                    raise ValueError(
                        f"state[{key!r}] must be None when state['y'] is None, got {v!r}"
                    )
            self.reset()
            return
        dx_hat = _finite(_state_key(state, "dx"), "state['dx']")
        x = _finite(_state_key(state, "x"), "state['x']")
        self._y = y
        self._dx = dx_hat
        self._x = x

    def _params(self) -> tuple[float, ...]:
        return (self._min_cutoff, self._beta, self._d_cutoff, self._dt)

    def __repr__(self) -> str:
        return (
            f"PyOneEuroFilter(min_cutoff={self._min_cutoff!r}, beta={self._beta!r}, "
            f"d_cutoff={self._d_cutoff!r}, dt={self._dt!r})"
        )


# --- the public names: C++ when built, else the references -----------------------------------

_BUILD_HINT = (
    "agent._filters (the C++ filters) is not built; using the slower pure-Python filters. "
    "Build it with `pip install -e .[test]` or `scripts/test`."
)

try:
    from agent import _filters
except ImportError as exc:  # the documented fallback: same behaviour, slower
    NATIVE = False
    Pt1Filter: type = PyPt1Filter
    MedianFilter: type = PyMedianFilter
    OneEuroFilter: type = PyOneEuroFilter
    _log.warning("%s (%s)", _BUILD_HINT, exc)
    warnings.warn(_BUILD_HINT, RuntimeWarning, stacklevel=2)
else:
    NATIVE = True
    Pt1Filter = _filters.Pt1Filter
    MedianFilter = _filters.MedianFilter
    OneEuroFilter = _filters.OneEuroFilter
