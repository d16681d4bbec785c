"""JUnit XML: parses, one suite per pair, one case per output key and pair (its fixtures
together), counts match."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from test_report_schema import DATA, synthetic_report

from reprocheck.report.junit import render_junit


def _parse(report: dict[str, object]) -> ET.Element:
    return ET.fromstring(render_junit(report).encode())


def test_suites_cases_and_counts(tmp_path: Path) -> None:
    report = synthetic_report(tmp_path)
    root = _parse(report)
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["old->new", "old->broken"]
    verdicts = Counter(c["verdict"] for c in report["comparisons"])
    cases = root.findall("testsuite/testcase")
    assert len(cases) == len(report["comparisons"]) == int(root.get("tests", "-1"))
    assert len(root.findall(".//failure")) == verdicts["drift"] == int(root.get("failures", ""))
    assert len(root.findall(".//error")) == verdicts["error"] == int(root.get("errors", ""))
    for suite in suites:
        assert int(suite.get("tests", "")) == len(suite.findall("testcase"))
        assert {c.get("classname") for c in suite.findall("testcase")} == {suite.get("name")}


def test_failure_carries_the_metrics(tmp_path: Path) -> None:
    root = _parse(synthetic_report(tmp_path))
    case = root.find("testsuite/testcase[@name='*/resize/cubic']")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("type") == "drift"
    assert "mismatched" in (failure.get("message") or "")
    assert "max_ulp: 3" in (failure.text or "")
    error = root.find("testsuite[@name='old->broken']/testcase/error")
    assert error is not None and "container exited" in (error.get("message") or "")


def test_nondeterministic_passes_with_a_note() -> None:
    report = json.loads((DATA / "report_v1.json").read_text())
    for item in report["comparisons"]:
        if item["output"] == "photo.jpg/dnn/probs" and item["candidate"] == "new":
            item["verdict"] = "nondeterministic"
    root = _parse(report)
    case = root.find("testsuite[@name='old->new']/testcase[@name='*/dnn/probs']")
    assert case is not None
    assert case.find("failure") is None and case.find("error") is None
    out = case.find("system-out")
    assert out is not None and "nondeterministic in new over 3 repeats" in (out.text or "")


def test_identical_cases_pass(tmp_path: Path) -> None:
    root = _parse(synthetic_report(tmp_path))
    case = root.find("testsuite[@name='old->new']/testcase[@name='*/decode/ok']")
    assert case is not None and len(case) == 0


def test_fixtures_of_one_output_key_are_one_case(tmp_path: Path) -> None:
    report = synthetic_report(tmp_path)
    fixtures = [f"img{k:03d}.png" for k in range(120)]
    for env in report["environments"]:
        env["fixtures"] = [{"fixture": f, "status": "ok"} for f in fixtures]
    template = next(c for c in report["comparisons"] if c["verdict"] == "drift")
    _schema_1(report)
    report["comparisons"] = [
        {**template, "output": f"{f}/resize/cubic",
         "verdict": "drift" if k % 3 == 0 else "identical", "max_abs": float(k)}
        for k, f in enumerate(fixtures)
    ]  # fmt: skip
    root = _parse(report)
    (case,) = root.findall("testsuite/testcase")
    assert case.get("name") == "*/resize/cubic"
    failure = case.find("failure")
    assert failure is not None
    assert (failure.get("message") or "").startswith("40 of 120 failing; worst img117.png/")
    assert "...and 0 more" not in (failure.text or "") and "img000.png" in (failure.text or "")
    assert root.get("tests") == "1" and root.get("failures") == "1"


def _schema_1(report: dict) -> None:
    """Drop what schema 2 derives from all comparisons, so that comparisons edited by hand
    are read as a schema 1 report lists them: in full."""
    for key in ("summary", "pair_summary", "groups", "listed", "agreement_patterns"):
        report.pop(key, None)
    report["schema_version"] = 1


def test_names_with_characters_xml_cannot_hold_still_parse() -> None:
    """Output names are any bytes a pipeline wrote: C0 controls, an ANSI colour, a
    surrogate-escaped byte. They are shown as escapes; the file stays well-formed."""
    report = json.loads((DATA / "report_v1.json").read_text())
    names = ["ctl\x01name", "esc\x1b[31mred", "byte\udcff", "fine\tüñí😀"]
    for item, name in zip(report["comparisons"], names, strict=False):
        item["output"] = name
        item["note"] = f"about {name}"
        item["verdict"] = "drift"
    root = _parse(report)
    cases = {c.get("name") for c in root.iter("testcase")}
    assert {"ctl\\x01name", "esc\\x1b[31mred", "byte\\udcff", "fine\tüñí😀"} <= cases
    messages = [f.get("message") or "" for f in root.iter("failure")]
    assert any("about ctl\\x01name" in message for message in messages)
