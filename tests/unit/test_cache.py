"""The result cache: what its key covers, the per-file hash memory, storing and restoring
environment folders (atomically, links never followed), damage, concurrency and prune. The
engine is the fake one (fakes.py): a container that runs is one more entry in ``runs``."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FakeEngine, Mounted, all_ok, outcome

import reprocheck.cache as cache_module
from reprocheck.cache import (
    ENTRY_FILE,
    ENTRY_TREE,
    HASHES_FILE,
    FileHashes,
    RunCache,
    copy_tree,
    files_digest,
    prune,
    tree_digest,
    tree_listing,
)
from reprocheck.config import RunConfig, load_config
from reprocheck.engine import ContainerSpec, Mount
from reprocheck.plan import Plan, make_plan
from reprocheck.progress import ProgressEvent, silent
from reprocheck.run_model import RunResult
from reprocheck.runner import HARNESS_DIR, Runner

FILES = {"inputs/a.png": "aaaa", "inputs/b.png": "bbbb", "p.py": "def run(path):\n    pass\n",
         "lib/helper.py": "X = 1\n"}  # fmt: skip
OLD = 1_000_000_000  # a modification time far in the past: hashes of such files are remembered


@pytest.fixture(autouse=True)
def _no_host_ca(no_host_ca: None) -> None:
    """No CA bundle from the environment unless a test sets one."""


def _config(make_project, extra: str = "", names: tuple[str, ...] = ("one", "two")) -> RunConfig:
    envs = "".join(f'\n[[environments]]\nname = "{n}"\nimage = "img/{n}:1"\n' for n in names)
    text = f'[pipeline]\ncallable = "p.py:run"\n[fixtures]\npath = "inputs"\n{extra}\n{envs}'
    config: RunConfig = load_config(make_project(text, FILES))
    _age(config.root)
    return config


def _age(root: Path) -> None:
    for path in root.rglob("*"):
        os.utime(path, ns=(OLD, OLD), follow_symlinks=False)


def _run(config: RunConfig, engine: FakeEngine, run_id: str, *, read: bool = True,
         events: list[ProgressEvent] | None = None) -> RunResult:  # fmt: skip
    for env in config.environments:
        engine.add(env.image)
    progress = events.append if events is not None else silent
    cache = RunCache.open(config, read=read)
    runner = Runner(engine, make_plan(config), progress, run_id=run_id, cache=cache)
    return runner.run(config.reports_dir / run_id)


def _entries(config: RunConfig) -> list[Path]:
    runs = config.reports_dir / ".cache" / "runs"
    return sorted(p for p in runs.iterdir() if not p.name.startswith("."))


# --- the key --------------------------------------------------------------------------------


def _spec(config: RunConfig, **changes: Any) -> ContainerSpec:
    run = config.reports_dir / "run-1" / "environments" / "one"
    spec = ContainerSpec(
        image="sha256:" + "1" * 64,
        command=("python3", "/opt/reprocheck/run.py", "/meta"),
        mounts=(
            Mount(source=config.root, target="/project"),
            Mount(source=config.fixtures_dir, target="/fixtures"),
            Mount(source=HARNESS_DIR.resolve(), target="/opt/reprocheck"),
            Mount(source=run / "outputs", target="/out", read_only=False),
            Mount(source=run / "meta", target="/meta", read_only=False),
        ),
        env={"OMP_NUM_THREADS": "1"},
        labels={"io.reprocheck.run": "run-1"},
        masked=("/project/reports",),
    )
    return dataclasses.replace(spec, **changes)


def _key(config: RunConfig, spec: ContainerSpec | None = None, plan: Plan | None = None) -> str:
    """The key a new cache object computes (nothing memoised from an earlier call)."""
    cache = RunCache(config.reports_dir / ".cache")
    return cache.key(spec or _spec(config), plan or make_plan(config))


def test_same_inputs_same_key(make_project) -> None:
    config = _config(make_project)
    first = _key(config)
    assert len(first) == 64
    assert _key(config) == first
    # what the key leaves out: the labels and host paths of this run's folders
    other_run = config.reports_dir / "run-2" / "environments" / "two"
    moved = _spec(config, labels={"io.reprocheck.run": "run-2"}, mounts=(
        *_spec(config).mounts[:3],
        Mount(source=other_run / "outputs", target="/out", read_only=False),
        Mount(source=other_run / "meta", target="/meta", read_only=False),
    ))  # fmt: skip
    assert _key(config, moved) == first


def _edit(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, ns=(OLD, OLD))  # the same times: only the content can tell


SPEC_CHANGES: dict[str, dict[str, Any]] = {
    "image id": {"image": "sha256:" + "2" * 64},
    "env value": {"env": {"OMP_NUM_THREADS": "2"}},
    "env added": {"env": {"OMP_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Haswell"}},
    "python": {"command": ("python3.11", "/opt/reprocheck/run.py", "/meta")},
    "platform": {"platform": "linux/arm64"},
    "user": {"user": "1000:1000"},
    "cpus": {"cpus": 2.0},
    "memory": {"memory": "4g"},
    "timeout": {"timeout": 60.0},
}


@pytest.mark.parametrize("change", SPEC_CHANGES, ids=list(SPEC_CHANGES))
def test_every_container_input_changes_the_key(make_project, change: str) -> None:
    config = _config(make_project)
    assert _key(config, _spec(config, **SPEC_CHANGES[change])) != _key(config)


def _chmod_x(root: Path) -> None:
    (root / "p.py").chmod(0o755)


def _link(root: Path) -> None:
    (root / "lib" / "data").symlink_to("/elsewhere")


FILE_CHANGES = {
    "pipeline content (same size)": lambda root: _edit(root / "p.py", "def run(path):\n    pasS\n"),
    "another project file": lambda root: _edit(root / "lib" / "helper.py", "X = 2\n"),
    "a new project file": lambda root: _edit(root / "models" / "weights.bin", "w"),
    "a file's mode": _chmod_x,
    "a link": _link,
    "fixture content (same size)": lambda root: _edit(root / "inputs" / "a.png", "aaab"),
    "a fixture not planned": lambda root: _edit(root / "inputs" / "c.txt", "c"),
}


@pytest.mark.parametrize("change", FILE_CHANGES, ids=list(FILE_CHANGES))
def test_every_file_the_container_sees_changes_the_key(make_project, change: str) -> None:
    config = _config(make_project)
    plan = make_plan(config)
    before = _key(config, plan=plan)
    FILE_CHANGES[change](config.root)
    assert _key(config, plan=plan) != before


def test_harness_and_ca_bundle_contents_change_the_key(make_project, tmp_path) -> None:
    config = _config(make_project)
    harness, ca = tmp_path / "harness", tmp_path / "ca.crt"
    _edit(harness / "run.py", "one")
    _edit(ca, "CERT")
    extra = (Mount(source=harness, target="/opt/reprocheck"),
             Mount(source=ca, target="/run/reprocheck/host-ca.crt"))  # fmt: skip
    spec = _spec(config, mounts=(*_spec(config).mounts[:2], *_spec(config).mounts[3:], *extra))
    before = _key(config, spec)
    _edit(harness / "run.py", "two")
    assert _key(config, spec) != before
    middle = _key(config, spec)
    _edit(ca, "CERX")
    assert _key(config, spec) != middle


def test_pipeline_fixtures_version_and_cpu_change_the_key(make_project, monkeypatch) -> None:
    config = _config(make_project)
    plan = make_plan(config)
    before = _key(config, plan=plan)
    assert _key(config, plan=dataclasses.replace(plan, fixtures=("a.png",))) != before
    other = config.model_copy(update={"pipeline": config.pipeline.model_copy(
        update={"callable": "p.py:other"})})  # fmt: skip
    assert _key(config, plan=dataclasses.replace(plan, config=other)) != before
    monkeypatch.setattr(cache_module, "__version__", "9.9.9")
    assert _key(config, plan=plan) != before
    monkeypatch.undo()
    real = cache_module.host_cpu()
    for field, value in (("flags", [*real["flags"], "avx512_fake"]), ("models", ["other"]),
                         ("machine", "riscv64"), ("count", 1024)):  # fmt: skip
        monkeypatch.setattr(cache_module, "host_cpu", lambda f=field, v=value: {**real, f: v})
        assert _key(config, plan=plan) != before, field


def test_host_cpu_names_model_and_flags() -> None:
    cpu = cache_module.host_cpu()
    assert cpu["machine"] and cpu["count"]
    if Path("/proc/cpuinfo").is_file():
        assert cpu["models"] and cpu["flags"]


def test_what_the_container_cannot_see_or_does_not_compute_with_keeps_the_key(
    make_project,
) -> None:
    config = _config(make_project)
    before = _key(config)
    _edit(config.reports_dir / "run-0" / "environments" / "one" / "outputs" / "x.npz", "x")
    _edit(config.root / ".git" / "index", "changed")
    _edit(config.root / "lib" / "__pycache__" / "helper.cpython-311.pyc", "pyc")
    config.source.write_text(config.source.read_text() + '\n[tolerance]\n"*" = { atol = 1 }\n')
    os.utime(config.root / "p.py", ns=(OLD + 5, OLD + 5))  # touched, not changed
    assert _key(config) == before


def test_the_runs_own_report_files_do_not_change_the_key(make_project) -> None:
    """``reprocheck run --json out.json`` in the project: the last run's report is left out."""
    config = _config(make_project)
    plan = make_plan(config)

    def key() -> str:
        cache = RunCache.open(config, reports=[config.root / "out.json", None])
        return cache.key(_spec(config), plan)

    before = key()
    _edit(config.root / "out.json", '{"run_id": "run-1"}')
    assert key() == before
    _edit(config.root / "other.json", "{}")
    assert key() != before
    other = key()

    def key_of_a_run_asked_for(name: str) -> str:
        cache = RunCache.open(config, reports=[config.root / name])
        return cache.key(_spec(config), plan)

    # a later run asked for other files: out.json, written by an earlier run, is still no input
    assert key_of_a_run_asked_for("summary.md") == other
    _edit(config.root / "summary.md", "# run-2")
    _edit(config.root / "out.json", '{"run_id": "run-2"}')
    assert key_of_a_run_asked_for("report.xml") == other
    (config.reports_dir / ".cache" / "report-files.json").write_text("[[[")  # damaged: forgotten
    assert key_of_a_run_asked_for("report.xml") != other


