"""Element-wise comparison of two arrays of the same dtype and shape, and its verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reprocheck.compare.chunking import Chunking
from reprocheck.compare.dtypes import IMAGE_MAX, AnyArray, flat, native, value_kind
from reprocheck.compare.results import Verdict
from reprocheck.compare.rules import Tolerance
from reprocheck.compare.stream import Stream, stream_totals
from reprocheck.compare.totals import Totals, nan_count


def _image_channels(array: AnyArray) -> int | None:
    """Channels of an image-like uint8/uint16 array (H x W or H x W x 1..4), else None."""
    if array.dtype not in IMAGE_MAX:
        return None
    if array.ndim == 2:
        return 1
    if array.ndim == 3 and 1 <= array.shape[2] <= 4:
        return int(array.shape[2])
    return None


def psnr(totals: Totals, peak: float) -> float:
    if totals.sum_sq == 0 or totals.total == 0:
        return math.inf
    return 10.0 * math.log10(peak**2 * totals.total / totals.sum_sq)


def verdict(totals: Totals, tolerance: Tolerance) -> Verdict:
    if totals.differing_bits == 0:
        return "identical"
    if totals.outside <= tolerance.max_mismatch_fraction * totals.total:
        return "within_tolerance"
    return "drift"


@dataclass(frozen=True, kw_only=True)
class Elements:
    """Element-wise metrics of two arrays of the same dtype and shape."""

    totals: Totals
    index_shape: tuple[int, ...]
    channels: int | None
    image_max: float = 0.0


def elements(a: AnyArray, b: AnyArray, tolerance: Tolerance, chunking: Chunking) -> Elements:
    a, b = native(a), native(b)
    flat_a, index_shape = flat(a)
    flat_b, _ = flat(b)
    channels = _image_channels(a)
    stream = Stream(
        a=flat_a,
        b=flat_b,
        kind=value_kind(a.dtype),
        tolerance=tolerance,
        image_channels=channels,
        chunking=chunking,
    )
    return Elements(
        totals=stream_totals(stream),
        index_shape=index_shape,
        channels=channels,
        image_max=IMAGE_MAX.get(a.dtype, 0.0),
    )


def identical_elements(a: AnyArray) -> Elements:
    """What :func:`elements` finds for two bit-identical arrays, without streaming them:
    every element equal, and only the NaN positions to count (they are not comparable)."""
    a = native(a)
    flat_a, index_shape = flat(a)
    totals = Totals(total=int(flat_a.size), nan_positions=nan_count(flat_a))
    channels = _image_channels(a)
    return Elements(totals=totals, index_shape=index_shape, channels=channels,
                    image_max=IMAGE_MAX.get(a.dtype, 0.0))  # fmt: skip


def unravel(flat_positions: Sequence[int], shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Flat positions as index tuples; a 0-d array's only element has the index ``()``."""
    if not flat_positions:
        return ()
    if not shape:
        return tuple(() for _ in flat_positions)
    columns = np.unravel_index(np.asarray(flat_positions, dtype=np.intp), shape)
    return tuple(tuple(int(c[i]) for c in columns) for i in range(len(flat_positions)))
