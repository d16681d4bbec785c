"""compare_batch against compare_arrays, row by row: every field equal, floats bit for bit.

The batches come from a seeded generator steered by hypothesis: every dtype kind (and
byte-swapped ones), 0-d, empty, 1-element, long (sparse rows with 8 and more differing
elements, whose float sums are pairwise) and image-like rows; NaN (several payloads), ±Inf,
-0.0, subnormals, extremes; rows identical, differing in one element, in a few, in most or
in every element; random tolerances; chunks of rows of any size.
"""

from __future__ import annotations

import dataclasses
import math
import tracemalloc
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprocheck.compare import ArrayComparison, Tolerance, compare_arrays, compare_batch
from reprocheck.compare import batch as batch_module
from reprocheck.compare.batch import batch_columns
from reprocheck.errors import OutputError

FLOATS = [np.dtype(t) for t in (np.float16, np.float32, np.float64)]
INTS = [
    np.dtype(t)
    for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
]
OTHERS = [np.dtype(np.bool_), np.dtype(np.complex64), np.dtype(np.complex128)]
SWAPPED = [np.dtype(t) for t in (">f4", ">f8", ">i4", ">u2", ">c8")]
DTYPES = [*FLOATS, *INTS, *OTHERS, *SWAPPED]
IMAGE_DTYPES = [np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(">u2")]

ROW_SHAPES = st.sampled_from(
    [(), (0,), (1,), (3, 0), (7,), (8,), (64,), (130,), (300,), (17, 19), (2, 3, 4)]
)
IMAGE_SHAPES = st.sampled_from([(5, 7), (4, 6, 3), (3, 5, 4), (2, 3, 1), (6, 4, 2), (4, 3, 5)])
SMALL_SHAPES = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)
MODES = ("same", "one", "few", "half", "most", "all")

PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def expected(a: np.ndarray, b: np.ndarray, tolerance: Tolerance) -> list[ArrayComparison]:
    return [compare_arrays(a[i], b[i], tolerance) for i in range(len(a))]


EXACT = Tolerance()


def assert_rows_equal(a: np.ndarray, b: np.ndarray, tolerance: Tolerance = EXACT) -> None:
    got = compare_batch(a, b, tolerance)
    want = expected(a, b, tolerance)
    assert len(got) == len(want)
    for i, (row, reference) in enumerate(zip(got, want, strict=True)):
        assert row == reference, f"row {i}: {a[i]!r} vs {b[i]!r}"
        # == on floats treats 0.0 and -0.0 alike; the text of the results does not
        assert repr(row) == repr(reference), f"row {i}"
    columns = batch_columns(a, b, tolerance)  # the same results, column by column
    for field in dataclasses.fields(ArrayComparison):
        values = [getattr(reference, field.name) for reference in want]
        assert repr(columns[field.name]) == repr(values), field.name


# --------------------------------------------------------------------------- generators


def real_dtype(dtype: np.dtype) -> np.dtype:
    native = dtype.newbyteorder("=")
    return np.dtype(native.char.lower()) if native.kind == "c" else native


