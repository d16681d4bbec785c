"""HTML report: self-contained, escaped, with pictures, histograms and the fingerprint diff."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_report_schema import DATA, synthetic_report

from reprocheck.report.html import render_html
from reprocheck.report.picture_cache import pictures_folder
from reprocheck.report.pictures import heatmap, is_image, png_bytes, ulp_histogram
from reprocheck.report.trend import trend_svg

EXTERNAL = re.compile(r"""\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> str:
    report = synthetic_report(tmp_path_factory.mktemp("run"))
    trend = trend_svg([("2026-01-01T00:00", "r1", 3), ("2026-01-02T00:00", "<r2>", 0)])
    return render_html(report, trend=trend)


def test_self_contained(page: str) -> None:
    assert not EXTERNAL.search(page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert not re.search(r"<script[^>]+src", page)
    assert "default-src 'none'" in page  # the browser refuses any request


def test_text_is_escaped(page: str) -> None:
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_overview_and_details(page: str) -> None:
    assert page.count('<tr data-output="') == 4
    assert 'data-verdicts="drift error"' in page and 'class="verdict-filter"' in page
    details = re.findall(r'<section class="detail" id="(d\d+)"><h3>([^<]+)</h3>', page)
    assert {name for _, name in details} == {
        "photo.jpg/resize/cubic", "photo.jpg/filter/field", "photo.jpg/dnn/probs",
    }  # fmt: skip
    assert f'href="#{details[0][0]}"' in page


def test_pictures_and_histogram(page: str) -> None:
    # resize/cubic (uint8) and filter/field (float32) get baseline, candidate and heatmap;
    # the 1 x 10 probabilities are not a picture. The trend is an SVG, not a picture.
    assert page.count('src="data:image/png;base64,') == 3 * 2
    assert "amplified difference heatmap" in page
    assert page.count('<svg class="hist"') == 2  # float32 field and probabilities


def test_fingerprint_diff_and_attributions(page: str) -> None:
    section = page[page.index('id="fingerprints"') :]
    for expected in ("glibc", "cv2 build: ZLib", "avx512f", "libopenblas0", "libjpeg62-turbo"):
        assert expected in section
    assert "cv2 build: JPEG" not in section  # the same everywhere
    assert 'id="attributions"' in page and "libjpeg62-turbo" in page


def test_stored_report_without_outputs_still_renders() -> None:
    page = render_html(json.loads((DATA / "report_v1.json").read_text()))
    assert "data:image/png" not in page
    assert "photo.jpg/resize/cubic" in page


def test_png_round_trip() -> None:
    cv2 = pytest.importorskip("cv2")
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    decoded = cv2.imdecode(np.frombuffer(png_bytes(rgb), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded[:, :, ::-1], rgb)
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(
        cv2.imdecode(np.frombuffer(png_bytes(gray), np.uint8), cv2.IMREAD_UNCHANGED), gray
    )


def test_heatmap_and_image_shapes() -> None:
    a = np.zeros((32, 32, 3), np.uint8)
    b = a.copy()
    b[3, 4, 2] = 1
    heat = heatmap(a, b)
    assert heat.differing == 1 and heat.max_diff == 1.0
    assert heat.pixels.shape == (32, 32, 3) and heat.pixels[3, 4].any()
    assert not heat.pixels[0, 0].any()
    assert is_image(a) and not is_image(np.zeros((40, 2), np.float32))
    assert not is_image(np.zeros((12, 256))) and not is_image(np.zeros((32, 32), np.int64))


def test_ulp_histogram_bins() -> None:
    a = np.linspace(1.0, 2.0, 100, dtype=np.float32)
    b = a.copy()
    b[:10] = np.nextafter(b[:10], np.float32(3))
    b[10] = b[10] + np.float32(4 * np.finfo(np.float32).eps)
    hist = ulp_histogram(a, b)
    assert hist is not None
    assert hist.counts[0] == 89 and hist.counts[1] == 10 and sum(hist.counts) == 100
    assert ulp_histogram(a, a.astype(np.float64)) is None


def test_trend_is_an_inline_svg_with_a_point_per_run(page: str) -> None:
    section = page[page.index('id="trend"') :]
    assert section.count("<circle") == 2
    assert "&lt;r2&gt;" in section and "<r2>" not in section  # run ids are escaped


def test_pictures_are_drawn_once_and_kept_for_the_next_run(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reprocheck.report.html as html

    folder = tmp_path_factory.mktemp("reports")
    report = synthetic_report(folder / "elsewhere" / "run-1")  # --out: not in the reports folder
    pictures = pictures_folder(folder)
    first = render_html(report, pictures=pictures)
    kept = sorted(pictures.glob("*.html"))
    # pictures of the two drifting images (cubic, field); ULP histograms of the two drifting
    # float outputs (field, probs)
    assert len(kept) == 4
    assert pictures == folder / ".cache" / "pictures"

    def no_drawing(*_args: object) -> str:
        raise AssertionError("drawn again")

    monkeypatch.setattr(html, "_draw", no_drawing)
    assert render_html(report, pictures=pictures) == first
    with pytest.raises(AssertionError, match="drawn again"):
        render_html(report)  # no folder: every picture is drawn


def _fail(what: str) -> Any:
    def fail(*_args: object, **_kwargs: object) -> Any:
        raise AssertionError(what)

    return fail


def test_kept_fragments_are_used_without_loading_an_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fragments' keys come from the output stores' digests: a run whose outputs are
    those of an earlier one (another run folder) renders its details from the cache alone."""
    import reprocheck.report.html as html
    from reprocheck.output_store import OutputFolders

    pictures = tmp_path / "pictures"
    first = render_html(synthetic_report(tmp_path / "run-1"), pictures=pictures)
    report = synthetic_report(tmp_path / "run-2")
    for name, what in (("_draw", "drawn"), ("ulp_histogram", "histogram computed")):
        monkeypatch.setattr(html, name, _fail(what))
    monkeypatch.setattr(OutputFolders, "load", _fail("array loaded"))
    again = render_html(report, pictures=pictures)
    assert again.replace("run-2", "run-1") == first
    assert again.count('class="hist"') == 2 and again.count('class="figures"') == 2


def test_an_output_that_changed_is_drawn_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reprocheck.report.html as html

    pictures = tmp_path / "pictures"
    report = synthetic_report(tmp_path / "run")
    first = render_html(report, pictures=pictures)
    archive = tmp_path / "run" / "new" / "outputs" / "photo.jpg.npz"
    with np.load(archive) as stored:
        arrays = dict(stored)
    arrays["resize/cubic"][0, 0, 0] ^= 1  # one bit of one pixel
    np.savez(archive, **arrays)  # type: ignore[arg-type]
    drawn: list[str] = []
    draw = html._draw

    def counted(item: Any, a: np.ndarray, b: np.ndarray) -> str:
        drawn.append(str(item["output"]))
        return draw(item, a, b)

    monkeypatch.setattr(html, "_draw", counted)
    monkeypatch.setattr(html, "ulp_histogram", _fail("a float output that did not change"))
    again = render_html(report, pictures=pictures)
    assert drawn == ["photo.jpg/resize/cubic"] and again != first
    assert len(list(pictures.glob("*.html"))) == 5
