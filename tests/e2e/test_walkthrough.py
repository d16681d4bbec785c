"""The README's "Walkthrough: a pip-image project" works as written: every command of its
```sh blocks runs, in order, in a copy of examples/project (reprocheck on PATH, nothing else
of this repository), and exits 0 as the README says; each ```text block is (abridged) real
output of the command just before it; and the facts the walkthrough relies on hold in what
the commands wrote."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO_ROOT

pytestmark = pytest.mark.docker

README = REPO_ROOT / "README.md"
PROJECT = REPO_ROOT / "examples" / "project"
HEADING = "### Walkthrough: a pip-image project"
ENVS = ("numpy126", "numpy22")
# What the walkthrough writes into the project (also in examples/project/.gitignore): left
# out of the copy, should someone have followed it in the checkout itself.
GENERATED = ("reports", "baselines", "split", "merged", "report.*", "junit.xml", "trend.png",
             "__pycache__", ".pytest_cache")  # fmt: skip


@dataclass
class Block:
    lang: str
    lines: list[str]
    after: int  # how many commands come before it in the section


@dataclass
class Walkthrough:
    project: Path
    commands: list[str]
    done: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)  # command -> the run id it stored

    def output(self, command: str) -> str:
        index = self.commands.index(command)
        if index >= len(self.done):
            pytest.fail(f"{command!r} did not run: a command before it failed", pytrace=False)
        return self.done[index].stdout

    def report(self, command: str) -> dict[str, Any]:
        self.output(command)
        path = self.project / "reports" / self.runs[command] / "report.json"
        data: dict[str, Any] = json.loads(path.read_text())
        return data


def _blocks() -> list[Block]:
    """The fenced blocks of the walkthrough section (up to the next heading)."""
    lines = README.read_text().splitlines()
    start = lines.index(HEADING)
    blocks: list[Block] = []
    commands = 0
    fence: Block | None = None
    for line in lines[start + 1 :]:
        if fence is None and line.startswith("#"):
            break  # the next heading
        if fence is None and line.startswith("```"):
            fence = Block(line[3:].strip(), [], commands)
        elif fence is not None and line.startswith("```"):
            blocks.append(fence)
            commands += len(_commands(fence)) if fence.lang == "sh" else 0
            fence = None
        elif fence is not None:
            fence.lines.append(line)
    assert fence is None, "an unclosed ``` block in the walkthrough"
    return blocks


def _commands(block: Block) -> list[str]:
    """A sh block's commands: continuations joined, blank lines and comments left out."""
    text = "\n".join(block.lines).replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip


def _all_commands() -> list[str]:
    return [c for b in _blocks() if b.lang == "sh" for c in _commands(b)]


