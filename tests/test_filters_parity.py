"""Property tests: the C++ filters and the Python references agree (relative 1e-9).

Random parameters and sequences; single updates versus ``update_many``; state exported
mid-stream from one implementation and restored into the other; the median's batch on every
SIMD path this CPU has (portable, AVX2, AVX-512), bit for bit.
"""

from __future__ import annotations

import json
import math
import random
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import filters

REL = 1e-9

samples = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
sequences = st.lists(samples, max_size=120)
positive = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)
small_positive = st.floats(min_value=1e-3, max_value=1.0, allow_nan=False)
non_negative = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)

Factory = Callable[[], Any]


@st.composite
def filter_pairs(draw: st.DrawFn) -> tuple[Factory, Factory]:
    """A C++ factory and a Python factory for one filter with random parameters."""
    kind = draw(st.sampled_from(["pt1", "median", "one_euro"]))
    if kind == "pt1":
        tau, dt = draw(positive), draw(small_positive)
        return (lambda: filters.Pt1Filter(tau, dt), lambda: filters.PyPt1Filter(tau, dt))
    if kind == "median":
        w = draw(st.integers(min_value=1, max_value=40))
        return (lambda: filters.MedianFilter(w), lambda: filters.PyMedianFilter(w))
    mc, beta, dc, dt = draw(positive), draw(non_negative), draw(positive), draw(small_positive)
    return (
        lambda: filters.OneEuroFilter(mc, beta, dc, dt),
        lambda: filters.PyOneEuroFilter(mc, beta, dc, dt),
    )


def assert_close(actual: list[float], expected: list[float], scale: float = 1.0) -> None:
    """Equal to ``REL`` relative; near a zero crossing, to 1e-12 of the signal's ``scale``.

    (An output near zero carries rounding errors from the larger values it was computed from,
    so there the comparison is against the largest magnitude in play.)
    """
    assert len(actual) == len(expected)
    abs_tol = max(1e-9, 1e-12 * scale)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert math.isclose(a, e, rel_tol=REL, abs_tol=abs_tol), (i, a, e)


def assert_state_close(a: dict[str, Any], b: dict[str, Any], scale: float = 1.0) -> None:
    assert a.keys() == b.keys()
    abs_tol = max(1e-9, 1e-12 * scale)
    for key in a:
        va, vb = a[key], b[key]
        if isinstance(va, float):
            assert math.isclose(va, vb, rel_tol=REL, abs_tol=abs_tol), key
        elif isinstance(va, list):
            assert_close(va, vb, scale)
        else:
            assert va == vb, key


def scale_of(*sequences: list[float]) -> float:
    return max((abs(x) for xs in sequences for x in xs), default=1.0)


def test_parity_runs_against_the_extension() -> None:
    assert filters.NATIVE, "build agent._filters: `pip install -e .[test]` or `scripts/test`"


@settings(max_examples=150, deadline=None)
@given(filter_pairs(), sequences)
def test_update_agrees(pair: tuple[Factory, Factory], xs: list[float]) -> None:
    make_cpp, make_py = pair
    cpp, py = make_cpp(), make_py()
    assert_close([cpp.update(x) for x in xs], [py.update(x) for x in xs])
    assert_state_close(cpp.get_state(), py.get_state())
    assert (cpp.value is None) == (py.value is None)


