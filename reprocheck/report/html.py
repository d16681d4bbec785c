"""Report dict -> one self-contained HTML file (inline CSS/JS, images as data: URIs).

Sections: header with verdict counts, environments, an overview matrix (outputs x pairs,
filterable), a detail per drifting output (metrics, baseline / candidate / |difference|
heatmap, ULP histogram), the environment fingerprint diff, attributions when present,
agreement classes, nondeterministic outputs and errors. Every text is escaped.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, TypeVar

import numpy as np

from reprocheck.errors import ReprocheckError
from reprocheck.output_store import Described, OutputFolders
from reprocheck.report.common import (
    FAILING,
    VERSION_KEYS,
    Comparison,
    Report,
    advice_lines,
    agreement_groups,
    decision_lines,
    decisions_text,
    headline,
    image_change_lines,
    listing_note,
    metric_environments,
    metric_rows,
    mismatch_text,
    number,
    ordered_verdicts,
    pair_label,
    pairs,
    problems,
    total_counts,
    ulp_text,
    verdict_counts,
    version,
    worst,
)
from reprocheck.report.envdiff import DiffRow, environment_diff
from reprocheck.report.picture_cache import Fragment, PictureCache, fragment_key
from reprocheck.report.pictures import (
    Histogram,
    display_pair,
    heatmap,
    image_layout,
    png_bytes,
    ulp_histogram,
)

T = TypeVar("T")
MAX_IMAGE_OUTPUTS = 40  # drifting outputs that get pictures; the rest get metrics only
MAX_DECISION_LINES = 50
# Drifting outputs with a detail section (metrics per pair, ULP histogram), worst first; the
# overview and the groups list the rest, comparisons.parquet has every one.
MAX_DETAIL_OUTPUTS = 100  # decision lines shown (changed decisions first)
MAX_IMAGE_BYTES = 12 * 2**20  # stop adding pictures past this much PNG data
DISPLAY_SIDE = 240  # small pictures are enlarged (pixelated) to about this many CSS px
DETAIL_METRICS: tuple[str, ...] = (
    "dtype", "shape", "mismatched", "max_abs", "mean_abs", "max_rel", "max_ulp", "psnr",
    "differing_pixels", "decisions", "worst_indices",
)  # fmt: skip


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _template() -> Template:
    text = resources.files("reprocheck.report").joinpath("report.html").read_text("utf-8")
    return Template(text)


# --------------------------------------------------------------------------- arrays


class _Arrays:
    """Environments' outputs, indexed on first use; None where an array cannot be had."""

    def __init__(self, report: Report, pictures: Path | None) -> None:
        self._dirs = {
            str(e.get("name")): Path(str(e.get("outputs_dir")))
            for e in report.get("environments") or []
            if e.get("outputs_dir")
        }
        self._folders = OutputFolders()
        self.pictures = PictureCache(pictures)

    def load(self, environment: str, output: str) -> np.ndarray | None:
        return self._ask(environment, lambda folder: self._folders.load(folder, output))

    def describe(self, environment: str, output: str) -> Described | None:
        """The output's digest, dtype and shape from its store, without loading it."""
        return self._ask(environment, lambda folder: self._folders.describe(folder, output))

    def _ask(self, environment: str, ask: Callable[[Path], T | None]) -> T | None:
        folder = self._dirs.get(environment)
        if folder is None:
            return None
        try:
            return ask(folder)
        except (ReprocheckError, OSError):
            return None


class _Pair:
    """One comparison's two arrays as their stores describe them, loaded on first use (only
    when a fragment has to be drawn)."""

    def __init__(self, item: Comparison, arrays: _Arrays, a: Described, b: Described) -> None:
        self.item, self.a, self.b = item, a, b
        self._arrays = arrays
        self._loaded: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def names(self) -> tuple[str, str]:
        return str(self.item["baseline"]), str(self.item["candidate"])

    def key(self, kind: Fragment, *names: str) -> str:
        return fragment_key(kind, self.a.digest, self.b.digest, *names)

    def arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self._loaded is None:
            output = str(self.item["output"])
            a, b = (self._arrays.load(name, output) for name in self.names)
            if a is None or b is None:
                return None
            self._loaded = a, b
        return self._loaded

    def fragment(self, kind: Fragment, draw: Callable[[np.ndarray, np.ndarray], str],
                 *names: str) -> str | None:  # fmt: skip
        """The fragment kept from an earlier run, else drawn (None: the arrays cannot be
        read any more)."""
        cache, key = self._arrays.pictures, self.key(kind, *names)
        fragment = cache.get(key)
        if fragment is None:
            loaded = self.arrays()
            if loaded is None:
                return None
            fragment = draw(*loaded)
            cache.put(key, fragment)
        return fragment


