"""The fast zip directory reader agrees with zipfile on every archive it reads, and hands
everything else (zip64 sizes, prepended data, damage) to zipfile."""

from __future__ import annotations

import io
import mmap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprocheck.npy_format import Member, directory_members, locate, locate_all
from reprocheck.outputs import ARCHIVE_ERRORS, index_outputs


def _read(data: bytes) -> list[Member] | None:
    with mmap.mmap(-1, len(data)) as mapped:
        mapped.write(data)
        return directory_members(mapped)


def _zipfile(data: bytes) -> list[Member]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [Member.of(info) for info in archive.infolist()]


def _savez(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                min_size=1, max_size=12)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(names=st.lists(NAMES, min_size=1, max_size=6, unique=True), compressed=st.booleans())
def test_savez_archives_read_like_zipfile(names: list[str], compressed: bool) -> None:
    data = _savez({n: np.arange(len(n)) for n in names}, compressed)
    fast = _read(data)
    assert fast is not None  # np.savez's layout takes the fast path
    assert fast == _zipfile(data)


def test_zip64_end_records_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """More than 65,535 members need zip64 end records; force them on a small archive."""
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 3)
    data = _savez({f"k{i}": np.full(2, i) for i in range(10)})
    monkeypatch.undo()
    assert b"PK\x06\x06" in data
    fast = _read(data)
    assert fast is not None and fast == _zipfile(data)


def test_a_comment_is_skipped() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.npy", b"x")
        archive.comment = b"PK\x05\x06 looks like an end record"
    data = buffer.getvalue()
    fast = _read(data)
    assert fast is None or fast == _zipfile(data)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: b"prefix" + d,  # self-extracting style: offsets shifted, zipfile copes
        lambda d: d[:-5],
        lambda d: d[: len(d) // 2],
        lambda d: d.replace(b"PK\x01\x02", b"PK\x01\x03", 1),
        lambda d: b"",
        lambda d: b"PK\x05\x06" + b"\x00" * 18,  # an empty archive
    ],
)
def test_anything_else_is_zipfiles_job(damage) -> None:
    data = damage(_savez({"a": np.arange(3), "b": np.ones(2)}))
    fast = _read(data) if data else None
    if fast is not None:
        assert fast == _zipfile(data)


def test_index_is_the_same_through_either_reader(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    np.savez(out / "f.npz", **{f"k{i}": np.full(3, i, np.float32) for i in range(20)})
    np.savez_compressed(out / "c.npz", z=np.arange(5))
    fast = index_outputs(out)
    monkeypatch.setattr("reprocheck.outputs.directory_members", lambda _data: None)
    assert index_outputs(out) == fast


def _locate_each(data: mmap.mmap, members: list[Member], limit: int) -> list[object]:
    found: list[object] = []
    for member in members:
        try:
            found.append(locate(data, member, limit))
        except (ValueError, OSError, EOFError):
            found.append("error")
    return found


@settings(max_examples=80, deadline=None)
@given(
    dtypes=st.lists(st.sampled_from(["<f4", ">f8", "|u1", "<i2", "<c8", "|b1"]), min_size=1,
                    max_size=5),
    fortran=st.booleans(),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    limit=st.sampled_from([10**9, 40]),
)  # fmt: skip
def test_locating_all_members_at_once_equals_one_by_one(dtypes, fortran, flips, limit) -> None:
    """The array checks never clear a member that the one-by-one reader refuses, and find
    the same place for every member they clear, even in damaged archives."""
    arrays = {f"a{i}": np.zeros((3, 4), dtype=d, order="F" if fortran else "C")
              for i, d in enumerate(dtypes)}  # fmt: skip
    data = bytearray(_savez(arrays))
    for position, value in flips:
        data[position % len(data)] = value
    with mmap.mmap(-1, len(data)) as mapped:
        mapped.write(bytes(data))
        try:
            members = _zipfile(bytes(data))
        except ARCHIVE_ERRORS:
            return
        at_once = locate_all(mapped, members, limit)
        one_by_one = _locate_each(mapped, members, limit)
    for fast, slow in zip(at_once, one_by_one, strict=True):
        assert fast is None or fast == slow
    if not flips and limit > 1000:
        assert at_once == one_by_one  # an intact archive: every member found at once


def test_an_archive_zipfile_refuses_is_an_output_error(tmp_path: Path) -> None:
    """A "version needed" zipfile does not know raises NotImplementedError in zipfile."""
    out = tmp_path / "out"
    out.mkdir()
    data = bytearray(_savez({"a": np.arange(3)}))
    entry = data.index(b"PK\x01\x02")
    data[entry + 6] = 99  # version needed to extract: 9.9
    (out / "f.npz").write_bytes(b"junk" + bytes(data))  # shifted: zipfile reads it
    (out / "ok.npy").write_bytes(_savez({"b": np.ones(1)})[:0] or b"")
    np.save(out / "ok.npy", np.ones(2))
    refs = index_outputs(out)
    assert refs["ok"].error is None
    assert "zip file version" in (refs["f"].error or "")