def test_a_folder_of_this_run_in_the_project_keys_as_such(make_project) -> None:
    """``--out split/x`` inside the project is hidden from the container; its name (which
    differs per run) is not part of the key."""
    config = _config(make_project)

    def spec_for(name: str) -> ContainerSpec:
        run = config.root / "split" / name / "environments" / "one"
        mounts = (*_spec(config).mounts[:3],
                  Mount(source=run / "outputs", target="/out", read_only=False),
                  Mount(source=run / "meta", target="/meta", read_only=False))  # fmt: skip
        return _spec(config, mounts=mounts, masked=("/project/reports", f"/project/split/{name}"))

    assert _key(config, spec_for("a")) == _key(config, spec_for("b"))


# --- the memory of file hashes --------------------------------------------------------------


@pytest.fixture
def reads(monkeypatch) -> list[Path]:
    """Every file whose content is hashed."""
    done: list[Path] = []
    real = cache_module._sha256_file

    def counting(path: Path) -> str:
        done.append(path)
        return real(path)

    monkeypatch.setattr(cache_module, "_sha256_file", counting)
    return done


def test_file_hashes_are_remembered_by_stat(tmp_path, reads, monkeypatch) -> None:
    monkeypatch.setattr(cache_module, "RACY_SECONDS", -60.0)  # ctime cannot be set back
    data = tmp_path / "data"
    _edit(data / "big.bin", "x" * 1000)
    memory = tmp_path / HASHES_FILE
    first = tree_digest(data, hashes := FileHashes(memory))
    hashes.save()
    assert len(reads) == 1
    assert tree_digest(data, FileHashes(memory)) == first  # a new process: read from the file
    assert len(reads) == 1
    # a changed modification time, or size, is hashed again
    os.utime(data / "big.bin", ns=(OLD + 1, OLD + 1))
    assert tree_digest(data, FileHashes(memory)) == first
    assert len(reads) == 2
    _edit(data / "big.bin", "x" * 1001)
    assert tree_digest(data, FileHashes(memory)) != first
    assert len(reads) == 3


