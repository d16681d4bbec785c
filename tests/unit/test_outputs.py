"""outputs: naming rules, selection, and safe loading (no pickle, bounded sizes)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from reprocheck.errors import OutputError
from reprocheck.outputs import index_outputs, load_output


class _Marker:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    np.savez(folder / "a.npz", edges=np.arange(4, dtype=np.uint8), gray=np.eye(2))
    np.save(folder / "sub" / "b.npy", np.array([1.5, 2.5], dtype=np.float32))
    (folder / "c.json").write_text(json.dumps({"x": 1.25, "n": 3, "ok": True, "name": "text"}))
    (folder / "readme.txt").write_text("not an output")
    return folder


def test_naming_rules(out: Path) -> None:
    assert sorted(index_outputs(out)) == ["a/edges", "a/gray", "c/n", "c/ok", "c/x", "sub/b"]


def test_callable_results_are_named_by_fixture(tmp_path: Path) -> None:
    # the harness writes a callable's results for fixture "dir/img.jpg" as dir/img.jpg.npz
    (tmp_path / "dir").mkdir()
    np.savez(tmp_path / "dir" / "img.jpg.npz", **{"resize/linear": np.zeros(2)})
    assert list(index_outputs(tmp_path)) == ["dir/img.jpg/resize/linear"]


def test_loaded_values(out: Path) -> None:
    refs = index_outputs(out)
    np.testing.assert_array_equal(load_output(refs["a/edges"]), np.arange(4, dtype=np.uint8))
    assert load_output(refs["a/edges"]).dtype == np.uint8
    b = load_output(refs["sub/b"])
    assert b.dtype == np.float32
    np.testing.assert_array_equal(b, [1.5, 2.5])
    assert load_output(refs["c/x"]) == 1.25
    assert load_output(refs["c/n"]) == 3


def test_include_and_exclude(out: Path) -> None:
    assert sorted(index_outputs(out, include=("a/*", "c/*"), exclude=("c/ok",))) == [
        "a/edges", "a/gray", "c/n", "c/x",
    ]  # fmt: skip


def test_missing_folder_has_no_outputs(tmp_path: Path) -> None:
    assert index_outputs(tmp_path / "absent") == {}


def test_object_npy_is_refused_not_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    evil = np.array([_Marker(str(marker))], dtype=object)
    np.save(tmp_path / "evil.npy", evil, allow_pickle=True)
    assert not marker.exists()
    (ref,) = index_outputs(tmp_path).values()
    with pytest.raises(OutputError, match="evil"):
        load_output(ref)
    assert not marker.exists(), "the pickle inside the .npy was executed"


def test_object_array_in_npz_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    np.savez(tmp_path / "evil.npz", obj=np.array([_Marker(str(marker))], dtype=object))
    assert not marker.exists()
    (ref,) = index_outputs(tmp_path).values()
    with pytest.raises(OutputError):
        load_output(ref)
    assert not marker.exists()


def test_raw_pickle_named_npy_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    (tmp_path / "p.npy").write_bytes(pickle.dumps(_Marker(str(marker))))
    (ref,) = index_outputs(tmp_path).values()
    with pytest.raises(OutputError):
        load_output(ref)
    assert not marker.exists()


def test_max_file_bytes(out: Path) -> None:
    np.save(out / "big.npy", np.zeros(1000))
    with pytest.raises(OutputError, match="max_file_bytes"):
        index_outputs(out, max_file_bytes=4000)
    assert "big" in index_outputs(out, max_file_bytes=9000)


def test_corrupt_npz(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(OutputError, match=r"not a readable \.npz"):
        index_outputs(tmp_path)


@pytest.mark.parametrize("text", ["[1, 2]", "{not json"])
def test_json_must_be_a_flat_object(tmp_path: Path, text: str) -> None:
    (tmp_path / "x.json").write_text(text)
    with pytest.raises(OutputError, match=r"x\.json"):
        index_outputs(tmp_path)
