"""Outputs as written by a pipeline -> named arrays, loaded safely.

Naming (the same for callables and commands, since the harness writes a callable's
results as ``<fixture>.npz``):
- ``x.npz``: one output per array, ``x/<key>``;
- ``x.npy``: one output ``x``;
- ``x.json``: a flat object of numbers, one output per key, ``x/<key>``.

The output folder is written by an untrusted pipeline and read by the host (often as root).
So nothing here trusts it: the folder is walked without following links, files are opened
with ``O_NOFOLLOW`` and must be regular, arrays are never unpickled, and an array's inflated
size is checked from its npy header before a byte of it is read (``max_array_bytes``).
Whatever is wrong with one file becomes an output whose ``error`` says so; it never hides the
other outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import mmap
import os
import stat
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from reprocheck import safe_files
from reprocheck.config import OutputsConfig
from reprocheck.errors import OutputError, UnsafeFileError
from reprocheck.plan import matches

Kind = Literal["npz", "npy", "json", "unreadable"]
_LIMITS = OutputsConfig()  # the defaults live in the config model, nowhere else
_MAX_HEADER = 10_000  # bytes of an npy header (numpy's own default limit)


@dataclass(frozen=True, kw_only=True)
class Located:
    """Where an array's bytes lie in its file (an uncompressed .npz member): read in one go."""

    offset: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    fortran: bool

    @property
    def nbytes(self) -> int:
        return _nbytes(self.shape, self.dtype)


def _nbytes(shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    """An array's size in bytes, in Python ints (a header may claim any shape)."""
    return math.prod(shape) * dtype.itemsize


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


# --------------------------------------------------------------------------- npy headers


Header = tuple[tuple[int, ...], bool, np.dtype[Any]]


def _npy_header(handle: IO[bytes]) -> Header:
    """(shape, fortran order, dtype) from the npy header at the handle's position."""
    start = handle.read(_PREFIX)
    if len(start) < _PREFIX:
        raise ValueError("not an npy array: the header is cut short")
    size = int.from_bytes(start[8:10] if start[6] == 1 else start[8:12], "little")
    if start[6] != 1:
        start += handle.read(2)
    text = handle.read(size)
    return _parse_header(start + text)


_PREFIX = 10  # magic (6), version (2), header length (2 bytes in 1.0, 4 in 2.0)


@functools.lru_cache(maxsize=4096)
def _parse_header(raw: bytes) -> Header:
    """Parse a whole npy header; many outputs share one (same dtype and shape), and numpy's
    parser (a literal_eval) costs tens of microseconds, so each text is parsed once."""
    handle = io.BytesIO(raw)
    version = np.lib.format.read_magic(handle)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"npy format version {version} is not supported")
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)  # fmt: skip
    try:
        return read(handle, max_header_size=_MAX_HEADER)
    except ValueError:
        raise
    except Exception as exc:  # numpy tokenizes the header: a damaged one raises anything
        raise ValueError(f"the npy header is damaged ({type(exc).__name__}: {exc})") from exc


def _check_header(header: Header, limit: int) -> tuple[int, ...]:
    """The array's shape, after refusing object arrays and arrays larger than ``limit``."""
    shape, _fortran, dtype = header
    if dtype.hasobject:
        raise ValueError(f"dtype {dtype} holds Python objects (reading it would need pickle)")
    size = _nbytes(shape, dtype)
    if size > limit:
        raise ValueError(
            f"array {shape} of {dtype} inflates to {size:,} bytes, more than "
            f"[outputs] max_array_bytes ({limit:,})"
        )
    return shape


def _read_npy(handle: IO[bytes], limit: int) -> np.ndarray:
    _check_header(_npy_header(handle), limit)
    handle.seek(0)
    return np.lib.format.read_array(handle, allow_pickle=False, max_header_size=_MAX_HEADER)


# --------------------------------------------------------------------------- indexing


_BAD_PARTS = ("", ".", "..")
# What reading a damaged or hostile archive raises: zipfile refuses an unknown "version
# needed" with NotImplementedError and an encrypted member with RuntimeError.
ARCHIVE_ERRORS: tuple[type[Exception], ...] = (
    ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, NotImplementedError,
    RuntimeError,
)  # fmt: skip
_READ_ERRORS: tuple[type[Exception], ...] = (OutputError, *ARCHIVE_ERRORS)


