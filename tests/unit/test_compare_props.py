"""Property tests of the element metrics against slow, independent references.

The references walk values one at a time in Python: ULP distance by stepping with
``np.nextafter`` (small distances) or from the sign-magnitude bit pattern read with
``int.from_bytes`` (any distance); value equality from Python float comparisons.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reprocheck import compare
from reprocheck.compare import Chunking, Tolerance, compare_arrays
from reprocheck.errors import OutputError

FLOATS = [np.dtype(t) for t in (np.float16, np.float32, np.float64)]
INTS = [
    np.dtype(t)
    for t in (
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.bool_,
    )
]
COMPLEX = [np.dtype(np.complex64), np.dtype(np.complex128)]
MAX_STEPS = 40

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- references


def ulp_by_stepping(x: np.generic, y: np.generic) -> int:
    """Count np.nextafter steps from the smaller value to the larger one."""
    low, high = (x, y) if x <= y else (y, x)
    steps = 0
    while low != high:
        with np.errstate(over="ignore"):
            low = np.nextafter(low, high)
        steps += 1
        assert steps <= 10 * MAX_STEPS, "reference stepping did not terminate"
    return steps


def ulp_by_bits(x: np.generic, y: np.generic) -> int:
    """Signed position on the number line from the sign and magnitude bits."""

    def position(v: np.generic) -> int:
        raw = int.from_bytes(v.tobytes(), "little")
        sign = 1 << (8 * v.itemsize - 1)
        return -(raw & ~sign) if raw & sign else raw

    return abs(position(x) - position(y))


def equal_in_value(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or x == y


def reference(a: np.ndarray, b: np.ndarray) -> dict[str, object]:
    """mismatched, nan/inf mismatches, max_abs and max_ulp, one pair at a time."""
    mismatched = nan_x = inf_x = 0
    max_abs = 0.0
    max_ulp = 0
    comparable = 0
    for x, y in zip(a.reshape(-1), b.reshape(-1), strict=True):
        fx, fy = float(x), float(y)
        if a.dtype.kind in "iub":
            mismatched += int(x) != int(y)  # float() would round large int64/uint64
        else:
            mismatched += not equal_in_value(fx, fy)
        if math.isnan(fx) != math.isnan(fy):
            nan_x += 1
        if math.isnan(fx) or math.isnan(fy):
            continue
        comparable += 1
        if fx != fy and (math.isinf(fx) or math.isinf(fy)):
            inf_x += 1
        if a.dtype.kind in "iub":
            max_ulp = max(max_ulp, abs(int(x) - int(y)))
            max_abs = max(max_abs, float(abs(int(x) - int(y))))
        else:
            max_ulp = max(max_ulp, ulp_by_bits(x, y))
            max_abs = max(max_abs, 0.0 if fx == fy else abs(fx - fy))
    return {
        "mismatched": mismatched,
        "nan_mismatch": nan_x,
        "inf_mismatch": inf_x,
        "max_abs": max_abs if comparable else None,
        "max_ulp": max_ulp if comparable else None,
    }


# --------------------------------------------------------------------------- strategies


def stepped(value: np.generic, steps: int, upward: bool) -> np.generic:
    target = value.dtype.type(np.inf if upward else -np.inf)
    with np.errstate(over="ignore"):
        for _ in range(steps):
            value = np.nextafter(value, target)
    return value


@st.composite
def near_pairs(draw: st.DrawFn, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Baselines with NaN, Inf, zeros, subnormals; candidates a few ULP away or special."""
    size = draw(st.integers(1, 8))
    a = draw(hnp.arrays(dtype, size, elements={"allow_subnormal": True}))
    specials = [0.0, -0.0, np.nan, np.inf, -np.inf, np.finfo(dtype).smallest_subnormal]
    b = a.copy()
    for i in range(size):
        how = draw(st.sampled_from(["same", "step", "special"]))
        if how == "step" and not np.isnan(a[i]):
            b[i] = stepped(a[i], draw(st.integers(0, MAX_STEPS)), draw(st.booleans()))
        elif how == "special":
            b[i] = dtype.type(draw(st.sampled_from(specials)))
    return a, b


