"""`reprocheck run` as a user runs it: a subprocess in a project folder, on real images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import REPO_ROOT, toml_environments, write_project

pytestmark = pytest.mark.docker

PIPELINE_HEAD = """
[pipeline]
callable = "pipelines/p.py:run"

[fixtures]
path = "inputs"
"""
INPUTS = {"inputs/a.bin": "abc", "inputs/b.bin": "defg"}

SAME_EVERYWHERE = """
def run(path):
    with open(path, "rb") as handle:
        data = handle.read()
    return {"size": len(data), "checksum": sum(data)}
"""

# The Python minor version differs between bookworm (3.11) and trixie (3.13).
DEPENDS_ON_OS = """
import platform

def run(path):
    major, minor, _ = platform.python_version_tuple()
    return {"size": 3, "python": [int(major), int(minor)]}
"""


def reprocheck(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "reprocheck.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1800,  # a guard against a hang, not an assertion: cold builds are slow
    )


def _project(make_project, pipeline: str, *envs: str, extra: str = "") -> Path:
    source = make_project(PIPELINE_HEAD + extra + toml_environments(*envs),
                          {**INPUTS, "pipelines/p.py": pipeline})  # fmt: skip
    return source.parent


def _assert_one_line_error(proc: Any, *parts: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for part in parts:
        assert part in lines[0]
    return lines[0]


# --- the report -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def identical_run(docker_engine, debian_bases, tmp_path_factory) -> tuple[Path, Any, dict]:
    root = tmp_path_factory.mktemp("same") / "project"
    write_project(root, PIPELINE_HEAD + toml_environments("bookworm", "trixie"),
                  {**INPUTS, "pipelines/p.py": SAME_EVERYWHERE})  # fmt: skip
    proc = reprocheck(root, "run", "--json", "out.json")
    report = json.loads((root / "out.json").read_text()) if (root / "out.json").exists() else {}
    return root, proc, report


def test_identical_outputs_exit_0(identical_run) -> None:
    _root, proc, report = identical_run
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    verdicts = {(c["output"], c["candidate"]): c["verdict"] for c in report["comparisons"]}
    assert verdicts == {
        ("a.bin/checksum", "trixie"): "identical", ("a.bin/size", "trixie"): "identical",
        ("b.bin/checksum", "trixie"): "identical", ("b.bin/size", "trixie"): "identical",
    }  # fmt: skip


def test_json_report_schema(identical_run) -> None:
    _root, _proc, report = identical_run
    assert isinstance(report["schema_version"], int)
    assert [e["name"] for e in report["environments"]] == ["bookworm", "trixie"]
    for env in report["environments"]:
        assert {"name", "image", "image_id", "status", "outputs_dir", "fingerprint"} <= set(env)
        assert env["status"] == "ok"
        assert env["image"].endswith(f"images/debian-{env['name']}")
        assert env["image_id"].startswith("sha256:")
        outputs = Path(env["outputs_dir"])
        assert sorted(p.name for p in outputs.iterdir()) == ["a.bin.npz", "b.bin.npz"]
        fingerprint = env["fingerprint"]
        assert {"os", "glibc", "python", "packages"} <= set(fingerprint)
        assert env["name"] in fingerprint["os"]
        assert fingerprint["packages"]["python3-numpy"]
    by_name = {e["name"]: e["fingerprint"] for e in report["environments"]}
    assert (by_name["bookworm"]["glibc"], by_name["bookworm"]["python"]) == ("2.36", "3.11.2")
    assert (by_name["trixie"]["glibc"], by_name["trixie"]["python"]) == ("2.41", "3.13.5")
    for item in report["comparisons"]:
        assert {"output", "baseline", "candidate", "verdict"} <= set(item)
        assert item["baseline"] == "bookworm"


def test_latest_points_at_the_run(identical_run) -> None:
    root, _proc, report = identical_run
    latest = root / "reports" / "latest"
    assert latest.is_symlink()
    assert latest.resolve() == Path(report["run_dir"]).resolve()
    assert (latest / "run.json").is_file()
    assert json.loads((latest / "report.json").read_text())["run_id"] == report["run_id"]


def test_os_dependent_output_exits_1(docker_engine, debian_bases, make_project) -> None:
    root = _project(make_project, DEPENDS_ON_OS, "bookworm", "trixie")
    proc = reprocheck(root, "run", "--json", "out.json")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    report = json.loads((root / "out.json").read_text())
    verdicts = {c["output"]: c["verdict"] for c in report["comparisons"]}
    assert verdicts == {"a.bin/python": "drift", "a.bin/size": "identical",
                        "b.bin/python": "drift", "b.bin/size": "identical"}  # fmt: skip
    assert "Traceback" not in proc.stderr


def test_env_option_runs_only_the_named_environments(docker_engine, debian_bases, make_project):
    root = _project(make_project, DEPENDS_ON_OS, "bookworm", "trixie")
    proc = reprocheck(root, "run", "--env", "trixie", "--json", "out.json")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)  # nothing to compare against
    report = json.loads((root / "out.json").read_text())
    assert [e["name"] for e in report["environments"]] == ["trixie"]


# --- bad input: exit 2, one line, no traceback ------------------------------------------------


def test_unknown_config_key(make_project) -> None:
    root = _project(make_project, SAME_EVERYWHERE, "bookworm", extra="[run]\ntimout = 3\n")
    _assert_one_line_error(reprocheck(root, "run"), "unknown key 'run.timout'",
                           str(root / "reprocheck.toml"))  # fmt: skip


def test_invalid_memory_size(make_project) -> None:
    root = _project(make_project, SAME_EVERYWHERE, "bookworm", extra='[run]\nmemory = "lots"\n')
    _assert_one_line_error(reprocheck(root, "run"), "run.memory", "is not a size")


def test_missing_fixtures_folder(make_project) -> None:
    root = _project(make_project, SAME_EVERYWHERE, "bookworm")
    (root / "inputs").rename(root / "moved")
    _assert_one_line_error(reprocheck(root, "run"), "fixtures.path 'inputs'", "is not a folder")


def test_unknown_environment(make_project) -> None:
    root = _project(make_project, SAME_EVERYWHERE, "bookworm")
    _assert_one_line_error(reprocheck(root, "run", "--env", "sid"), "no environment named 'sid'")


def test_unreachable_docker_daemon(make_project) -> None:
    root = _project(make_project, SAME_EVERYWHERE, "bookworm")
    proc = reprocheck(root, "run", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    line = _assert_one_line_error(proc, "cannot reach a Docker Engine",
                                  "unix:///nonexistent.sock")  # fmt: skip
    assert "dockerd" in line  # says how to start one


@pytest.mark.parametrize(
    ("callable_", "files", "message"),
    [
        ("pipelines/missing.py:run", {}, "pipeline file pipelines/missing.py does not exist"),
        ("pipelines/p.py:nope", {"pipelines/p.py": "def run(p):\n    return {}\n"},
         "has no callable 'nope'"),
    ],
    ids=["file-missing", "function-missing"],
)  # fmt: skip
def test_missing_callable_is_each_environments_error(
    docker_engine, debian_bases, make_project, callable_, files, message
) -> None:
    """Decided: the callable is resolved inside the container (the host need not be able to
    import it), so a missing one is every environment's `error`, and the run exits 2."""
    source = make_project(
        PIPELINE_HEAD.replace("pipelines/p.py:run", callable_)
        + toml_environments("bookworm", "trixie"),
        {**INPUTS, **files},
    )
    proc = reprocheck(source.parent, "run", "--json", "out.json")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    report = json.loads((source.parent / "out.json").read_text())
    for env in report["environments"]:
        assert env["status"] == "error"
        assert message in env["error"]
        assert "\n" not in env["error"]  # the traceback's last line, not the whole traceback
    assert message in proc.stdout  # the summary says why