def test_a_file_changed_just_now_is_not_remembered(tmp_path, reads) -> None:
    path = tmp_path / "fresh.bin"
    path.write_text("new")
    hashes = FileHashes(tmp_path / HASHES_FILE)
    hashes.digest(path, path.lstat())
    hashes.save()
    FileHashes(tmp_path / HASHES_FILE).digest(path, path.lstat())
    assert len(reads) == 2  # its mtime cannot yet show a second change of the same size


@pytest.mark.parametrize("content", ["", "{", "[]", '{"version": 1, "files": {"/x": [1]}}',
                                     '{"version": 1, "files": []}'])  # fmt: skip
def test_a_damaged_hash_memory_is_an_empty_one(tmp_path, monkeypatch, content: str) -> None:
    monkeypatch.setattr(cache_module, "RACY_SECONDS", -60.0)  # ctime cannot be set back
    memory = tmp_path / HASHES_FILE
    memory.write_text(content)
    _edit(tmp_path / "d" / "f", "f")
    hashes = FileHashes(memory)
    assert tree_digest(tmp_path / "d", hashes) == tree_digest(tmp_path / "d", FileHashes(None))
    hashes.save()
    assert json.loads(memory.read_text())["version"] == 1


def test_files_digest_is_by_name_and_content(tmp_path) -> None:
    """The digest explain keys its experiments with."""
    _edit(tmp_path / "a.py", "one")
    _edit(tmp_path / "b.py", "two")
    paths = [tmp_path / "a.py", tmp_path / "b.py"]
    before = files_digest(paths)
    assert files_digest(reversed(paths)) == before
    _edit(tmp_path / "b.py", "tw0")
    assert files_digest(paths) != before