@dataclass(kw_only=True)
class _Budget:
    """How many more outputs may get pictures, and how many more bytes of PNG."""

    outputs: int = MAX_IMAGE_OUTPUTS
    image_bytes: int = MAX_IMAGE_BYTES
    skipped: list[str] = field(default_factory=list)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --------------------------------------------------------------------------- header


def _badges(counts: Mapping[str, int]) -> str:
    return "".join(
        f'<span class="badge v-{_e(v)}">{counts[v]} {_e(v)}</span>'
        for v in ordered_verdicts(counts)
    )


def _header(report: Report) -> str:
    status, text = headline(report)
    counts = total_counts(report)
    envs = ", ".join(str(e.get("name")) for e in report.get("environments") or [])
    return (
        f'<header><h1>reprocheck report <span class="status status-{status}">{status}</span></h1>'
        f'<div class="muted">run <code>{_e(report.get("run_id", "?"))}</code> · started '
        f"{_e(report.get('started', '?'))} · config <code>{_e(report.get('config', '?'))}</code>"
        f"</div><div>{_e(text)} across {_e(envs)}</div><div>{_badges(counts)}</div>"
        '<nav class="muted"><a href="#groups">outputs by key</a><a href="#overview">overview</a>'
        '<a href="#details">drifting outputs</a>'
        '<a href="#fingerprints">fingerprint diff</a><a href="#agreement">agreement</a></nav>'
        "</header>"
    )


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], *, css: str = "") -> str:
    """A table from already-escaped cell HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    table = f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _short_id(env: Mapping[str, Any]) -> str:
    return str(env.get("image_id") or "-")[:19]


def _environments(report: Report) -> str:
    rows = [
        [_e(env.get("name")), _e(env.get("status")), f"<code>{_e(_short_id(env))}</code>",
         *(_e(version(env, key)) for key in VERSION_KEYS), _e(env.get("error") or "")]
        for env in report.get("environments") or []
    ]  # fmt: skip
    header = ["environment", "status", "image id", *VERSION_KEYS, "error"]
    return f'<h2 id="environments">Environments</h2>{_table(header, rows)}'


# --------------------------------------------------------------------------- overview


def _anchor(output: str, details: Mapping[str, str]) -> str | None:
    return details.get(output)


def _cell_text(item: Comparison) -> str:
    if item.get("verdict") in ("identical", "error", "missing") or not item.get("mismatched"):
        return str(item["verdict"])
    share = 100 * (item.get("mismatched") or 0) / max(int(item.get("total") or 1), 1)
    return f"{item['verdict']} {share:.1f}%"


def _cell_title(item: Comparison) -> str:
    parts = [f"{pair_label(item['baseline'], item['candidate'])}: {item['verdict']}"]
    if item.get("total") is not None:
        parts.append(f"mismatched {mismatch_text(item)}")
        parts += [f"{k} {number(item.get(k))}" for k in ("max_abs", "max_rel")]
        parts.append(f"ULP {ulp_text(item)}")
    if item.get("note"):
        parts.append(str(item["note"]))
    return "; ".join(parts)


def _cell(item: Comparison | None, link: str | None) -> str:
    if item is None:
        return '<td class="cell v-none">-</td>'
    text = _e(_cell_text(item))
    inner = f'<a href="#{link}">{text}</a>' if link and item["verdict"] in FAILING else text
    return f'<td class="cell v-{_e(item["verdict"])}" title="{_e(_cell_title(item))}">{inner}</td>'


def _by_output(report: Report) -> dict[str, dict[tuple[str, str], Comparison]]:
    table: dict[str, dict[tuple[str, str], Comparison]] = {}
    for item in report.get("comparisons") or []:
        table.setdefault(str(item["output"]), {})[(item["baseline"], item["candidate"])] = item
    return table


def _controls(counts: Mapping[str, int]) -> str:
    present = ordered_verdicts(counts)
    hide_identical = any(v != "identical" for v in present)
    boxes = "".join(
        f'<label><input type="checkbox" class="verdict-filter" value="{_e(v)}"'
        f"{'' if v == 'identical' and hide_identical else ' checked'}>"
        f'<span class="swatch v-{_e(v)}"></span>{_e(v)} ({counts[v]})</label>'
        for v in present
    )
    return (
        '<div class="controls"><input type="search" id="filter" placeholder="filter outputs…"'
        f' aria-label="filter outputs">{boxes}<span id="shown" class="muted"></span></div>'
    )


def _overview(report: Report, details: Mapping[str, str]) -> str:
    columns = pairs(report)
    rows = []
    for output, items in sorted(_by_output(report).items()):
        verdicts = " ".join(sorted({str(i["verdict"]) for i in items.values()}))
        cells = "".join(_cell(items.get(pair), _anchor(output, details)) for pair in columns)
        rows.append(
            f'<tr data-output="{_e(output)}" data-verdicts="{_e(verdicts)}">'
            f'<td class="output">{_e(output)}</td>{cells}</tr>'
        )
    head = "".join(f"<th>{_e(pair_label(b, c))}</th>" for b, c in columns)
    return (
        '<h2 id="overview">Overview</h2>'
        + (f'<p class="muted">{_e(note)}.</p>' if (note := listing_note(report)) else "")
        + _controls(verdict_counts(report.get("comparisons") or []))
        + f'<div class="scroll"><table id="matrix"><thead><tr><th>output</th>{head}</tr></thead>'
        + f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


# --------------------------------------------------------------------------- groups


def _group_row(group: Mapping[str, Any]) -> str:
    worst = group.get("worst") or {}
    verdicts = group.get("verdicts") or {}
    failing = int(group.get("failing_count") or 0)
    cells = [
        f'<td class="output">{_e(group.get("key"))}</td>',
        f"<td>{_e(pair_label(group.get('baseline', '?'), group.get('candidate', '?')))}</td>",
        f"<td>{_e(failing)} of {_e(group.get('outputs'))}</td>",
        f"<td>{_badges(verdicts)}</td>",
        f"<td><code>{_e(worst.get('output', '-'))}</code></td>",
        f"<td>{_e(mismatch_text(worst))}</td>",
        f"<td>{_e(number(worst.get('max_abs')))}</td>",
        f"<td>{_e(number(worst.get('max_rel')))}</td>",
    ]
    return f'<tr data-key="{_e(group.get("key"))}">{"".join(cells)}</tr>'


def _groups(report: Report) -> str:
    """Outputs by their key across fixtures, worst first, with a search box."""
    groups = report.get("groups") or []
    if not groups:
        return ""
    listed = report.get("listed") or {}
    head = "".join(f"<th>{h}</th>" for h in ("output key", "pair", "failing", "verdicts",
                                              "worst output", "mismatched", "max_abs",
                                              "max_rel"))  # fmt: skip
    rows = "".join(_group_row(g) for g in groups)
    shown = f"{len(groups):,} groups, worst first"
    if listed.get("of_comparisons", 0) > listed.get("comparisons", 0):
        shown += "; every comparison is in " + str(listed.get("file") or "comparisons.parquet")
    return (
        '<h2 id="groups">Outputs by key</h2><p class="muted">Each output key across '
        f"fixtures (<code>*/</code> stands for the fixture) and pair: {_e(shown)}.</p>"
        '<div class="controls"><input type="search" id="group-filter" '
        'placeholder="search output keys…" aria-label="search output keys"></div>'
        f'<div class="scroll"><table id="groups"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


# --------------------------------------------------------------------------- details


def _metric(item: Comparison, key: str) -> str:
    if key == "decisions":
        return decisions_text(item)
    if key == "mismatched":
        return mismatch_text(item)
    value = item.get(key)
    if key in ("dtype", "shape", "worst_indices") and isinstance(value, list):
        return " vs ".join(map(str, value)) if key != "worst_indices" else str(value)
    return number(value)


def _metrics_table(items: Sequence[Comparison]) -> str:
    rows = [
        [_e(pair_label(i["baseline"], i["candidate"])),
         f'<span class="badge v-{_e(i["verdict"])}">{_e(i["verdict"])}</span>',
         *(_e(_metric(i, key)) for key in DETAIL_METRICS), _e(i.get("note") or "")]
        for i in items
    ]  # fmt: skip
    return _table(["pair", "verdict", *DETAIL_METRICS, "note"], rows)


def _figure(png: bytes, caption: str, alt: str, size: tuple[int, int]) -> str:
    zoom = max(1.0, DISPLAY_SIDE / max(size))
    width, height = round(size[1] * zoom), round(size[0] * zoom)
    return (
        f'<figure><img src="{_data_uri(png)}" alt="{_e(alt)}" width="{width}" height="{height}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _pictures(pair: _Pair, budget: _Budget) -> str:
    """The pair's pictures (drawn, or kept from an earlier run), within the size budget."""
    item = pair.item
    figures = pair.fragment(Fragment.PICTURES, lambda a, b: _draw(item, a, b), *pair.names)
    if figures is None:
        return ""
    size = len(figures) * 3 // 4  # the PNGs are in base64 data URIs: about 4/3 their size
    if size > budget.image_bytes:
        budget.skipped.append(str(item["output"]))
        return '<p class="muted">pictures left out: the report reached its size budget</p>'
    budget.image_bytes -= size
    return figures


