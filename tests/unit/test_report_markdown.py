"""Markdown summary: golden file of the synthetic report, and its limits."""

from __future__ import annotations

import json
import os
from pathlib import Path

from test_report_schema import DATA, synthetic_report

from reprocheck.report.markdown import TOP_SHOWN, render_markdown

GOLDEN = DATA / "report_small.md"


def test_markdown_matches_golden(tmp_path: Path) -> None:
    text = render_markdown(synthetic_report(tmp_path))
    if os.environ.get("REPROCHECK_REGEN_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "set REPROCHECK_REGEN_GOLDEN=1 to accept a change"


def test_stored_report_renders_the_same(tmp_path: Path) -> None:
    """A schema 1 report renders as the same run's schema 2 report, without the sections
    schema 1 has no data for (decisions are summed over every comparison)."""
    stored = json.loads((DATA / "report_v1.json").read_text())
    current = synthetic_report(tmp_path)
    current.pop("decisions")
    assert render_markdown(stored) == render_markdown(current)


def test_top_outputs_are_capped_and_pipes_escaped() -> None:
    report = json.loads((DATA / "report_v1.json").read_text())
    drift = next(c for c in report["comparisons"] if c["verdict"] == "drift")
    _schema_1(report)
    report["comparisons"] = [dict(drift, output=f"a|b/{i}") for i in range(40)]
    text = render_markdown(report)
    assert text.count("`a\\|b/") == TOP_SHOWN
    assert f"…and {40 - TOP_SHOWN} more." in text


def test_consistent_run_has_a_green_headline() -> None:
    report = json.loads((DATA / "report_v1.json").read_text())
    report["environments"] = [e for e in report["environments"] if e["status"] == "ok"]
    _schema_1(report)
    report["comparisons"] = [c for c in report["comparisons"] if c["verdict"] == "identical"]
    text = render_markdown(report)
    assert text.startswith("## ✅ reprocheck: CONSISTENT")
    assert "### Errors" not in text


def test_html_in_user_text_is_escaped(tmp_path: Path) -> None:
    report = synthetic_report(tmp_path)
    report["environments"][0]["status"] = "partial"
    report["environments"][0]["error"] = "fixture a: ValueError: <script>alert(1)</script> & co"
    text = render_markdown(report)
    assert "<script>" not in text
    assert "&lt;script>alert(1)&lt;/script> &amp; co" in text


def _schema_1(report: dict) -> None:
    """Drop what schema 2 derives from all comparisons, so that comparisons edited by hand
    are read as a schema 1 report lists them: in full."""
    for key in ("summary", "pair_summary", "groups", "listed", "agreement_patterns"):
        report.pop(key, None)
    report["schema_version"] = 1


def test_output_names_show_as_written_in_code_spans() -> None:
    """A name goes into a code span as it is (a span shows ``<`` and ``&`` literally, so
    escaping them there would show ``&lt;``); backticks get a longer fence, pipes stay
    escaped for the table, controls (an ANSI colour) become visible escapes."""
    report = json.loads((DATA / "report_v1.json").read_text())
    drift = next(c for c in report["comparisons"] if c["verdict"] == "drift")
    _schema_1(report)
    names = ["j/<script>", "amp&name", "tick`name", "`edge", "pipe|name", "esc\x1b[31mred"]
    report["comparisons"] = [dict(drift, output=name) for name in names]
    text = render_markdown(report)
    for shown in ["`j/<script>`", "`amp&name`", "``tick`name``", "`` `edge ``",
                  "`pipe\\|name`", "`esc\\x1b[31mred`"]:  # fmt: skip
        assert shown in text
    assert "\x1b" not in text and "&lt;" not in text
