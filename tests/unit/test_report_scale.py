"""Reports of many outputs stay small and complete where it counts (counts, groups, the
parquet file), and every report stage takes the degenerate matrices too: one environment,
nothing made, every environment failed, only missing outputs."""

from __future__ import annotations

import dataclasses
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from runs import stored_env, stored_run

from reprocheck.comparisons import item_of
from reprocheck.config import load_config
from reprocheck.history import rows
from reprocheck.matrix import build_matrix
from reprocheck.render import print_summary
from reprocheck.report import aggregate
from reprocheck.report.common import headline, output_key
from reprocheck.report.json_report import report_dict
from reprocheck.report.junit import render_junit
from reprocheck.report.markdown import render_markdown
from reprocheck.report.paths import ReportPaths
from reprocheck.report.writers import write_reports

ENVS = '[[environments]]\nname = "a"\nimage = "i"\n[[environments]]\nname = "b"\nimage = "j"\n'
CONFIG = '[pipeline]\ncallable = "p.py:run"\n' + ENVS


def _many(run_dir: Path, fixtures: int, keys: int, moved_every: int) -> tuple:
    base = {f"img{f:03d}.png": {f"k{k}": np.full(4, f + k, np.float32) for k in range(keys)}
            for f in range(fixtures)}  # fmt: skip
    cand = {fx: {k: v.copy() for k, v in arrays.items()} for fx, arrays in base.items()}
    for f, arrays in enumerate(cand.values()):
        if f % moved_every == 0:
            arrays["k0"][1] = np.nextafter(arrays["k0"][1], np.float32(1e9))
    return stored_env(run_dir, "a", base), stored_env(run_dir, "b", cand)


def test_large_matrix_lists_the_worst_and_counts_all(make_project, tmp_path, monkeypatch):
    monkeypatch.setattr(aggregate, "LISTED", 7)
    run_dir = tmp_path / "run"
    run = stored_run(run_dir, _many(run_dir, fixtures=30, keys=3, moved_every=3))
    matrix = build_matrix(load_config(make_project(CONFIG)), run)
    report = json.loads(json.dumps(report_dict(run, matrix), allow_nan=False))
    assert report["summary"] == {"drift": 10, "identical": 80}
    assert report["listed"]["comparisons"] == 7 and report["listed"]["of_comparisons"] == 90
    assert [c["verdict"] for c in report["comparisons"]] == ["drift"] * 7  # worst first
    # Three keys across 30 fixtures: three groups, the drifting one first.
    assert [(g["key"], g["outputs"], g["failing_count"]) for g in report["groups"]] == [
        ("*/k0", 30, 10), ("*/k1", 30, 0), ("*/k2", 30, 0)
    ]  # fmt: skip
    assert len(report["agreement"]) == 7
    assert all(len(a["classes"]) == 2 for a in report["agreement"])  # split outputs first
    assert {p["outputs"] for p in report["agreement_patterns"]} == {80, 10}
    assert headline(report) == ("DRIFT", "10 drift, 80 identical")
    suite = ET.fromstring(render_junit(report)).find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "1"
    assert "10 drift" in render_markdown(report)
    # Every comparison is in the parquet file, readable without reprocheck.
    path = tmp_path / "comparisons.parquet"
    matrix.comparisons.write_parquet(path)
    table = pq.read_table(path)
    assert table.num_rows == 90
    assert sorted(table["verdict"].to_pylist()) == ["drift"] * 10 + ["identical"] * 80
    first = item_of(table.slice(0, 1).to_pylist()[0])
    assert first == matrix.comparisons[0]


def test_what_made_the_run_fail_is_listed_first_among_many(make_project, tmp_path, monkeypatch):
    """More comparisons than are listed, one output that cannot be read (the run exits 2)
    and one only the candidate made: the error is the first comparison and group listed and
    is named in every report, the new output comes before the identical ones."""
    monkeypatch.setattr(aggregate, "LISTED", 7)
    run_dir = tmp_path / "run"
    base = {"x": {f"k{k:02d}": np.zeros(2) for k in range(30)} | {"z": np.array(["s"])}}
    cand = {"x": {**base["x"], "w": np.ones(2)}}
    run = stored_run(run_dir, (stored_env(run_dir, "a", base), stored_env(run_dir, "b", cand)))
    config = load_config(make_project(CONFIG))  # new outputs pass (the default)
    matrix = build_matrix(config, run)
    report = json.loads(json.dumps(report_dict(run, matrix), allow_nan=False))
    assert report["summary"] == {"error": 1, "identical": 30, "new": 1}
    listed = [(c["output"], c["verdict"]) for c in report["comparisons"]]
    assert listed[:2] == [("x/z", "error"), ("x/w", "new")] and len(listed) == 7
    assert report["groups"][0]["key"] == "*/z" and report["groups"][0]["failing"] == ["x/z"]
    markdown = render_markdown(report)
    assert "x/z" in markdown and markdown.index("### Errors") < markdown.index("### Environments")
    console = Console(file=io.StringIO(), width=200)
    print_summary(console, report, quiet=False)
    assert "x/z (a->b): error: cannot compare" in console.file.getvalue()  # type: ignore[attr-defined]
    suite = ET.fromstring(render_junit(report)).find("testsuite")
    assert suite is not None and suite.get("errors") == "1"
    (error,) = suite.iter("error")
    assert "x/z" in (error.text or "")
    write_reports(report, run_dir, ReportPaths())
    assert "x/z" in (run_dir / "report.html").read_text()