def _draw(item: Comparison, a: np.ndarray, b: np.ndarray) -> str:
    base, cand = display_pair(a, b)
    heat = heatmap(a, b)
    pngs = [png_bytes(base), png_bytes(cand), png_bytes(heat.pixels)]
    scale = f"shown {base.shape[1]}x{base.shape[0]} of {a.shape[1]}x{a.shape[0]}"
    captions = (
        (f"baseline {item['baseline']} ({scale})", "baseline"),
        (f"candidate {item['candidate']}", "candidate"),
        (f"|difference|: white = {number(heat.max_diff)}, {heat.differing:,} px differ",
         "amplified difference heatmap"),
    )  # fmt: skip
    figures = "".join(
        _figure(p, c, alt, base.shape[:2]) for p, (c, alt) in zip(pngs, captions, strict=True)
    )
    return f'<div class="figures">{figures}</div>'


def _histogram_svg(hist: Histogram) -> str:
    width, height, pad = max(320, 34 * len(hist.counts)), 150, 28
    top = math.log10(max(hist.counts) + 1) or 1.0
    bar = (width - 10) / len(hist.counts)
    parts, middle = [], 'text-anchor="middle"'
    for i, (label, count) in enumerate(zip(hist.labels, hist.counts, strict=True)):
        h = (height - 2 * pad) * math.log10(count + 1) / top
        x, y = 5 + i * bar, height - pad - h
        css = "zero" if i == 0 else "bar"
        parts.append(
            f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{bar - 3:.1f}" height="{h:.1f}">'
            f"<title>{_e(label)} ULP: {count:,} elements</title></rect>"
            f'<text x="{x + bar / 2:.1f}" y="{height - pad + 12}" {middle}>{_e(label)}</text>'
            f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" {middle}>{count:,}</text>'
        )
    return (
        f'<svg class="hist" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
        "<title>ULP distance per element (log-scaled bins and heights)</title>"
        f"{''.join(parts)}</svg>"
    )