def _shell(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """One command as a user's shell runs it (bash -e), with this checkout's reprocheck (and
    pytest) on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": path}
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, text=True, capture_output=True,
                          env=env, timeout=900, check=False)  # fmt: skip


def _latest_run(project: Path) -> str:
    return (project / "reports" / "latest").resolve().name


def _cells(line: str) -> str:
    """A table line without its borders and padding: 'batch_1.csv/accuracy 68.75 % 68.75 %'."""
    return " ".join(re.sub(r"[│┃|]", " ", line).split())


@pytest.fixture(scope="module")
def walkthrough(docker_engine, debian_bases, tmp_path_factory) -> Walkthrough:
    project = tmp_path_factory.mktemp("walkthrough") / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns(*GENERATED))
    done = Walkthrough(project, _all_commands())
    for command in done.commands:
        before = _latest_run(project) if (project / "reports" / "latest").exists() else None
        result = _shell(command, project)
        done.done.append(result)
        if result.returncode != 0:
            break  # the test of exit codes says which, with its output
        if (project / "reports" / "latest").exists() and _latest_run(project) != before:
            done.runs[command] = _latest_run(project)
    return done


def test_the_walkthrough_shows_what_it_promises() -> None:
    commands = _all_commands()
    for expected in ("reprocheck images build", "reprocheck run", "reprocheck baseline save",
                     "reprocheck run --baseline", "pytest tests/", "reprocheck history",
                     "reprocheck merge split/*"):  # fmt: skip
        assert any(c.startswith(expected) for c in commands), expected
    for env in ENVS:
        assert f"reprocheck run --env {env} --out split/{env}" in commands
    config = tomllib.loads((PROJECT / "reprocheck.toml").read_text())
    assert [e["name"] for e in config["environments"]] == list(ENVS)
    assert config["metrics"]["*/accuracy"] == {"atol": 0.01, "unit": "%", "scale": 100}
    assert config["decisions"]["*/probabilities"] == "argmax"


def test_the_project_workflow_runs_the_walkthroughs_ci_commands() -> None:
    workflow = yaml.safe_load((PROJECT / ".github" / "workflows" / "reprocheck.yml").read_text())
    assert workflow["jobs"]["run"]["strategy"]["matrix"]["env"] == list(ENVS)
    scripts = [s["run"].replace("\\\n", " ") for job in workflow["jobs"].values()
               for s in job["steps"] if "run" in s]  # fmt: skip
    lines = {" ".join(shlex.split(line)) for s in scripts for line in s.splitlines()}
    for env in ENVS:
        expanded = {re.sub(r"\$\{\{\s*matrix\.env\s*\}\}", env, line) for line in lines}
        assert f"reprocheck run --env {env} --out split/{env}" in expanded
    merge = next(c for c in _all_commands() if c.startswith("reprocheck merge"))
    assert " ".join(shlex.split(merge)) in lines


def test_every_command_exits_0(walkthrough) -> None:
    for command, done in zip(walkthrough.commands, walkthrough.done, strict=False):
        assert done.returncode == 0, (command, done.returncode, done.stdout, done.stderr)
    assert len(walkthrough.done) == len(walkthrough.commands)


def test_the_shown_output_is_real(walkthrough) -> None:
    shown = [b for b in _blocks() if b.lang == "text"]
    assert shown
    for block in shown:
        command = walkthrough.commands[block.after - 1]  # the last command before the block
        printed = {_cells(line) for line in walkthrough.output(command).splitlines()}
        for line in filter(str.strip, block.lines):
            assert _cells(line) in printed, (command, line, walkthrough.output(command))


def test_the_run_reports_the_accuracy_per_environment(walkthrough) -> None:
    report = walkthrough.report("reprocheck run")
    assert [e["name"] for e in report["environments"]] == list(ENVS)
    metrics = {m["output"]: m for m in report["metrics"]}
    assert sorted(metrics) == [f"batch_{n}.csv/accuracy" for n in (1, 2, 3)]
    for entry in metrics.values():
        assert sorted(entry["values"]) == sorted(ENVS)
        assert all(0.0 <= v <= 1.0 for v in entry["values"].values())
        assert (entry["unit"], entry["scale"], entry["atol"]) == ("%", 100.0, 0.01)
    # "no top class changes"
    assert all(d["changed"] == 0 for d in report["decisions"])
    assert report["summary"].keys() <= {"identical", "within_tolerance"}


def test_the_baseline_is_listed_and_compared(walkthrough) -> None:
    first = walkthrough.runs["reprocheck run"]
    listed = walkthrough.output("reprocheck baseline list")
    assert re.search(rf"^nightly\s+run {first}\b", listed, re.M), listed
    report = walkthrough.report("reprocheck run --baseline nightly")
    assert sorted(r["name"] for r in report["references"]) == [f"nightly/{e}" for e in ENVS]
    history = walkthrough.output("reprocheck history")
    for run_id in walkthrough.runs.values():
        assert run_id in history


def test_the_plugin_passes(walkthrough) -> None:
    assert re.search(r"\b3 passed\b", walkthrough.output("pytest tests/"))


def test_the_merged_report_is_the_runs(walkthrough) -> None:
    merged = json.loads((walkthrough.project / "report.json").read_text())
    assert [e["name"] for e in merged["environments"]] == list(ENVS)
    run = walkthrough.report("reprocheck run")
    assert merged["metrics"] == run["metrics"]
    assert merged["summary"] == run["summary"]
    for name in ("report.html", "report.md", "junit.xml"):
        assert (walkthrough.project / name).is_file(), name


def _tightened(walkthrough: Walkthrough, edits: dict[str, tuple[str, str]]) -> int:
    """pytest on the walkthrough's first run again (no containers), with the project's files
    edited (path -> (old, new)) for the time being; its exit code."""
    project = walkthrough.project
    saved = {project / rel: (project / rel).read_text() for rel in edits}
    try:
        for (path, text), (old, new) in zip(saved.items(), edits.values(), strict=True):
            assert old in text, (path, old)
            path.write_text(text.replace(old, new))
        run = walkthrough.runs["reprocheck run"]
        return _shell(f"pytest tests/ -q --reprocheck-run {run}", project).returncode
    finally:
        for path, text in saved.items():
            path.write_text(text)


def test_exact_tolerances_fail_only_where_values_differ(walkthrough) -> None:
    """With atol = 0 the plugin fails exactly when the values it checks really differ."""
    report = walkthrough.report("reprocheck run")
    accuracy_differs = any(len(set(m["values"].values())) > 1 for m in report["metrics"])
    # The test takes the [metrics] tolerance: tightening the config tightens the test.
    code = _tightened(walkthrough, {
        "reprocheck.toml": ('"*/accuracy" = { atol = 0.01,', '"*/accuracy" = { atol = 0,'),
    })  # fmt: skip
    assert code == (1 if accuracy_differs else 0), (accuracy_differs, code)
    probabilities_differ = any(c["verdict"] != "identical" for c in report["comparisons"]
                               if c["output"].endswith("/probabilities"))  # fmt: skip
    code = _tightened(walkthrough, {"reprocheck.toml": ("{ atol = 1e-5 }", "{ atol = 0 }")})
    assert code == (1 if probabilities_differ else 0), (probabilities_differ, code)
