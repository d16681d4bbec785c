"""One environment's outputs indexed once: where each array lies, its dtype and shape, and a
digest of its values, kept in an Arrow IPC file next to the outputs folder.

The runner writes the store right after the container finishes (``outputs.arrow`` beside
``outputs/``); comparing, reporting and explaining then read that index instead of walking
the folder and parsing every archive again, and two environments' arrays that are
bit-identical are found by their digests in bulk, without loading a byte of them (most
outputs of a large run are). The arrays themselves stay where the pipeline wrote them: an
uncompressed ``.npz`` member is read in place from its recorded offset.

The store is a cache of what :func:`reprocheck.outputs.index_outputs` finds: it records the
limits it was made with and a digest of the folder listing (names, sizes, modification
times), and a store that does not match the folder or the limits is rebuilt in memory, so a
stale or missing file never changes a verdict. Nothing here unpickles.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import mmap
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from reprocheck.compare.dtypes import flat
from reprocheck.compare.totals import nan_count
from reprocheck.config import OutputsConfig
from reprocheck.errors import OutputError
from reprocheck.npy_format import Columns, Located, array_nbytes, columns, map_file
from reprocheck.outputs import (
    OutputReader,
    OutputRef,
    add_ref,
    bad_name,
    file_problem,
    file_refs,
    index_outputs,
    open_regular,
    walk,
)
from reprocheck.plan import matches
from reprocheck.safe_files import utf8_text
from reprocheck.store import write_bytes_atomic

STORE_FILE = "outputs.arrow"
_DEFAULTS = OutputsConfig()  # the limits live in the config model
STORE_VERSION = "4"  # 4: JSON numbers are float64 (3 and 3.0 are one number)
DIGEST_BYTES = 16

SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("file", pa.binary()),  # relative to the outputs folder, as the file system's bytes
        ("kind", pa.string()),
        ("key", pa.string()),  # the member of an .npz or the key of a .json
        ("offset", pa.int64()),  # where an uncompressed .npz member's values start
        ("fortran", pa.bool_()),
        ("dtype", pa.string()),  # numpy's dtype.str; null when the output cannot be read
        ("shape", pa.list_(pa.int64())),
        ("size", pa.int64()),  # elements as compared (complex: real and imaginary parts)
        ("nans", pa.int64()),  # NaN elements (not comparable)
        ("digest", pa.binary(DIGEST_BYTES)),  # of dtype, shape and C-order bytes
        ("error", pa.string()),
    ]
)


def store_path(outputs_dir: Path) -> Path:
    return outputs_dir.parent / STORE_FILE


def listing_digest(folder: Path) -> str:
    """What the folder holds, by name, type, size and modification time (no byte read)."""
    hasher = hashlib.blake2b(digest_size=16)
    if folder.is_dir() and not folder.is_symlink():
        for path, info in walk(folder):
            rel = os.fsencode(path.relative_to(folder))
            if isinstance(info, OSError):
                hasher.update(rel + b"\0error\n")
            else:
                kind = stat.S_IFMT(info.st_mode)
                hasher.update(b"%s\0%d\0%d\0%d\n" % (rel, kind, info.st_size, info.st_mtime_ns))
    return hasher.hexdigest()


def _metadata(folder: Path, spec: OutputsConfig) -> dict[str, str]:
    return {
        "version": STORE_VERSION,
        "limits": json.dumps([spec.max_file_bytes, spec.max_array_bytes]),
        "listing": listing_digest(folder),
    }


# --------------------------------------------------------------------------- building


@dataclass(frozen=True, kw_only=True)
class _Row:
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    size: int | None = None
    nans: int | None = None
    digest: bytes | None = None
    error: str | None = None


@functools.lru_cache(maxsize=4096)
def _prefix(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bytes:
    return f"{dtype.str}{shape}".encode()


def digest(array: np.ndarray) -> bytes:
    """Equal for two arrays exactly when they have one dtype, shape and bytes (what
    :func:`reprocheck.compare.agreement_classes` calls bit-identical)."""
    data = np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
    return _digest(_prefix(array.dtype, tuple(int(n) for n in array.shape)), data)


def _digest(prefix: bytes, data: Any) -> bytes:
    hasher = hashlib.blake2b(prefix, digest_size=DIGEST_BYTES)
    hasher.update(data)
    return hasher.digest()


def _counts(array: np.ndarray) -> tuple[int, int]:
    """(elements, NaN elements) as compare counts them: complex as real and imaginary."""
    if array.dtype.kind not in "fc":
        return int(array.size), 0
    values, _shape = flat(array)
    return int(values.size), nan_count(values)


def _row(array: np.ndarray) -> _Row:
    if array.dtype.hasobject:  # never returned by the readers; refused here too
        return _Row(error=f"dtype {array.dtype} holds Python objects")
    size, nans = _counts(array)
    return _Row(dtype=array.dtype.str, shape=tuple(int(n) for n in array.shape), size=size,
                nans=nans, digest=digest(array))  # fmt: skip


class _Builder:
    """Reads each output once: located .npz members as slices of the mapped archive (no
    array made unless NaNs are to be counted), everything else through the reader."""

    def __init__(self, spec: OutputsConfig) -> None:
        self._reader = OutputReader(spec.max_array_bytes)
        self._maps: dict[Path, mmap.mmap] = {}

    def close(self) -> None:
        for data in self._maps.values():
            data.close()
        self._reader.close()

    def describe_all(self, refs: list[OutputRef]) -> list[_Row]:
        """A row per ref; small in-place arrays of one file, dtype and shape are read as one
        block per chunk (NaNs counted by rows), the rest one by one."""
        rows: list[_Row | None] = [None] * len(refs)
        blocks: dict[tuple[Path, np.dtype[Any], tuple[int, ...]], list[int]] = {}
        for i, ref in enumerate(refs):
            where = ref.located
            if (
                ref.error is None
                and where is not None
                and not where.fortran
                and where.nbytes <= _BLOCK_ARRAY_BYTES
            ):
                blocks.setdefault((ref.file, where.dtype, where.shape), []).append(i)
            else:
                rows[i] = self.describe(ref)
        for (path, dtype, shape), members in blocks.items():
            try:
                found = self._block(path, dtype, shape, [refs[i] for i in members])
            except (OutputError, OSError, ValueError):
                found = [self.describe(refs[i]) for i in members]  # each says what is wrong
            for i, row in zip(members, found, strict=True):
                rows[i] = row
        return [row if row is not None else _Row(error="not read") for row in rows]

    def describe(self, ref: OutputRef) -> _Row:
        if ref.error:
            return _Row(error=ref.error)
        try:
            where = ref.located
            if where is None or where.fortran:
                return _row(self._reader.load(ref))
            return self._located(ref.file, where)
        except (OutputError, OSError, ValueError) as exc:
            return _Row(error=f"cannot read output {ref.name} from {ref.file}: {exc}")

    def _map(self, path: Path) -> mmap.mmap:
        if path not in self._maps:
            with open_regular(path) as handle:
                self._maps[path] = map_file(handle)
        return self._maps[path]

    def _located(self, path: Path, where: Located) -> _Row:
        data = memoryview(self._map(path))[where.offset : where.offset + where.nbytes]
        return _located_row(data, where)

    def _block(
        self, path: Path, dtype: np.dtype[Any], shape: tuple[int, ...], refs: list[OutputRef]
    ) -> list[_Row]:
        data = self._map(path)
        nbytes = array_nbytes(shape, dtype)
        offsets = np.array([ref.located.offset for ref in refs if ref.located], dtype=np.int64)
        if len(offsets) != len(refs) or int(offsets.max()) + nbytes > len(data):
            raise ValueError("an array is cut short")
        u8 = np.frombuffer(data, dtype=np.uint8)
        try:
            return self._rows(u8, offsets, dtype, shape, nbytes)
        finally:
            del u8  # no view of the map may outlive the call: it is closed later

    @staticmethod
    def _rows(
        u8: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64], dtype: np.dtype[Any],
        shape: tuple[int, ...], nbytes: int,
    ) -> list[_Row]:  # fmt: skip
        code, elements = dtype.str, _elements(dtype, shape)
        nans, digests = _block_digests(u8, offsets, dtype, shape, nbytes)
        return [_Row(dtype=code, shape=shape, size=elements, nans=count, digest=value)
                for count, value in zip(nans.tolist(), digests, strict=True)]  # fmt: skip


def _located_row(data: Any, where: Located) -> _Row:
    """The row of the array ``where`` describes, whose bytes are ``data`` (a slice of the
    mapped archive): a C-order one is digested in place, without a copy."""
    if len(data) != where.nbytes:
        raise ValueError("the array is cut short")
    if where.fortran:
        return _row(np.frombuffer(data, dtype=where.dtype).reshape(where.shape, order="F"))
    size, nans = math.prod(where.shape), 0
    if where.dtype.kind in "fc":
        size, nans = _counts(np.frombuffer(data, dtype=where.dtype))
    return _Row(dtype=where.dtype.str, shape=where.shape, size=size, nans=nans,
                digest=_digest(_prefix(where.dtype, where.shape), data))  # fmt: skip


def _elements(dtype: np.dtype[Any], shape: tuple[int, ...]) -> int:
    """Elements as compare counts them: complex as real and imaginary parts."""
    return math.prod(shape) * (2 if dtype.kind == "c" else 1)


def _block_digests(
    u8: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64], dtype: np.dtype[Any],
    shape: tuple[int, ...], nbytes: int,
) -> tuple[npt.NDArray[np.int64], list[bytes]]:  # fmt: skip
    """NaN count and digest of each small C-order array of one dtype and shape whose bytes
    start at ``offsets``, gathered a block of rows at a time."""
    prefix = _prefix(dtype, shape)
    step = max(1, _GATHER_BYTES // max(nbytes, 1))
    columns = np.arange(nbytes, dtype=np.int64)
    nans = np.zeros(len(offsets), dtype=np.int64)
    digests: list[bytes] = []
    for start in range(0, len(offsets), step):
        block = u8[offsets[start : start + step, None] + columns]  # one array per row
        if dtype.kind in "fc" and nbytes:
            real = np.empty(0, dtype=dtype).real.dtype
            nans[start : start + len(block)] = np.isnan(block.view(real)).sum(axis=1)
        digests.extend(_digest(prefix, row) for row in block)
    return nans, digests


_BLOCK_ARRAY_BYTES = 1 << 16  # larger arrays are hashed in place, one by one
_GATHER_BYTES = 1 << 21  # bytes gathered per block (the index array is 8 times that)


def build_store(folder: Path, spec: OutputsConfig = _DEFAULTS) -> pa.Table:
    """Index every output under ``folder`` (no include/exclude: those apply when reading)
    and read each array once for its digest. Outputs that cannot be read are rows with an
    ``error``, as :func:`index_outputs` makes them. A plain per-sample archive is read as
    columns (:func:`reprocheck.npy_format.columns`), everything else output by output."""
    meta = _metadata(folder, spec)
    tables: list[pa.Table] = []
    found: dict[str, OutputRef] = {}
    if folder.is_dir() and not folder.is_symlink():
        for path, info in walk(folder):
            rel = path.relative_to(folder).as_posix()
            table = _archive_table(folder, path, info, rel, spec)
            if table is not None:
                tables.append(table)
                continue
            for ref in file_refs(path, info, rel, spec):
                add_ref(found, ref)
    tables.append(_refs_table(folder, list(found.values()), spec))
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if len(tables) > 1 and pc.count_distinct(table["name"]).as_py() != len(table):
        # two files give one output name: index_outputs says so of each, as for any folder
        refs = index_outputs(folder, max_file_bytes=spec.max_file_bytes,
                             max_array_bytes=spec.max_array_bytes)  # fmt: skip
        table = _refs_table(folder, list(refs.values()), spec)
    table = table.take(pc.sort_indices(table, [("name", "ascending")]))
    return table.replace_schema_metadata(meta)


def _refs_table(folder: Path, refs: list[OutputRef], spec: OutputsConfig) -> pa.Table:
    """The store's rows of ``refs``, each array read through :class:`_Builder`."""
    columns: dict[str, list[Any]] = {field.name: [] for field in SCHEMA}
    relative: dict[Path, bytes] = {}
    builder = _Builder(spec)
    try:
        described = builder.describe_all(refs)
        for ref, row in zip(refs, described, strict=True):
            located = ref.located
            if ref.file not in relative:
                relative[ref.file] = os.fsencode(ref.file.relative_to(folder))
            name, bad = utf8_text(ref.name)
            if bad and row.error is None:
                row = _Row(error=f"output name {name!r} is not valid UTF-8")
            columns["name"].append(name)
            columns["file"].append(relative[ref.file])
            columns["kind"].append(ref.kind)
            columns["key"].append(None if ref.key is None else utf8_text(ref.key)[0])
            columns["offset"].append(located.offset if located else None)
            columns["fortran"].append(located.fortran if located else None)
            columns["dtype"].append(row.dtype)
            columns["shape"].append(row.shape)
            columns["size"].append(row.size)
            columns["nans"].append(row.nans)
            columns["digest"].append(row.digest)
            columns["error"].append(row.error)
    finally:
        builder.close()
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def _archive_table(
    folder: Path, path: Path, info: os.stat_result | OSError, rel: str, spec: OutputsConfig
) -> pa.Table | None:
    """The rows of a plain ``.npz`` archive built as columns, or None when the archive
    needs reading member by member (see :func:`reprocheck.npy_format.columns`)."""
    stem, _, suffix = rel.rpartition(".")
    if suffix != "npz" or bad_name(stem) or file_problem(path, info, rel, spec):
        return None
    if isinstance(info, OSError) or not info.st_size:
        return None
    try:
        with open_regular(path) as handle, map_file(handle) as data:
            found = columns(data, spec.max_array_bytes)
            if found is None or int(found.key_offsets[-1]) >= 1 << 31:
                return None
            nans, digests = _archive_digests(data, found)
    except (OutputError, OSError, ValueError):
        return None  # read member by member, which says what is wrong
    count = len(found.offset)
    keys = pa.StringArray.from_buffers(count, pa.py_buffer(found.key_offsets.astype(np.int32)),
                                       pa.py_buffer(found.key_bytes))  # fmt: skip
    layouts = [header for header, _nbytes in found.layouts]
    ids = pa.array(found.layout)
    fortran = pa.array([order for _shape, order, _dtype in layouts], pa.bool_())
    dtypes = pa.array([dtype.str for _shape, _order, dtype in layouts], pa.string())
    shapes = pa.array([list(shape) for shape, _order, _dtype in layouts], pa.list_(pa.int64()))
    sizes = pa.array([_elements(dtype, shape) for shape, _order, dtype in layouts], pa.int64())
    digest = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(DIGEST_BYTES), count, [None, pa.py_buffer(digests)]
    )
    return pa.Table.from_arrays(
        [
            pc.binary_join_element_wise(stem, keys, "/"),
            pa.repeat(pa.scalar(os.fsencode(rel), pa.binary()), count),
            pa.repeat(pa.scalar("npz"), count),
            keys,
            pa.array(found.offset),
            fortran.take(ids),
            dtypes.take(ids),
            shapes.take(ids),
            sizes.take(ids),
            pa.array(nans),
            digest,
            pa.nulls(count, pa.string()),
        ],
        schema=SCHEMA,
    )


