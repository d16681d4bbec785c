"""Many small outputs of one dtype and shape at once: ``compare_batch``.

A run compares thousands of small outputs (one per dataset sample), where one
``compare_arrays`` call per output costs far more in per-call overhead than in arithmetic.
``compare_batch`` takes the outputs as the rows of two arrays and computes each metric of
a chunk of rows with one numpy pass, so that row i of its result equals
``compare_arrays(a[i], b[i], tolerance)`` field for field, floats bit for bit:

* a row whose bytes equal the baseline's costs a bit comparison and a NaN count;
* mean_abs of floats sums |a - b| in the order compare_arrays does: the whole row when at
  least 1 / DENSE of its elements differ (the dense path of the stream), else its gathered
  bit-different elements (the sparse path). numpy's pairwise sum over the last axis of a
  C-contiguous 2-d array sums each row as it sums that row alone, so rows are summed
  together: dense rows as they are, sparse rows grouped by their count of differing
  elements;
* integer sums are exact (Python ints where 64-bit distances could overflow a uint64 sum).

The fast path takes float16/32/64, complex64/128 (as the real view), integer and bool rows
of up to one block (``Chunking.block`` elements, what compare_arrays computes in one
block); longer rows, ``match="rows"`` and pairs of different dtypes or shapes go through
compare_arrays one row at a time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from reprocheck.compare.api import compare_arrays
from reprocheck.compare.chunking import DEFAULT_CHUNKING
from reprocheck.compare.dtypes import (
    BITS_VIEW,
    IMAGE_MAX,
    AnyArray,
    BoolArray,
    FloatArray,
    IndexArray,
    Kind,
    UIntArray,
    native,
    value_kind,
)
from reprocheck.compare.results import ArrayComparison, Verdict
from reprocheck.compare.rules import Tolerance
from reprocheck.compare.stream import DENSE
from reprocheck.compare.totals import WORST_COUNT
from reprocheck.compare.values import float_ulp, relative

_EXACT = Tolerance()

# The longest row of the fast path: compare_arrays folds a row this long in one chunk and
# one block, so the order of its float sums is that of one numpy sum.
ROW_LIMIT = min(DEFAULT_CHUNKING.block, DEFAULT_CHUNKING.chunk)
# Elements of one chunk of rows. A chunk's temporaries take about 100 bytes an element
# (a dozen float64/uint64 and bool arrays of the chunk's shape): some 13 MB. Larger chunks
# measured no faster.
CHUNK_ELEMENTS = 1 << 17

Worst: TypeAlias = tuple[tuple[int, ...], ...]
Int64Array: TypeAlias = npt.NDArray[np.int64]


class _Indices:
    """The index tuples of a row's flat positions, made as positions come up."""

    def __init__(self, shape: tuple[int, ...], size: int) -> None:
        self.shape = shape
        self.tuples = np.empty(size, dtype=object)
        self.known = np.zeros(size, dtype=np.bool_)

    def take(self, positions: IndexArray, found: BoolArray) -> list[list[tuple[int, ...]]]:
        """The index tuples of ``positions`` (of any shape), as nested lists; those where
        ``found`` holds must be valid positions."""
        wanted = positions[found]
        missing = np.unique(wanted[~self.known[wanted]])
        if missing.size:
            self._add(missing)
        taken: list[list[tuple[int, ...]]] = self.tuples[positions].tolist()
        return taken

    def _add(self, missing: IndexArray) -> None:
        if self.shape:
            columns = np.stack(np.unravel_index(missing, self.shape), axis=-1).tolist()
        else:  # a 0-d row's only element has the index ()
            columns = [[]] * missing.size
        for position, index in zip(missing.tolist(), columns, strict=True):
            self.tuples[position] = tuple(index)
        self.known[missing] = True


@dataclass(frozen=True, kw_only=True)
class _Layout:
    """What every row of a batch shares."""

    tolerance: Tolerance
    dtype: tuple[str, str]
    shape: tuple[tuple[int, ...], tuple[int, ...]]
    values: np.dtype[Any]  # native dtype of a row's flat (real) view
    kind: Kind  # float (complex too) or int (bool too)
    size: int  # elements of a row's flat view
    indices: _Indices  # of worst positions, in the shape worst indices refer to
    image_max: float | None  # the peak of an image-like row, else None
    channels: int

    @property
    def limit(self) -> float:
        """Outside-tolerance elements a row may have and still be within tolerance."""
        return self.tolerance.max_mismatch_fraction * self.size


