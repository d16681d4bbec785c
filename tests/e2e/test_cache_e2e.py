"""The result cache end to end: ``reprocheck run`` as a subprocess on real images, counting
the containers each run creates from the engine's own event stream (by the run's label)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import REPO_ROOT, toml_environments, write_project

pytestmark = pytest.mark.docker

CONFIG = """
[pipeline]
callable = "pipelines/p.py:run"

[fixtures]
path = "inputs"
"""
# One output the same everywhere, one that differs between bookworm and trixie (Python 3.11
# and 3.13): the report has both verdicts.
PIPELINE = """
import platform

def run(path):
    with open(path, "rb") as handle:
        data = handle.read()
    return {"checksum": sum(data), "python": [int(platform.python_version_tuple()[1])]}
"""


@dataclass(frozen=True)
class Run:
    proc: subprocess.CompletedProcess[str]
    containers: int  # created by this run, as the engine reports them
    seconds: float
    verdicts: dict[tuple[str, str], str]
    outputs: dict[str, Any]


def reprocheck(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "reprocheck.cli", *args], cwd=root,
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True,
                          text=True, timeout=1800, check=False)  # fmt: skip


def run(docker_client: Any, root: Path, name: str, *args: str) -> Run:
    started = time.time()
    # the same report file each time, in the project: a run leaves it out of the key
    proc = reprocheck(root, "run", "--out", f"reports/{name}", "--json", "report.json", *args)
    seconds = time.time() - started
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stdout + proc.stderr
    report = json.loads((root / "report.json").read_text())
    run_id = report["run_id"]  # unique per run, not the --out folder's name
    filters = {"type": "container", "event": "create", "label": f"io.reprocheck.run={run_id}"}
    events = docker_client.events(since=int(started) - 1, until=int(time.time()) + 1,
                                  filters=filters, decode=True)  # fmt: skip
    verdicts = {(c["output"], c["candidate"]): c["verdict"] for c in report["comparisons"]}
    outputs = {}
    for env in report["environments"]:
        for path in sorted(Path(env["outputs_dir"]).iterdir()):
            outputs[f"{env['name']}/{path.name}"] = path.read_bytes()
    return Run(proc, sum(1 for _ in events), seconds, verdicts, outputs)


@pytest.fixture(scope="module")
def project(docker_engine, debian_bases, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache") / "project"
    write_project(root, CONFIG + toml_environments("bookworm", "trixie"),
                  {"inputs/a.bin": "abc", "inputs/b.bin": "defg",
                   "pipelines/p.py": PIPELINE})  # fmt: skip
    return root


@pytest.fixture(scope="module")
def runs(docker_client, project: Path) -> dict[str, Run]:
    """The sequence once: a first run, the same again, --no-cache, a changed fixture."""
    done = {"first": run(docker_client, project, "first")}
    done["second"] = run(docker_client, project, "second")
    done["forced"] = run(docker_client, project, "forced", "--no-cache")
    time.sleep(0.01)
    (project / "inputs" / "b.bin").write_text("defh")  # same size, new content
    done["changed"] = run(docker_client, project, "changed")
    done["again"] = run(docker_client, project, "again")
    print({name: f"{r.seconds:.2f} s, {r.containers} containers" for name, r in done.items()})
    return done


EXPECTED = {
    ("a.bin/checksum", "trixie"): "identical",
    ("b.bin/checksum", "trixie"): "identical",
    ("a.bin/python", "trixie"): "drift",
    ("b.bin/python", "trixie"): "drift",
}


def test_first_run_runs_every_environment(runs: dict[str, Run]) -> None:
    first = runs["first"]
    assert first.containers == 2
    assert first.verdicts == EXPECTED
    assert "cached" not in first.proc.stderr


def test_second_run_starts_no_container_and_gives_the_same_report(runs: dict[str, Run]) -> None:
    second = runs["second"]
    assert second.containers == 0
    lines = [line for line in second.proc.stderr.splitlines() if "cached (key " in line]
    assert len(lines) == 2 and "bookworm" in lines[0] + lines[1], second.proc.stderr
    assert second.verdicts == runs["first"].verdicts
    assert second.outputs == runs["first"].outputs


def test_no_cache_runs_again(runs: dict[str, Run]) -> None:
    forced = runs["forced"]
    assert forced.containers == 2
    assert "cached (key " not in forced.proc.stderr
    assert forced.verdicts == EXPECTED


def test_a_changed_fixture_runs_again(runs: dict[str, Run]) -> None:
    changed, again = runs["changed"], runs["again"]
    assert changed.containers == 2
    assert changed.outputs != runs["first"].outputs  # b.bin's checksum moved
    assert changed.verdicts == EXPECTED
    assert again.containers == 0 and again.outputs == changed.outputs


def test_prune_all_empties_the_cache(runs: dict[str, Run], docker_client, project: Path) -> None:
    proc = reprocheck(project, "cache", "prune", "--all")
    assert proc.returncode == 0, proc.stderr
    assert "removed 4 cache entries" in proc.stdout  # both environments, before and after
    assert run(docker_client, project, "after-prune").containers == 2


HEAVY = ("numpy", "pyarrow", "pandas")  # what comparing needs and a repeated run does not


def _imported(stderr: str) -> set[str]:
    """Top-level packages named by ``python -X importtime``'s lines."""
    return {line.split("|")[-1].strip().split(".")[0] for line in stderr.splitlines()
            if line.startswith("import time:")}  # fmt: skip