def float_values(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Any bit pattern, specials (NaN with several payloads, ±Inf, ±0, subnormals,
    extremes) and ordinary numbers of many magnitudes, mixed."""
    info = np.finfo(dtype)
    bits = np.dtype(f"u{dtype.itemsize}")
    anything = rng.integers(0, np.iinfo(bits).max, shape, dtype=bits, endpoint=True).view(dtype)
    specials = np.array(
        [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, info.max, -info.max, info.tiny,
         info.smallest_subnormal, -info.smallest_subnormal, 1.0, -1.0],
        dtype=dtype,
    )  # fmt: skip
    payload = np.array([np.nan], dtype=dtype).view(bits) | bits.type(1)
    specials = np.concatenate([specials, payload.view(dtype)])
    with np.errstate(over="ignore"):
        scale = 10.0 ** rng.integers(-8, 9, shape)
        ordinary = (rng.standard_normal(shape) * scale).astype(dtype)
    which = rng.choice(3, shape, p=rng.dirichlet([1.0, 1.0, 1.0]))
    picked = specials[rng.integers(0, specials.size, shape)]
    return np.where(which == 0, anything, np.where(which == 1, picked, ordinary))


def int_values(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype)
    anything = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    edges = np.array([info.min, info.max, 0, 1, info.max - 1, info.min + 1], dtype=dtype)
    small = rng.integers(0, 6, shape).astype(dtype)
    which = rng.choice(3, shape, p=rng.dirichlet([1.0, 1.0, 1.0]))
    return np.where(which == 0, anything, np.where(which == 1, edges[rng.integers(0, 6)], small))


def values(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype.kind == "f":
        return float_values(rng, dtype, shape)
    return int_values(rng, dtype, shape)


def stepped(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Each value moved 1 to 4 ULP up or down (through zero across signs)."""
    steps = rng.integers(1, 5, x.shape)
    target = np.where(rng.random(x.shape) < 0.5, np.inf, -np.inf).astype(x.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for step in range(1, 5):
            x = np.where(steps >= step, np.nextafter(x, target), x)
    return x


def float_changes(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        candidates = [
            stepped(rng, x),
            values(rng, x.dtype, x.shape),
            -x,
            (x * (1 + 1e-3)).astype(x.dtype),
            (x + x.dtype.type(1)).astype(x.dtype),
        ]
    which = rng.integers(0, len(candidates), x.shape)
    return np.choose(which, candidates)


def int_changes(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    if x.dtype == np.bool_:
        return ~x
    info = np.iinfo(x.dtype)
    wide = x.astype(object) + rng.integers(-4, 5, x.shape).astype(object)
    near = np.array(
        [min(max(v, info.min), info.max) for v in wide.reshape(-1).tolist()], dtype=x.dtype
    )
    near = near.reshape(x.shape)
    return np.where(rng.random(x.shape) < 0.6, near, values(rng, x.dtype, x.shape))


def changed(rng: np.random.Generator, a: np.ndarray, modes: list[str]) -> np.ndarray:
    """b from a (rows, size): each row left alone or changed at some of its elements."""
    size = a.shape[1]
    change = float_changes if a.dtype.kind == "f" else int_changes
    moved = change(rng, a)
    where = np.zeros(a.shape, dtype=np.bool_)
    for row, mode in enumerate(modes):
        if size == 0 or mode == "same":
            continue
        if mode == "one":
            where[row, rng.integers(0, size)] = True
        else:
            share = {"few": 0.08, "half": 0.5, "most": 0.9, "all": 1.0}[mode]
            where[row] = rng.random(size) < share if mode != "all" else True
    return np.where(where, moved, a)


def batch(
    seed: int, dtype: np.dtype, shape: tuple[int, ...], modes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """a and b of shape (len(modes), *shape) and dtype ``dtype``."""
    rng = np.random.default_rng(seed)
    real = real_dtype(dtype)
    size = math.prod(shape) * (2 if dtype.kind == "c" else 1)
    flat_a = values(rng, real, (len(modes), size))
    flat_b = changed(rng, flat_a, modes)
    native = dtype.newbyteorder("=")

    def shaped(flat: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(flat).reshape(-1).view(native)
        return rows.reshape(len(modes), *shape).astype(dtype)

    return shaped(flat_a), shaped(flat_b)


@st.composite
def tolerances(draw: st.DrawFn) -> Tolerance:
    """Tolerances of a configuration, and some it rejects (negative, NaN) that a caller
    could still build."""
    odd = [-1.0, math.nan]
    return Tolerance(
        pattern=draw(st.sampled_from(["default", "*/probabilities"])),
        atol=draw(st.sampled_from([0.0, 1e-6, 0.5, 1.0, 2.5, 255.0, 2.0**60, math.inf, *odd])),
        rtol=draw(st.sampled_from([0.0, 1e-6, 1e-3, 0.5, math.inf, *odd])),
        ulp=draw(st.sampled_from([None, 0, 1, 4, 2**20, 2**40, 2**64 - 1, -1])),
        max_mismatch_fraction=draw(st.sampled_from([0.0, 0.01, 0.25, 0.5, 1.0, -0.5])),
    )


# --------------------------------------------------------------------------- properties


@PROPS
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(DTYPES),
    shape=ROW_SHAPES | SMALL_SHAPES,
    modes=st.lists(st.sampled_from(MODES), min_size=1, max_size=12),
    tolerance=tolerances(),
    chunk=st.sampled_from([None, 1, 7, 64]),
)
def test_rows_equal_compare_arrays(
    seed: int,
    dtype: np.dtype,
    shape: tuple[int, ...],
    modes: list[str],
    tolerance: Tolerance,
    chunk: int | None,
) -> None:
    a, b = batch(seed, dtype, shape, modes)
    elements = batch_module.CHUNK_ELEMENTS if chunk is None else chunk
    with mock.patch.object(batch_module, "CHUNK_ELEMENTS", elements):
        assert_rows_equal(a, b, tolerance)


@PROPS
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(IMAGE_DTYPES),
    shape=IMAGE_SHAPES,
    modes=st.lists(st.sampled_from(MODES), min_size=1, max_size=8),
    tolerance=tolerances(),
)
def test_image_rows_equal_compare_arrays(
    seed: int, dtype: np.dtype, shape: tuple[int, ...], modes: list[str], tolerance: Tolerance
) -> None:
    """H x W and H x W x C uint8/uint16 rows: PSNR and differing pixels too."""
    a, b = batch(seed, dtype, shape, modes)
    assert_rows_equal(a, b, tolerance)
    if shape[-1] <= 4:
        assert all(row.psnr is not None for row in compare_batch(a, b, tolerance))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(FLOATS),
    differing=st.integers(1, 400),
)
def test_sparse_rows_sum_in_the_order_of_compare_arrays(
    seed: int, dtype: np.dtype, differing: int
) -> None:
    """Long rows with up to size / 8 differing elements: mean_abs sums the gathered
    elements pairwise (8 and more of them), exactly as compare_arrays does."""
    rng = np.random.default_rng(seed)
    size = 8 * differing + int(rng.integers(1, 64))
    a = (rng.standard_normal((3, size)) * 10.0 ** rng.integers(-6, 7, (3, size))).astype(dtype)
    b = a.copy()
    for row, count in enumerate([differing, max(1, differing - 1), differing * 8]):
        where = rng.choice(size, min(count, size), replace=False)
        b[row, where] = (a[row, where] * rng.uniform(0.5, 1.5, where.size)).astype(dtype)
    assert_rows_equal(a, b)


# --------------------------------------------------------------------------- hand-written


@pytest.mark.parametrize(("size", "total"), [(64, 1.0), (72, 1.0 + 3 * 2.0**-52)])
def test_the_dense_threshold_decides_the_order_of_the_sum(size: int, total: float) -> None:
    """8 elements differ, 8 apart. Of 64 (dense), compare_arrays sums the whole row: the 8
    land in one of numpy's 8 accumulators and add up one after the other. Of 72 (sparse),
    it sums the 8 gathered: pairwise. 1 + 2**-53 rounds to 1; 2**-53 + 2**-53 does not."""
    a = np.zeros((1, size))
    b = a.copy()
    b[0, :64:8] = [1.0, *[2.0**-53] * 7]
    assert_rows_equal(a, b)
    assert compare_batch(a, b)[0].mean_abs == total / size


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_at_and_just_past_each_bound(dtype: type) -> None:
    """|a - b| equal to atol, to atol + rtol * |a|, a ULP distance equal to ulp: within;
    one ULP further: outside."""
    up = dtype(np.inf)
    a = np.full((6, 4), 2.0, dtype=dtype)
    b = a.copy()
    b[0, 1] = 3.0  # |a - b| = 1 = atol, = 0.5 + 0.25 * 2
    b[1, 1] = np.nextafter(dtype(3.0), up)
    b[2, 1] = np.nextafter(np.nextafter(dtype(2.0), up), up)  # 2 ULP
    b[3, 1] = np.nextafter(b[2, 1], up)  # 3 ULP
    b[4, :] = 3.0
    b[5, 0] = -2.0
    for tolerance in (
        Tolerance(atol=1.0),
        Tolerance(atol=0.5, rtol=0.25),
        Tolerance(ulp=2),
        Tolerance(ulp=2, max_mismatch_fraction=0.25),
    ):
        assert_rows_equal(a, b, tolerance)
    verdicts = [r.verdict for r in compare_batch(a, b, Tolerance(atol=0.5, rtol=0.25))]
    assert verdicts[:2] == ["within_tolerance", "drift"]
    verdicts = [r.verdict for r in compare_batch(a, b, Tolerance(ulp=2))]
    assert verdicts[2:4] == ["within_tolerance", "drift"]


def test_zero_d_rows() -> None:
    a = np.array([1.0, np.nan, 0.0, np.inf, 2.0, np.nan], dtype=np.float32)
    b = np.array([1.0, 2.0, -0.0, -np.inf, 2.5, np.nan], dtype=np.float32)
    assert_rows_equal(a, b)
    results = compare_batch(a, b)
    assert [r.verdict for r in results] == [
        "identical", "drift", "within_tolerance", "drift", "drift", "identical",
    ]  # fmt: skip
    assert results[1].worst_indices == ((),)
    assert results[1].max_abs is None  # the only element is NaN vs a number
    assert results[5].max_abs is None
    assert results[2].worst_indices == ()


def test_empty_rows() -> None:
    for dtype, shape in [(np.float32, (4, 0)), (np.uint8, (3, 0, 5)), (np.int16, (2, 3, 0))]:
        a = np.zeros(shape, dtype=dtype)
        assert_rows_equal(a, a.copy())
    image = compare_batch(np.zeros((2, 0, 5), np.uint8), np.zeros((2, 0, 5), np.uint8))[0]
    assert (image.verdict, image.psnr, image.differing_pixels) == ("identical", math.inf, 0)
    assert image.max_abs is None


@pytest.mark.parametrize(
    ("dtype", "x", "y"),
    [
        (np.int64, -(2**63), 2**63 - 1),
        (np.uint64, 0, 2**64 - 1),
        (np.int8, -128, 127),
        (np.int32, -(2**31), 2**31 - 1),
    ],
)
def test_integer_extremes_are_exact(dtype: type, x: int, y: int) -> None:
    a = np.full((3, 7), x, dtype=dtype)
    b = a.copy()
    b[0] = y  # every element at the widest distance: its sum overflows 64 bits
    b[1, 2] = y
    assert_rows_equal(a, b)
    result = compare_batch(a, b)[0]
    assert result.max_ulp == abs(y - x)
    assert result.mean_abs == abs(y - x) * 7 / 7


def test_float_specials() -> None:
    tiny = float(np.finfo(np.float64).smallest_subnormal)
    a = np.array([[0.0, np.nan, np.inf, 1.0, tiny, -tiny, 1e308, np.nan]])
    b = np.array([[-0.0, -np.nan, np.inf, np.nan, -tiny, tiny, -1e308, 3.0]])
    assert_rows_equal(a, b)
    assert_rows_equal(a, b, Tolerance(ulp=2))
    result = compare_batch(a, b)[0]
    widest = 2 * int(np.float64(1e308).view(np.int64))  # through zero across signs
    assert (result.nan_mismatch, result.max_ulp, result.max_abs) == (2, widest, math.inf)
    assert result.mismatched == 5  # not 0.0 vs -0.0, NaN vs NaN, Inf vs Inf
    # NaN vs a number ranks as an infinite error, ties to the lower index
    assert result.worst_indices == ((3,), (6,), (7,), (4,), (5,))


def test_one_ulp_rows_and_tolerances() -> None:
    a = np.random.default_rng(3).random((50, 64)).astype(np.float32)
    b = a.copy()
    b[::5, 10] = np.nextafter(b[::5, 10], np.float32(2))
    for tolerance in (Tolerance(), Tolerance(ulp=1), Tolerance(max_mismatch_fraction=0.02)):
        assert_rows_equal(a, b, tolerance)
    assert {r.verdict for r in compare_batch(a, b, Tolerance(ulp=1))} == {
        "identical", "within_tolerance",
    }  # fmt: skip


def test_complex_rows_index_the_real_view() -> None:
    a = np.zeros((2, 3), dtype=np.complex64)
    b = a.copy()
    b[1, 2] = 1j
    assert_rows_equal(a, b)
    assert compare_batch(a, b)[1].worst_indices == ((2, 1),)


def test_strided_and_fortran_ordered_inputs() -> None:
    rng = np.random.default_rng(7)
    a = rng.standard_normal((6, 10, 8)).astype(np.float32)
    b = a.copy()
    b[::2, 3, ::3] += 1
    assert_rows_equal(a[:, ::2, ::-1], b[:, ::2, ::-1])
    assert_rows_equal(np.asfortranarray(a), np.asfortranarray(b))
    assert_rows_equal(a.transpose(2, 0, 1), b.transpose(2, 0, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int16])
def test_rows_of_one_whole_block(dtype: type) -> None:
    """The longest rows of the fast path: every element, one in 8, and fewer differ."""
    size = batch_module.ROW_LIMIT
    rng = np.random.default_rng(11)
    a = (rng.standard_normal((4, size)) * 100).astype(dtype)
    b = a.copy()
    b[0] += dtype(1)
    b[1, ::8] += dtype(1)
    b[2, ::9] += dtype(1)
    b[3, :3] = a[3, :3] * 2
    assert_rows_equal(a, b)


def test_what_does_not_take_the_fast_path_still_equals_the_loop() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = a + 1
    assert_rows_equal(a, b, Tolerance(match="rows", atol=1.0))  # row matching
    assert_rows_equal(a, b.astype(np.float64))  # incomparable
    assert_rows_equal(a, b.astype(">f4"))  # the same values in another byte order
    assert_rows_equal(a, b[:, :3])  # other shapes
    long_a = np.zeros((2, batch_module.ROW_LIMIT + 1), dtype=np.float32)
    long_b = long_a.copy()
    long_b[1, ::3] = 1e-3
    assert_rows_equal(long_a, long_b)


def test_errors_and_empty_batches() -> None:
    with pytest.raises(OutputError):
        compare_batch(np.array([["x"]]), np.array([["y"]]))
    with pytest.raises(ValueError, match="rows"):
        compare_batch(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="rows"):
        compare_batch(np.zeros(()), np.zeros(()))
    assert compare_batch(np.zeros((0, 3)), np.zeros((0, 3))) == []


def test_identical_rows_share_one_result() -> None:
    a = np.zeros((5, 4), dtype=np.float32)
    a[3, 0] = np.nan
    results = compare_batch(a, a.copy())
    assert results[0] is results[1] is results[4]
    assert results[3] == compare_arrays(a[3], a[3]) and results[3].max_abs == 0.0
    assert results[3].total - 1 == 3  # one NaN position is not comparable


def test_temporaries_stay_bounded() -> None:
    """Every row differs everywhere: without chunks the temporaries would take ~2 GB."""
    rows, size = 20_000, 1024
    a = np.random.default_rng(5).random((rows, size)).astype(np.float32)
    b = a + np.float32(1)
    tracemalloc.start()
    try:
        results = compare_batch(a, b)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(results) == rows
    assert results[-1] == compare_arrays(a[-1], b[-1])
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MB"
