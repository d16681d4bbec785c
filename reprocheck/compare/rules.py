"""Tolerance and decision rules, and which rule applies to an output."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


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
