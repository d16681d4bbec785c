"""The pytest plugin as a project uses it: generated test files run by pytester, against a
stored run built without containers (tests/unit/runs.py), goldens per environment, and one
real matrix run once per session on the Debian images."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from support import REPO_ROOT, toml_environments
from unit.runs import stored_env, stored_run

from reprocheck.config import load_config
from reprocheck.store import save_run
from reprocheck.stored import save_baseline

pytest_plugins = ["pytester"]


def _autoloaded() -> bool:
    """Whether pytest loads the plugin by itself (the package installed with its entry point)."""
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.value == "reprocheck.pytest_plugin"
               for ep in importlib.metadata.entry_points(group="pytest11"))  # fmt: skip


# An install without the entry point (a checkout on PYTHONPATH) names the plugin explicitly.
PLUGIN = () if _autoloaded() else ("-p", "reprocheck.pytest_plugin")

CONFIG = """
[pipeline]
callable = "p.py:run"

[tolerance]
"*/logits" = { atol = 1e-3 }

[decisions]
"*/scores" = "argmax"
""" + "".join(f'\n[[environments]]\nname = "{n}"\nimage = "debian:{n}"\n'
              for n in ("bullseye", "bookworm", "trixie"))  # fmt: skip


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert found.get("reprocheck") == "reprocheck.pytest_plugin", (
        "reinstall the package ('pip install -e .') to register the entry point"
    )


def test_options_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*PLUGIN, "--help")
    for option in ("--reprocheck-config", "--reprocheck-run", "--reprocheck-baseline",
                   "--reprocheck-env", "--force-regen"):  # fmt: skip
        result.stdout.fnmatch_lines([f"*{option}*"])


# --- the session report from a stored run ---------------------------------------------------


def _outputs(accuracy: float, scores: list[float]) -> dict[str, dict[str, np.ndarray]]:
    return {
        "a.png": {"accuracy": np.float64(accuracy), "scores": np.array(scores)},
        "b.png": {"accuracy": np.float64(accuracy), "scores": np.array([0.1, 0.9])},
    }


def _stored_run(project: Path, run_id: str, outputs: dict[str, dict]) -> Path:
    config = load_config(project / "reprocheck.toml")
    run_dir = config.reports_dir / run_id
    envs = tuple(stored_env(run_dir, name, arrays) for name, arrays in outputs.items())
    save_run(dataclasses.replace(stored_run(run_dir, envs), config_source=config.source))
    return run_dir


DRIFTING = {
    "bullseye": _outputs(0.9, [0.7, 0.3]),
    "bookworm": _outputs(0.9, [0.7, 0.3]),
    "trixie": _outputs(0.9004, [0.3, 0.7]),  # accuracy moved, a's class changed
}

USES_THE_REPORT = """
from reprocheck.pytest_plugin import (
    assert_consistent,
    assert_metric_within,
    assert_no_decision_changes,
)

SEEN = []


def test_accuracy_within_a_tenth_of_a_percent(reprocheck_report):
    SEEN.append(reprocheck_report)
    assert_metric_within(reprocheck_report, "*/accuracy", atol=0.001)


def test_accuracy_exact(reprocheck_report):
    SEEN.append(reprocheck_report)
    assert_metric_within(reprocheck_report, "*/accuracy")


def test_consistent(reprocheck_report):
    assert_consistent(reprocheck_report)


def test_no_decision_changes(reprocheck_report):
    assert_no_decision_changes(reprocheck_report)


def test_the_report_answers(reprocheck_report):
    SEEN.append(reprocheck_report)
    assert SEEN[0] is SEEN[1] is SEEN[2]  # one report per session
    assert reprocheck_report.run_id == "run-1"
    assert reprocheck_report.verdict == "drift"
    assert reprocheck_report.drifted() == ["a.png/accuracy", "a.png/scores", "b.png/accuracy"]
    assert reprocheck_report.decisions_changed() == 1
    assert reprocheck_report.metric("b.png/accuracy")["trixie"] == 0.9004
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    pytester.makefile(".toml", reprocheck=CONFIG)
    return pytester.path


