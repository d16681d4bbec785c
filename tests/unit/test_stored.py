"""stored: named baselines, stored environments as references, and merged split runs."""

from __future__ import annotations

import dataclasses
import multiprocessing
import shutil
import threading
from multiprocessing.synchronize import Barrier
from pathlib import Path

import numpy as np
import pytest
from runs import stored_env, stored_run

from reprocheck.config import RunConfig, load_config
from reprocheck.errors import ConfigError, RunNotFoundError
from reprocheck.outputs import index_outputs, load_output
from reprocheck.run_model import EnvironmentResult, RunResult
from reprocheck.store import LATEST, MANIFEST, check_run_folder, load_run, point_latest, save_run
from reprocheck.stored import (
    baselines_dir,
    list_baselines,
    load_baseline,
    merge_runs,
    reference_pairs,
    renamed,
    require_runs,
    save_baseline,
)

CONFIG = """
[pipeline]
callable = "p.py:run"
[[environments]]
name = "bullseye"
image = "debian:bullseye"
[[environments]]
name = "bookworm"
image = "debian:bookworm"
[[environments]]
name = "trixie"
image = "debian:trixie"
"""


@pytest.fixture
def config(make_project) -> RunConfig:
    return load_config(make_project(CONFIG))


def _saved_run(config: RunConfig, run_id: str, *names: str) -> RunResult:
    run_dir = config.reports_dir / run_id
    envs = tuple(
        stored_env(
            run_dir, name, {"x.png": {"value": np.arange(3) + k}}, fingerprint={"glibc": f"2.3{k}"}
        )
        for k, name in enumerate(names)
    )
    run = stored_run(run_dir, envs)
    save_run(run)
    return run


def _without_paths(env: EnvironmentResult) -> EnvironmentResult:
    return dataclasses.replace(env, outputs_dir=Path(), meta_dir=Path())


def _values(env: EnvironmentResult) -> list[int]:
    return load_output(index_outputs(env.outputs_dir)["x.png/value"]).tolist()


# --------------------------------------------------------------------------- baselines


def test_baseline_round_trip(config: RunConfig) -> None:
    run = _saved_run(config, "run-1", "bullseye", "bookworm")
    (run.run_dir / "report.html").write_text("<html>")
    (run.run_dir / "repeats").mkdir()
    folder = save_baseline(config, run.run_dir, "release-1.0")
    assert folder == baselines_dir(config) / "release-1.0"
    assert not (folder / "report.html").exists()
    assert not (folder / "repeats").exists()
    stored = load_baseline(config, "release-1.0")
    assert stored.run_id == "run-1"
    assert stored.started == run.started
    assert [_without_paths(e) for e in stored.environments] == [
        _without_paths(e) for e in run.environments
    ]
    assert [_values(e) for e in stored.environments] == [[0, 1, 2], [1, 2, 3]]
    assert all(e.outputs_dir.is_relative_to(folder) for e in stored.environments)


def test_saving_a_baseline_again_needs_force_and_then_replaces_it(config: RunConfig) -> None:
    save_baseline(config, _saved_run(config, "run-1", "bullseye", "bookworm").run_dir, "nightly")
    second = _saved_run(config, "run-2", "trixie").run_dir
    with pytest.raises(ConfigError, match="already exists"):
        save_baseline(config, second, "nightly")
    assert load_baseline(config, "nightly").run_id == "run-1"  # untouched
    save_baseline(config, second, "nightly", replace=True)
    listed = list_baselines(config)
    assert [(b.name, b.run_id, b.environments) for b in listed] == [
        ("nightly", "run-2", ("trixie",))
    ]
    stored = load_baseline(config, "nightly")
    assert stored.run_id == "run-2"
    assert [e.name for e in stored.environments] == ["trixie"]
    assert not (baselines_dir(config) / "nightly" / "environments" / "bullseye").exists()
    assert [p.name for p in baselines_dir(config).iterdir()] == ["nightly"]  # no staging left


@pytest.mark.parametrize("status", ["interrupted", "error", "partial"])
def test_a_run_that_did_not_finish_is_no_baseline(config: RunConfig, status: str) -> None:
    """A baseline missing an environment's outputs would make every later run against it
    fail: saving one is refused (one line naming the environment), nothing is written."""
    run = _saved_run(config, "run-1", "bullseye", "bookworm")
    broken = dataclasses.replace(run.environments[1], status=status, error="stopped")
    save_run(dataclasses.replace(run, environments=(run.environments[0], broken)))
    with pytest.raises(ConfigError, match=f"bookworm \\({status}\\) did not finish ok"):
        save_baseline(config, run.run_dir, "golden")
    assert not baselines_dir(config).exists()


@pytest.mark.parametrize(
    "name", ["", "../escape", "a/b", ".hidden", "-flag", "two words", "nightly\n"]
)
def test_invalid_baseline_names(config: RunConfig, name: str) -> None:
    run = _saved_run(config, "run-1", "bullseye")
    with pytest.raises(ConfigError, match="is not valid"):
        save_baseline(config, run.run_dir, name)
    assert not baselines_dir(config).exists()


