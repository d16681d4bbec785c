"""api: run/load/compare and the Report's answers, on stored runs built by hand (runs.py) and
runs of the fake engine (fakes.py); no container."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fakes import FakeEngine, Mounted, outcome
from runs import stored_env, stored_run

from reprocheck import api, stages
from reprocheck.config import RunConfig, load_config
from reprocheck.errors import ConfigError, OutputError, RunNotFoundError, StoredRunError
from reprocheck.matrix import build_matrix
from reprocheck.report.json_report import report_dict, write_json
from reprocheck.store import LATEST, load_run, save_run
from reprocheck.stored import save_baseline

CONFIG = """
[pipeline]
callable = "p.py:run"

[tolerance]
"*/accuracy" = { atol = 0.01 }

[decisions]
"*/probabilities" = "argmax"
""" + "".join(
    f'\n[[environments]]\nname = "{name}"\nimage = "debian:{name}"\n'
    for name in ("bullseye", "bookworm", "trixie")
)

PROBABILITIES = np.array([[0.6, 0.4], [0.3, 0.7]], dtype=np.float32)
EDGES = np.arange(12, dtype=np.float32).reshape(3, 4)


def _outputs(accuracy: float, probabilities: np.ndarray, edges: np.ndarray) -> dict:
    return {"a.png": {"accuracy": np.float64(accuracy), "probabilities": probabilities,
                      "edges": edges}}  # fmt: skip


def _env_outputs() -> dict[str, dict]:
    flipped = PROBABILITIES.copy()
    flipped[0] = [0.4, 0.6]  # the argmax of row 0 changes
    moved = EDGES.copy()
    moved[1, 2] = np.nextafter(moved[1, 2], np.float32(100))  # one element, one ULP
    return {
        "bullseye": _outputs(0.9, PROBABILITIES, EDGES),
        "bookworm": _outputs(0.9, PROBABILITIES, EDGES),
        "trixie": _outputs(0.905, flipped, moved),
    }


@pytest.fixture
def config(make_project) -> RunConfig:
    return load_config(make_project(CONFIG))


def _save(config: RunConfig, run_id: str, outputs: dict[str, dict]) -> Path:
    run_dir = config.reports_dir / run_id
    envs = tuple(stored_env(run_dir, name, arrays) for name, arrays in outputs.items())
    save_run(dataclasses.replace(stored_run(run_dir, envs), config_source=config.source))
    return run_dir


@pytest.fixture
def drifting(config: RunConfig) -> api.Report:
    _save(config, "run-1", _env_outputs())
    return api.load(config_path=config.source)


# --- the report's answers --------------------------------------------------------------------


def test_load_latest_answers_what_drifted(drifting: api.Report, config: RunConfig) -> None:
    assert drifting.verdict == "drift"
    assert drifting.exit_code == 1
    assert drifting.run_id == "run-1"
    assert drifting.path == config.reports_dir / "run-1"
    assert drifting.environments == ["bullseye", "bookworm", "trixie"]
    assert drifting.pairs == [("bullseye", "bookworm"), ("bullseye", "trixie")]
    # accuracy moved 0.005, inside its atol 0.01: not drifted
    assert drifting.drifted() == ["a.png/edges", "a.png/probabilities"]
    assert drifting.drifted(candidate="bookworm") == []
    assert drifting.errors() == []
    assert drifting.failed_environments() == {}
    assert drifting.summary == {"identical": 3, "drift": 2, "within_tolerance": 1}


def test_decisions_changed(drifting: api.Report) -> None:
    assert drifting.decisions_changed() == 1
    [change] = drifting.decision_changes()
    assert (change.output, change.baseline, change.candidate) == (
        "a.png/probabilities", "bullseye", "trixie")  # fmt: skip
    assert (change.kind, change.changed, change.total) == ("argmax", 1, 2)
    assert "1 of 2 argmax decisions changed" in str(change)
    assert drifting.decision_changes("*/edges") == []


def test_metric_per_environment(drifting: api.Report) -> None:
    assert drifting.metric("a.png/accuracy") == {
        "bullseye": 0.9, "bookworm": 0.9, "trixie": 0.905}  # fmt: skip
    assert drifting.metrics("*/accuracy") == {"a.png/accuracy": drifting.metric("a.png/accuracy")}
    assert drifting.metrics("*") == {"a.png/accuracy": drifting.metric("a.png/accuracy")}
    with pytest.raises(KeyError, match="nothing"):
        drifting.metric("a.png/nothing")
    with pytest.raises(ValueError, match="not a scalar"):
        drifting.metric("a.png/edges")
    np.testing.assert_array_equal(drifting.array("a.png/edges", "bookworm"), EDGES)


def test_comparisons_is_every_row_as_a_dataframe(drifting: api.Report) -> None:
    frame = drifting.comparisons()
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 6
    row = frame[(frame.output == "a.png/edges") & (frame.candidate == "trixie")].iloc[0]
    assert (row.verdict, row.mismatched, row.max_ulp) == ("drift", 1, 1)


def test_failing_is_worst_first_and_described(drifting: api.Report) -> None:
    lines = [api.describe(item) for item in drifting.failing()]
    assert lines[0].startswith("a.png/probabilities bullseye -> trixie: drift (")
    assert "1 of 2 argmax decisions changed" in lines[0]
    assert lines[1] == (
        "a.png/edges bullseye -> trixie: drift (1 of 12 elements differ, "
        "max |diff| 4.76837e-07, max 1 ULP, worst at (1, 2), rule default)"
    )


def test_the_current_tolerances_apply_to_a_stored_run(config: RunConfig) -> None:
    _save(config, "run-1", _env_outputs())
    strict = config.source.read_text().replace("atol = 0.01", "atol = 0.001")
    config.source.write_text(strict)
    report = api.load("run-1", config.source)
    assert "a.png/accuracy" in report.drifted()
    assert not (config.reports_dir / "run-1" / "report.json").exists()  # load writes nothing


def test_load_with_a_baseline(config: RunConfig) -> None:
    save_baseline(config, _save(config, "old", _env_outputs()), "golden")
    same = {name: _env_outputs()["bullseye"] for name in ("bullseye", "bookworm", "trixie")}
    _save(config, "new", same)
    report = api.load("new", config.source, baseline="golden")
    assert report.references == ["golden/bullseye", "golden/bookworm", "golden/trixie"]
    assert ("golden/trixie", "trixie") in report.pairs
    assert report.drifted() == ["a.png/edges", "a.png/probabilities"]
    assert report.drifted(candidate="bookworm") == []
    assert report.metric("a.png/accuracy")["golden/trixie"] == 0.905
    assert report.decisions_changed() == 1


def test_a_failed_environment_is_an_error(config: RunConfig) -> None:
    run_dir = config.reports_dir / "broken"
    envs = [stored_env(run_dir, n, a) for n, a in _env_outputs().items()]
    envs[2] = dataclasses.replace(envs[2], status="crash", error="SIGSEGV")
    run = stored_run(run_dir, tuple(envs))
    save_run(run)
    report = api.load("broken", config.source)
    assert report.verdict == "error"
    assert report.exit_code == 2
    assert report.failed_environments() == {"trixie": "crash: SIGSEGV"}
    assert report.errors() == ["a.png/accuracy", "a.png/edges", "a.png/probabilities"]
    assert "trixie" not in report.metric("a.png/accuracy")
    with pytest.raises(AssertionError, match=r"(?s)run broken: error .*environment trixie: "
                                             r"crash: SIGSEGV"):  # fmt: skip
        api.assert_consistent(report)


def test_load_errors_are_reprocheck_errors(config: RunConfig, tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError):
        api.load(config_path=config.source)
    with pytest.raises(ConfigError):
        api.load(config_path=tmp_path / "nowhere.toml")
    with pytest.raises(RunNotFoundError):
        api.Report.read(tmp_path)


# --- assertions -----------------------------------------------------------------------------


def test_assert_consistent_lists_offenders(drifting: api.Report) -> None:
    with pytest.raises(AssertionError) as failed:
        api.assert_consistent(drifting)
    text = str(failed.value)
    assert text.startswith(
        "reprocheck: run run-1: drift (3 identical, 2 drift, 1 within_tolerance)\n"
    )
    assert "\n  a.png/probabilities bullseye -> trixie: drift (" in text
    assert "\n  a.png/edges bullseye -> trixie: drift (" in text
    assert "accuracy" not in text


def test_assert_no_decision_changes(drifting: api.Report) -> None:
    api.assert_no_decision_changes(drifting, "*/edges")
    with pytest.raises(AssertionError, match=r"1 decision\(s\) changed in 1 comparison") as failed:
        api.assert_no_decision_changes(drifting)
    assert "a.png/probabilities bullseye -> trixie: 1 of 2 argmax decisions changed" in str(
        failed.value
    )


def test_assert_metric_within(drifting: api.Report) -> None:
    api.assert_metric_within(drifting, "*/accuracy", atol=0.01)
    api.assert_metric_within(drifting, "*/accuracy", rtol=0.01)
    with pytest.raises(AssertionError) as failed:
        api.assert_metric_within(drifting, "*/accuracy", atol=0.001)
    text = str(failed.value)
    assert "1 metric value(s) of '*/accuracy' outside atol=0.001 rtol=0" in text
    assert "\n  a.png/accuracy bullseye -> trixie: 0.9 -> 0.905 (|diff| 0.005 > 0.001)" in text
    with pytest.raises(AssertionError, match="no scalar output matches"):
        api.assert_metric_within(drifting, "*/recall", atol=1)


def test_assert_metric_within_defaults_to_the_declared_tolerance(
    make_project, tmp_path: Path
) -> None:
    """Without atol/rtol, each output's [metrics] tolerance applies, also from a report read
    back without a configuration; an undeclared metric is exact."""
    for atol, fails in ((0.01, False), (0.001, True)):
        metric = f'"*/accuracy" = {{ atol = {atol}, unit = "%", scale = 100 }}'
        text = f"{CONFIG}\n[metrics]\n{metric}\n"
        config = load_config(make_project(text, root=tmp_path / str(atol)))
        run_dir = _save(config, "run-1", _env_outputs())
        report = api.load(config_path=config.source)
        assert report.metric_tolerances() == {"a.png/accuracy": (atol, 0.0)}
        write_json(run_dir / "report.json", report.data)
        pq.write_table(report.table, run_dir / "comparisons.parquet")
        for each in (report, api.Report.read(run_dir)):
            if fails:
                with pytest.raises(AssertionError, match=r"outside the \[metrics\] tolerances"):
                    api.assert_metric_within(each, "*/accuracy")
            else:
                api.assert_metric_within(each, "*/accuracy")
            api.assert_metric_within(each, "*/accuracy", atol=0.01)  # given: replaces it
    config = load_config(make_project(CONFIG, root=tmp_path / "undeclared"))
    _save(config, "run-2", _env_outputs())
    with pytest.raises(AssertionError, match=r"0\.9 -> 0\.905"):
        api.assert_metric_within(api.load(config_path=config.source), "*/accuracy")


def test_a_metric_missing_in_a_candidate_is_an_offender(config: RunConfig) -> None:
    outputs = _env_outputs()
    del outputs["trixie"]["a.png"]["accuracy"]
    _save(config, "run-1", outputs)
    report = api.load(config_path=config.source)
    with pytest.raises(AssertionError, match=r"bullseye -> trixie: 0.9 -> None: no value in "
                                             r"the candidate"):  # fmt: skip
        api.assert_metric_within(report, "*/accuracy", atol=1)


# --- run ------------------------------------------------------------------------------------

RUN_CONFIG = """
[pipeline]
callable = "pipelines/p.py:run"
[fixtures]
path = "inputs"
[decisions]
"*/scores" = "argmax"
[[environments]]
name = "one"
image = "img/one:1"
[[environments]]
name = "two"
image = "img/two:1"
"""


def _pipeline(scores: list[float]):
    def behaviour(box: Mounted):
        fixtures = box.plan["fixtures"]
        for fixture in fixtures:
            box.write_outputs(fixture, scores=np.array(scores), accuracy=np.float64(0.5))
        box.write_status({f: {"status": "ok", "seconds": 0.1} for f in fixtures})
        box.write_fingerprint()
        return outcome(0)

    return behaviour


@pytest.fixture
def project(make_project, fake_engine: FakeEngine, no_host_ca: None) -> RunConfig:
    config = load_config(make_project(RUN_CONFIG, {"inputs/a.bin": "a", "pipelines/p.py": ""}))
    for env in config.environments:
        fake_engine.add(env.image)
    return config


def test_run_writes_what_the_command_writes(project: RunConfig, fake_engine: FakeEngine) -> None:
    fake_engine.behaviours = {"one": _pipeline([0.2, 0.8]), "two": _pipeline([0.8, 0.2])}
    events = []
    report = api.run(project.source, engine=fake_engine, progress=events.append)
    assert report.verdict == "drift"
    assert report.problems == ()
    assert report.decisions_changed() == 1
    assert report.metric("a.bin/accuracy") == {"one": 0.5, "two": 0.5}
    folder = report.path
    assert folder.parent == project.reports_dir
    assert (project.reports_dir / LATEST).resolve() == folder
    for name in ("run.json", "report.json", "comparisons.parquet", "report.md", "report.html"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "report.json").read_text()) == report.data
    assert (project.root / "reports" / "history.parquet").is_dir()
    assert any(event.stage == "run" for event in events)
    again = api.Report.read(folder)
    assert (again.verdict, again.drifted(), again.decisions_changed()) == (
        "drift", ["a.bin/scores"], 1)  # fmt: skip
    assert again.comparisons().equals(report.comparisons())


def test_run_options(project: RunConfig, fake_engine: FakeEngine, tmp_path: Path) -> None:
    report = api.run(project.source, engine=fake_engine, envs=["two"], out=tmp_path / "mine",
                     cache=False, jobs=1)  # fmt: skip
    assert report.path == tmp_path / "mine"
    assert report.environments == ["two"]
    assert report.verdict == "consistent"
    assert report.exit_code == 0
    assert not (project.reports_dir / LATEST).exists()  # only runs in reports/ are "latest"
    api.assert_consistent(report)
    with pytest.raises(ConfigError, match="no environment named 'three'"):
        api.run(project.source, engine=fake_engine, envs=["three"])


def test_a_late_stage_failure_is_a_problem_not_a_lost_report(
    project: RunConfig, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stages, "write_reports", broken)
    report = api.run(project.source, engine=fake_engine)
    assert report.verdict == "consistent"
    assert report.problems == ("reports: OSError: [Errno 28] No space left on device",)
    assert report.exit_code == 2
    assert (report.path / "report.json").is_file()
    assert (project.root / "reports" / "history.parquet").is_dir()


def test_read_a_run_folder_moved_elsewhere(drifting: api.Report, config: RunConfig,
                                           tmp_path: Path) -> None:  # fmt: skip
    folder = config.reports_dir / "run-1"  # written as `reprocheck compare` writes it
    result = load_run(folder)
    matrix = build_matrix(config, result)
    write_json(folder / "report.json", report_dict(result, matrix))
    matrix.comparisons.write_parquet(folder / "comparisons.parquet")
    moved = tmp_path / "artifact"
    shutil.copytree(folder, moved)
    shutil.rmtree(folder)
    report = api.Report.read(moved)
    assert report.path == moved
    assert report.drifted() == drifting.drifted()
    assert report.metric("a.png/accuracy")["trixie"] == 0.905  # read from the moved folder
    (moved / "comparisons.parquet").unlink()
    with pytest.raises(StoredRunError, match=r"comparisons\.parquet is missing"):
        api.Report.read(moved)


# --- compare --------------------------------------------------------------------------------


def test_compare_two_arrays() -> None:
    a = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    b = a.copy()
    b[1] = np.nextafter(b[1], np.float32(3))
    assert api.compare(a, a).verdict == "identical"
    assert api.compare(a, b).verdict == "drift"
    assert api.compare(a, b, ulp=1).verdict == "within_tolerance"
    assert api.compare(a, b, atol=1e-6).verdict == "within_tolerance"
    assert api.compare(a, b).max_ulp == 1
    assert api.compare([1, 2], [1, 2, 3]).verdict == "incomparable"
    scores = api.compare([[0.6, 0.4]], [[0.4, 0.6]], atol=1, decision="argmax")
    assert scores.verdict == "within_tolerance"
    assert scores.decision is not None and scores.decision.decisions_changed == 1
    with pytest.raises(OutputError):
        api.compare(np.array(["a"]), np.array(["a"]))
