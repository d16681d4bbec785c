"""history: a folder of Parquet files, one per run (a rerun of one id replaces its file), a
one-file history of older versions converted, damaged files moved aside, one line per run
(from each file's metadata) and the trend plot."""

from __future__ import annotations

import importlib.util
import io
import logging
import multiprocessing
import os
import subprocess
import sys
from multiprocessing.synchronize import Barrier
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from filelock import FileLock
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from runs import stored_run

from reprocheck import history
from reprocheck.compare import compare_arrays
from reprocheck.config import RunConfig, load_config
from reprocheck.errors import HistoryError, UnsafeFileError
from reprocheck.history import append_history, load_history, run_lines, trend_png
from reprocheck.matrix import Matrix, OutputComparison
from reprocheck.run_model import RunResult

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


@pytest.fixture
def store_format() -> str:
    return "parquet"  # the one format (pyarrow is a dependency)


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
    # Identical outputs are one row per pair, counting them.
    assert list(table["run_id"]) == ["run-1", "run-1", "run-2"]
    assert list(table["verdict"]) == ["drift", "identical", "identical"]
    assert list(table["output"]) == ["x/a", history.ALL_OUTPUTS, history.ALL_OUTPUTS]
    assert list(table["count"]) == [1, 1, 2]
    assert [(line.run_id, line.drift, line.compared) for line in run_lines(table)] == [
        ("run-1", 1, 2),
        ("run-2", 0, 2),
    ]
    assert list(table.columns) == history.COLUMNS
    assert sorted(p.name for p in path.iterdir()) == sorted(
        history.part_name(run_id) for run_id in ("run-1", "run-2")
    )  # one file per run, no
    assert history.history_lines(path) == run_lines(table)  # temporary file left  # fmt: skip
    assert sorted(pd.read_parquet(path)["run_id"]) == ["run-1", "run-1", "run-2"]  # a dataset


def test_numeric_run_id_is_replaced_too(config, store_format, tmp_path) -> None:
    """A merged run is named after its folder, which may be all digits."""
    run = _run(tmp_path, "2024", "2024-05-01T10:00:00")
    append_history(config, run, _matrix(_drift("x/a", 3)))
    table = load_history(append_history(config, run, _matrix(_drift("x/a", 4))))
    assert len(table) == 1


def test_missing_history_is_empty(tmp_path: Path) -> None:
    table = load_history(tmp_path / "none.parquet")
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
    # ranked by max_abs, in the output's own units (here 40 ULP above 1.0)
    assert first.worst_output == "x/b"
    assert first.worst_abs == pytest.approx(40 * float(np.finfo(np.float32).eps))
    assert first.environments == ("a", "b", "c")
    assert second.run_id == "run-2"
    assert (second.drift, second.compared) == (0, 2)
    assert (second.worst_output, second.worst_abs) == (None, None)


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


# --------------------------------------------------------------------------- damaged history


