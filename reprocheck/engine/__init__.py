"""Container engines: one Protocol, one registry; adding an engine is adding one module."""

from __future__ import annotations

from collections.abc import Callable

from reprocheck.engine.base import (
    ENVIRONMENT_LABEL,
    LABEL,
    OWNER_LABEL,
    RUN_LABEL,
    BuildRequest,
    ContainerEngine,
    ContainerOutcome,
    ContainerSpec,
    ImageInfo,
    Mount,
    container_labels,
    owner_alive,
)
from reprocheck.errors import ConfigError


def _docker() -> ContainerEngine:
    from reprocheck.engine.docker_engine import DockerEngine

    return DockerEngine.from_env()


ENGINES: dict[str, Callable[[], ContainerEngine]] = {"docker": _docker}


def get_engine(name: str) -> ContainerEngine:
    """The engine registered under ``name``, connected and answering."""
    try:
        factory = ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINES))
        raise ConfigError(
            f"unknown engine {name!r} in [run] engine", fix=f"use one of: {known}"
        ) from None
    return factory()


__all__ = [
    "ENGINES",
    "ENVIRONMENT_LABEL",
    "LABEL",
    "OWNER_LABEL",
    "RUN_LABEL",
    "BuildRequest",
    "ContainerEngine",
    "ContainerOutcome",
    "ContainerSpec",
    "ImageInfo",
    "Mount",
    "container_labels",
    "get_engine",
    "owner_alive",
]