def _bad_name(name: str) -> str | None:
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
    with _mapped(handle) as data:
        members = _members(data)
        archive = None
        if members is None:  # not the plain layout np.savez writes: zipfile reads it
            archive = zipfile.ZipFile(handle)
            members = [_Member.of(info) for info in archive.infolist()]
        members = [info for info in members if info.filename.endswith(".npy")]
        found = _locate_all(data, members, limit)
        stem_bad = _bad_name(stem) is not None
        try:
            for info, where in zip(members, found, strict=True):
                key = info.filename[:-4]
                name = f"{stem}/{key}"
                bad = stem_bad or "/" in key or key in _BAD_PARTS
                if isinstance(where, Located):
                    yield OutputRef(name=name, file=path, kind="npz", key=key,
                                    error=_bad_name(name) if bad else None,
                                    located=where)  # fmt: skip
                    continue
                try:
                    located = _locate(data, info, limit)
                    if located is None:  # compressed: read through zipfile
                        archive = archive or zipfile.ZipFile(handle)
                        with archive.open(info.filename) as member:
                            _check_header(_npy_header(member), limit)
                except ARCHIVE_ERRORS as exc:
                    yield OutputRef(name=name, file=path, kind="npz", key=key, error=str(exc))
                    continue
                yield OutputRef(name=name, file=path, kind="npz", key=key,
                                error=_bad_name(name), located=located)  # fmt: skip
        finally:
            if archive is not None:
                archive.close()


# --------------------------------------------------------------------------- zip directory


class _Member(NamedTuple):
    """What indexing needs of a zip member (a subset of zipfile.ZipInfo)."""

    filename: str
    header_offset: int
    compress_type: int
    flag_bits: int
    file_size: int

    @classmethod
    def of(cls, info: zipfile.ZipInfo) -> _Member:
        return cls(info.filename, info.header_offset, info.compress_type, info.flag_bits,
                   info.file_size)  # fmt: skip


_END = struct.Struct("<4s4H2LH")  # end of central directory record
_END_SIGNATURE = b"PK\x05\x06"
_ENTRY = struct.Struct("<4s4B4HL2L5H2L")  # central directory file header
_ENTRY_SIGNATURE = b"PK\x01\x02"
_LOCATOR = struct.Struct("<4sLQL")  # zip64 end of central directory locator
_LOCATOR_SIGNATURE = b"PK\x06\x07"
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory record
_END64_SIGNATURE = b"PK\x06\x06"
_MAX_COMMENT = 65535


def _members(data: mmap.mmap) -> list[_Member] | None:
    """The central directory of a plain single-disk zip without zip64 sizes, read in one
    pass (zipfile builds a ZipInfo per member, several times slower for the millions of
    members a per-sample .npz holds); None for anything else, which zipfile then reads."""
    size = len(data)
    end = data.rfind(_END_SIGNATURE, max(0, size - _MAX_COMMENT - _END.size))
    if end < 0 or end + _END.size > size:
        return None
    _sig, disk, start_disk, _here, count, directory, offset, _comment = _END.unpack_from(data, end)
    if disk or start_disk:
        return None
    locator = end - _LOCATOR.size
    if locator >= 0 and data[locator : locator + 4] == _LOCATOR_SIGNATURE:
        # zip64 (more than 65,535 members, or past 4 GiB): counts in the zip64 record
        _sig, _disk, record, _disks = _LOCATOR.unpack_from(data, locator)
        if record + _END64.size > locator or data[record : record + 4] != _END64_SIGNATURE:
            return None
        fields64 = _END64.unpack_from(data, record)
        count, directory, offset, end = fields64[7], fields64[8], fields64[9], record
    if offset + directory != end:
        return None
    members = []
    position = offset
    for _ in range(count):
        if position + _ENTRY.size > end:
            return None
        fields = _ENTRY.unpack_from(data, position)
        if fields[0] != _ENTRY_SIGNATURE:
            return None
        flags, method, compressed, size_, names, extra, comment = (
            fields[5],
            fields[6],
            fields[10],
            fields[11],
            fields[12],
            fields[13],
            fields[14],
        )
        header_offset = fields[18]
        if 0xFFFFFFFF in (compressed, size_, header_offset):
            return None  # zip64 sizes: zipfile parses those extra fields
        raw = data[position + _ENTRY.size : position + _ENTRY.size + names]
        name = raw.decode("utf-8" if flags & 0x800 else "cp437")
        members.append(_Member(name, header_offset, method, flags, size_))
        position += _ENTRY.size + names + extra + comment
    return members if position == end else None