def test_missing_baseline(config: RunConfig) -> None:
    with pytest.raises(RunNotFoundError, match="no baseline named 'gone'") as info:
        load_baseline(config, "gone")
    assert "reprocheck baseline save gone" in str(info.value.fix)


# --------------------------------------------------------------------------- references


def test_renamed_prefixes_every_environment(config: RunConfig) -> None:
    run = _saved_run(config, "run-1", "bullseye", "bookworm")
    refs = renamed(run, "release-1.0")
    assert [e.name for e in refs] == ["release-1.0/bullseye", "release-1.0/bookworm"]
    assert [e.outputs_dir for e in refs] == [e.outputs_dir for e in run.environments]
    assert [e.name for e in run.environments] == ["bullseye", "bookworm"]  # a copy


def test_reference_pairs_only_for_shared_environments(config: RunConfig) -> None:
    stored = _saved_run(config, "run-1", "bullseye", "bookworm")
    now = _saved_run(config, "run-2", "bookworm", "trixie")
    pairs = reference_pairs(renamed(stored, "base"), now, "base")
    assert pairs == (("base/bookworm", "bookworm"),)


def test_reference_pairs_strip_only_the_prefix(config: RunConfig) -> None:
    stored = _saved_run(config, "run-1", "bullseye")
    now = _saved_run(config, "run-2", "bullseye")
    refs = renamed(stored, "bull")  # a prefix that is also the start of the name
    assert reference_pairs(refs, now, "bull") == (("bull/bullseye", "bullseye"),)


# --------------------------------------------------------------------------- merge


def test_merge_disjoint_runs_in_config_order(config: RunConfig, tmp_path: Path) -> None:
    late = _saved_run(config, "job-2", "trixie", "bullseye")
    early = dataclasses.replace(
        _saved_run(config, "job-1", "bookworm"), started="2024-04-30T08:00:00+00:00"
    )
    save_run(early)
    merged = merge_runs(config, [late.run_dir, early.run_dir], tmp_path / "merged")
    assert [e.name for e in merged.environments] == ["bullseye", "bookworm", "trixie"]
    assert merged.run_id != "merged"  # a unique id: each night's merge is its own history row
    assert merge_runs(config, [late.run_dir, early.run_dir], tmp_path / "again").run_id not in (
        merged.run_id,
        "again",
    )
    assert merged.started == "2024-04-30T08:00:00+00:00"
    stored = load_run(tmp_path / "merged")
    assert [e.name for e in stored.environments] == ["bullseye", "bookworm", "trixie"]
    assert [_values(e) for e in stored.environments] == [[1, 2, 3], [0, 1, 2], [0, 1, 2]]
    assert stored.environments[0].fingerprint == {"glibc": "2.31"}
    for env in stored.environments:
        assert env.outputs_dir == (tmp_path / "merged" / "environments" / env.name / "outputs")


def test_merge_keeps_unconfigured_environments_last(config: RunConfig, tmp_path: Path) -> None:
    a = _saved_run(config, "job-1", "zesty", "trixie")
    b = _saved_run(config, "job-2", "alpine", "bullseye")
    merged = merge_runs(config, [a.run_dir, b.run_dir], tmp_path / "merged")
    assert [e.name for e in merged.environments] == ["bullseye", "trixie", "alpine", "zesty"]


def test_merge_rejects_an_environment_in_two_runs(config: RunConfig, tmp_path: Path) -> None:
    a = _saved_run(config, "job-1", "bullseye", "bookworm")
    b = _saved_run(config, "job-2", "bookworm")
    with pytest.raises(ConfigError, match="'bookworm' appears in both"):
        merge_runs(config, [a.run_dir, b.run_dir], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_require_runs(config: RunConfig, tmp_path: Path) -> None:
    run = _saved_run(config, "job-1", "bullseye")
    assert require_runs([run.run_dir]) == [run.run_dir.resolve()]
    assert (run.run_dir / MANIFEST).is_file()
    # A glob like split/* also matches the latest link and stray files: they are skipped.
    (tmp_path / "latest").symlink_to(run.run_dir)
    (tmp_path / "notes.txt").write_text("x")
    found = require_runs([run.run_dir, tmp_path / "latest", tmp_path / "notes.txt", tmp_path])
    assert found == [run.run_dir.resolve()]
    with pytest.raises(RunNotFoundError, match="no reprocheck run folder"):
        require_runs([tmp_path / "latest", tmp_path / "notes.txt"])


def test_runs_outside_the_reports_folder_leave_latest_alone(config: RunConfig, tmp_path):
    """run --out split/X writes only split/X: no split/latest that a merge would trip on."""
    run = _saved_run(config, "job-1", "bullseye")
    shutil.copytree(run.run_dir, tmp_path / "split" / "bullseye")
    save_run(load_run(tmp_path / "split" / "bullseye"), latest=False)
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["bullseye"]


# --------------------------------------------------------------------------- latest


def test_point_latest_replaces_the_link(tmp_path: Path) -> None:
    for name in ("run-1", "run-2"):
        (tmp_path / name).mkdir()
        point_latest(tmp_path / name)
    assert (tmp_path / LATEST).readlink() == Path("run-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, "run-1", "run-2"]


def test_point_latest_from_many_threads_never_raises(tmp_path: Path) -> None:
    """Concurrent runs of one project each point ``latest`` at their own folder at the end;
    a fixed temporary name made some of them fail with FileExistsError/FileNotFoundError."""
    run_dirs = [tmp_path / f"run-{k}" for k in range(8)]
    for run_dir in run_dirs:
        run_dir.mkdir()
    start = threading.Barrier(len(run_dirs))
    errors: list[BaseException] = []

    def point(run_dir: Path) -> None:
        start.wait()
        for _ in range(100):
            try:
                point_latest(run_dir)
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=point, args=(d,)) for d in run_dirs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (tmp_path / LATEST).readlink() in {Path(d.name) for d in run_dirs}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [LATEST, *(d.name for d in run_dirs)]
    )


