"""The entry points: compare one output's arrays, group environments by identical arrays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from reprocheck.compare.chunking import DEFAULT_CHUNKING, Chunking
from reprocheck.compare.decisions import decide
from reprocheck.compare.dtypes import AnyArray, IndexArray, value_kind
from reprocheck.compare.elements import (
    Elements,
    elements,
    identical_elements,
    psnr,
    unravel,
    verdict,
)
from reprocheck.compare.results import ArrayComparison, DecisionComparison, RowMatch, Verdict
from reprocheck.compare.rows import compare_rows, rows_comparable
from reprocheck.compare.rules import DecisionRule, Tolerance

_EXACT = Tolerance()


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


def _worst(compared: Elements, row_of: IndexArray | None) -> tuple[tuple[int, ...], ...]:
    worst = unravel([i for _, i in compared.totals.worst], compared.index_shape)
    if row_of is None:
        return worst
    return tuple((int(row_of[index[0]]), *index[1:]) for index in worst)


def _result(
    a: AnyArray, b: AnyArray, tolerance: Tolerance, compared: Elements, outcome: _Outcome
) -> ArrayComparison:
    totals = compared.totals
    comparable = totals.total - totals.nan_positions
    some = comparable > 0
    image = compared.channels is not None
    return ArrayComparison(
        verdict=outcome.verdict,
        rule=tolerance.pattern,
        dtype=(str(a.dtype), str(b.dtype)),
        shape=_shapes(a, b),
        total=totals.total,
        mismatched=totals.mismatched,
        bit_identical=outcome.bit_identical,
        max_abs=totals.max_abs if some else None,
        mean_abs=totals.mean_abs(comparable) if some else None,
        max_rel=totals.max_rel if some else None,
        max_ulp=totals.max_ulp if some else None,
        worst_indices=_worst(compared, outcome.row_of),
        nan_mismatch=totals.nan_mismatch,
        inf_mismatch=totals.inf_mismatch,
        psnr=psnr(totals, compared.image_max) if image else None,
        differing_pixels=totals.differing_pixels if image else None,
        rows=outcome.rows,
        decision=outcome.decision,
    )


def _same_values_type(a: AnyArray, b: AnyArray) -> bool:
    return a.dtype.newbyteorder("=") == b.dtype.newbyteorder("=") and a.shape == b.shape


def _compare_as_rows(
    a: AnyArray,
    b: AnyArray,
    tolerance: Tolerance,
    decision: DecisionRule | None,
    chunking: Chunking,
) -> ArrayComparison:
    match, compared, row_of = compare_rows(a, b, tolerance, chunking)
    bit_identical = _bytes_equal(a, b, chunking)
    found: Verdict = "drift"
    if bit_identical:
        found = "identical"
    elif match.only_in_baseline == match.only_in_candidate == 0:
        found = "within_tolerance"
    outcome = _Outcome(
        verdict=found,
        bit_identical=bit_identical,
        rows=match,
        decision=decide(a, b, decision, None, chunking),
        row_of=row_of,
    )
    return _result(a, b, tolerance, compared, outcome)


def compare_arrays(
    a: npt.NDArray[np.generic],
    b: npt.NDArray[np.generic],
    tolerance: Tolerance = _EXACT,
    decision: DecisionRule | None = None,
    *,
    chunking: Chunking = DEFAULT_CHUNKING,
) -> ArrayComparison:
    """Compare candidate ``b`` with baseline ``a`` under ``tolerance``.

    ``chunking`` sets how much is held in memory at a time; it never changes a result.
    Raises OutputError for a dtype that is not float, complex, integer or bool.
    """
    value_kind(a.dtype)
    value_kind(b.dtype)
    if tolerance.match == "rows" and rows_comparable(a, b):
        return _compare_as_rows(a, b, tolerance, decision, chunking)
    if not _same_values_type(a, b):
        return ArrayComparison(
            verdict="incomparable",
            rule=tolerance.pattern,
            dtype=(str(a.dtype), str(b.dtype)),
            shape=_shapes(a, b),
            decision=decide(a, b, decision, None, chunking),
        )
    return _compare_elements(a, b, tolerance, decision, chunking)


# Below this size, checking the bytes first is cheaper than a missed shortcut: most outputs
# of a run are small and identical (one per sample), and their metrics need no streaming.
_SHORTCUT_BYTES = 1 << 16


def _compare_elements(
    a: AnyArray, b: AnyArray, tolerance: Tolerance, decision: DecisionRule | None,
    chunking: Chunking, *, shortcut: bool = True,
) -> ArrayComparison:  # fmt: skip
    """Element-wise comparison of two arrays of one dtype and shape."""
    small = a.nbytes <= _SHORTCUT_BYTES
    if shortcut and small and _bytes_equal(a, b, chunking):
        compared = identical_elements(a)
    else:
        compared = elements(a, b, tolerance, chunking)
    outcome = _Outcome(
        verdict=verdict(compared.totals, tolerance),
        bit_identical=compared.totals.differing_bits == 0,
        decision=decide(a, b, decision, compared.totals.mismatched, chunking),
    )
    return _result(a, b, tolerance, compared, outcome)


def _bytes_equal(a: AnyArray, b: AnyArray, chunking: Chunking) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    flat_a = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    flat_b = np.ascontiguousarray(b).reshape(-1).view(np.uint8)
    step = chunking.chunk * 4
    return all(
        np.array_equal(flat_a[start : start + step], flat_b[start : start + step])
        for start in range(0, flat_a.size, step)
    )


def agreement_classes(
    arrays: Mapping[str, npt.NDArray[np.generic] | None], *, chunking: Chunking = DEFAULT_CHUNKING
) -> list[list[str]]:
    """Environments grouped by bit-identical arrays (same dtype, shape and bytes).

    Classes come in order of first appearance; a missing array (None) is a class of its own.
    """
    classes: list[tuple[AnyArray | None, list[str]]] = []
    for name, array in arrays.items():
        home = None
        if array is not None:
            home = next(
                (c for c in classes if c[0] is not None and _bytes_equal(c[0], array, chunking)),
                None,
            )
        if home is None:
            classes.append((array, [name]))
        else:
            home[1].append(name)
    return [names for _, names in classes]
