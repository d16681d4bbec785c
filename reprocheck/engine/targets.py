"""Where an environment's containers run: an engine kind and an address, one connection each.

``[[environments]] host``/``context``/``engine`` (and ``[run] engine``) name a target; the
runner asks :class:`Engines` for the engine of each target and connects to each one once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from reprocheck.cache import FileHashes
from reprocheck.config import EnvironmentConfig, RunConfig
from reprocheck.engine.base import ContainerEngine
from reprocheck.errors import ConfigError

DOCKER, PODMAN = "docker", "podman"
ROOT_PODMAN_SOCKET = "unix:///run/podman/podman.sock"


@dataclass(frozen=True, kw_only=True)
class EngineTarget:
    """An engine kind at an address; ``host`` None is that kind's local default."""

    kind: str = DOCKER
    host: str | None = None
    context: str | None = None

    @property
    def default(self) -> bool:
        """The engine the process would reach without any address (``DOCKER_HOST`` or the
        local docker socket)."""
        return self.kind == DOCKER and self.host is None and self.context is None

    def describe(self) -> str:
        """``docker``, ``docker at ssh://root@box``, ``podman (context prod)``."""
        if self.context is not None:
            return f"{self.kind} (context {self.context})"
        return self.kind if self.host is None else f"{self.kind} at {self.host}"


def target_of(config: RunConfig, env: EnvironmentConfig, host: str | None = None) -> EngineTarget:
    """The target of ``env`` (on ``host`` instead of its own, for a shard spread over
    ``hosts``)."""
    return EngineTarget(kind=config.engine_of(env), host=host or env.host,
                        context=None if host else env.context)  # fmt: skip


def podman_socket() -> str:
    """Podman's own API socket: the system one as root, the user's one rootless."""
    if os.getuid() == 0:
        return ROOT_PODMAN_SOCKET
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return f"unix://{runtime}/podman/podman.sock"


Connector = Callable[[EngineTarget], ContainerEngine]


class Engines:
    """One connected engine per target, made on first use (thread-safe): environments that
    share a host share its connection. ``default`` stands for the default target (a test's
    fake, or an engine the caller made already)."""

    def __init__(
        self, default: ContainerEngine | None = None, connect: Connector | None = None
    ) -> None:
        self._engines: dict[EngineTarget, ContainerEngine] = {}
        if default is not None:
            self._engines[EngineTarget()] = default
        self._connect = connect or connect_target
        self._lock = threading.Lock()

    def get(self, target: EngineTarget) -> ContainerEngine:
        with self._lock:
            engine = self._engines.get(target)
            if engine is None:
                engine = self._engines[target] = self._connect(target)
            return engine

    def connected(self) -> list[ContainerEngine]:
        with self._lock:
            return list(self._engines.values())


def connect_target(target: EngineTarget, hashes: FileHashes | None = None) -> ContainerEngine:
    """A connected engine for ``target``; EngineUnavailableError (one line) when it does not
    answer. ``hashes``: the project's remembered file hashes, which an engine on another
    machine's data plane uses (instead of hashing every input again)."""
    if target.kind not in (DOCKER, PODMAN):
        raise ConfigError(f"unknown engine {target.kind!r}", fix="use docker or podman")
    from reprocheck.engine.docker_engine import DockerEngine

    return DockerEngine.connect(target, hashes)