def _point_many_times(run_dir: str, start: Barrier, times: int) -> None:
    start.wait()
    for _ in range(times):
        point_latest(Path(run_dir))


def test_point_latest_from_many_processes_never_raises(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    run_dirs = [tmp_path / f"run-{k}" for k in range(4)]
    start = spawn.Barrier(len(run_dirs))
    workers = []
    for run_dir in run_dirs:
        run_dir.mkdir()
        workers.append(spawn.Process(target=_point_many_times, args=(str(run_dir), start, 200)))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * len(workers)  # an exception exits 1
    assert (tmp_path / LATEST).readlink() in {Path(d.name) for d in run_dirs}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [LATEST, *(d.name for d in run_dirs)]
    )


# --------------------------------------------------------------------------- --out folders


def test_a_run_folder_is_new_empty_or_an_earlier_runs(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "environments" / "bookworm").mkdir(parents=True)
    (project / "environments" / "bookworm" / "notes.txt").write_text("the project's own")
    check_run_folder(project / "reports" / "new", project)
    (project / "empty").mkdir()
    check_run_folder(project / "empty", project)
    earlier = project / "split" / "bookworm"
    (earlier / "environments").mkdir(parents=True)
    check_run_folder(earlier, project)  # interrupted before its run.json
    (earlier / MANIFEST).write_text("{}")
    (earlier / "report.json").write_text("{}")
    check_run_folder(earlier, project)
    (project / "file").write_text("x")
    (project / "link").symlink_to(project)
    for folder, why in [(project, "is the project folder"), (tmp_path, "is the project folder"),
                        (Path("."), "is the project folder"), (project / "file", "not a folder"),
                        (project / "link", "is the project folder"),
                        (project / "environments", r"holds other files \(bookworm\)")]:  # fmt: skip
        with pytest.raises(ConfigError, match=why):
            check_run_folder(folder if folder.is_absolute() else project / folder, project)
    (project / "other").mkdir()
    (project / "other" / "environments").mkdir()
    (project / "other" / "data.csv").write_text("x")
    with pytest.raises(ConfigError, match=r"holds other files \(data.csv, environments\)"):
        check_run_folder(project / "other", project)


def test_run_and_merge_refuse_the_project_folder_as_out(
    config: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --out .` would clear the project's own environments/<env>/ folders."""
    from click.testing import CliRunner

    from reprocheck import cli

    notes = config.root / "environments" / "bullseye" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("the project's own")
    (config.root / "fixtures").mkdir(exist_ok=True)
    (config.root / "fixtures" / "a.bin").write_text("a")
    _saved_run(config, "x", "bookworm")
    monkeypatch.chdir(config.root)
    for args in (["run", "--out", "."], ["merge", "--out", ".", "reports/x"]):
        done = CliRunner().invoke(cli.main, args, catch_exceptions=False)
        assert done.exit_code == 2, done.output
        assert "--out" in done.output and "is the project folder" in done.output, done.output
        assert "Traceback" not in done.output
    assert notes.read_text() == "the project's own"


def test_a_baseline_without_an_environment_says_so(config: RunConfig, caplog) -> None:
    """run --baseline with a baseline saved from fewer environments: the others are compared
    with nothing there, and a warning says which (before, they were left out silently)."""
    import logging

    from reprocheck.stages import matrix_for

    save_baseline(config, _saved_run(config, "run-1", "bullseye", "bookworm").run_dir, "sub")
    run = _saved_run(config, "run-2", "bullseye", "bookworm", "trixie")
    with caplog.at_level(logging.WARNING, logger="reprocheck"):
        matrix = matrix_for(config, run, load_baseline(config, "sub"), "sub")
    assert ("sub/bookworm", "bookworm") in matrix.pairs
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning == ("baseline sub holds no trixie (it holds bullseye, bookworm): not "
                       "compared with the baseline")  # fmt: skip
