"""Other CPU models on this machine: an environment's ``cpu`` runs its pipeline under
qemu-user's ``-cpu MODEL`` inside the same container.

qemu-user emulates an x86-64 (or arm64) CPU model instruction by instruction, CPUID
included, so numpy, OpenCV, OpenBLAS and glibc pick the code paths that CPU would. The
static binary (``qemu-x86_64-static`` or ``qemu-x86_64``, the newest static one on PATH) is
mounted read-only into the container; no binfmt registration is needed for the host's own
architecture. The psABI levels are reprocheck's names for a qemu model of exactly that level
(qemu 7.2 has no ``x86-64-v*`` models). AVX-512 (``x86-64-v4``) cannot be emulated: the
native host stands for it when it has AVX-512.

qemu before 8.0 cannot stand for an AVX2 CPU: 7.2 (Debian bookworm's) computes AVX2/FMA code
wrongly (numpy's float64 ``tanh`` under ``-cpu Haswell`` gives -1057.97 for -0.995; qemu 10.0
gives the native values), and earlier ones do not emulate AVX at all.
"""

from __future__ import annotations

import functools
import platform as host_platform
import re
import shutil
import struct
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
# The names a static qemu-user binary goes by (Debian bookworm: -static; trixie: plain).
_BINARIES = {
    "x86_64": ("qemu-x86_64-static", "qemu-x86_64"),
    "aarch64": ("qemu-aarch64-static", "qemu-aarch64"),
}
# x86 models with AVX2, which qemu emulates correctly only from 8.0 on (see above).
AVX2_MODELS = re.compile(
    r"^(Haswell|Broadwell|Skylake|Cascadelake|Cooperlake|Icelake|SapphireRapids|GraniteRapids"
    r"|SierraForest|ClearwaterForest|EPYC|Dhyana|YongFeng)"
)
AVX2_SINCE = (8, 0)
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


def _static(path: Path) -> bool:
    """An ELF program without an interpreter (static or static-pie): it runs in any image."""
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:  # ELF64 only
                return False
            order = "<" if head[5] == 1 else ">"
            (phoff,) = struct.unpack_from(order + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            handle.seek(phoff)
            table = handle.read(phentsize * phnum)
    except OSError:
        return False
    types = (struct.unpack_from(order + "I", table, i * phentsize)[0] for i in range(phnum))
    return 3 not in types  # PT_INTERP


@functools.lru_cache(maxsize=8)
def qemu_version(binary: Path) -> tuple[int, ...]:
    """``qemu-x86_64 version 10.0.13 (...)`` -> (10, 0, 13); () when it does not say."""
    try:
        done = subprocess.run([str(binary), "-version"], capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
    except OSError:
        return ()
    found = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", done.stdout)
    return tuple(int(n) for n in found.groups() if n is not None) if found else ()


def find_qemu(arch: str) -> Path | None:
    """The newest static qemu-user binary for ``arch`` on PATH (None: none is installed)."""
    found = {Path(p).resolve() for name in _BINARIES.get(arch, ())
             if (p := shutil.which(name)) is not None}  # fmt: skip
    usable = [p for p in found if _static(p)]
    return max(usable, key=lambda p: (qemu_version(p), str(p)), default=None)


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


def _arch_knowing(cpu: str) -> str:
    """The architecture of an environment without a platform (its image's, which is not
    known before it is built): the host's, unless only another architecture's qemu knows
    the model (``cortex-a53`` for an arm64 image built FROM an arm64 base)."""
    host = architecture(None)
    if cpu in LEVELS or host not in _BINARIES:
        return host
    binary = find_qemu(host)
    if binary is not None and cpu in known_models(binary):
        return host
    for arch in _BINARIES:
        other = find_qemu(arch) if arch != host else None
        if other is not None and cpu in known_models(other):
            return arch
    return host


def emulation(name: str, cpu: str, platform: str | None, where: str) -> Emulation | None:
    """The emulation environment ``name`` asks for with ``cpu`` (None for native). A missing
    qemu, a level that cannot be emulated or a model qemu does not know is a ConfigError
    naming ``where`` (the config file and field) and the fix."""
    if cpu == NATIVE:
        return None
    field = f"{where}: environment {name!r}: cpu {cpu!r}"
    if cpu in NOT_EMULATED:
        raise ConfigError(f"{field}: {NOT_EMULATED[cpu]}", fix='use "native" on such a host')
    arch = architecture(platform) if platform else _arch_knowing(cpu)
    names = _BINARIES.get(arch)
    binary = find_qemu(arch)
    if binary is None:
        raise ConfigError(
            f"{field}: {names[0] if names else 'a qemu-user binary for ' + arch} is not "
            "installed (a static one)",
            fix="apt-get install -y qemu-user-static",
        )
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
    version = qemu_version(binary)
    if arch == "x86_64" and AVX2_MODELS.match(model) and version < AVX2_SINCE:
        said = ".".join(map(str, version)) or "of unknown version"
        raise ConfigError(
            f"{field}: {binary} is qemu {said}, which computes AVX2/FMA code wrongly "
            f"under -cpu {model} (numpy's float64 tanh off by a factor of 1000, measured with "
            "7.2)",
            fix="install qemu-user 8.0 or later (Debian trixie's qemu-user; scripts/setup.sh "
            "puts one in /usr/local/bin with REPROCHECK_WITH_CPUS=1)",
        )
    return Emulation(requested=cpu, model=model, binary=binary)
