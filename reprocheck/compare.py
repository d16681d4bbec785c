"""Pure numeric comparison of one output between a baseline (a) and a candidate (b).

Everything here returns data; nothing formats text or prints. Large arrays are streamed
in chunks over flat views so that the extra memory is a small multiple of one chunk.

Notes on the metrics, in the user's words:

* An element is *mismatched* when its values differ: NaN vs NaN at the same place is
  equal, +0.0 vs -0.0 is equal, NaN vs a number is a mismatch.
* ULP distance counts the representable values of the array's own dtype between the two
  values, through zero across signs (``ulp(-0.0, +0.0) == 0``); for integer and bool
  arrays it is ``|a - b|``, computed without overflow.
* Complex arrays are compared as their real and imaginary parts: the element metrics
  and ``worst_indices`` refer to the real view with a trailing axis of 2.
* An element is within tolerance when equal in value, or ``|a - b| <= atol + rtol*|a|``,
  or its ULP distance is <= ``ulp``. NaN vs a number and Inf vs a different value never
  are. Integers and bools are exact unless ``atol`` is given (``rtol`` and ``ulp`` do not
  apply to them).
* ``worst_indices`` rank NaN vs a number as an infinite error; ties keep the lower index.
* With ``match="rows"`` the element metrics (total, mismatched, max_abs, ...) describe the
  matched row pairs, cast to the common dtype; their indices name baseline rows.
* Decisions never change the verdict. A boxes decision is reported even when the box
  counts differ (verdict "incomparable" unless the output also uses ``match="rows"``).
* ``compare_arrays`` never returns "missing", "error" or "nondeterministic": those are
  verdicts of the runner, which knows whether an output exists and repeats agree.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from reprocheck.errors import OutputError

Verdict = Literal[
    "identical",
    "within_tolerance",
    "drift",
    "incomparable",
    "missing",
    "error",
    "nondeterministic",
]
Kind = Literal["float", "int"]
AnyArray: TypeAlias = npt.NDArray[np.generic]
FloatArray: TypeAlias = npt.NDArray[np.float64]
UIntArray: TypeAlias = npt.NDArray[np.uint64]
BitsArray: TypeAlias = npt.NDArray[np.signedinteger[Any]]
DistanceArray: TypeAlias = npt.NDArray[np.unsignedinteger[Any]]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
IndexArray: TypeAlias = npt.NDArray[np.intp]

# Elements per chunk. A multiple of 1, 2, 3 and 4 so that the pixels of an image with
# up to four channels never straddle two chunks. About 1.5 M elements keeps the
# temporaries of one chunk within a few tens of MB.
CHUNK = 3 * 2**19
# Elements per block of a dense float chunk. The block's scratch buffers (two float64,
# three integer and two bool buffers: about 2 MB for float32) are allocated once and
# reused by every block, so the fifteen or so numpy passes over a block run from cache,
# not memory. 64 K elements measured fastest: 32 K pays numpy's per-call overhead
# (about 1 us a pass) 10% more, 128 K no longer gains.
BLOCK = 2**16
WORST_COUNT = 5
# Metrics are computed on the gathered bit-different elements of a chunk, or on the whole
# chunk when at least 1 / DENSE of it differs.
DENSE = 8
_FLOAT_BITS: dict[int, type[np.signedinteger[Any]]] = {
    2: np.int16,
    4: np.int32,
    8: np.int64,
}
_BITS_VIEW = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_IMAGE_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


# --------------------------------------------------------------------------- rules


def _specificity(pattern: str) -> tuple[int, int]:
    """Sort key of a glob: fewer wildcards first, then the longer literal part first."""
    wildcards = 0
    literal = 0
    index = 0
    while index < len(pattern):
        char = pattern[index]
        closing = pattern.find("]", index + 2) if char == "[" else -1
        if char in "*?":
            wildcards += 1
        elif closing != -1:
            wildcards += 1
            index = closing
        else:
            literal += 1
        index += 1
    return (wildcards, -literal)


def _most_specific(patterns: Sequence[str], name: str) -> int | None:
    """Index of the most specific pattern matching ``name``; the first one wins ties."""
    matching = [i for i, pattern in enumerate(patterns) if fnmatch.fnmatchcase(name, pattern)]
    if not matching:
        return None
    return min(matching, key=lambda i: _specificity(patterns[i]))


@dataclass(frozen=True, kw_only=True)
class Tolerance:
    """How far a candidate element may be from the baseline and still agree."""

    pattern: str = "default"
    atol: float = 0.0
    rtol: float = 0.0
    ulp: int | None = None
    max_mismatch_fraction: float = 0.0
    match: Literal["elements", "rows"] = "elements"


@dataclass(frozen=True, kw_only=True)
class ToleranceRules:
    """Per-output tolerances: glob rules plus a default."""

    default: Tolerance = Tolerance()
    rules: tuple[Tolerance, ...] = ()

    def for_output(self, name: str) -> Tolerance:
        found = _most_specific([rule.pattern for rule in self.rules], name)
        return self.default if found is None else self.rules[found]


@dataclass(frozen=True, kw_only=True)
class DecisionRule:
    """Which downstream decision an output drives: a class, labels or boxes."""

    pattern: str
    kind: Literal["argmax", "labels", "boxes"]
    iou: float = 0.5


@dataclass(frozen=True, kw_only=True)
class DecisionRules:
    rules: tuple[DecisionRule, ...] = ()

    def for_output(self, name: str) -> DecisionRule | None:
        found = _most_specific([rule.pattern for rule in self.rules], name)
        return None if found is None else self.rules[found]


# --------------------------------------------------------------------------- results


def _json_float(value: float | None) -> float | str | None:
    """JSON has no NaN or Inf: those become the strings "nan", "inf" and "-inf"."""
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def _to_json(value: object) -> object:
    """A result as JSON data: nested results as objects, tuples as lists, floats made safe."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, tuple | list):
        return [_to_json(item) for item in value]
    return value