def _mapped(handle: IO[bytes]) -> mmap.mmap:
    """The whole file, mapped read-only (one archive holds up to millions of members, whose
    headers are then slices rather than two system calls each)."""
    return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)


_LOCAL_HEADER = 30  # fixed part of a zip local file header
_LOCAL_SIGNATURE = b"PK\x03\x04"


def _locate(data: mmap.mmap, info: _Member, limit: int) -> Located | None:
    """Where an uncompressed member's array data lies in the archive (np.savez writes them
    so), checked against the member's and the file's size; None for a compressed member."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    local = data[info.header_offset : info.header_offset + _LOCAL_HEADER]
    if len(local) < _LOCAL_HEADER or local[:4] != _LOCAL_SIGNATURE:
        raise ValueError(f"member {info.filename} has no local header")
    names = int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
    start = info.header_offset + _LOCAL_HEADER + names
    head = data[start : start + _PREFIX + 2]
    if len(head) < _PREFIX + 2:
        raise ValueError("not an npy array: the header is cut short")
    length = (int.from_bytes(head[8:10], "little") + _PREFIX if head[6] == 1
              else int.from_bytes(head[8:12], "little") + _PREFIX + 2)  # fmt: skip
    if length > min(info.file_size, _MAX_HEADER + 16):
        raise ValueError(f"member {info.filename} has an npy header longer than the member")
    located = _located_at(data[start : start + length], start, limit)
    if length + located.nbytes > info.file_size or start + info.file_size > len(data):
        raise ValueError(f"member {info.filename} is shorter than its header says")
    return located


def _locate_all(data: mmap.mmap, members: list[_Member], limit: int) -> list[Located | None]:
    """:func:`_locate` for every member at once: the local and npy headers are checked as
    arrays, and each distinct npy header text is parsed once. A member these checks do not
    clear gets None, and :func:`_locate` then says what is wrong with it (or that it is
    compressed)."""
    u8 = np.frombuffer(data, dtype=np.uint8)
    try:
        return _locate_in(u8, data, members, limit)
    except Exception:  # a case these checks did not foresee: every member one by one
        return [None] * len(members)
    finally:
        del u8  # the map is closed after this; no view of it may outlive the call


def _locate_in(
    u8: npt.NDArray[np.uint8], data: mmap.mmap, members: list[_Member], limit: int
) -> list[Located | None]:
    n = len(members)
    found: list[Located | None] = [None] * n
    if not n:
        return found
    total = len(u8)
    offset = np.fromiter((m.header_offset for m in members), dtype=np.int64, count=n)
    size = np.fromiter((m.file_size for m in members), dtype=np.int64, count=n)
    ok = np.fromiter((m.compress_type == zipfile.ZIP_STORED and not m.flag_bits & 1
                      for m in members), dtype=bool, count=n)  # fmt: skip
    ok &= (offset >= 0) & (offset + _LOCAL_HEADER <= total)
    at = np.where(ok, offset, 0)
    for i, byte in enumerate(_LOCAL_SIGNATURE):
        ok &= u8[at + i] == byte
    start = at + _LOCAL_HEADER + _u16(u8, at + 26) + _u16(u8, at + 28)
    ok &= start + _PREFIX + 2 <= total
    start = np.where(ok, start, 0)
    for i, byte in enumerate(_NPY_MAGIC):
        ok &= u8[start + i] == byte
    version = u8[start + 6]
    ok &= ((version == 1) | (version == 2)) & (u8[start + 7] == 0)
    length = np.where(version == 1, _u16(u8, start + 8) + _PREFIX,
                      _u16(u8, start + 8) + (_u16(u8, start + 10) << 16) + _PREFIX + 2)  # fmt: skip
    ok &= (length <= np.minimum(size, _MAX_HEADER + 16)) & (start + length <= total)
    ends = start + size
    for i in np.flatnonzero(ok).tolist():
        begin, stop = int(start[i]), int(start[i] + length[i])
        try:
            (shape, fortran, dtype), nbytes = _header_of(data[begin:stop], limit)
        except ValueError:
            continue  # _locate says why
        if stop - begin + nbytes <= size[i] and ends[i] <= total:
            found[i] = Located(offset=stop, dtype=dtype, shape=shape, fortran=fortran)
    return found


def _u16(u8: npt.NDArray[np.uint8], at: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Little-endian 16-bit values at the byte positions ``at``."""
    return u8[at].astype(np.int64) | (u8[at + 1].astype(np.int64) << 8)