def _one_file(path: Path, table: pd.DataFrame) -> bytes:
    """A history as versions before the folder wrote it: one Parquet file of every run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _damage(path: Path, kind: str) -> bytes:
    """Damage a stored history file in one of the ways seen in the field; the bytes written."""
    data = path.read_bytes()
    damaged = {
        "truncated": data[: len(data) * 3 // 4],  # inside the row (a cut header is a table)
        "empty": b"",
        "garbage": b"\x00\xffPAR1 not a table\n\x01" * 10,
        "wrong columns": b"when,what\n2024,x\n",
        "text in numbers": data,  # replaced below
    }[kind]
    if kind == "text in numbers":
        table = pd.read_parquet(io.BytesIO(data)).astype({"max_ulp": object})
        table["max_ulp"] = "lots"
        return _one_file(path, table)
    path.write_bytes(damaged)
    return damaged


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


DAMAGE = ["truncated", "empty", "garbage", "wrong columns", "text in numbers"]


def _part(path: Path, run_id: str) -> Path:
    return path / history.part_name(run_id)


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_run_file_costs_that_runs_rows_only(
    config, store_format, tmp_path, caplog, kind
) -> None:
    """Moved aside beside the folder (pandas reads every file in it), with one warning line;
    the other runs' rows and lines stay, and the next run adds its own."""
    path = append_history(config, _run(tmp_path, "run-1", "2024-05-01T10:00:00"),
                          _matrix(_drift("x/a", 3)))  # fmt: skip
    append_history(config, _run(tmp_path, "run-2", "2024-05-02T10:00:00"), _matrix(_same("x/a")))
    damaged = _damage(_part(path, "run-1"), kind)
    caplog.set_level(logging.WARNING, logger="reprocheck")
    append_history(config, _run(tmp_path, "run-3", "2024-05-03T10:00:00"), _matrix(_same("x/a")))
    assert list(load_history(path)["run_id"]) == ["run-2", "run-3"]
    (aside,) = path.parent.glob(f"{path.name}.{history.PART_PREFIX}*.damaged-*")
    assert aside.read_bytes() == damaged  # kept as it was, for a post-mortem
    assert aside.name.removeprefix(f"{path.name}.{history.part_name('run-1')}.damaged-").endswith(
        "Z")  # a UTC stamp  # fmt: skip
    (warning,) = _warnings(caplog)
    assert "\n" not in warning
    assert str(aside) in warning and "leaving out its run's rows" in warning
    assert [line.run_id for line in history.history_lines(path)] == ["run-2", "run-3"]
    assert sorted(pd.read_parquet(path)["run_id"]) == ["run-2", "run-3"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_one_file_history_is_moved_aside_and_the_run_appends(
    config, store_format, tmp_path, caplog, kind
) -> None:
    path = history.history_file(config)
    _one_file(path, _table(("run-1", "2024-05-01T10:00:00", [_drift("x/a", 3)])))
    damaged = _damage(path, kind)
    caplog.set_level(logging.WARNING, logger="reprocheck")
    append_history(config, _run(tmp_path, "run-2", "2024-05-02T10:00:00"), _matrix(_same("x/a")))
    (aside,) = path.parent.glob(f"{path.name}.damaged-*")
    assert aside.read_bytes() == damaged  # kept as it was, for a post-mortem
    assert aside.name.removeprefix(f"{path.name}.damaged-").endswith("Z")  # a UTC stamp
    assert list(load_history(path)["run_id"]) == ["run-2"]
    (warning,) = _warnings(caplog)
    assert "\n" not in warning
    assert str(path) in warning
    assert str(aside) in warning
    assert "new history" in warning


def test_a_one_file_history_becomes_the_folder(config, store_format, tmp_path) -> None:
    """Written before the folder (and before the count and config columns): its runs become
    a file each, their rows and lines as they were, then the run adds its own."""
    path = history.history_file(config)
    old = _table(("run-1", "2024-05-01T10:00:00", [_drift("x/a", 3), _same("x/b")]),
                 ("run-2", "2024-05-02T10:00:00", [_drift("x/a", 4)]))  # fmt: skip
    _one_file(path, old.drop(columns=["count", "config"]))
    before = load_history(path)
    lines = history.history_lines(path)
    append_history(config, _run(tmp_path, "run-3", "2024-05-03T10:00:00"), _matrix(_same("x/a")))
    assert path.is_dir()
    assert sorted(p.name for p in path.iterdir()) == sorted(
        history.part_name(r) for r in ("run-1", "run-2", "run-3"))  # fmt: skip
    after = load_history(path)
    pd.testing.assert_frame_equal(after[after["run_id"] != "run-3"], before, check_dtype=False)
    assert history.history_lines(path)[:2] == lines
    assert [p.name for p in path.parent.iterdir() if p.name != path.name] == [
        f".{path.name}.lock"]  # nothing of the conversion left  # fmt: skip


def test_a_conversion_that_stopped_midway_is_taken_up(config, store_format, tmp_path) -> None:
    """Killed between moving the one file away and putting the folder in its place."""
    path = history.history_file(config)
    _one_file(path.with_name(f".{path.name}.converting"),
              _table(("run-1", "2024-05-01T10:00:00", [_drift("x/a", 3)])))  # fmt: skip
    append_history(config, _run(tmp_path, "run-2", "2024-05-02T10:00:00"), _matrix(_same("x/a")))
    assert list(load_history(path)["run_id"]) == ["run-1", "run-2"]
    assert not path.with_name(f".{path.name}.converting").exists()


def test_a_run_reads_no_other_runs_rows(config, store_format, tmp_path, monkeypatch) -> None:
    """Adding a run and drawing the trend cost the same on the thousandth night: the other
    runs' rows are never read (their lines come from each file's footer)."""
    for day in (1, 2):
        append_history(config, _run(tmp_path, f"run-{day}", f"2024-05-0{day}T10:00:00"),
                       _matrix(_drift("x/a", day)))  # fmt: skip

    def no_rows(path: Path) -> pd.DataFrame:
        raise AssertionError(f"read the rows of {path}")

    monkeypatch.setattr(history, "_read", no_rows)
    path = append_history(config, _run(tmp_path, "run-3", "2024-05-03T10:00:00"),
                          _matrix(_same("x/a")))  # fmt: skip
    lines = history.history_lines(path, "reprocheck.toml")
    assert [(line.run_id, line.drift) for line in lines] == [("run-1", 1), ("run-2", 1),
                                                             ("run-3", 0)]  # fmt: skip


def test_a_run_file_without_its_line_is_read_for_it(config, store_format, tmp_path) -> None:
    """A file of the folder with no line in its metadata (written by hand, or by pandas):
    the line is worked out from its rows."""
    path = append_history(config, _run(tmp_path, "run-1", "2024-05-01T10:00:00"),
                          _matrix(_drift("x/a", 3)))  # fmt: skip
    (stored,) = history.history_lines(path)
    _one_file(_part(path, "run-1"), load_history(path))  # the same rows, no metadata line
    assert history.history_lines(path) == [stored]


def test_load_history_moves_a_damaged_file_aside(config, store_format, caplog) -> None:
    path = history.history_file(config)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1\x00\x00")
    caplog.set_level(logging.WARNING, logger="reprocheck")
    table = load_history(path)
    assert table.empty
    assert list(table.columns) == history.COLUMNS
    assert not path.exists()
    assert len(list(path.parent.glob(f"{path.name}.damaged-*"))) == 1
    assert len(_warnings(caplog)) == 1
    assert load_history(path).empty  # and nothing more to move or say
    assert len(_warnings(caplog)) == 1


def test_two_damaged_histories_in_one_second_keep_both(config, store_format) -> None:
    path = history.history_file(config)
    path.parent.mkdir(parents=True)
    for content in (b"first", b"second"):
        path.write_bytes(content)
        load_history(path)
    kept = sorted(p.read_bytes() for p in path.parent.glob(f"{path.name}.damaged-*"))
    assert kept == [b"first", b"second"]


def test_damaged_history_in_a_read_only_folder_is_ignored(
    config, store_format, caplog, monkeypatch
) -> None:
    path = history.history_file(config)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")

    def refuse(self: Path, target: Path) -> Path:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "rename", refuse)
    caplog.set_level(logging.WARNING, logger="reprocheck")
    assert load_history(path).empty
    assert path.read_bytes() == b"garbage"
    (warning,) = _warnings(caplog)
    assert "cannot be moved aside" in warning


