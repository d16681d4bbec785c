"""Shared reading of the report dict for the text renderers.

Renderers take the JSON data, not the stage values, so that stored, merged and diffed
runs render the same way. Everything here is pure: dict in, plain values out. Counts come
from ``summary`` and ``pair_summary``, which cover every comparison; ``comparisons`` may
list only the worst (schema 2). A schema 1 report (all comparisons listed) is read too.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from reprocheck.vocabulary import FAILING, PROBLEMS, SEVERITY, pattern

__all__ = ["FAILING", "PROBLEMS"]  # and everything defined below

Report = Mapping[str, Any]
Comparison = Mapping[str, Any]

# Display order, worst first; also the order of the HTML verdict checkboxes.
VERDICTS: tuple[str, ...] = (
    "drift",
    "incomparable",
    "missing",
    "error",
    "nondeterministic",
    "new",
    "within_tolerance",
    "identical",
)
VERSION_KEYS: tuple[str, ...] = ("os", "glibc", "python", "numpy", "cv2")
# Integers from here on are shown in scientific notation (ULP distances across signs).
BIG_INT = 10**9


def pair_label(baseline: str, candidate: str) -> str:
    return f"{baseline}->{candidate}"


def pairs(report: Report) -> list[tuple[str, str]]:
    """The environment pairs, in report order, plus any pair only seen in comparisons."""
    found = [(str(p[0]), str(p[1])) for p in report.get("pairs") or []]
    for item in [*(report.get("comparisons") or []), *(report.get("pair_summary") or [])]:
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


def total_counts(report: Report) -> Counter[str]:
    """Verdict counts over every comparison of the run."""
    summary = report.get("summary")
    if isinstance(summary, Mapping) and "pair_summary" in report:
        return Counter({str(k): int(v) for k, v in summary.items()})
    return verdict_counts(report.get("comparisons") or [])


def pair_counts(report: Report, baseline: str, candidate: str) -> Counter[str]:
    """Verdict counts over every comparison of one pair."""
    for entry in report.get("pair_summary") or []:
        if (entry.get("baseline"), entry.get("candidate")) == (baseline, candidate):
            return Counter({str(k): int(v) for k, v in (entry.get("verdicts") or {}).items()})
    return verdict_counts(pair_items(report, baseline, candidate))


def listing_note(report: Report) -> str | None:
    """'the worst 1,000 of 2,000,000 comparisons; all are in comparisons.parquet' when the
    report lists only some of them, else None."""
    listed = report.get("listed")
    if not isinstance(listed, Mapping):
        return None
    shown, total = int(listed.get("comparisons") or 0), int(listed.get("of_comparisons") or 0)
    if shown >= total:
        return None
    return (f"the worst {shown:,} of {total:,} comparisons are listed; all are in "
            f"{listed.get('file') or 'comparisons.parquet'}")  # fmt: skip


def headline(report: Report) -> tuple[str, str]:
    """(status word, counts text), e.g. ("DRIFT", "216 drift, 414 identical")."""
    counts = total_counts(report)
    failed_envs = [e for e in report.get("environments") or [] if e.get("status") != "ok"]
    if counts.get("error") or failed_envs:
        status = "ERROR"
    elif any(counts.get(v) for v in FAILING):
        status = "DRIFT"
    else:
        status = "CONSISTENT"
    text = ", ".join(f"{counts[v]} {v}" for v in ordered_verdicts(counts))
    return status, text or nothing_compared(report)


def escaped(characters: re.Pattern[str], text: str) -> str:
    """``text`` with each character ``characters`` matches shown as an escape (``\\x1b``,
    ``\\udcff``): user text (output names, errors) in a terminal, Markdown or XML."""
    return characters.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def nothing_compared(report: Report) -> str:
    """The counts text of a run with no comparison: saying why when every environment ran
    (a pipeline writing where reprocheck does not read passes no silent green run)."""
    environments = report.get("environments") or []
    if environments and all(e.get("status") == "ok" for e in environments):
        return "nothing compared: no outputs in any environment"
    return "nothing compared"


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
    """'n / N (p%)' of mismatched elements; for integer outputs '7 of 360 values changed
    (max Δ 3)'; '-' when there are no metrics."""
    total, mismatched = item.get("total"), item.get("mismatched")
    if total is None or mismatched is None:
        return "-"
    dtype = (item.get("dtype") or ["", ""])[0]
    if _integer(str(dtype)) and item.get("max_abs") is not None:
        return f"{mismatched:,} of {total:,} values changed (max Δ {number(item['max_abs'])})"
    return f"{mismatched:,} / {total:,} ({100 * mismatched / max(total, 1):.1f}%)"


def _integer(dtype: str) -> bool:
    return dtype.startswith(("int", "uint")) or dtype[1:2] in ("i", "u")


