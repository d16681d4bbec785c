"""Report dict -> JUnit XML: one testsuite per environment pair, one testcase per output.

``drift``, ``incomparable`` and ``missing`` are failures carrying the metrics, ``error`` is
an error, every other verdict passes (``nondeterministic`` with a note in system-out).
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


def _testcase(suite: ET.Element, item: Comparison, noise: Sequence[str]) -> None:
    label = pair_label(item["baseline"], item["candidate"])
    case = ET.SubElement(suite, "testcase", classname=label, name=str(item["output"]))
    verdict = item["verdict"]
    if verdict in FAILING:
        ET.SubElement(case, "failure", message=_message(item), type=verdict).text = _metrics_text(
            item
        )
    elif verdict == "error":
        ET.SubElement(case, "error", message=_message(item), type=verdict).text = _metrics_text(
            item
        )
    notes = list(noise)
    if verdict == "nondeterministic":
        notes.append("nondeterministic: " + _message(item))
    if notes:
        ET.SubElement(case, "system-out").text = "\n".join(notes)


def _suite(report: Report, base: str, cand: str, noise: dict[str, list[str]]) -> ET.Element:
    items = pair_items(report, base, cand)
    suite = ET.Element(
        "testsuite",
        name=pair_label(base, cand),
        tests=str(len(items)),
        failures=str(sum(c["verdict"] in FAILING for c in items)),
        errors=str(sum(c["verdict"] == "error" for c in items)),
        skipped="0",
    )
    if report.get("started"):
        suite.set("timestamp", str(report["started"]))
    for item in items:
        _testcase(suite, item, noise.get(str(item["output"]), []))
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