def _ulp_block(a: np.ndarray, b: np.ndarray) -> str:
    hist = ulp_histogram(a, b)
    if hist is None:
        return ""
    note = f", {hist.nan_or_inf:,} NaN/Inf mismatches" if hist.nan_or_inf else ""
    return (
        f'<div class="muted">ULP distance per element: power-of-two bins labelled by their '
        f"lower end, bar heights log-scaled{_e(note)}</div>{_histogram_svg(hist)}"
    )


def _pair_block(item: Comparison, arrays: _Arrays, budget: _Budget, pictures: bool) -> str:
    output = str(item["output"])
    a = arrays.describe(str(item["baseline"]), output)
    b = arrays.describe(str(item["candidate"]), output)
    if a is None or b is None:
        return ""
    pair, blocks = _Pair(item, arrays, a, b), []
    images = a.shape == b.shape and all(image_layout(d.dtype, d.shape) for d in (a, b))
    if pictures and images:
        blocks.append(_pictures(pair, budget))
    if a.dtype.kind == "f":
        blocks.append(pair.fragment(Fragment.ULP, _ulp_block) or "")
    if not any(blocks):
        return ""
    title = f"{_e(pair_label(item['baseline'], item['candidate']))}: {_e(item['verdict'])}"
    return f'<div class="pair-title">{title}</div>{"".join(blocks)}'