def test_image_whose_build_fails(docker_engine, debian_bases, make_project) -> None:
    """Decided: a failing build is that environment's error; the others still run, the run
    exits 2, and stderr has one line for it with the failing step and the log tail."""
    source = make_project(
        PIPELINE_HEAD + toml_environments("broken", "bookworm", image=_broken_or_debian),
        {**INPUTS, "pipelines/p.py": SAME_EVERYWHERE,
         "images/broken/Dockerfile": "FROM debian:bookworm\n"
                                     "RUN echo e2e-about-to-fail && exit 7\n"},
    )  # fmt: skip
    proc = reprocheck(source.parent, "run", "--json", "out.json")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    failures = [line for line in proc.stderr.splitlines() if "image failed" in line]
    assert len(failures) == 1, proc.stderr
    assert "RUN echo e2e-about-to-fail && exit 7" in failures[0]  # the failing step
    assert "returned a non-zero code: 7" in failures[0]
    assert "e2e-about-to-fail |" in failures[0]  # the build log's tail
    report = json.loads((source.parent / "out.json").read_text())
    statuses = {e["name"]: e["status"] for e in report["environments"]}
    assert statuses == {"broken": "error", "bookworm": "ok"}


def _broken_or_debian(name: str) -> str:
    return "images/broken" if name == "broken" else str(REPO_ROOT / "images" / f"debian-{name}")


# --- the example at the repo root -------------------------------------------------------------


def test_example_matrix_on_debian(docker_engine, debian_bases, tmp_path) -> None:
    out = tmp_path / "example.json"
    proc = reprocheck(
        tmp_path,
        "run", "--config", str(REPO_ROOT / "reprocheck.toml"),
        "--env", "bullseye", "--env", "bookworm", "--env", "trixie",
        "--out", str(tmp_path / "runs" / "example"), "--json", str(out), "-q",
    )  # fmt: skip
    assert proc.returncode == 1, (proc.stdout, proc.stderr)  # the example drifts by design
    report = json.loads(out.read_text())
    assert [(e["name"], e["status"]) for e in report["environments"]] == [
        ("bullseye", "ok"), ("bookworm", "ok"), ("trixie", "ok"),
    ]  # fmt: skip
    verdicts = {(c["output"], c["candidate"]): c["verdict"] for c in report["comparisons"]}
    for candidate in ("bookworm", "trixie"):
        assert verdicts[("truncated_progressive.jpg/decode/pixels", candidate)] == "drift"
        assert verdicts[("photo_baseline.jpg/decode/pixels", candidate)] == "identical"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["example"]  # only --out
