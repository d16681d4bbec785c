"""history: rows appended per run (a rerun of one id replaces its rows), Parquet or CSV,
one line per run and the trend plot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runs import stored_run

from reprocheck import history
from reprocheck.compare import compare_arrays
from reprocheck.config import RunConfig, load_config
from reprocheck.history import append_history, load_history, run_lines, trend_png
from reprocheck.matrix import Matrix, OutputComparison
from reprocheck.runner import RunResult

CONFIG = '[pipeline]\ncallable = "p.py:run"\n[[environments]]\nname = "a"\nimage = "i"\n'


def _drift(output: str, ulp: int, base: str = "a", cand: str = "b") -> OutputComparison:
    a = np.ones(4, dtype=np.float32)
    b = a.copy()
    b[0] = np.float32(1.0) + np.float32(ulp) * np.finfo(np.float32).eps  # ulp steps above 1
    metrics = compare_arrays(a, b)
    assert metrics.max_ulp == ulp
    return OutputComparison(
        output=output, baseline=base, candidate=cand, verdict="drift", metrics=metrics
    )


def _same(output: str, base: str = "a", cand: str = "b") -> OutputComparison:
    metrics = compare_arrays(np.zeros(3), np.zeros(3))
    return OutputComparison(
        output=output, baseline=base, candidate=cand, verdict="identical", metrics=metrics
    )


def _matrix(*items: OutputComparison) -> Matrix:
    pairs = tuple(dict.fromkeys((i.baseline, i.candidate) for i in items))
    return Matrix(pairs=pairs, comparisons=items, agreement={})


def _run(tmp_path: Path, run_id: str, started: str) -> RunResult:
    return stored_run(tmp_path / "reports" / run_id, (), started=started)


@pytest.fixture
def config(make_project) -> RunConfig:
    return load_config(make_project(CONFIG))


@pytest.fixture(params=["parquet", "csv"])
def store_format(request, monkeypatch) -> str:
    if request.param == "parquet" and importlib.util.find_spec("pyarrow") is None:
        pytest.skip("pyarrow is not installed")
    if request.param == "csv":
        monkeypatch.setattr(history, "_has_parquet", lambda: False)
    return str(request.param)


def test_history_file_suffix(config: RunConfig, store_format: str) -> None:
    path = history.history_file(config)
    assert path == (config.root / "reports" / f"history.{store_format}")


def test_same_run_id_replaces_its_rows(config, store_format, tmp_path) -> None:
    run = _run(tmp_path, "run-1", "2024-05-01T10:00:00")
    append_history(config, run, _matrix(_drift("x/a", 3), _same("x/b")))
    path = append_history(config, run, _matrix(_drift("x/a", 5)))
    assert path.suffix == f".{store_format}"
    table = load_history(path)
    assert list(table["run_id"]) == ["run-1"]
    assert list(table["max_ulp"]) == [5.0]


def test_runs_accumulate(config, store_format, tmp_path) -> None:
    append_history(
        config,
        _run(tmp_path, "run-1", "2024-05-01T10:00:00"),
        _matrix(_drift("x/a", 3), _same("x/b")),
    )
    path = append_history(
        config, _run(tmp_path, "run-2", "2024-05-02T10:00:00"), _matrix(_same("x/a"), _same("x/b"))
    )
    table = load_history(path)
    assert list(table["run_id"]) == ["run-1", "run-1", "run-2", "run-2"]
    assert list(table["verdict"]) == ["drift", "identical", "identical", "identical"]
    assert list(table.columns) == history.COLUMNS
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, no leftovers


def test_numeric_run_id_is_replaced_too(config, store_format, tmp_path) -> None:
    """A merged run is named after its folder, which may be all digits."""
    run = _run(tmp_path, "2024", "2024-05-01T10:00:00")
    append_history(config, run, _matrix(_drift("x/a", 3)))
    table = load_history(append_history(config, run, _matrix(_drift("x/a", 4))))
    assert len(table) == 1


def test_missing_history_is_empty(tmp_path: Path) -> None:
    table = load_history(tmp_path / "none.csv")
    assert table.empty
    assert list(table.columns) == history.COLUMNS


def _table(*runs: tuple[str, str, list[OutputComparison]]) -> pd.DataFrame:
    frames = [
        history.rows(stored_run(Path("/r") / i, (), started=s), _matrix(*items))
        for i, s, items in runs
    ]
    return pd.concat(frames, ignore_index=True)


def test_run_lines_count_drift_and_pick_the_worst_output() -> None:
    table = _table(
        ("run-2", "2024-05-02T10:00:00", [_same("x/a"), _same("x/b", cand="c")]),
        (
            "run-1",
            "2024-05-01T10:00:00",
            [_drift("x/a", 3), _drift("x/b", 40), _drift("x/c", 7, cand="c"), _same("x/d")],
        ),
    )
    first, second = run_lines(table)
    assert first.run_id == "run-1"  # ordered by start time, not by table order
    assert (first.drift, first.compared) == (3, 4)
    assert (first.worst_output, first.worst_ulp) == ("x/b", 40.0)
    assert first.environments == ("a", "b", "c")
    assert second.run_id == "run-2"
    assert (second.drift, second.compared) == (0, 2)
    assert (second.worst_output, second.worst_ulp) == (None, None)


def test_run_lines_of_an_empty_table() -> None:
    assert run_lines(pd.DataFrame(columns=history.COLUMNS)) == []


def test_trend_png() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed")
    lines = run_lines(
        _table(
            ("run-1", "2024-05-01T10:00:00", [_drift("x/a", 3)]),
            ("run-2", "2024-05-02T10:00:00", [_same("x/a")]),
        )
    )
    png = trend_png(lines)
    assert png is not None
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 1000


def test_no_trend_without_runs() -> None:
    assert trend_png([]) is None


def test_numeric_environment_names_stay_text(config, store_format, tmp_path) -> None:
    run = _run(tmp_path, "run-1", "2024-05-01T10:00:00")
    path = append_history(config, run, _matrix(_drift("x/a", 3, base="10", cand="11")))
    (line,) = run_lines(load_history(path))
    assert line.environments == ("10", "11")