@dataclass(frozen=True, kw_only=True)
class _Metrics:
    """Per-row metrics of the rows that differ, as Python values."""

    mismatched: list[int]
    outside: list[int]
    nan_positions: list[int]
    nan_mismatch: list[int]
    inf_mismatch: list[int]
    max_abs: list[float]
    sum_abs: list[float] | list[int]  # floats: numpy's float64 sums; integers: exact
    max_rel: list[float]
    max_ulp: list[int]
    worst: list[Worst]
    psnr: list[float] | None = None  # images only
    differing_pixels: list[int] | None = None  # images only


# --------------------------------------------------------------------------- layout


def _image_channels(dtype: np.dtype[Any], shape: tuple[int, ...]) -> int | None:
    """Channels of an image-like uint8/uint16 row (H x W or H x W x 1..4), else None."""
    if dtype not in IMAGE_MAX:
        return None
    if len(shape) == 2:
        return 1
    if len(shape) == 3 and 1 <= shape[2] <= 4:
        return shape[2]
    return None


def _layout(a: AnyArray, b: AnyArray, tolerance: Tolerance) -> _Layout | None:
    """What the rows share, or None when they go through compare_arrays one at a time."""
    if tolerance.match != "elements" or a.dtype != b.dtype or a.shape != b.shape:
        return None
    dtype = a.dtype.newbyteorder("=")
    shape = tuple(int(n) for n in a.shape[1:])
    complex_pairs = dtype.kind == "c"
    values = np.dtype(dtype.char.lower()) if complex_pairs else dtype
    size = math.prod(shape) * (2 if complex_pairs else 1)
    if size > ROW_LIMIT:
        return None
    channels = _image_channels(dtype, shape)
    return _Layout(
        tolerance=tolerance,
        dtype=(str(a[0].dtype), str(b[0].dtype)),  # a 0-d row is a (native) scalar
        shape=(shape, shape),
        values=values,
        kind=value_kind(dtype),
        size=size,
        indices=_Indices((*shape, 2) if complex_pairs else shape, size),
        image_max=None if channels is None else IMAGE_MAX[dtype],
        channels=channels or 1,
    )


def _flat(layout: _Layout, rows: AnyArray) -> AnyArray:
    """Rows as a C-contiguous (rows, size) array of native real values."""
    flat = np.ascontiguousarray(native(rows))
    return flat.reshape(-1).view(layout.values).reshape(rows.shape[0], layout.size)


# --------------------------------------------------------------------------- results


def _identical(layout: _Layout, nan_positions: int) -> ArrayComparison:
    """What compare_arrays returns for a bit-identical row with this many NaNs."""
    some = layout.size - nan_positions > 0
    image = layout.image_max is not None
    return ArrayComparison(
        verdict="identical",
        rule=layout.tolerance.pattern,
        dtype=layout.dtype,
        shape=layout.shape,
        total=layout.size,
        bit_identical=True,
        max_abs=0.0 if some else None,
        mean_abs=0.0 if some else None,
        max_rel=0.0 if some else None,
        max_ulp=0 if some else None,
        psnr=math.inf if image else None,
        differing_pixels=0 if image else None,
    )


def _psnr(peak: float, total: int, sum_sq: int) -> float:
    if sum_sq == 0 or total == 0:
        return math.inf
    return 10.0 * math.log10(peak**2 * total / sum_sq)


def _some(values: list[Any], comparable: list[int]) -> list[Any]:
    """The values, None for rows without a comparable element (every one NaN)."""
    if all(comparable):
        return values
    return [value if count > 0 else None for value, count in zip(values, comparable, strict=True)]


