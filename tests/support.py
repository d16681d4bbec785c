"""Helpers shared by the three tiers (a plain module: `conftest` names clash across tiers)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = REPO_ROOT / "images"
DEBIAN_ENVS = ("bullseye", "bookworm", "trixie")

# What the images built from images/debian-* hold (the versions each Debian release ships).
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


def fingerprint_errors(value: Any, path: str = "") -> list[str]:
    """Every "error: ..." string anywhere in a fingerprint, with its path."""
    if isinstance(value, str):
        return [f"{path}: {value}"] if value.startswith("error:") else []
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in fingerprint_errors(v, f"{path}/{k}")]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in fingerprint_errors(v, f"{path}/{i}")]
    return []


def host_avx512() -> bool:
    """numpy's AVX512_SKX group is there natively (the flags it needs, as Linux lists them)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set(next((line for line in text.splitlines() if line.startswith("flags")), "").split())
    return {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= flags
