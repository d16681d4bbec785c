"""Integer chunks (not bool), block by block in buffers allocated once per stream.

A block is either a slice of the flat arrays (a dense chunk) or the gathered differing
elements of a sparse chunk. Every metric is exact and equals what the general path
(``values.int_values``) gives:

* |a - b| is computed in the unsigned type of the dtype's own width (max - min wraps to
  the exact distance), so 8-bit data moves 8-bit lanes, not 64-bit ones;
* sums of |a - b| and of its square are exact integers: float sums where every partial
  sum is an integer below 2**24 (float32) or 2**53 (float64), else uint64 sums; for a
  block whose largest distance is small, from counts of the distances above each step;
* max |a - b| / |a| is computed as the reference does, in float64; for 8-bit dtypes the
  element with the largest ratio is found in float32 (see ``_narrow_max_rel``), and a
  block whose bound (largest distance / smallest |a| where b differs) cannot raise the
  running maximum is skipped;
* the worst errors are ranked by float64(|a - b|), as the reference ranks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from reprocheck.compare.dense import block_max_rel
from reprocheck.compare.dtypes import (
    BITS_VIEW,
    AnyArray,
    BoolArray,
    DistanceArray,
    IndexArray,
    WideArray,
)
from reprocheck.compare.rules import Tolerance
from reprocheck.compare.totals import (
    WORST_COUNT,
    Totals,
    merge_worst,
    top_positions,
    worst_threshold,
)

# Integers up to these are exact in float32 and float64: sums that stay below are exact.
_FLOAT32_EXACT = 2**24
_FLOAT64_EXACT = 2**53
# Up to this largest distance, the sums come from counts of distances >= j (no floats).
_FEW = 4
# Squares of 8-bit distances are summed in float32 rows of this length: 256 * 255**2 is
# below 2**24, so every partial sum of a row is exact.
_SQUARES_ROW = 256


@dataclass(frozen=True, kw_only=True)
class IntScratch:
    """Buffers of one block of integers, allocated once per stream."""

    distance: DistanceArray  # |a - b| in the unsigned type of the dtype's width
    low: AnyArray  # min(a, b) in the dtype, then |a| (8-bit), then per-pixel flags
    wide_distance: WideArray  # |a - b| as float32 (8-bit dtypes) or float64
    wide_a: WideArray  # |a| in the same float type, then |a - b| / |a|
    flags: BoolArray
    channels: int | None  # of an image, else None


def int_scratch(size: int, dtype: np.dtype[Any], channels: int | None) -> IntScratch:
    wide = np.float32 if dtype.itemsize == 1 else np.float64
    return IntScratch(
        distance=np.empty(size, dtype=BITS_VIEW[dtype.itemsize]),
        low=np.empty(size, dtype=dtype),
        wide_distance=np.empty(size, dtype=wide),
        wide_a=np.empty(size, dtype=wide),
        flags=np.empty(size, dtype=np.bool_),
        channels=channels,
    )


@dataclass(frozen=True, kw_only=True)
class _Place:
    """Where a block's elements are in the flat array: from ``offset`` on, or at
    ``positions`` (gathered)."""

    offset: int = 0
    positions: IndexArray | None = None

    def index(self, i: int) -> int:
        return self.offset + i if self.positions is None else int(self.positions[i])


# --------------------------------------------------------------------------- one block


def _distance_into(a: AnyArray, b: AnyArray, scratch: IntScratch) -> DistanceArray:
    """|a - b| exactly, in the unsigned type of the same width (max - min wraps to it)."""
    distance, low = scratch.distance[: a.size], scratch.low[: a.size]
    np.maximum(a, b, out=distance.view(a.dtype))
    np.minimum(a, b, out=low)
    np.subtract(distance, low.view(distance.dtype), out=distance)
    return distance


@dataclass(frozen=True, kw_only=True)
class _Block:
    """One block with differing elements: a, |a - b| and what every metric reads."""

    a: AnyArray
    distance: DistanceArray
    peak: int  # the largest distance
    differing: int  # elements with a distance > 0
    place: _Place
    scratch: IntScratch

    @property
    def size(self) -> int:
        return self.a.size

    @cached_property
    def levels(self) -> list[int] | None:
        """#(|a - b| >= j) for j = 1 .. peak when the peak is at most _FEW, else None:
        then sum |a - b| is their sum, and sum |a - b|**2 that of (2j - 1) times them."""
        if self.peak > _FEW:
            return None
        flags = self.scratch.flags[: self.size]
        above = (np.greater_equal(self.distance, j, out=flags) for j in range(2, self.peak + 1))
        return [self.differing, *(int(np.count_nonzero(level)) for level in above)]

    @cached_property
    def wide(self) -> WideArray:
        """The distances as floats, converted on first use (exact below 2**53)."""
        wide = self.scratch.wide_distance[: self.size]
        np.copyto(wide, self.distance, casting="unsafe")  # rounded as astype above 2**53
        return wide


def _float_sum(values: WideArray) -> int:
    """The sum of integer-valued floats whose partial sums are all exact."""
    return int(np.einsum("i->", values))  # no BLAS; twice as fast as sum() for float32


def _exact_sum(values: DistanceArray, peak: int) -> int:
    """The exact sum of unsigned values no larger than ``peak``, through uint64."""
    if peak * values.size < 2**64:
        return int(np.add.reduce(values, dtype=np.uint64))
    high = np.add.reduce(values >> 32, dtype=np.uint64)  # each half sums below 2**64
    low = np.add.reduce(values & 0xFFFFFFFF, dtype=np.uint64)
    return (int(high) << 32) + int(low)


def _sum_abs(block: _Block) -> int:
    if block.levels is not None:
        return sum(block.levels)
    limit = _FLOAT32_EXACT if block.wide.dtype == np.float32 else _FLOAT64_EXACT
    if block.peak * block.size < limit:
        return _float_sum(block.wide)
    return _exact_sum(block.distance, block.peak)


def _count_outside(block: _Block, atol: float) -> int:
    """Count of differing elements with float64(|a - b|) > atol."""
    if math.isnan(atol) or float(block.peak) <= atol:
        return 0
    if atol < 1.0:  # every differing element is at least 1 away
        return block.differing
    if atol < _FLOAT64_EXACT:  # then float64(d) > atol exactly when d > floor(atol)
        flags = block.scratch.flags[: block.size]
        return int(np.count_nonzero(np.greater(block.distance, math.floor(atol), out=flags)))
    return int(np.count_nonzero(block.distance.astype(np.float64) > atol))


def _narrow_max_rel(block: _Block, known: float) -> float:
    """``_max_rel`` of 8-bit integers, located in float32.

    Without a 0 in a, no ratio exceeds the largest distance. Else |a| is taken where b
    differs and 255 (a ratio of 0) elsewhere: a 0 there makes the ratio infinite, and
    largest distance / smallest |a| bounds the block's ratios; a block that cannot raise
    ``known`` is skipped. Two different ratios p / q and r / s of integers up to 255
    differ by 1 / (q s) at least, a relative 1 / 65025 of the larger: far more than
    float32 rounding, so the element with the largest float32 ratio has the largest
    ratio, and one float64 division gives the exact result.
    """
    a, distance, scratch = block.a, block.distance, block.scratch
    if block.peak <= known and np.count_nonzero(a) == a.size:  # no ratio can be larger
        return known
    magnitude = scratch.low[: block.size]
    if a.dtype.kind == "i":
        np.abs(a, out=magnitude)  # wraps -128 to -128, whose unsigned view is 128
    else:
        np.copyto(magnitude, a)
    unsigned = magnitude.view(distance.dtype)
    equal = np.equal(distance, 0, out=scratch.flags[: block.size]).view(np.uint8)
    np.negative(equal, out=equal)  # 0 or 255
    np.bitwise_or(unsigned, equal, out=unsigned)
    smallest = int(unsigned.min())
    if smallest == 0:
        return math.inf
    if block.peak / smallest <= known:  # int / int rounds once, like the ratios
        return known
    ratio = scratch.wide_a[: block.size]
    np.copyto(ratio, unsigned)
    np.divide(block.wide, ratio, out=ratio)
    index = int(ratio.argmax())
    return max(known, float(distance[index]) / abs(float(a[index])))


def _max_rel(block: _Block, known: float) -> float:
    """max(known, float64(|a - b|) / float64(|a|)), 0 / 0 counting as 0 (as the reference
    ``values.relative``)."""
    if known == math.inf:  # it cannot grow
        return known
    if block.wide.dtype == np.float32:
        return _narrow_max_rel(block, known)
    wide_a = block.scratch.wide_a[: block.size]
    np.copyto(wide_a, block.a, casting="unsafe")  # as astype(float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return max(known, block_max_rel(wide_a, block.wide, wide_a))


def _worst_candidates(key: npt.NDArray[Any], threshold: float) -> IndexArray:
    """Elements whose key can enter the worst list: above the threshold, and at least the
    WORST_COUNT-th largest key of every 64th element (a floor of the block's own)."""
    sample = key[::64]
    if sample.size >= WORST_COUNT:
        floor = np.partition(sample, -WORST_COUNT)[-WORST_COUNT]
        if floor > threshold:
            return np.flatnonzero(key >= floor)
    return np.flatnonzero(key > threshold)


def _keep_worst(totals: Totals, block: _Block) -> None:
    """Fold the block's largest errors in, ranked by float64(|a - b|)."""
    threshold = worst_threshold(totals)
    if not float(block.peak) > threshold:
        return
    if block.peak < _FLOAT64_EXACT:  # compare as integers: the same order, no conversion
        candidates = _worst_candidates(block.distance, math.floor(threshold))
        key = block.distance[candidates].astype(np.float64)
    else:
        wide = block.distance.astype(np.float64)
        candidates = _worst_candidates(wide, threshold)
        key = wide[candidates]
    found = [(value, block.place.index(int(candidates[i]))) for i, value in top_positions(key)]
    merge_worst(totals, found)


# --------------------------------------------------------------------------- images


def _dense_pixels(block: _Block, channels: int) -> int:
    """Pixels with a differing channel in a block of whole pixels."""
    distance = block.distance
    if block.differing == block.size:
        return block.size // channels
    if channels == 1:
        return block.differing
    pixel_bytes = distance.dtype.itemsize * channels
    if channels in (2, 4) and pixel_bytes in BITS_VIEW:  # a pixel is one wider integer
        return int(np.count_nonzero(distance.view(BITS_VIEW[pixel_bytes])))
    size = block.size - channels + 1
    merged = block.scratch.low.view(distance.dtype)[:size]
    np.bitwise_or(distance[:size], distance[1 : size + 1], out=merged)
    for channel in range(2, channels):
        np.bitwise_or(merged, distance[channel : size + channel], out=merged)
    return int(np.count_nonzero(merged[::channels]))


def _gathered_pixels(totals: Totals, positions: IndexArray, channels: int) -> int:
    """Distinct pixels of gathered differing elements; a pixel may continue from the
    previous block of the same chunk."""
    pixels = positions // channels
    count = 1 + int(np.count_nonzero(np.diff(pixels)))
    if int(pixels[0]) == totals.last_pixel:
        count -= 1
    totals.last_pixel = int(pixels[-1])
    return count


def _sum_squares(block: _Block) -> int:
    """The exact sum of |a - b| squared. Not through BLAS (``np.dot``): its threads cost
    milliseconds a block when the cores are busy."""
    if block.levels is not None:
        return sum((2 * j + 1) * count for j, count in enumerate(block.levels))
    peak, wide = block.peak, block.wide
    if wide.dtype == np.float64 and peak * peak * wide.size < _FLOAT64_EXACT:
        return _float_sum(np.square(wide, out=block.scratch.wide_a[: block.size]))
    if wide.dtype == np.float32 and peak * peak * _SQUARES_ROW < _FLOAT32_EXACT:
        whole = wide.size - wide.size % _SQUARES_ROW
        rows = wide[:whole].reshape(-1, _SQUARES_ROW)
        squares = int(np.einsum("ij,ij->i", rows, rows).sum(dtype=np.float64))
        return squares + int(np.einsum("i,i->", wide[whole:], wide[whole:]))
    return _exact_sum(np.square(block.distance.astype(np.uint64)), peak * peak)  # < 2**32


def _add_image(totals: Totals, block: _Block, channels: int) -> None:
    totals.sum_sq += _sum_squares(block)
    if block.place.positions is None:
        totals.differing_pixels += _dense_pixels(block, channels)
    else:  # gathered elements all differ
        totals.differing_pixels += _gathered_pixels(totals, block.place.positions, channels)


# --------------------------------------------------------------------------- blocks


def _add_block(
    totals: Totals, a: AnyArray, b: AnyArray, place: _Place, scratch: IntScratch,
    tolerance: Tolerance,
) -> int:  # fmt: skip
    """Fold one block in; returns its count of differing elements."""
    distance = _distance_into(a, b, scratch)
    differing = int(np.count_nonzero(distance))
    if not differing:
        return 0
    peak = int(distance.max())
    block = _Block(
        a=a, distance=distance, peak=peak, differing=differing, place=place, scratch=scratch
    )
    totals.differing_bits += differing
    totals.mismatched += differing
    totals.outside += _count_outside(block, tolerance.atol)
    totals.exact_sum_abs += _sum_abs(block)
    totals.max_abs = max(totals.max_abs, float(peak))
    totals.max_ulp = max(totals.max_ulp, peak)
    totals.max_rel = _max_rel(block, totals.max_rel)
    _keep_worst(totals, block)
    if scratch.channels is not None:
        _add_image(totals, block, scratch.channels)
    return differing


def add_dense_ints(
    totals: Totals, a: AnyArray, b: AnyArray, tolerance: Tolerance, scratch: IntScratch,
    span: range,
) -> int:  # fmt: skip
    """Elements ``span`` (a chunk, in steps of whole pixels) of flat integer arrays, block
    by block. Returns the count of differing elements (already added to the totals)."""
    counted = 0
    for offset in span:
        stop = min(offset + span.step, span.stop)
        place = _Place(offset=offset)
        counted += _add_block(totals, a[offset:stop], b[offset:stop], place, scratch, tolerance)
    return counted


def add_gathered_ints(
    totals: Totals, a: AnyArray, b: AnyArray, tolerance: Tolerance, scratch: IntScratch,
    positions: IndexArray,
) -> None:  # fmt: skip
    """The elements of flat integer arrays at ``positions`` (ascending, all differing),
    gathered block by block."""
    step = scratch.distance.size
    for start in range(0, positions.size, step):
        where = positions[start : start + step]
        _add_block(totals, a[where], b[where], _Place(positions=where), scratch, tolerance)
