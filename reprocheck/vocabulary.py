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

# The verdicts that make a run exit 1 (an "error" makes it exit 2); PROBLEMS adds errors.
FAILING: frozenset[str] = frozenset({"drift", "incomparable", "missing"})
PROBLEMS: frozenset[str] = FAILING | {"error"}

# How far up the reports list a verdict, larger first: what made the run exit 2, then what
# made it exit 1, then what a reader should see (an output only the candidate made, noise),
# then agreement. Within one rank, comparisons order by how much they moved.
SEVERITY: dict[str, int] = {
    "error": 3,
    **dict.fromkeys(sorted(FAILING), 2),
    "new": 1,
    "nondeterministic": 1,
    "within_tolerance": 0,
    "identical": 0,
}


def pattern(classes: Iterable[Iterable[str]]) -> str:
    """Agreement classes as text: '{a, b} | {c}'."""
    return " | ".join("{" + ", ".join(c) + "}" for c in classes)
