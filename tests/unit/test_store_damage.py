"""Damaged stored runs: whatever is wrong with run.json or a fingerprint.json (truncated, of the
wrong shape, a symlink a pipeline planted, a FIFO), load_run raises StoredRunError naming the
file on one line, and nothing else; `compare` and `diff` turn it into one line and exit 2.

Properties over the whole space of damage, generated from one real run: every truncation,
every value replaced by every JSON kind, every key removed, arbitrary JSON anywhere.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runs import stored_env, stored_run

from reprocheck import store
from reprocheck.errors import RunNotFoundError, StoredRunError, UnsafeFileError
from reprocheck.run_model import FixtureResult, RunResult
from reprocheck.safe_files import read_json_object, read_regular_bytes
from reprocheck.store import MANIFEST, load_run, save_run

CONFIG = """
[pipeline]
callable = "p.py:run"
[[environments]]
name = "bullseye"
image = "debian:bullseye"
[[environments]]
name = "bookworm"
image = "debian:bookworm"
"""
# Every JSON kind, each a wrong type somewhere in a manifest.
KINDS: list[Any] = [None, True, 0, -1, 2.5, "", "x", "../..", [], [{}], ["x"], {}, {"a": 1}]
# The keys without a default, by depth of their object: the manifest, an environment
# (environments[i] or repeats[i]), a fixture (environments[i].fixtures[j]).
REQUIRED = {
    0: {"run_id", "config_source", "started", "environments"},
    2: {"name", "image", "image_ref", "image_id", "status", "error", "outputs_dir", "meta_dir"},
    4: {"fixture", "status"},
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=12,
)  # fmt: skip


def _write_run(run_dir: Path) -> RunResult:
    """A run with what a real one holds: an ok and a partial environment, fixtures of both
    states, nulls, and a repeat stored under ``repeats/``."""
    ok = stored_env(run_dir, "bullseye", {"x.png": {"value": np.arange(3)}},
                    fingerprint={"glibc": "2.31", "numpy": {"version": "1.26"}})  # fmt: skip
    partial = dataclasses.replace(
        stored_env(run_dir, "bookworm", {"x.png": {"value": np.arange(3)}}),
        status="partial",
        error="one fixture failed",
        fixtures=(FixtureResult(fixture="x.png", status="error", seconds=None, error="boom"),),
    )
    repeat = stored_env(run_dir, "bullseye", {"x.png": {"value": np.arange(3)}},
                        folder=run_dir / "repeats" / "2" / "bullseye", repeat=2)  # fmt: skip
    run = stored_run(run_dir, (ok, partial), repeats=(repeat,))
    save_run(run)
    return run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    folder = (tmp_path / "reports" / "run-1").resolve()
    _write_run(folder)
    return folder


def _fingerprint(run_dir: Path, env: str = "bullseye") -> Path:
    return run_dir / "environments" / env / "meta" / "fingerprint.json"


def _loaded_or_error(run_dir: Path, damaged: Path) -> RunResult | StoredRunError:
    """load_run's result or its StoredRunError, checked; any other exception fails the test."""
    try:
        return load_run(run_dir)
    except StoredRunError as exc:
        _check_message(exc, damaged)
        return exc


def _error(run_dir: Path, damaged: Path) -> StoredRunError:
    result = _loaded_or_error(run_dir, damaged)
    assert isinstance(result, StoredRunError), f"{damaged} was accepted"
    return result