def ulp_text(item: Comparison) -> str:
    """The ULP distance, or what it would hide: a NaN or Inf where the other side has a
    number is said as such (its ULP count is astronomic and means nothing)."""
    if item.get("nan_mismatch"):
        return f"NaN vs number ({item['nan_mismatch']:,})"
    if item.get("inf_mismatch"):
        return f"Inf mismatch ({item['inf_mismatch']:,})"
    if _integer(str((item.get("dtype") or [""])[0])):
        return "-"  # integers: the difference is max_abs itself
    return number(item.get("max_ulp"))


def decisions_text(item: Comparison) -> str:
    decision = item.get("decision")
    if not isinstance(decision, Mapping):
        return "-"
    return f"{decision.get('decisions_changed', 0)} of {decision.get('total', 0)}"


def _as_float(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return float("inf") if value in ("inf", "nan") else 0.0


def severity(item: Comparison) -> tuple[int, int, int, float, float]:
    """Sort key, larger is worse: the verdict's rank (vocabulary.SEVERITY), decisions
    changed, a NaN or Inf mismatch, max relative difference (max |diff| where it is
    infinite), max |diff| (as comparisons.severity_order; never ULP)."""
    decision = item.get("decision")
    changed = int(decision.get("decisions_changed") or 0) if isinstance(decision, Mapping) else 0
    special = int(bool(item.get("nan_mismatch") or item.get("inf_mismatch")))
    max_abs = _as_float(item.get("max_abs"))
    return (
        SEVERITY.get(str(item.get("verdict")), 0),
        changed,
        special,
        rel if (rel := _as_float(item.get("max_rel"))) != math.inf else max_abs,
        max_abs,
    )


def worst(report: Report, verdicts: frozenset[str] = FAILING) -> list[Comparison]:
    """Comparisons with one of ``verdicts``, worst first."""
    found = [c for c in report.get("comparisons") or [] if c.get("verdict") in verdicts]
    return sorted(found, key=severity, reverse=True)


def agreement_groups(report: Report) -> list[tuple[str, int]]:
    """Agreement patterns ('{a, b} | {c}') and how many outputs share each, commonest first."""
    patterns = report.get("agreement_patterns")
    if isinstance(patterns, list):
        return [(pattern(p.get("classes") or []), int(p.get("outputs") or 0)) for p in patterns]
    groups: Counter[str] = Counter()
    for entry in report.get("agreement") or []:
        groups[pattern(entry.get("classes") or [])] += 1
    return groups.most_common()


def fingerprint(environment: Mapping[str, Any]) -> Mapping[str, Any]:
    value = environment.get("fingerprint")
    return value if isinstance(value, Mapping) else {}


def version(environment: Mapping[str, Any], key: str) -> str:
    value = fingerprint(environment).get(key)
    return "-" if value in (None, "") else str(value)


def advice_lines(report: Report) -> list[str]:
    """explain's advice, one line per output family and pair: ``filter/sep_f32 (6 outputs,
    bookworm -> trixie): set OPENCV_CPU_DISABLE=... on every image ...``."""
    entries = [e for e in report.get("attributions") or [] if isinstance(e, Mapping)]
    if not entries:
        return []
    from reprocheck.explain.advice import advice_by_family  # the explain package is heavy

    return [
        f"{a.family} ({a.outputs} output{'s' if a.outputs != 1 else ''}, "
        f"{a.baseline} -> {a.candidate}): {a.advice}"
        for a in advice_by_family(entries)
    ]


def image_change_lines(report: Report, shown: int = 5) -> list[str]:
    """One line per environment whose image changed since its last stored run (``run
    --refresh``): ``bookworm: image changed since run R: 2 package(s) (libc6 2.36-9 ->
    2.36-10, ...)``."""
    lines = []
    for env in report.get("environments") or []:
        change = env.get("image_change")
        if not isinstance(change, Mapping):
            continue
        head = f"{env.get('name')}: image changed since run {change.get('previous_run')}"
        packages = [p for p in change.get("packages") or [] if isinstance(p, Mapping)]
        if not packages:
            lines.append(f"{head}: no package version changed")
            continue
        parts = [f"{p.get('package')} {p.get('before') or '-'} -> {p.get('after') or '-'}"
                 for p in packages[:shown]]  # fmt: skip
        more = f", and {len(packages) - shown} more" if len(packages) > shown else ""
        lines.append(f"{head}: {len(packages)} package(s) ({', '.join(parts)}{more})")
    return lines


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


def output_key(output: str, fixtures: Sequence[str]) -> str:
    """``*/linalg/svd`` for ``a.jpg/linalg/svd`` when ``a.jpg`` is a fixture; else the name.
    (report.aggregate.group_keys does the same on columns.)"""
    fixture = next((f for f in sorted(fixtures, key=len, reverse=True)
                    if output.startswith(f + "/")), None)  # fmt: skip
    return output if fixture is None else "*/" + output[len(fixture) + 1 :]


def fixtures_of(report: Report) -> list[str]:
    """Every fixture of the run's environments, longest first (for prefix matching)."""
    envs = [*(report.get("environments") or []), *(report.get("references") or [])]
    entries = [f for env in envs for f in env.get("fixtures") or []]
    names = {str(f["fixture"]) for f in entries if isinstance(f, dict) and "fixture" in f}
    return sorted(names, key=len, reverse=True)


def groups_of(report: Report) -> list[Mapping[str, Any]]:
    """Outputs grouped by key and pair (schema 2 lists them; for schema 1 they are made
    here from the comparisons, which that schema lists in full)."""
    listed = report.get("groups")
    if isinstance(listed, list):
        return listed
    fixtures = fixtures_of(report)
    found: dict[tuple[str, str, str], list[Comparison]] = {}
    for item in report.get("comparisons") or []:
        group = (output_key(str(item["output"]), fixtures), item["baseline"], item["candidate"])
        found.setdefault(group, []).append(item)
    result: list[Mapping[str, Any]] = []
    for (key, base, cand), items in found.items():
        bad = [c for c in items if c.get("verdict") in PROBLEMS]
        result.append({
            "key": key, "baseline": base, "candidate": cand, "outputs": len(items),
            "verdicts": dict(verdict_counts(items)), "failing": [c["output"] for c in bad],
            "failing_count": len(bad), "worst": max(items, key=severity),
        })  # fmt: skip
    return result


def decision_line(entry: Mapping[str, Any]) -> str:
    """'*/dnn/probs (a->b): 0 of 360 argmax decisions changed over 3 outputs; drift up to
    594 ULP (max_abs 1.2e-07); the closest call's margin is 135,116x the drift'."""
    over = f" over {entry['outputs']} outputs" if entry.get("outputs", 1) > 1 else ""
    text = (f"{entry['key']} ({pair_label(entry['baseline'], entry['candidate'])}): "
            f"{entry['changed']} of {entry['decisions']} {entry['kind']} decisions changed"
            f"{over}; drift up to {number(entry.get('max_ulp'))} ULP "
            f"(max_abs {number(entry.get('max_abs'))})")  # fmt: skip
    if entry.get("margin_ratio") is not None:
        ratio = float(entry["margin_ratio"])
        shown = f"{ratio:,.0f}" if ratio >= 10 else f"{ratio:.2g}"
        text += f"; the closest call's margin is {shown}x the drift"
    return text


def decision_lines(report: Report, limit: int) -> list[str]:
    """The decision lines worth reading first: those where decisions changed, else all."""
    entries = [e for e in report.get("decisions") or [] if isinstance(e, Mapping)]
    changed = [e for e in entries if e.get("changed")]
    return [decision_line(e) for e in (changed or entries)[:limit]]


def metric_rows(report: Report) -> list[tuple[str, list[str]]]:
    """Per scalar metric, its value in each environment of ``environments`` order, the
    first as the reference and the others with their change: ("*/accuracy",
    ["97.12 %", "97.16 % (+0.04 pp)"]) for a metric with scale 100 and unit "%"."""
    rows = []
    for entry in report.get("metrics") or []:
        values = entry.get("values") or {}
        scale, unit = float(entry.get("scale") or 1.0), str(entry.get("unit") or "")
        names = list(values)
        numbers = [_as_number(values.get(name), exact=scale == 1.0) for name in names]
        shown = _distinct_format(numbers, scale)
        suffix = f" {unit}" if unit else ""
        delta_unit = "pp" if unit == "%" else unit
        first = numbers[0] if numbers else None
        cells = []
        for k, value in enumerate(numbers):
            cell = "-" if value is None else shown(value) + suffix
            if value is not None and first is not None and k and not _same(value, first):
                delta = value - first if isinstance(value, int) and isinstance(first, int) else (
                    float(value) - float(first)) * scale  # fmt: skip
                cell += f" ({delta:+.3g}{(' ' + delta_unit) if delta_unit else ''})"
            cells.append(cell)
        rows.append((str(entry.get("output")), cells))
    return rows


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _distinct_format(values: list[float | None], scale: float) -> Callable[[float], str]:
    """How a row's values are shown: 6 significant digits, or as many more as it takes for
    values that differ to look different (2**53 and 2**53 + 1; 0.1 and 0.1 + 1e-17)."""
    present = [v for v in values if v is not None]
    for digits in range(6, 18):

        def shown(value: float, digits: int = digits) -> str:
            return str(value) if isinstance(value, int) else f"{value * scale:.{digits}g}"

        texts: dict[str, list[float]] = {}
        for value in present:
            texts.setdefault(shown(value), []).append(value)
        if all(all(_same(v, group[0]) for v in group) for group in texts.values()):
            return shown
    return shown


def metric_environments(report: Report) -> list[str]:
    entries = report.get("metrics") or []
    return list((entries[0].get("values") or {}).keys()) if entries else []


def _as_number(value: Any, exact: bool = False) -> float | None:
    """A metric's value as a number; with ``exact``, an int stays an int (2**53 + 1 is not
    2**53)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int):
        return value if exact else float(value)
    if isinstance(value, float):
        return value
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return None