# --- runs served from the cache -------------------------------------------------------------


def _outputs(result: RunResult) -> dict[str, Any]:
    found = {}
    for env in result.environments:
        for path in sorted(env.outputs_dir.rglob("*.npz")):
            with np.load(path) as arrays:
                found[f"{env.name}/{path.name}"] = {k: arrays[k].tolist() for k in arrays}
    return found


def _summary(result: RunResult) -> list[tuple[Any, ...]]:
    return [(e.name, e.status, e.image_id, e.fixtures, e.seconds, e.fingerprint)
            for e in result.environments]  # fmt: skip


def test_a_second_run_starts_no_container(make_project, fake_engine, tmp_path) -> None:
    config = _config(make_project)
    first = _run(config, fake_engine, "run-1")
    assert len(fake_engine.runs) == 2
    assert len(_entries(config)) == 2
    events: list[ProgressEvent] = []
    second = _run(config, fake_engine, "run-2", events=events)
    assert len(fake_engine.runs) == 2  # no container
    assert _summary(second) == _summary(first)
    assert _outputs(second) == _outputs(first)
    messages = [e.message for e in events if e.finished]
    assert len(messages) == 2 and all(m.startswith("cached (key ") for m in messages)
    for env in second.environments:
        assert env.outputs_dir.parent == config.reports_dir / "run-2" / "environments" / env.name
        assert (env.outputs_dir.parent / "outputs.arrow").is_file()  # the output store too
        assert (env.outputs_dir.parent / "log.txt").is_file()
        old = first.environments[0].outputs_dir.parent.parent / env.name / "outputs" / "a.png.npz"
        assert (env.outputs_dir / "a.png.npz").stat().st_ino == old.stat().st_ino  # linked


def test_no_cache_runs_again_and_replaces_the_entries(make_project, fake_engine) -> None:
    config = _config(make_project)
    _run(config, fake_engine, "run-1")
    before = {p.name: (p / ENTRY_FILE).read_text() for p in _entries(config)}
    time.sleep(1.1)  # "created" is stored to the second
    _run(config, fake_engine, "run-2", read=False)
    assert len(fake_engine.runs) == 4
    after = {p.name: (p / ENTRY_FILE).read_text() for p in _entries(config)}
    assert after.keys() == before.keys() and after != before
    _run(config, fake_engine, "run-3")
    assert len(fake_engine.runs) == 4