def _results(layout: _Layout, metrics: _Metrics) -> list[ArrayComparison]:
    """The results of the differing rows. Building them is most of the cost of a differing
    row (the frozen dataclass's __init__, some 3 us), and every keyword adds to it: fields
    left at their defaults are not passed (bit_identical=False; psnr and differing_pixels
    but for images)."""
    c = _differing_columns(layout, metrics)
    pictures: list[dict[str, Any]] = [{}] * len(metrics.outside)
    if metrics.psnr is not None and metrics.differing_pixels is not None:
        pairs = zip(c["psnr"], c["differing_pixels"], strict=True)
        pictures = [{"psnr": psnr, "differing_pixels": pixels} for psnr, pixels in pairs]
    rows = zip(c["verdict"], c["mismatched"], c["max_abs"], c["mean_abs"], c["max_rel"],
               c["max_ulp"], c["worst_indices"], c["nan_mismatch"], c["inf_mismatch"],
               pictures, strict=True)  # fmt: skip
    rule, dtype, shape, total = layout.tolerance.pattern, layout.dtype, layout.shape, layout.size
    return [
        ArrayComparison(
            verdict=verdict, rule=rule, dtype=dtype, shape=shape, total=total,
            mismatched=mismatched, max_abs=max_abs, mean_abs=mean, max_rel=max_rel,
            max_ulp=max_ulp, worst_indices=worst, nan_mismatch=nan_x, inf_mismatch=inf_x,
            **picture,
        )
        for verdict, mismatched, max_abs, mean, max_rel, max_ulp, worst, nan_x, inf_x, picture
        in rows
    ]  # fmt: skip


def _differing_columns(layout: _Layout, metrics: _Metrics) -> dict[str, list[Any]]:
    """The fields of the differing rows that differ from an identical row's, by column."""
    count = len(metrics.outside)
    comparable = [layout.size - nans for nans in metrics.nan_positions]
    psnr: list[Any] = [None] * count if metrics.psnr is None else metrics.psnr
    pixels: list[Any] = [None] * count if metrics.differing_pixels is None else (
        metrics.differing_pixels)  # fmt: skip
    mean_abs = [s / n if n > 0 else None
                for s, n in zip(metrics.sum_abs, comparable, strict=True)]  # fmt: skip
    verdicts: list[Verdict] = ["within_tolerance" if outside <= layout.limit else "drift"
                               for outside in metrics.outside]  # fmt: skip
    return {
        "verdict": verdicts,
        "bit_identical": [False] * count,
        "mismatched": metrics.mismatched,
        "max_abs": _some(metrics.max_abs, comparable),
        "mean_abs": mean_abs,
        "max_rel": _some(metrics.max_rel, comparable),
        "max_ulp": _some(metrics.max_ulp, comparable),
        "worst_indices": metrics.worst,
        "nan_mismatch": metrics.nan_mismatch,
        "inf_mismatch": metrics.inf_mismatch,
        "psnr": psnr,
        "differing_pixels": pixels,
    }


# --------------------------------------------------------------------------- shared


def _count(flags: BoolArray) -> list[int]:
    counts: list[int] = np.count_nonzero(flags, axis=1).tolist()
    return counts


def _worst(key: FloatArray, layout: _Layout) -> list[Worst]:
    """Per row, the indices of the WORST_COUNT largest keys > 0, largest first and the lower
    index first among equals (``totals.top_positions``). Overwrites ``key``."""
    rows, size = key.shape
    width = min(WORST_COUNT, size)
    every = np.arange(rows)
    positions = np.zeros((rows, width), dtype=np.intp)
    found = np.zeros((rows, width), dtype=np.bool_)
    for j in range(width):
        top = key.argmax(axis=1)  # the first of equal maxima
        positions[:, j] = top
        found[:, j] = key[every, top] > 0
        if not found[:, j].any():
            break
        key[every, top] = -1.0
    worst: list[Worst] = list(map(tuple, layout.indices.take(positions, found)))
    counts = np.count_nonzero(found, axis=1)
    for row in np.flatnonzero(counts < width).tolist():
        worst[row] = worst[row][: counts[row]]
    return worst


# --------------------------------------------------------------------------- floats