@pytest.mark.parametrize("where", ["one file", "run file"])
def test_history_command_after_a_damaged_history(make_project, tmp_path, where) -> None:
    """The user's view: `reprocheck history` says one warning line, then works again."""
    source = make_project(CONFIG)
    config = load_config(source)
    path = history.history_file(config)
    if where == "one file":
        path.parent.mkdir(parents=True)
        path.write_bytes(b"PAR1 truncated")
    else:
        append_history(config, _run(tmp_path, "run-1", "2024-05-01T10:00:00"),
                       _matrix(_drift("x/a", 3)))  # fmt: skip
        _part(path, "run-1").write_bytes(b"PAR1 truncated")
    code = "import sys; from reprocheck import cli, history\n"
    code += "sys.argv = ['reprocheck', 'history', '--config', sys.argv[1]]; cli.main()\n"
    for _twice in range(2):
        done = subprocess.run([sys.executable, "-c", code, str(source)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        if not _twice:
            (line,) = done.stderr.strip().splitlines()
            assert line.startswith("warning:")
            assert ("new history" if where == "one file" else "leaving out") in line
        else:
            assert done.stderr == ""  # moved aside once: nothing more to say
    assert len(list(path.parent.glob(f"{path.name}.*damaged-*"))) == 1


def _history_bytes(config: RunConfig, tmp_path: Path) -> tuple[Path, bytes]:
    run = _run(tmp_path, "run-1", "2024-05-01T10:00:00")
    path = append_history(config, run, _matrix(_drift("x/a", 3), _same("x/b"), _same("x/c")))
    append_history(config, _run(tmp_path, "run-2", "2024-05-02T10:00:00"), _matrix(_same("x/a")))
    part = _part(path, "run-1")
    return part, part.read_bytes()


def test_every_truncation_of_a_run_file_loads(config, store_format, tmp_path) -> None:
    part, data = _history_bytes(config, tmp_path)
    for cut in range(0, len(data), 7):
        part.write_bytes(data[:cut])
        for lines in (history.history_lines(part.parent), run_lines(load_history(part.parent))):
            assert [line.run_id for line in lines] in (["run-1", "run-2"], ["run-2"])
        for aside in part.parent.parent.glob("*.damaged-*"):
            aside.unlink()


@pytest.fixture
def stored_history(config, store_format, tmp_path) -> tuple[Path, bytes]:
    return _history_bytes(config, tmp_path)


@example(flips=[(1196, 28)])  # a text column's type turned into bytes (found by CI)
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(flips=st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 255)), min_size=1,
                      max_size=4))  # fmt: skip
