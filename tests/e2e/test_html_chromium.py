"""The HTML report in a real headless Chromium: the script runs, nothing is logged to the
console, no request leaves the page, and a screenshot is taken.

Needs Debian's `chromium` package. Skipped when it is absent, except when CI=true: there a
missing browser fails, so CI can never pass green without having opened the report.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))  # the shared synthetic report
from test_report_schema import synthetic_report

from reprocheck.report.html import render_html
from reprocheck.report.trend import trend_svg

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
)  # fmt: skip
# Console output of any kind (our page logs nothing), uncaught exceptions and CSP refusals.
CONSOLE_PROBLEM = re.compile(r"Uncaught|ERROR:CONSOLE|:CONSOLE|Refused to", re.I)
URL_ATTRIBUTE = re.compile(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def _browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        reason = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def _chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [_browser(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args,
               page.as_uri()]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    problems = [line for line in result.stderr.splitlines() if CONSOLE_PROBLEM.search(line)]
    assert not problems, "\n".join(problems)
    return result


@pytest.fixture
def page(tmp_path: Path) -> Path:
    report = synthetic_report(tmp_path / "run")
    trend = trend_svg([("2026-01-0{k}T00:00", f"run-{k}", k) for k in range(1, 5)])
    path = tmp_path / "report.html"
    path.write_text(render_html(report, trend=trend), encoding="utf-8")
    return path


def test_no_network_urls(page: Path) -> None:
    assert not URL_ATTRIBUTE.search(page.read_text(encoding="utf-8"))


def test_script_runs_without_console_errors(tmp_path: Path, page: Path) -> None:
    dom = _chromium(tmp_path, page, "--dump-dom").stdout
    assert 'data-ready="1"' in dom, "the page script did not finish"
    # The filter ran: every output has a checked verdict (drift or error), none is hidden.
    assert re.search(r'id="shown"[^>]*>4 of 4 outputs shown<', dom)
    assert "<tr hidden" not in dom


def test_screenshot(tmp_path: Path, page: Path) -> None:
    shot = tmp_path / "report.png"
    _chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1400,2000")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    cv2 = pytest.importorskip("cv2")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (2000, 1400)
    assert float(image.std()) > 10, "the screenshot is blank"
