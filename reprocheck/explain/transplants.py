"""Transplants: hybrid images that move one suspect from one side's image into the other's.

* a Debian package's libraries: into the candidate, matched by ELF SONAME and loaded first
  through LD_LIBRARY_PATH;
* glibc, forward only (an older glibc cannot run binaries built for a newer one): the newer
  side's loader and libc/libm (with libmvec and the other libraries glibc ships) into a
  folder of the older side's image, whose harness then starts as
  ``<folder>/ld-linux-x86-64.so.2 --library-path <folder> <python> ...`` (the container's
  command is prefixed on the host, :class:`LoaderEngine`). Programs the pipeline starts run
  under the image's own loader again, so a command pipeline is not moved this way;
* a pip distribution: its installed files (its RECORD: package folders, dist-info, bundled
  ``.libs``) copied from the baseline's image in place of the candidate's own, by the images'
  own Python while the hybrid builds (``dist_transplant.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from reprocheck.cache import json_digest
from reprocheck.engine import (
    LABEL,
    BuildRequest,
    ContainerEngine,
    ContainerOutcome,
    ContainerSpec,
    ImageInfo,
)
from reprocheck.engine.base import LineCallback
from reprocheck.explain.model import Suspect
from reprocheck.images import LABEL_HYBRID, EnvironmentImage

TRANSPLANT_DIR = "/opt/reprocheck-transplant"
GLIBC_DIR = "/opt/reprocheck-glibc"
# glibc's dynamic loaders, by architecture (x86-64, arm64)
LOADERS = ("ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1")
# What a newer glibc must bring: libc and libm, and those an older userland may still link
# separately (merged into libc.so.6 since 2.34, and mismatched with a newer libc)
GLIBC_LIBRARIES = ("libc.so.6", "libm.so.6")
GLIBC_EXTRA = ("libmvec.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1",
               "libresolv.so.2", "libanl.so.1")  # fmt: skip
DEFAULT_PYTHON = "/usr/bin/python3"
DIST_SCRIPT = Path(__file__).with_name("dist_transplant.py")


def elf_soname(data: bytes) -> str | None:
    """DT_SONAME of a shared library (pyelftools), or None when it has none or is not ELF."""
    try:
        elf = ELFFile(io.BytesIO(data))
        dynamic = elf.get_section_by_name(".dynamic")
        tags = dynamic.iter_tags() if isinstance(dynamic, DynamicSection) else []
        return next(
            (str(getattr(t, "soname", "")) for t in tags if t.entry.d_tag == "DT_SONAME"), None
        )
    except ELFError:
        return None


def transplant_files(
    engine: ContainerEngine, target_id: str, source_id: str, suspect: Suspect
) -> dict[str, bytes]:
    """SONAME -> the source image's library, for the libraries whose SONAME matches the
    target's own (a library under another SONAME would not be loaded in its place)."""
    mine = engine.export_files(target_id, suspect.libraries)
    theirs = engine.export_files(source_id, tuple(suspect.transplant.values()))
    wanted = {elf_soname(data) for data in mine.values()} - {None}
    found = {elf_soname(data): data for data in theirs.values()}
    return {name: data for name, data in found.items() if name in wanted and name is not None}


def hybrid_image(
    engine: ContainerEngine, target: EnvironmentImage, files: Mapping[str, bytes], origin: str
) -> EnvironmentImage:
    """``target``'s image with ``files`` (SONAME -> library) loaded first."""
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    dockerfile = (
        f"FROM {target.image_id}\nCOPY transplant/ {TRANSPLANT_DIR}/\n"
        f"ENV LD_LIBRARY_PATH={TRANSPLANT_DIR}\n"
    )
    context = {"Dockerfile": dockerfile.encode()}
    context |= {f"transplant/{name}": data for name, data in files.items()}
    return _build(engine, target, json_digest(target.image_id, hashes), origin, context)


def _build(
    engine: ContainerEngine,
    target: EnvironmentImage,
    digest: str,
    origin: str,
    context: Mapping[str, bytes],
) -> EnvironmentImage:
    """``target`` as the hybrid built from ``context`` (its Dockerfile and files), reused
    when a hybrid of the same content exists."""
    tag = f"reprocheck/hybrid:{digest[:16]}"
    existing = engine.image(tag)
    if existing is None:
        with _context(context) as tarball:
            labels = {LABEL: "1", LABEL_HYBRID: origin}
            request = BuildRequest(context_tar=tarball, tag=tag, labels=labels)
            existing = engine.build(request, lambda _line: None)
    return dataclasses.replace(target, ref=tag, image_id=existing.id)


@contextmanager
def _context(files: Mapping[str, bytes]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="reprocheck-hybrid-") as tmp:
        tarball = Path(tmp) / "context.tar"
        with tarfile.open(tarball, "w") as tar:
            for name, data in files.items():
                _add(tar, name, data)
        yield tarball


# --------------------------------------------------------------------------- glibc forward


def python_executable(fingerprint: Mapping[str, Any]) -> str:
    """The interpreter the harness ran as (a venv's own ``bin/python3`` included)."""
    python = fingerprint.get("python")
    executable = python.get("executable") if isinstance(python, dict) else None
    return (
        str(executable)
        if isinstance(executable, str) and executable.startswith("/")
        else (DEFAULT_PYTHON)
    )