def _close(
    diff: FloatArray, magnitude: FloatArray, ulp: UIntArray, tolerance: Tolerance
) -> BoolArray:
    """|a - b| <= atol + rtol * |a|, or within the ULP bound when one is given."""
    with np.errstate(invalid="ignore", over="ignore"):
        if tolerance.rtol:
            close: BoolArray = diff <= tolerance.atol + tolerance.rtol * magnitude
        else:
            close = diff <= tolerance.atol
    if tolerance.ulp is not None:
        close |= ulp <= tolerance.ulp
    return close


def _float_sums(diff: FloatArray, differs: BoolArray, counts: IndexArray) -> list[float]:
    """Per row, the sum of |a - b| in compare_arrays' order: the whole row (dense) or its
    gathered bit-different elements (sparse), by numpy's pairwise sum."""
    sums = np.empty(diff.shape[0], dtype=np.float64)
    dense = counts * DENSE >= diff.shape[1]
    with np.errstate(over="ignore"):
        sums[dense] = diff[dense].sum(axis=1)
        sparse = ~dense
        for count in np.unique(counts[sparse]).tolist():
            rows = np.flatnonzero(sparse & (counts == count))
            sums[rows] = diff[rows][differs[rows]].reshape(rows.size, count).sum(axis=1)
    listed: list[float] = sums.tolist()
    return listed


@dataclass(frozen=True, kw_only=True)
class _Specials:
    """Where NaN and Inf are in rows of floats."""

    involved: BoolArray  # a or b is NaN
    nan_x: BoolArray  # NaN vs a number
    inf_x: BoolArray  # Inf vs a different value (not NaN)


def _float_facts(
    a: AnyArray, b: AnyArray
) -> tuple[BoolArray, FloatArray, FloatArray, UIntArray, _Specials | None]:
    """unequal, |a - b|, |a| and the ULP distance of rows of floats (as
    ``values.float_values``: 0 where equal or NaN is involved), and where NaN and Inf are
    (None when there are none: the common case, with fewer passes)."""
    wide_a = a.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(np.subtract(wide_a, b, dtype=np.float64))
    magnitude = np.abs(wide_a, out=wide_a)
    ulp = float_ulp(a, b)
    if np.isfinite(a).all() and np.isfinite(b).all():
        return a != b, diff, magnitude, ulp, None
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    involved = nan_a | nan_b
    nan_x = nan_a ^ nan_b
    unequal = (a != b) & ~(nan_a & nan_b)
    np.copyto(diff, 0.0, where=~unequal | involved)
    np.copyto(ulp, 0, where=involved)
    inf_x = unequal & ~nan_x & (np.isinf(a) | np.isinf(b))
    return unequal, diff, magnitude, ulp, _Specials(involved=involved, nan_x=nan_x, inf_x=inf_x)


def _float_metrics(
    layout: _Layout, a: AnyArray, b: AnyArray, differs: BoolArray, counts: IndexArray
) -> _Metrics:
    """Rows of floats (``values.float_values`` on every element of each row)."""
    unequal, diff, magnitude, ulp, specials = _float_facts(a, b)
    outside = ~_close(diff, magnitude, ulp, layout.tolerance)
    zeros = [0] * a.shape[0]
    nan_positions, nan_mismatch, inf_mismatch = zeros, zeros, zeros
    if specials is not None:
        outside |= specials.nan_x | specials.inf_x
        nan_positions = _count(specials.involved)
        nan_mismatch, inf_mismatch = _count(specials.nan_x), _count(specials.inf_x)
    outside &= unequal
    max_abs: list[float] = diff.max(axis=1).tolist()
    sum_abs = _float_sums(diff, differs, counts)
    max_rel: list[float] = relative(diff, magnitude).max(axis=1).tolist()
    if specials is not None:  # NaN vs a number ranks first
        np.copyto(diff, np.inf, where=specials.nan_x)
    return _Metrics(
        mismatched=_count(unequal),
        outside=_count(outside),
        nan_positions=nan_positions,
        nan_mismatch=nan_mismatch,
        inf_mismatch=inf_mismatch,
        max_abs=max_abs,
        sum_abs=sum_abs,
        max_rel=max_rel,
        max_ulp=ulp.max(axis=1).tolist(),
        worst=_worst(diff, layout),
    )


