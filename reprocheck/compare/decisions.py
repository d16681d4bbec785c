"""Downstream decisions an output drives (classes, labels, boxes) and how many changed."""

from __future__ import annotations

import numpy as np

from reprocheck.compare.chunking import Chunking
from reprocheck.compare.dtypes import AnyArray, FloatArray
from reprocheck.compare.results import DecisionComparison
from reprocheck.compare.rows import greedy
from reprocheck.compare.rules import DecisionRule


def _margins(rows: AnyArray) -> float | None:
    """Smallest top-1 minus top-2 gap over the rows (None without two classes)."""
    if rows.shape[1] < 2 or rows.shape[0] == 0 or rows.dtype.kind == "c":
        return None
    top = np.partition(rows.astype(np.float64), rows.shape[1] - 2, axis=1)[:, -2:]
    with np.errstate(invalid="ignore"):  # inf - inf is NaN: no margin, as for NaN scores
        gaps = top[:, 1] - top[:, 0]
    if np.isnan(gaps).all():
        return None
    return float(np.nanmin(gaps))


def _argmax_decisions(a: AnyArray, b: AnyArray, chunk: int) -> DecisionComparison:
    """Changed top classes, about ``chunk`` elements at a time."""
    classes = a.shape[-1] if a.ndim and a.shape[-1] else 1
    rows_a, rows_b = a.reshape(-1, classes), b.reshape(-1, classes)
    block = max(1, chunk // classes)
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
    accepted = greedy(ia, ib)
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


def decide(
    a: AnyArray,
    b: AnyArray,
    rule: DecisionRule | None,
    mismatched: int | None,
    chunking: Chunking,
) -> DecisionComparison | None:
    """The decision comparison, or None when the rule does not apply to these shapes."""
    if rule is None:
        return None
    if rule.kind == "boxes":
        return _box_decisions(a, b, rule.iou) if _is_boxes(a) and _is_boxes(b) else None
    if a.shape != b.shape or mismatched is None:
        return None
    if rule.kind == "argmax":
        return _argmax_decisions(a, b, chunking.chunk)
    return DecisionComparison(kind="labels", total=int(a.size), decisions_changed=mismatched)
