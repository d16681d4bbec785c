"""A run that changed nothing is the run it repeats (reprocheck.reuse), through the CLI with
the fake engine: what it prints and writes, what keeps it from reusing, damage, prune."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from fakes import FakeEngine, Mounted, all_ok, outcome

from reprocheck import cli
from reprocheck.cache import RunCache
from reprocheck.config import RunConfig, load_config
from reprocheck.engine import ContainerOutcome
from reprocheck.history import history_file
from reprocheck.plan import make_plan
from reprocheck.reuse import REUSE_DIR, REUSE_FILE, prune
from reprocheck.runner import Runner

FILES = {"inputs/a.png": "aaaa", "inputs/b.png": "bbbb", "p.py": "def run(path):\n    pass\n"}
OLD = 1_000_000_000  # far in the past: file hashes are remembered
NOTE = "nothing changed since run "


@pytest.fixture(autouse=True)
def _no_host_ca(no_host_ca: None) -> None:
    """No CA bundle from the environment."""


def _drifting(box: Mounted) -> ContainerOutcome:
    """Like all_ok, with the value moved: the pair drifts (exit 1)."""
    fixtures = box.plan["fixtures"]
    for fixture in fixtures:
        box.write_outputs(fixture, value=np.arange(3) + 0.5)
    box.write_status({f: {"status": "ok", "seconds": 0.1} for f in fixtures})
    box.write_fingerprint()
    return outcome(0)


def _crash(box: Mounted) -> ContainerOutcome:
    box.write_status({f: {"status": "running"} for f in box.plan["fixtures"]})
    return outcome(139, log="Segmentation fault")


@pytest.fixture
def project(make_project, fake_engine: FakeEngine, monkeypatch) -> RunConfig:
    text = ('[pipeline]\ncallable = "p.py:run"\n[fixtures]\npath = "inputs"\n'
            + "".join(f'[[environments]]\nname = "{n}"\nimage = "img/{n}:1"\n'
                      for n in ("one", "two")))  # fmt: skip
    config = load_config(make_project(text, FILES))
    for path in config.root.rglob("*"):
        os.utime(path, ns=(OLD, OLD), follow_symlinks=False)
    for env in config.environments:
        fake_engine.add(env.image)
    fake_engine.behaviours["two"] = _drifting
    monkeypatch.setattr(cli, "get_engine", lambda _name: fake_engine)
    monkeypatch.chdir(config.root)
    return config


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli.main, ["run", *args], catch_exceptions=False)


def _runs(config: RunConfig) -> list[str]:
    return sorted(p.name for p in config.reports_dir.iterdir() if p.name[0].isdigit())


def _latest(config: RunConfig) -> str:
    return os.readlink(config.reports_dir / "latest")


def _full_then_repeated(config: RunConfig, *args: str) -> tuple[Result, Result, str]:
    first = _run(*args)
    assert first.exit_code == 1, first.output
    (run_id,) = _runs(config)
    second = _run(*args)
    return first, second, run_id


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_run_with_nothing_changed_is_the_run_it_repeats(
    project: RunConfig, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    first, _, run_id = _full_then_repeated(project)
    assert NOTE not in first.output
    history = _files(history_file(project))
    asked = {name: tmp_path / "asked" / name for name in ("r.json", "r.md", "r.html", "r.xml")}
    args = ("--json", str(asked["r.json"]), "--md", str(asked["r.md"]),
            "--html", str(asked["r.html"]), "--junit", str(asked["r.xml"]))  # fmt: skip
    again = _run(*args)
    assert again.exit_code == 1, again.output  # the earlier run's exit code
    assert f"{NOTE}{run_id}" in again.output
    assert f"run {run_id}: " in again.output  # its summary
    assert len(fake_engine.runs) == 2  # no container
    assert _runs(project) == [run_id]  # no run folder of its own: the earlier one stands
    assert _latest(project) == run_id
    assert _files(history_file(project)) == history  # no history row
    folder = project.reports_dir / run_id
    for asked_name, own in (("r.json", "report.json"), ("r.md", "report.md"),
                            ("r.html", "report.html")):  # fmt: skip
        assert asked[asked_name].read_bytes() == (folder / own).read_bytes()
    cases = ET.parse(asked["r.xml"]).getroot().iter("testcase")
    assert any(case.find("failure") is not None for case in cases)  # the drift, as JUnit


def _edit_config(config: RunConfig) -> None:
    with config.source.open("a") as handle:
        handle.write("# a comment is a change of the config file\n")


def _recompare(config: RunConfig) -> None:
    proc = CliRunner().invoke(cli.main, ["compare"], catch_exceptions=False)
    assert proc.exit_code == 1, proc.output


def _drop_html(config: RunConfig) -> None:
    (config.reports_dir / _runs(config)[0] / "report.html").unlink()


def _damage_record(config: RunConfig) -> None:
    (config.reports_dir / _runs(config)[0] / REUSE_FILE).write_text("{not json")


def _another_key_in_the_run(config: RunConfig) -> None:
    (config.reports_dir / _runs(config)[0] / REUSE_FILE).write_text('{"key": "0", "exit_code": 1}')


def _pointer_outside(config: RunConfig) -> None:
    for pointer in (config.reports_dir / ".cache" / REUSE_DIR).iterdir():
        pointer.write_text(json.dumps({"run": "../elsewhere"}))


def _outputs_removed(config: RunConfig) -> None:
    shutil.rmtree(config.reports_dir / _runs(config)[0] / "environments" / "two" / "outputs")


def _an_output_removed(config: RunConfig) -> None:
    outputs = config.reports_dir / _runs(config)[0] / "environments" / "two" / "outputs"
    next(p for p in sorted(outputs.iterdir()) if p.is_file()).unlink()


def _an_output_rewritten(config: RunConfig) -> None:
    outputs = config.reports_dir / _runs(config)[0] / "environments" / "one" / "outputs"
    first = next(p for p in sorted(outputs.iterdir()) if p.is_file())
    stamp, other = first.stat(), first.with_name("other.npz")
    np.savez(other, value=np.arange(4))  # a new file (the cache entry keeps its own)
    os.utime(other, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # even with the old time
    other.replace(first)


def _report_linked(config: RunConfig) -> None:
    md = config.reports_dir / _runs(config)[0] / "report.md"
    (config.root / "elsewhere.md").write_text("# not the run's\n")
    md.unlink()
    md.symlink_to(config.root / "elsewhere.md")


def _exit_code_out_of_range(config: RunConfig) -> None:
    record = config.reports_dir / _runs(config)[0] / REUSE_FILE
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "exit_code": 256}))


def _comparisons_removed(config: RunConfig) -> None:
    (config.reports_dir / _runs(config)[0] / "comparisons.parquet").unlink()


def _changed_fixture(config: RunConfig) -> None:
    (config.fixtures_dir / "b.png").write_text("bbbc")


CHANGES: dict[str, Callable[[RunConfig], None]] = {
    "config edited": _edit_config, "compared again": _recompare, "a report removed": _drop_html,
    "record damaged": _damage_record, "record of another key": _another_key_in_the_run,
    "pointer outside the reports": _pointer_outside, "fixture changed": _changed_fixture,
    "its outputs removed": _outputs_removed, "a report file replaced by a link": _report_linked,
    "an output file removed": _an_output_removed, "an output rewritten": _an_output_rewritten,
    "exit code out of range": _exit_code_out_of_range,
    "comparisons removed": _comparisons_removed,
}  # fmt: skip


@pytest.mark.parametrize("change", CHANGES)
def test_what_makes_a_run_of_its_own(project: RunConfig, change: str) -> None:
    _, _, run_id = _full_then_repeated(project)
    CHANGES[change](project)
    third = _run()
    assert third.exit_code == 1, third.output
    assert NOTE not in third.output
    (new_id,) = set(_runs(project)) - {run_id}  # a run folder of its own, with its reports
    new = project.reports_dir / new_id
    assert (new / "report.json").is_file() and (new / REUSE_FILE).is_file()
    assert _latest(project) == new.name
    fourth = _run()  # which the next run with nothing changed repeats
    assert f"{NOTE}{new.name}" in fourth.output and len(_runs(project)) == 2


@pytest.mark.parametrize("args", [("--no-cache",), ("--out", "reports/mine"), ("--env", "one")])
def test_options_that_ask_for_a_run_of_its_own(project: RunConfig, args: tuple[str, ...]) -> None:
    _run()
    again = _run(*args)
    assert NOTE not in again.output, again.output
    assert again.exit_code in (0, 1)
    assert len(_runs(project)) == 2 or (project.reports_dir / "mine" / "report.json").is_file()


def test_a_failed_environment_is_never_a_run_to_repeat(
    project: RunConfig, fake_engine: FakeEngine
) -> None:
    fake_engine.behaviours["two"] = _crash
    assert _run().exit_code == 2
    second = _run()
    assert second.exit_code == 2 and NOTE not in second.output
    assert len(fake_engine.runs) == 3  # the crashed one ran again
    assert not any((project.reports_dir / r / REUSE_FILE).exists() for r in _runs(project))


def test_the_cache_knows_whether_every_result_was_restored(
    project: RunConfig, fake_engine: FakeEngine
) -> None:
    def settled(run_id: str) -> Any:
        cache = RunCache.open(project)
        Runner(fake_engine, make_plan(project), run_id=run_id, cache=cache).run(
            project.reports_dir / run_id
        )
        return cache.settled()

    first = settled("r1")
    assert first is not None and not first.all_restored and len(first.entries) == 2
    second = settled("r2")
    assert second is not None and second.all_restored and second.entries == first.entries
    fake_engine.behaviours["one"] = _crash
    _changed_fixture(project)
    assert settled("r3") is None  # one result neither restored nor stored
    fake_engine.behaviours["one"] = all_ok


def test_prune_removes_records_of_runs_gone(project: RunConfig) -> None:
    cache = project.reports_dir / ".cache"
    _run()
    _edit_config(project)
    _run()
    assert len(list((cache / REUSE_DIR).iterdir())) == 2
    first = _runs(project)[0]
    (project.reports_dir / first / REUSE_FILE).unlink()
    (cache / REUSE_DIR / "a-folder.json").mkdir()  # cannot be unlinked: left, no error
    assert prune(cache) == 1
    assert prune(cache) == 0
    proc = CliRunner().invoke(cli.main, ["cache", "prune", "--all"], catch_exceptions=False)
    assert "removed 1 records" in proc.output, proc.output
    assert [p.name for p in (cache / REUSE_DIR).iterdir()] == ["a-folder.json"]
    assert _run().exit_code == 1  # runs again, and compares
    assert len(_runs(project)) == 3


def test_a_report_file_that_cannot_be_written_is_one_line(project: RunConfig, tmp_path) -> None:
    _run()
    folder = tmp_path / "a-folder"
    folder.mkdir()
    again = _run("--html", str(folder))
    assert again.exit_code == 2
    assert again.output.count("\n") >= 1 and "Traceback" not in again.output
    assert f"cannot write {folder}" in again.output


def test_entries_replaced_by_another_run_are_not_the_recorded_ones(
    project: RunConfig, fake_engine: FakeEngine
) -> None:
    """A --no-cache run that records nothing itself (--out) replaces the cache entries with
    what a nondeterministic pipeline computed this time: the next run restores those, and is
    not the first run again."""
    calls: list[int] = []

    def changing(box: Mounted) -> ContainerOutcome:
        calls.append(1)
        fixtures = box.plan["fixtures"]
        for fixture in fixtures:
            box.write_outputs(fixture, value=np.arange(3) + 0.5 if len(calls) % 2 else np.arange(3))
        box.write_status({f: {"status": "ok", "seconds": 0.1} for f in fixtures})
        box.write_fingerprint()
        return outcome(0)

    fake_engine.behaviours["two"] = changing
    first = _run()
    assert first.exit_code == 1, first.output  # two drifts from one (call 1: + 0.5)
    other = _run("--no-cache", "--out", "reports/other")
    assert other.exit_code == 0, other.output  # call 2: identical to one
    third = _run()
    assert NOTE not in third.output
    assert third.exit_code == 0, third.output  # what the cache holds now
    assert f"{NOTE}" in _run().output  # and the run after it repeats that one


def test_a_copied_project_compares_its_own_run(
    project: RunConfig, tmp_path: Path, monkeypatch
) -> None:
    _run()
    copy = tmp_path / "copy"
    shutil.copytree(project.root, copy, symlinks=True)
    monkeypatch.chdir(copy)
    again = _run()
    assert NOTE not in again.output and again.exit_code == 1, again.output
    assert len([p for p in (copy / "reports").iterdir() if p.name[0].isdigit()]) == 2


def test_a_report_json_that_cannot_be_shown_is_compared_again(
    project: RunConfig, tmp_path: Path
) -> None:
    _run()
    (run_id,) = _runs(project)
    report = project.reports_dir / run_id / "report.json"
    data = json.loads(report.read_text())
    report.write_text(json.dumps({**data, "comparisons": 5, "summary": [1]}))
    again = _run("--junit", str(tmp_path / "j.xml"))
    assert "cannot be shown again" in again.output, again.output
    assert NOTE not in again.output and again.exit_code == 1
    assert len(_runs(project)) == 2 and (tmp_path / "j.xml").is_file()


def test_a_file_of_the_repeated_run_is_never_overwritten(project: RunConfig) -> None:
    _run()
    (run_id,) = _runs(project)
    own = project.reports_dir / run_id / "report.json"
    before = own.read_bytes()
    again = _run("--html", str(project.reports_dir / "latest" / "report.json"))
    assert again.exit_code == 2 and f"is a file of run {run_id}" in again.output, again.output
    assert own.read_bytes() == before


def test_out_folders_in_the_project_are_hidden_and_no_input_of_the_next_run(
    project: RunConfig, fake_engine: FakeEngine
) -> None:
    """The CI recipe in a kept workspace: `run --env E --out split/E` for each environment,
    night after night. Each run's folder is hidden from the other environment's container
    and leaves its key alone: the second night starts no container."""
    for night in range(2):
        for env in ("one", "two"):
            done = _run("--env", env, "--out", f"split/{env}")
            assert done.exit_code == 0, done.output
        assert len(fake_engine.runs) == 2, night  # the second night: both cached
    first, second = fake_engine.runs
    assert "/project/split/one" in first.masked  # the run's own folder
    assert {"/project/split/one", "/project/split/two"} <= set(second.masked)  # and run one's
    shutil.rmtree(project.root / "split" / "one")  # gone: no longer recorded, nor hidden
    done = _run("--env", "two", "--out", "split/two")
    assert done.exit_code == 0 and len(fake_engine.runs) == 2, done.output
    recorded = json.loads((project.reports_dir / ".cache" / "run-folders.json").read_text())
    assert recorded["folders"] == [str((project.root / "split" / "two").resolve())]
    # The folder replaced by one of the user's files: an input again, and in the key.
    shutil.rmtree(project.root / "split" / "two")
    (project.root / "split" / "two").mkdir()
    (project.root / "split" / "two" / "v.txt").write_text("5")
    done = _run("--env", "one")
    assert done.exit_code == 0 and len(fake_engine.runs) == 3, done.output
    assert "/project/split/two" not in fake_engine.runs[-1].masked
    (project.root / "split" / "two" / "v.txt").write_text("7")
    done = _run("--env", "one")
    assert done.exit_code == 0 and len(fake_engine.runs) == 4, done.output  # ran again


def test_cache_prune_on_a_read_only_cache_is_one_error_line(
    project: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reprocheck import cache as cache_module

    _run()

    def read_only(path: Path) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(cache_module, "_remove", read_only)
    done = CliRunner().invoke(cli.main, ["cache", "prune", "--all"], catch_exceptions=False)
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    assert "error: cannot remove 2 item(s) of the cache" in done.output
    assert "Read-only file system" in done.output and "make the folder writable" in done.output
    nan = CliRunner().invoke(cli.main, ["cache", "prune", "--older-than", "nan"])
    assert nan.exit_code == 2 and "nan is not a number of days" in nan.output


def test_a_report_asked_into_a_standing_runs_folder_is_refused(project: RunConfig) -> None:
    _, _, run_id = _full_then_repeated(project)
    inside = project.reports_dir / run_id / "environments" / "x.html"
    done = _run("--html", str(inside))
    assert done.exit_code == 2, done.output
    assert f"is a file of run {run_id}" in done.output and not inside.exists()