def _check_message(exc: StoredRunError, damaged: Path) -> None:
    text = str(exc)
    assert "\n" not in text and "\r" not in text
    assert len(text) < 1000  # a planted megabyte of text is not echoed back
    assert str(damaged) in text  # names the exact file
    assert exc.exit_code == 2
    assert "reprocheck run" in exc.fix
    assert "restore the file" in exc.fix


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every value in a JSON document, the root included."""
    yield prefix
    if isinstance(value, dict | list):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            yield from _paths(item, (*prefix, key))


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


def _replaced(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copied = copy.deepcopy(document)
    _at(copied, path[:-1])[path[-1]] = new
    return copied


def _without(document: Any, path: tuple[Any, ...], key: str) -> Any:
    copied = copy.deepcopy(document)
    del _at(copied, path)[key]
    return copied


def _kind(value: Any) -> type:
    return type(None) if value is None else type(value)


# --------------------------------------------------------------------------- intact


def test_an_intact_run_loads(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert [e.name for e in run.environments] == ["bullseye", "bookworm"]
    assert run.environments[0].fingerprint == {"glibc": "2.31", "numpy": {"version": "1.26"}}
    assert run.environments[1].fixtures[0].seconds is None
    assert run.repeats[0].repeat == 2
    assert run.repeats[0].outputs_dir == run_dir / "repeats" / "2" / "bullseye" / "outputs"


def test_a_missing_fingerprint_is_empty(run_dir: Path) -> None:
    """An environment that failed before the harness wrote it: nothing is damaged."""
    _fingerprint(run_dir).unlink()
    assert load_run(run_dir).environments[0].fingerprint == {}


def test_a_missing_manifest_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="not a reprocheck run"):
        load_run(tmp_path)


def test_an_older_manifest_without_optional_keys_loads(run_dir: Path) -> None:
    manifest = json.loads((run_dir / MANIFEST).read_text())
    del manifest["manifest_version"], manifest["repeats"]
    for env in manifest["environments"]:
        del env["fixtures"], env["seconds"], env["repeat"]
    (run_dir / MANIFEST).write_text(json.dumps(manifest))
    run = load_run(run_dir)
    assert run.repeats == ()
    assert (run.environments[0].fixtures, run.environments[0].repeat) == ((), 1)


# --------------------------------------------------------------------------- truncated


def test_every_truncation_of_run_json_is_one_error(run_dir: Path) -> None:
    path = run_dir / MANIFEST
    data = path.read_bytes()
    for cut in range(0, len(data), 7):
        path.write_bytes(data[:cut])
        _error(run_dir, path)


def test_every_truncation_of_a_fingerprint_is_one_error(run_dir: Path) -> None:
    path = _fingerprint(run_dir)
    data = path.read_bytes()
    assert len(data) > 20
    for cut in range(0, len(data), 7):
        path.write_bytes(data[:cut])
        _error(run_dir, path)


# --------------------------------------------------------------------------- wrong shapes


def test_every_value_replaced_by_every_kind(run_dir: Path, manifest: Any) -> None:
    """Each of the manifest's values (objects and lists too) replaced by each JSON kind: a
    run or one StoredRunError, and always the error where an object or a list was."""
    path = run_dir / MANIFEST
    errors = 0
    for where in _paths(manifest):
        original = _at(manifest, where)
        for new in KINDS:
            path.write_text(json.dumps(_replaced(manifest, where, new)))
            result = _loaded_or_error(run_dir, path)
            errors += isinstance(result, StoredRunError)
            if isinstance(original, dict | list) and _kind(new) is not _kind(original):
                assert isinstance(result, StoredRunError), (where, new)
    assert errors > len(KINDS) * 20


def test_every_key_removed(run_dir: Path, manifest: Any) -> None:
    path = run_dir / MANIFEST
    for where in _paths(manifest):
        parent = _at(manifest, where)
        if not isinstance(parent, dict):
            continue
        for key in parent:
            path.write_text(json.dumps(_without(manifest, where, key)))
            result = _loaded_or_error(run_dir, path)
            if key in REQUIRED[len(where)]:
                assert isinstance(result, StoredRunError), (where, key)
                assert f"{key} is missing" in str(result)


@pytest.fixture
def manifest(run_dir: Path) -> Any:
    return json.loads((run_dir / MANIFEST).read_text())


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_any_json_anywhere_in_run_json(run_dir: Path, manifest: Any, data: st.DataObject) -> None:
    path = run_dir / MANIFEST
    where = data.draw(st.sampled_from(list(_paths(manifest))), label="where")
    path.write_text(json.dumps(_replaced(manifest, where, data.draw(JSON, label="value"))))
    _loaded_or_error(run_dir, path)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda m: [m], "holds a list, not a JSON object"),
        (lambda m: "run", "holds a string, not a JSON object"),
        (lambda m: {**m, "environments": {"bullseye": {}}}, "environments is an object"),
        (lambda m: {**m, "environments": None}, "environments is null, expected a list"),
        (lambda m: _replaced(m, ("environments", 0), ["bullseye"]),
         "environments[0] is a list, expected an object"),
        (lambda m: _without(m, ("environments", 1), "name"), "environments[1].name is missing"),
        (lambda m: _replaced(m, ("environments", 0, "fixtures"), {"x.png": "ok"}),
         "environments[0].fixtures is an object, expected a list"),
        (lambda m: _replaced(m, ("environments", 0, "fixtures"), ["x.png"]),
         "environments[0].fixtures[0] is a string, expected an object"),
        (lambda m: _replaced(m, ("environments", 0, "fixtures", 0, "status"), "fine"),
         "environments[0].fixtures[0].status is 'fine', expected one of ok, error"),
        (lambda m: _replaced(m, ("environments", 1, "status"), "great"),
         "environments[1].status is 'great'"),
        (lambda m: _replaced(m, ("environments", 0, "seconds"), True),
         "environments[0].seconds is true/false, expected a number"),
        (lambda m: _replaced(m, ("environments", 0, "repeat"), 1.5),
         "environments[0].repeat is a number, expected a whole number"),
        (lambda m: _replaced(m, ("environments", 0, "meta_dir"), "../../../etc"),
         "not a folder inside the run"),
        (lambda m: _replaced(m, ("repeats", 0, "outputs_dir"), "/etc"),
         "repeats[0].outputs_dir is '/etc', not a folder inside the run"),
        (lambda m: _replaced(m, ("environments", 0, "outputs_dir"), "out\0put"),
         "environments[0].outputs_dir is 'out\\x00put', not a folder inside the run"),
        (lambda m: _replaced(m, ("environments", 0, "seconds"), 10**400),
         "environments[0].seconds is a number too large for a float"),
        (lambda m: _replaced(m, ("environments", 0, "status"), "x" * 10_000),
         "environments[0].status is 'xxxxxxxx"),
        (lambda m: {**m, "manifest_version": 99}, "manifest_version is 99"),
        (lambda m: {**m, "run_id": None}, "run_id is null, expected a string"),
    ],
)  # fmt: skip
def test_named_shapes(run_dir: Path, damage: Callable[[Any], Any], expected: str) -> None:
    path = run_dir / MANIFEST
    path.write_text(json.dumps(damage(json.loads(path.read_text()))))
    assert expected in str(_error(run_dir, path))


# --------------------------------------------------------------------------- fingerprints


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(value=JSON)
def test_any_json_as_a_fingerprint(run_dir: Path, value: Any) -> None:
    path = _fingerprint(run_dir, "bookworm")
    path.write_text(json.dumps(value))
    result = _loaded_or_error(run_dir, path)
    if isinstance(value, dict):
        assert isinstance(result, RunResult)
        # compared as JSON text: NaN (which JSON files may hold) is not equal to itself
        assert json.dumps(result.environments[1].fingerprint) == json.dumps(value)
    else:
        assert isinstance(result, StoredRunError)
        assert "not a JSON object" in str(result)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "not valid JSON"),
        (b'{"glibc": "2.3', "not valid JSON"),
        (b"[1, 2]", "holds a list"),
        (b"null", "holds null"),
        (b'"text"', "holds a string"),
        (b'{"a": "\xff\xfe"}', "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b'{"n": ' + b"9" * 10_000 + b"}", "not valid JSON"),
    ],
    ids=["empty", "truncated", "list", "null", "string", "bad-utf8", "deep", "long-int"],
)
def test_damaged_fingerprints(run_dir: Path, content: bytes, expected: str) -> None:
    path = _fingerprint(run_dir)
    path.write_bytes(content)
    assert expected in str(_error(run_dir, path))


def test_a_huge_fingerprint_is_refused(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _fingerprint(run_dir)
    monkeypatch.setattr(store, "MAX_FINGERPRINT_BYTES", 1000)
    path.write_text(json.dumps({"x": "y" * 1000}))
    assert "larger than 1,000 bytes" in str(_error(run_dir, path))


# --------------------------------------------------------------------------- planted files


def _outside(tmp_path: Path, content: str) -> Path:
    """A host file the pipeline must not make reprocheck read (valid JSON, to be sure that
    only the symlink is refused)."""
    secret = tmp_path / "host" / "secret.json"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(content)
    return secret


def test_a_fingerprint_symlinked_outside_is_refused(run_dir: Path, tmp_path: Path) -> None:
    path = _fingerprint(run_dir)
    path.unlink()
    path.symlink_to(_outside(tmp_path, '{"token": "secret"}'))
    error = _error(run_dir, path)
    assert "symbolic link" in str(error)
    assert "secret" not in str(error).replace("secret.json", "")


def test_a_run_json_symlinked_outside_is_refused(run_dir: Path, tmp_path: Path) -> None:
    path = run_dir / MANIFEST
    copy_outside = _outside(tmp_path, path.read_text())
    path.unlink()
    path.symlink_to(copy_outside)
    assert "symbolic link" in str(_error(run_dir, path))


@pytest.mark.parametrize("target", ["fingerprint", "manifest"])
def test_dangling_symlinks_are_refused(run_dir: Path, target: str) -> None:
    path = _fingerprint(run_dir) if target == "fingerprint" else run_dir / MANIFEST
    path.unlink()
    path.symlink_to("/nonexistent/reprocheck/file.json")
    assert "symbolic link" in str(_error(run_dir, path))


@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize("target", ["fingerprint", "manifest"])
def test_special_files_are_refused(run_dir: Path, kind: str, target: str) -> None:
    """A FIFO would block a plain open() forever; neither is a regular file."""
    path = _fingerprint(run_dir) if target == "fingerprint" else run_dir / MANIFEST
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    assert _error(run_dir, path) is not None


# --------------------------------------------------------------------------- safe_files


def test_read_regular_bytes_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_regular_bytes(path, 10) == b"x" * 10
    assert read_regular_bytes(path) == b"x" * 10
    with pytest.raises(UnsafeFileError, match="larger than 9 bytes"):
        read_regular_bytes(path, 9)


def test_read_json_object_errors_are_unsafe_file_errors(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text('{"a": 1}')
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert read_json_object(tmp_path / "real.json") == {"a": 1}
    for name in ("link.json", "missing.json"):
        with pytest.raises(UnsafeFileError, match=name):
            read_json_object(tmp_path / name)
    with pytest.raises(UnsafeFileError, match="null byte"):
        read_json_object(tmp_path / "nul\0.json")


# --------------------------------------------------------------------------- the CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reprocheck", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("command", ["compare", "diff"])
def test_cli_names_the_damaged_fingerprint_and_exits_2(make_project, command: str) -> None:
    source = make_project(CONFIG)
    run_dir = (source.parent / "reports" / "run-1").resolve()
    _write_run(run_dir)
    damaged = _fingerprint(run_dir)
    damaged.write_text('{"glibc": "2.')
    args = ["--run", str(run_dir)] if command == "compare" else [str(run_dir), str(run_dir)]
    done = _cli(command, "--config", str(source), *args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(damaged) in line
    assert "re-run 'reprocheck run'" in line
