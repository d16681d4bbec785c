"""What a comparison returns: frozen results that render as strict JSON."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from reprocheck.vocabulary import Verdict as Verdict  # where the comparisons' results take it


def _json_float(value: float | None) -> float | str | None:
    """JSON has no NaN or Inf: those become the strings "nan", "inf" and "-inf"."""
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def _to_json(value: object) -> object:
    """A result as JSON data: nested results as objects, tuples as lists, floats made safe."""
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, tuple | list):
        if all(type(item) is int for item in value):  # an index or a shape
            return list(value)
        return [_to_json(item) for item in value]
    names = _field_names(type(value))
    if names is not None:
        return {name: _to_json(getattr(value, name)) for name in names}
    return value


_PLAIN = frozenset({int, str, bool})
_FIELDS: dict[type, tuple[str, ...] | None] = {}


def _field_names(kind: type) -> tuple[str, ...] | None:
    """A result class's fields (None for anything else); looked up once per class, as the
    report lists thousands of results."""
    if kind not in _FIELDS:
        found = dataclasses.fields(kind) if dataclasses.is_dataclass(kind) else None
        _FIELDS[kind] = None if found is None else tuple(f.name for f in found)
    return _FIELDS[kind]


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