def test_a_run_file_with_any_bytes_changed_loads(stored_history, flips) -> None:
    """Bit rot anywhere (header, data, footer) reads as a table or moves the file aside; the
    other run is always there."""
    part, data = stored_history
    damaged = bytearray(data)
    for offset, xor in flips:
        damaged[offset % len(damaged)] ^= xor
    part.write_bytes(bytes(damaged))
    try:
        lines = history.history_lines(part.parent)
        assert "run-2" in [line.run_id for line in lines]
        part.write_bytes(bytes(damaged))  # again, if it was moved aside
        table = load_history(part.parent)
        assert list(table.columns) == history.COLUMNS
        assert "run-2" in set(table["run_id"])
        assert len(run_lines(table)) <= len(table)
    finally:
        for aside in part.parent.parent.glob("*.damaged-*"):
            aside.unlink()


# --------------------------------------------------------------------------- concurrency


def test_append_waits_for_the_lock_then_says_so(
    config, store_format, tmp_path, monkeypatch
) -> None:
    """Only converting a one-file history takes the lock (a run's own file needs none)."""
    path = history.history_file(config)
    _one_file(path, _table(("run-0", "2024-04-01T10:00:00", [_same("x/a")])))
    monkeypatch.setattr(history, "LOCK_SECONDS", 0.2)
    run = _run(tmp_path, "run-1", "2024-05-01T10:00:00")
    other_run = FileLock(path.with_name(f".{path.name}.lock"))
    with other_run, pytest.raises(HistoryError, match="stayed locked") as info:
        append_history(config, run, _matrix(_same("x/a")))
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def _append_in_rounds(source: str, worker: int, rounds: int, fmt: str, start: Barrier) -> None:
    """One of several concurrent `reprocheck run`s: each round appends one run's rows."""
    config = load_config(Path(source))
    for round_ in range(rounds):
        start.wait()  # all workers read-modify-write at the same moment
        run = stored_run(config.reports_dir / f"w{worker}-r{round_}", (),
                         started=f"2024-05-01T10:{round_:02d}:{worker:02d}")  # fmt: skip
        append_history(config, run, _matrix(_drift("x/a", round_ + 1), _same("x/b")))


