"""The .npy and .npz formats, read without pickle and without zipfile's cost per member.

An archive np.savez writes is a plain zip of uncompressed members; a per-sample pipeline
writes millions of them. Its central directory and every member's local and npy headers are
read here in bulk, as arrays over the mapped file, and each distinct npy header text is
parsed once (numpy's parser is a literal_eval). Anything these readers do not recognise is
left to zipfile and numpy, which say what is wrong with it.
"""

from __future__ import annotations

import functools
import io
import math
import mmap
import struct
import zipfile
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

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
        return array_nbytes(self.shape, self.dtype)


def array_nbytes(shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    """An array's size in bytes, in Python ints (a header may claim any shape)."""
    return math.prod(shape) * dtype.itemsize


# --------------------------------------------------------------------------- npy headers


Header = tuple[tuple[int, ...], bool, np.dtype[Any]]


def npy_header(handle: IO[bytes]) -> Header:
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


def check_header(header: Header, limit: int) -> tuple[int, ...]:
    """The array's shape, after refusing object arrays and arrays larger than ``limit``."""
    shape, _fortran, dtype = header
    if dtype.hasobject:
        raise ValueError(f"dtype {dtype} holds Python objects (reading it would need pickle)")
    size = array_nbytes(shape, dtype)
    if size > limit:
        raise ValueError(
            f"array {shape} of {dtype} inflates to {size:,} bytes, more than "
            f"[outputs] max_array_bytes ({limit:,})"
        )
    return shape


def read_npy(handle: IO[bytes], limit: int) -> np.ndarray:
    check_header(npy_header(handle), limit)
    handle.seek(0)
    return np.lib.format.read_array(handle, allow_pickle=False, max_header_size=_MAX_HEADER)


# --------------------------------------------------------------------------- zip directory


class Member(NamedTuple):
    """What indexing needs of a zip member (a subset of zipfile.ZipInfo)."""

    filename: str
    header_offset: int
    compress_type: int
    flag_bits: int
    file_size: int

    @classmethod
    def of(cls, info: zipfile.ZipInfo) -> Member:
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


def _directory(data: mmap.mmap) -> tuple[int, int, int] | None:
    """(members, start, end) of the central directory of a plain single-disk zip (zip64 end
    records included); None for anything else."""
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
    return count, offset, end


def directory_members(data: mmap.mmap) -> list[Member] | None:
    """The central directory of a plain single-disk zip without zip64 sizes, read in one
    pass (zipfile builds a ZipInfo per member, several times slower for the millions of
    members a per-sample .npz holds); None for anything else, which zipfile then reads."""
    found = _directory(data)
    if found is None:
        return None
    count, offset, end = found
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
        members.append(Member(name, header_offset, method, flags, size_))
        position += _ENTRY.size + names + extra + comment
    return members if position == end else None


def map_file(handle: IO[bytes]) -> mmap.mmap:
    """The whole file, mapped read-only (one archive holds up to millions of members, whose
    headers are then slices rather than two system calls each)."""
    return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)


_LOCAL_HEADER = 30  # fixed part of a zip local file header
_LOCAL_SIGNATURE = b"PK\x03\x04"


def locate(data: mmap.mmap, info: Member, limit: int) -> Located | None:
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


def locate_all(data: mmap.mmap, members: list[Member], limit: int) -> list[Located | None]:
    """:func:`locate` for every member at once: the local and npy headers are checked as
    arrays, and each distinct npy header text is parsed once. A member these checks do not
    clear gets None, and :func:`locate` then says what is wrong with it (or that it is
    compressed)."""
    u8 = np.frombuffer(data, dtype=np.uint8)
    try:
        return _locate_in(u8, data, members, limit)
    except Exception:  # a case these checks did not foresee: every member one by one
        return [None] * len(members)
    finally:
        del u8  # the map is closed after this; no view of it may outlive the call


def _locate_in(
    u8: npt.NDArray[np.uint8], data: mmap.mmap, members: list[Member], limit: int
) -> list[Located | None]:
    n = len(members)
    found: list[Located | None] = [None] * n
    if not n:
        return found
    offset = np.fromiter((m.header_offset for m in members), dtype=np.int64, count=n)
    size = np.fromiter((m.file_size for m in members), dtype=np.int64, count=n)
    ok = np.fromiter((m.compress_type == zipfile.ZIP_STORED and not m.flag_bits & 1
                      for m in members), dtype=bool, count=n)  # fmt: skip
    ok, start, length = _npy_headers(u8, offset, size, ok)
    total = len(u8)
    ends = start + size
    for i in np.flatnonzero(ok).tolist():
        begin, stop = int(start[i]), int(start[i] + length[i])
        try:
            (shape, fortran, dtype), nbytes = _header_of(data[begin:stop], limit)
        except ValueError:
            continue  # locate says why
        if stop - begin + nbytes <= size[i] and ends[i] <= total:
            found[i] = Located(offset=stop, dtype=dtype, shape=shape, fortran=fortran)
    return found


