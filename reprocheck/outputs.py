"""Outputs as written by a pipeline -> named arrays, loaded safely.

Naming (the same for callables and commands, since the harness writes a callable's
results as ``<fixture>.npz``):
- ``x.npz``: one output per array, ``x/<key>``;
- ``x.npy``: one output ``x``;
- ``x.json``: an object of numbers, one output per key, ``x/<key>``; nested objects give
  ``x/<key>/<key>``, lists of numbers arrays. JSON numbers have no dtype (``3`` and ``3.0``
  are one number): they are float64, as JSON readers take them, except integers past 2**53
  (float64's exact range), which stay exact as int64/uint64; null is NaN. Strings and lists
  of them (labels) are not outputs.

The output folder is written by an untrusted pipeline and read by the host (often as root).
So nothing here trusts it: the folder is walked without following links, files are opened
with ``O_NOFOLLOW`` and must be regular, arrays are never unpickled, and an array's inflated
size is checked from its npy header before a byte of it is read (``max_array_bytes``).
Whatever is wrong with one file becomes an output whose ``error`` says so; it never hides the
other outputs.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from reprocheck import safe_files
from reprocheck.config import OutputsConfig
from reprocheck.errors import OutputError, UnsafeFileError
from reprocheck.npy_format import (
    Located,
    Member,
    check_header,
    directory_members,
    locate,
    locate_all,
    map_file,
    npy_header,
    read_npy,
)
from reprocheck.plan import matches

Kind = Literal["npz", "npy", "json", "unreadable"]
_LIMITS = OutputsConfig()  # the defaults live in the config model, nowhere else


@dataclass(frozen=True, kw_only=True)
class OutputRef:
    """Where one named output lives; the array is loaded on demand.

    ``error`` is set for an output that exists but cannot be read safely (a link, a damaged
    archive, an object array, an array larger than ``max_array_bytes``, a bad name)."""

    name: str
    file: Path
    kind: Kind
    key: str | None = None
    error: str | None = None
    located: Located | None = None


def open_regular(path: Path) -> IO[bytes]:
    """``path`` opened without following a final link; regular files only (OutputError)."""
    try:
        return safe_files.open_regular(path)
    except UnsafeFileError as exc:
        raise OutputError(str(exc)) from exc


# --------------------------------------------------------------------------- indexing


_BAD_PARTS = ("", ".", "..")
# What reading a damaged or hostile archive raises: zipfile refuses an unknown "version
# needed" with NotImplementedError and an encrypted member with RuntimeError.
ARCHIVE_ERRORS: tuple[type[Exception], ...] = (
    ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, NotImplementedError,
    RuntimeError,
)  # fmt: skip
_READ_ERRORS: tuple[type[Exception], ...] = (OutputError, *ARCHIVE_ERRORS)


def bad_name(name: str) -> str | None:
    parts = name.split("/")
    if any(part in _BAD_PARTS for part in parts):
        return f"output name {name!r} has an empty, '.' or '..' part"
    return None


def _npz_refs(path: Path, stem: str, limit: int) -> Iterator[OutputRef]:
    with open_regular(path) as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ValueError("an empty file is not an .npz archive")
        yield from _archive_refs(handle, path, stem, limit)


def _archive_refs(handle: IO[bytes], path: Path, stem: str, limit: int) -> Iterator[OutputRef]:
    with map_file(handle) as data:
        members = directory_members(data)
        archive = None
        if members is None:  # not the plain layout np.savez writes: zipfile reads it
            archive = zipfile.ZipFile(handle)
            members = [Member.of(info) for info in archive.infolist()]
        members = [info for info in members if info.filename.endswith(".npy")]
        found = locate_all(data, members, limit)
        stem_bad = bad_name(stem) is not None
        try:
            for info, where in zip(members, found, strict=True):
                key = info.filename[:-4]
                name = f"{stem}/{key}"
                bad = stem_bad or "/" in key or key in _BAD_PARTS
                if isinstance(where, Located):
                    yield OutputRef(name=name, file=path, kind="npz", key=key,
                                    error=bad_name(name) if bad else None,
                                    located=where)  # fmt: skip
                    continue
                try:
                    located = locate(data, info, limit)
                    if located is None:  # compressed: read through zipfile
                        archive = archive or zipfile.ZipFile(handle)
                        with archive.open(info.filename) as member:
                            check_header(npy_header(member), limit)
                except ARCHIVE_ERRORS as exc:
                    yield OutputRef(name=name, file=path, kind="npz", key=key, error=str(exc))
                    continue
                yield OutputRef(name=name, file=path, kind="npz", key=key,
                                error=bad_name(name), located=located)  # fmt: skip
        finally:
            if archive is not None:
                archive.close()


def _json_refs(path: Path, stem: str, limit: int) -> Iterator[OutputRef]:
    for key, value in read_json_outputs(path, limit).items():
        name = f"{stem}/{key}"
        error = bad_name(name) or (value if isinstance(value, str) else None)
        yield OutputRef(name=name, file=path, kind="json", key=key, error=error)


_EXACT = 2**53  # integers up to this are exact in float64


class _Twice:
    """A key an object gives twice (json.loads would keep the last value silently)."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        found[key] = _Twice() if key in found else value
    return found