@settings(max_examples=150, deadline=None)
@given(filter_pairs(), sequences)
def test_update_many_agrees_with_repeated_update(
    pair: tuple[Factory, Factory], xs: list[float]
) -> None:
    make_cpp, make_py = pair
    one_by_one = [f.update(x) for f in [make_cpp()] for x in xs]
    as_list = make_cpp().update_many(xs)
    as_array = make_cpp().update_many(array("d", xs))
    py_list = make_py().update_many(xs)
    py_array = make_py().update_many(array("d", xs))
    assert isinstance(as_list, list) and isinstance(py_list, list)
    assert isinstance(as_array, array) and isinstance(py_array, array)
    scale = scale_of(xs)
    if isinstance(make_cpp(), filters.Pt1Filter):
        # The C++ Pt1 batch takes four samples per step in a shorter chain (cpp/filters.cpp):
        # a few ulps from the one-by-one rounding.
        assert_close(as_list, one_by_one, scale)
        assert_close(list(as_array), one_by_one, scale)
    else:
        # The same arithmetic as update, in the same order: bit-for-bit the same numbers.
        assert as_list == one_by_one
        assert list(as_array) == one_by_one
    assert list(as_array) == as_list
    # The Python references do one sample at a time in either call, like C++ update.
    assert_close(py_list, one_by_one)
    assert_close(list(py_array), one_by_one)


@settings(max_examples=150, deadline=None)
@given(filter_pairs(), sequences, sequences, st.booleans())
def test_state_round_trip_mid_stream(
    pair: tuple[Factory, Factory], head: list[float], tail: list[float], cpp_first: bool
) -> None:
    make_cpp, make_py = pair
    reference = make_cpp()
    expected = reference.update_many(head + tail)[len(head) :]

    first, second = (make_cpp(), make_py()) if cpp_first else (make_py(), make_cpp())
    first.update_many(head)
    # Through JSON, as a device persisting it across a restart would.
    second.set_state(json.loads(json.dumps(first.get_state())))
    scale = scale_of(head, tail)
    assert_close(second.update_many(tail), expected, scale)
    assert_state_close(second.get_state(), reference.get_state(), scale)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=95, max_value=140),
    st.lists(st.one_of(samples, st.integers(-3, 3).map(float)), min_size=150, max_size=400),
)
def test_median_large_windows_agree(window: int, xs: list[float]) -> None:
    # Windows above 100 take another C++ path (in-place replacement instead of a full pass).
    one_by_one = [f.update(x) for f in [filters.MedianFilter(window)] for x in xs]
    assert filters.MedianFilter(window).update_many(xs) == one_by_one
    assert filters.PyMedianFilter(window).update_many(xs) == one_by_one


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=1, max_value=20),
    sequences,
    sequences,
)
def test_median_restore_across_window_sizes_agrees(
    w_from: int, w_to: int, head: list[float], tail: list[float]
) -> None:
    source = filters.MedianFilter(w_from)
    source.update_many(head)
    state = source.get_state()
    cpp, py = filters.MedianFilter(w_to), filters.PyMedianFilter(w_to)
    cpp.set_state(state)
    py.set_state(state)
    assert cpp.get_state() == py.get_state()
    assert cpp.get_state()["samples"] == head[-min(w_from, w_to) :]
    assert cpp.update_many(tail) == py.update_many(tail)


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.floats(),
        st.integers(),
        st.booleans(),
        st.none(),
        st.text(max_size=3),
        st.lists(st.floats(), max_size=2),
    )
)
def test_same_verdict_on_any_parameter(value: Any) -> None:
    # Whatever is passed, both implementations accept it or fail with the same message.
    for make_cpp, make_py in [
        (lambda v: filters.Pt1Filter(v, 1.0), lambda v: filters.PyPt1Filter(v, 1.0)),
        (filters.MedianFilter, filters.PyMedianFilter),
        (lambda v: filters.OneEuroFilter(beta=v), lambda v: filters.PyOneEuroFilter(beta=v)),
    ]:
        assert _outcome(make_cpp, value) == _outcome(make_py, value)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            samples,
            st.sampled_from([math.nan, math.inf, -math.inf]),
            st.integers(min_value=-(2**64), max_value=2**64),
            st.just(10**400),
            st.booleans(),
            st.text(max_size=2),
        ),
        max_size=8,
    )
)
def test_same_verdict_on_any_batch(values: list[Any]) -> None:
    cpp, py = filters.OneEuroFilter(1.0, 0.5), filters.PyOneEuroFilter(1.0, 0.5)
    out_cpp, out_py = _outcome(cpp.update_many, values), _outcome(py.update_many, values)
    if isinstance(out_cpp, tuple):
        assert out_cpp == out_py
    else:
        assert_close(out_cpp, out_py)