def check_against_reference(a: np.ndarray, b: np.ndarray) -> None:
    result = compare_arrays(a, b)
    expected = reference(a, b)
    assert result.mismatched == expected["mismatched"]
    assert result.nan_mismatch == expected["nan_mismatch"]
    assert result.inf_mismatch == expected["inf_mismatch"]
    assert result.max_ulp == expected["max_ulp"]
    assert result.max_abs == expected["max_abs"]
    assert result.bit_identical == (a.tobytes() == b.tobytes())


# --------------------------------------------------------------------------- properties


@PROPS
@given(data=st.data(), dtype=st.sampled_from(FLOATS))
def test_float_metrics_match_reference(data: st.DataObject, dtype: np.dtype) -> None:
    a, b = data.draw(near_pairs(dtype))
    check_against_reference(a, b)


@PROPS
@given(data=st.data(), dtype=st.sampled_from(FLOATS))
def test_float_metrics_match_reference_for_any_pairs(data: st.DataObject, dtype: np.dtype) -> None:
    shape = data.draw(hnp.array_shapes(max_dims=3, max_side=4))
    a = data.draw(hnp.arrays(dtype, shape, elements={"allow_subnormal": True}))
    b = data.draw(hnp.arrays(dtype, shape, elements={"allow_subnormal": True}))
    check_against_reference(a, b)


@PROPS
@given(data=st.data(), dtype=st.sampled_from(FLOATS))
def test_max_ulp_matches_nextafter_stepping(data: st.DataObject, dtype: np.dtype) -> None:
    a, b = data.draw(near_pairs(dtype))
    checked = 0
    for x, y in zip(a, b, strict=True):
        if np.isnan(x) or np.isnan(y) or ulp_by_bits(x, y) > MAX_STEPS + 2:
            continue  # stepping the whole way only where it ends quickly
        pair = compare_arrays(np.array([x]), np.array([y]))
        assert pair.max_ulp == ulp_by_stepping(x, y)
        checked += 1
    assume(checked > 0)


@PROPS
@given(data=st.data(), dtype=st.sampled_from(INTS))
def test_integer_metrics_match_reference(data: st.DataObject, dtype: np.dtype) -> None:
    shape = data.draw(hnp.array_shapes(max_dims=2, max_side=6))
    a = data.draw(hnp.arrays(dtype, shape))
    b = data.draw(hnp.arrays(dtype, shape))
    check_against_reference(a, b)


@PROPS
@given(data=st.data(), dtype=st.sampled_from(COMPLEX))
def test_complex_compares_real_and_imaginary_parts(data: st.DataObject, dtype: np.dtype) -> None:
    real = np.dtype(dtype.char.lower())
    a_parts, b_parts = data.draw(near_pairs(real))
    assume(a_parts.size % 2 == 0)
    a, b = a_parts.view(dtype), b_parts.view(dtype)
    result = compare_arrays(a, b)
    expected = reference(a_parts, b_parts)
    assert result.mismatched == expected["mismatched"]
    assert result.max_ulp == expected["max_ulp"]
    assert result.total == a_parts.size


@PROPS
@given(data=st.data(), dtype=st.sampled_from(FLOATS), ulp=st.integers(0, 8))
def test_ulp_tolerance_verdict(data: st.DataObject, dtype: np.dtype, ulp: int) -> None:
    a, b = data.draw(near_pairs(dtype))
    outside = [
        not equal_in_value(float(x), float(y))
        and (np.isnan(x) or np.isnan(y) or np.isinf(x) or np.isinf(y) or ulp_by_bits(x, y) > ulp)
        for x, y in zip(a, b, strict=True)
    ]
    result = compare_arrays(a, b, Tolerance(ulp=ulp))
    if a.tobytes() == b.tobytes():
        assert result.verdict == "identical"
    else:
        assert result.verdict == ("drift" if any(outside) else "within_tolerance")


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([*FLOATS, np.dtype(np.int16), np.dtype(np.uint8)]))
def test_chunked_stream_equals_one_chunk(data: st.DataObject, dtype: np.dtype) -> None:
    a = data.draw(hnp.arrays(dtype, (6, 8, 3)))
    b = data.draw(hnp.arrays(dtype, (6, 8, 3)))
    whole = compare_arrays(a, b, Tolerance(atol=1.0)).as_json()
    small = Chunking(chunk=12, block=data.draw(st.sampled_from([1, 5, 12])))
    chunked = compare_arrays(a, b, Tolerance(atol=1.0), chunking=small).as_json()
    mean_whole, mean_chunked = whole.pop("mean_abs"), chunked.pop("mean_abs")
    assert chunked == whole
    if isinstance(mean_whole, float):
        assert mean_chunked == pytest.approx(mean_whole, rel=1e-12)
    else:
        assert mean_chunked == mean_whole


