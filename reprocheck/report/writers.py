"""Write the rendered reports: always report.md and report.html in the run folder, and the
files asked for on the command line. Every file is written atomically."""

from __future__ import annotations

from pathlib import Path

from reprocheck.report.common import Report
from reprocheck.report.html import render_html
from reprocheck.report.junit import render_junit
from reprocheck.report.markdown import render_markdown
from reprocheck.report.paths import ReportPaths
from reprocheck.store import HTML_FILE, MARKDOWN_FILE, write_atomic


def write_reports(
    report: Report, run_dir: Path, paths: ReportPaths, *, trend: str | None = None,
    pictures: Path | None = None,
) -> Path:  # fmt: skip
    """Render each format once and write it where it goes; returns the run's report.html.
    ``pictures``: where drawn pictures are kept between runs (see report.picture_cache)."""
    markdown = render_markdown(report)
    page = render_html(report, trend=trend, pictures=pictures)
    targets = [
        (run_dir / MARKDOWN_FILE, markdown),
        (run_dir / HTML_FILE, page),
        (paths.md, markdown),
        (paths.html, page),
        (paths.junit, render_junit(report) if paths.junit else ""),
    ]
    for path, text in targets:
        if path is not None:
            write_atomic(path, text)
    return run_dir / HTML_FILE