def test_concurrent_runs_lose_no_history_row(make_project, store_format) -> None:
    """5 rounds of 3 parallel runs (separate processes): 15 runs, 30 rows, nothing lost."""
    workers, rounds = 3, 5
    source = make_project(CONFIG)
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(workers)
    processes = [
        spawn.Process(target=_append_in_rounds,
                      args=(str(source), worker, rounds, store_format, start))
        for worker in range(workers)
    ]  # fmt: skip
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [p.exitcode for p in processes] == [0] * workers
    config = load_config(source)
    path = history.history_file(config)
    table = load_history(path)
    expected = {f"w{w}-r{r}" for w in range(workers) for r in range(rounds)}
    assert set(table["run_id"]) == expected
    assert len(table) == 2 * workers * rounds
    leftovers = {p.name for p in path.parent.iterdir()} - {path.name, f".{path.name}.lock"}
    assert leftovers == set()  # no damaged file moved aside
    assert {p.name for p in path.iterdir()} == {history.part_name(r) for r in expected}


@pytest.mark.parametrize("kind", ["fifo", "link", "link to a folder"])
def test_a_history_that_is_not_a_file_is_moved_aside(
    config, store_format, caplog, kind, tmp_path
) -> None:
    path = history.history_file(config)
    path.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link":
        path.symlink_to("/dev/zero")
    else:
        (tmp_path / "elsewhere").mkdir()
        path.symlink_to(tmp_path / "elsewhere")
    caplog.set_level(logging.WARNING, logger="reprocheck")
    assert load_history(path).empty  # never blocks on the FIFO, never reads /dev/zero
    assert not path.exists() and not path.is_symlink()
    assert "not a regular file" in _warnings(caplog)[0] or "symbolic link" in _warnings(caplog)[0]


def test_history_trends_one_config_at_a_time(make_project, tmp_path) -> None:
    """Runs of another config (a strict and a loose tolerance file in one project) are rows
    of their own: each config's trend shows its runs (and rows older than the column)."""
    strict = load_config(make_project(CONFIG))
    loose = load_config(make_project(CONFIG, name="loose.toml"))
    append_history(strict, _run(tmp_path, "run-1", "2024-05-01T10:00:00"),
                   _matrix(_drift("x/a", 3)))  # fmt: skip
    path = append_history(loose, _run(tmp_path, "run-2", "2024-05-02T10:00:00"),
                          _matrix(_same("x/a")))  # fmt: skip
    table = load_history(path)
    assert set(table["config"]) == {"reprocheck.toml", "loose.toml"}
    assert [line.run_id for line in run_lines(table, "reprocheck.toml")] == ["run-1"]
    assert [line.run_id for line in run_lines(table, "loose.toml")] == ["run-2"]
    assert [line.run_id for line in run_lines(table)] == ["run-1", "run-2"]


# --------------------------------------------------------------------------- races and leftovers


def test_a_reader_never_moves_a_folder_that_appeared_meanwhile_aside(
    config, store_format, tmp_path, monkeypatch
) -> None:
    """A reader saw no folder (a one-file history, or none), then a run converted it or made
    the first one: read as the folder, never moved aside as a damaged file."""
    path = append_history(config, _run(tmp_path, "run-1", "2024-05-01T10:00:00"),
                          _matrix(_drift("x/a", 3)))  # fmt: skip
    real = history._is_folder
    seen: list[Path] = []

    def late(where: Path) -> bool:  # the first look happened before the folder was there
        seen.append(where)
        return len(seen) > 1 and real(where)

    monkeypatch.setattr(history, "_is_folder", late)
    assert list(load_history(path)["run_id"]) == ["run-1"]
    seen.clear()
    assert [line.run_id for line in history.history_lines(path)] == ["run-1"]
    assert real(path) and list(path.parent.glob("*damaged*")) == []


