"""A compose service as an environment, end to end on the real engine: ``reprocheck run`` as
a subprocess builds the service FROM debian:bookworm with a build arg taken from this
process's environment (compose interpolation), runs a callable pipeline with the service's
``environment`` under the environment's own ``env``, and a changed build arg builds again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import IMAGES_DIR, REPO_ROOT, write_project

pytestmark = pytest.mark.docker

COMPOSE = """
services:
  infer:
    build:
      context: ./image
      args:
        MODEL_SCALE: "${REPROCHECK_E2E_SCALE:-1}"
    environment:
      PIPELINE_OFFSET: "10"
      FROM_COMPOSE: "yes"
    command: ["ignored", "reprocheck runs the container itself"]
"""
CONFIG = """
[pipeline]
callable = "pipeline.py:run"

[fixtures]
path = "inputs"

[[environments]]
name = "composed"
image = "compose:docker-compose.yml#infer"

[[environments]]
name = "overridden"
image = "compose:docker-compose.yml#infer"
env = { PIPELINE_OFFSET = "20" }
"""
# The build arg lands in a file of the image; the environment variables are read at run time.
EXTRA_STEPS = 'ARG MODEL_SCALE=0\nRUN echo "$MODEL_SCALE" > /opt/model-scale\n'
PIPELINE = """
import os

def run(path):
    with open("/opt/model-scale") as handle:
        scale = float(handle.read())
    offset = float(os.environ["PIPELINE_OFFSET"])
    return {"scale": scale, "offset": offset,
            "from_compose": float(os.environ.get("FROM_COMPOSE") == "yes")}
"""


def reprocheck(root: Path, *args: str, scale: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "REPROCHECK_E2E_SCALE": scale}
    return subprocess.run([sys.executable, "-m", "reprocheck.cli", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)  # fmt: skip


@pytest.fixture
def project(docker_engine: Any, debian_bases: Any, docker_client: Any, tmp_path: Path) -> Any:
    """The project; the images its runs build are removed afterwards (by their tags)."""
    # The repo's bookworm steps first, so their layers come from the build cache.
    dockerfile = (IMAGES_DIR / "debian-bookworm" / "Dockerfile").read_text() + EXTRA_STEPS
    root = tmp_path / "project"
    write_project(root, CONFIG, {"docker-compose.yml": COMPOSE, "image/Dockerfile": dockerfile,
                                 "inputs/a.bin": "abc", "pipeline.py": PIPELINE})  # fmt: skip
    yield root
    for tag in _built_for(docker_client, root):
        docker_client.images.remove(tag, force=True)


def _built_for(docker_client: Any, root: Path) -> set[str]:
    """The tags of the images built for this project's compose service."""
    label = f"io.reprocheck.compose=compose:{root / 'docker-compose.yml'}#infer"
    return {t for i in docker_client.images.list(filters={"label": label}) for t in i.tags}


def _metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    from reprocheck.api import Report

    return Report.read(run_dir).metrics()


def test_compose_service_build_arg_and_environment(project: Path, docker_client: Any) -> None:
    first = reprocheck(project, "run", "--out", "reports/first", scale="3")
    # offset 10 (compose) against 20 (the environment's own env): drift, exit 1
    assert first.returncode == 1, (first.stdout[-3000:], first.stderr[-3000:])
    assert "Traceback" not in first.stdout + first.stderr
    metrics = _metrics(project / "reports/first")
    assert metrics["a.bin/scale"] == {"composed": 3.0, "overridden": 3.0}  # the build arg
    assert metrics["a.bin/offset"] == {"composed": 10.0, "overridden": 20.0}  # env wins
    assert metrics["a.bin/from_compose"] == {"composed": 1.0, "overridden": 1.0}

    tags = _built_for(docker_client, project)
    assert len(tags) == 1, tags  # both environments use the one image built for the service
    (tag,) = tags
    labels = docker_client.images.get(tag).labels
    assert labels["io.reprocheck.compose"] == f"compose:{project / 'docker-compose.yml'}#infer"
    assert labels["io.reprocheck.dockerfile"] == str(project / "image" / "Dockerfile")
    assert tag == f"reprocheck/infer:{labels['io.reprocheck.context-sha256'][:12]}"

    listed = reprocheck(project, "images", "list", scale="3")
    assert listed.returncode == 0, listed.stderr
    assert "reprocheck/infer" in listed.stdout

    # Another value of the build arg is another image (a new tag); the arg takes effect.
    second = reprocheck(project, "run", "--out", "reports/second", scale="4")
    assert second.returncode == 1, (second.stdout[-3000:], second.stderr[-3000:])
    assert _metrics(project / "reports/second")["a.bin/scale"] == {"composed": 4.0,
                                                                   "overridden": 4.0}  # fmt: skip
    assert len(_built_for(docker_client, project) - tags) == 1


def test_unknown_service_exits_2(project: Path) -> None:
    config = project / "reprocheck.toml"
    config.write_text(config.read_text().replace("#infer", "#inferr", 1))
    proc = reprocheck(project, "run", scale="3")
    assert proc.returncode == 2
    output = proc.stdout + proc.stderr
    assert "no service 'inferr'" in output and "did you mean 'infer'?" in output
    assert "Traceback" not in output