def test_report_fixture_and_helpers_on_a_stored_run(
    pytester: pytest.Pytester, project: Path
) -> None:
    _stored_run(project, "run-1", DRIFTING)
    pytester.makepyfile(test_model=USES_THE_REPORT)
    result = pytester.runpytest(*PLUGIN, "--reprocheck-run", "run-1")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines([
        "*_ test_accuracy_exact _*",
        "*reprocheck: 2 metric value(s) of '*/accuracy' outside atol=0 rtol=0 (exact: no "
        "[[]metrics] tolerance) in run run-1",
        "*  a.png/accuracy bullseye -> trixie: 0.9 -> 0.9004 (|diff| 0.0004 > 0)",
        "*  b.png/accuracy bullseye -> trixie: 0.9 -> 0.9004 (|diff| 0.0004 > 0)",
        "*test_consistent*",
        "*reprocheck: run run-1: drift (5 identical, 3 drift)",
        "*  a.png/scores bullseye -> trixie: drift (2 of 2 elements differ, max |diff| 0.4, *"
        "1 of 1 argmax decisions changed, rule default)",
        "*  a.png/accuracy bullseye -> trixie: drift (1 of 1 elements differ, *",
        "*test_no_decision_changes*",
        "*reprocheck: 1 decision(s) changed in 1 comparison(s) of run run-1",
        "*  a.png/scores bullseye -> trixie: 1 of 1 argmax decisions changed*",
    ])  # fmt: skip
    result.stdout.fnmatch_lines(
        [f"reprocheck: run run-1: drift (5 identical, 3 drift): {project}/reports/run-1"]
    )  # terminal summary
    assert "Traceback" not in result.stdout.str()


def test_the_stored_run_against_a_baseline(pytester: pytest.Pytester, project: Path) -> None:
    golden = _stored_run(project, "old", DRIFTING)
    save_baseline(load_config(project / "reprocheck.toml"), golden, "golden")
    same = {name: _outputs(0.9, [0.7, 0.3]) for name in DRIFTING}
    _stored_run(project, "new", same)
    pytester.makepyfile(test_baseline="""
        def test_against_the_baseline(reprocheck_report):
            assert reprocheck_report.run_id == "new"
            assert ("golden/trixie", "trixie") in reprocheck_report.pairs
            assert reprocheck_report.drifted() == ["a.png/accuracy", "a.png/scores",
                                                   "b.png/accuracy"]
            assert reprocheck_report.drifted(candidate="bookworm") == []
    """)  # fmt: skip
    result = pytester.runpytest(*PLUGIN, "--reprocheck-run", "new",
                                "--reprocheck-baseline", "golden")  # fmt: skip
    result.assert_outcomes(passed=1)


def test_a_configuration_problem_is_one_line_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_none="""
        def test_one(reprocheck_report):
            pass

        def test_two(reprocheck_report):
            pass
    """)  # fmt: skip
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        "*_ ERROR at setup of test_one _*",
        "reprocheck: no reprocheck.toml (or [[]tool.reprocheck] in pyproject.toml) in * or its "
        "parents (pass --reprocheck-config PATH or set the ini option reprocheck_config)",
        "*_ ERROR at setup of test_two _*",
        "reprocheck: no reprocheck.toml *",
    ])  # fmt: skip
    assert "Traceback" not in result.stdout.str()
    assert "During handling" not in result.stdout.str()


def test_config_option_and_latest_run(pytester: pytest.Pytester) -> None:
    elsewhere = pytester.mkdir("elsewhere")
    (elsewhere / "reprocheck.toml").write_text(CONFIG)
    _stored_run(elsewhere, "run-1", DRIFTING)
    pytester.makepyfile(test_cfg="""
        def test_latest(reprocheck_report):
            assert reprocheck_report.run_id == "run-1"
    """)  # fmt: skip
    result = pytester.runpytest(*PLUGIN, "--reprocheck-config", "elsewhere/reprocheck.toml",
                                "--reprocheck-run", "latest")  # fmt: skip
    result.assert_outcomes(passed=1)


def test_a_run_folder_without_its_project(pytester: pytest.Pytester, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "reprocheck.toml").write_text(CONFIG)
    _stored_run(project, "run-1", DRIFTING)
    compared = subprocess.run([sys.executable, "-m", "reprocheck.cli", "compare", "--run", "run-1"],
                              cwd=project, capture_output=True, text=True, check=False)  # fmt: skip
    assert compared.returncode == 1, compared.stderr  # drift; report.json written
    artifact = shutil.copytree(project / "reports" / "run-1", pytester.path / "artifact")
    shutil.rmtree(project)
    pytester.makepyfile(test_artifact="""
        def test_read_as_stored(reprocheck_report):
            assert reprocheck_report.run_id == "run-1"
            assert reprocheck_report.drifted() == ["a.png/accuracy", "a.png/scores",
                                                   "b.png/accuracy"]
            assert reprocheck_report.metric("a.png/accuracy")["trixie"] == 0.9004
    """)  # fmt: skip
    result = pytester.runpytest(*PLUGIN, "--reprocheck-run", str(artifact))
    result.assert_outcomes(passed=1)


# --- goldens per environment ----------------------------------------------------------------

