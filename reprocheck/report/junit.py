"""Report dict -> JUnit XML: one testsuite per environment pair, one testcase per output
key and pair, its fixtures together (``*/linalg/svd`` for ``a.jpg/linalg/svd``,
``b.jpg/linalg/svd``, ...), so a CI viewer shows tens of cases, not one per sample.

A key with an ``error`` is an error; else one with ``drift``, ``incomparable`` or
``missing`` is a failure naming how many fixtures fail and carrying the worst one's metrics;
every other verdict passes (``nondeterministic`` with a note in system-out).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from reprocheck.report.common import (
    FAILING,
    Comparison,
    Report,
    escaped,
    fixtures_of,
    groups_of,
    mismatch_text,
    number,
    output_key,
    pair_counts,
    pair_label,
    pairs,
    ulp_text,
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
        parts.append(f"max_rel {number(item.get('max_rel'))}")
        parts.append(f"ULP {ulp_text(item)}")
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


def _kind(verdicts: Mapping[str, int]) -> str | None:
    if verdicts.get("error"):
        return "error"
    return "failure" if any(verdicts.get(v) for v in FAILING) else None


def _problem(case: ET.Element, kind: str, group: Mapping[str, Any]) -> None:
    worst = group.get("worst") or {}
    failing = int(group.get("failing_count") or 0)
    message = (f"{failing} of {group.get('outputs')} failing; worst {worst.get('output')}: "
               f"{_message(worst)}")  # fmt: skip
    named = [str(o) for o in group.get("failing") or []]
    more = f"\n...and {failing - len(named)} more" if failing > len(named) else ""
    text = f"{_metrics_text(worst)}\nfailing outputs:\n" + "\n".join(named) + more
    ET.SubElement(case, kind, message=message, type=str(worst.get("verdict"))).text = text


def _testcase(
    suite: ET.Element, group: Mapping[str, Any], noise: dict[str, list[str]],
    fixtures: Sequence[str],
) -> None:  # fmt: skip
    label = pair_label(group["baseline"], group["candidate"])
    case = ET.SubElement(suite, "testcase", classname=label, name=str(group["key"]))
    verdicts = group.get("verdicts") or {}
    kind = _kind(verdicts)
    if kind is not None:
        _problem(case, kind, group)
    notes = [note for output, lines in noise.items()
             if output_key(output, fixtures) == group["key"] for note in lines]  # fmt: skip
    if verdicts.get("nondeterministic"):
        notes.append(f"nondeterministic: {verdicts['nondeterministic']} of {group['outputs']}")
    if int(group.get("outputs") or 0) > 1:
        notes.append(f"outputs: {group['outputs']}")
    if notes:
        ET.SubElement(case, "system-out").text = "\n".join(notes)


def _rest(suite: ET.Element, report: Report, base: str, cand: str,
          listed: Sequence[Mapping[str, Any]]) -> None:  # fmt: skip
    """One case for the outputs of groups the report does not list (a very large run)."""
    total = pair_counts(report, base, cand)
    shown: Counter[str] = Counter()
    for group in listed:
        shown.update(group.get("verdicts") or {})
    rest = total - shown
    if not rest:
        return
    case = ET.SubElement(suite, "testcase", classname=pair_label(base, cand),
                         name="(outputs of unlisted keys)")  # fmt: skip
    kind = _kind(rest)
    text = ", ".join(f"{n} {v}" for v, n in sorted(rest.items()))
    if kind is not None:
        ET.SubElement(case, kind, message=text, type=kind).text = (
            f"{text}; every comparison is in comparisons.parquet")  # fmt: skip
    else:
        ET.SubElement(case, "system-out").text = text


def _suite(report: Report, base: str, cand: str, noise: dict[str, list[str]]) -> ET.Element:
    listed = [g for g in groups_of(report) if (g["baseline"], g["candidate"]) == (base, cand)]
    fixtures = fixtures_of(report)
    suite = ET.Element("testsuite", name=pair_label(base, cand))
    if report.get("started"):
        suite.set("timestamp", str(report["started"]))
    for group in listed:
        _testcase(suite, group, noise, fixtures)
    _rest(suite, report, base, cand, listed)
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    suite.set("errors", str(sum(c.find("error") is not None for c in cases)))
    suite.set("skipped", "0")
    return suite


def render_junit(report: Report) -> str:
    """JUnit XML that CI systems (GitHub, GitLab, Jenkins) show as test results."""
    noise = _noise_notes(report)
    root = ET.Element("testsuites", name=f"reprocheck {report.get('run_id', '')}".strip())
    suites = [_suite(report, base, cand, noise) for base, cand in pairs(report)]
    root.extend(suites)
    for key in ("tests", "failures", "errors"):
        root.set(key, str(sum(int(s.get(key, "0")) for s in suites)))
    _xml_safe(root)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# Characters XML 1.0 has no place for, even escaped (C0 controls but tab and newlines,
# surrogates, U+FFFE/U+FFFF): ElementTree writes them as they are, and a parser (a CI server)
# then rejects the whole file.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(root: ET.Element) -> None:
    """Every text and attribute of ``root`` with such characters shown as escapes (an
    output named ``a\x01b`` is the test case ``a\\x01b``)."""
    for element in root.iter():
        for name, value in element.attrib.items():
            element.set(name, escaped(_NOT_XML, value))
        if element.text:
            element.text = escaped(_NOT_XML, element.text)
