"""outputs: naming rules, selection, and safe loading (no pickle, bounded sizes)."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from reprocheck.errors import OutputError
from reprocheck.outputs import index_file, index_outputs, load_output


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


def the_error(folder: Path, name: str | None = None) -> str:
    """The error of the one output (or ``name``) under ``folder``; loading it raises it too."""
    refs = index_outputs(folder)
    ref = refs[name] if name else next(iter(refs.values()))
    assert ref.error, ref
    with pytest.raises(OutputError, match=re.escape(ref.error)):
        load_output(ref)
    return ref.error


def test_max_file_bytes(out: Path) -> None:
    np.save(out / "big.npy", np.zeros(1000))
    refs = index_outputs(out, max_file_bytes=4000)
    assert "max_file_bytes" in str(refs["big"].error)
    assert refs["a/edges"].error is None  # the other outputs are unaffected
    assert index_outputs(out, max_file_bytes=9000)["big"].error is None


def test_corrupt_npz(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    assert "x.npz cannot be read" in the_error(tmp_path, "x")


@pytest.mark.parametrize("text", ["[1, 2]", "{not json"])
def test_json_must_be_a_flat_object(tmp_path: Path, text: str) -> None:
    (tmp_path / "x.json").write_text(text)
    assert "x.json" in the_error(tmp_path, "x")


def _json_outputs(folder: Path, data: object) -> dict[str, object]:
    """Each output of ``x.json`` holding ``data``: its array, or its error."""
    folder.mkdir(exist_ok=True)
    (folder / "x.json").write_text(json.dumps(data))
    found: dict[str, object] = {}
    for name, ref in index_outputs(folder).items():
        found[name] = the_error(folder, name) if ref.error else load_output(ref)
    return found


def test_json_numbers_have_no_dtype(tmp_path: Path) -> None:
    """3 and 3.0 are one JSON number: both float64, bit for bit the same array. Integers
    past 2**53 stay exact; past 64 bits they are an error; null is NaN."""
    ints = _json_outputs(tmp_path / "a", {"m": 3, "big": 2**60, "neg": -(2**63), "u": 2**64 - 1})
    floats = _json_outputs(tmp_path / "b", {"m": 3.0, "big": 2.0**60})
    assert ints["x/m"].dtype == floats["x/m"].dtype == np.float64  # type: ignore[union-attr]
    assert ints["x/m"].tobytes() == floats["x/m"].tobytes()  # type: ignore[union-attr]
    assert ints["x/big"].dtype == np.int64 and ints["x/big"] == 2**60  # type: ignore[union-attr]
    assert ints["x/neg"].dtype == np.int64 and ints["x/u"].dtype == np.uint64  # type: ignore[union-attr]
    assert "beyond 64 bits" in str(_json_outputs(tmp_path / "c", {"h": 2**64})["x/h"])
    assert np.isnan(_json_outputs(tmp_path / "d", {"n": None})["x/n"])  # type: ignore[call-overload]
    assert _json_outputs(tmp_path / "e", {"t": True})["x/t"].dtype == np.bool_  # type: ignore[union-attr]


def test_json_objects_nest_and_lists_are_arrays(tmp_path: Path) -> None:
    found = _json_outputs(tmp_path, {
        "metrics": {"top1": 0.9, "per_class": [0.5, None, 1], "deeper": {"x": 1}},
        "grid": [[1, 2], [3, 4]], "flags": [True, False],
        "name": "resnet", "labels": ["cat", "dog"], "empty": [], "nothing": {},
        "ragged": [[1], [2, 3]], "mixed": [1, "a"], "bigs": [2**60],
        "a/b": 1, "a": {"b": 2},
    })  # fmt: skip
    arrays = {k: v for k, v in found.items() if isinstance(v, np.ndarray)}
    errors = {k: v for k, v in found.items() if isinstance(v, str)}
    assert sorted(arrays) == ["x/bigs", "x/flags", "x/grid", "x/metrics/deeper/x",
                              "x/metrics/per_class", "x/metrics/top1"]  # fmt: skip
    assert arrays["x/bigs"].dtype == np.int64  # integers past 2**53, kept exact
    np.testing.assert_array_equal(arrays["x/metrics/per_class"], [0.5, np.nan, 1.0])
    assert arrays["x/grid"].shape == (2, 2) and arrays["x/flags"].dtype == np.bool_
    assert sorted(errors) == ["x/a/b", "x/mixed", "x/ragged"]
    assert "given twice" in errors["x/a/b"] and "differ in length" in errors["x/ragged"]


def test_json_lists_of_objects_are_by_index_and_duplicates_are_errors(tmp_path: Path) -> None:
    """Per-fold metrics as a list of objects are outputs by index; a key an object gives
    twice (which json.loads would keep the last of, silently) is an error, not a value."""
    (tmp_path / "x.json").write_text(
        '{"folds": [{"acc": 0.9}, {"acc": 0.8}], "acc": 0.5, "acc": 0.9,'
        ' "m": {"x": 1}, "m": {"y": 2}, "ids": [9007199254740993, 1], "big": [2, 1e300, 2e300]}'
    )  # fmt: skip
    found = {name: (the_error(tmp_path, name) if ref.error else load_output(ref))
             for name, ref in index_outputs(tmp_path).items()}  # fmt: skip
    assert found["x/folds/0/acc"] == 0.9 and found["x/folds/1/acc"] == 0.8
    assert "given twice" in str(found["x/acc"]) and "given twice" in str(found["x/m"])
    ids = found["x/ids"]
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int64 and ids[0] == 2**53 + 1
    assert isinstance(found["x/big"], np.ndarray)


def test_json_arrays_keep_to_max_array_bytes(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"long": list(range(1000)), "short": [1, 2]}))
    refs = index_outputs(tmp_path, max_array_bytes=4000)
    assert "more than max_array_bytes" in str(refs["x/long"].error)
    assert refs["x/short"].error is None


def test_json_nested_thousands_deep_is_walked_without_recursion(tmp_path: Path) -> None:
    depth = 5000
    text = '{"k": ' * depth + "1" + "}" * depth
    (tmp_path / "x.json").write_text(text)
    refs = index_outputs(tmp_path)
    (name,) = refs  # or the parser's own "nested too deeply" error, as one output
    assert name.startswith("x")


def test_links_are_outputs_with_an_error_and_never_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "s.json").write_text('{"secret_key": 1}')
    np.save(secret / "w.npy", np.arange(3))
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    np.save(out / "real" / "ok.npy", np.arange(2))
    (out / "leak.json").symlink_to(secret / "s.json")
    (out / "w.npy").symlink_to(secret / "w.npy")
    (out / "dir").symlink_to(secret)
    (out / "dangling.npz").symlink_to(tmp_path / "nothing")
    refs = index_outputs(out)
    assert sorted(refs) == ["dangling", "dir", "leak", "real/ok", "w"]
    for name in ("dangling", "dir", "leak", "w"):
        assert "symbolic link" in str(refs[name].error), name
    assert refs["real/ok"].error is None
    assert index_outputs(out / "dir") == {}  # a linked outputs folder is not walked either


def test_fifo_is_not_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.npy")
    assert "not a regular file" in the_error(tmp_path)


def _bomb(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> None:
    """A .npz whose header claims ``shape`` (zeros): tiny on disk, huge when inflated."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("big.npy", "w", force_zip64=True) as member,
    ):
        np.lib.format.write_array_header_1_0(member, header)
        member.write(bytes(2**20))