REGRESSION = """
import numpy as np

VALUES = {values}


def test_arrays(reprocheck_regression):
    reprocheck_regression.check({{k: np.array(v, dtype=np.float32) for k, v in VALUES.items()}})
"""


def _regression_test(pytester: pytest.Pytester, **values: list[float]) -> None:
    pytester.makepyfile(test_regress=REGRESSION.format(values=values))


def _golden(pytester: pytest.Pytester, env: str = "host") -> Path:
    return pytester.path / "test_regress" / env / "test_arrays.npz"


def test_a_missing_golden_is_written_and_fails_once(pytester: pytest.Pytester) -> None:
    _regression_test(pytester, logits=[1.0, 2.0, 3.0])
    first = pytester.runpytest(*PLUGIN)
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines([
        "*reprocheck regression: no golden for environment 'host': "
        f"created {_golden(pytester)} (1 arrays); run again to compare"
    ])  # fmt: skip
    with np.load(_golden(pytester)) as golden:
        np.testing.assert_array_equal(golden["logits"], np.float32([1, 2, 3]))
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1)


def test_drift_is_reported_in_reprochecks_terms_and_force_regen_rewrites(
    pytester: pytest.Pytester,
) -> None:
    _regression_test(pytester, edges=[1.0, 2.0, 3.0], other=[0.0])
    pytester.runpytest(*PLUGIN)
    moved = float(np.nextafter(np.float32(2.0), np.float32(3.0)))
    _regression_test(pytester, edges=[1.0, moved, 3.0], other=[0.0])
    drift = pytester.runpytest(*PLUGIN)
    drift.assert_outcomes(failed=1)
    drift.stdout.fnmatch_lines([
        "*reprocheck regression: 1 of 2 arrays differ from the golden of environment 'host' "
        f"({_golden(pytester)}; --force-regen rewrites it)",
        "*  test_arrays/edges golden[[]host] -> new: drift (1 of 3 elements differ, max |diff| "
        "2.38419e-07, max 1 ULP, worst at (1,), rule default)",
    ])  # fmt: skip
    regen = pytester.runpytest(*PLUGIN, "--force-regen")
    regen.assert_outcomes(failed=1)
    regen.stdout.fnmatch_lines(["*1 of 2 arrays differ * and --force-regen is set: rewrote "
                                f"{_golden(pytester)}"])  # fmt: skip
    regen.stdout.fnmatch_lines([f"reprocheck: wrote golden {_golden(pytester)}"])
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1)
    pytester.runpytest(*PLUGIN, "--force-regen").assert_outcomes(passed=1)  # nothing differs


def test_goldens_per_environment(pytester: pytest.Pytester, monkeypatch) -> None:
    _regression_test(pytester, logits=[1.0, 2.0, 3.0])
    pytester.runpytest(*PLUGIN)
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1)
    _regression_test(pytester, logits=[1.0, 2.0, 4.0])
    trixie = pytester.runpytest(*PLUGIN, "--reprocheck-env", "trixie")
    trixie.assert_outcomes(failed=1)
    trixie.stdout.fnmatch_lines([
        "*no golden for environment 'trixie': created *trixie/test_arrays.npz (1 arrays)*",
        "*  against host's golden: drift",
        "*    test_arrays/logits golden[[]trixie] -> new: drift (1 of 3 elements differ, max "
        "|diff| 1, *",
    ])  # fmt: skip
    assert _golden(pytester, "trixie").is_file()
    pytester.runpytest(*PLUGIN, "--reprocheck-env", "trixie").assert_outcomes(passed=1)
    pytester.runpytest(*PLUGIN).assert_outcomes(failed=1)  # host's golden still says 3.0
    monkeypatch.setenv("REPROCHECK_ENV", "trixie")
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1)
    bad = pytester.runpytest(*PLUGIN, "--reprocheck-env", "../up")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--reprocheck-env '../up': an environment name is letters, *"])
    monkeypatch.setenv("REPROCHECK_ENV", "a/b")
    bad = pytester.runpytest(*PLUGIN)
    bad.assert_outcomes(errors=1)
    bad.stdout.fnmatch_lines(["reprocheck: $REPROCHECK_ENV is 'a/b': an environment name *"])


