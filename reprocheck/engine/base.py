"""The engine boundary: frozen specs in, frozen outcomes out.

Everything the runner needs from a container engine goes through :class:`ContainerEngine`,
so Podman (through its Docker-compatible socket), Swarm jobs or a remote engine are
one module each, and unit tests can use a fake.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# Every container and image we create carries LABEL, so a sweep finds leftovers; containers
# also name their run, environment and owner (the host process that waits for them).
LABEL = "io.reprocheck"
RUN_LABEL = "io.reprocheck.run"
ENVIRONMENT_LABEL = "io.reprocheck.environment"
OWNER_LABEL = "io.reprocheck.owner"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        fields = text.rpartition(")")[2].split()
    except OSError:
        return None
    return fields[19] if len(fields) > 19 else None


def owner_label(pid: int | None = None) -> str:
    """``host:pid:start`` of the process that owns a container (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def owner_alive(owner: str) -> bool | None:
    """Whether the owning process still runs; None when it ran on another host."""
    host, _, rest = owner.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname():
        return None
    if not pid.isdigit():
        return False
    return _start_time(int(pid)) == start


def container_labels(run_id: str, environment: str) -> dict[str, str]:
    """The labels of one environment's container in run ``run_id``, owned by this process."""
    return {
        LABEL: "1",
        RUN_LABEL: run_id,
        ENVIRONMENT_LABEL: environment,
        OWNER_LABEL: owner_label(),
    }


@dataclass(frozen=True, kw_only=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """One hermetic container run: command, mounts and limits."""

    image: str
    command: tuple[str, ...]
    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "65534:65534"
    memory: str = "16g"
    cpus: float | None = None
    pids_limit: int = 4096
    network: str = "none"
    read_only: bool = True
    shm_size: str = "1g"
    timeout: float = 3600.0
    labels: Mapping[str, str] = field(default_factory=dict)
    platform: str | None = None
    nocache: bool = False  # every step again: apt and pip resolve anew
    masked: tuple[str, ...] = ()  # container paths hidden behind an empty read-only tmpfs
    where: str = ""  # the engine it runs on, when not the default one (keyed by the cache)


@dataclass(frozen=True, kw_only=True)
class ContainerOutcome:
    exit_code: int | None
    timed_out: bool
    oom_killed: bool
    log: str
    duration: float
    transfer: Mapping[str, Any] = field(default_factory=dict)  # copies to a remote engine


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    ref: str
    id: str
    created: str
    labels: Mapping[str, str] = field(default_factory=dict)
    size: int = 0
    architecture: str = ""
    tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()  # ``HOST/NAME@sha256:…``: where a registry holds it


@dataclass(frozen=True, kw_only=True)
class BuildRequest:
    context_tar: Path
    tag: str
    dockerfile: str = "Dockerfile"
    buildargs: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    platform: str | None = None
    nocache: bool = False  # every step again: apt and pip resolve anew


LineCallback = Callable[[str], None]


class ContainerEngine(Protocol):
    name: str
    where: str  # "docker", "docker at ssh://root@box": in messages and records
    local: bool  # sees this machine's files (bind mounts); else files travel by the API

    def host_info(self) -> dict[str, Any]:
        """The engine's machine (id, name, OS, architecture, CPUs, server version)."""

    def image(self, ref: str) -> ImageInfo | None:
        """The local image ``ref``, or None when it is not present."""

    def images(self, label: str) -> list[ImageInfo]:
        """Local images carrying ``label``."""

    def pull(self, ref: str) -> ImageInfo | None:
        """Pull ``ref`` (a tag, or ``HOST/NAME@sha256:…`` by digest); None when no registry
        can provide it."""

    def push(self, image: str, repository: str, tag: str) -> str:
        """Tag ``image`` (an ID or a reference) as ``repository:tag`` and push it; the
        registry's digest of it (``sha256:…``). EngineError (one line, naming the registry)
        when the push fails."""

    def remove_image(self, ref: str) -> bool:
        """Remove the image ``ref`` (by tag or id); False when it is absent or in use."""

    def build(self, request: BuildRequest, on_line: LineCallback) -> ImageInfo:
        """Build with the engine's layer cache; raise ImageBuildError with the failing step."""

    def import_rootfs(self, tarball: Path, ref: str, changes: tuple[str, ...]) -> ImageInfo:
        """Create image ``ref`` from a root filesystem tarball."""

    def run(self, spec: ContainerSpec) -> ContainerOutcome:
        """Run one container to completion (or timeout), always removing it afterwards."""

    def export_files(self, image: str, paths: tuple[str, ...]) -> dict[str, bytes]:
        """Regular files (symlinks followed) read from ``image`` without running it."""

    def stop(self, labels: Mapping[str, str]) -> int:
        """Kill and remove the running containers carrying all ``labels``; return how many."""

    def sweep(self, *, everything: bool = False) -> int:
        """Remove containers carrying :data:`LABEL` whose owner process is gone on this host
        (all of them with ``everything``); return how many."""

    def sweep_volumes(self, *, everything: bool = False) -> int:
        """Remove unused volumes of the remote data plane: a run's output volumes left by a
        killed process (and, with ``everything``, the content-addressed input volumes,
        which later runs would otherwise reuse); return how many."""