def test_a_run_that_changed_nothing_repeats_the_earlier_one(
    docker_client, debian_bases, tmp_path
) -> None:
    """Without --out: the second run starts no container, compares nothing, imports none of
    numpy, pyarrow and pandas, and points at the first run (its reports and exit code)."""
    root = tmp_path / "project"
    write_project(root, CONFIG + toml_environments("bookworm", "trixie"),
                  {"inputs/a.bin": "abc", "pipelines/p.py": PIPELINE})  # fmt: skip
    first = reprocheck(root, "run")
    assert first.returncode == 1, first.stderr[-2000:]
    (run_id,) = [p.name for p in (root / "reports").iterdir() if p.name[0].isdigit()]
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    started = time.time()
    command = [sys.executable, "-X", "importtime", "-m", "reprocheck.cli", "run", "--json",
               "again.json"]  # fmt: skip
    second = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": path}, check=False)  # fmt: skip
    seconds = time.time() - started
    events = docker_client.events(since=int(started) - 1, until=int(time.time()) + 1,
                                  filters={"type": "container", "event": "create",
                                           "label": "io.reprocheck.run"}, decode=True)  # fmt: skip
    # the window is whole seconds and can reach back into the first run's creates (CI saw 2)
    created = [e for e in events if e["timeNano"] >= int(started * 1e9)
               and e["Actor"]["Attributes"].get("io.reprocheck.run") != run_id]  # fmt: skip
    print(f"repeated run: {seconds:.2f} s (with -X importtime)")
    assert second.returncode == 1, second.stderr[-3000:]
    assert f"nothing changed since run {run_id}" in second.stderr
    assert created == []
    assert _imported(second.stderr) & set(HEAVY) == set()
    assert "Traceback" not in second.stdout + second.stderr
    assert [p.name for p in (root / "reports").iterdir() if p.name[0].isdigit()] == [run_id]
    report = root / "reports" / run_id / "report.json"
    assert (root / "again.json").read_bytes() == report.read_bytes()
    (root / "inputs" / "a.bin").write_text("abd")  # a changed fixture: a run of its own
    third = reprocheck(root, "run")
    assert third.returncode == 1 and "nothing changed" not in third.stderr, third.stderr[-2000:]
    assert len([p for p in (root / "reports").iterdir() if p.name[0].isdigit()]) == 2


def test_fixtures_in_the_project_folder_itself(debian_bases, tmp_path) -> None:
    """[fixtures] path = "." mounts one folder at /project and at /fixtures: both are there
    (the engine's volumes were a dict by source folder, which kept only one)."""
    root = tmp_path / "project"
    config = CONFIG.replace('path = "inputs"', 'path = "."\ninclude = ["*.bin"]')
    write_project(root, config + toml_environments("bookworm"),
                  {"a.bin": "abc", "pipelines/p.py": PIPELINE})  # fmt: skip
    done = reprocheck(root, "run")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((root / "reports" / "latest" / "report.json").read_text())
    assert [e["status"] for e in report["environments"]] == ["ok"]