def _archive_digests(
    data: mmap.mmap, found: Columns
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """NaN count and digest (as rows of bytes) of every member :func:`columns` located."""
    count = len(found.offset)
    nans = np.zeros(count, dtype=np.int64)
    digests = np.zeros((count, DIGEST_BYTES), dtype=np.uint8)
    u8 = np.frombuffer(data, dtype=np.uint8)
    try:
        order = np.argsort(found.layout, kind="stable")  # members grouped by layout
        bounds = np.searchsorted(found.layout[order], np.arange(len(found.layouts) + 1))
        for layout, ((shape, fortran, dtype), nbytes) in enumerate(found.layouts):
            members = order[bounds[layout] : bounds[layout + 1]]
            offsets = found.offset[members]
            if not fortran and nbytes <= _BLOCK_ARRAY_BYTES:
                counts, values = _block_digests(u8, offsets, dtype, shape, nbytes)
            else:
                rows = [_located_row(u8[offset : offset + nbytes], Located(
                            offset=offset, dtype=dtype, shape=shape, fortran=fortran))
                        for offset in offsets.tolist()]  # fmt: skip
                counts = np.array([row.nans for row in rows], dtype=np.int64)
                values = [row.digest or b"" for row in rows]
            nans[members] = counts
            digests[members] = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(
                -1, DIGEST_BYTES)  # fmt: skip
    finally:
        del u8  # no view of the map may outlive the call: the caller closes it
    return nans, digests


def write_store(outputs_dir: Path, spec: OutputsConfig = _DEFAULTS) -> Path:
    """Build the store of ``outputs_dir`` and write it beside the folder (atomically)."""
    path = store_path(outputs_dir)
    _write_table(path, build_store(outputs_dir, spec))
    return path


def _write_table(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    write_bytes_atomic(path, sink.getvalue().to_pybytes())


def _read_store(path: Path) -> pa.Table | None:
    try:
        with pa.memory_map(str(path)) as source:
            return ipc.open_file(source).read_all()
    except (OSError, pa.ArrowInvalid):
        return None


def _matches(table: pa.Table, folder: Path, spec: OutputsConfig) -> bool:
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return table.schema.remove_metadata().equals(SCHEMA) and meta == _metadata(folder, spec)


# --------------------------------------------------------------------------- reading


class OutputStore:
    """One environment's outputs by name, selected by ``include``/``exclude``: refs to load
    arrays from, and the digests, sizes and NaN counts recorded when the store was made.

    Everything per output stays in the Arrow table or in numpy arrays made from it on first
    use (a million outputs cost bytes each, not Python objects); ``names`` and the name ->
    row dict ``row`` are built only when asked for. Callers that already know rows (the
    matrix) use the ``*_at`` methods and :meth:`rows_of`."""

    def __init__(self, folder: Path, table: pa.Table, spec: OutputsConfig) -> None:
        self.folder = folder
        if spec.include != ("*",) or spec.exclude:
            keep = [matches(n, spec.include, spec.exclude) for n in table["name"].to_pylist()]
            table = table.filter(pa.array(keep, type=pa.bool_()))
        self.table = table.combine_chunks()
        self._reader = OutputReader(spec.max_array_bytes)

    # --- by name (built on first use) ---------------------------------------------------

    @functools.cached_property
    def names(self) -> list[str]:
        return self.table["name"].to_pylist()  # type: ignore[no-any-return]

    @functools.cached_property
    def row(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    @functools.cached_property
    def digests(self) -> list[bytes | None]:
        return self.table["digest"].to_pylist()  # type: ignore[no-any-return]

    def find(self, name: str) -> int:
        """The row of ``name``, -1 when absent: from the ``row`` dict when something built
        it, else by binary search over the names in sorted order (8 bytes per output, not
        a dict of a million entries for a report that looks up a few dozen)."""
        if "row" in self.__dict__:
            return self.row.get(name, -1)
        order, column = self._sorted
        lo, hi = 0, len(order)
        while lo < hi:
            mid = (lo + hi) // 2
            if column[int(order[mid])].as_py() < name:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(order) and column[int(order[lo])].as_py() == name:
            return int(order[lo])
        return -1

    @functools.cached_property
    def _sorted(self) -> tuple[npt.NDArray[np.int64], pa.Array]:
        column = self.table["name"].combine_chunks()
        return np.asarray(pc.sort_indices(column).to_numpy(), np.int64), column

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) >= 0

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def rows_of(self, names: list[str]) -> npt.NDArray[np.int64]:
        """The row of each name, -1 where this store has none (vectorized: no dict)."""
        if not names:
            return np.zeros(0, dtype=np.int64)
        found = pc.index_in(pa.array(names, pa.string()), value_set=self.table["name"])
        return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), np.int64)

    def _row(self, name: str) -> int:
        row = self.find(name)
        if row < 0:
            raise KeyError(name)
        return row

    def error(self, name: str) -> str | None:
        row = self.find(name)
        return None if row < 0 else self.error_at(row)

    def ref(self, name: str) -> OutputRef:
        return self.ref_at(self._row(name))

    def load(self, name: str) -> np.ndarray:
        """The array ``name`` (OutputError when it cannot be read; KeyError when absent)."""
        return self.load_at(self._row(name))

    def layout(self, name: str) -> tuple[str, tuple[int, ...]] | None:
        """(dtype code, shape) of a readable output, else None."""
        row = self.find(name)
        return None if row < 0 else self.layout_at(row)

    def load_stacked(self, names: list[str]) -> np.ndarray:
        return self.load_rows([self._row(name) for name in names])

    # --- by row ------------------------------------------------------------------------

    @functools.cached_property
    def digest_words(self) -> npt.NDArray[np.uint64]:
        """Each row's digest as two 64-bit words (zeros where there is none: see
        :attr:`known`), so digests compare as arrays."""
        column = self.table["digest"]
        n = self.table.num_rows
        if not n:
            return np.zeros((0, 2), dtype=np.uint64)
        chunk = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        data = chunk.buffers()[1]
        words = np.frombuffer(data, dtype=np.uint64, count=2 * (chunk.offset + n))
        words = words[2 * chunk.offset :].reshape(n, 2)
        return np.where(self.known[:, None], words, np.uint64(0))

    @functools.cached_property
    def known(self) -> npt.NDArray[np.bool_]:
        """A digest is there (the output was read when the store was made)."""
        return np.asarray(pc.is_valid(self.table["digest"]).to_numpy(zero_copy_only=False))

    @functools.cached_property
    def _layouts(self) -> tuple[npt.NDArray[np.int32], list[tuple[str, tuple[int, ...]]]]:
        return _factorized_layouts(self.table)

    def layout_ids(self) -> tuple[npt.NDArray[np.int32], list[tuple[str, tuple[int, ...]]]]:
        """Each row's layout as an index into the list of distinct (dtype code, shape)
        pairs; -1 for an output that cannot be read."""
        return self._layouts

    def layout_at(self, row: int) -> tuple[str, tuple[int, ...]] | None:
        ids, layouts = self._layouts
        return None if ids[row] < 0 else layouts[ids[row]]

    def error_at(self, row: int) -> str | None:
        return self.table["error"][row].as_py()  # type: ignore[no-any-return]

    def ref_at(self, row: int) -> OutputRef:
        """The row's ref: where its bytes lie from the columns made into numpy arrays once
        (:attr:`_placement`, the layouts), the rest read as single values."""
        offsets, fortran, file_ids, files = self._placement
        layout = self.layout_at(row)
        if file_ids[row] < 0:
            return self._ref_of_entry(row)

        def value(name: str) -> Any:
            return self.table.column(name)[row].as_py()

        located = None
        if layout is not None and offsets[row] >= 0:
            located = Located(offset=int(offsets[row]), dtype=np.dtype(layout[0]),
                              shape=layout[1], fortran=bool(fortran[row]))  # fmt: skip
        return OutputRef(name=value("name"), file=self.folder / os.fsdecode(files[file_ids[row]]),
                         kind=value("kind"), key=value("key"),
                         error=None if layout is not None else value("error"),
                         located=located)  # fmt: skip

    def _ref_of_entry(self, row: int) -> OutputRef:
        entry = self.table.slice(row, 1).to_pylist()[0]
        located = None
        if entry["offset"] is not None and entry["error"] is None:
            located = Located(offset=entry["offset"], dtype=np.dtype(entry["dtype"]),
                              shape=tuple(entry["shape"]),
                              fortran=bool(entry["fortran"]))  # fmt: skip
        return OutputRef(name=entry["name"], file=self.folder / os.fsdecode(entry["file"]),
                         kind=entry["kind"], key=entry["key"], error=entry["error"],
                         located=located)  # fmt: skip

    def load_at(self, row: int) -> np.ndarray:
        return self._reader.load(self.ref_at(row))

    @functools.cached_property
    def _placement(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_],
                                  npt.NDArray[np.int32], list[bytes]]:  # fmt: skip
        """Per row: the offset of the array's data in its file (-1: not read in place),
        Fortran order, and the file as an index into the distinct files."""
        table = self.table
        offsets = pc.fill_null(table["offset"], -1).to_numpy(zero_copy_only=False)
        fortran = pc.fill_null(table["fortran"], False).to_numpy(zero_copy_only=False)
        files = table["file"].combine_chunks().dictionary_encode()
        ids = pc.fill_null(files.indices, -1).to_numpy(zero_copy_only=False)
        return (np.asarray(offsets, np.int64), np.asarray(fortran, bool),
                np.asarray(ids, np.int32), files.dictionary.to_pylist())  # fmt: skip

    def load_rows(self, rows: list[int]) -> np.ndarray:
        """Outputs of one dtype and shape as the rows of one array ``(len(rows), *shape)``:
        members read in place are read straight into it, the rest loaded one by one."""
        layout = self.layout_at(rows[0]) if rows else None
        if layout is None:
            raise OutputError("no outputs to stack")
        dtype, shape = np.dtype(layout[0]), layout[1]
        offsets, fortran, file_ids, files = self._placement
        at = np.asarray(rows, dtype=np.int64)
        first = file_ids[at[0]]
        if (
            first >= 0
            and (offsets[at] >= 0).all()
            and not fortran[at].any()
            and (file_ids[at] == first).all()
        ):
            path = self.folder / os.fsdecode(files[first])
            nbytes = math.prod(shape) * dtype.itemsize
            data = self._reader.read_rows(path, offsets[at].tolist(), nbytes)
            return data.view(dtype).reshape((len(rows), *shape))
        return np.stack([self.load_at(row) for row in rows])

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> OutputStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _factorized_layouts(
    table: pa.Table,
) -> tuple[npt.NDArray[np.int32], list[tuple[str, tuple[int, ...]]]]:
    """Rows grouped by (dtype code, shape), with numpy: an index per row (-1 for an output
    with an error) and the distinct layouts."""
    n = table.num_rows
    if not n:
        return np.zeros(0, dtype=np.int32), []
    readable = np.asarray(pc.is_null(table["error"]).to_numpy(zero_copy_only=False))
    dtypes = table["dtype"].combine_chunks().dictionary_encode()
    dtype_id = np.asarray(pc.fill_null(dtypes.indices, -1).to_numpy(zero_copy_only=False),
                          np.int64)  # fmt: skip
    shape = table["shape"].combine_chunks()
    ndim = np.asarray(pc.fill_null(pc.list_value_length(shape), 0).to_numpy(
        zero_copy_only=False), np.int64)  # fmt: skip
    flat_dims = np.asarray(pc.list_flatten(shape).to_numpy(zero_copy_only=False), np.int64)
    width = int(ndim.max()) if n else 0
    key = np.full((n, 2 + width), -1, dtype=np.int64)
    key[:, 0], key[:, 1] = dtype_id, ndim
    if flat_dims.size:
        starts = np.cumsum(ndim) - ndim
        owner = np.repeat(np.arange(n), ndim)
        key[owner, 2 + np.arange(flat_dims.size) - starts[owner]] = flat_dims
    readable &= dtype_id >= 0
    distinct, inverse = _distinct_rows(key[readable])
    ids = np.full(n, -1, dtype=np.int32)
    ids[readable] = inverse
    codes = dtypes.dictionary.to_pylist()
    layouts = [(str(codes[k[0]]), tuple(int(d) for d in k[2 : 2 + k[1]])) for k in distinct]
    return ids, layouts