def _as_json(result: object) -> dict[str, object]:
    data = _to_json(result)
    assert isinstance(data, dict)
    return data


@dataclass(frozen=True, kw_only=True)
class RowMatch:
    """Rows of a and b paired by nearest neighbour (max abs difference <= atol)."""

    matched: int
    only_in_baseline: int
    only_in_candidate: int
    max_displacement: float | None

    def as_json(self) -> dict[str, object]:
        return _as_json(self)


@dataclass(frozen=True, kw_only=True)
class DecisionComparison:
    """How many downstream decisions (classes, labels, boxes) changed."""

    kind: Literal["argmax", "labels", "boxes"]
    total: int
    decisions_changed: int
    min_margin: float | None = None
    appeared: int | None = None
    vanished: int | None = None
    moved: int | None = None

    def as_json(self) -> dict[str, object]:
        return _as_json(self)


@dataclass(frozen=True, kw_only=True)
class ArrayComparison:
    """Every metric of one output between baseline (a) and candidate (b)."""

    verdict: Verdict
    rule: str
    dtype: tuple[str, str]
    shape: tuple[tuple[int, ...], tuple[int, ...]]
    total: int = 0
    mismatched: int = 0
    bit_identical: bool = False
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    max_ulp: int | None = None
    worst_indices: tuple[tuple[int, ...], ...] = ()
    nan_mismatch: int = 0
    inf_mismatch: int = 0
    psnr: float | None = None
    differing_pixels: int | None = None
    rows: RowMatch | None = None
    decision: DecisionComparison | None = None

    def as_json(self) -> dict[str, object]:
        return _as_json(self)


# --------------------------------------------------------------------------- dtypes


def _kind(dtype: np.dtype[np.generic]) -> Kind:
    if dtype.kind in "fc" and dtype.itemsize // (2 if dtype.kind == "c" else 1) in _FLOAT_BITS:
        return "float"
    if dtype.kind in "iub":
        return "int"
    raise OutputError(
        f"cannot compare arrays of dtype {dtype}",
        fix="outputs must be float16/32/64, complex64/128, integer or bool arrays",
    )


def _native(array: AnyArray) -> AnyArray:
    if array.dtype.isnative:
        return array
    return array.astype(array.dtype.newbyteorder("="))


def _flat(array: AnyArray) -> tuple[AnyArray, tuple[int, ...]]:
    """A flat C-order view (complex as real pairs) and the shape its indices refer to."""
    flat = np.ascontiguousarray(array).reshape(-1)
    if array.dtype.kind == "c":
        return flat.view(flat.real.dtype), (*array.shape, 2)
    return flat, array.shape


# --------------------------------------------------------------------------- element values


@dataclass(frozen=True, kw_only=True)
class _Values:
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
    ) -> _Values:  # fmt: skip
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


def _float_ulp(a: AnyArray, b: AnyArray) -> UIntArray:
    bits = _FLOAT_BITS[a.dtype.itemsize]
    position_a, position_b = _position(a.view(bits)), _position(b.view(bits))
    if a.dtype.itemsize == 8:
        return _distance(position_a, position_b)
    np.subtract(position_a, position_b, out=position_a)  # no overflow from 32 bits
    return np.abs(position_a, out=position_a).view(np.uint64)


def _relative(diff: FloatArray, magnitude: FloatArray) -> FloatArray:
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


def _finite_values(a: AnyArray, b: AnyArray, tolerance: Tolerance) -> _Values:
    """The common case without NaN or Inf: fewer passes over the chunk."""
    unequal = a != b
    wide_a = a.astype(np.float64)
    magnitude = np.abs(wide_a)
    with np.errstate(over="ignore"):
        diff = np.abs(wide_a - b.astype(np.float64))
    ulp = _float_ulp(a, b)
    return _Values.without_nan(
        unequal=unequal,
        diff=diff,
        rel=_relative(diff, magnitude),
        ulp=ulp,
        outside=unequal & ~_close(diff, magnitude, ulp, tolerance),
    )


def _float_values(a: AnyArray, b: AnyArray, tolerance: Tolerance) -> _Values:
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
    ulp = _float_ulp(a, b)
    np.copyto(ulp, 0, where=involved)
    return _Values(
        unequal=unequal,
        nan_x=nan_x,
        inf_x=inf_x,
        nan_any=int(np.count_nonzero(involved)),
        nan_a=int(np.count_nonzero(nan_a)),
        diff=diff,
        rel=_relative(diff, magnitude),
        ulp=ulp,
        outside=unequal & (nan_x | inf_x | ~_close(diff, magnitude, ulp, tolerance)),
    )


