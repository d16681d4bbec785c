"""The run data model: what a run produced, per environment and fixture.

The executor (:mod:`reprocheck.runner`) makes these; the matrix, the store, the reports
and explain read them without importing the executor.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

# The largest status.json, fingerprint.json or watchdog.json read from a container (they are
# far smaller; a pipeline could write an endless one).
META_FILE_BYTES = 16 * 1024**2
# What status.json and its journal may add per planned fixture (a name, a 4,000-character error
# tail, JSON escapes): a run of many fixtures writes that much more.
META_BYTES_PER_FIXTURE = 64 * 1024


def status_bytes(fixtures: int) -> int:
    """The largest status.json (or status.jsonl) read from a run of ``fixtures`` fixtures."""
    return META_FILE_BYTES + fixtures * META_BYTES_PER_FIXTURE


# mixed_cpu: the pipeline ran under a CPU model's emulator, but some of its processes left it
# (a program it exec'd ran on the host CPU); its outputs are compared, the run is not clean.
EnvStatus = Literal["ok", "partial", "mixed_cpu", "error", "crash", "timeout", "oom", "interrupted"]
# The statuses whose outputs are compared (some fixtures of a partial one failed).
USABLE: frozenset[str] = frozenset({"ok", "partial", "mixed_cpu"})
FixtureState = Literal["ok", "error", "running", "not_run"]


@dataclass(frozen=True, kw_only=True)
class FixtureResult:
    fixture: str
    status: FixtureState
    seconds: float | None = None
    error: str | None = None

    @property
    def reason(self) -> str:
        """The last line of the fixture's error (the exception), or its status."""
        lines = (self.error or "").strip().splitlines()
        return lines[-1] if lines else self.status.replace("_", " ")


@dataclass(frozen=True, kw_only=True)
class PackageChange:
    package: str  # a Debian package, or a pip distribution ("pip:NAME" on a name clash)
    before: str | None  # None: not installed before
    after: str | None  # None: gone


@dataclass(frozen=True, kw_only=True)
class ImageChange:
    """What a refreshed image (``run --refresh``) changed against the environment's last
    stored run: its image and the package versions that differ."""

    previous_run: str
    previous_image: str | None
    packages: tuple[PackageChange, ...] = ()


@dataclass(frozen=True, kw_only=True)
class EnvironmentResult:
    name: str
    image: str  # as configured: a Dockerfile folder or a reference
    image_ref: str | None
    image_id: str | None
    status: EnvStatus
    error: str | None
    outputs_dir: Path
    meta_dir: Path
    fingerprint: dict[str, Any] = field(default_factory=dict)
    fixtures: tuple[FixtureResult, ...] = ()
    seconds: float = 0.0
    repeat: int = 1
    image_change: ImageChange | None = None  # set by run --refresh
    image_digest: str | None = None  # HOST/NAME@sha256:… of the image, when a registry holds it
    # Processes that left the CPU model's emulator (mixed_cpu): ``PROGRAM: ARGV`` each.
    left_emulator: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status not in USABLE


@dataclass(frozen=True, kw_only=True)
class RunResult:
    run_id: str
    run_dir: Path
    config_source: Path
    started: str
    environments: tuple[EnvironmentResult, ...]
    repeats: tuple[EnvironmentResult, ...] = ()  # extra runs for the noise floor ([run] repeat)
    stopped: bool = False  # Ctrl-C or SIGTERM came, even if every container had finished

    @property
    def interrupted(self) -> bool:
        return self.stopped or any(env.status == "interrupted" for env in self.environments)


def new_run_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


def fingerprint_section(fingerprint: dict[str, Any], key: str) -> dict[str, Any]:
    """A section of a fingerprint (empty when missing or not an object)."""
    value = fingerprint.get(key)
    return value if isinstance(value, dict) else {}


def flat_packages(fingerprint: dict[str, Any]) -> dict[str, str]:
    """Debian packages by name, then pip distributions (prefixed ``pip:`` on a name clash)."""
    packages = fingerprint_section(fingerprint, "packages")
    flat = {str(k): str(v) for k, v in fingerprint_section(packages, "dpkg").items()}
    for name, version in fingerprint_section(packages, "pip").items():
        flat["pip:" + name if name in flat else str(name)] = str(version)
    return flat
