"""The running sums of a stream of chunks, and how a chunk's values fold into them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reprocheck.compare.dtypes import AnyArray, FloatArray, IndexArray
from reprocheck.compare.values import Values

WORST_COUNT = 5


@dataclass(kw_only=True)
class Totals:
    """Running sums over the chunks (internal and mutable on purpose: a fold).

    Integer streams (not bool) sum |a - b| and its square exactly, in Python ints
    (``exact_sum_abs``, ``sum_sq``); float and bool streams sum in floats (``sum_abs``).
    """

    total: int = 0
    differing_bits: int = 0
    mismatched: int = 0
    outside: int = 0
    nan_positions: int = 0
    nan_mismatch: int = 0
    inf_mismatch: int = 0
    sum_abs: float = 0.0
    exact_sum_abs: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    max_ulp: int = 0
    sum_sq: int = 0
    differing_pixels: int = 0
    last_pixel: int = -1  # the last differing pixel counted, for gathered elements
    worst: list[tuple[float, int]] = field(default_factory=list)

    def mean_abs(self, comparable: int) -> float:
        """Mean |a - b| over ``comparable`` (> 0) elements."""
        if self.exact_sum_abs:
            return self.exact_sum_abs / comparable  # int / int rounds once, correctly
        return self.sum_abs / comparable


def nan_count(chunk: AnyArray) -> int:
    if chunk.dtype.kind != "f" or chunk.size == 0 or not np.isnan(chunk.max()):
        return 0
    return int(np.count_nonzero(np.isnan(chunk)))


def top_positions(key: FloatArray) -> list[tuple[int, float]]:
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


def worst_threshold(totals: Totals) -> float:
    """The error a new one must exceed to enter the worst list (later indices lose ties)."""
    return totals.worst[-1][0] if len(totals.worst) == WORST_COUNT else 0.0


def merge_worst(totals: Totals, found: list[tuple[float, int]]) -> None:
    merged = totals.worst + found
    merged.sort(key=lambda item: (-item[0], item[1]))
    totals.worst = merged[:WORST_COUNT]


def _keep_worst(totals: Totals, values: Values, positions: IndexArray) -> None:
    """Fold this chunk's largest errors into the running top list (NaN vs number first).

    The key is > 0 exactly where values differ: |a - b| > 0 for unequal numbers.
    """
    nan_x = bool(values.nan_x.any())
    key = np.where(values.nan_x, np.inf, values.diff) if nan_x else values.diff.copy()
    merge_worst(totals, [(value, int(positions[i])) for i, value in top_positions(key)])


def add_values(totals: Totals, values: Values, positions: IndexArray) -> None:
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
