"""Known answers, errors, state and API of the signal filters, for C++ and Python alike.

Every test that takes ``impl`` runs twice: once on the C++ classes (agent.Pt1Filter, ...) and
once on the pure-Python references (agent.filters.PyPt1Filter, ...). The expected numbers
were worked out by hand in the comments; the expected messages are the exact text.
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import subprocess
import sys
from array import array
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent import filters

NATIVE_IMPL = SimpleNamespace(
    name="cpp",
    Pt1=filters.Pt1Filter,
    Median=filters.MedianFilter,
    OneEuro=filters.OneEuroFilter,
)
PY_IMPL = SimpleNamespace(
    name="py",
    Pt1=filters.PyPt1Filter,
    Median=filters.PyMedianFilter,
    OneEuro=filters.PyOneEuroFilter,
)


@pytest.fixture(params=[NATIVE_IMPL, PY_IMPL], ids=lambda i: i.name)
def impl(request: pytest.FixtureRequest) -> SimpleNamespace:
    return request.param


# One cutoff that makes the 1€ smoothing factor a round number: with dt = 1,
# alpha(1/(2π)) = 1 / (1 + 1) = 0.5.
HALF = 1.0 / (2.0 * math.pi)


def approx(values: list[float]) -> Any:
    return pytest.approx(values, rel=1e-12, abs=1e-12)


# --- the extension is really there -------------------------------------------------------------


def test_native_extension_is_built() -> None:
    assert filters.NATIVE, (
        "agent._filters (the C++ filters) is not importable, so agent.filters fell back to the "
        "pure-Python references. Build it: `pip install -e .[test]` (PyPI) or `scripts/test` "
        "(Debian's cmake + pybind11)."
    )
    from agent import _filters

    assert filters.Pt1Filter is _filters.Pt1Filter
    assert filters.MedianFilter is _filters.MedianFilter
    assert filters.OneEuroFilter is _filters.OneEuroFilter
    assert _filters.MAX_WINDOW == filters.MAX_WINDOW


def test_fallback_to_python_warns_and_clears_native() -> None:
    # A fresh interpreter in which the extension cannot be imported.
    script = (
        "import sys, warnings\n"
        "sys.modules['agent._filters'] = None\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from agent import filters\n"
        "assert not filters.NATIVE\n"
        "assert filters.Pt1Filter is filters.PyPt1Filter\n"
        "assert filters.MedianFilter is filters.PyMedianFilter\n"
        "assert filters.OneEuroFilter is filters.PyOneEuroFilter\n"
        "msgs = [str(w.message) for w in caught if w.category is RuntimeWarning]\n"
        "assert any('pip install -e .[test]' in m for m in msgs), msgs\n"
        "print('fallback ok')\n"
    )
    package_root = str(Path(filters.__file__).resolve().parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=package_root,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "fallback ok" in result.stdout


@pytest.mark.parametrize("no_simd", [None, "1", "0"])
def test_no_simd_variable_pins_the_portable_median(no_simd: str | None) -> None:
    # AGENT_FILTERS_NO_SIMD=1, read once when the extension is imported, keeps
    # MedianFilter.update_many on the portable path; otherwise the widest path the CPU has
    # is chosen (on x86-64: AVX-512, else AVX2; elsewhere portable). A fresh interpreter,
    # since the variable only counts at import.
    script = (
        "from agent import _filters\n"
        "print(_filters._simd_path(), ' '.join(_filters._simd_paths()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AGENT_FILTERS_NO_SIMD"}
    if no_simd is not None:
        env["AGENT_FILTERS_NO_SIMD"] = no_simd
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=Path(filters.__file__).resolve().parent.parent,  # the agent this suite imports
        check=False,
    )
    assert result.returncode == 0, result.stderr
    chosen, *available = result.stdout.split()
    assert available[0] == "portable"
    assert chosen == ("portable" if no_simd == "1" else available[-1])


def test_all_filters_satisfy_the_protocol(impl: SimpleNamespace) -> None:
    for f in (impl.Pt1(1.0, 0.1), impl.Median(3), impl.OneEuro()):
        assert isinstance(f, filters.Filter)
    assert not isinstance(object(), filters.Filter)


def test_thread_safety_is_documented() -> None:
    for cls in (filters.Pt1Filter, filters.MedianFilter, filters.OneEuroFilter):
        assert "device thread" in (cls.__doc__ or "")
    assert "one filter per device thread" in (filters.__doc__ or "")


# --- known answers -----------------------------------------------------------------------------


def test_pt1_known_answers(impl: SimpleNamespace) -> None:
    f = impl.Pt1(1.0, 1.0)  # alpha = 1 / (1 + 1) = 0.5
    assert f.alpha == 0.5
    assert f.value is None
    # seed 10; 10 + 0.5*(20-10) = 15; 15 + 0.5*(20-15) = 17.5
    assert [f.update(10.0), f.update(20.0), f.update(20.0)] == approx([10.0, 15.0, 17.5])
    assert f.value == 17.5
    g = impl.Pt1(tau=3, dt=1)  # alpha = 1/4: 4; 4 + (8-4)/4 = 5; 5 + (0-5)/4 = 3.75
    assert g.update_many([4, 8, 0]) == approx([4.0, 5.0, 3.75])
    assert (g.tau, g.dt, g.alpha) == (3.0, 1.0, 0.25)


def test_pt1_update_many_four_samples_per_step(impl: SimpleNamespace) -> None:
    # The C++ batch takes four samples per step in delta form (cpp/filters.cpp). With
    # alpha = b = 1/2 every coefficient is a power of two, so both forms are exact here:
    # one by one from the seed 0: 0 + 16/2 = 8, 8 + 8/2 = 12, 12 + 4/2 = 14, 14 + 2/2 = 15,
    # then 15 + (0 - 15)/2 = 7.5. In delta form from y0 = 0 with d = 16, 16, 16, 16:
    # e1 = 16/2 = 8, e2 = 16/4 + 16/2 = 12, e3 = 16/8 + 16/4 + 16/2 = 14,
    # e4 = (16/16 + 16/8) + (16/4 + 16/2) = 15; the fifth sample goes one by one: 7.5.
    f = impl.Pt1(1.0, 1.0)
    assert f.update_many([0.0, 16.0, 16.0, 16.0, 16.0, 0.0]) == [0.0, 8.0, 12.0, 14.0, 15.0, 7.5]
    assert f.value == 7.5


def test_pt1_constant_input_stays_exactly_constant(impl: SimpleNamespace) -> None:
    c = 0.1 + 0.2  # 0.30000000000000004: no round number to hide behind
    f = impl.Pt1(0.3, 0.07)
    assert f.update(c) == c
    assert all(f.update(c) == c for _ in range(7))
    assert f.update_many([c] * 1001) == [c] * 1001
    assert list(f.update_many(array("d", [c] * 9))) == [c] * 9
    assert f.value == c


def test_pt1_update_many_agrees_with_update_in_any_chunking(impl: SimpleNamespace) -> None:
    xs = [math.sin(i * 0.37) * 1e3 + (i % 7) * 13.0 - 40.0 for i in range(500)]
    one_by_one = [f.update(x) for f in [impl.Pt1(0.45, 0.1)] for x in xs]
    batched = impl.Pt1(0.45, 0.1)
    out: list[float] = []
    start, size = 0, 1
    while start < len(xs):  # chunks of 1, 2, ..., 9, 1, 2, ...: every remainder mod 4
        out += batched.update_many(xs[start : start + size])
        start, size = start + size, size % 9 + 1
    scale = max(abs(x) for x in xs)
    for a, e in zip(out, one_by_one, strict=True):
        assert math.isclose(a, e, rel_tol=1e-12, abs_tol=1e-14 * scale)


def test_median_known_answers(impl: SimpleNamespace) -> None:
    f = impl.Median(3)
    # warm-up {5} -> 5, {5,1} -> 3, {5,1,9} -> 5; then {1,9,2} -> 2, {9,2,2} -> 2,
    # {2,2,10} -> 2, {2,10,11} -> 10
    out = [f.update(x) for x in [5.0, 1.0, 9.0, 2.0, 2.0, 10.0, 11.0]]
    assert out == [5.0, 3.0, 5.0, 2.0, 2.0, 2.0, 10.0]
    even = impl.Median(window=4)
    # {4} 4, {4,1} 2.5, {4,1,3} 3, {4,1,3,2} 2.5, {1,3,2,100} 2.5, {3,2,100,-7} 2.5
    assert even.update_many([4, 1, 3, 2, 100, -7]) == [4.0, 2.5, 3.0, 2.5, 2.5, 2.5]
    one = impl.Median(1)
    assert one.update_many([3.0, -1.0, 8.0]) == [3.0, -1.0, 8.0]
    assert even.window == 4


def _brute_median(xs: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(xs)):
        win = sorted(xs[max(0, i + 1 - window) : i + 1])
        n = len(win)
        out.append(win[n // 2] if n % 2 else win[n // 2 - 1] / 2 + win[n // 2] / 2)
    return out


# 100 and 101 straddle the C++ switch from a full pass to an in-place replacement.
@pytest.mark.parametrize("window", [1, 2, 5, 6, 31, 100, 101, 150])
def test_median_matches_a_sort_through_reset_and_restore(
    impl: SimpleNamespace, window: int
) -> None:
    # Many ties (values from a small set) and both directions of replacement.
    xs = [float((i * 7919) % 13 - 6) for i in range(700)]
    f = impl.Median(window)
    assert f.update_many(xs[:250]) == _brute_median(xs[:250], window)
    f.reset()
    assert [f.update(x) for x in xs[250:450]] == _brute_median(xs[250:450], window)
    g = impl.Median(window)
    g.set_state(f.get_state())  # a full window: the next sample replaces the oldest at once
    assert g.update_many(xs[450:]) == _brute_median(xs[250:], window)[200:]


def test_median_of_huge_values_does_not_overflow(impl: SimpleNamespace) -> None:
    f = impl.Median(2)
    assert f.update_many([1e308, 1e308]) == [1e308, 1e308]


def test_one_euro_known_answers(impl: SimpleNamespace) -> None:
    f = impl.OneEuro(min_cutoff=HALF, beta=0.0, d_cutoff=HALF, dt=1.0)
    # seed 10 (x_prev 10, dx_hat 0); x=20: dx = (20-10)/1 = 10, dx_hat = 0 + 0.5*(10-0) = 5,
    # beta 0 so alpha 0.5: y = 10 + 0.5*(20-10) = 15;
    # x=20: dx = (20-20)/1 = 0 (from the raw 20), dx_hat = 5 + 0.5*(0-5) = 2.5,
    # y = 15 + 0.5*(20-15) = 17.5
    assert [f.update(10), f.update(20), f.update(20)] == approx([10.0, 15.0, 17.5])
    assert f.get_state()["dx"] == pytest.approx(2.5)
    assert f.get_state()["x"] == 20.0
    # beta = HALF/5. x=20: dx_hat = 5, fc = HALF + (HALF/5)*5 = 2*HALF, alpha = 2/(2+1) = 2/3,
    # y = 10 + (2/3)*10 = 50/3; x=20: dx = 0, dx_hat = 2.5, fc = HALF + (HALF/5)*2.5 = 1.5*HALF,
    # alpha = 1.5/(1.5+1) = 0.6, y = 50/3 + 0.6*(20 - 50/3) = 50/3 + 2 = 56/3
    g = impl.OneEuro(HALF, HALF / 5, HALF, 1.0)
    assert g.update_many([10.0, 20.0, 20.0]) == approx([10.0, 50.0 / 3.0, 56.0 / 3.0])
    # Defaults (1, 0, 1, 1): alpha(1) = 1 / (1 + 1/(2π)) = 2π / (2π + 1)
    d = impl.OneEuro()
    assert d.update_many([0.0, 1.0]) == approx([0.0, 2 * math.pi / (2 * math.pi + 1)])
    assert (d.min_cutoff, d.beta, d.d_cutoff, d.dt) == (1.0, 0.0, 1.0, 1.0)


def test_one_euro_uses_the_previous_raw_sample_for_the_derivative(impl: SimpleNamespace) -> None:
    f = impl.OneEuro(HALF, 0.0, HALF, 1.0)
    f.update_many([0.0, 10.0])  # y = 5, dx_hat = 0.5*(10 - 0) = 5, x_prev = 10
    f.update(10.0)
    # From the raw 10: dx = 0, dx_hat = 5 + 0.5*(0 - 5) = 2.5. (From the filtered 5 it would
    # be dx = 5 and dx_hat would stay 5.)
    assert f.get_state()["dx"] == pytest.approx(2.5)
    assert f.value == pytest.approx(7.5)  # 5 + 0.5*(10 - 5)


def test_one_euro_dt_scales_the_derivative(impl: SimpleNamespace) -> None:
    # dt = 0.5 and cutoffs HALF: t = 2π·0.5·HALF = 0.5, alpha = 0.5/1.5 = 1/3.
    # x=4 after the seed 0: dx = (4-0)/0.5 = 8, dx_hat = 8/3; beta = 0: y = 4/3.
    f = impl.OneEuro(HALF, 0.0, HALF, 0.5)
    assert f.update_many([0.0, 4.0]) == approx([0.0, 4.0 / 3.0])
    assert f.get_state()["dx"] == pytest.approx(8.0 / 3.0)


@pytest.mark.parametrize("kind", ["Pt1", "Median", "OneEuro"])
def test_value_is_none_until_seeded_and_after_reset(impl: SimpleNamespace, kind: str) -> None:
    make = {"Pt1": lambda: impl.Pt1(2.0, 0.5), "Median": lambda: impl.Median(3)}.get(
        kind, lambda: impl.OneEuro(1.0, 0.5)
    )
    f = make()
    assert f.value is None
    assert f.update(7.25) == 7.25  # the first update seeds and returns raw
    assert f.value == 7.25
    f.update(100.0)
    assert f.reset() is None
    assert f.value is None
    assert f.update(-3.5) == -3.5
    assert f.update_many([]) == []
    assert f.value == -3.5


def test_number_types_accepted(impl: SimpleNamespace) -> None:
    f = impl.Pt1(Fraction(1, 1), 1)
    assert f.tau == 1.0
    assert f.update(Fraction(1, 2)) == 0.5
    assert f.update(3) == 1.75

    class Index:
        def __index__(self) -> int:
            return 3

    assert impl.Median(Index()).window == 3


# --- update_many -------------------------------------------------------------------------------


def test_update_many_return_types(impl: SimpleNamespace) -> None:
    f = impl.Pt1(1.0, 1.0)
    assert type(f.update_many([1.0, 2])) is list
    assert type(f.update_many((1.0,))) is list
    assert type(f.update_many(x for x in [1.0, 2.0])) is list
    out = f.update_many(array("d", [1.0, 2.0]))
    assert type(out) is array and out.typecode == "d"
    assert type(f.update_many(memoryview(array("d", [1.0])))) is array
    assert type(f.update_many(array("f", [1.0]))) is list  # not doubles: a plain iterable
    empty = f.update_many(array("d"))
    assert type(empty) is array and len(empty) == 0


def test_update_many_strided_buffer(impl: SimpleNamespace) -> None:
    data = array("d", [1.0, 99.0, 3.0, 99.0, 5.0])
    strided = memoryview(data)[::2]  # 1, 3, 5: not contiguous
    assert list(impl.Median(2).update_many(strided)) == [1.0, 2.0, 4.0]


def test_update_many_is_all_or_nothing(impl: SimpleNamespace) -> None:
    f = impl.OneEuro(1.0, 0.1)
    f.update_many([1.0, 2.0])
    before = f.get_state()
    values = [0.5] * 17 + [math.inf, 1.0]
    with pytest.raises(ValueError, match=r"^values\[17\] must be finite, got inf$"):
        f.update_many(values)
    with pytest.raises(ValueError, match=r"^values\[2\] must be finite, got nan$"):
        f.update_many(array("d", [1.0, 2.0, math.nan]))
    with pytest.raises(TypeError, match=r"^values\[1\] must be a number, not bool$"):
        f.update_many([1.0, True])
    with pytest.raises(TypeError, match=r"^values\[0\] must be a number, not str$"):
        f.update_many("12")
    with pytest.raises(TypeError, match=r"^values must be an iterable of numbers, not int$"):
        f.update_many(5)  # type: ignore[arg-type]
    assert f.get_state() == before


# --- bad parameters and inputs -----------------------------------------------------------------

BAD_PARAMS = [
    ("Pt1", (-1.0, 1.0), {}, ValueError, "tau must be a finite number > 0, got -1.0"),
    ("Pt1", (0, 1.0), {}, ValueError, "tau must be a finite number > 0, got 0.0"),
    ("Pt1", (math.nan, 1.0), {}, ValueError, "tau must be a finite number > 0, got nan"),
    ("Pt1", (1.0, math.inf), {}, ValueError, "dt must be a finite number > 0, got inf"),
    ("Pt1", (True, 1.0), {}, TypeError, "tau must be a number, not bool"),
    ("Pt1", (1.0, "0.1"), {}, TypeError, "dt must be a number, not str"),
    ("Pt1", (1.0, None), {}, TypeError, "dt must be a number, not NoneType"),
    ("Pt1", (10**400, 1.0), {}, ValueError, "tau is too large for a float"),
    ("Median", (0,), {}, ValueError, "window must be an integer >= 1, got 0"),
    ("Median", (-5,), {}, ValueError, "window must be an integer >= 1, got -5"),
    ("Median", (-(10**30),), {}, ValueError, f"window must be an integer >= 1, got {-(10**30)}"),
    ("Median", (10**30,), {}, ValueError, f"window must be an integer <= 1000000, got {10**30}"),
    ("Median", (3.0,), {}, TypeError, "window must be an integer, not float"),
    ("Median", (False,), {}, TypeError, "window must be an integer, not bool"),
    ("OneEuro", (), {"min_cutoff": 0.0}, ValueError, "min_cutoff must be a finite number > 0"),
    ("OneEuro", (), {"beta": -0.5}, ValueError, "beta must be a finite number >= 0, got -0.5"),
    ("OneEuro", (), {"beta": True}, TypeError, "beta must be a number, not bool"),
    ("OneEuro", (), {"d_cutoff": -math.inf}, ValueError, "d_cutoff must be a finite number > 0"),
    ("OneEuro", (), {"dt": -2}, ValueError, "dt must be a finite number > 0, got -2.0"),
    ("OneEuro", (), {"dt": [1.0]}, TypeError, "dt must be a number, not list"),
]


@pytest.mark.parametrize(
    ("kind", "args", "kwargs", "error", "message"),
    BAD_PARAMS,
    ids=[f"{p[0]}-{p[4][:30]}" for p in BAD_PARAMS],
)
def test_bad_parameters_are_named(
    impl: SimpleNamespace,
    kind: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error) as caught:
        getattr(impl, kind)(*args, **kwargs)
    assert type(caught.value) is error
    assert str(caught.value).startswith(message)


BAD_RAW = [
    (math.nan, ValueError, "raw must be finite, got nan"),
    (math.inf, ValueError, "raw must be finite, got inf"),
    (-math.inf, ValueError, "raw must be finite, got -inf"),
    (True, TypeError, "raw must be a number, not bool"),
    ("1.0", TypeError, "raw must be a number, not str"),
    (None, TypeError, "raw must be a number, not NoneType"),
    (1j, TypeError, "raw must be a number, not complex"),
    (10**400, ValueError, "raw is too large for a float"),
]


@pytest.mark.parametrize(("raw", "error", "message"), BAD_RAW, ids=[m for _, _, m in BAD_RAW])
def test_bad_input_is_rejected_and_state_kept(
    impl: SimpleNamespace, raw: Any, error: type[Exception], message: str
) -> None:
    for f in (impl.Pt1(1.0, 1.0), impl.Median(3), impl.OneEuro(1.0, 0.3)):
        f.update_many([1.0, 4.0])
        before = f.get_state()
        with pytest.raises(error) as caught:
            f.update(raw)
        assert type(caught.value) is error
        assert str(caught.value) == message
        assert f.get_state() == before


# --- state round trip --------------------------------------------------------------------------


def test_state_formats(impl: SimpleNamespace) -> None:
    p, m, o = impl.Pt1(1.0, 1.0), impl.Median(3), impl.OneEuro(HALF, 0.0, HALF, 1.0)
    assert p.get_state() == {"filter": "pt1", "version": 1, "y": None}
    assert m.get_state() == {"filter": "median", "version": 1, "samples": []}
    blank = {"filter": "one_euro", "version": 1, "y": None, "dx": None, "x": None}
    assert o.get_state() == blank
    p.update_many([1.0, 2.0])
    m.update_many([4.0, 1.0, 3.0, 2.0])
    o.update_many([10.0, 20.0])
    assert p.get_state() == {"filter": "pt1", "version": 1, "y": 1.5}
    assert m.get_state() == {"filter": "median", "version": 1, "samples": [1.0, 3.0, 2.0]}
    assert o.get_state() == {"filter": "one_euro", "version": 1, "y": 15.0, "dx": 5.0, "x": 20.0}
    for f in (p, m, o):
        state = json.loads(json.dumps(f.get_state()))
        fresh = type(f)(*_params(f))
        fresh.set_state(state)
        assert fresh.get_state() == f.get_state()
        assert fresh.update(3.0) == f.update(3.0)


def _params(f: Any) -> tuple[Any, ...]:
    if hasattr(f, "tau"):
        return (f.tau, f.dt)
    if hasattr(f, "window"):
        return (f.window,)
    return (f.min_cutoff, f.beta, f.d_cutoff, f.dt)


def test_state_restores_unseeded(impl: SimpleNamespace) -> None:
    for f in (impl.Pt1(1.0, 1.0), impl.Median(3), impl.OneEuro()):
        blank = f.get_state()
        f.update_many([1.0, 2.0])
        f.set_state(blank)
        assert f.value is None
        assert f.update(9.0) == 9.0


def test_median_restore_into_smaller_window_keeps_newest(impl: SimpleNamespace) -> None:
    big = impl.Median(5)
    big.update_many([1.0, 2.0, 3.0, 40.0, 50.0])
    small = impl.Median(2)
    small.set_state(big.get_state())
    assert small.get_state()["samples"] == [40.0, 50.0]
    assert small.value == 45.0
    assert small.update(0.0) == 25.0  # {50, 0}


BAD_STATES = [
    ("Pt1", [1, 2], TypeError, "state must be a dict, not list"),
    ("Pt1", {"version": 1, "y": 1.0}, ValueError, "state is missing the key 'filter'"),
    ("Pt1", {"filter": "median", "version": 1, "y": 1.0}, ValueError,
     "state['filter'] must be 'pt1', got 'median'"),
    ("Pt1", {"filter": "pt1", "version": 2, "y": 1.0}, ValueError,
     "state['version'] must be 1, got 2"),
    ("Pt1", {"filter": "pt1", "version": True, "y": 1.0}, ValueError,
     "state['version'] must be 1, got True"),
    ("Pt1", {"filter": "pt1", "version": 1}, ValueError, "state is missing the key 'y'"),
    ("Pt1", {"filter": "pt1", "version": 1, "y": math.nan}, ValueError,
     "state['y'] must be finite, got nan"),
    ("Pt1", {"filter": "pt1", "version": 1, "y": False}, TypeError,
     "state['y'] must be a number, not bool"),
    ("Median", {"filter": "median", "version": 1, "samples": "123"}, TypeError,
     "state['samples'] must be a list, not str"),
    ("Median", {"filter": "median", "version": 1, "samples": [1.0, math.inf]}, ValueError,
     "state['samples'][1] must be finite, got inf"),
    ("OneEuro", {"filter": "one_euro", "version": 1, "y": None, "dx": 0.5, "x": None},
     ValueError, "state['dx'] must be None when state['y'] is None, got 0.5"),
    ("OneEuro", {"filter": "one_euro", "version": 1, "y": None, "dx": None, "x": 2.0},
     ValueError, "state['x'] must be None when state['y'] is None, got 2.0"),
    ("OneEuro", {"filter": "one_euro", "version": 1, "y": None, "dx": None}, ValueError,
     "state is missing the key 'x'"),
    ("OneEuro", {"filter": "one_euro", "version": 1, "y": 1.0, "dx": None, "x": 1.0}, TypeError,
     "state['dx'] must be a number, not NoneType"),
    ("OneEuro", {"filter": "one_euro", "version": 1, "y": 1.0, "dx": -math.inf, "x": 1.0},
     ValueError, "state['dx'] must be finite, got -inf"),
    ("OneEuro", {"filter": "one_euro", "version": 1, "y": 1.0, "x": 1.0}, ValueError,
     "state is missing the key 'dx'"),
    ("OneEuro", {"filter": "one_euro", "version": 1, "y": 1.0, "dx": 0.0, "x": None}, TypeError,
     "state['x'] must be a number, not NoneType"),
    ("OneEuro", {"filter": "one_euro", "version": 1, "y": 1.0, "dx": 0.0, "x": math.nan},
     ValueError, "state['x'] must be finite, got nan"),
    ("OneEuro", {"filter": "one_euro", "version": 1, "y": 1.0, "dx": 0.0, "x": "1"}, TypeError,
     "state['x'] must be a number, not str"),
    ("OneEuro", {"filter": "one_euro", "version": 1, "y": 1.0, "dx": 0.0}, ValueError,
     "state is missing the key 'x'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "state", "error", "message"), BAD_STATES, ids=[s[3] for s in BAD_STATES]
)
def test_bad_state_is_named_and_changes_nothing(
    impl: SimpleNamespace, kind: str, state: Any, error: type[Exception], message: str
) -> None:
    f = {"Pt1": lambda: impl.Pt1(1.0, 1.0), "Median": lambda: impl.Median(3)}.get(
        kind, impl.OneEuro
    )()
    f.update_many([2.0, 6.0])
    before = f.get_state()
    with pytest.raises(error) as caught:
        f.set_state(state)
    assert type(caught.value) is error
    assert str(caught.value) == message
    assert f.get_state() == before


# --- pickle, copy, repr ------------------------------------------------------------------------


def test_pickle_and_copy_keep_parameters_and_state(impl: SimpleNamespace) -> None:
    for f in (impl.Pt1(2.0, 0.5), impl.Median(4), impl.OneEuro(0.5, 0.2, 2.0, 0.1)):
        f.update_many([1.0, 5.0, 2.0])
        for twin in (pickle.loads(pickle.dumps(f)), copy.copy(f), copy.deepcopy(f)):
            assert type(twin) is type(f)
            assert _params(twin) == _params(f)
            assert twin.get_state() == f.get_state()
            assert twin is not f
        twin = copy.copy(f)
        twin.update(100.0)
        assert twin.get_state() != f.get_state()  # independent state


def test_repr_shows_parameters() -> None:
    assert repr(filters.Pt1Filter(1, 0.1)) == "Pt1Filter(tau=1.0, dt=0.1)"
    assert repr(filters.MedianFilter(31)) == "MedianFilter(window=31)"
    assert repr(filters.OneEuroFilter()) == (
        "OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0, dt=1.0)"
    )
    assert repr(filters.PyPt1Filter(1, 0.1)) == "PyPt1Filter(tau=1.0, dt=0.1)"


def test_update_takes_raw_by_keyword_and_nothing_else(impl: SimpleNamespace) -> None:
    f = impl.Median(3)
    assert f.update(raw=2.5) == 2.5
    with pytest.raises(TypeError):
        f.update()
    with pytest.raises(TypeError):
        f.update(1.0, 2.0)
    with pytest.raises(TypeError):
        f.update(value=1.0)
    assert f.get_state()["samples"] == [2.5]


def test_uninitialised_subclass_is_refused() -> None:
    class Lazy(filters.Pt1Filter):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:  # forgets super().__init__
            pass

    with pytest.raises(TypeError):
        Lazy().update(1.0)