def _crash(box: Mounted) -> Any:
    box.write_status({f: {"status": "running"} for f in box.plan["fixtures"]})
    return outcome(139, log="Segmentation fault")


def test_only_successful_runs_are_cached(make_project, fake_engine) -> None:
    config = _config(make_project)
    fake_engine.behaviours["two"] = _crash
    _run(config, fake_engine, "run-1")
    assert len(_entries(config)) == 1
    second = _run(config, fake_engine, "run-2")
    assert [e.status for e in second.environments] == ["ok", "crash"]
    assert len(fake_engine.runs) == 3  # only the crashed one again


@pytest.mark.parametrize("extra", ["[run]\nrepeat = 2\n", '[run]\nnetwork = "bridge"\n'])
def test_repeats_and_network_runs_are_never_cached(make_project, fake_engine, extra) -> None:
    config = _config(make_project, extra)
    runs = len(config.environments) * config.run.repeat
    _run(config, fake_engine, "run-1")
    _run(config, fake_engine, "run-2")
    assert len(fake_engine.runs) == 2 * runs
    assert _entries(config) == []


def test_a_changed_fixture_runs_again(make_project, fake_engine) -> None:
    config = _config(make_project)
    _run(config, fake_engine, "run-1")
    _edit(config.fixtures_dir / "b.png", "bbbc")
    _run(config, fake_engine, "run-2")
    assert len(fake_engine.runs) == 4
    _run(config, fake_engine, "run-3")
    assert len(fake_engine.runs) == 4


def test_explain_runners_use_no_cache(make_project, fake_engine) -> None:
    config = _config(make_project)
    for env in config.environments:
        fake_engine.add(env.image)
    for run_id in ("run-1", "run-2"):
        Runner(fake_engine, make_plan(config), run_id=run_id).run(config.reports_dir / run_id)
    assert len(fake_engine.runs) == 4
    assert not (config.reports_dir / ".cache").exists()


# --- untrusted outputs ----------------------------------------------------------------------


def _planting(secret: Path):
    def behaviour(box: Mounted) -> Any:
        result = all_ok(box)
        (box.out / "link.npz").symlink_to(secret)
        (box.out / "dangling").symlink_to("/nonexistent/target")
        os.mkfifo(box.out / "pipe")
        deep = box.out
        for _ in range(60):
            deep = deep / "d"
        deep.mkdir(parents=True)
        (deep / "leaf.npz").write_bytes(b"leaf")
        return result

    return behaviour


def test_links_in_outputs_are_stored_and_restored_as_links(make_project, fake_engine,
                                                          tmp_path) -> None:  # fmt: skip
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    config = _config(make_project, names=("one",))
    fake_engine.behaviours["one"] = _planting(secret)
    _run(config, fake_engine, "run-1")
    (entry,) = _entries(config)
    stored = entry / ENTRY_TREE / "outputs"
    assert (stored / "link.npz").is_symlink()
    assert os.readlink(stored / "link.npz") == str(secret)
    assert not (stored / "pipe").exists()  # special files are skipped
    regular = [p for p in entry.rglob("*") if p.is_file() and not p.is_symlink()]
    assert all(b"host secret" not in p.read_bytes() for p in regular)
    second = _run(config, fake_engine, "run-2")
    assert len(fake_engine.runs) == 1
    outputs = second.environments[0].outputs_dir
    assert os.readlink(outputs / "link.npz") == str(secret)
    assert os.readlink(outputs / "dangling") == "/nonexistent/target"
    assert (outputs / ("d/" * 60) / "leaf.npz").read_bytes() == b"leaf"


def test_copy_tree_keeps_read_only_folders(tmp_path) -> None:
    source = tmp_path / "src"
    _edit(source / "locked" / "f", "f")
    (source / "locked").chmod(0o555)
    copy_tree(source, tmp_path / "dst")
    assert (tmp_path / "dst" / "locked" / "f").read_text() == "f"
    assert ((tmp_path / "dst" / "locked").stat().st_mode & 0o777) == 0o555


# --- damage and failures --------------------------------------------------------------------