def _int_values(a: AnyArray, b: AnyArray, tolerance: Tolerance) -> _Values:
    """Integers and bools: exact unless atol is given (rtol and ulp do not apply)."""
    if a.dtype == np.uint64:
        distance: UIntArray = np.maximum(a, b) - np.minimum(a, b)
    else:
        distance = _distance(a.astype(np.int64, copy=False), b.astype(np.int64, copy=False))
    diff = distance.astype(np.float64)
    unequal = distance != 0
    return _Values.without_nan(
        unequal=unequal,
        diff=diff,
        rel=_relative(diff, np.abs(a.astype(np.float64))),
        ulp=distance,
        outside=unequal & (diff > tolerance.atol),
    )


# --------------------------------------------------------------------------- totals


@dataclass(kw_only=True)
class _Totals:
    """Running sums over the chunks (internal and mutable on purpose: a fold)."""

    total: int = 0
    differing_bits: int = 0
    mismatched: int = 0
    outside: int = 0
    nan_positions: int = 0
    nan_mismatch: int = 0
    inf_mismatch: int = 0
    sum_abs: float = 0.0
    max_abs: float = 0.0
    max_rel: float = 0.0
    max_ulp: int = 0
    sum_sq: float = 0.0
    differing_pixels: int = 0
    worst: list[tuple[float, int]] = field(default_factory=list)


def _nan_count(chunk: AnyArray) -> int:
    if chunk.dtype.kind != "f" or chunk.size == 0 or not np.isnan(chunk.max()):
        return 0
    return int(np.count_nonzero(np.isnan(chunk)))


def _top_positions(key: FloatArray) -> list[tuple[int, float]]:
    """(index, key) of the WORST_COUNT largest positive keys, earliest first among equals.

    Overwrites ``key`` (a scratch array): a few argmax passes beat a partition.
    """
    top: list[tuple[int, float]] = []
    for _ in range(min(WORST_COUNT, key.size)):
        index = int(key.argmax())
        value = float(key[index])
        if not value > 0:
            break
        top.append((index, value))
        key[index] = -1.0
    return top


def _keep_worst(totals: _Totals, values: _Values, positions: IndexArray) -> None:
    """Fold this chunk's largest errors into the running top list (NaN vs number first).

    The key is > 0 exactly where values differ: |a - b| > 0 for unequal numbers.
    """
    nan_x = bool(values.nan_x.any())
    key = np.where(values.nan_x, np.inf, values.diff) if nan_x else values.diff.copy()
    _merge_worst(totals, [(value, int(positions[i])) for i, value in _top_positions(key)])


def _merge_worst(totals: _Totals, found: list[tuple[float, int]]) -> None:
    merged = totals.worst + found
    merged.sort(key=lambda item: (-item[0], item[1]))
    totals.worst = merged[:WORST_COUNT]


def _add_image(totals: _Totals, values: _Values, positions: IndexArray, channels: int) -> None:
    totals.sum_sq += float(np.dot(values.diff, values.diff))
    pixels = positions[values.unequal] // channels
    if pixels.size:
        totals.differing_pixels += 1 + int(np.count_nonzero(np.diff(pixels)))


def _add_values(totals: _Totals, values: _Values, positions: IndexArray) -> None:
    totals.mismatched += int(np.count_nonzero(values.unequal))
    totals.outside += int(np.count_nonzero(values.outside))
    totals.nan_positions += values.nan_any - values.nan_a
    totals.nan_mismatch += int(np.count_nonzero(values.nan_x))
    totals.inf_mismatch += int(np.count_nonzero(values.inf_x))
    if values.diff.size:
        with np.errstate(over="ignore"):
            totals.sum_abs += float(values.diff.sum())
        totals.max_abs = max(totals.max_abs, float(values.diff.max()))
        totals.max_rel = max(totals.max_rel, float(values.rel.max()))
        totals.max_ulp = max(totals.max_ulp, int(values.ulp.max()))
    _keep_worst(totals, values, positions)


# --------------------------------------------------------------------------- dense floats


@dataclass(frozen=True, kw_only=True)
class _Scratch:
    """Buffers of one block of a dense float chunk, allocated once per stream."""

    diff: FloatArray  # |a - b| in float64, as the reference computes it
    work: FloatArray  # a widened to float64, then |a - b| / |a|, then the tolerance bound
    ulp: BitsArray  # the ULP distance, read through an unsigned view of the same width
    position_a: BitsArray
    position_b: BitsArray
    close: BoolArray
    other: BoolArray


def _scratch(size: int, itemsize: int) -> _Scratch:
    bits = _FLOAT_BITS[itemsize]
    return _Scratch(
        diff=np.empty(size, dtype=np.float64),
        work=np.empty(size, dtype=np.float64),
        ulp=np.empty(size, dtype=bits),
        position_a=np.empty(size, dtype=bits),
        position_b=np.empty(size, dtype=bits),
        close=np.empty(size, dtype=np.bool_),
        other=np.empty(size, dtype=np.bool_),
    )