def read_json_outputs(
    path: Path, limit: int = _LIMITS.max_array_bytes
) -> dict[str, np.ndarray | str]:
    """The outputs of a .json file by key (``a/b`` for ``{"a": {"b": 1}}``, ``a/0/b`` for
    ``{"a": [{"b": 1}]}``): each an array, or the text of what is wrong with it (a key given
    twice, an array past ``limit`` bytes, ...). Walked without recursion (nesting is as deep
    as the file's)."""
    try:
        data = safe_files.read_json_object(path, pairs_hook=_pairs)
    except UnsafeFileError as exc:
        raise OutputError(f"{exc} (outputs in .json files are objects of numbers)") from exc
    found: dict[str, np.ndarray | str] = {}
    pending: list[tuple[str, dict[str, Any]]] = [("", data)]
    while pending:
        prefix, table = pending.pop()
        for key, value in table.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                pending.append((f"{name}/", value))
                continue
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                pending.extend((f"{name}/{i}/", item) for i, item in enumerate(value))
                continue  # a list of objects (per fold, per class): each by its index
            array = _json_array(value)
            if array is None:
                continue  # a string, a list of strings, an empty list: not numbers
            if isinstance(array, np.ndarray) and array.nbytes > limit:
                array = f"an array of {array.nbytes:,} bytes, more than max_array_bytes ({limit:,})"
            found[name] = f"{name} is given twice in the file" if name in found else array
    return found


def _json_array(value: object) -> np.ndarray | str | None:
    """A JSON number (or list of them) as an array, an error text, or None (not numbers).
    null is NaN: JSON has no NaN, and many writers (pandas, JavaScript) write it as null."""
    if isinstance(value, _Twice):
        return "given twice in its object"
    if value is None:
        return np.asarray(np.nan)
    if isinstance(value, bool):
        return np.asarray(value)
    if isinstance(value, int):
        if -_EXACT <= value <= _EXACT:
            return np.asarray(float(value))
        if -(2**63) <= value < 2**64:
            return np.asarray(value, dtype=np.int64 if value < 2**63 else np.uint64)
        return "an integer beyond 64 bits"
    if isinstance(value, float):
        return np.asarray(value)
    if not isinstance(value, list) or not value:
        return None
    return _json_list(value)


def _json_list(value: list[Any]) -> np.ndarray | str | None:
    """A (nested, rectangular) list of numbers and nulls as a float64 array (int64 when all
    are integers and some are past 2**53), of true/false as a bool one; a list of strings
    (labels, names) is no output."""
    leaves: list[object] = []
    pending: list[object] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        else:
            leaves.append(item)
    bools = sum(isinstance(leaf, bool) for leaf in leaves)
    ints = [leaf for leaf in leaves if isinstance(leaf, int) and not isinstance(leaf, bool)]
    numbers = sum(isinstance(leaf, float) for leaf in leaves) + len(ints)
    nulls = sum(leaf is None for leaf in leaves)
    big = any(abs(leaf) > _EXACT for leaf in ints)  # not exact in float64
    dtype: type[np.generic]
    if bools == len(leaves) and bools:
        dtype = np.bool_
    elif big and len(ints) == len(leaves):
        if not all(-(2**63) <= leaf < 2**63 for leaf in ints):
            return "a list with integers beyond 64 bits"
        dtype = np.int64
    elif numbers + nulls == len(leaves) and numbers + nulls:
        if big:
            return "a list of integers past 2**53 and other numbers (float64 would round them)"
        dtype = np.float64
    elif not numbers and not bools and not any(isinstance(leaf, dict) for leaf in leaves):
        return None  # strings (and nulls): labels, not numbers
    else:
        return "a list that mixes numbers or objects with other values"
    try:
        return np.array(value, dtype=dtype)
    except ValueError:  # ragged: [[1, 2], [3]]
        return "a list whose rows differ in length"


