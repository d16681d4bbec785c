"""A per-sample archive read as columns gives, row for row, the store that reading it member
by member gives: every dtype kind, 0-d, empty, Fortran-order and large arrays, NaN/Inf/-0.0,
hostile keys (signatures inside names, '/', '.', non-ASCII), compressed archives, and names
two files share."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reprocheck.output_store as output_store
from reprocheck import npy_format
from reprocheck.npy_format import columns, map_file
from reprocheck.output_store import build_store

CODES = ["?", "i1", "u1", "<i2", ">u2", "<i4", "<u8", "<f2", "<f4", ">f8", "<c8", "<c16"]
CODES += ["<M8[s]", "<m8[ns]", "S3", "<U2"]
DTYPES = [np.dtype(code) for code in CODES] + [np.dtype([("x", "<f4"), ("n", "<i2")])]
KEYS = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True),
    st.sampled_from(["", ".", "..", "a/b", "é", "PK\x01\x02", "x PK\x05\x06 y", "s.npy", "-x"]),
)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.sampled_from([(), (0,), (3,), (2, 3), (4, 0, 2), (70_000,)]))
    if shape == (70_000,) and dtype.itemsize > 8:
        shape = (5_000,)
    values = draw(hnp.arrays(dtype, shape, elements=_elements(dtype), fill=_fill(dtype)))
    if draw(st.booleans()) and values.ndim == 2:
        values = np.asfortranarray(values)
    return values


def _elements(dtype: np.dtype) -> st.SearchStrategy | None:
    if dtype.kind == "f":
        return st.sampled_from([0.0, -0.0, 1.5, np.nan, np.inf, -np.inf])
    return None


def _fill(dtype: np.dtype) -> st.SearchStrategy | None:
    return st.just(np.nan) if dtype.kind == "f" else None


def _slow(folder: Path, monkeypatch: pytest.MonkeyPatch) -> pa.Table:
    with monkeypatch.context() as patch:
        patch.setattr(output_store, "columns", lambda _data, _limit: None)
        return build_store(folder)


@settings(max_examples=60, deadline=None)
@given(
    archives=st.lists(st.dictionaries(KEYS, arrays(), max_size=5), min_size=1, max_size=3),
    compressed=st.lists(st.booleans(), min_size=3, max_size=3),
    clash=st.booleans(),
)
def test_columns_equal_member_by_member(tmp_path_factory, archives, compressed, clash) -> None:
    out = tmp_path_factory.mktemp("out")
    (out / "sub").mkdir()
    for i, (arrays_, packed) in enumerate(zip(archives, compressed, strict=False)):
        name = out / ("sub" if i % 2 else "") / f"f{i}.npz"
        (np.savez_compressed if packed else np.savez)(name, **arrays_)
    plain = [key for key in archives[0] if key.isidentifier() and key.isascii()]
    if clash and plain:  # f0/<key>.npy and member <key> of f0.npz: one name, two files
        (out / "f0").mkdir()
        np.save(out / "f0" / f"{plain[0]}.npy", np.zeros(2))
    (out / "m.json").write_text('{"a": 1.5, "b": -0.0}')
    with pytest.MonkeyPatch.context() as monkeypatch:
        slow = _slow(out, monkeypatch)
    fast = build_store(out)
    assert fast.to_pylist() == slow.to_pylist()
    assert fast.schema == slow.schema


@settings(max_examples=30, deadline=None)
@given(
    count=st.integers(0, 300),
    dtype=st.sampled_from(DTYPES),
    shape=st.sampled_from([(), (0,), (4,), (2, 2)]),
)
def test_plain_archives_are_read_as_columns(tmp_path_factory, count, dtype, shape) -> None:
    """What np.savez writes with sane keys takes the column path (so the equality above is
    not only ever comparing the slow path with itself)."""
    out = tmp_path_factory.mktemp("out")
    np.savez(out / "p.npz", **{f"s{i:05d}": np.zeros(shape, dtype) for i in range(count)})
    with open(out / "p.npz", "rb") as handle, map_file(handle) as data:
        found = columns(data, 1 << 30)
    assert found is not None and len(found.offset) == count
    table = build_store(out)
    assert table.num_rows == count and table["error"].null_count == count


def test_damaged_members_are_errors_as_before(tmp_path: Path, monkeypatch) -> None:
    """A member whose npy header is cut, or larger than the limit, leaves the column path;
    the slow path names what is wrong with that member and keeps the others."""
    out = tmp_path / "out"
    out.mkdir()
    np.savez(out / "p.npz", a=np.zeros(3), b=np.ones(3))
    data = bytearray((out / "p.npz").read_bytes())
    at = data.find(b"\x93NUMPY", data.find(b"b.npy"))
    data[at + 1] = ord("X")  # b's npy magic
    (out / "p.npz").write_bytes(bytes(data))
    os.utime(out / "p.npz")
    fast, slow = build_store(out), _slow(out, monkeypatch)
    assert fast.to_pylist() == slow.to_pylist()
    errors = dict(zip(fast["name"].to_pylist(), fast["error"].to_pylist(), strict=True))
    assert errors["p/a"] is None and errors["p/b"]


@settings(max_examples=100, deadline=None)
@given(key=hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                      elements=st.integers(-2, 3)))  # fmt: skip
def test_layouts_are_grouped_as_numpy_unique_groups_them(key) -> None:
    """Layout ids are found by hashing, not by sorting every row: the same distinct rows, in
    the same order, and the same id per row as np.unique."""
    rows, ids = output_store._distinct_rows(key)
    expected, inverse = np.unique(key, axis=0, return_inverse=True)
    assert np.array_equal(rows, expected) and np.array_equal(ids, inverse.reshape(-1))


@pytest.mark.parametrize("shapes", [300, npy_format._MAX_LAYOUTS + 1])
def test_many_shapes_in_one_archive(tmp_path: Path, monkeypatch, shapes: int) -> None:
    """Boxes per image, a variable count each: one npy header text per count. Up to the
    limit they are grouped by hashing on the column path; beyond it the archive is read
    member by member. Either way the rows are the same."""
    out = tmp_path / "out"
    out.mkdir()
    rng = np.random.default_rng(shapes)
    np.savez(out / "boxes.npz", **{f"s{i:05d}": rng.random((i % shapes, 4), dtype=np.float32)
                                   for i in range(shapes + 50)})  # fmt: skip
    with open(out / "boxes.npz", "rb") as handle, map_file(handle) as data:
        found = columns(data, 1 << 30)
    assert (found is not None) == (shapes <= npy_format._MAX_LAYOUTS)
    assert build_store(out).to_pylist() == _slow(out, monkeypatch).to_pylist()


def test_links_fifos_and_empty_archives_beside_a_plain_one(tmp_path: Path, monkeypatch) -> None:
    """The column path takes only regular, non-empty files: a link, a FIFO and an empty
    .npz are errors of their own, as member by member, and the plain archive is read."""
    out = tmp_path / "out"
    out.mkdir()
    np.savez(tmp_path / "real.npz", a=np.zeros(2))
    (out / "link.npz").symlink_to(tmp_path / "real.npz")
    (out / "empty.npz").write_bytes(b"")
    os.mkfifo(out / "fifo.npz")
    np.savez(out / "ok.npz", a=np.ones(2))
    fast = build_store(out)
    assert fast.to_pylist() == _slow(out, monkeypatch).to_pylist()
    errors = dict(zip(fast["name"].to_pylist(), fast["error"].to_pylist(), strict=True))
    assert errors["ok/a"] is None
    assert "symbolic link" in errors["link"] and "not a regular file" in errors["fifo"]
    assert "empty file" in errors["empty"]