def _drop_a_file(entry: Path) -> None:
    (entry / ENTRY_TREE / "outputs" / "a.png.npz").unlink()


def _rewrite_in_place(entry: Path) -> None:
    with (entry / ENTRY_TREE / "meta" / "fingerprint.json").open("a") as handle:
        handle.write(" ")


def _manifest_as_link(entry: Path) -> None:
    (entry / ENTRY_FILE).unlink()
    (entry / ENTRY_FILE).symlink_to("/dev/zero")


DAMAGE = {
    "a file missing": _drop_a_file,
    "a file rewritten in place": _rewrite_in_place,
    "entry.json garbage": lambda entry: (entry / ENTRY_FILE).write_text("{not json"),
    "entry.json a list": lambda entry: (entry / ENTRY_FILE).write_text("[]"),
    "entry.json missing": lambda entry: (entry / ENTRY_FILE).unlink(),
    "entry.json a link": _manifest_as_link,
    "tree missing": lambda entry: shutil.rmtree(entry / ENTRY_TREE),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_entry_is_a_miss_with_a_warning(make_project, fake_engine, caplog,
                                                  damage: str) -> None:  # fmt: skip
    config = _config(make_project, names=("one",))
    _run(config, fake_engine, "run-1")
    (entry,) = _entries(config)
    DAMAGE[damage](entry)
    with caplog.at_level(logging.WARNING, logger="reprocheck"):
        second = _run(config, fake_engine, "run-2")
    assert second.environments[0].status == "ok"
    assert len(fake_engine.runs) == 2  # ran again
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "damaged" in warnings[0], warnings
    assert (second.environments[0].outputs_dir / "a.png.npz").is_file()
    _run(config, fake_engine, "run-3")  # the run stored a sound entry again
    assert len(fake_engine.runs) == 2


def test_an_unwritable_cache_runs_without_it_with_one_warning(make_project, fake_engine,
                                                             caplog) -> None:  # fmt: skip
    config = _config(make_project)
    config.reports_dir.mkdir(parents=True)
    (config.reports_dir / ".cache").write_text("a file where the cache folder belongs")
    with caplog.at_level(logging.WARNING, logger="reprocheck"):
        first = _run(config, fake_engine, "run-1")
        _run(config, fake_engine, "run-2")
    assert [e.status for e in first.environments] == ["ok", "ok"]
    assert len(fake_engine.runs) == 4
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("running without it" in w for w in warnings)


def test_a_store_that_fails_warns_once(make_project, fake_engine, caplog) -> None:
    config = _config(make_project, names=("one", "two", "three"))
    for env in config.environments:
        fake_engine.add(env.image)
    cache = RunCache.open(config)
    cache.runs.rmdir()
    cache.runs.write_text("not a folder any more")
    with caplog.at_level(logging.WARNING, logger="reprocheck"):
        result = Runner(fake_engine, make_plan(config), run_id="r", cache=cache).run(
            config.reports_dir / "r"
        )
    assert [e.status for e in result.environments] == ["ok"] * 3
    assert len(caplog.records) == 1 and "cannot store" in caplog.records[0].getMessage()


@pytest.mark.parametrize("named", [True, False], ids=["copy", "write"])
def test_a_full_disk_warns_once(make_project, fake_engine, caplog, monkeypatch,
                                named: bool) -> None:  # fmt: skip
    """A full cache disk as shutil reports it (the file read in ``filename``, the file in the
    cache it was writing in ``filename2``) or as a write reports it (no file named). One
    warning for the run, nothing more stored."""
    config = _config(make_project, names=("one", "two", "three"))
    for env in config.environments:
        fake_engine.add(env.image)
    cache = RunCache.open(config)
    copies: list[Path] = []

    def disk_full(source: Path, target: Path) -> None:
        copies.append(source)
        error = OSError(errno.ENOSPC, "No space left on device")
        if named:
            error.filename, error.filename2 = str(source / "outputs" / "a.npy"), str(target)
        raise error

    monkeypatch.setattr(cache_module, "copy_tree", disk_full)
    with caplog.at_level(logging.WARNING, logger="reprocheck"):
        result = Runner(fake_engine, make_plan(config), run_id="r", cache=cache).run(
            config.reports_dir / "r"
        )
    assert [e.status for e in result.environments] == ["ok"] * 3
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "No space left" in warning and "rest of this run" in warning
    assert len(copies) == 1 and _entries(config) == []


def test_outputs_that_cannot_be_copied_cost_only_their_own_entry(
    make_project, fake_engine, caplog, monkeypatch
) -> None:
    """A folder the pipeline left unreadable (as a user, not root) fails that store alone."""
    config = _config(make_project, names=("one", "two"))
    real = cache_module.copy_tree

    def unreadable_in_one(source: Path, target: Path) -> None:
        if source.name == "one":
            raise PermissionError(13, "Permission denied", str(source / "outputs" / "locked"))
        real(source, target)

    monkeypatch.setattr(cache_module, "copy_tree", unreadable_in_one)
    with caplog.at_level(logging.WARNING, logger="reprocheck"):
        _run(config, fake_engine, "run-1")
    assert len(_entries(config)) == 1
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "result of one" in warning and "rest of this run" not in warning


def test_files_changed_while_the_container_ran_are_not_cached(make_project, fake_engine,
                                                             caplog) -> None:  # fmt: skip
    config = _config(make_project, names=("one",))

    def edits_the_project(box: Mounted) -> Any:
        _edit(config.root / "lib" / "helper.py", "X = 3\n")  # a user saving a file meanwhile
        return all_ok(box)

    fake_engine.behaviours["one"] = edits_the_project
    with caplog.at_level(logging.WARNING, logger="reprocheck"):
        _run(config, fake_engine, "run-1")
    assert _entries(config) == []
    assert "changed while one ran" in caplog.records[0].getMessage()


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_runs_fill_each_entry_once_and_readers_never_see_half(
    make_project, fake_engine
) -> None:
    config = _config(make_project, names=("one", "two", "three"))
    errors: list[BaseException] = []
    results: list[RunResult] = []

    def one_run(index: int) -> None:
        try:
            results.append(_run(config, fake_engine, f"run-{index}"))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one_run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(e.status == "ok" for r in results for e in r.environments)
    assert len(_entries(config)) == 3
    assert not [p for p in (config.reports_dir / ".cache" / "runs").iterdir()
                if p.name.startswith(".")]  # fmt: skip
    reference = _outputs(results[0])
    assert all(_outputs(r) == reference for r in results)
    runs = len(fake_engine.runs)
    _run(config, fake_engine, "run-last")
    assert len(fake_engine.runs) == runs


# --- prune ----------------------------------------------------------------------------------


def test_prune(make_project, fake_engine) -> None:
    config = _config(make_project, names=("one", "two", "three"))
    _run(config, fake_engine, "run-1")
    folder = config.reports_dir / ".cache"
    old, damaged, orphan = _entries(config)
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    (damaged / ENTRY_FILE).write_text("{")
    stale = folder / "runs" / ".tmp-abc"
    stale.mkdir()
    os.utime(stale, (time.time() - 7200,) * 2)
    orphan_image = json.loads((orphan / ENTRY_FILE).read_text())["image_id"]
    manifests = sum((entry / ENTRY_FILE).stat().st_size for entry in (old, damaged, orphan))
    done = prune(folder, older_than_days=30, image_exists=lambda i: i != orphan_image)
    assert (done.removed, done.damaged, done.image_gone, done.kept) == (3, 1, 1, 0)
    assert done.freed_bytes == manifests  # every other file is still linked from run-1
    assert _entries(config) == [] and not stale.exists()
    _run(config, fake_engine, "run-2")
    shutil.rmtree(config.reports_dir / "run-1")
    shutil.rmtree(config.reports_dir / "run-2")
    assert prune(folder).kept == 3  # recently used
    done = prune(folder, everything=True)
    assert done.removed == 3 and done.freed_bytes > 0
    assert not (folder / HASHES_FILE).exists()


def test_a_hash_memory_that_is_a_folder_costs_its_hits_and_prune_repairs_it(
    make_project, fake_engine, caplog
) -> None:
    config = _config(make_project)
    folder = config.reports_dir / ".cache"
    (folder / HASHES_FILE).mkdir(parents=True)
    (folder / HASHES_FILE / "x").write_text("x")
    run = _run(config, fake_engine, "run-1")  # keyed, stored: only the memory is not kept
    assert [e.status for e in run.environments] == ["ok", "ok"] and len(_entries(config)) == 2
    assert "cannot remember file hashes" in caplog.text
    done = prune(folder)
    assert done.failed == ()
    assert not (folder / HASHES_FILE).exists()
    _run(config, fake_engine, "run-2")
    assert (folder / HASHES_FILE).is_file()


def test_a_file_in_an_entrys_place_is_replaced_by_the_entry(make_project, fake_engine) -> None:
    config = _config(make_project)
    _run(config, fake_engine, "run-1")
    first, second = _entries(config)
    shutil.rmtree(first)
    first.write_text("x")  # a file where the entry was: a miss, then stored again
    _run(config, fake_engine, "run-2")
    assert first.is_dir() and second.is_dir()
    runs = len(fake_engine.runs)
    _run(config, fake_engine, "run-3")
    assert len(fake_engine.runs) == runs  # both restored


def test_prune_says_what_it_could_not_remove(make_project, fake_engine, monkeypatch) -> None:
    """A read-only cache folder: every entry left, counted as kept, and named (the CLI makes
    it one error line, exit 2)."""
    config = _config(make_project)
    _run(config, fake_engine, "run-1")

    def read_only(path: Path) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(cache_module, "_remove", read_only)
    done = prune(config.reports_dir / ".cache", everything=True)
    assert (done.removed, done.kept, len(done.failed)) == (0, 2, 2)
    assert "Read-only file system" in done.failed[0]


def test_masking_keys_what_it_hides_not_the_folders_it_names(make_project) -> None:
    """A folder hidden from the container leaves the key with its files; which folders are
    hidden is not keyed ('baseline save' makes a baselines/ folder: nothing is run again)."""
    config = _config(make_project)
    before = _key(config)
    masked = ("/project/reports", "/project/baselines")
    assert _key(config, _spec(config, masked=masked)) == before  # no such folder
    _edit(config.root / "baselines" / "nightly" / "run.json", "{}")
    assert _key(config) != before  # the container sees it
    assert _key(config, _spec(config, masked=masked)) == before  # hidden: as before


PYPROJECT = """[tool.mypipe]
factor = 1

[tool.reprocheck.pipeline]
callable = "p.py:run"

[[tool.reprocheck.environments]]
name = "one"
image = "img/one:1"
"""


def test_a_pyprojects_other_tables_are_keyed_and_reprochecks_are_not(make_project) -> None:
    """A pipeline may read its settings from the pyproject.toml the container sees."""
    source = make_project(PYPROJECT, {"p.py": "def run(path):\n    pass\n", "fixtures/a": "a"},
                          name="pyproject.toml")  # fmt: skip
    config = load_config(source)
    before = _key(config)
    source.write_text(PYPROJECT + '\n[tool.reprocheck.tolerance]\n"*" = { atol = 1 }\n# note\n')
    assert _key(config) == before  # compared again, not run again
    source.write_text(PYPROJECT.replace("factor = 1", "factor = 1000"))
    assert _key(config) != before


def test_a_copy_lists_as_what_it_copied(tmp_path: Path) -> None:
    """copy_tree returns the listing a second walk of the copy gives (so a restore does not
    walk the copy again): files, folders, links, a FIFO (skipped), odd names."""
    source = tmp_path / "source"
    (source / "sub" / "deeper").mkdir(parents=True)
    (source / "a.npy").write_bytes(b"a" * 10)
    (source / "sub" / "deeper" / "b c\u00e9.json").write_text("{}")
    (source / "link").symlink_to("sub/deeper")
    os.mkfifo(source / "fifo")
    (source / "sub").chmod(0o555)
    try:
        listing = copy_tree(source, tmp_path / "copy")
        assert listing == tree_listing(tmp_path / "copy") == tree_listing(source)
        assert not (tmp_path / "copy" / "fifo").exists()
    finally:
        (source / "sub").chmod(0o755)
        (tmp_path / "copy" / "sub").chmod(0o755)