def _position_into(bits: BitsArray, out: BitsArray, sign: BitsArray) -> None:
    """``_position`` into ``out`` without allocating (``sign`` is scratch)."""
    np.right_shift(bits, 8 * bits.dtype.itemsize - 1, out=sign)
    np.bitwise_and(bits, np.iinfo(bits.dtype).max, out=out)
    np.bitwise_xor(out, sign, out=out)
    np.subtract(out, sign, out=out)


def _block_ulp(a: AnyArray, b: AnyArray, scratch: _Scratch) -> tuple[DistanceArray, int]:
    """ULP distance of finite values in the dtype's own width (it fits its unsigned view),
    and the count of bit-different elements.

    Where the signs agree it is the difference of the raw bits: two passes and a check.
    """
    size = a.size
    signed, unsigned = _FLOAT_BITS[a.dtype.itemsize], _BITS_VIEW[a.dtype.itemsize]
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
    np.subtract(ulp, position_a, out=ulp)  # wraps exactly like _distance
    return ulp.view(unsigned), differing


def _block_max_rel(wide_a: FloatArray, diff: FloatArray, scratch: _Scratch) -> float:
    """max |a - b| / |a| over finite values; 0 / 0 counts as 0 (see ``_relative``)."""
    rel = np.abs(wide_a, out=scratch.work[: wide_a.size])
    np.divide(diff, rel, out=rel)
    peak = float(rel.max())
    if math.isnan(peak):
        peak = float(np.fmax.reduce(rel))
    return 0.0 if math.isnan(peak) else peak


def _block_outside(
    a: AnyArray, diff: FloatArray, ulp: DistanceArray, scratch: _Scratch, tolerance: Tolerance
) -> int:
    """Count of finite elements not within tolerance, as ``_close`` decides it."""
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


def _keep_worst_block(totals: _Totals, diff: FloatArray, peak: float, offset: int) -> None:
    """Fold a block's largest errors in, looking only at those that can enter the list.

    Later indices lose ties, so an error must beat the current last one to enter; and
    one below the block's WORST_COUNT-th largest cannot enter either.
    """
    full = len(totals.worst) == WORST_COUNT
    threshold = totals.worst[-1][0] if full else 0.0
    if not peak > threshold:
        return
    floor = _fifth_largest_floor(diff)
    candidates = np.flatnonzero(diff >= floor if floor > threshold else diff > threshold)
    key = diff[candidates]
    found = [(value, offset + int(candidates[i])) for i, value in _top_positions(key)]
    _merge_worst(totals, found)


def _widen(a: AnyArray, out: FloatArray) -> FloatArray:
    """``a`` as float64: itself, or exactly widened into ``out``."""
    if a.dtype == np.float64:
        return np.asarray(a, dtype=np.float64)
    np.copyto(out, a)
    return out