def _detail(output: str, anchor: str, items: Sequence[Comparison], arrays: _Arrays,
            budget: _Budget) -> str:  # fmt: skip
    pictures = budget.outputs > 0
    image_bytes = budget.image_bytes
    blocks = [_pair_block(i, arrays, budget, pictures) for i in items if i["verdict"] in FAILING]
    if budget.image_bytes < image_bytes:  # only outputs that got pictures use up the budget
        budget.outputs -= 1
    return (
        f'<section class="detail" id="{anchor}"><h3>{_e(output)}</h3>'
        f"{_metrics_table(items)}{''.join(blocks)}</section>"
    )


def _drifting(report: Report) -> dict[str, str]:
    """Drifting outputs, worst first, with their anchors."""
    found: dict[str, str] = {}
    for item in worst(report):
        if len(found) == MAX_DETAIL_OUTPUTS:
            break
        found.setdefault(str(item["output"]), f"d{len(found)}")
    return found


def _details(report: Report, details: Mapping[str, str], arrays: _Arrays) -> str:
    if not details:
        return '<h2 id="details">Drifting outputs</h2><p>No output drifted.</p>'
    table, budget = _by_output(report), _Budget()
    sections = [
        _detail(output, anchor, list(table[output].values()), arrays, budget)
        for output, anchor in details.items()
    ]
    capped = len(details) > MAX_IMAGE_OUTPUTS
    note = (
        f"Pictures for the worst {MAX_IMAGE_OUTPUTS} image outputs; the rest show metrics only."
        if capped
        else ""
    )
    failing = sum(total_counts(report).get(v, 0) for v in FAILING)
    shown = (f"The worst {len(details)} of {failing} failing comparisons. "
             if failing > len(details) else "")  # fmt: skip
    return (
        f'<h2 id="details">Drifting outputs ({len(details)})</h2>'
        f'<p class="muted">Worst first. {_e(shown)}{_e(note)}</p>{"".join(sections)}'
    )


# --------------------------------------------------------------------------- environments


def _diff_rows(rows: Sequence[DiffRow]) -> list[list[str]]:
    return [
        [f"<code>{_e(row.label)}</code>", *(_e("(absent)" if v is None else v) for v in row.values)]
        for row in rows
    ]


def _fingerprints(report: Report) -> str:
    diff = environment_diff(report)
    title = '<h2 id="fingerprints">Environment fingerprint diff</h2>'
    if len(diff.environments) < 2:
        return title + "<p>Fewer than two environments with a fingerprint.</p>"
    header = ["", *(_e(name) for name in diff.environments)]
    rows = _table(header, _diff_rows(diff.rows), css="fp") if diff.rows else "<p>Same.</p>"
    listing = _table(header, _diff_rows(diff.packages), css="fp")
    packages = (
        f"<details><summary>{len(diff.packages)} Debian/pip packages differ or exist in only "
        f"some environments</summary>{listing}</details>"
        if diff.packages
        else "<p>Same packages everywhere.</p>"
    )
    return (
        f'{title}<p class="muted">Only rows that differ between environments.</p>{rows}{packages}'
    )