def test_group_keys_match_output_key() -> None:
    fixtures = ["a.png", "dir/b.png", "dir"]
    outputs = ["a.png/x/y", "dir/b.png/z", "dir/c.png/z", "other/q", "a.png", "a.pngx/y"]
    keys = aggregate.group_keys(pa.array(outputs), fixtures).to_pylist()
    assert keys == [output_key(o, fixtures) for o in outputs]
    assert keys == ["*/x/y", "*/z", "*/c.png/z", "other/q", "a.png", "a.pngx/y"]


def _degenerate(kind: str, run_dir: Path) -> tuple:
    a = stored_env(run_dir, "a", {"x": {"v": np.zeros(3)}})
    if kind == "one environment":
        return (a,)
    if kind == "nothing made":
        return (stored_env(run_dir, "a", {}), stored_env(run_dir, "b", {}))
    if kind == "all failed":
        fail = {"status": "error", "error": "container exited with 1"}
        return (dataclasses.replace(a, **fail),
                dataclasses.replace(stored_env(run_dir, "b", {}), **fail))  # fmt: skip
    return (a, stored_env(run_dir, "b", {"y": {"w": np.ones(2)}}))  # only missing


@pytest.mark.parametrize("kind", ["one environment", "nothing made", "all failed", "missing"])
def test_every_stage_takes_degenerate_matrices(make_project, tmp_path, kind) -> None:
    config = load_config(make_project(CONFIG))
    run_dir = tmp_path / "run"
    run = stored_run(run_dir, _degenerate(kind, run_dir))
    matrix = build_matrix(config, run)
    report = json.loads(json.dumps(report_dict(run, matrix), allow_nan=False))
    write_reports(report, run_dir, ReportPaths(junit=tmp_path / "junit.xml"))
    matrix.comparisons.write_parquet(run_dir / "comparisons.parquet")
    assert len(rows(run, matrix)) >= 0
    print_summary(Console(file=io.StringIO()), report, quiet=False)
    assert pq.read_table(run_dir / "comparisons.parquet").num_rows == len(matrix.comparisons)
    assert sum(report["summary"].values()) == len(matrix.comparisons)


def test_a_run_that_wrote_nothing_says_so(make_project, tmp_path) -> None:
    """Every environment ran and wrote no output (a pipeline writing where reprocheck does
    not read): the headline says why nothing was compared, rather than a bare pass."""
    run_dir = tmp_path / "run"
    run = stored_run(run_dir, (stored_env(run_dir, "a", {}), stored_env(run_dir, "b", {})))
    report = report_dict(run, build_matrix(load_config(make_project(CONFIG)), run))
    why = "nothing compared: no outputs in any environment"
    assert headline(report) == ("CONSISTENT", why)
    console = Console(file=io.StringIO(), width=200)
    print_summary(console, report, quiet=True)
    assert why in console.file.getvalue()  # type: ignore[attr-defined]
    assert why in render_markdown(report)


