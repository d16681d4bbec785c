"""One sentence of advice per output family and pair, for every renderer: the terminal reads
attributions, the reports read their JSON; both group the same way."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class FamilyAdvice:
    baseline: str
    candidate: str
    family: str  # the outputs' name without their fixture
    outputs: int  # how many drifting outputs of the family share this advice
    advice: str


def advice_by_family(attributions: Iterable[Mapping[str, Any] | Any]) -> list[FamilyAdvice]:
    """Attributions (objects or their JSON) grouped by pair, family and advice, in first-seen
    order; attributions without advice (from an older explain) are left out."""
    counts: dict[tuple[str, str, str, str], int] = {}
    for item in attributions:
        advice = _field(item, "advice")
        if not advice:
            continue
        family = _field(item, "family") or _field(item, "output")
        key = (_field(item, "baseline"), _field(item, "candidate"), family, advice)
        counts[key] = counts.get(key, 0) + 1
    return [
        FamilyAdvice(baseline=b, candidate=c, family=f, outputs=n, advice=a)
        for (b, c, f, a), n in counts.items()
    ]


def _field(item: Mapping[str, Any] | Any, key: str) -> str:
    value = item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)
    return "" if value is None else str(value)
