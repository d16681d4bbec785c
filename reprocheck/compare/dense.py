"""Dense float chunks: most elements differ, so every block is computed whole, in place."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reprocheck.compare.dtypes import (
    BITS_VIEW,
    FLOAT_BITS,
    AnyArray,
    BitsArray,
    BoolArray,
    DistanceArray,
    FloatArray,
    WideArray,
    differing_bits,
)
from reprocheck.compare.rules import Tolerance
from reprocheck.compare.totals import (
    WORST_COUNT,
    Totals,
    add_values,
    merge_worst,
    top_positions,
    worst_threshold,
)
from reprocheck.compare.values import float_values


@dataclass(frozen=True, kw_only=True)
class FloatScratch:
    """Buffers of one block of a dense float chunk, allocated once per stream."""

    diff: FloatArray  # |a - b| in float64, as the reference computes it
    work: FloatArray  # a widened to float64, then |a - b| / |a|, then the tolerance bound
    ulp: BitsArray  # the ULP distance, read through an unsigned view of the same width
    position_a: BitsArray
    position_b: BitsArray
    close: BoolArray
    other: BoolArray


def float_scratch(size: int, itemsize: int) -> FloatScratch:
    bits = FLOAT_BITS[itemsize]
    return FloatScratch(
        diff=np.empty(size, dtype=np.float64),
        work=np.empty(size, dtype=np.float64),
        ulp=np.empty(size, dtype=bits),
        position_a=np.empty(size, dtype=bits),
        position_b=np.empty(size, dtype=bits),
        close=np.empty(size, dtype=np.bool_),
        other=np.empty(size, dtype=np.bool_),
    )


def _position_into(bits: BitsArray, out: BitsArray, sign: BitsArray) -> None:
    """``values._position`` into ``out`` without allocating (``sign`` is scratch)."""
    np.right_shift(bits, 8 * bits.dtype.itemsize - 1, out=sign)
    np.bitwise_and(bits, np.iinfo(bits.dtype).max, out=out)
    np.bitwise_xor(out, sign, out=out)
    np.subtract(out, sign, out=out)


def _block_ulp(a: AnyArray, b: AnyArray, scratch: FloatScratch) -> tuple[DistanceArray, int]:
    """ULP distance of finite values in the dtype's own width (it fits its unsigned view),
    and the count of bit-different elements.

    Where the signs agree it is the difference of the raw bits: two passes and a check.
    """
    size = a.size
    signed, unsigned = FLOAT_BITS[a.dtype.itemsize], BITS_VIEW[a.dtype.itemsize]
    bits_a, bits_b, ulp = a.view(signed), b.view(signed), scratch.ulp[:size]
    np.bitwise_xor(bits_a, bits_b, out=ulp)
    differing = int(np.count_nonzero(ulp))
    if ulp.min() >= 0:  # no sign differs
        np.subtract(bits_a, bits_b, out=ulp)
        return np.abs(ulp, out=ulp).view(unsigned), differing
    position_a, position_b = scratch.position_a[:size], scratch.position_b[:size]
    _position_into(bits_a, position_a, ulp)
    _position_into(bits_b, position_b, ulp)
    np.maximum(position_a, position_b, out=ulp)
    np.minimum(position_a, position_b, out=position_a)
    np.subtract(ulp, position_a, out=ulp)  # wraps exactly like values._distance
    return ulp.view(unsigned), differing


def block_max_rel(wide_a: WideArray, diff: WideArray, out: WideArray) -> float:
    """max |a - b| / |a| over finite values; 0 / 0 counts as 0 (see ``values.relative``).

    ``out`` is scratch of the block's size (it may be ``wide_a`` itself).
    """
    rel = np.abs(wide_a, out=out)
    np.divide(diff, rel, out=rel)
    peak = float(rel.max())
    if math.isnan(peak):
        peak = float(np.fmax.reduce(rel))
    return 0.0 if math.isnan(peak) else peak


def _block_outside(
    a: AnyArray, diff: FloatArray, ulp: DistanceArray, scratch: FloatScratch, tolerance: Tolerance
) -> int:
    """Count of finite elements not within tolerance, as ``values._close`` decides it."""
    size = a.size
    close, other = scratch.close[:size], scratch.other[:size]
    if tolerance.rtol:
        bound = np.abs(a, out=scratch.work[:size])
        np.multiply(bound, tolerance.rtol, out=bound)
        np.add(bound, tolerance.atol, out=bound)
        np.less_equal(diff, bound, out=close)
    else:
        np.less_equal(diff, tolerance.atol, out=close)
    if tolerance.ulp is not None:
        np.less_equal(ulp, tolerance.ulp, out=other)
        np.logical_or(close, other, out=close)
    np.not_equal(ulp, 0, out=other)  # values differ
    np.greater(other, close, out=other)  # ... and are not close
    return int(np.count_nonzero(other))


def _all_close(peak_abs: float, peak_ulp: int, tolerance: Tolerance) -> bool:
    """Whether the block's largest errors already prove every element within tolerance."""
    if tolerance.ulp is not None and peak_ulp <= tolerance.ulp:
        return True
    return peak_abs <= tolerance.atol and 0.0 <= tolerance.rtol < math.inf


