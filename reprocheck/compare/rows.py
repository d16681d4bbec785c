"""Rows of a and b paired by nearest neighbour, for outputs whose row order may change."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from reprocheck.compare.chunking import Chunking
from reprocheck.compare.dtypes import AnyArray, BoolArray, FloatArray, IndexArray
from reprocheck.compare.elements import Elements, elements
from reprocheck.compare.results import RowMatch
from reprocheck.compare.rules import Tolerance


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
    a: FloatArray, b: FloatArray, atol: float, chunk: int
) -> tuple[IndexArray, IndexArray, FloatArray]:
    """One greedy round: candidate pairs (each row's nearest), shortest first. The
    distances of about ``chunk`` row pairs are held at a time."""
    candidates: list[tuple[IndexArray, IndexArray, FloatArray]] = []
    block = max(1, chunk // max(1, b.shape[0] * a.shape[1]))
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


def greedy(ia: IndexArray, ib: IndexArray) -> BoolArray:
    """Accept pairs in order, each index of a and of b at most once."""
    taken_a: set[int] = set()
    taken_b: set[int] = set()
    accepted = np.zeros(ia.size, dtype=np.bool_)
    for k, (i, j) in enumerate(zip(ia.tolist(), ib.tolist(), strict=True)):
        if i not in taken_a and j not in taken_b:
            taken_a.add(i)
            taken_b.add(j)
            accepted[k] = True
    return accepted


def _match_rows(
    a: FloatArray, b: FloatArray, atol: float, chunk: int
) -> tuple[IndexArray, IndexArray]:
    """Pairs (ia, ib) of matched rows, sorted by baseline row."""
    pair_a, pair_b = _exact_pairs(a, b)
    free_a = np.setdiff1d(np.arange(a.shape[0]), pair_a)
    free_b = np.setdiff1d(np.arange(b.shape[0]), pair_b)
    while free_a.size and free_b.size:
        ia, ib, _ = _nearest_round(a[free_a], b[free_b], atol, chunk)
        accepted = greedy(ia, ib)
        if not accepted.any():
            break
        pair_a = np.concatenate([pair_a, free_a[ia[accepted]]])
        pair_b = np.concatenate([pair_b, free_b[ib[accepted]]])
        free_a = np.setdiff1d(free_a, pair_a)
        free_b = np.setdiff1d(free_b, pair_b)
    order = np.argsort(pair_a)
    return pair_a[order], pair_b[order]


def rows_comparable(a: AnyArray, b: AnyArray) -> bool:
    def columns(x: AnyArray) -> int:
        return 1 if x.ndim == 1 else int(x.shape[1])

    same_kind = a.dtype.kind == b.dtype.kind and a.dtype.kind in "fiub"
    shapes = a.ndim == b.ndim and a.ndim in (1, 2)
    return same_kind and shapes and columns(a) == columns(b) > 0


def compare_rows(
    a: AnyArray, b: AnyArray, tolerance: Tolerance, chunking: Chunking
) -> tuple[RowMatch, Elements, IndexArray]:
    rows_a, rows_b = _as_rows(a), _as_rows(b)
    ia, ib = _match_rows(rows_a, rows_b, tolerance.atol, chunking.chunk)
    common = np.result_type(a.dtype, b.dtype)
    paired_a, paired_b = a[ia].astype(common), b[ib].astype(common)
    paired = elements(paired_a, paired_b, tolerance, chunking)
    displacement = _gap(rows_a[ia], rows_b[ib]).max(axis=1) if ia.size else None
    match = RowMatch(
        matched=int(ia.size),
        only_in_baseline=int(rows_a.shape[0] - ia.size),
        only_in_candidate=int(rows_b.shape[0] - ib.size),
        max_displacement=None if displacement is None else float(displacement.max()),
    )
    return match, paired, ia