def test_scalar_metrics_in_their_own_units(make_project, tmp_path) -> None:
    """0-d outputs and [metrics] are shown per environment with their change; a metric's
    atol applies in its own units and replaces [tolerance]."""
    run_dir = tmp_path / "run"
    a = stored_env(
        run_dir, "a", {"eval": {"accuracy": np.float64(0.9712), "loss": np.float64(0.5)}}
    )
    b = stored_env(
        run_dir, "b", {"eval": {"accuracy": np.float64(0.9716), "loss": np.float64(0.5)}}
    )
    config = load_config(
        make_project(
            CONFIG + '[metrics]\n"*/accuracy" = { atol = 0.001, unit = "%", scale = 100 }\n'
        )
    )
    matrix = build_matrix(config, stored_run(run_dir, (a, b)))
    verdicts = {c.output: c.verdict for c in matrix.comparisons}
    assert verdicts == {"eval/accuracy": "within_tolerance", "eval/loss": "identical"}
    report = json.loads(json.dumps(report_dict(stored_run(run_dir, (a, b)), matrix)))
    from reprocheck.report.common import metric_rows

    assert metric_rows(report) == [
        ("eval/accuracy", ["97.12 %", "97.16 % (+0.04 pp)"]), ("eval/loss", ["0.5", "0.5"])
    ]  # fmt: skip
    console = Console(file=io.StringIO(), width=200)
    print_summary(console, report, quiet=False)
    assert "97.16 % (+0.04 pp)" in console.file.getvalue()  # type: ignore[attr-defined]
    assert "97.16 % (+0.04 pp)" in render_markdown(report)


def test_declared_metrics_come_first_and_ints_stay_exact(make_project, tmp_path) -> None:
    """Among many scalar outputs, the ones [metrics] declares are listed first (the terminal
    shows the first 20); an integer past 2**53 is its exact value in report.json."""
    run_dir = tmp_path / "run"
    many = {f"k{i:03d}": np.float64(i) for i in range(30)}
    a = stored_env(run_dir, "a", {"e": {**many, "zacc": np.float64(0.91),
                                        "seed": np.int64(2**53 + 1)}})  # fmt: skip
    b = stored_env(run_dir, "b", {"e": {**many, "zacc": np.float64(0.80),
                                        "seed": np.int64(2**53 + 3)}})  # fmt: skip
    config = load_config(
        make_project(CONFIG + '[metrics]\n"*/zacc" = { unit = "%", scale = 100 }\n')
    )
    run = stored_run(run_dir, (a, b))
    metrics = build_matrix(config, run).metrics
    assert metrics[0].output == "e/zacc"
    seed = next(m for m in metrics if m.output == "e/seed")
    assert seed.values == {"a": 2**53 + 1, "b": 2**53 + 3}


def test_metric_values_that_differ_look_different() -> None:
    """The metrics table: a NaN in both is no change, and values that differ get as many
    digits as it takes to tell them apart (an int past 2**53 exactly)."""
    from reprocheck.report.common import metric_rows

    report = {"metrics": [
        {"output": "nan", "values": {"a": "nan", "b": "nan"}},
        {"output": "count", "values": {"a": 2**53, "b": 2**53 + 1}},
        {"output": "close", "values": {"a": 0.1, "b": 0.1 + 1e-16}},
        {"output": "same", "values": {"a": 1.5, "b": 1.5}},
    ]}  # fmt: skip
    assert metric_rows(report) == [
        ("nan", ["nan", "nan"]),
        ("count", ["9007199254740992", "9007199254740993 (+1)"]),
        ("close", ["0.1", "0.1000000000000001 (+9.71e-17)"]),
        ("same", ["1.5", "1.5"]),
    ]


def test_an_infinite_relative_difference_ranks_by_its_absolute_one() -> None:
    """0 -> 1e-30 has max_rel inf but is the smallest drift; 0 -> 5 is the largest. The Arrow
    order (report listing, history) and the dict order (renderers) agree."""
    from reprocheck.compare.results import ArrayComparison
    from reprocheck.comparisons import Comparisons, OutputComparison
    from reprocheck.report.common import severity
    from reprocheck.report.json_report import comparison_json

    def item(name: str, max_abs: float, max_rel: float, nan: int = 0) -> OutputComparison:
        metrics = ArrayComparison(verdict="drift", rule="default", dtype=("float32", "float32"),
                                  shape=((4,), (4,)), total=4, mismatched=1, max_abs=max_abs,
                                  max_rel=max_rel, max_ulp=1 << 40, nan_mismatch=nan)  # fmt: skip
        return OutputComparison(
            output=name, baseline="a", candidate="b", verdict="drift", metrics=metrics
        )

    items = [item("tiny", 1e-30, np.inf), item("half", 1.0, 0.5), item("appears", 5.0, np.inf),
             item("nan", 1e-9, 1e-9, nan=1), item("small", 1e-3, 1e-3)]  # fmt: skip
    expected = ["nan", "appears", "half", "small", "tiny"]
    assert [c.output for c in Comparisons.of(items).worst()] == expected
    by_dict = sorted((comparison_json(c) for c in items), key=severity, reverse=True)
    assert [c["output"] for c in by_dict] == expected
