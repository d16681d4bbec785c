"""Outputs as written by a pipeline -> named arrays, loaded safely (no pickle, bounded size).

Naming (the same for callables and commands, since the harness writes a callable's
results as ``<fixture>.npz``):
- ``x.npz``: one output per array, ``x/<key>``;
- ``x.npy``: one output ``x``;
- ``x.json``: a flat object of numbers, one output per key, ``x/<key>``.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from reprocheck.errors import OutputError
from reprocheck.plan import matches

Kind = Literal["npz", "npy", "json"]


@dataclass(frozen=True, kw_only=True)
class OutputRef:
    """Where one named output lives; the array is loaded on demand."""

    name: str
    file: Path
    kind: Kind
    key: str | None = None


def _npz_keys(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return [n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise OutputError(f"output file {path} is not a readable .npz: {exc}") from exc


def _json_keys(path: Path) -> list[str]:
    return list(_read_json_numbers(path))


def _read_json_numbers(path: Path) -> dict[str, float | int | bool]:
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise OutputError(f"output file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise OutputError(f"output file {path} must hold a flat JSON object of numbers")
    return {k: v for k, v in data.items() if isinstance(v, int | float | bool)}


def _refs_for(path: Path, rel: str) -> Iterator[OutputRef]:
    stem, _, suffix = rel.rpartition(".")
    if suffix == "npz":
        for key in _npz_keys(path):
            yield OutputRef(name=f"{stem}/{key}", file=path, kind="npz", key=key)
    elif suffix == "npy":
        yield OutputRef(name=stem, file=path, kind="npy")
    elif suffix == "json":
        for key in _json_keys(path):
            yield OutputRef(name=f"{stem}/{key}", file=path, kind="json", key=key)


def index_outputs(
    folder: Path,
    include: tuple[str, ...] = ("*",),
    exclude: tuple[str, ...] = (),
    max_file_bytes: int = 2 * 1024**3,
) -> dict[str, OutputRef]:
    """Every output under ``folder`` selected by the globs, by name, sorted."""
    found: dict[str, OutputRef] = {}
    if not folder.is_dir():
        return found
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.stat().st_size > max_file_bytes:
            raise OutputError(
                f"output file {path} is larger than outputs.max_file_bytes ({max_file_bytes})",
                fix="raise [outputs] max_file_bytes or exclude it",
            )
        for ref in _refs_for(path, path.relative_to(folder).as_posix()):
            if matches(ref.name, include, exclude):
                found[ref.name] = ref
    return found


def load_output(ref: OutputRef) -> np.ndarray:
    """The array behind ``ref``; never unpickles."""
    with OutputReader() as reader:
        return reader.load(ref)


class OutputReader:
    """Loads many outputs, opening each .npz archive once (a callable writes one archive
    per fixture, so a matrix over all outputs would otherwise reopen it per array)."""

    def __init__(self) -> None:
        self._archives: dict[Path, Any] = {}

    def __enter__(self) -> OutputReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for archive in self._archives.values():
            archive.close()
        self._archives.clear()

    def load(self, ref: OutputRef) -> np.ndarray:
        try:
            if ref.kind == "npy":
                return np.asarray(np.load(ref.file, allow_pickle=False, mmap_mode="r"))
            if ref.kind == "npz":
                return np.asarray(self._archive(ref.file)[ref.key])
            return np.asarray(_read_json_numbers(ref.file)[str(ref.key)])
        except (ValueError, OSError, KeyError) as exc:
            raise OutputError(f"cannot read output {ref.name} from {ref.file}: {exc}") from exc

    def _archive(self, path: Path) -> Any:
        if path not in self._archives:
            self._archives[path] = np.load(path, allow_pickle=False)
        return self._archives[path]


class OutputFolders:
    """Output folders, each indexed once and read through one reader (explain and the HTML
    report look up the same folders for many outputs)."""

    def __init__(self) -> None:
        self._folders: dict[Path, tuple[dict[str, OutputRef], OutputReader]] = {}

    def load(self, folder: Path, output: str) -> np.ndarray | None:
        """The array ``output`` in ``folder``, or None when the folder does not hold it."""
        if folder not in self._folders:
            self._folders[folder] = (index_outputs(folder), OutputReader())
        refs, reader = self._folders[folder]
        return reader.load(refs[output]) if output in refs else None

    def close(self) -> None:
        for _refs, reader in self._folders.values():
            reader.close()
        self._folders.clear()