def _refs_for(path: Path, rel: str, limit: int) -> Iterator[OutputRef]:
    stem, _, suffix = rel.rpartition(".")
    if suffix == "npz":
        yield from _npz_refs(path, stem, limit)
    elif suffix == "npy":
        with open_regular(path) as handle:
            check_header(npy_header(handle), limit)
        yield OutputRef(name=stem, file=path, kind="npy", error=bad_name(stem))
    elif suffix == "json":
        yield from _json_refs(path, stem, limit)


def walk(folder: Path) -> Iterator[tuple[Path, os.stat_result | OSError]]:
    """Every entry below ``folder`` that is not a directory, with its lstat (or why it could
    not be listed or stat'ed); links are entries, never followed. Iterative: a pipeline can
    nest folders deeper than Python's recursion limit."""
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda e: e.name, reverse=True)
        except OSError as exc:
            yield current, exc
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as exc:
                yield path, exc
                continue
            if stat.S_ISDIR(info.st_mode):
                stack.append(path)
            else:
                yield path, info


def _printable(name: str) -> str:
    """A name as valid UTF-8 (a file name may hold any bytes), shortened to a sane length."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return text if len(text) <= _NAME_CHARS else f"{text[:_NAME_CHARS]}..."


_NAME_CHARS = 4096  # PATH_MAX: longer is not a name a file system gave


def file_problem(
    path: Path, info: os.stat_result | OSError, rel: str, spec: OutputsConfig
) -> str | None:
    """Why the entry ``rel`` found by :func:`walk` is no output file that can be opened (it
    is a link, not a regular file, too large, badly named), or None."""
    if isinstance(info, OSError):
        return f"cannot be listed: {info.strerror}"
    if _printable(rel) != rel:
        return "has a name that is not valid UTF-8 or is too long"
    if stat.S_ISLNK(info.st_mode):
        return f"is a symbolic link to {str(path.readlink())!r} (links are not followed)"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_size > spec.max_file_bytes:
        return f"is larger than [outputs] max_file_bytes ({spec.max_file_bytes:,})"
    return None


def file_refs(
    path: Path, info: os.stat_result | OSError, rel: str, spec: OutputsConfig
) -> Iterator[OutputRef]:
    """The outputs of one entry :func:`walk` found, each unreadable one with its error."""
    what = file_problem(path, info, rel, spec)
    if what is None:
        try:
            yield from list(_refs_for(path, rel, spec.max_array_bytes))
            return
        except _READ_ERRORS as exc:
            what = f"cannot be read: {exc}"
    stem = _printable(rel.rpartition(".")[0] or rel)
    error = f"output file {_printable(rel)} {what}"
    yield OutputRef(name=stem, file=path, kind="unreadable", error=error)


def index_outputs(
    folder: Path,
    include: tuple[str, ...] = ("*",),
    exclude: tuple[str, ...] = (),
    max_file_bytes: int = _LIMITS.max_file_bytes,
    max_array_bytes: int = _LIMITS.max_array_bytes,
) -> dict[str, OutputRef]:
    """Every output under ``folder`` selected by the globs, by name, sorted. Files that
    cannot be read safely are outputs with an ``error``, not exceptions."""
    spec = OutputsConfig(include=include, exclude=exclude, max_file_bytes=max_file_bytes,
                         max_array_bytes=max_array_bytes)  # fmt: skip
    found: dict[str, OutputRef] = {}
    if not folder.is_dir() or folder.is_symlink():
        return found
    everything = include == ("*",) and not exclude
    for path, info in walk(folder):
        for ref in file_refs(path, info, path.relative_to(folder).as_posix(), spec):
            if everything or matches(ref.name, include, exclude):
                add_ref(found, ref)
    return dict(sorted(found.items()))


def index_file(folder: Path, rel: str) -> dict[str, OutputRef]:
    """The outputs of the one file ``folder/rel`` (checked as :func:`index_outputs` checks
    every file: no link followed, bounded sizes), without walking the rest of the folder."""
    path = folder / rel
    try:
        info: os.stat_result | OSError = path.lstat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        info = exc
    return {ref.name: ref for ref in file_refs(path, info, rel, _LIMITS)}


def add_ref(found: dict[str, OutputRef], ref: OutputRef) -> None:
    """Two files that give one output name (``d/k.npy`` and member ``k`` of ``d.npz``) make
    that output an error: keeping either one could hide the other's drift."""
    other = found.get(ref.name)
    if other is None:
        found[ref.name] = ref
        return
    error = (f"two outputs are named {ref.name!r}: in {other.file.name} and {ref.file.name}; "
             "rename one")  # fmt: skip
    found[ref.name] = dataclasses.replace(ref, kind="unreadable", error=error, located=None)