def _glibc_paths(fingerprint: Mapping[str, Any]) -> tuple[str, str] | None:
    """(loader path, libc's folder) from the libraries a fingerprint's process mapped."""
    loaded = [str(p) for p in fingerprint.get("loaded_libraries") or ()]
    loader = next((p for p in loaded if Path(p).name in LOADERS), None)
    libc = next((p for p in loaded if Path(p).name == "libc.so.6"), None)
    if loader is None or libc is None:
        return None
    return loader, str(Path(libc).parent)


def glibc_files(
    engine: ContainerEngine, source_id: str, fingerprint: Mapping[str, Any]
) -> dict[str, bytes]:
    """File name -> glibc's loader and libraries in the image ``source_id`` (whose run has
    ``fingerprint``); empty when its loader or libc cannot be found."""
    found = _glibc_paths(fingerprint)
    if found is None:
        return {}
    loader, folder = found
    wanted = {Path(loader).name: loader} | {n: f"{folder}/{n}" for n in GLIBC_LIBRARIES}
    optional = {n: f"{folder}/{n}" for n in GLIBC_EXTRA}
    try:
        files = engine.export_files(source_id, tuple({**wanted, **optional}.values()))
    except Exception:
        files = engine.export_files(source_id, tuple(wanted.values()))
    by_path = {path: name for name, path in {**wanted, **optional}.items()}
    return {by_path[path]: data for path, data in files.items() if path in by_path}


def glibc_hybrid(
    engine: ContainerEngine, target: EnvironmentImage, files: Mapping[str, bytes], origin: str
) -> EnvironmentImage:
    """``target``'s image with another glibc's ``files`` in :data:`GLIBC_DIR` (used only by
    a harness started through :func:`loader_command`)."""
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    digest = json_digest("glibc", target.image_id, hashes)
    dockerfile = f"FROM {target.image_id}\nCOPY glibc/ {GLIBC_DIR}/\n"
    context = {"Dockerfile": dockerfile.encode()}
    context |= {f"glibc/{name}": data for name, data in files.items()}
    return _build(engine, target, digest, origin, context)


def loader_command(files: Mapping[str, bytes], python: str) -> tuple[str, ...]:
    """The start of a command that runs ``python`` under the glibc in :data:`GLIBC_DIR`."""
    loader = next(name for name in files if name in LOADERS)
    return (f"{GLIBC_DIR}/{loader}", "--library-path", GLIBC_DIR, python)


class LoaderEngine:
    """``engine``, with each container's interpreter (the command's first word) replaced by
    ``prefix``: the harness runs under another glibc's loader."""

    def __init__(self, engine: ContainerEngine, prefix: tuple[str, ...]) -> None:
        self._engine = engine
        self._prefix = prefix
        self.name = engine.name
        self.where = engine.where
        self.local = engine.local

    def host_info(self) -> dict[str, Any]:
        return self._engine.host_info()

    def run(self, spec: ContainerSpec) -> ContainerOutcome:
        command = (*self._prefix, *spec.command[1:])
        return self._engine.run(dataclasses.replace(spec, command=command))

    def image(self, ref: str) -> ImageInfo | None:
        return self._engine.image(ref)

    def images(self, label: str) -> list[ImageInfo]:
        return self._engine.images(label)

    def pull(self, ref: str) -> ImageInfo | None:
        return self._engine.pull(ref)

    def push(self, image: str, repository: str, tag: str) -> str:
        return self._engine.push(image, repository, tag)

    def remove_image(self, ref: str) -> bool:
        return self._engine.remove_image(ref)

    def build(self, request: BuildRequest, on_line: LineCallback) -> ImageInfo:
        return self._engine.build(request, on_line)

    def import_rootfs(self, tarball: Path, ref: str, changes: tuple[str, ...]) -> ImageInfo:
        return self._engine.import_rootfs(tarball, ref, changes)

    def export_files(self, image: str, paths: tuple[str, ...]) -> dict[str, bytes]:
        return self._engine.export_files(image, paths)

    def stop(self, labels: Mapping[str, str]) -> int:
        return self._engine.stop(labels)

    def sweep(self, *, everything: bool = False) -> int:
        return self._engine.sweep(everything=everything)

    def sweep_volumes(self, *, everything: bool = False) -> int:
        return self._engine.sweep_volumes(everything=everything)


# --------------------------------------------------------------------------- pip distributions


def distribution_hybrid(
    engine: ContainerEngine,
    target: EnvironmentImage,
    source_id: str,
    distribution: str,
    pythons: tuple[str, str],
    origin: str,
) -> EnvironmentImage:
    """``target``'s image with ``distribution``'s installed files taken from the image
    ``source_id`` in place of its own; ``pythons`` are the source's and the target's
    interpreters (their ``importlib.metadata`` finds the distribution)."""
    script = DIST_SCRIPT.read_bytes()
    digest = json_digest("distribution", target.image_id, source_id, distribution, pythons,
                         hashlib.sha256(script).hexdigest())  # fmt: skip
    staged = "/tmp/reprocheck-dist"
    export = json.dumps([pythons[0], f"{staged}.py", "export", distribution, staged])
    place = json.dumps([pythons[1], f"{staged}.py", "place", distribution, staged])
    dockerfile = (
        f"FROM {source_id} AS source\nUSER root\nCOPY dist_transplant.py {staged}.py\n"
        f"RUN {export}\n"
        f"FROM {target.image_id}\nUSER root\nCOPY --from=source {staged}/ {staged}/\n"
        f"COPY dist_transplant.py {staged}.py\nRUN {place}\n"
    )
    context = {"Dockerfile": dockerfile.encode(), "dist_transplant.py": script}
    return _build(engine, target, digest, origin, context)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o755
    tar.addfile(info, io.BytesIO(data))