def _fifth_largest_floor(diff: FloatArray) -> float:
    """A value that the block's WORST_COUNT-th largest error is at least: that of every
    64th element (0 for small blocks)."""
    sample = diff[::64]
    if sample.size < WORST_COUNT:
        return 0.0
    return float(np.partition(sample, -WORST_COUNT)[-WORST_COUNT])


def keep_worst_block(totals: Totals, diff: FloatArray, peak: float, offset: int) -> None:
    """Fold a block's largest errors in, looking only at those that can enter the list.

    Later indices lose ties, so an error must beat the current last one to enter; and
    one below the block's WORST_COUNT-th largest cannot enter either.
    """
    threshold = worst_threshold(totals)
    if not peak > threshold:
        return
    floor = _fifth_largest_floor(diff)
    candidates = np.flatnonzero(diff >= floor if floor > threshold else diff > threshold)
    key = diff[candidates]
    found = [(value, offset + int(candidates[i])) for i, value in top_positions(key)]
    merge_worst(totals, found)


def _widen(a: AnyArray, out: FloatArray) -> FloatArray:
    """``a`` as float64: itself, or exactly widened into ``out``."""
    if a.dtype == np.float64:
        return np.asarray(a, dtype=np.float64)
    np.copyto(out, a)
    return out


def _add_finite_block(
    totals: Totals,
    a: AnyArray,
    b: AnyArray,
    offset: int,
    scratch: FloatScratch,
    tolerance: Tolerance,
) -> bool:
    """Fold one block in, or return False (nothing folded) if a value is NaN or Inf.

    Runs under the caller's ``np.errstate`` (overflow, 0 / 0 and x / 0 are expected).
    """
    diff = scratch.diff[: a.size]
    wide_a = _widen(a, scratch.work[: a.size])
    np.subtract(wide_a, b, out=diff)  # as the reference: float(a) - float(b)
    np.abs(diff, out=diff)
    sum_abs = float(diff.sum())
    if not math.isfinite(sum_abs):  # NaN or Inf in a or b, or an overflow
        return False
    ulp, differing = _block_ulp(a, b, scratch)
    peak_abs, peak_ulp = float(diff.max()), int(ulp.max())
    totals.differing_bits += differing
    totals.mismatched += int(np.count_nonzero(ulp))
    totals.max_rel = max(totals.max_rel, block_max_rel(wide_a, diff, scratch.work[: a.size]))
    if not _all_close(peak_abs, peak_ulp, tolerance):
        totals.outside += _block_outside(a, diff, ulp, scratch, tolerance)
    totals.sum_abs += sum_abs
    totals.max_abs = max(totals.max_abs, peak_abs)
    totals.max_ulp = max(totals.max_ulp, peak_ulp)
    keep_worst_block(totals, diff, peak_abs, offset)
    return True


def add_dense_floats(
    totals: Totals,
    a: AnyArray,
    b: AnyArray,
    tolerance: Tolerance,
    scratch: FloatScratch,
    span: range,
) -> int:
    """Elements ``span`` (a chunk) of flat float arrays where most elements differ, block
    by block (``span.step`` elements) in the scratch buffers.

    Blocks with NaN or Inf take the general path (which also counts their NaNs). Returns
    the count of bit-different elements (already added to the totals).
    """
    differing = totals.differing_bits
    for offset in span:
        stop = min(offset + span.step, span.stop)
        block_a, block_b = a[offset:stop], b[offset:stop]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            finite = _add_finite_block(totals, block_a, block_b, offset, scratch, tolerance)
        if not finite:
            totals.differing_bits += int(np.count_nonzero(differing_bits(block_a, block_b)))
            values = float_values(block_a, block_b, tolerance)
            totals.nan_positions += values.nan_a
            add_values(totals, values, np.arange(offset, stop))
    return totals.differing_bits - differing
