"""The output store: one index per environment, digests that find identical arrays, stale
stores rebuilt, and bulk-identical comparisons equal to compare_arrays' own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from runs import stored_env, stored_run

from reprocheck.compare import Tolerance, compare_arrays
from reprocheck.config import OutputsConfig, load_config
from reprocheck.matrix import build_matrix
from reprocheck.output_store import (
    OutputFolders,
    build_store,
    digest,
    open_store,
    store_path,
    write_store,
)

CONFIG = (
    '[pipeline]\ncallable = "p.py:run"\n'
    '[[environments]]\nname = "a"\nimage = "i"\n[[environments]]\nname = "b"\nimage = "j"\n'
)


def test_digest_sees_dtype_shape_and_bytes() -> None:
    a = np.arange(6, dtype=np.int32)
    assert digest(a) == digest(a.copy())
    assert digest(a) != digest(a.reshape(2, 3))  # same bytes, another shape
    assert digest(a) != digest(a.view(np.float32))  # same bytes, another dtype
    assert digest(np.asfortranarray(a.reshape(2, 3))) == digest(a.reshape(2, 3))  # values
    assert digest(np.array(0.0)) != digest(np.array(-0.0))  # bit-identical means bits


def test_store_indexes_every_kind_and_keeps_errors(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    np.savez(out / "f.npz", x=np.ones(3, np.float32), y=np.array([np.nan, 1.0]))
    np.savez_compressed(out / "c.npz", z=np.arange(4))
    np.save(out / "n.npy", np.eye(2))
    (out / "m.json").write_text(json.dumps({"acc": 0.5, "n": 3}))
    (out / "bad.npz").write_bytes(b"not a zip")
    (out / "link.npy").symlink_to("/etc/passwd")
    table = build_store(out).to_pydict()
    rows = {name: i for i, name in enumerate(table["name"])}
    assert set(rows) == {"f/x", "f/y", "c/z", "n", "m/acc", "m/n", "bad", "link"}
    assert table["nans"][rows["f/y"]] == 1 and table["size"][rows["f/y"]] == 2
    assert table["offset"][rows["f/x"]] is not None  # read in place
    assert table["offset"][rows["c/z"]] is None  # compressed: through zipfile
    for name in ("bad", "link"):
        assert table["error"][rows[name]] and table["digest"][rows[name]] is None
    with open_store(out) as store:
        np.testing.assert_array_equal(store.load("c/z"), np.arange(4))
        assert store.load("m/acc") == 0.5
        assert store.digests[store.row["n"]] == digest(np.eye(2))


def test_refs_from_numpy_columns_equal_the_rows_read_whole(tmp_path: Path) -> None:
    """ref_at (offsets, layouts and files made into numpy arrays once) gives each row the ref
    that reading the whole row gives: every kind of output, errors, Fortran order, 0-d."""
    out = tmp_path / "outputs"
    (out / "sub").mkdir(parents=True)
    np.savez(out / "f.npz", x=np.ones(3, np.float32), y=np.asfortranarray(np.eye(3)),
             s=np.array(2.5), e=np.zeros((0, 4), np.int16))  # fmt: skip
    np.savez_compressed(out / "c.npz", z=np.arange(4))
    np.save(out / "sub" / "n.npy", np.eye(2, dtype=np.complex64))
    np.save(out / "o.npy", np.array([{}], dtype=object), allow_pickle=True)
    (out / "m.json").write_text(json.dumps({"acc": 0.5, "n": [1, 2]}))
    (out / "bad.npz").write_bytes(b"not a zip")
    (out / "link.npy").symlink_to("/etc/passwd")
    write_store(out)
    with open_store(out) as store:
        assert len(store) == 11  # the JSON list of numbers is an array too
        for row in range(len(store)):
            assert store.ref_at(row) == store._ref_of_entry(row), store.names[row]
            if store.error_at(row) is None:
                whole = store._reader.load(store._ref_of_entry(row))
                np.testing.assert_array_equal(store.load_at(row), whole)


def test_stale_store_is_rebuilt(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    np.savez(out / "f.npz", x=np.zeros(3))
    write_store(out)
    np.savez(out / "f.npz", x=np.ones(3), extra=np.ones(1))
    os.utime(out / "f.npz", ns=(1, 1))  # even with an old timestamp the size differs
    with open_store(out) as store:
        assert store.names == ["f/extra", "f/x"]
        np.testing.assert_array_equal(store.load("f/x"), np.ones(3))


def test_damaged_store_file_is_rebuilt(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    np.savez(out / "f.npz", x=np.zeros(3))
    store_path(out).write_bytes(b"garbage")
    with open_store(out) as store:
        assert store.names == ["f/x"]
    with open_store(out) as again:  # the first reader saved a good one
        assert again.names == ["f/x"]


def test_limits_are_part_of_the_store(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    np.savez(out / "f.npz", x=np.zeros(1000))
    write_store(out)
    with open_store(out, OutputsConfig(max_array_bytes=100)) as store:
        assert "max_array_bytes" in (store.error("f/x") or "")


def test_output_folders_read_through_stores(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    np.savez(out / "f.npz", x=np.arange(3))
    folders = OutputFolders()
    np.testing.assert_array_equal(folders.load(out, "f/x"), np.arange(3))
    assert folders.load(out, "f/none") is None
    folders.close()


DTYPES = st.sampled_from(
    ["<f2", "<f4", ">f4", "<f8", "<c8", "<c16", "|u1", "<u2", "<i4", "<i8", "|b1", "<U3",
     "<M8[s]"]
)  # fmt: skip
SHAPES = st.sampled_from([(), (0,), (1,), (5,), (3, 4), (4, 5, 3), (2, 3, 6), (2, 0, 3)])


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(DTYPES))
    shape = draw(SHAPES)
    if dtype.kind == "f":
        elements = st.floats(width=8 * dtype.itemsize, allow_nan=True, allow_infinity=True)
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(arrays(), min_size=1, max_size=4), atol=st.sampled_from([0.0, 0.5]))
def test_bulk_identical_equals_compare_arrays(make_project, tmp_path_factory, values, atol):
    """An output identical in both environments is written in bulk from its dtype, shape
    and NaN count; it must say exactly what compare_arrays says (every metric)."""
    run_dir = tmp_path_factory.mktemp("run")
    named = {f"o{i}": v for i, v in enumerate(values)}
    a = stored_env(run_dir, "a", {"x": named})
    b = stored_env(run_dir, "b", {"x": {k: v.copy() for k, v in named.items()}})
    config = load_config(make_project(CONFIG + f"[tolerance.default]\natol = {atol}\n"))
    matrix = build_matrix(config, stored_run(run_dir, (a, b)))
    tolerance = Tolerance(pattern="default", atol=atol)
    for item in matrix.comparisons:
        array = named[item.output.removeprefix("x/")]
        try:
            expected = compare_arrays(array, array.copy(), tolerance)
        except Exception:  # a dtype compare_arrays refuses: the matrix says error
            assert item.verdict == "error"
            continue
        assert item.verdict == expected.verdict == "identical"
        assert item.metrics == expected


def test_identical_and_differing_outputs_in_one_matrix(make_project, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    same = np.linspace(0, 1, 64, dtype=np.float32)
    moved = same.copy()
    moved[3] = np.nextafter(moved[3], np.float32(2))
    a = stored_env(run_dir, "a", {"x": {"s": same, "m": same, "only_a": same}})
    b = stored_env(run_dir, "b", {"x": {"s": same.copy(), "m": moved, "only_b": same}})
    matrix = build_matrix(load_config(make_project(CONFIG)), stored_run(run_dir, (a, b)))
    verdicts = {c.output: c.verdict for c in matrix.comparisons}
    assert verdicts == {"x/m": "drift", "x/only_a": "missing", "x/only_b": "new",
                        "x/s": "identical"}  # fmt: skip
    assert [c.output for c in matrix.comparisons] == sorted(verdicts)  # output order
    assert matrix.agreement["x/s"] == [["a", "b"]]
    assert matrix.agreement["x/m"] == [["a"], ["b"]]
    assert matrix.agreement["x/only_a"] == [["a"], ["b"]]


@pytest.mark.parametrize("rule", ['[tolerance."x/*"]\nmatch = "rows"\n',
                                  '[decisions]\n"x/*" = "argmax"\n'])  # fmt: skip
def test_rules_that_need_values_skip_the_bulk_path(make_project, tmp_path: Path, rule) -> None:
    """Row matching and decisions report on the values even when they are identical."""
    run_dir = tmp_path / "run"
    probs = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    a = stored_env(run_dir, "a", {"x": {"p": probs}})
    b = stored_env(run_dir, "b", {"x": {"p": probs.copy()}})
    matrix = build_matrix(load_config(make_project(CONFIG + rule)), stored_run(run_dir, (a, b)))
    (item,) = matrix.comparisons
    assert item.metrics is not None
    assert item.metrics.rows is not None or item.metrics.decision is not None


def test_names_that_are_not_utf8_are_stored_as_errors(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    (out / "m.json").write_text('{"\\ud800": 1, "fine": 2}')
    np.save(os.fsdecode(os.fsencode(out) + b"/bad\xff.npy"), np.zeros(2))
    np.save(out / "good.npy", np.zeros(2))
    with open_store(out) as store:
        errors = {name: store.error(name) for name in store.names}
    assert errors["good"] is None and errors["m/fine"] is None
    assert "not valid UTF-8" in (errors["m/\\ud800"] or "")
    assert "not valid UTF-8" in (errors["bad\\xff"] or "")


@settings(max_examples=30, deadline=None)
@given(values=st.lists(arrays(), min_size=1, max_size=6))
def test_block_reads_equal_one_by_one_reads(tmp_path_factory, values) -> None:
    """Small arrays of one file, dtype and shape are digested as blocks; the rows must be
    what reading them one by one gives."""
    import reprocheck.output_store as output_store

    out = tmp_path_factory.mktemp("out")
    np.savez(out / "f.npz", **{f"a{i}": v for i, v in enumerate(values)},
             **{f"b{i}": v.copy() for i, v in enumerate(values)})  # fmt: skip
    blocks = build_store(out)
    previous = output_store._BLOCK_ARRAY_BYTES
    output_store._BLOCK_ARRAY_BYTES = -1
    try:
        single = build_store(out)
    finally:
        output_store._BLOCK_ARRAY_BYTES = previous
    assert blocks.equals(single)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    base=arrays(),
    count=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    atol=st.sampled_from([0.0, 1e-3]),
)
def test_batched_comparisons_equal_compare_arrays(make_project, tmp_path_factory, base, count,
                                                   seed, atol):  # fmt: skip
    """Differing outputs of one dtype and shape are compared as a batch; each must say what
    compare_arrays says of it alone."""
    rng = np.random.default_rng(seed)
    run_dir = tmp_path_factory.mktemp("run")
    olds, news = {}, {}
    for k in range(count):
        old = base.copy()
        new = old.copy()
        raw = new.reshape(-1).view(np.uint8)
        if raw.size and base.dtype.kind in "fciub":
            raw[rng.integers(0, raw.size, size=min(3, raw.size))] ^= np.uint8(1 << (k % 8))
        olds[f"o{k}"], news[f"o{k}"] = old, new
    a = stored_env(run_dir, "a", {"x": olds})
    b = stored_env(run_dir, "b", {"x": news})
    config = load_config(make_project(CONFIG + f"[tolerance.default]\natol = {atol}\n"))
    matrix = build_matrix(config, stored_run(run_dir, (a, b)))
    tolerance = Tolerance(pattern="default", atol=atol)
    for item in matrix.comparisons:
        key = item.output.removeprefix("x/")
        try:
            expected = compare_arrays(olds[key], news[key], tolerance)
        except Exception:
            assert item.verdict == "error"
            continue
        assert item.metrics == expected, key


_NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                min_size=1, max_size=6)  # fmt: skip


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    st.dictionaries(
        _NAME, st.sampled_from([(), (0,), (3,), (2, 3), (3, 2), (1, 1, 1)]), min_size=0, max_size=12
    ),
    st.sampled_from(["<f4", "<i8", ">f8", "|u1"]),
    st.integers(0, 2**32),
)
def test_row_lookups_layouts_and_digest_words(tmp_path_factory, shapes, dtype, seed) -> None:
    """The array-based answers (binary search over sorted names, factorized layouts, digest
    words) agree with the plain per-name ones on hostile names, every shape and dtype."""
    folder = tmp_path_factory.mktemp("lookups") / "outputs"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    arrays = {name: rng.integers(0, 3, shape).astype(dtype) for name, shape in shapes.items()}
    if arrays:
        np.savez(folder / "o.npz", **arrays)
    (folder / "bad.json").write_text("{not json")  # an output error among them
    store = open_store(folder)
    names = list(store.names)
    for row, name in enumerate(names):
        assert store.find(name) == row
    assert store.find("o/" + "\uffff") == -1 and "nope" not in store
    assert store.rows_of([*names, "missing"]).tolist() == [*range(len(names)), -1]
    ids, layouts = store.layout_ids()
    for row in range(len(names)):
        error = store.error_at(row)
        expected = None if error else (store.table["dtype"][row].as_py(),
                                       tuple(store.table["shape"][row].as_py()))  # fmt: skip
        assert store.layout_at(row) == expected
        assert (ids[row] < 0) == (expected is None)
        if expected is not None:
            assert layouts[ids[row]] == expected
            assert store.load_at(row).shape == expected[1]
    words, digests = store.digest_words, store.digests
    for i in range(len(names)):
        for j in range(len(names)):
            same = bool((words[i] == words[j]).all()) and store.known[i] and store.known[j]
            assert same == (digests[i] is not None and digests[i] == digests[j])
    store.close()