def test_tolerances_decisions_keys_and_dtypes(pytester: pytest.Pytester, monkeypatch) -> None:
    pytester.makefile(".toml", reprocheck=CONFIG)  # "*/logits" atol 1e-3, "*/scores" argmax
    pytester.makepyfile(test_tol="""
        import os

        import numpy as np
        import pytest

        from reprocheck.compare import Tolerance

        MOVED = bool(os.environ.get("MOVED"))

        @pytest.fixture
        def arrays():
            shift = np.float32(1e-4) if MOVED else np.float32(0)
            return {"logits": np.float32([1.0, 2.0]) + shift,
                    "scores": np.float32([0.5, 0.5]) + np.float32([-shift, shift])}

        def test_config_rules(reprocheck_regression, arrays):
            reprocheck_regression.check(arrays, basename="config_rules")

        def test_exact_for_this_key(reprocheck_regression, arrays):
            reprocheck_regression.check(arrays, basename="exact",
                                        tolerances={"logits": {"atol": 0}, "scores": {"atol": 1}})

        def test_default(reprocheck_regression, arrays):
            reprocheck_regression.check(arrays, basename="default",
                                        default_tolerance=Tolerance(atol=1e-3))

        def test_keys_and_dtypes(reprocheck_regression, arrays):
            if MOVED:
                arrays = {"logits": arrays["logits"].astype(np.float64), "extra": np.zeros(1)}
            reprocheck_regression.check(arrays, basename="keys")

        def test_not_numbers(reprocheck_regression):
            with pytest.raises(TypeError, match="'names'"):
                reprocheck_regression.check({"names": np.array(["a", "b"])})
    """)  # fmt: skip
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1, failed=4)  # goldens written
    monkeypatch.setenv("MOVED", "1")
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(passed=2, failed=3)
    out = result.stdout.str()
    # config_rules: logits within atol 1e-3; the scores' argmax flips: drift (exact default)
    result.stdout.fnmatch_lines([
        "*reprocheck regression: 1 of 2 arrays differ*config_rules.npz*",
        "*  config_rules/scores golden[[]host] -> new: drift (2 of 2 elements differ, *"
        "1 of 1 argmax decisions changed, rule default)",
        "*reprocheck regression: 1 of 2 arrays differ*exact.npz*",
        "*  exact/logits golden[[]host] -> new: drift (2 of 2 elements differ, *rule logits)",
        "*reprocheck regression: 3 of 3 arrays differ*keys.npz*",
        "*  keys/extra: missing (not in the golden)",
        "*  keys/logits golden[[]host] -> new: incomparable (float32[[]2] vs float64[[]2], rule "
        "*/logits)",
        "*  keys/scores: missing (not in the new arrays)",
    ])  # fmt: skip
    assert "config_rules/logits" not in out
    assert "default.npz" not in out


# --- a real matrix, run once per session ----------------------------------------------------

PIPELINE = """
import platform

def run(path):
    with open(path, "rb") as handle:
        data = handle.read()
    return {"checksum": sum(data), "accuracy": len(data) / 10,
            "python_minor": int(platform.python_version_tuple()[1])}
"""

ON_THE_MATRIX = """
from reprocheck.pytest_plugin import assert_consistent, assert_metric_within


def test_accuracy_is_the_same_everywhere(reprocheck_report):
    assert_metric_within(reprocheck_report, "*/accuracy")


def test_consistent(reprocheck_report):
    assert_consistent(reprocheck_report)


def test_one_report(reprocheck_report):
    assert reprocheck_report.environments == ["bookworm", "trixie"]
    assert reprocheck_report.metric("a.bin/python_minor") == {"bookworm": 11, "trixie": 13}
"""


@pytest.mark.docker
def test_the_matrix_runs_once_per_session(
    pytester: pytest.Pytester, docker_engine, debian_bases, monkeypatch
) -> None:
    pytester.makefile(".toml", reprocheck="""
        [pipeline]
        callable = "pipelines/p.py:run"

        [fixtures]
        path = "inputs"
    """ + toml_environments("bookworm", "trixie"))  # fmt: skip
    (pytester.path / "pipelines").mkdir()
    (pytester.path / "pipelines" / "p.py").write_text(textwrap.dedent(PIPELINE))
    (pytester.path / "inputs").mkdir()
    (pytester.path / "inputs" / "a.bin").write_text("abc")
    pytester.makepyfile(test_matrix=ON_THE_MATRIX)
    pytester.path.chmod(0o755)  # the containers' user enters the project
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)  # this checkout, not another install
    result = pytester.runpytest_subprocess(*PLUGIN, "-p", "no:cacheprovider", timeout=1800)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*reprocheck: run *: drift (2 identical, 1 drift)",
        "*  a.bin/python_minor bookworm -> trixie: drift (1 of 1 elements differ, max |diff| 2, "
        "*rule default)",
        "*  report: */reports/*/report.html",
        "reprocheck: run *: drift (2 identical, 1 drift): */report.html",
    ])  # fmt: skip
    reports = pytester.path / "reports"
    runs = [p for p in reports.iterdir() if (p / "run.json").is_file() and not p.is_symlink()]
    assert len(runs) == 1  # three tests, one run
    assert (reports / "latest").resolve() == runs[0]