def _add_finite_block(
    totals: _Totals, a: AnyArray, b: AnyArray, offset: int, scratch: _Scratch, tolerance: Tolerance
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
    totals.max_rel = max(totals.max_rel, _block_max_rel(wide_a, diff, scratch))
    if not _all_close(peak_abs, peak_ulp, tolerance):
        totals.outside += _block_outside(a, diff, ulp, scratch, tolerance)
    totals.sum_abs += sum_abs
    totals.max_abs = max(totals.max_abs, peak_abs)
    totals.max_ulp = max(totals.max_ulp, peak_ulp)
    _keep_worst_block(totals, diff, peak_abs, offset)
    return True


def _add_dense_floats(
    totals: _Totals, stream: _Stream, scratch: _Scratch, start: int, stop: int
) -> int:
    """A float chunk where most elements differ, block by block in the scratch buffers.

    Blocks with NaN or Inf take the general path (which also counts their NaNs). Returns
    the count of bit-different elements (already added to the totals).
    """
    differing = totals.differing_bits
    step = scratch.diff.size
    for offset in range(start, stop, step):
        a = stream.a[offset : min(offset + step, stop)]
        b = stream.b[offset : min(offset + step, stop)]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            finite = _add_finite_block(totals, a, b, offset, scratch, stream.tolerance)
        if not finite:
            totals.differing_bits += int(np.count_nonzero(_differing_bits(a, b)))
            values = _float_values(a, b, stream.tolerance)
            totals.nan_positions += values.nan_a
            _add_values(totals, values, np.arange(offset, offset + a.size))
    return totals.differing_bits - differing


# --------------------------------------------------------------------------- streaming


@dataclass(frozen=True, kw_only=True)
class _Stream:
    """What the chunk loop needs to know about the pair of flat arrays."""

    a: AnyArray
    b: AnyArray
    kind: Kind
    tolerance: Tolerance
    image_channels: int | None

    @cached_property
    def scratch(self) -> _Scratch | None:
        """The dense float path's buffers, allocated at the first dense float chunk."""
        if self.kind != "float":
            return None
        return _scratch(min(BLOCK, CHUNK, self.a.size), self.a.dtype.itemsize)


def _differing_bits(chunk_a: AnyArray, chunk_b: AnyArray) -> BoolArray:
    bits = _BITS_VIEW[chunk_a.dtype.itemsize]
    differs: BoolArray = chunk_a.view(bits) != chunk_b.view(bits)
    return differs


def _add_chunk(totals: _Totals, stream: _Stream, start: int, expect_dense: bool) -> bool:
    """Fold one chunk in. Returns whether it was dense, the guess for the next chunk: a
    float chunk guessed dense skips the bit comparison that decides (the blocks count)."""
    stop = min(start + CHUNK, stream.a.size)
    totals.total += stop - start
    if expect_dense and stream.scratch is not None:  # scratch is None unless floats
        counted = _add_dense_floats(totals, stream, stream.scratch, start, stop)
        return counted * DENSE >= stop - start
    differs = _differing_bits(stream.a[start:stop], stream.b[start:stop])
    count = int(np.count_nonzero(differs))
    dense = count * DENSE >= stop - start  # gathering would cost more than it saves
    if dense and stream.scratch is not None:
        _add_dense_floats(totals, stream, stream.scratch, start, stop)
    elif count:
        totals.differing_bits += count
        totals.nan_positions += _nan_count(stream.a[start:stop])
        _add_differing(totals, stream, start, differs, dense)
    else:
        totals.nan_positions += _nan_count(stream.a[start:stop])
    return dense


def _add_differing(
    totals: _Totals, stream: _Stream, start: int, differs: BoolArray, dense: bool
) -> None:
    """The general path: the whole chunk if dense, else its gathered differing elements."""
    chunk_a = stream.a[start : start + differs.size]
    chunk_b = stream.b[start : start + differs.size]
    if dense:
        positions = np.arange(chunk_a.size)
        part_a, part_b = chunk_a, chunk_b
    else:
        positions = np.flatnonzero(differs)
        part_a, part_b = chunk_a[positions], chunk_b[positions]
    if stream.kind == "float":
        values = _float_values(part_a, part_b, stream.tolerance)
    else:
        values = _int_values(part_a, part_b, stream.tolerance)
    positions += start
    _add_values(totals, values, positions)
    if stream.image_channels is not None:
        _add_image(totals, values, positions, stream.image_channels)


def _looks_dense(stream: _Stream) -> bool:
    """The guess for the first chunk: are most of the first BLOCK float elements different?
    A wrong guess costs time, never correctness."""
    head = min(BLOCK, stream.a.size)
    if stream.kind != "float" or head == 0:
        return False
    return int(np.count_nonzero(_differing_bits(stream.a[:head], stream.b[:head]))) * DENSE >= head


def _stream(stream: _Stream) -> _Totals:
    totals = _Totals()
    dense = _looks_dense(stream)
    for start in range(0, stream.a.size, CHUNK):
        dense = _add_chunk(totals, stream, start, dense)
    return totals


# --------------------------------------------------------------------------- element comparison


def _image_channels(array: AnyArray) -> int | None:
    """Channels of an image-like uint8/uint16 array (H x W or H x W x 1..4), else None."""
    if array.dtype not in _IMAGE_MAX:
        return None
    if array.ndim == 2:
        return 1
    if array.ndim == 3 and 1 <= array.shape[2] <= 4:
        return int(array.shape[2])
    return None


def _psnr(totals: _Totals, peak: float) -> float:
    if totals.sum_sq == 0.0 or totals.total == 0:
        return math.inf
    return 10.0 * math.log10(peak**2 * totals.total / totals.sum_sq)


def _verdict(totals: _Totals, tolerance: Tolerance) -> Verdict:
    if totals.differing_bits == 0:
        return "identical"
    if totals.outside <= tolerance.max_mismatch_fraction * totals.total:
        return "within_tolerance"
    return "drift"


@dataclass(frozen=True, kw_only=True)
class _Elements:
    """Element-wise metrics of two arrays of the same dtype and shape."""

    totals: _Totals
    index_shape: tuple[int, ...]
    channels: int | None
    image_max: float = 0.0


def _elements(a: AnyArray, b: AnyArray, tolerance: Tolerance) -> _Elements:
    a, b = _native(a), _native(b)
    flat_a, index_shape = _flat(a)
    flat_b, _ = _flat(b)
    channels = _image_channels(a)
    stream = _Stream(
        a=flat_a, b=flat_b, kind=_kind(a.dtype), tolerance=tolerance, image_channels=channels
    )
    return _Elements(
        totals=_stream(stream),
        index_shape=index_shape,
        channels=channels,
        image_max=_IMAGE_MAX.get(a.dtype, 0.0),
    )


def _unravel(flat: Sequence[int], shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Flat positions as index tuples; a 0-d array's only element has the index ``()``."""
    if not flat:
        return ()
    if not shape:
        return tuple(() for _ in flat)
    columns = np.unravel_index(np.asarray(flat, dtype=np.intp), shape)
    return tuple(tuple(int(c[i]) for c in columns) for i in range(len(flat)))


# --------------------------------------------------------------------------- rows


def _as_rows(array: AnyArray) -> FloatArray:
    rows = array.reshape(-1, 1) if array.ndim == 1 else array
    return np.asarray(rows, dtype=np.float64)


def _gap(x: FloatArray, y: FloatArray) -> FloatArray:
    """|x - y| broadcast, with NaN vs NaN = 0 and NaN vs a number = inf."""
    with np.errstate(invalid="ignore"):
        gap: FloatArray = np.abs(x - y)
    unknown = np.isnan(gap)
    if unknown.any():
        both = np.isnan(x) & np.isnan(y)
        gap[unknown] = np.where(np.broadcast_to(both, gap.shape)[unknown], 0.0, np.inf)
    return gap


def _row_distances(a: FloatArray, b: FloatArray) -> FloatArray:
    """Max abs difference of every row of a to every row of b."""
    out = np.zeros((a.shape[0], b.shape[0]), dtype=np.float64)
    for column in range(a.shape[1]):
        np.maximum(out, _gap(a[:, column, None], b[None, :, column]), out=out)
    return out


def _exact_pairs(a: FloatArray, b: FloatArray) -> tuple[IndexArray, IndexArray]:
    """Pair rows with equal values (as multisets), the cheap first pass of row matching."""
    both = np.concatenate([a, b])
    both[np.isnan(both)] = np.nan  # one NaN payload
    both[both == 0] = 0.0  # one zero sign
    keys = np.ascontiguousarray(both).view(np.dtype((np.void, both.shape[1] * 8))).ravel()
    _, group = np.unique(keys, return_inverse=True)
    group = group.reshape(-1)
    ranked = [_rank_keys(group[: len(a)], group.size), _rank_keys(group[len(a) :], group.size)]
    _, in_a, in_b = np.intersect1d(ranked[0], ranked[1], return_indices=True)
    return in_a.astype(np.intp), in_b.astype(np.intp)


def _rank_keys(group: npt.NDArray[np.intp], stride: int) -> npt.NDArray[np.int64]:
    """group * stride + (occurrence within the group): unique keys for multiset pairing."""
    order = np.argsort(group, kind="stable")
    ordered = group[order]
    rank = np.arange(group.size) - np.searchsorted(ordered, ordered, side="left")
    keys = np.empty(group.size, dtype=np.int64)
    keys[order] = ordered.astype(np.int64) * (stride + 1) + rank
    return keys


def _spread_argmin(d: FloatArray, offsets: IndexArray) -> IndexArray:
    """Nearest column of each row; among equally near columns, the first at or after the
    row's offset (so that duplicate rows pick different duplicate partners)."""
    nearest = d == d.min(axis=1, keepdims=True)
    after = np.arange(d.shape[1]) >= offsets[:, None]
    score = nearest.astype(np.int8) * 2 + after
    chosen: IndexArray = np.argmax(score, axis=1)
    return chosen


def _nearest_round(
    a: FloatArray, b: FloatArray, atol: float
) -> tuple[IndexArray, IndexArray, FloatArray]:
    """One greedy round: candidate pairs (each row's nearest), shortest first."""
    candidates: list[tuple[IndexArray, IndexArray, FloatArray]] = []
    block = max(1, CHUNK // max(1, b.shape[0] * a.shape[1]))
    for start in range(0, a.shape[0], block):
        d = _row_distances(a[start : start + block], b)
        rows = np.arange(d.shape[0])
        cols = np.arange(d.shape[1])
        to_b = _spread_argmin(d, (rows + start) % d.shape[1])
        candidates.append((rows + start, to_b, d[rows, to_b]))
        to_a = _spread_argmin(d.T, cols % d.shape[0])
        candidates.append((to_a + start, cols, d[to_a, cols]))
    ia, ib, dist = (np.concatenate(part) for part in zip(*candidates, strict=True))
    keep = dist <= atol
    order = np.argsort(dist[keep], kind="stable")
    return ia[keep][order], ib[keep][order], dist[keep][order]


def _greedy(ia: IndexArray, ib: IndexArray) -> BoolArray:
    taken_a: set[int] = set()
    taken_b: set[int] = set()
    accepted = np.zeros(ia.size, dtype=np.bool_)
    for k, (i, j) in enumerate(zip(ia.tolist(), ib.tolist(), strict=True)):
        if i not in taken_a and j not in taken_b:
            taken_a.add(i)
            taken_b.add(j)
            accepted[k] = True
    return accepted


def _match_rows(a: FloatArray, b: FloatArray, atol: float) -> tuple[IndexArray, IndexArray]:
    """Pairs (ia, ib) of matched rows, sorted by baseline row."""
    pair_a, pair_b = _exact_pairs(a, b)
    free_a = np.setdiff1d(np.arange(a.shape[0]), pair_a)
    free_b = np.setdiff1d(np.arange(b.shape[0]), pair_b)
    while free_a.size and free_b.size:
        ia, ib, _ = _nearest_round(a[free_a], b[free_b], atol)
        accepted = _greedy(ia, ib)
        if not accepted.any():
            break
        pair_a = np.concatenate([pair_a, free_a[ia[accepted]]])
        pair_b = np.concatenate([pair_b, free_b[ib[accepted]]])
        free_a = np.setdiff1d(free_a, pair_a)
        free_b = np.setdiff1d(free_b, pair_b)
    order = np.argsort(pair_a)
    return pair_a[order], pair_b[order]


def _rows_comparable(a: AnyArray, b: AnyArray) -> bool:
    def columns(x: AnyArray) -> int:
        return 1 if x.ndim == 1 else int(x.shape[1])

    same_kind = a.dtype.kind == b.dtype.kind and a.dtype.kind in "fiub"
    shapes = a.ndim == b.ndim and a.ndim in (1, 2)
    return same_kind and shapes and columns(a) == columns(b) > 0


def _compare_rows(
    a: AnyArray, b: AnyArray, tolerance: Tolerance
) -> tuple[RowMatch, _Elements, IndexArray]:
    rows_a, rows_b = _as_rows(a), _as_rows(b)
    ia, ib = _match_rows(rows_a, rows_b, tolerance.atol)
    common = np.result_type(a.dtype, b.dtype)
    paired_a, paired_b = a[ia].astype(common), b[ib].astype(common)
    elements = _elements(paired_a, paired_b, tolerance)
    displacement = _gap(rows_a[ia], rows_b[ib]).max(axis=1) if ia.size else None
    match = RowMatch(
        matched=int(ia.size),
        only_in_baseline=int(rows_a.shape[0] - ia.size),
        only_in_candidate=int(rows_b.shape[0] - ib.size),
        max_displacement=None if displacement is None else float(displacement.max()),
    )
    return match, elements, ia


# --------------------------------------------------------------------------- decisions


def _margins(rows: AnyArray) -> float | None:
    """Smallest top-1 minus top-2 gap over the rows (None without two classes)."""
    if rows.shape[1] < 2 or rows.shape[0] == 0 or rows.dtype.kind == "c":
        return None
    top = np.partition(rows.astype(np.float64), rows.shape[1] - 2, axis=1)[:, -2:]
    gaps = top[:, 1] - top[:, 0]
    if np.isnan(gaps).all():
        return None
    return float(np.nanmin(gaps))


def _argmax_decisions(a: AnyArray, b: AnyArray) -> DecisionComparison:
    classes = a.shape[-1] if a.ndim and a.shape[-1] else 1
    rows_a, rows_b = a.reshape(-1, classes), b.reshape(-1, classes)
    block = max(1, CHUNK // classes)
    changed = 0
    margins: list[float] = []
    for start in range(0, rows_a.shape[0], block):
        part_a, part_b = rows_a[start : start + block], rows_b[start : start + block]
        changed += int(np.count_nonzero(part_a.argmax(axis=1) != part_b.argmax(axis=1)))
        margin = _margins(part_a)
        if margin is not None:
            margins.append(margin)
    return DecisionComparison(
        kind="argmax",
        total=int(rows_a.shape[0]),
        decisions_changed=changed,
        min_margin=min(margins) if margins else None,
    )


def _box_iou(a: FloatArray, b: FloatArray) -> FloatArray:
    """IoU of every (x, y, w, h) box of a with every box of b."""
    ax1, ay1, aw, ah = (a[:, k, None] for k in range(4))
    bx1, by1, bw, bh = (b[None, :, k] for k in range(4))
    width = np.clip(np.minimum(ax1 + aw, bx1 + bw) - np.maximum(ax1, bx1), 0.0, None)
    height = np.clip(np.minimum(ay1 + ah, by1 + bh) - np.maximum(ay1, by1), 0.0, None)
    inter = width * height
    union = aw * ah + bw * bh - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0)


def _box_decisions(a: AnyArray, b: AnyArray, threshold: float) -> DecisionComparison:
    boxes_a = np.asarray(a[:, :4], dtype=np.float64)
    boxes_b = np.asarray(b[:, :4], dtype=np.float64)
    iou = _box_iou(boxes_a, boxes_b)
    ia, ib = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[ia, ib], kind="stable")
    ia, ib = ia[order], ib[order]
    accepted = _greedy(ia, ib)
    ia, ib = ia[accepted], ib[accepted]
    moved = int(np.count_nonzero(np.any(boxes_a[ia] != boxes_b[ib], axis=1)))
    appeared = int(boxes_b.shape[0] - ib.size)
    vanished = int(boxes_a.shape[0] - ia.size)
    return DecisionComparison(
        kind="boxes",
        total=int(boxes_a.shape[0]),
        decisions_changed=appeared + vanished,
        appeared=appeared,
        vanished=vanished,
        moved=moved,
    )


def _is_boxes(array: AnyArray) -> bool:
    return array.ndim == 2 and array.shape[1] >= 4 and array.dtype.kind in "fiu"


def _decide(
    a: AnyArray, b: AnyArray, rule: DecisionRule | None, mismatched: int | None
) -> DecisionComparison | None:
    """The decision comparison, or None when the rule does not apply to these shapes."""
    if rule is None:
        return None
    if rule.kind == "boxes":
        return _box_decisions(a, b, rule.iou) if _is_boxes(a) and _is_boxes(b) else None
    if a.shape != b.shape or mismatched is None:
        return None
    if rule.kind == "argmax":
        return _argmax_decisions(a, b)
    return DecisionComparison(kind="labels", total=int(a.size), decisions_changed=mismatched)


# --------------------------------------------------------------------------- entry points


@dataclass(frozen=True, kw_only=True)
class _Outcome:
    """What decides the verdict, besides the element metrics."""

    verdict: Verdict
    bit_identical: bool
    rows: RowMatch | None = None
    decision: DecisionComparison | None = None
    row_of: IndexArray | None = None  # baseline row of each compared row (rows matching)


def _shapes(a: AnyArray, b: AnyArray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (tuple(int(n) for n in a.shape), tuple(int(n) for n in b.shape))


def _worst(elements: _Elements, row_of: IndexArray | None) -> tuple[tuple[int, ...], ...]:
    worst = _unravel([i for _, i in elements.totals.worst], elements.index_shape)
    if row_of is None:
        return worst
    return tuple((int(row_of[index[0]]), *index[1:]) for index in worst)


def _result(
    a: AnyArray, b: AnyArray, tolerance: Tolerance, elements: _Elements, outcome: _Outcome
) -> ArrayComparison:
    totals = elements.totals
    comparable = totals.total - totals.nan_positions
    some = comparable > 0
    image = elements.channels is not None
    return ArrayComparison(
        verdict=outcome.verdict,
        rule=tolerance.pattern,
        dtype=(str(a.dtype), str(b.dtype)),
        shape=_shapes(a, b),
        total=totals.total,
        mismatched=totals.mismatched,
        bit_identical=outcome.bit_identical,
        max_abs=totals.max_abs if some else None,
        mean_abs=totals.sum_abs / comparable if some else None,
        max_rel=totals.max_rel if some else None,
        max_ulp=totals.max_ulp if some else None,
        worst_indices=_worst(elements, outcome.row_of),
        nan_mismatch=totals.nan_mismatch,
        inf_mismatch=totals.inf_mismatch,
        psnr=_psnr(totals, elements.image_max) if image else None,
        differing_pixels=totals.differing_pixels if image else None,
        rows=outcome.rows,
        decision=outcome.decision,
    )


def _same_values_type(a: AnyArray, b: AnyArray) -> bool:
    return a.dtype.newbyteorder("=") == b.dtype.newbyteorder("=") and a.shape == b.shape


def _compare_as_rows(
    a: AnyArray, b: AnyArray, tolerance: Tolerance, decision: DecisionRule | None
) -> ArrayComparison:
    match, elements, row_of = _compare_rows(a, b, tolerance)
    bit_identical = _bytes_equal(a, b)
    verdict: Verdict = "drift"
    if bit_identical:
        verdict = "identical"
    elif match.only_in_baseline == match.only_in_candidate == 0:
        verdict = "within_tolerance"
    outcome = _Outcome(
        verdict=verdict,
        bit_identical=bit_identical,
        rows=match,
        decision=_decide(a, b, decision, None),
        row_of=row_of,
    )
    return _result(a, b, tolerance, elements, outcome)


def compare_arrays(
    a: npt.NDArray[np.generic],
    b: npt.NDArray[np.generic],
    tolerance: Tolerance = Tolerance(),
    decision: DecisionRule | None = None,
) -> ArrayComparison:
    """Compare candidate ``b`` with baseline ``a`` under ``tolerance``.

    Raises OutputError for a dtype that is not float, complex, integer or bool.
    """
    _kind(a.dtype)
    _kind(b.dtype)
    if tolerance.match == "rows" and _rows_comparable(a, b):
        return _compare_as_rows(a, b, tolerance, decision)
    if not _same_values_type(a, b):
        return ArrayComparison(
            verdict="incomparable",
            rule=tolerance.pattern,
            dtype=(str(a.dtype), str(b.dtype)),
            shape=_shapes(a, b),
            decision=_decide(a, b, decision, None),
        )
    elements = _elements(a, b, tolerance)
    outcome = _Outcome(
        verdict=_verdict(elements.totals, tolerance),
        bit_identical=elements.totals.differing_bits == 0,
        decision=_decide(a, b, decision, elements.totals.mismatched),
    )
    return _result(a, b, tolerance, elements, outcome)


def _bytes_equal(a: AnyArray, b: AnyArray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    flat_a = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    flat_b = np.ascontiguousarray(b).reshape(-1).view(np.uint8)
    step = CHUNK * 4
    return all(
        np.array_equal(flat_a[start : start + step], flat_b[start : start + step])
        for start in range(0, flat_a.size, step)
    )


def agreement_classes(arrays: Mapping[str, npt.NDArray[np.generic] | None]) -> list[list[str]]:
    """Environments grouped by bit-identical arrays (same dtype, shape and bytes).

    Classes come in order of first appearance; a missing array (None) is a class of its own.
    """
    classes: list[tuple[AnyArray | None, list[str]]] = []
    for name, array in arrays.items():
        home = None
        if array is not None:
            home = next(
                (c for c in classes if c[0] is not None and _bytes_equal(c[0], array)), None
            )
        if home is None:
            classes.append((array, [name]))
        else:
            home[1].append(name)
    return [names for _, names in classes]


__all__ = [
    "ArrayComparison",
    "DecisionComparison",
    "DecisionRule",
    "DecisionRules",
    "RowMatch",
    "Tolerance",
    "ToleranceRules",
    "Verdict",
    "agreement_classes",
    "compare_arrays",
]