def _distinct_rows(
    key: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """``np.unique(key, axis=0, return_inverse=True)`` by hashing (Arrow's dictionary
    encoding, column by column) rather than sorting every row: a million rows of a few
    layouts take milliseconds instead of seconds. The distinct rows come sorted."""
    if not len(key):
        return key, np.zeros(0, dtype=np.int32)
    code = np.zeros(len(key), dtype=np.int64)
    for column in key.T:
        encoded = pc.dictionary_encode(pa.array(column))
        code = code * len(encoded.dictionary) + encoded.indices.to_numpy().astype(np.int64)
        code = pc.dictionary_encode(pa.array(code)).indices.to_numpy().astype(np.int64)
    _codes, first = np.unique(code, return_index=True)
    rows = key[first]  # one row per code, in code order
    order = np.lexsort(rows.T[::-1])  # sorted as np.unique sorts rows
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return rows[order], rank[code]


def open_store(outputs_dir: Path, spec: OutputsConfig = _DEFAULTS) -> OutputStore:
    """The store of ``outputs_dir``: the stored file when it matches the folder and the
    limits, else one built now and saved for the next reader (when the folder's parent is
    writable; the outputs themselves are never touched)."""
    table = _read_store(store_path(outputs_dir))
    if table is None or not _matches(table, outputs_dir, spec):
        table = build_store(outputs_dir, spec)
        with contextlib.suppress(OSError):
            _write_table(store_path(outputs_dir), table)
    return OutputStore(outputs_dir, table, spec)


def empty_store(spec: OutputsConfig = _DEFAULTS) -> OutputStore:
    """The store of an environment that produced nothing (it failed)."""
    return OutputStore(Path(), SCHEMA.empty_table(), spec)


@dataclass(frozen=True)
class Described:
    """An output as its store describes it: the digest of its dtype, shape and bytes."""

    digest: bytes
    dtype: np.dtype[Any]
    shape: tuple[int, ...]


class OutputFolders:
    """Output folders, each opened once through its store (explain and the HTML report look
    up the same folders for many outputs)."""

    def __init__(self) -> None:
        self._stores: dict[Path, OutputStore] = {}

    def load(self, folder: Path, output: str) -> np.ndarray | None:
        """The array ``output`` in ``folder``, or None when the folder does not hold it
        or it cannot be read (the comparison already reported why)."""
        store = self._store(folder)
        if output not in store or store.error(output):
            return None
        try:
            return store.load(output)
        except OutputError:
            return None

    def describe(self, folder: Path, output: str) -> Described | None:
        """What the store recorded of ``output`` (its digest, dtype and shape), read without
        loading it; None as :meth:`load` would give None."""
        store = self._store(folder)
        row = store.find(output)
        layout = None if row < 0 else store.layout_at(row)  # None for an output in error
        digest = None if layout is None else store.table["digest"][row].as_py()
        if layout is None or digest is None:
            return None
        return Described(digest=digest, dtype=np.dtype(layout[0]), shape=layout[1])

    def _store(self, folder: Path) -> OutputStore:
        if folder not in self._stores:
            self._stores[folder] = open_store(folder)
        return self._stores[folder]

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
