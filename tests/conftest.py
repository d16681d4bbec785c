"""Fixtures shared by the three tiers: tmp projects, and the Docker Engine for the docker tiers.

Without a Docker Engine the `docker` tiers skip, except when CI=true: there a missing engine
fails the session, so CI can never pass green without having run a single container.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import DEBIAN_ENVS, ProjectFactory, no_engine, write_project


@pytest.fixture
def make_project(tmp_path: Path) -> ProjectFactory:
    """``write_project`` into ``tmp_path/project`` (or ``root``)."""

    def make(
        config: str,
        files: dict[str, str] | None = None,
        *,
        name: str = "reprocheck.toml",
        root: Path | None = None,
    ) -> Path:
        return write_project(root or tmp_path / "project", config, files, name)

    return make


@pytest.fixture(scope="session")
def docker_engine() -> Any:
    """A connected :class:`DockerEngine` (skip, or fail under CI=true, when none answers)."""
    from reprocheck.errors import EngineUnavailableError

    try:
        from reprocheck.engine.docker_engine import DockerEngine

        return DockerEngine.from_env()
    except (ImportError, EngineUnavailableError) as exc:
        no_engine(f"no Docker Engine: {exc}")
        raise AssertionError("unreachable") from exc


@pytest.fixture(scope="session")
def docker_client(docker_engine: Any) -> Iterator[Any]:
    """The raw docker SDK client, for assertions the engine boundary does not expose."""
    import docker

    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="session")
def debian_bases(docker_client: Any) -> tuple[str, ...]:
    """The debian:* bases the repo's images build FROM; bootstrapped by the code under test
    when missing (slow, needs root and debootstrap), so only their absence without those
    tools skips (or fails in CI)."""
    import shutil

    import docker.errors

    missing = []
    for suite in DEBIAN_ENVS:
        try:
            docker_client.images.get(f"debian:{suite}")
        except docker.errors.ImageNotFound:
            missing.append(suite)
    if missing and (shutil.which("debootstrap") is None or os.geteuid() != 0):
        no_engine(f"debian:{','.join(missing)} missing and debootstrap cannot build them here")
    return DEBIAN_ENVS
