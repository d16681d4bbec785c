"""examples/ci/reprocheck-nightly.yml: valid YAML, the example's environments, and only
options the reprocheck commands it calls actually have."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest

from reprocheck.cli import main

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "examples" / "ci" / "reprocheck-nightly.yml"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")  # PyYAML is not a dependency: skip without it
    data: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def _commands(workflow: dict[str, Any]) -> list[list[str]]:
    """Every `reprocheck ...` command line in the jobs' run steps (continuations joined)."""
    found = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            script = step.get("run", "").replace("\\\n", " ")
            for line in script.splitlines():
                words = shlex.split(line)
                if "reprocheck" in words:
                    found.append(words[words.index("reprocheck") + 1 :])
    return found


def _option_names(args: list[str]) -> set[str]:
    command: click.Command = main
    for word in args:
        if not isinstance(command, click.Group) or word.startswith("-"):
            break
        command = command.commands[word]
    known = {name for param in command.params for name in getattr(param, "opts", [])}
    used = {word.partition("=")[0] for word in args if word.startswith("-")}
    return used - known


def test_triggers_nightly_and_by_hand(workflow) -> None:
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    assert re.fullmatch(r"\S+ \S+ \* \* \*", triggers["schedule"][0]["cron"])


def test_matrix_is_the_examples_environments(workflow) -> None:
    config = tomllib.loads((REPO / "reprocheck.toml").read_text())
    names = [env["name"] for env in config["environments"]]
    assert workflow["jobs"]["run"]["strategy"]["matrix"]["env"] == names
    assert workflow["jobs"]["run"]["strategy"]["fail-fast"] is False


def test_each_job_runs_one_environment_and_the_report_merges(workflow) -> None:
    commands = _commands(workflow)
    runs = [c for c in commands if c[0] == "run"]
    assert runs == [["run", "--env", "${{ matrix.env }}", "--out", "split/${{ matrix.env }}"]]
    merge = next(c for c in commands if c[0] == "merge")
    assert "split/*" in merge and {"--md", "--html", "--junit"} <= set(merge)
    report = workflow["jobs"]["report"]
    assert report["needs"] == "run"
    scripts = " ".join(step.get("run", "") for step in report["steps"])
    assert 'report.md >> "$GITHUB_STEP_SUMMARY"' in scripts
    assert any(step.get("uses", "").startswith("actions/upload-artifact")
               and "report.html" in step["with"]["path"] for step in report["steps"])  # fmt: skip


def test_commands_use_only_existing_options(workflow) -> None:
    commands = _commands(workflow)
    assert len(commands) >= 4
    for args in commands:
        assert _option_names(args) == set(), args
