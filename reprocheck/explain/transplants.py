"""Transplants: a hybrid image of the candidate with one package's libraries taken from the
baseline's image, matched by ELF SONAME and loaded first through LD_LIBRARY_PATH."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from reprocheck.cache import json_digest
from reprocheck.engine import LABEL, BuildRequest, ContainerEngine
from reprocheck.explain.model import Suspect
from reprocheck.images import LABEL_HYBRID, EnvironmentImage

TRANSPLANT_DIR = "/opt/reprocheck-transplant"


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
    digest = json_digest(target.image_id, hashes)
    tag = f"reprocheck/hybrid:{digest[:16]}"
    existing = engine.image(tag)
    if existing is None:
        with _hybrid_context(target.image_id, files) as tarball:
            labels = {LABEL: "1", LABEL_HYBRID: origin}
            request = BuildRequest(context_tar=tarball, tag=tag, labels=labels)
            existing = engine.build(request, lambda _line: None)
    return dataclasses.replace(target, ref=tag, image_id=existing.id)


@contextmanager
def _hybrid_context(base_id: str, files: Mapping[str, bytes]) -> Iterator[Path]:
    dockerfile = (
        f"FROM {base_id}\nCOPY transplant/ {TRANSPLANT_DIR}/\n"
        f"ENV LD_LIBRARY_PATH={TRANSPLANT_DIR}\n"
    )
    with tempfile.TemporaryDirectory(prefix="reprocheck-hybrid-") as tmp:
        tarball = Path(tmp) / "context.tar"
        with tarfile.open(tarball, "w") as tar:
            _add(tar, "Dockerfile", dockerfile.encode())
            for name, data in files.items():
                _add(tar, f"transplant/{name}", data)
        yield tarball


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o755
    tar.addfile(info, io.BytesIO(data))