def test_inflated_size_is_checked_from_the_header(tmp_path: Path) -> None:
    _bomb(tmp_path / "b.npz", (2**28,))
    assert (tmp_path / "b.npz").stat().st_size < 100_000
    error = the_error(tmp_path, "b/big")
    assert "max_array_bytes" in error and "1,073,741,824" in error
    small = index_outputs(tmp_path, max_array_bytes=2**31)["b/big"]
    assert small.error is None  # under a higher limit the header passes (the data is short)
    with pytest.raises(OutputError):
        load_output(small)


def test_npy_header_claims_are_checked_too(tmp_path: Path) -> None:
    with (tmp_path / "x.npy").open("wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
        )
    assert "max_array_bytes" in the_error(tmp_path)


@pytest.mark.parametrize("key", ["..", ".", ""])
def test_dot_names_are_refused(tmp_path: Path, key: str) -> None:
    np.savez(tmp_path / "f.npz", **{key: np.ones(1), "fine": np.ones(1)})
    refs = index_outputs(tmp_path)
    assert refs["f/fine"].error is None
    assert "'.' or '..'" in str(refs[f"f/{key}"].error)


def test_one_bad_member_leaves_the_archive_readable(tmp_path: Path) -> None:
    np.savez(tmp_path / "m.npz", obj=np.array([None], dtype=object), ok=np.arange(3))
    refs = index_outputs(tmp_path)
    assert "pickle" in str(refs["m/obj"].error)
    np.testing.assert_array_equal(load_output(refs["m/ok"]), np.arange(3))


