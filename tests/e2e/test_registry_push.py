"""`reprocheck images push` on the real engine and a real registry (Debian's docker-registry):
the image is pushed, its digest locked, and after the local image is gone it comes back by
digest, the same image ID; a registry that does not answer is one line naming it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from reprocheck.config import load_config
from reprocheck.images import EnvironmentImage, ImageBuilder
from reprocheck.registry import deliver, read_lock

pytestmark = pytest.mark.docker

CONFIG = """
[pipeline]
callable = "p.py:run"

[[environments]]
name = "tiny"
image = "{image}"
"""


def _reprocheck(cwd: Path, *args: str) -> Any:
    return subprocess.run([sys.executable, "-m", "reprocheck.cli", *args], cwd=cwd,
                          env=os.environ.copy(), capture_output=True, text=True,
                          timeout=900)  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_push_lock_and_pull_by_digest(
    make_project, tmp_path: Path, docker_engine: Any, docker_client: Any, registry: str
) -> None:
    try:
        docker_client.images.get("debian:bookworm")
    except docker.errors.ImageNotFound:
        pytest.skip("debian:bookworm is not present ('reprocheck images bootstrap' makes it)")
    dockerfile = f"FROM debian:bookworm\nLABEL io.reprocheck.test={tmp_path.name}\n"  # new ID
    source = make_project(CONFIG.format(image="images/tiny"),
                          {"images/tiny/Dockerfile": dockerfile, "p.py": ""})  # fmt: skip
    project = source.parent
    built: set[str] = set()
    try:
        closed = f"127.0.0.1:{_closed_port()}"
        refused = _reprocheck(project, "images", "push", "--registry", f"{closed}/x")
        assert refused.returncode == 2
        (line,) = refused.stderr.strip().splitlines()[-1:]
        assert line.startswith("error: cannot push ") and f"to the registry {closed}" in line
        label = f"io.reprocheck.test={tmp_path.name}"
        built.update(i.id for i in docker_client.images.list(filters={"label": label}))

        pushed = _reprocheck(project, "images", "push", "--registry", f"{registry}/rc-e2e")
        assert pushed.returncode == 0, pushed.stderr
        entry = read_lock(project / "reprocheck.lock.json")["tiny"]
        assert entry.image_id in built
        assert entry.reference.startswith(f"{registry}/rc-e2e/tiny@sha256:")
        assert f"tiny           {entry.reference}" in pushed.stdout

        docker_client.images.remove(entry.image_id, force=True)  # every tag: gone here
        assert docker_engine.image(entry.image_id) is None
        config = load_config(source)
        stand_in = EnvironmentImage(environment="tiny", ref="gone", image_id="sha256:gone",
                                    dockerfile=None, architecture="")  # fmt: skip
        there = deliver(config, stand_in, config.environments[0], docker_engine, docker_engine)
        assert there.ref == there.digest == entry.reference
        assert there.image_id == entry.image_id  # the same image, by digest

        pinned = load_config(make_project(CONFIG.format(image=entry.reference), {"p.py": ""},
                                          root=tmp_path / "pinned"))  # fmt: skip
        image = ImageBuilder(docker_engine, pinned).resolve(pinned.environments[0])
        assert (image.image_id, image.digest) == (entry.image_id, entry.reference)
    finally:
        for image_id in built:
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(image_id, force=True)