def _evidence(cause: Mapping[str, Any]) -> str:
    value = cause.get("evidence")
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _attributions(report: Report) -> str:
    entries = report.get("attributions") or []
    if not entries:
        return ""
    rows = []
    for entry in entries:
        causes = "".join(
            f'<div class="cause"><b>{_e(c.get("factor"))}</b> <span class="muted">'
            f"{_e(c.get('kind') or '')} · confidence {_e(number(c.get('confidence')))}</span>"
            f"<br><code>{_e(_evidence(c))}</code></div>"
            for c in entry.get("causes") or []
        )
        pair = pair_label(entry.get("baseline", "?"), entry.get("candidate", "?"))
        rows.append([f"<code>{_e(entry.get('output'))}</code>", _e(pair), causes or "-"])
    advice = "".join(f"<li>{_e(line)}</li>" for line in advice_lines(report))
    todo = f'<p><b>What to do</b></p><ul class="advice">{advice}</ul>' if advice else ""
    table = _table(["output", "pair", "causes"], rows)
    return f'<h2 id="attributions">Attributions</h2>{todo}{table}'


def _agreement(report: Report) -> str:
    groups = agreement_groups(report)
    if not groups:
        return ""
    rows = [[str(count), f"<code>{_e(pattern)}</code>"] for pattern, count in groups]
    return (
        '<h2 id="agreement">Agreement classes</h2><p class="muted">Environments whose '
        f"outputs are bit-identical share a class.</p>{_table(['outputs', 'classes'], rows)}"
    )


def _noise(report: Report) -> str:
    noise = report.get("nondeterministic") or []
    if not noise:
        return ""
    rows = [
        [f"<code>{_e(n.get('output'))}</code>", _e(n.get("environment")), _e(n.get("repeats")),
         _e(number(n.get("max_abs"))), _e(number(n.get("max_ulp")))]
        for n in noise
    ]  # fmt: skip
    header = ["output", "environment", "repeats", "max_abs", "max_ulp"]
    return f'<h2 id="noise">Nondeterministic outputs</h2>{_table(header, rows)}'


def _metrics(report: Report) -> str:
    rows = metric_rows(report)
    if not rows:
        return ""
    header = ["metric", *(_e(n) for n in metric_environments(report))]
    body = [[f"<code>{_e(o)}</code>", *(_e(c) for c in cells)] for o, cells in rows]
    return f'<h2 id="metrics">Metrics</h2>{_table(header, body)}'


def _decisions(report: Report) -> str:
    lines = decision_lines(report, MAX_DECISION_LINES)
    if not lines:
        return ""
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return f'<h2 id="decisions">Decisions</h2><ul class="mono">{items}</ul>'


def _image_changes(report: Report) -> str:
    lines = image_change_lines(report, shown=50)
    if not lines:
        return ""
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return f'<h2 id="refreshed">Refreshed images</h2><ul class="mono">{items}</ul>'


def _problems(report: Report) -> str:
    lines = problems(report)
    if not lines:
        return ""
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return f'<h2 id="errors">Errors</h2><ul class="mono">{items}</ul>'


def _trend(trend: str | None) -> str:
    return f'<h2 id="trend">Trend</h2>{trend}' if trend else ""


def render_html(report: Report, *, trend: str | None = None, pictures: Path | None = None) -> str:
    """One self-contained HTML page; no request leaves it (see the page's CSP). ``trend``
    is the drift-per-run SVG (:func:`reprocheck.report.trend.trend_svg`); ``pictures`` the
    folder keeping drawn pictures between runs (None: draw every one)."""
    details = _drifting(report)
    body = "".join(
        (
            _header(report),
            _problems(report),
            _metrics(report),
            _decisions(report),
            _image_changes(report),
            _environments(report),
            _groups(report),
            _overview(report, details),
            _details(report, details, _Arrays(report, pictures)),
            _attributions(report),
            _fingerprints(report),
            _agreement(report),
            _noise(report),
            _trend(trend),
        )
    )
    title = f"reprocheck {report.get('run_id', '')}: {headline(report)[0]}"
    return _template().substitute(title=_e(title), body=body)