def _npy_headers(
    u8: npt.NDArray[np.uint8], offset: npt.NDArray[np.int64], size: npt.NDArray[np.int64],
    ok: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.int64]]:  # fmt: skip
    """(still ok, npy header start, npy header length) of the stored members whose local
    headers start at ``offset``: the local header's signature, an npy magic and version, a
    header length within the member and the file."""
    total = len(u8)
    ok = ok & (offset >= 0) & (offset + _LOCAL_HEADER <= total)
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
    return ok, start, length


def _u16(u8: npt.NDArray[np.uint8], at: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Little-endian 16-bit values at the byte positions ``at``."""
    return u8[at].astype(np.int64) | (u8[at + 1].astype(np.int64) << 8)


_NPY_MAGIC = b"\x93NUMPY"


@functools.lru_cache(maxsize=4096)
def _header_of(raw: bytes, limit: int) -> tuple[Header, int]:
    """A whole npy header, parsed and checked once per text (members of one dtype and shape
    share it), with the size of the array it describes."""
    header = _parse_header(raw)
    shape = check_header(header, limit)
    return header, array_nbytes(shape, header[2])


def _located_at(raw: bytes, start: int, limit: int) -> Located:
    (shape, fortran, dtype), _size = _header_of(raw, limit)
    return Located(offset=start + len(raw), dtype=dtype, shape=shape, fortran=fortran)


# --------------------------------------------------------------------------- columns


class Columns(NamedTuple):
    """Every .npy member of an archive as arrays, in directory order: keys (the member names
    without ``.npy``) as ASCII bytes cut at ``key_offsets``, where each array's values start,
    and an index into ``layouts`` (shape, fortran order, dtype, bytes) per member."""

    key_bytes: npt.NDArray[np.uint8]
    key_offsets: npt.NDArray[np.int64]
    offset: npt.NDArray[np.int64]
    layout: npt.NDArray[np.int64]
    layouts: list[tuple[Header, int]]


def columns(data: mmap.mmap, limit: int) -> Columns | None:
    """The archive's members at array speed, for the plain case np.savez writes with many
    members: a zip directory without zip64 sizes, every member stored, ASCII names that are
    sane output keys, local and npy headers that check out, at most ``_MAX_LAYOUTS`` npy
    header texts. None for anything else: :func:`directory_members`, :func:`locate_all` and
    :func:`locate` then read the archive member by member and say what is wrong."""
    found = _directory(data)
    if found is None:
        return None
    u8 = np.frombuffer(data, dtype=np.uint8)
    try:
        return _columns(u8, *found, limit)
    except ValueError:  # a header text numpy refuses, or one larger than the limit
        return None
    finally:
        del u8  # the caller closes the map; no view of it may outlive this call


_MAX_LAYOUTS = 4096  # distinct npy header texts per archive read as columns


def _columns(u8: npt.NDArray[np.uint8], count: int, start: int, end: int,
             limit: int) -> Columns | None:  # fmt: skip
    entry = _directory_entries(u8[start:end], count)
    if entry is None:
        return None
    entry += start
    flags, method = _u16(u8, entry + 8), _u16(u8, entry + 10)
    compressed, size, offset = _u32(u8, entry + 20), _u32(u8, entry + 24), _u32(u8, entry + 42)
    if (method != zipfile.ZIP_STORED).any() or (flags & 1).any():
        return None
    if ((compressed == 0xFFFFFFFF) | (size == 0xFFFFFFFF) | (offset == 0xFFFFFFFF)).any():
        return None  # zip64 sizes
    names = _u16(u8, entry + 28)
    last = entry + _ENTRY.size + names
    npy = names >= 4
    for i, byte in enumerate(b".npy"):
        npy &= u8[np.where(npy, last - 4 + i, 0)] == byte
    entry, size, offset, names = entry[npy], size[npy], offset[npy], names[npy] - 4
    key_offsets = np.zeros(len(entry) + 1, dtype=np.int64)
    np.cumsum(names, out=key_offsets[1:])
    key_bytes = u8[np.repeat(entry + _ENTRY.size - key_offsets[:-1], names)
                   + np.arange(int(key_offsets[-1]), dtype=np.int64)]  # fmt: skip
    if (
        (key_bytes >= 0x80).any()
        or (key_bytes == ord("/")).any()
        or _odd_keys(key_bytes, key_offsets)
    ):
        return None  # not ASCII, or a key that is no output name: read one by one
    ok, header, length = _npy_headers(u8, offset, size, np.ones(len(entry), dtype=bool))
    if not ok.all():
        return None
    grouped = _layouts(u8, header, length, limit)
    if grouped is None:
        return None
    layout, layouts = grouped
    nbytes = np.array([n for _header, n in layouts], dtype=np.int64)[layout]
    if (length + nbytes > size).any() or (header + size > len(u8)).any():
        return None
    return Columns(key_bytes, key_offsets, header + length, layout, layouts)  # copies of the map


def _directory_entries(
    directory: npt.NDArray[np.uint8], count: int
) -> npt.NDArray[np.int64] | None:
    """Where each of the ``count`` central directory entries starts: every place the entry
    signature appears, kept only if each entry's lengths lead exactly to the next one and
    the last to the directory's end (a name holding the signature breaks that chain)."""
    at = np.flatnonzero(directory[: max(len(directory) - _ENTRY.size + 1, 0)] == 0x50)
    for i, byte in enumerate(_ENTRY_SIGNATURE[1:], 1):
        at = at[directory[at + i] == byte]
    if not count:
        return at if not len(directory) else None
    if len(at) != count or at[0] != 0:
        return None
    lengths = _u16(directory, at + 28) + _u16(directory, at + 30) + _u16(directory, at + 32)
    following = at + _ENTRY.size + lengths
    if (following[:-1] != at[1:]).any() or following[-1] != len(directory):
        return None
    return at.astype(np.int64)


def _odd_keys(key_bytes: npt.NDArray[np.uint8], key_offsets: npt.NDArray[np.int64]) -> bool:
    """Whether a key is empty, ``.`` or ``..`` (no output name)."""
    lengths = np.diff(key_offsets)
    if (lengths == 0).any():
        return True
    starts = key_offsets[:-1]
    dot = key_bytes[starts] == ord(".")
    second = key_bytes[np.minimum(starts + 1, len(key_bytes) - 1)] == ord(".")
    return bool(((lengths == 1) & dot).any() or ((lengths == 2) & dot & second).any())


def _layouts(
    u8: npt.NDArray[np.uint8], start: npt.NDArray[np.int64], length: npt.NDArray[np.int64],
    limit: int,
) -> tuple[npt.NDArray[np.int64], list[tuple[Header, int]]] | None:  # fmt: skip
    """Each member's npy header text, grouped: an id per member and the parsed header and
    array size per id. The texts of one length are gathered a block at a time and grouped
    by hashing (Arrow's dictionary encoding), so an archive of many shapes (boxes per image,
    a variable count each) costs one pass over its headers, and each text is parsed once."""
    layout = np.full(len(start), -1, dtype=np.int64)
    layouts: list[tuple[Header, int]] = []
    ids: dict[bytes, int] = {}
    for size in np.unique(length).tolist():
        members = np.flatnonzero(length == size)
        columns = np.arange(size, dtype=np.int64)
        step = max(1, _HEADER_BLOCK // size)
        for i in range(0, len(members), step):
            chunk = members[i : i + step]
            block = np.ascontiguousarray(u8[start[chunk, None] + columns])
            texts = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(size), len(chunk), [None, pa.py_buffer(block)]
            )
            encoded = pc.dictionary_encode(texts)
            local = []
            for text in encoded.dictionary.to_pylist():
                if text not in ids:
                    if len(layouts) == _MAX_LAYOUTS:
                        return None
                    ids[text] = len(layouts)
                    layouts.append(_header_of(text, limit))
                local.append(ids[text])
            indices = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
            layout[chunk] = np.array(local, dtype=np.int64)[indices]
    return layout, layouts


_HEADER_BLOCK = 1 << 20  # header bytes compared per block


def _u32(u8: npt.NDArray[np.uint8], at: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Little-endian 32-bit values at the byte positions ``at``."""
    return _u16(u8, at) | (_u16(u8, at + 2) << 16)
