"""Fixtures shared by the three tiers: tmp projects, and the Docker Engine for the docker tiers.

Without a Docker Engine the `docker` tiers skip, except when CI=true: there a missing engine
fails the session, so CI can never pass green without having run a single container.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = REPO_ROOT / "images"
DEBIAN_ENVS = ("bullseye", "bookworm", "trixie")

# What the images built from images/debian-* hold (see /work/shared/FACTS.md).
# name -> (VERSION_CODENAME, glibc, python)
DEBIAN_FACTS = {
    "bullseye": ("bullseye", "2.31", "3.9.2"),
    "bookworm": ("bookworm", "2.36", "3.11.2"),
    "trixie": ("trixie", "2.41", "3.13.5"),
}

ProjectFactory = Callable[..., Path]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def no_engine(reason: str) -> None:
    """Skip locally; fail in CI, where a missing engine must never look like a pass."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def debian_image(name: str) -> str:
    """The config value for one of the repo's Debian images: its Dockerfile folder."""
    return str(IMAGES_DIR / f"debian-{name}")


def toml_environments(*names: str, image: Callable[[str], str] = debian_image) -> str:
    return "".join(
        f'\n[[environments]]\nname = "{name}"\nimage = "{image(name)}"\n' for name in names
    )


def write_project(
    project: Path, config: str, files: dict[str, str] | None = None, name: str = "reprocheck.toml"
) -> Path:
    """Write ``name`` (the config) and ``files`` (path -> text) under ``project``; the config."""
    project.mkdir(parents=True, exist_ok=True)
    for rel, text in (files or {}).items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    source = project / name
    source.write_text(textwrap.dedent(config))
    return source


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