def int_reference(a: np.ndarray, b: np.ndarray, atol: float) -> dict[str, object]:
    """Every integer metric, one pair at a time in Python ints (exact) and floats."""
    pairs = list(zip(a.reshape(-1).tolist(), b.reshape(-1).tolist(), strict=True))
    distances = [abs(int(x) - int(y)) for x, y in pairs]
    ratios = [0.0 if d == 0 else math.inf if x == 0 else float(d) / abs(float(x))
              for (x, _), d in zip(pairs, distances, strict=True)]  # fmt: skip
    ranked = sorted((-float(d), i) for i, d in enumerate(distances) if d)[:5]
    worst = [tuple(int(k) for k in np.unravel_index(i, a.shape)) for _, i in ranked]
    outside = sum(float(d) > atol for d in distances)
    expected: dict[str, object] = {
        "mismatched": sum(d > 0 for d in distances),
        "max_abs": float(max(distances, default=0)),
        "mean_abs": sum(distances) / len(distances),
        "max_rel": "inf" if math.inf in ratios else max(ratios, default=0.0),  # as JSON
        "max_ulp": max(distances, default=0),
        "worst_indices": [list(index) for index in worst],
        "verdict": "identical"
        if not any(distances)
        else "drift"
        if outside
        else "within_tolerance",
    }
    channels = 1 if a.ndim == 2 else a.shape[-1]
    if a.dtype in (np.uint8, np.uint16) and (a.ndim == 2 or (a.ndim == 3 and channels <= 4)):
        pixels = np.asarray(distances).reshape(-1, channels).any(axis=1)
        squares = sum(d * d for d in distances)
        peak = float(np.iinfo(a.dtype).max)
        expected["differing_pixels"] = int(np.count_nonzero(pixels))
        expected["psnr"] = 10 * math.log10(peak**2 * a.size / squares) if squares else "inf"
    return expected


BLOCK_INTS = [np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64,
                                    np.uint64)]  # fmt: skip


