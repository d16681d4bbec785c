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


def _connect(kind: str) -> Callable[[], ContainerEngine]:
    def connect() -> ContainerEngine:
        from reprocheck.engine.targets import EngineTarget, connect_target

        return connect_target(EngineTarget(kind=kind))

    return connect


ENGINES: dict[str, Callable[[], ContainerEngine]] = {k: _connect(k) for k in ("docker", "podman")}
# Images are built and resolved on this engine; environments on any other engine (Podman,
# another host) get them from it through [images] registry, by digest.
BUILD_ENGINE = "docker"


def get_engine(name: str = BUILD_ENGINE) -> ContainerEngine:
    """The engine registered under ``name`` at its default address, connected and answering."""
    try:
        factory = ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINES))
        raise ConfigError(f"unknown engine {name!r}", fix=f"use one of: {known}") from None
    return factory()


__all__ = [
    "BUILD_ENGINE",
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