# --------------------------------------------------------------------------- integers


def _int_distance(a: AnyArray, b: AnyArray) -> UIntArray:
    """|a - b| exactly, in the unsigned type of the same width (max - min wraps to it)."""
    if a.dtype == np.bool_:
        flips: UIntArray = np.not_equal(a, b).view(np.uint8)
        return flips
    unsigned = BITS_VIEW[a.dtype.itemsize]
    high = np.maximum(a, b).view(unsigned)
    np.subtract(high, np.minimum(a, b).view(unsigned), out=high)
    distance: UIntArray = high
    return distance


def _exact_sums(distance: UIntArray) -> list[int]:
    """Per row, the exact sum of the distances (below 2**64 unless they are 64-bit)."""
    if distance.dtype.itemsize < 8:
        small: list[int] = distance.sum(axis=1, dtype=np.uint64).tolist()
        return small
    high = (distance >> np.uint64(32)).sum(axis=1, dtype=np.uint64).tolist()
    low = (distance & np.uint64(0xFFFFFFFF)).sum(axis=1, dtype=np.uint64).tolist()
    return [(h << 32) + l_ for h, l_ in zip(high, low, strict=True)]


def _image_metrics(layout: _Layout, distance: UIntArray, unequal: BoolArray) -> dict[str, Any]:
    if layout.image_max is None:
        return {}
    wide = distance.astype(np.uint64)
    squares = np.square(wide, out=wide).sum(axis=1, dtype=np.uint64).tolist()
    pixels: BoolArray = np.logical_or.reduce(
        unequal.reshape(unequal.shape[0], -1, layout.channels), axis=2
    )
    peak = layout.image_max
    return {
        "psnr": [_psnr(peak, layout.size, sum_sq) for sum_sq in squares],
        "differing_pixels": _count(pixels),
    }


def _int_metrics(layout: _Layout, a: AnyArray, b: AnyArray) -> _Metrics:
    """Rows of integers or bools: exact, atol the only tolerance (as ``integers.py``)."""
    distance = _int_distance(a, b)
    unequal = distance != 0
    wide = distance.astype(np.float64)  # as compare_arrays ranks and bounds them
    outside: BoolArray = unequal & np.greater(wide, layout.tolerance.atol)
    with np.errstate(divide="ignore", invalid="ignore"):  # d / 0 = inf; 0 / 0 is ignored
        rel = np.divide(wide, np.abs(a.astype(np.float64)))
    mismatched = _count(unequal)
    zeros = [0] * len(mismatched)
    return _Metrics(
        mismatched=mismatched,
        outside=_count(outside),
        nan_positions=zeros,
        nan_mismatch=zeros,
        inf_mismatch=zeros,
        max_abs=wide.max(axis=1).tolist(),
        sum_abs=_exact_sums(distance),
        max_rel=np.fmax.reduce(rel, axis=1).tolist(),  # a row differs: not all NaN
        max_ulp=distance.max(axis=1).tolist(),
        worst=_worst(wide, layout),
        **_image_metrics(layout, distance, unequal),
    )


# --------------------------------------------------------------------------- chunks


def _nan_counts(layout: _Layout, flat_a: AnyArray) -> list[int]:
    if layout.kind != "float":
        return [0] * flat_a.shape[0]
    return _count(np.isnan(flat_a))


@dataclass(frozen=True, kw_only=True)
class _Chunk:
    """A chunk of rows compared: every row's NaN count, and the metrics of those whose bits
    differ (the others are bit-identical)."""

    nans: list[int]
    rows: list[int]  # the differing rows, ascending
    metrics: _Metrics | None


def _compare_chunk(layout: _Layout, a: AnyArray, b: AnyArray) -> _Chunk:
    flat_a, flat_b = _flat(layout, a), _flat(layout, b)
    bits = BITS_VIEW[layout.values.itemsize]
    differs = flat_a.view(bits) != flat_b.view(bits)
    counts = np.count_nonzero(differs, axis=1)
    nans = _nan_counts(layout, flat_a)
    rows = np.flatnonzero(counts)
    if rows.size == 0:
        return _Chunk(nans=nans, rows=[], metrics=None)
    if layout.kind == "float":
        metrics = _float_metrics(layout, flat_a[rows], flat_b[rows], differs[rows], counts[rows])
    else:
        metrics = _int_metrics(layout, flat_a[rows], flat_b[rows])
    return _Chunk(nans=nans, rows=rows.tolist(), metrics=metrics)