@st.composite
def int_pairs(draw: st.DrawFn, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Images (H x W x C) and flat arrays; candidates near the baseline (small distances,
    the counting path) or anywhere (the float and uint64 paths), dense or sparse."""
    shape = draw(st.sampled_from([(5, 7, 3), (4, 6, 4), (9, 5), (3, 4, 2), (70,), (1, 1, 1)]))
    info = np.iinfo(dtype)
    edges = st.sampled_from([info.min, info.max, 0, 1, info.max - 1])
    values = st.integers(info.min, info.max) | edges
    a = draw(hnp.arrays(dtype, shape, elements=values))
    step = st.integers(-4, 4) if draw(st.booleans()) else st.integers(info.min, info.max)
    moved = draw(hnp.arrays(np.bool_, shape))
    b = a.copy()
    for index in zip(*np.nonzero(moved), strict=True):
        b[index] = np.clip(int(a[index]) + draw(step), info.min, info.max)
    return a, b


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    dtype=st.sampled_from(BLOCK_INTS),
    atol=st.sampled_from([0.0, 0.5, 1.0, 2.5, 200.0, 2.0**60, math.inf]),
    chunking=st.sampled_from(
        [Chunking(), Chunking(chunk=12, block=5), Chunking(chunk=24, block=8)]
    ),
)
def test_integer_blocks_match_reference(
    data: st.DataObject, dtype: np.dtype, atol: float, chunking: Chunking
) -> None:
    """Every metric of the integer block paths (dense and gathered, any chunking) against
    Python ints: mean_abs, max_rel, worst indices, PSNR and differing pixels included."""
    a, b = data.draw(int_pairs(dtype))
    result = compare_arrays(a, b, Tolerance(atol=atol), chunking=chunking).as_json()
    expected = int_reference(a, b, atol)
    assert {key: result[key] for key in expected} == expected


# --------------------------------------------------------------------------- direct cases


@pytest.mark.parametrize(
    ("dtype", "x", "y", "expected"),
    [
        (np.float32, -0.0, 0.0, 0),
        (np.float32, 1.0, float(np.nextafter(np.float32(1), np.float32(2))), 1),
        (np.float64, -5e-324, 5e-324, 2),
        (np.float32, float(np.finfo(np.float32).max), np.inf, 1),
        (np.float32, -np.inf, np.inf, 2 * 0x7F800000),
        (np.float64, -np.inf, np.inf, 2 * 0x7FF0000000000000),
        (np.float16, -np.inf, np.inf, 2 * 0x7C00),
        (np.float16, 0.0, float(np.finfo(np.float16).smallest_subnormal), 1),
        (np.float64, 1.0, -1.0, 2 * 0x3FF0000000000000),
    ],
)
def test_direct_ulp_cases(dtype: type, x: float, y: float, expected: int) -> None:
    a = np.array([x], dtype=dtype)
    b = np.array([y], dtype=dtype)
    assert compare_arrays(a, b).max_ulp == expected
    assert compare_arrays(b, a).max_ulp == expected


@pytest.mark.parametrize(
    ("dtype", "x", "y", "expected"),
    [
        (np.int8, -128, 127, 255),
        (np.int64, -(2**63), 2**63 - 1, 2**64 - 1),
        (np.uint64, 0, 2**64 - 1, 2**64 - 1),
        (np.uint8, 255, 0, 255),
        (np.bool_, True, False, 1),
    ],
)
def test_integer_distance_has_no_overflow(dtype: type, x: int, y: int, expected: int) -> None:
    result = compare_arrays(np.array([x], dtype=dtype), np.array([y], dtype=dtype))
    assert result.max_ulp == expected
    assert result.max_abs == float(expected)


# --------------------------------------------------------------------------- the whole input space

NUMERIC = [*FLOATS, *INTS, *COMPLEX]
NOT_NUMERIC = [np.dtype(t) for t in ("U3", "S2", "O", "M8[s]", "m8[ms]", "V4")]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
SPECIAL_FLOATS = [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1.0, -1.0, 5e-324]


@st.composite
def tolerances(draw: st.DrawFn) -> Tolerance:
    return Tolerance(
        atol=draw(st.sampled_from([0.0, 1e-6, 0.5, 1.0, np.inf])),
        rtol=draw(st.sampled_from([0.0, 1e-3])),
        ulp=draw(st.sampled_from([None, 0, 4])),
        max_mismatch_fraction=draw(st.sampled_from([0.0, 0.5, 1.0])),
        match=draw(st.sampled_from(["elements", "rows"])),
    )


DECISIONS = st.sampled_from(
    [None, *(compare.DecisionRule(pattern="*", kind=k) for k in ("argmax", "labels", "boxes"))]
)


@st.composite
def any_array(draw: st.DrawFn, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype.kind in "fc":
        real = np.dtype(dtype.char.lower()) if dtype.kind == "c" else dtype
        values = st.sampled_from(SPECIAL_FLOATS) | st.floats(width=8 * real.itemsize)
        return draw(hnp.arrays(dtype, shape, elements=values.map(real.type)))
    if dtype.kind == "O":
        return np.full(shape, None, dtype=object)
    if dtype.kind == "V":
        return np.zeros(shape, dtype=dtype)
    return draw(hnp.arrays(dtype, shape))


def assert_sane(result: compare.ArrayComparison, a: np.ndarray, b: np.ndarray) -> None:
    import json

    json.dumps(result.as_json(), allow_nan=False)  # JSON without NaN/Inf literals
    if a.dtype == b.dtype and a.shape == b.shape and result.rows is None:
        assert result.bit_identical == (a.tobytes() == b.tobytes())
        assert (result.verdict == "identical") == result.bit_identical
        assert result.total == a.size * (2 if a.dtype.kind == "c" else 1)
        index_shape = (*a.shape, 2) if a.dtype.kind == "c" else a.shape
        for index in result.worst_indices:
            assert len(index) == len(index_shape)
            assert all(0 <= i < n for i, n in zip(index, index_shape, strict=True))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    dtypes=st.tuples(st.sampled_from(NUMERIC + NOT_NUMERIC), st.sampled_from(NUMERIC)),
    same=st.booleans(),
    tolerance=tolerances(),
    decision=DECISIONS,
)
def test_any_two_arrays_compare_or_raise_output_error(
    data: st.DataObject,
    dtypes: tuple[np.dtype, np.dtype],
    same: bool,
    tolerance: Tolerance,
    decision: compare.DecisionRule | None,
) -> None:
    """0-d, empty and single-element arrays, every dtype kind, NaN/Inf/-0.0: compare returns
    a result, or raises OutputError for what is not numeric; nothing else escapes."""
    shape_a = data.draw(SHAPES)
    dtype_a, dtype_b = (dtypes[0], dtypes[0]) if same else dtypes
    shape_b = shape_a if same else data.draw(SHAPES)
    a = data.draw(any_array(dtype_a, shape_a))
    b = data.draw(any_array(dtype_b, shape_b))
    try:
        result = compare_arrays(a, b, tolerance, decision)
    except OutputError:
        assert not (a.dtype.kind in "biufc" and b.dtype.kind in "biufc")
        return
    assert_sane(result, a, b)


@PROPS
@given(data=st.data(), dtype=st.sampled_from(FLOATS + INTS))
def test_metrics_match_reference_for_every_shape(data: st.DataObject, dtype: np.dtype) -> None:
    """The reference check over 0-d, empty and larger shapes (not only 1-d)."""
    shape = data.draw(SHAPES)
    a = data.draw(any_array(dtype, shape))
    b = data.draw(any_array(dtype, shape))
    check_against_reference(a, b)


@pytest.mark.parametrize("dtype", NUMERIC)
def test_scalar_outputs_compare(dtype: np.dtype) -> None:
    one, two = np.asarray(1, dtype=dtype), np.asarray(2 if dtype.kind != "b" else 0, dtype=dtype)
    result = compare_arrays(one, two)
    assert result.verdict == "drift"
    assert result.shape == ((), ())
    assert result.worst_indices[0] == (() if dtype.kind != "c" else (0,))
    assert compare_arrays(one, one.copy()).verdict == "identical"


def test_scalar_within_tolerance_and_nan() -> None:
    assert compare_arrays(np.asarray(0.9712), np.asarray(0.9716), Tolerance(atol=1e-3)).verdict == (
        "within_tolerance"
    )
    nan = compare_arrays(np.asarray(np.nan), np.asarray(1.0))
    assert (nan.verdict, nan.nan_mismatch, nan.max_ulp) == ("drift", 1, None)
    assert compare_arrays(np.asarray(-0.0), np.asarray(0.0)).mismatched == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=st.sampled_from(NUMERIC), tolerance=tolerances(), decision=DECISIONS)
def test_the_identical_shortcut_gives_what_streaming_gives(
    data: st.DataObject,
    dtype: np.dtype,
    tolerance: Tolerance,
    decision: compare.DecisionRule | None,
) -> None:
    """Bit-identical arrays skip the streaming; every metric must stay what it computes."""
    from reprocheck.compare import api
    from reprocheck.compare.chunking import DEFAULT_CHUNKING

    a = data.draw(any_array(dtype, data.draw(SHAPES)))
    b = a.copy()
    fast = api._compare_elements(a, b, tolerance, decision, DEFAULT_CHUNKING)
    slow = api._compare_elements(a, b, tolerance, decision, DEFAULT_CHUNKING, shortcut=False)
    assert fast.as_json() == slow.as_json()
    assert fast.verdict == "identical"