def _with_line(part: Path, line: bytes) -> None:
    table = pq.read_table(part)
    metadata = {**(table.schema.metadata or {}), history.LINE_KEY: line}
    pq.write_table(table.replace_schema_metadata(metadata), part)


@pytest.mark.parametrize("forged", [
    b"[" * 200_000,  # deeper than json can nest
    b'{"line": {"run_id": "run-1", "started": "2024", "environments": [], "drift": 1,'
    b' "compared": 1, "worst_output": "x/a", "worst_abs": 1' + b"0" * 400 + b'}, "config": ""}',
    b'{"line": {"run_id": "run-1", "started": "2024", "environments": [], "drift": 1'
    + b"0" * 400 + b', "compared": 1, "worst_output": null, "worst_abs": null}, "config": ""}',
    b'{"line": {"run_id": "run-1", "started": "2024", "environments": [], "drift": 1,'
    b' "compared": 1, "worst_output": "x/a", "worst_abs": NaN}, "config": ""}',
], ids=["deep", "huge worst", "huge drift", "nan worst"])  # fmt: skip
def test_a_forged_line_is_worked_out_from_the_rows(make_project, tmp_path, forged: bytes) -> None:
    """A line too deep to parse, or with a number no float or table holds: the rows say it,
    and `reprocheck history` prints it (exit 0)."""
    source = make_project(CONFIG)
    config = load_config(source)
    path = append_history(config, _run(tmp_path, "run-1", "2024-05-01T10:00:00"),
                          _matrix(_drift("x/a", 3)))  # fmt: skip
    (honest,) = history.history_lines(path)
    _with_line(_part(path, "run-1"), forged)
    assert history.history_lines(path) == [honest]
    code = "import sys; from reprocheck import cli\n"
    code += "sys.argv = ['reprocheck', 'history', '--config', sys.argv[1]]; cli.main()\n"
    done = subprocess.run([sys.executable, "-c", code, str(source)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "run-1" in done.stdout and "drift 1/1" in done.stdout


def test_a_one_file_history_the_folder_cannot_hold_is_moved_aside(
    config, store_format, tmp_path, caplog
) -> None:
    """Read fine (a fractional count of mismatches), but not as an integer column: moved aside
    once, with no half-written copy left, instead of failing every later run."""
    path = history.history_file(config)
    table = _table(("run-1", "2024-05-01T10:00:00", [_drift("x/a", 3), _drift("x/b", 4)]))
    table["mismatched"] = [1.0, 1.5]
    _one_file(path, table)
    caplog.set_level(logging.WARNING, logger="reprocheck")
    for day in (2, 3):
        append_history(config, _run(tmp_path, f"run-{day}", f"2024-05-0{day}T10:00:00"),
                       _matrix(_same("x/a")))  # fmt: skip
    assert list(load_history(path)["run_id"]) == ["run-2", "run-3"]
    assert len(list(path.parent.glob(f"{path.name}.damaged-*"))) == 1
    assert len(_warnings(caplog)) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [path.name, f".{path.name}.lock", *(p.name for p in path.parent.glob("*.damaged-*"))]
    )


def test_what_a_killed_conversion_leaves_is_cleared_or_taken_up(
    config, store_format, tmp_path
) -> None:
    path = history.history_file(config)
    old = _table(("run-1", "2024-05-01T10:00:00", [_drift("x/a", 3)]))
    converting = path.with_name(f".{path.name}.converting")
    _one_file(converting, old)  # killed after moving the one file away: readers still see it
    (path.parent / f".{path.name}.new-0123456789ab").mkdir()  # killed while copying
    assert [line.run_id for line in history.history_lines(path)] == ["run-1"]
    append_history(config, _run(tmp_path, "run-2", "2024-05-02T10:00:00"), _matrix(_same("x/a")))
    assert list(load_history(path)["run_id"]) == ["run-1", "run-2"]
    assert sorted(p.name for p in path.parent.iterdir()) == [f".{path.name}.lock", path.name]
    _one_file(converting, old)  # killed after the folder was in place: removed, not re-read
    append_history(config, _run(tmp_path, "run-3", "2024-05-03T10:00:00"), _matrix(_same("x/a")))
    assert not converting.exists()
    assert list(load_history(path)["run_id"]) == ["run-1", "run-2", "run-3"]


def test_a_run_file_that_cannot_be_opened_is_left_where_it_is(
    config, store_format, tmp_path, caplog, monkeypatch
) -> None:
    """Permission denied (another user's file) or an I/O error says nothing of the content:
    that run is left out with a warning, never moved aside."""
    path = append_history(config, _run(tmp_path, "run-1", "2024-05-01T10:00:00"),
                          _matrix(_drift("x/a", 3)))  # fmt: skip
    append_history(config, _run(tmp_path, "run-2", "2024-05-02T10:00:00"), _matrix(_same("x/a")))
    locked = _part(path, "run-1")
    real = history.open_regular

    def refuse(part: Path):  # type: ignore[no-untyped-def]
        if part == locked:
            raise UnsafeFileError(f"cannot read {part}: permission denied") from PermissionError(
                13, "Permission denied")  # fmt: skip
        return real(part)

    monkeypatch.setattr(history, "open_regular", refuse)
    caplog.set_level(logging.WARNING, logger="reprocheck")
    assert [line.run_id for line in history.history_lines(path)] == ["run-2"]
    assert locked.exists() and list(path.parent.glob("*damaged*")) == []
    (warning,) = _warnings(caplog)
    assert "cannot be read" in warning and "leaving out" in warning


@pytest.mark.parametrize("rows", ["some", "none"])
def test_a_folder_in_the_place_of_this_runs_file_is_moved_aside(
    config, store_format, tmp_path, rows: str
) -> None:
    path = history.history_file(config)
    _part(path, "run-1").mkdir(parents=True)
    items = [_drift("x/a", 3)] if rows == "some" else []
    append_history(config, _run(tmp_path, "run-1", "2024-05-01T10:00:00"), _matrix(*items))
    assert list(load_history(path)["run_id"]) == (["run-1"] if items else [])
    assert len(list(path.parent.glob(f"{path.name}.run-*.damaged-*"))) == 1


def test_a_run_file_rewritten_while_it_was_read_is_not_moved_aside(
    config, store_format, tmp_path, monkeypatch
) -> None:
    """A reader found the file damaged, and meanwhile `compare` of that run wrote it again:
    the new file stays (only the file that was read is moved aside)."""
    path = append_history(config, _run(tmp_path, "run-1", "2024-05-01T10:00:00"),
                          _matrix(_drift("x/a", 3)))  # fmt: skip
    _part(path, "run-1").write_bytes(b"PAR1 truncated")
    real = history._read

    def rewritten_meanwhile(part: Path) -> pd.DataFrame:
        monkeypatch.setattr(history, "_read", real)
        append_history(config, _run(tmp_path, "run-1", "2024-05-01T10:00:00"),
                       _matrix(_drift("x/a", 4)))  # fmt: skip
        raise ValueError("the damaged file, as it was read")

    monkeypatch.setattr(history, "_read", rewritten_meanwhile)
    assert load_history(path).empty  # this reader could not read it
    assert list(path.parent.glob("*damaged*")) == []
    assert list(load_history(path)["max_ulp"]) == [4.0]  # the next one reads the new file