def _chunks(layout: _Layout, a: AnyArray, b: AnyArray) -> Iterator[_Chunk]:
    step = max(1, CHUNK_ELEMENTS // max(1, layout.size))
    for start in range(0, int(a.shape[0]), step):
        rows = slice(start, start + step)
        yield _compare_chunk(layout, a[rows], b[rows])


def _checked_layout(a: AnyArray, b: AnyArray, tolerance: Tolerance) -> _Layout | None:
    if a.ndim == 0 or b.ndim == 0 or a.shape[0] != b.shape[0]:
        raise ValueError(f"cannot compare rows of arrays shaped {a.shape} and {b.shape}")
    value_kind(a.dtype)
    value_kind(b.dtype)
    return _layout(a, b, tolerance) if a.shape[0] else None


def compare_batch(a: AnyArray, b: AnyArray, tolerance: Tolerance = _EXACT) -> list[ArrayComparison]:
    """Compare each row ``b[i]`` with ``a[i]``: ``[compare_arrays(a[i], b[i], tolerance) for
    i in range(len(a))]``, computed a chunk of rows at a time.

    ``a`` and ``b`` have shape ``(n, *shape)``. Rows that are bit-identical and have the
    same count of NaNs share one (frozen) result object. Raises OutputError for a dtype
    that does not compare (as compare_arrays), ValueError when ``a`` and ``b`` are 0-d or
    hold different counts of rows.
    """
    count = int(a.shape[0]) if a.ndim else 0
    layout = _checked_layout(a, b, tolerance)
    if count == 0:
        return []
    if layout is None:
        return [compare_arrays(a[i], b[i], tolerance) for i in range(count)]
    same: dict[int, ArrayComparison] = {}
    results: list[ArrayComparison] = []
    for chunk in _chunks(layout, a, b):
        start = len(results)
        for nans in chunk.nans:
            if nans not in same:
                same[nans] = _identical(layout, nans)
            results.append(same[nans])
        if chunk.metrics is not None:
            for row, result in zip(chunk.rows, _results(layout, chunk.metrics), strict=True):
                results[start + row] = result
    return results


def batch_columns(a: AnyArray, b: AnyArray, tolerance: Tolerance = _EXACT) -> dict[str, list[Any]]:
    """:func:`compare_batch`'s results as columns: per field of ArrayComparison, a list
    with a value per row (``dtype`` and ``shape`` as pairs), made without an object per
    row; what a run of many differing outputs writes as a table."""
    count = int(a.shape[0]) if a.ndim else 0
    layout = _checked_layout(a, b, tolerance)
    if layout is None:
        results = [compare_arrays(a[i], b[i], tolerance) for i in range(count)]
        return {name: [getattr(r, name) for r in results] for name in _FIELDS}
    columns: dict[str, list[Any]] = {name: [] for name in _FIELDS}
    for chunk in _chunks(layout, a, b):
        _chunk_columns(layout, chunk, columns)
    return columns


_FIELDS = [field.name for field in dataclasses.fields(ArrayComparison)]


def _chunk_columns(layout: _Layout, chunk: _Chunk, columns: dict[str, list[Any]]) -> None:
    """Append a chunk's rows to ``columns``: the identical ones as :func:`_identical` makes
    them, the differing ones as :func:`_results` does."""
    same = {nans: _identical(layout, nans) for nans in set(chunk.nans)}
    fields = {name: [getattr(same[nans], name) for nans in chunk.nans] for name in _FIELDS}
    if chunk.metrics is not None:
        for name, values in _differing_columns(layout, chunk.metrics).items():
            column = fields[name]
            for row, value in zip(chunk.rows, values, strict=True):
                column[row] = value
    for name in _FIELDS:
        columns[name].extend(fields[name])