def _outcome(fn: Callable[[Any], Any], value: Any) -> Any:
    try:
        result = fn(value)
    except (TypeError, ValueError) as exc:
        return (type(exc).__name__, str(exc))
    return result if isinstance(result, list) else ("ok",)


# --- the median's SIMD dispatch ----------------------------------------------------------------


def simd_paths() -> list[str]:
    """The paths of MedianFilter.update_many this CPU runs (just "portable" off x86-64)."""
    if not filters.NATIVE:
        return ["portable"]  # test_parity_runs_against_the_extension fails loudly instead
    from agent import _filters

    return list(_filters._simd_paths())


@contextmanager
def forced_simd_path(name: str) -> Iterator[None]:
    """MedianFilter.update_many on one path inside the block; the previous one afterwards."""
    from agent import _filters

    before = _filters._simd_path()
    _filters._set_simd_path(name)
    try:
        yield
    finally:
        _filters._set_simd_path(before)


def bits(values: Any) -> bytes:
    """The exact doubles, so that 0.0 and -0.0 (equal as numbers) count as different."""
    return array("d", values).tobytes()


# Few distinct values: ties, and both zeros, which only the order of moves tells apart.
tie_values = st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, -3.0, 1e300, -1e300])
median_inputs = st.lists(st.one_of(samples, tie_values), max_size=300)


def test_simd_paths_include_portable_and_the_default() -> None:
    from agent import _filters

    paths = simd_paths()
    assert paths[0] == "portable"
    assert _filters._simd_path() in paths
    assert set(paths) <= {"portable", "avx2", "avx512"}


def test_unsupported_simd_path_is_refused() -> None:
    from agent import _filters

    before = _filters._simd_path()
    with pytest.raises(ValueError, match="unknown or unsupported SIMD path 'sse9'"):
        _filters._set_simd_path("sse9")
    assert _filters._simd_path() == before


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=110),
    median_inputs,
    st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=6),
)
@pytest.mark.parametrize("path", simd_paths())
def test_median_batch_is_bitwise_the_reference_on_every_path(
    path: str, window: int, xs: list[float], chunk_sizes: list[int]
) -> None:
    # Cut into batches of assorted sizes (shorter and longer than the window: a kernel reads
    # the replaced values from the ring, then from the batch itself), as buffers and lists.
    expected = filters.PyMedianFilter(window).update_many(xs)
    cpp = filters.MedianFilter(window)
    got: list[float] = []
    start = 0
    with forced_simd_path(path):
        for i, size in enumerate(chunk_sizes * (len(xs) // sum(chunk_sizes) + 1)):
            if start >= len(xs):
                break
            part = xs[start : start + size]
            got.extend(cpp.update_many(array("d", part) if i % 2 else part))
            start += size
    assert bits(got) == bits(expected)
    py = filters.PyMedianFilter(window)
    py.update_many(xs)
    assert bits(cpp.get_state()["samples"]) == bits(py.get_state()["samples"])


@pytest.mark.parametrize("path", simd_paths())
def test_median_paths_agree_on_the_benchmark_signal(path: str) -> None:
    # A long noisy signal with spikes (the benchmark's kind) through the windows around the
    # kernels' sizes; every path must reproduce the reference exactly.
    rng = random.Random(7)
    xs = [20.0 + rng.gauss(0.0, 0.3) + rng.choice((0.0,) * 50 + (50.0, -50.0)) for _ in range(3000)]
    for window in (1, 2, 15, 16, 17, 31, 32, 33, 48, 49, 64, 99, 100, 101):
        expected = filters.PyMedianFilter(window).update_many(xs)
        with forced_simd_path(path):
            got = filters.MedianFilter(window).update_many(array("d", xs))
        assert bits(got) == bits(expected), window
