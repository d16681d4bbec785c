"""examples/ci works when copied: its workflow's reprocheck steps, run in a project that has
only a reprocheck.toml, a pipeline and its images (reprocheck installed, as the workflow
installs it, and nothing else of this repository)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from support import IMAGES_DIR, REPO_ROOT

pytestmark = pytest.mark.docker

WORKFLOW = REPO_ROOT / "examples" / "ci" / "reprocheck-nightly.yml"
ENVS = ("bookworm", "trixie")
PIPELINE = """
import numpy as np

def run(path):
    x = np.linspace(0.0, 10.0, 4001, dtype=np.float32)
    return {"sin": np.sin(x), "accuracy": float(np.mean(np.sin(x) > 0))}
"""


def _project(root: Path) -> Path:
    (root / "fixtures").mkdir(parents=True)
    (root / "fixtures" / "one.txt").write_text("1")
    (root / "pipeline.py").write_text(PIPELINE)
    envs = ""
    for name in ENVS:
        shutil.copytree(IMAGES_DIR / f"debian-{name}", root / "images" / f"debian-{name}")
        envs += f'[[environments]]\nname = "{name}"\nimage = "images/debian-{name}"\n'
    (root / "reprocheck.toml").write_text(
        '[pipeline]\ncallable = "pipeline.py:run"\n[fixtures]\npath = "fixtures"\n' + envs
    )
    return root


def _steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return [s for s in workflow["jobs"][job]["steps"] if "run" in s]


def _shell(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A step's script as the runner runs it (bash -e), with reprocheck on PATH."""
    script = script.replace('sudo env "PATH=$PATH" ', "")  # these tests run as root already
    bin_dir = str(Path(sys.executable).parent)
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, text=True, capture_output=True,
                          env={**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                          timeout=900, check=False)  # fmt: skip


def _expand(script: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: values.get(m[1], m[0]), script)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def test_the_recipe_needs_nothing_of_this_repository(workflow) -> None:
    scripts = [s["run"] for job in workflow["jobs"] for s in _steps(workflow, job)]
    assert not any("scripts/" in s or "setup.sh" in s for s in scripts)
    installs = [s for s in scripts if "pip install" in s]
    assert installs and all('"$REPROCHECK"' in s for s in installs)  # pip, from the top


def test_the_recipe_runs_when_copied(workflow, docker_engine, debian_bases, tmp_path) -> None:
    project = _project(tmp_path / "project")
    for env in ENVS:  # the matrix jobs, one environment each
        for step in _steps(workflow, "run"):
            if "pip install" in step["run"]:
                continue  # reprocheck is installed here already
            done = _shell(_expand(step["run"], {"matrix.env": env}), project, {})
            assert done.returncode == 0, (step["name"], done.stdout, done.stderr)
        assert sorted(p.name for p in (project / "split").iterdir()) == sorted(
            ENVS[: ENVS.index(env) + 1]
        )  # run --out wrote only its own folder: no split/latest
    ids = []
    for night in range(2):  # the report job, two nights in a row
        output = tmp_path / f"github_output_{night}"
        for step in _steps(workflow, "report"):
            if "pip install" in step["run"] or "steps.merge" in step["run"]:
                continue
            github = {"GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(tmp_path / "s")}
            done = _shell(step["run"], project, github)
            assert done.returncode == 0, (step["name"], done.stdout, done.stderr)
        assert re.search(r"code=[01]\b", output.read_text()), output.read_text()
        report = json.loads((project / "report.json").read_text())
        assert [e["name"] for e in report["environments"]] == list(ENVS)
        for name in ("report.html", "report.md", "junit.xml"):
            assert (project / name).is_file(), name
        ids.append(report["run_id"])
    assert ids[0] != ids[1]  # each night's merge is its own run
    history = pd.read_parquet(project / "reports" / "history.parquet")
    assert set(history["run_id"]) == set(ids)  # the trend grows
