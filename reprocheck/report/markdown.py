"""Report dict -> compact Markdown for a pull-request comment or a CI job summary."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from reprocheck.report.common import (
    FAILING,
    VERSION_KEYS,
    Report,
    advice_lines,
    agreement_groups,
    decision_lines,
    decisions_text,
    escaped,
    headline,
    image_change_lines,
    metric_environments,
    metric_rows,
    mismatch_text,
    number,
    ordered_verdicts,
    pair_counts,
    pair_label,
    pairs,
    problems,
    total_counts,
    ulp_text,
    version,
    worst,
)

TOP_SHOWN = 15
PROBLEMS_SHOWN = 20
STATUS_MARK = {"CONSISTENT": "✅", "DRIFT": "❌", "ERROR": "⚠️"}


@dataclass(frozen=True)
class _Code:
    """A name (an output, an agreement pattern) shown as a code span: as it was written."""

    text: str


# What a reader cannot see: C0 and C1 controls (an ANSI colour), surrogate-escaped bytes.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _visible(text: str) -> str:
    """Whitespace runs (newlines too) as one space, invisible characters as escapes."""
    return escaped(_INVISIBLE, " ".join(text.split()))


def _code_span(text: str) -> str:
    """``text`` as a code span: shown literally (no HTML escaping: a span shows ``<`` and
    ``&`` as they are), fenced by one backtick more than its longest run of them, pipes
    escaped for tables."""
    body = _visible(text).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def _cell(value: Any) -> str:
    """Table cell text: HTML tags and entities, and pipes escaped (user text may hold any),
    newlines folded, invisible characters as escapes. ``>`` alone starts no tag and stays
    readable ("a -> b"). A :class:`_Code` is a code span."""
    if isinstance(value, _Code):
        return _code_span(value.text)
    text = _visible(str(value)).replace("&", "&amp;").replace("<", "&lt;")
    return text.replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _headline(report: Report) -> list[str]:
    status, counts = headline(report)
    envs = len(report.get("environments") or [])
    run = report.get("run_id", "?")
    return [
        f"## {STATUS_MARK[status]} reprocheck: {status}",
        "",
        f"**{counts}** across {envs} environments (run `{run}`)",
    ]


def _environments(report: Report) -> list[str]:
    rows = [
        [env.get("name"), env.get("status"), *(version(env, key) for key in VERSION_KEYS)]
        for env in report.get("environments") or []
    ]
    return ["### Environments", "", *_table(["environment", "status", *VERSION_KEYS], rows)]


def _pairs(report: Report) -> list[str]:
    verdicts = ordered_verdicts(total_counts(report))
    rows = []
    for base, cand in pairs(report):
        counts = pair_counts(report, base, cand)
        rows.append([pair_label(base, cand), *(counts.get(v, 0) for v in verdicts)])
    return ["### Verdicts per pair", "", *_table(["baseline->candidate", *verdicts], rows)]


def _top(report: Report) -> list[str]:
    found = worst(report)
    if not found:
        return []
    header = ["output", "pair", "verdict", "max_abs", "max_rel", "mismatched", "ULP", "decisions"]
    rows = [
        [
            _Code(item["output"]),
            pair_label(item["baseline"], item["candidate"]),
            item["verdict"],
            number(item.get("max_abs")),
            number(item.get("max_rel")),
            mismatch_text(item),
            ulp_text(item),
            decisions_text(item),
        ]
        for item in found[:TOP_SHOWN]
    ]
    counts = total_counts(report)
    failing = max(len(found), sum(counts[v] for v in FAILING))
    more = failing - TOP_SHOWN
    title = f"### Top drifting outputs ({failing} in all)"
    tail = ["", f"…and {more} more."] if more > 0 else []
    return [title, "", *_table(header, rows), *tail]


def _agreement(report: Report) -> list[str]:
    groups = agreement_groups(report)
    if not groups:
        return []
    rows = [[count, _Code(pattern)] for pattern, count in groups]
    return [
        "### Agreement classes",
        "",
        "Environments whose outputs are bit-identical share a class.",
        "",
        *_table(["outputs", "classes"], rows),
    ]


def _noise(report: Report) -> list[str]:
    noise = report.get("nondeterministic") or []
    if not noise:
        return []
    rows = [
        [_Code(n["output"]), n["environment"], n["repeats"], number(n.get("max_abs")),
         number(n.get("max_ulp"))]
        for n in noise
    ]  # fmt: skip
    header = ["output", "environment", "repeats", "max_abs", "max_ulp"]
    return ["### Nondeterministic outputs", "", *_table(header, rows)]


def _problems(report: Report) -> list[str]:
    lines = problems(report)
    if not lines:
        return []
    shown = [f"- {_cell(line)}" for line in lines[:PROBLEMS_SHOWN]]
    if len(lines) > PROBLEMS_SHOWN:
        shown.append(f"- …and {len(lines) - PROBLEMS_SHOWN} more")
    return ["### Errors", "", *shown]


def _decisions(report: Report) -> list[str]:
    lines = decision_lines(report, TOP_SHOWN)
    return ["### Decisions", "", *(f"- {_cell(line)}" for line in lines)] if lines else []


def _image_changes(report: Report) -> list[str]:
    lines = image_change_lines(report)
    return ["### Refreshed images", "", *(f"- {_cell(line)}" for line in lines)] if lines else []


def _advice(report: Report) -> list[str]:
    lines = advice_lines(report)
    return ["### What to do", "", *(f"- {_cell(line)}" for line in lines)] if lines else []


def _metrics(report: Report) -> list[str]:
    rows = metric_rows(report)
    if not rows:
        return []
    header = ["metric", *metric_environments(report)]
    return ["### Metrics", "", *_table(header, [[_Code(o), *cells] for o, cells in rows])]


SECTIONS = (
    _headline,
    _problems,  # what made the run exit 2, before anything long
    _metrics,
    _decisions,
    _image_changes,
    _environments,
    _pairs,
    _top,
    _advice,
    _agreement,
    _noise,
)


def render_markdown(report: Report) -> str:
    """A compact summary: verdict, environments, per-pair counts, worst outputs, errors."""
    blocks = [section(report) for section in SECTIONS]
    return "\n\n".join("\n".join(block) for block in blocks if block) + "\n"
