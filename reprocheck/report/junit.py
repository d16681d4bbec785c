"""Report dict -> JUnit XML: one testsuite per environment pair, one testcase per output
key and pair, its fixtures together (``*/linalg/svd`` for ``a.jpg/linalg/svd``,
``b.jpg/linalg/svd``, ...), so a CI viewer shows tens of cases, not one per sample.

A key with an ``error`` is an error; else one with ``drift``, ``incomparable`` or
``missing`` is a failure naming how many fixtures fail and carrying the worst one's metrics;
every other verdict passes (``nondeterministic`` with a note in system-out).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from reprocheck.report.common import (
    FAILING,
    Comparison,
    Report,
    mismatch_text,
    number,
    pair_items,
    pair_label,
    pairs,
)

METRIC_KEYS: tuple[str, ...] = (
    "rule", "dtype", "shape", "total", "mismatched", "bit_identical", "max_abs", "mean_abs",
    "max_rel", "max_ulp", "worst_indices", "nan_mismatch", "inf_mismatch", "psnr",
    "differing_pixels", "rows", "decision", "note",
)  # fmt: skip


def _metrics_text(item: Comparison) -> str:
    return "\n".join(
        f"{key}: {json.dumps(item[key])}" for key in METRIC_KEYS if item.get(key) is not None
    )


def _message(item: Comparison) -> str:
    parts = [str(item["verdict"])]
    if item.get("total") is not None:
        parts.append(f"{mismatch_text(item)} mismatched")
        parts.append(f"max_abs {number(item.get('max_abs'))}")
        parts.append(f"max_ulp {number(item.get('max_ulp'))}")
    if item.get("note"):
        parts.append(str(item["note"]))
    return ", ".join(parts)


def _noise_notes(report: Report) -> dict[str, list[str]]:
    """Per output, the environments where repeated runs disagreed."""
    notes: dict[str, list[str]] = {}
    for entry in report.get("nondeterministic") or []:
        notes.setdefault(str(entry["output"]), []).append(
            f"nondeterministic in {entry['environment']} over {entry['repeats']} repeats: "
            f"max_abs {number(entry.get('max_abs'))}, max_ulp {number(entry.get('max_ulp'))}"
        )
    return notes


OUTPUTS_LISTED = 50  # failing outputs named in one testcase


def fixtures_of(report: Report) -> list[str]:
    """Every fixture of the run's environments, longest first (for prefix matching)."""
    entries = [f for env in report.get("environments") or [] for f in env.get("fixtures") or []]
    names = {str(f["fixture"]) for f in entries if isinstance(f, dict) and "fixture" in f}
    return sorted(names, key=len, reverse=True)


def output_key(output: str, fixtures: Sequence[str]) -> str:
    """``*/linalg/svd`` for ``a.jpg/linalg/svd`` when ``a.jpg`` is a fixture; else the name."""
    fixture = next((f for f in fixtures if output.startswith(f + "/")), None)
    return output if fixture is None else "*/" + output[len(fixture) + 1 :]


def _group(items: Sequence[Comparison], fixtures: Sequence[str]) -> dict[str, list[Comparison]]:
    groups: dict[str, list[Comparison]] = {}
    for item in items:
        groups.setdefault(output_key(str(item["output"]), fixtures), []).append(item)
    return groups


def _kind(group: Sequence[Comparison]) -> str | None:
    if any(c["verdict"] == "error" for c in group):
        return "error"
    return "failure" if any(c["verdict"] in FAILING for c in group) else None


def _size(item: Comparison) -> float:
    value = item.get("max_abs")
    return float(value) if isinstance(value, int | float) else 0.0


def _problem(case: ET.Element, kind: str, group: Sequence[Comparison]) -> None:
    bad = [c for c in group if (c["verdict"] == "error") == (kind == "error")
           and c["verdict"] in FAILING | {"error"}]  # fmt: skip
    worst = max(bad, key=_size)
    message = f"{len(bad)} of {len(group)} failing; worst {worst['output']}: {_message(worst)}"
    listed = "\n".join(str(c["output"]) for c in bad[:OUTPUTS_LISTED])
    more = f"\n...and {len(bad) - OUTPUTS_LISTED} more" if len(bad) > OUTPUTS_LISTED else ""
    text = f"{_metrics_text(worst)}\nfailing outputs:\n{listed}{more}"
    ET.SubElement(case, kind, message=message, type=str(worst["verdict"])).text = text


def _testcase(
    suite: ET.Element, key: str, group: Sequence[Comparison], noise: dict[str, list[str]]
) -> None:
    label = pair_label(group[0]["baseline"], group[0]["candidate"])
    case = ET.SubElement(suite, "testcase", classname=label, name=key)
    kind = _kind(group)
    if kind is not None:
        _problem(case, kind, group)
    notes = [note for c in group for note in noise.get(str(c["output"]), [])]
    notes += [f"nondeterministic: {c['output']}: {_message(c)}"
              for c in group if c["verdict"] == "nondeterministic"]  # fmt: skip
    if len(group) > 1:
        notes.append(f"outputs: {len(group)} ({group[0]['output']}, ...)")
    if notes:
        ET.SubElement(case, "system-out").text = "\n".join(notes)


def _suite(report: Report, base: str, cand: str, noise: dict[str, list[str]]) -> ET.Element:
    groups = _group(pair_items(report, base, cand), fixtures_of(report))
    kinds = [_kind(group) for group in groups.values()]
    suite = ET.Element(
        "testsuite",
        name=pair_label(base, cand),
        tests=str(len(groups)),
        failures=str(kinds.count("failure")),
        errors=str(kinds.count("error")),
        skipped="0",
    )
    if report.get("started"):
        suite.set("timestamp", str(report["started"]))
    for key, group in groups.items():
        _testcase(suite, key, group, noise)
    return suite


def render_junit(report: Report) -> str:
    """JUnit XML that CI systems (GitHub, GitLab, Jenkins) show as test results."""
    noise = _noise_notes(report)
    root = ET.Element("testsuites", name=f"reprocheck {report.get('run_id', '')}".strip())
    suites = [_suite(report, base, cand, noise) for base, cand in pairs(report)]
    root.extend(suites)
    for key in ("tests", "failures", "errors"):
        root.set(key, str(sum(int(s.get(key, "0")) for s in suites)))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