_NPY_MAGIC = b"\x93NUMPY"


@functools.lru_cache(maxsize=4096)
def _header_of(raw: bytes, limit: int) -> tuple[Header, int]:
    """A whole npy header, parsed and checked once per text (members of one dtype and shape
    share it), with the size of the array it describes."""
    header = _parse_header(raw)
    shape = _check_header(header, limit)
    return header, _nbytes(shape, header[2])


def _located_at(raw: bytes, start: int, limit: int) -> Located:
    (shape, fortran, dtype), _size = _header_of(raw, limit)
    return Located(offset=start + len(raw), dtype=dtype, shape=shape, fortran=fortran)


def _json_refs(path: Path, stem: str) -> Iterator[OutputRef]:
    for key, value in _read_json_numbers(path).items():
        name = f"{stem}/{key}"
        error = _bad_name(name) or (None if _fits(value) else "an integer beyond 64 bits")
        yield OutputRef(name=name, file=path, kind="json", key=key, error=error)


def _read_json_numbers(path: Path) -> dict[str, float | int | bool]:
    try:
        data = safe_files.read_json_object(path)
    except UnsafeFileError as exc:
        raise OutputError(f"{exc} (outputs in .json files are flat objects of numbers)") from exc
    return {k: v for k, v in data.items() if isinstance(v, int | float | bool)}


def _fits(value: float | int | bool) -> bool:
    """Whether a JSON number becomes a numeric array (an int beyond 64 bits would not)."""
    return not isinstance(value, int) or -(2**63) <= value < 2**64


def _refs_for(path: Path, rel: str, limit: int) -> Iterator[OutputRef]:
    stem, _, suffix = rel.rpartition(".")
    if suffix == "npz":
        yield from _npz_refs(path, stem, limit)
    elif suffix == "npy":
        with open_regular(path) as handle:
            _check_header(_npy_header(handle), limit)
        yield OutputRef(name=stem, file=path, kind="npy", error=_bad_name(stem))
    elif suffix == "json":
        yield from _json_refs(path, stem)


def _walk(folder: Path) -> Iterator[tuple[Path, os.stat_result | OSError]]:
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


def _file_refs(
    path: Path, info: os.stat_result | OSError, rel: str, spec: OutputsConfig
) -> Iterator[OutputRef]:
    what = None
    if isinstance(info, OSError):
        what = f"cannot be listed: {info.strerror}"
    elif _printable(rel) != rel:
        what = "has a name that is not valid UTF-8 or is too long"
    elif stat.S_ISLNK(info.st_mode):
        what = f"is a symbolic link to {str(path.readlink())!r} (links are not followed)"
    elif not stat.S_ISREG(info.st_mode):
        what = "is not a regular file"
    elif info.st_size > spec.max_file_bytes:
        what = f"is larger than [outputs] max_file_bytes ({spec.max_file_bytes:,})"
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
    for path, info in _walk(folder):
        for ref in _file_refs(path, info, path.relative_to(folder).as_posix(), spec):
            if everything or matches(ref.name, include, exclude):
                _add(found, ref)
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
    return {ref.name: ref for ref in _file_refs(path, info, rel, _LIMITS)}


def _add(found: dict[str, OutputRef], ref: OutputRef) -> None:
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
                return _read_npy(handle, self._limit)
        if ref.kind == "npz":
            with self._archive(ref.file).open(f"{ref.key}.npy") as member:
                return _read_npy(member, self._limit)
        if ref.kind == "json":
            return np.asarray(_read_json_numbers(ref.file)[str(ref.key)])
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

    def _archive(self, path: Path) -> zipfile.ZipFile:
        """The zip directory of ``path``, parsed only when a compressed member is read (the
        index already located the uncompressed ones)."""
        if path not in self._archives:
            self._archives[path] = zipfile.ZipFile(self._file(path))
        return self._archives[path]
