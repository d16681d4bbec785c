"""Other CPU models on this machine: an environment's ``cpu`` runs its pipeline under
qemu-user's ``-cpu MODEL`` inside the same container.

qemu-user emulates an x86-64 (or arm64) CPU model instruction by instruction, CPUID
included, so numpy, OpenCV, OpenBLAS and glibc pick the code paths that CPU would. The
static binary (``qemu-x86_64-static``, ``qemu-aarch64-static``) is mounted read-only into
the container; no binfmt registration is needed for the host's own architecture. The
psABI levels are reprocheck's names for a qemu model of exactly that level (qemu 7.2 has no
``x86-64-v*`` models). AVX-512 (``x86-64-v4``) cannot be emulated: the native host stands
for it when it has AVX-512.
"""

from __future__ import annotations

import functools
import platform as host_platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from reprocheck.errors import ConfigError

NATIVE = "native"
QEMU_IN_CONTAINER = "/run/reprocheck/qemu"
# Environment variables the harness reads (reprocheck/harness/run.py spells them too).
QEMU_ENV, CPU_ENV, REQUESTED_ENV = "REPROCHECK_QEMU", "REPROCHECK_CPU", "REPROCHECK_CPU_REQUESTED"

# psABI level -> the qemu model of exactly that level.
LEVELS: dict[str, str] = {"x86-64-v2": "Nehalem", "x86-64-v3": "Haswell"}
NOT_EMULATED: dict[str, str] = {
    "x86-64-v4": "AVX-512 cannot be emulated by qemu-user; run natively on a host with AVX-512",
}
_BINARIES = {"x86_64": "qemu-x86_64-static", "aarch64": "qemu-aarch64-static"}
_ARCHES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}
_SHOWN_MODELS = 12
# Shown first when a model is unknown (the rest: ``-cpu help``).
_COMMON = (
    "Nehalem", "SandyBridge", "Haswell", "Broadwell", "Skylake-Client", "Skylake-Server",
    "Cascadelake-Server", "Icelake-Server", "EPYC", "EPYC-Rome", "EPYC-Milan", "qemu64",
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Emulation:
    """How one environment's pipeline runs: under ``binary`` with ``-cpu model``."""

    requested: str  # as configured: "x86-64-v3", "Haswell", "cortex-a53"
    model: str  # the qemu model
    binary: Path  # the static qemu-user binary on the host


def architecture(platform: str | None) -> str:
    """The architecture an environment runs as: its platform's, else the host's."""
    if platform:
        arch = platform.split("/")[1] if platform.count("/") >= 1 else platform
        return _ARCHES.get(arch, arch)
    machine = host_platform.machine()
    return _ARCHES.get(machine, machine)


@functools.lru_cache(maxsize=8)
def known_models(binary: Path) -> tuple[str, ...]:
    """The CPU models a qemu-user binary knows (``-cpu help``)."""
    done = subprocess.run([str(binary), "-cpu", "help"], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
    models = []
    for line in done.stdout.splitlines()[1:]:  # after "Available CPUs:"
        if not line.strip():
            break  # then come CPUID flags (x86), not models
        parts = line.split()
        # "x86 Haswell  Intel Core ..." (x86), "  cortex-a53" (aarch64)
        models.append(parts[1] if parts[0] == "x86" and len(parts) > 1 else parts[0])
    return tuple(dict.fromkeys(models))


def emulation(name: str, cpu: str, platform: str | None, where: str) -> Emulation | None:
    """The emulation environment ``name`` asks for with ``cpu`` (None for native). A missing
    qemu, a level that cannot be emulated or a model qemu does not know is a ConfigError
    naming ``where`` (the config file and field) and the fix."""
    if cpu == NATIVE:
        return None
    field = f"{where}: environment {name!r}: cpu {cpu!r}"
    if cpu in NOT_EMULATED:
        raise ConfigError(f"{field}: {NOT_EMULATED[cpu]}", fix='use "native" on such a host')
    arch = architecture(platform)
    binary_name = _BINARIES.get(arch)
    found = shutil.which(binary_name) if binary_name else None
    if found is None:
        raise ConfigError(
            f"{field}: {binary_name or 'a qemu-user binary for ' + arch} is not installed",
            fix="apt-get install -y qemu-user-static",
        )
    binary = Path(found).resolve()
    model = LEVELS.get(cpu, cpu) if arch == "x86_64" else cpu
    models = known_models(binary)
    if model not in models:
        levels = ", ".join(LEVELS) if arch == "x86_64" else ""
        common = [m for m in _COMMON if m in models] or list(models[:_SHOWN_MODELS])
        shown = ", ".join(common) + (", ..." if len(models) > len(common) else "")
        raise ConfigError(
            f"{field}: {binary.name} knows no such model (known: {levels + ', ' if levels else ''}"
            f"{shown}; all: {binary.name} -cpu help)",
            fix="name a model from that list, or native",
        )
    return Emulation(requested=cpu, model=model, binary=binary)
