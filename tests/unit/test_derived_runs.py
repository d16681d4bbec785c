"""compare with another config writes a derived run: the stored run's reports and history
rows stay as they were."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from runs import stored_env, stored_run

from reprocheck import cli
from reprocheck.config import RunConfig, load_config
from reprocheck.history import history_file, load_history
from reprocheck.store import save_run

CONFIG = (
    '[pipeline]\ncallable = "p.py:run"\n'
    '[[environments]]\nname = "a"\nimage = "i"\n[[environments]]\nname = "b"\nimage = "j"\n'
)


def _drifting_run(make_project) -> tuple[Path, Path, RunConfig, Path]:
    """A stored run "run-1" of config ``source`` whose two environments differ by 0.25, and
    a second config ``loose`` that tolerates that."""
    source = make_project(CONFIG)
    loose = make_project(CONFIG + "[tolerance.default]\natol = 0.5\n", name="loose.toml")
    config = load_config(source)
    run_dir = config.reports_dir / "run-1"
    a = stored_env(run_dir, "a", {"x": {"v": np.zeros(3)}})
    b = stored_env(run_dir, "b", {"x": {"v": np.full(3, 0.25)}})
    save_run(dataclasses.replace(stored_run(run_dir, (a, b)), config_source=source))
    return source, loose, config, run_dir


def test_compare_with_another_config_never_rewrites_the_run(make_project) -> None:
    source, loose, config, run_dir = _drifting_run(make_project)
    runner = CliRunner()
    first = runner.invoke(cli.main, ["compare", "--run", "run-1", "--config", str(source)])
    assert first.exit_code == 1, first.output  # drift under the exact default
    own = (run_dir / "report.json").read_bytes()
    second = runner.invoke(cli.main, ["compare", "--run", "run-1", "--config", str(loose)])
    assert second.exit_code == 0, second.output  # within the loose tolerance
    assert (run_dir / "report.json").read_bytes() == own  # the stored run's report: untouched
    derived = json.loads((run_dir / "derived" / "loose.toml" / "report.json").read_text())
    assert derived["run_id"] == "run-1@loose.toml"
    assert derived["summary"] == {"within_tolerance": 1}
    history = load_history(history_file(config))
    assert set(history["run_id"]) == {"run-1", "run-1@loose.toml"}
    assert set(history[history["run_id"] == "run-1"]["verdict"]) == {"drift"}


def test_explain_with_another_config_writes_to_the_derived_run(make_project, monkeypatch) -> None:
    from fakes import FakeEngine

    source, loose, _config, run_dir = _drifting_run(make_project)
    runner = CliRunner()
    assert (
        runner.invoke(cli.main, ["compare", "--run", "run-1", "--config", str(source)]).exit_code
        == 1
    )
    own = (run_dir / "report.json").read_bytes()
    monkeypatch.setattr(cli, "get_engine", lambda _name: FakeEngine())
    done = runner.invoke(cli.main, ["explain", "--run", "run-1", "--config", str(loose)])
    assert done.exit_code == 0, done.output
    assert (run_dir / "report.json").read_bytes() == own
    assert not (run_dir / "explain.json").exists()
    derived = run_dir / "derived" / "loose.toml"
    assert json.loads((derived / "explain.json").read_text())["run_id"] == "run-1@loose.toml"
    report = json.loads((derived / "report.json").read_text())  # written first, then attached
    assert report["summary"] == {"within_tolerance": 1}
    assert report["attributions"] == []
