"""The words every report shares: the verdicts a comparison gives, which of them fail a run,
and agreement classes as text. Plain Python (no numpy, no pyarrow): the terminal summary of
a run that repeats an earlier one (``reprocheck.reuse``) needs nothing more."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Verdict = Literal[
    "identical",
    "within_tolerance",
    "drift",
    "incomparable",
    "missing",
    "error",
    "nondeterministic",
    "new",  # made by the candidate only (see [compare] new_outputs)
]

# The verdicts that make a run exit 1 (an "error" makes it exit 2).
FAILING: frozenset[str] = frozenset({"drift", "incomparable", "missing"})


def pattern(classes: Iterable[Iterable[str]]) -> str:
    """Agreement classes as text: '{a, b} | {c}'."""
    return " | ".join("{" + ", ".join(c) + "}" for c in classes)
