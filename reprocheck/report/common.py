"""Shared reading of the report dict (schema_version 1) for the text renderers.

Renderers take the JSON data, not the stage values, so that stored, merged and diffed
runs render the same way. Everything here is pure: dict in, plain values out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

Report = Mapping[str, Any]
Comparison = Mapping[str, Any]

# Display order, worst first; also the order of the HTML verdict checkboxes.
VERDICTS: tuple[str, ...] = (
    "drift",
    "incomparable",
    "missing",
    "error",
    "nondeterministic",
    "within_tolerance",
    "identical",
)
# Verdicts that make a run exit 1 (matrix.FAILING), plus errors.
FAILING: frozenset[str] = frozenset({"drift", "incomparable", "missing"})
PROBLEMS: frozenset[str] = FAILING | {"error"}
VERSION_KEYS: tuple[str, ...] = ("os", "glibc", "python", "numpy", "cv2")
# Integers from here on are shown in scientific notation (ULP distances across signs).
BIG_INT = 10**9


def pair_label(baseline: str, candidate: str) -> str:
    return f"{baseline}->{candidate}"


def pairs(report: Report) -> list[tuple[str, str]]:
    """The environment pairs, in report order, plus any pair only seen in comparisons."""
    found = [(str(p[0]), str(p[1])) for p in report.get("pairs") or []]
    for item in report.get("comparisons") or []:
        pair = (str(item["baseline"]), str(item["candidate"]))
        if pair not in found:
            found.append(pair)
    return found


def pair_items(report: Report, baseline: str, candidate: str) -> list[Comparison]:
    """The comparisons of one environment pair, in report order."""
    return [
        item
        for item in report.get("comparisons") or []
        if (item["baseline"], item["candidate"]) == (baseline, candidate)
    ]


def verdict_counts(comparisons: Iterable[Comparison]) -> Counter[str]:
    return Counter(str(item["verdict"]) for item in comparisons)


def ordered_verdicts(counts: Mapping[str, int]) -> list[str]:
    """Verdicts present in ``counts``: known ones in display order, then any new ones."""
    known = [v for v in VERDICTS if counts.get(v)]
    return known + sorted(v for v in counts if v not in VERDICTS and counts[v])


def headline(report: Report) -> tuple[str, str]:
    """(status word, counts text), e.g. ("DRIFT", "216 drift, 414 identical")."""
    counts = verdict_counts(report.get("comparisons") or [])
    failed_envs = [e for e in report.get("environments") or [] if e.get("status") != "ok"]
    if counts.get("error") or failed_envs:
        status = "ERROR"
    elif any(counts.get(v) for v in FAILING):
        status = "DRIFT"
    else:
        status = "CONSISTENT"
    text = ", ".join(f"{counts[v]} {v}" for v in ordered_verdicts(counts))
    return status, text or "nothing compared"


def number(value: Any) -> str:
    """A metric for people: 3 significant digits, thousands separators, '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if abs(value) < BIG_INT else f"{value:.3g}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)  # "nan", "inf", "-inf" as stored in JSON


def mismatch_text(item: Comparison) -> str:
    """'n / N (p%)' of mismatched elements, or '-' when there are no metrics."""
    total, mismatched = item.get("total"), item.get("mismatched")
    if total is None or mismatched is None:
        return "-"
    return f"{mismatched:,} / {total:,} ({100 * mismatched / max(total, 1):.1f}%)"


def decisions_text(item: Comparison) -> str:
    decision = item.get("decision")
    if not isinstance(decision, Mapping):
        return "-"
    return f"{decision.get('decisions_changed', 0)} of {decision.get('total', 0)}"


def _as_float(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return float("inf") if value in ("inf", "nan") else 0.0


def severity(item: Comparison) -> tuple[int, int, float, float]:
    """Sort key, larger is worse: failing, decisions changed, max ULP, max |diff|."""
    decision = item.get("decision")
    changed = int(decision.get("decisions_changed") or 0) if isinstance(decision, Mapping) else 0
    return (
        int(item.get("verdict") in FAILING),
        changed,
        int(item.get("max_ulp") or 0),
        _as_float(item.get("max_abs")),
    )


def worst(report: Report, verdicts: frozenset[str] = FAILING) -> list[Comparison]:
    """Comparisons with one of ``verdicts``, worst first."""
    found = [c for c in report.get("comparisons") or [] if c.get("verdict") in verdicts]
    return sorted(found, key=severity, reverse=True)


def agreement_groups(report: Report) -> list[tuple[str, int]]:
    """Agreement patterns ('{a, b} | {c}') and how many outputs share each, commonest first."""
    groups: Counter[str] = Counter()
    for entry in report.get("agreement") or []:
        classes = entry.get("classes") or []
        groups[" | ".join("{" + ", ".join(c) + "}" for c in classes)] += 1
    return groups.most_common()


def fingerprint(environment: Mapping[str, Any]) -> Mapping[str, Any]:
    value = environment.get("fingerprint")
    return value if isinstance(value, Mapping) else {}


def version(environment: Mapping[str, Any], key: str) -> str:
    value = fingerprint(environment).get(key)
    return "-" if value in (None, "") else str(value)


def problems(report: Report) -> list[str]:
    """Environment failures, then error/missing/incomparable outputs grouped by cause."""
    lines = [
        f"{env.get('name')}: {env.get('status')}: {env.get('error') or ''}".rstrip(": ")
        for env in report.get("environments") or []
        if env.get("status") != "ok"
    ]
    groups: dict[tuple[str, str, str], list[str]] = {}
    for item in report.get("comparisons") or []:
        if item.get("verdict") in PROBLEMS - {"drift"}:
            pair = pair_label(item["baseline"], item["candidate"])
            groups.setdefault((pair, item["verdict"], _why(item)), []).append(item["output"])
    for (pair, verdict, why), outputs in groups.items():
        subject = outputs[0] if len(outputs) == 1 else f"{len(outputs)} outputs"
        lines.append(f"{subject} ({pair}): {verdict}: {why}")
    return lines


def _why(item: Comparison) -> str:
    if item.get("note"):
        return str(item["note"])
    dtype, shape = item.get("dtype") or ["?", "?"], item.get("shape") or [[], []]
    return f"{dtype[0]}{list(shape[0])} vs {dtype[1]}{list(shape[1])}"
