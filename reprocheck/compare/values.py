"""Element-wise facts about gathered or whole chunks: the general (not block) path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reprocheck.compare.dtypes import FLOAT_BITS, AnyArray, BoolArray, FloatArray, UIntArray
from reprocheck.compare.rules import Tolerance


@dataclass(frozen=True, kw_only=True)
class Values:
    """Element-wise facts about the bit-different elements of one chunk."""

    unequal: BoolArray  # values differ (NaN vs NaN and +0 vs -0 are equal)
    nan_x: BoolArray  # NaN vs number
    inf_x: BoolArray  # Inf vs a different value (not NaN)
    nan_any: int  # positions where a or b is NaN
    nan_a: int  # positions where a is NaN
    diff: FloatArray  # |a - b|, 0 where equal or NaN is involved
    rel: FloatArray
    ulp: UIntArray  # 0 where NaN is involved
    outside: BoolArray  # not within tolerance

    @classmethod
    def without_nan(
        cls, *, unequal: BoolArray, diff: FloatArray, rel: FloatArray, ulp: UIntArray,
        outside: BoolArray,
    ) -> Values:  # fmt: skip
        """Values of a chunk with no NaN or Inf in it (finite floats, integers, bools)."""
        nothing = np.zeros(unequal.shape, dtype=np.bool_)
        return cls(unequal=unequal, nan_x=nothing, inf_x=nothing, nan_any=0, nan_a=0,
                   diff=diff, rel=rel, ulp=ulp, outside=outside)  # fmt: skip


def _position(bits: npt.NDArray[np.signedinteger[Any]]) -> npt.NDArray[np.int64]:
    """Signed position of sign-magnitude float bits on the number line (-0.0 and +0.0 -> 0).

    Branch-free: with sign = bits >> (width - 1) (0 or -1), (magnitude ^ sign) - sign is
    the magnitude, negated for negative values. Fits the bits' own width.
    """
    width = 8 * bits.dtype.itemsize
    sign = bits >> (width - 1)
    position = bits & bits.dtype.type(np.iinfo(bits.dtype).max)
    np.bitwise_xor(position, sign, out=position)
    np.subtract(position, sign, out=position)
    return position.astype(np.int64, copy=False)


def _distance(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> UIntArray:
    """|a - b| of int64 values, exact in uint64 (wrap-around of hi - lo is the answer)."""
    high = np.maximum(a, b).view(np.uint64)
    low = np.minimum(a, b).view(np.uint64)
    np.subtract(high, low, out=high)
    return high


def float_ulp(a: AnyArray, b: AnyArray) -> UIntArray:
    """ULP distance in the dtype's own representable values, exact in uint64 (any shape)."""
    bits = FLOAT_BITS[a.dtype.itemsize]
    position_a, position_b = _position(a.view(bits)), _position(b.view(bits))
    if a.dtype.itemsize == 8:
        return _distance(position_a, position_b)
    np.subtract(position_a, position_b, out=position_a)  # no overflow from 32 bits
    return np.abs(position_a, out=position_a).view(np.uint64)


def relative(diff: FloatArray, magnitude: FloatArray) -> FloatArray:
    """diff / |a|, with x / 0 = inf for x > 0, 0 / 0 = 0 and d / inf = inf for d = inf."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel: FloatArray = diff / magnitude
    undefined = np.isnan(rel)
    if undefined.any():
        rel[undefined] = np.where(diff[undefined] > 0, np.inf, 0.0)
    return rel


def _all_finite(chunk: AnyArray) -> bool:
    """No NaN and no Inf (min and max propagate NaN): two fast reductions."""
    return chunk.size == 0 or bool(np.isfinite(chunk.min()) and np.isfinite(chunk.max()))


def _close(
    diff: FloatArray, magnitude: FloatArray, ulp: UIntArray, tolerance: Tolerance
) -> BoolArray:
    """|a - b| <= atol + rtol * |a|, or within the ULP bound when one is given."""
    with np.errstate(invalid="ignore"):
        if tolerance.rtol:
            close: BoolArray = diff <= tolerance.atol + tolerance.rtol * magnitude
        else:
            close = diff <= tolerance.atol
    if tolerance.ulp is not None:
        close |= ulp <= tolerance.ulp
    return close


def _finite_values(a: AnyArray, b: AnyArray, tolerance: Tolerance) -> Values:
    """The common case without NaN or Inf: fewer passes over the chunk."""
    unequal = a != b
    wide_a = a.astype(np.float64)
    magnitude = np.abs(wide_a)
    with np.errstate(over="ignore"):
        diff = np.abs(wide_a - b.astype(np.float64))
    ulp = float_ulp(a, b)
    return Values.without_nan(
        unequal=unequal,
        diff=diff,
        rel=relative(diff, magnitude),
        ulp=ulp,
        outside=unequal & ~_close(diff, magnitude, ulp, tolerance),
    )


def float_values(a: AnyArray, b: AnyArray, tolerance: Tolerance) -> Values:
    if _all_finite(a) and _all_finite(b):
        return _finite_values(a, b, tolerance)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    nan_x = nan_a ^ nan_b
    involved = nan_a | nan_b
    unequal = (a != b) & ~(nan_a & nan_b)
    wide_a = a.astype(np.float64)
    magnitude = np.abs(wide_a)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(wide_a - b.astype(np.float64))
    np.copyto(diff, 0.0, where=~unequal | involved)
    inf_x = unequal & ~nan_x & (np.isinf(a) | np.isinf(b))
    ulp = float_ulp(a, b)
    np.copyto(ulp, 0, where=involved)
    return Values(
        unequal=unequal,
        nan_x=nan_x,
        inf_x=inf_x,
        nan_any=int(np.count_nonzero(involved)),
        nan_a=int(np.count_nonzero(nan_a)),
        diff=diff,
        rel=relative(diff, magnitude),
        ulp=ulp,
        outside=unequal & (nan_x | inf_x | ~_close(diff, magnitude, ulp, tolerance)),
    )


def int_values(a: AnyArray, b: AnyArray, tolerance: Tolerance) -> Values:
    """Integers and bools: exact unless atol is given (rtol and ulp do not apply).

    The stream takes this path for bools only: other integers go block by block
    (``integers.py``), which gives the same metrics.
    """
    if a.dtype == np.uint64:
        distance: UIntArray = np.maximum(a, b) - np.minimum(a, b)
    else:
        distance = _distance(a.astype(np.int64, copy=False), b.astype(np.int64, copy=False))
    diff = distance.astype(np.float64)
    unequal = distance != 0
    return Values.without_nan(
        unequal=unequal,
        diff=diff,
        rel=relative(diff, np.abs(a.astype(np.float64))),
        ulp=distance,
        outside=unequal & (diff > tolerance.atol),
    )