@pytest.mark.parametrize(
    "array",
    [
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.arange(5, dtype=">i4"),
        np.float64(2.5),
        np.zeros((0, 3), np.float32),
        np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
        np.array([1 + 2j], dtype=np.complex64),
    ],
    ids=["fortran", "big-endian", "0-d", "empty", "structured", "complex"],
)
def test_uncompressed_members_are_read_in_place_exactly(tmp_path: Path, array) -> None:
    np.savez(tmp_path / "f.npz", v=array)
    np.savez_compressed(tmp_path / "z.npz", v=array)
    refs = index_outputs(tmp_path)
    assert refs["f/v"].located is not None and refs["z/v"].located is None
    for name in ("f/v", "z/v"):
        loaded = load_output(refs[name])
        assert loaded.dtype == array.dtype and loaded.shape == array.shape
        assert loaded.tobytes(order="A") == np.asarray(array).tobytes(order="A")


def test_a_member_shorter_than_its_header_is_an_error(tmp_path: Path) -> None:
    header = {"descr": "<f8", "fortran_order": False, "shape": (1000,)}
    with zipfile.ZipFile(tmp_path / "s.npz", "w", zipfile.ZIP_STORED) as archive:
        body = io.BytesIO()
        np.lib.format.write_array_header_1_0(body, header)
        archive.writestr("v.npy", body.getvalue() + bytes(80))
    assert "shorter than its header" in the_error(tmp_path, "s/v")


def test_many_members_share_one_parsed_header(tmp_path: Path) -> None:
    np.savez(tmp_path / "m.npz", **{f"k{i}": np.full(4, i, np.float32) for i in range(300)})
    refs = index_outputs(tmp_path)
    assert len(refs) == 300
    assert all(ref.located is not None for ref in refs.values())
    assert load_output(refs["m/k299"]).tolist() == [299.0] * 4


def test_hostile_names_and_folders_are_errors_not_exceptions(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / os.fsdecode(b"bad\xff.npy")).write_bytes(b"x")
    deep = out
    for _ in range(300):  # deeper than the recursion limit set below
        deep = deep / "d"
        deep.mkdir()
    np.save(deep / "v.npy", np.arange(2))
    (out / "c.json").write_text('{"big": ' + str(2**70) + ', "ok": 1.0}')
    (out / "dup").mkdir()
    np.save(out / "dup" / "k.npy", np.ones(1))
    np.savez(out / "dup.npz", k=np.ones(1))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        refs = index_outputs(out)
    finally:
        sys.setrecursionlimit(limit)
    assert "not valid UTF-8" in str(refs["bad\\xff"].error)
    assert refs["/".join(["d"] * 300) + "/v"].error is None
    assert "beyond 64 bits" in str(refs["c/big"].error)
    assert refs["c/ok"].error is None
    assert "two outputs are named 'dup/k'" in str(refs["dup/k"].error)


def test_index_file_reads_one_file_as_index_outputs_does(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.png.npz", **{"0:decode": np.ones(2)})
    np.savez(tmp_path / "b.png.npz", **{"0:decode": np.zeros(2)})
    (tmp_path / "link.npz").symlink_to(tmp_path / "a.png.npz")
    whole = index_outputs(tmp_path)
    assert index_file(tmp_path, "a.png.npz") == {"a.png/0:decode": whole["a.png/0:decode"]}
    assert index_file(tmp_path, "link.npz") == {"link": whole["link"]}  # an error, not followed
    assert index_file(tmp_path, "absent.npz") == {}
