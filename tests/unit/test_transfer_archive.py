"""The archives the volume plane uploads: valid tar, with no record padding after the two
end-of-archive blocks (Podman's copier fails the upload when it has to drain that padding:
containers/buildah#6573)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from reprocheck.engine.transfer import _Entry, _write_archive


def _entry(name: str, data: bytes | None) -> _Entry:
    member = tarfile.TarInfo(name)
    if data is None:
        member.type = tarfile.DIRTYPE
    else:
        member.size = len(data)
    return member, data


@pytest.mark.parametrize("sizes", [[], [0], [1], [511, 512, 513], [10240], [70_000, 3]])
def test_an_archive_ends_with_its_end_blocks(tmp_path: Path, sizes: list[int]) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"b" * 5000)
    member = tarfile.TarInfo("from-a-file")
    member.size = 5000
    entries = [_entry("folder", None)] + [_entry(f"f{i}", b"x" * n) for i, n in enumerate(sizes)]
    entries.append((member, big))
    buffer = io.BytesIO()
    _write_archive(buffer, entries)
    data = buffer.getvalue()
    assert len(data) % tarfile.BLOCKSIZE == 0
    assert data.endswith(b"\0" * 2 * tarfile.BLOCKSIZE)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert names == ["folder", *(f"f{i}" for i in range(len(sizes))), "from-a-file"]
        for i, n in enumerate(sizes):
            extracted = tar.extractfile(f"f{i}")
            assert extracted is not None and extracted.read() == b"x" * n
    # Nothing after the end-of-archive blocks: the last member's data (block-padded), then
    # exactly two zero blocks.
    unpadded = io.BytesIO()
    with tarfile.open(fileobj=unpadded, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member_, source in entries:
            if isinstance(source, Path):
                with source.open("rb") as handle:
                    tar.addfile(member_, handle)
            else:
                tar.addfile(member_, None if source is None else io.BytesIO(source))
        expected = tar.offset + 2 * tarfile.BLOCKSIZE
    assert len(data) == expected
    assert len(unpadded.getvalue()) % tarfile.RECORDSIZE == 0  # what tarfile alone writes