def load_output(ref: OutputRef) -> np.ndarray:
    """The array behind ``ref``; never unpickles."""
    with OutputReader() as reader:
        return reader.load(ref)


class OutputReader:
    """Loads many outputs, opening each .npz archive once (a callable writes one archive
    per fixture, so a matrix over all outputs would otherwise reopen it per array)."""

    def __init__(self, max_array_bytes: int = _LIMITS.max_array_bytes) -> None:
        self._files: dict[Path, IO[bytes]] = {}
        self._archives: dict[Path, zipfile.ZipFile] = {}  # only for compressed members
        self._jsons: dict[Path, dict[str, np.ndarray | str]] = {}
        self._limit = max_array_bytes

    def __enter__(self) -> OutputReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for archive in self._archives.values():
            archive.close()
        for handle in self._files.values():
            handle.close()  # a ZipFile does not close a file object it was given
        self._archives.clear()
        self._files.clear()
        self._jsons.clear()

    def load(self, ref: OutputRef) -> np.ndarray:
        if ref.error:
            raise OutputError(ref.error)
        try:
            return self._load(ref)
        except ARCHIVE_ERRORS as exc:
            raise OutputError(f"cannot read output {ref.name} from {ref.file}: {exc}") from exc

    def _load(self, ref: OutputRef) -> np.ndarray:
        if ref.located is not None:
            return self._read_located(ref.file, ref.located)
        if ref.kind == "npy":
            with open_regular(ref.file) as handle:
                return read_npy(handle, self._limit)
        if ref.kind == "npz":
            with self._archive(ref.file).open(f"{ref.key}.npy") as member:
                return read_npy(member, self._limit)
        if ref.kind == "json":
            value = self._json(ref.file).get(str(ref.key))
            if not isinstance(value, np.ndarray):
                raise OutputError(value or f"{ref.file} no longer has {ref.key}")
            return value
        raise OutputError(f"output {ref.name} cannot be read")

    def _read_located(self, path: Path, where: Located) -> np.ndarray:
        data = os.pread(self._file(path).fileno(), where.nbytes, where.offset)
        if len(data) != where.nbytes:
            raise ValueError("the array is cut short")
        array = np.frombuffer(data, dtype=where.dtype)
        return array.reshape(where.shape, order="F" if where.fortran else "C")

    def read_rows(self, path: Path, offsets: list[int], nbytes: int) -> np.ndarray:
        """The ``nbytes`` at each offset of ``path``, as the rows of a uint8 array (many
        small arrays of one dtype and shape, read without a Python array each)."""
        rows = np.empty((len(offsets), nbytes), dtype=np.uint8)
        fd = self._file(path).fileno()
        try:
            for row, offset in zip(rows, offsets, strict=True):
                if os.preadv(fd, [row.data], offset) != nbytes:
                    raise ValueError("an array is cut short")
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot read outputs from {path}: {exc}") from exc
        return rows

    def _file(self, path: Path) -> IO[bytes]:
        """``path`` opened once for every array read from it (pread needs no seek)."""
        if path not in self._files:
            self._files[path] = open_regular(path)
        return self._files[path]

    def _json(self, path: Path) -> dict[str, np.ndarray | str]:
        """The outputs of a .json file, read once for all its keys."""
        if path not in self._jsons:
            self._jsons[path] = read_json_outputs(path, self._limit)
        return self._jsons[path]

    def _archive(self, path: Path) -> zipfile.ZipFile:
        """The zip directory of ``path``, parsed only when a compressed member is read (the
        index already located the uncompressed ones)."""
        if path not in self._archives:
            self._archives[path] = zipfile.ZipFile(self._file(path))
        return self._archives[path]
