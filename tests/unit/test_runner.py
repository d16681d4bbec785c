"""runner: statuses derived from what a container left behind, isolation between
environments, and the hardened container spec. The engine is a fake (fakes.py)."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FakeEngine, Mounted, all_ok, outcome

from reprocheck.cache import RunCache
from reprocheck.config import load_config
from reprocheck.engine import ContainerSpec
from reprocheck.errors import EXIT_ERROR, ConfigError, ImageBuildError
from reprocheck.matrix import build_matrix
from reprocheck.plan import make_plan
from reprocheck.report.common import problems
from reprocheck.report.json_report import report_dict
from reprocheck.run_model import RunResult
from reprocheck.runner import DEADLINE_GRACE, HARNESS_DIR, Runner, container_user
from reprocheck.stages import exit_code
from reprocheck.store import load_run, save_run

FIXTURES = {"inputs/a.png": "a", "inputs/b.png": "b", "inputs/c.png": "c"}
PLANNED = ["a.png", "b.png", "c.png"]


@pytest.fixture(autouse=True)
def _no_host_ca(no_host_ca: None) -> None:
    """No CA bundle from the environment unless a test sets one."""


def _config(make_project, names=("one", "two"), extra: str = "", pipeline: str = ""):
    envs = "".join(
        f'\n[[environments]]\nname = "{n}"\nimage = "img/{n}:1"\nenv = {{ OMP_NUM_THREADS = "1" }}'
        for n in names
    )
    pipeline = pipeline or 'callable = "pipelines/p.py:run"'
    text = f'[pipeline]\n{pipeline}\n[fixtures]\npath = "inputs"\n{extra}\n{envs}'
    return load_config(make_project(text, FIXTURES))


def _run(make_project, fake_engine: FakeEngine, tmp_path: Path, **kwargs) -> RunResult:
    config = _config(make_project, **kwargs)
    for env in config.environments:
        fake_engine.add(env.image)
    return Runner(fake_engine, make_plan(config), run_id="run-1").run(
        tmp_path / "reports" / "run-1"
    )


def _by_name(result: RunResult):
    return {env.name: env for env in result.environments}


# --- statuses -------------------------------------------------------------------------------


def test_all_fixtures_ok(make_project, fake_engine, tmp_path) -> None:
    result = _run(make_project, fake_engine, tmp_path)
    for env in result.environments:
        assert env.status == "ok"
        assert env.error is None
        assert not env.failed
        assert [f.status for f in env.fixtures] == ["ok"] * 3
        assert [f.fixture for f in env.fixtures] == PLANNED
        assert env.fingerprint["os"]["VERSION_CODENAME"] == "fake"
        assert env.image_id == fake_engine.present[f"img/{env.name}:1"].id
        assert sorted(p.name for p in env.outputs_dir.iterdir()) == [f"{f}.npz" for f in PLANNED]
        assert env.outputs_dir == tmp_path / "reports/run-1/environments" / env.name / "outputs"
    spec = json.loads((result.environments[0].meta_dir / "spec.json").read_text())
    assert spec["fixtures"] == PLANNED
    assert spec["mode"] == "callable"
    assert spec["callable"] == "pipelines/p.py:run"


def _one_fixture_raises(box: Mounted) -> object:
    box.write_outputs("a.png", value=np.arange(3))
    box.write_outputs("c.png", value=np.arange(3))
    box.write_status({
        "a.png": {"status": "ok"},
        "b.png": {"status": "error", "error": "Traceback ...\nValueError: bad pixel"},
        "c.png": {"status": "ok"},
    })  # fmt: skip
    box.write_fingerprint()
    return outcome(0)


def _harness_error(box: Mounted) -> object:
    box.write_status({}, harness_error="Traceback ...\nRuntimeError: pipeline file p.py missing\n")
    return outcome(3)


def _segfault(box: Mounted) -> object:
    box.write_status({"a.png": {"status": "ok"}, "b.png": {"status": "running"}})
    return outcome(139, log="line 1\nFatal Python error: Segmentation fault\n")


def _died_before_status(box: Mounted) -> object:
    return outcome(127, log="python3: not found")


def _timeout(box: Mounted) -> object:
    box.write_status({"a.png": {"status": "running"}})
    return outcome(None, timed_out=True)


def _oom(box: Mounted) -> object:
    box.write_status({"a.png": {"status": "running"}})
    return outcome(137, oom=True, log="Killed")


@pytest.mark.parametrize(
    ("behaviour", "status", "error_part", "fixture_states"),
    [
        (_one_fixture_raises, "partial", "1 of 3 fixtures failed", ["ok", "error", "ok"]),
        (_harness_error, "error", "RuntimeError: pipeline file p.py missing",
         ["not_run"] * 3),
        (_segfault, "crash", "Segmentation fault", ["ok", "running", "not_run"]),
        (_died_before_status, "crash", "exit code 127: python3: not found", ["not_run"] * 3),
        (_timeout, "timeout", "timed out", ["running", "not_run", "not_run"]),
        (_oom, "oom", "out of memory", ["running", "not_run", "not_run"]),
    ],
    ids=["partial", "error", "crash", "crash-early", "timeout", "oom"],
)  # fmt: skip
def test_statuses(make_project, fake_engine, tmp_path, behaviour, status, error_part,
                  fixture_states) -> None:  # fmt: skip
    fake_engine.behaviours["two"] = behaviour
    envs = _by_name(_run(make_project, fake_engine, tmp_path, names=("one", "two", "three")))
    failing = envs["two"]
    assert failing.status == status
    assert error_part in (failing.error or "")
    assert [f.status for f in failing.fixtures] == fixture_states
    assert failing.failed is (status not in ("ok", "partial"))
    # one failing environment does not stop or spoil the others
    assert envs["one"].status == envs["three"].status == "ok"
    assert len(fake_engine.runs) == 3


def test_fixture_error_keeps_its_traceback_tail(make_project, fake_engine, tmp_path) -> None:
    fake_engine.behaviours["one"] = _one_fixture_raises
    env = _by_name(_run(make_project, fake_engine, tmp_path))["one"]
    (failed,) = [f for f in env.fixtures if f.status == "error"]
    assert failed.fixture == "b.png"
    assert failed.error is not None
    assert failed.error.endswith("ValueError: bad pixel")


def test_container_log_is_kept(make_project, fake_engine, tmp_path) -> None:
    fake_engine.behaviours["one"] = _segfault
    env = _by_name(_run(make_project, fake_engine, tmp_path))["one"]
    assert "Segmentation fault" in (env.meta_dir.parent / "log.txt").read_text()


def _run_command(make_project, fake_engine: FakeEngine, tmp_path: Path) -> RunResult:
    command = 'command = ["python3", "x.py", "{inputs}", "{outputs}"]'
    return _run(make_project, fake_engine, tmp_path, pipeline=command)


def test_command_that_fails(make_project, fake_engine, tmp_path) -> None:
    def command_fails(box: Mounted) -> object:
        assert box.plan["mode"] == "command"
        box.write_status({}, command={"status": "error", "exit_code": 2, "error": "no such file"})
        return outcome(0)

    fake_engine.behaviours["one"] = command_fails
    envs = _by_name(_run_command(make_project, fake_engine, tmp_path))
    assert envs["one"].status == "error"
    assert "command exited 2: no such file" in (envs["one"].error or "")
    assert envs["two"].status == "ok"


def test_image_failure_is_that_environments_error(make_project, fake_engine, tmp_path) -> None:
    config = _config(make_project, names=("one", "two", "three"))
    fake_engine.add("img/one:1")
    fake_engine.add("img/three:1")  # img/two:1 is neither present nor pullable
    result = Runner(fake_engine, make_plan(config), run_id="run").run(tmp_path / "run")
    envs = _by_name(result)
    assert envs["two"].status == "error"
    assert "img/two:1" in (envs["two"].error or "")
    assert envs["two"].image_id is None
    assert envs["one"].status == envs["three"].status == "ok"
    assert [s.labels["io.reprocheck.environment"] for s in fake_engine.runs] == ["one", "three"]


def test_engine_error_during_run_is_that_environments_error(make_project, fake_engine, tmp_path):
    def engine_refuses(box: Mounted) -> object:
        raise ImageBuildError("image platform (linux/arm64) does not match the host")

    fake_engine.behaviours["one"] = engine_refuses
    envs = _by_name(_run(make_project, fake_engine, tmp_path))
    assert envs["one"].status == "error"
    assert "does not match the host" in (envs["one"].error or "")
    assert envs["two"].status == "ok"


def test_repeats_run_again_in_their_own_folders(make_project, fake_engine, tmp_path) -> None:
    result = _run(make_project, fake_engine, tmp_path, extra="[run]\nrepeat = 3\n")
    assert [(e.name, e.repeat) for e in result.repeats] == [
        ("one", 2), ("one", 3), ("two", 2), ("two", 3),
    ]  # fmt: skip
    assert len({e.outputs_dir for e in (*result.environments, *result.repeats)}) == 6
    assert len(fake_engine.runs) == 6


def test_stale_outputs_are_cleared(make_project, fake_engine, tmp_path) -> None:
    stale = tmp_path / "reports/run-1/environments/one/outputs/old.npz"
    stale.parent.mkdir(parents=True)
    stale.write_text("")
    _run(make_project, fake_engine, tmp_path)
    assert not stale.exists()


def test_a_job_slot_is_freed_before_the_output_store_is_built(
    make_project, fake_engine, tmp_path, monkeypatch
) -> None:
    """With one job, the second container starts while the first environment's output store
    is still being built (the store waits for it here), and both stores exist at the end."""
    import reprocheck.output_store as output_store

    second_started = threading.Event()
    waited: list[bool] = []
    real_write_store = output_store.write_store

    def slow_store(outputs: Path, spec: Any) -> Path:
        if not waited:
            waited.append(second_started.wait(timeout=30))
        return real_write_store(outputs, spec)

    def second(box: Mounted) -> Any:
        second_started.set()
        return all_ok(box)

    monkeypatch.setattr(output_store, "write_store", slow_store)
    fake_engine.behaviours["two"] = second
    config = _config(make_project)
    for env in config.environments:
        fake_engine.add(env.image)
    result = Runner(fake_engine, make_plan(config), run_id="r").run(tmp_path / "r", jobs=1)
    assert waited == [True]  # the second container ran while the first store waited
    for env in result.environments:
        assert env.status == "ok"
        assert (env.outputs_dir.parent / "outputs.arrow").is_file()


def test_a_stop_while_stores_are_being_built_is_a_stop(
    make_project, fake_engine, tmp_path, monkeypatch
) -> None:
    """Ctrl-C after every container finished, while the finisher builds a store: the run is
    stopped (not lost), and no environment turns into an internal error."""
    import reprocheck.output_store as output_store

    release = threading.Event()
    real_write_store = output_store.write_store

    def slow_store(outputs: Path, spec: Any) -> Path:
        release.wait(timeout=30)
        return real_write_store(outputs, spec)

    monkeypatch.setattr(output_store, "write_store", slow_store)
    config = _config(make_project)
    for env in config.environments:
        fake_engine.add(env.image)
    main = threading.get_ident()

    def stop_soon() -> None:
        time.sleep(0.5)  # the fake containers are done; the first store waits for release
        signal.pthread_kill(main, signal.SIGINT)
        time.sleep(0.2)
        release.set()

    threading.Thread(target=stop_soon).start()
    result = Runner(fake_engine, make_plan(config), run_id="r").run(tmp_path / "r", jobs=1)
    assert result.stopped and result.interrupted
    assert [env.status for env in result.environments] == ["ok", "ok"]


@pytest.mark.parametrize("again", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_second_signal_while_the_run_stops_is_ignored(
    make_project, fake_engine, tmp_path, monkeypatch, again: signal.Signals
) -> None:
    """Ctrl-C, then another signal while the run is stopping its containers (a user pressing
    twice, a CI runner sending SIGTERM after SIGINT): the stop completes and the run returns
    as stopped. Before, the second signal ended the stop half-way and the process waited at
    exit for a container nobody stopped."""
    config = _config(make_project)
    for env in config.environments:
        fake_engine.add(env.image)
    main = threading.get_ident()
    stopped = threading.Event()

    def runs_until_stopped(box: Mounted) -> Any:
        stopped.wait(timeout=30)
        return all_ok(box)

    fake_engine.behaviours["one"] = fake_engine.behaviours["two"] = runs_until_stopped
    real_stop = fake_engine.stop

    def stop(labels: Any) -> int:
        if not fake_engine.stops:
            signal.pthread_kill(main, again)  # arrives while the containers are being stopped
            time.sleep(0.05)
        stopped.set()
        return real_stop(labels)

    monkeypatch.setattr(fake_engine, "stop", stop)

    def ctrl_c_soon() -> None:
        time.sleep(0.3)  # both containers run
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=ctrl_c_soon).start()
    started = time.monotonic()
    result = Runner(fake_engine, make_plan(config), run_id="r").run(tmp_path / "r", jobs=2)
    assert result.stopped and result.interrupted
    assert len(fake_engine.stops) >= 1 and time.monotonic() - started < 10
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_what_comparing_imports_is_preloaded_once_after_the_first_store(
    make_project, fake_engine, tmp_path
) -> None:
    """The caller's preload runs once, in the finisher thread, after an output store exists
    (so with the compare stack imported while the other containers run); a run whose every
    environment came from the cache never calls it (a repeated run stays light)."""
    config = _config(make_project, names=("one", "two", "three"))
    for env in config.environments:
        fake_engine.add(env.image)
    calls: list[tuple[str, int]] = []

    def preload() -> None:
        stores = len(list((tmp_path / "r").glob("environments/*/outputs.arrow")))
        calls.append((threading.current_thread().name, stores))

    cache = RunCache.open(config)
    result = Runner(fake_engine, make_plan(config), run_id="r", cache=cache,
                    preload=preload).run(tmp_path / "r", jobs=1)  # fmt: skip
    assert [env.status for env in result.environments] == ["ok"] * 3
    assert len(calls) == 1
    thread, stores = calls[0]
    assert thread.startswith("finish") and stores >= 1
    cache = RunCache.open(config)
    again = Runner(fake_engine, make_plan(config), run_id="s", cache=cache,
                   preload=preload).run(tmp_path / "s", jobs=1)  # fmt: skip
    settled = cache.settled()
    assert settled is not None and settled.all_restored  # no container ran
    assert [env.status for env in again.environments] == ["ok"] * 3
    assert len(calls) == 1


# --- the container spec ---------------------------------------------------------------------


def test_container_spec_is_hardened(make_project, fake_engine, tmp_path) -> None:
    result = _run(make_project, fake_engine, tmp_path, names=("one",))
    (spec,) = fake_engine.runs
    env = result.environments[0]
    config_root = result.config_source.parent
    assert spec.network == "none"
    assert spec.read_only is True
    uid = spec.user.split(":")[0]
    assert uid not in ("0", "root", "")
    mounts = {m.target: m for m in spec.mounts}
    assert mounts["/project"].source == config_root
    assert mounts["/fixtures"].source == config_root / "inputs"
    assert mounts["/opt/reprocheck"].source == HARNESS_DIR.resolve()
    assert mounts["/out"].source == env.outputs_dir
    assert mounts["/meta"].source == env.meta_dir
    writable = {m.target for m in spec.mounts if not m.read_only}
    assert writable == {"/out", "/meta"}
    assert spec.image == env.image_id  # pinned by ID, not by a tag that may move
    assert spec.command == ("python3", "/opt/reprocheck/run.py", "/meta")
    assert spec.env["OMP_NUM_THREADS"] == "1"
    assert spec.env["PYTHONHASHSEED"] == "0"
    assert spec.labels["io.reprocheck.environment"] == "one"
    assert spec.labels["io.reprocheck.run"] == "run-1"


def test_limits_come_from_config(make_project, fake_engine, tmp_path) -> None:
    extra = """[run]
memory = "64m"
cpus = 1.5
pids_limit = 99
timeout = 3
shm_size = "8m"
user = "1234:1234"
"""
    _run(make_project, fake_engine, tmp_path, names=("one",), extra=extra)
    (spec,) = fake_engine.runs
    assert (spec.memory, spec.cpus, spec.pids_limit, spec.shm_size, spec.user) == (
        "64m", 1.5, 99, "8m", "1234:1234",
    )  # fmt: skip
    assert_deadline(spec, 3)


def assert_deadline(spec: ContainerSpec, timeout: float) -> None:
    """The harness enforces [run] timeout inside the container; the host waits a grace longer."""
    meta = next(m.source for m in spec.mounts if m.target == "/meta")
    assert json.loads((meta / "spec.json").read_text())["deadline"] == timeout
    assert spec.timeout == timeout + DEADLINE_GRACE


def test_default_limits(make_project, fake_engine, tmp_path) -> None:
    _run(make_project, fake_engine, tmp_path, names=("one",))
    (spec,) = fake_engine.runs
    assert (spec.memory, spec.pids_limit) == ("16g", 4096)
    assert_deadline(spec, 3600.0)


def test_host_ca_is_mounted_read_only_beside_the_containers_bundle(
    make_project, fake_engine, tmp_path, monkeypatch
) -> None:
    bundle = tmp_path / "host-ca.crt"
    bundle.write_text("pem")
    monkeypatch.setenv("PIP_CERT", str(bundle))
    _run(make_project, fake_engine, tmp_path, names=("one",))
    (spec,) = fake_engine.runs
    (ca,) = [m for m in spec.mounts if m.source == bundle]
    assert ca.read_only
    assert ca.target != "/etc/ssl/certs/ca-certificates.crt"
    assert spec.env["PIP_CERT"] == ca.target


@pytest.mark.parametrize(("uid", "expected"), [(0, "65534:65534"), (1000, "1000:1000")])
def test_container_user_is_never_root(make_project, monkeypatch, uid, expected) -> None:
    monkeypatch.setattr("os.getuid", lambda: uid)
    monkeypatch.setattr("os.getgid", lambda: uid)
    assert container_user(_config(make_project)) == expected


def test_command_that_succeeds_is_ok_not_partial(make_project, fake_engine, tmp_path) -> None:
    def command_ok(box: Mounted) -> object:
        np.save(box.out / "result.npy", np.zeros(2))
        box.write_status({}, command={"status": "ok", "exit_code": 0})
        box.write_fingerprint()
        return outcome(0)

    fake_engine.behaviours["one"] = command_ok
    envs = _by_name(_run_command(make_project, fake_engine, tmp_path))
    assert envs["one"].status == "ok", envs["one"].error
    assert envs["one"].fixtures == ()  # a command has no per-fixture status


@pytest.mark.parametrize("private", ["project", "inputs"])
def test_a_folder_the_container_user_cannot_enter_is_a_config_error(
    make_project, fake_engine, private: str
) -> None:
    config = _config(make_project, names=("one",))
    folder = config.root if private == "project" else config.fixtures_dir
    folder.chmod(0o700)
    try:
        with pytest.raises(ConfigError, match=r"cannot enter .*drwx------.*chmod o\+rx"):
            Runner(fake_engine, make_plan(config), run_id="r").run(config.reports_dir / "r")
        assert fake_engine.runs == []  # no container started
        folder.chmod(0o701)  # entering is enough (listing is not needed)
        fake_engine.add("img/one:1")
        Runner(fake_engine, make_plan(config), run_id="r").run(config.reports_dir / "r")
        assert len(fake_engine.runs) == 1
    finally:
        folder.chmod(0o755)


# --- a CPU model's emulator left by some of the pipeline's processes ------------------------

LEFT = {"count": 5, "listed": [
    {"pid": 7, "executable": "/usr/bin/python3.11", "argv": ["-c", "import x; x.run()"]},
    {"pid": 8, "executable": "/usr/bin/sort", "argv": ["sort", "a b"]},
    {"pid": 9, "executable": None, "argv": "not a list"},
    "not an entry",
]}  # fmt: skip


def _left_the_emulator(box: Mounted) -> object:
    all_ok(box)
    status = json.loads((box.meta / "status.json").read_text())
    (box.meta / "status.json").write_text(json.dumps(status | {"left_emulator": LEFT}))
    return outcome(0)


def test_processes_that_left_the_emulator_make_the_environment_mixed_cpu(
    make_project, fake_engine, tmp_path
) -> None:
    fake_engine.behaviours["two"] = _left_the_emulator
    result = _run(make_project, fake_engine, tmp_path)
    one, two = result.environments
    assert one.status == "ok" and one.left_emulator == ()
    assert two.status == "mixed_cpu" and not two.failed  # its outputs are still compared
    assert two.left_emulator == (
        "/usr/bin/python3.11: -c 'import x; x.run()'",
        "/usr/bin/sort: sort 'a b'",
        "?",
    )
    assert two.error is not None and two.error.startswith(
        "5 process(es) left the CPU emulator (a program the pipeline exec'd runs on the host CPU"
    )
    assert two.error.endswith("; and 2 more")
    matrix = build_matrix(load_config(result.config_source), result)
    assert exit_code(result, matrix) == EXIT_ERROR  # not a clean run: never "consistent"
    save_run(result)
    stored = {e.name: e for e in load_run(result.run_dir).environments}["two"]
    assert (stored.status, stored.error, stored.left_emulator) == (
        two.status,
        two.error,
        two.left_emulator,
    )
    report = report_dict(result, matrix)
    (entry,) = [e for e in report["environments"] if e["name"] == "two"]
    assert entry["left_emulator"] == list(two.left_emulator)
    assert f"two: mixed_cpu: {two.error}" in problems(report)


def test_a_failed_fixture_and_an_escape_are_both_said(make_project, fake_engine, tmp_path) -> None:
    def both(box: Mounted) -> object:
        _one_fixture_raises(box)
        status = json.loads((box.meta / "status.json").read_text())
        (box.meta / "status.json").write_text(json.dumps(status | {"left_emulator": LEFT}))
        return outcome(0)

    fake_engine.behaviours["one"] = both
    one = _by_name(_run(make_project, fake_engine, tmp_path))["one"]
    assert one.status == "mixed_cpu"
    assert one.error is not None and one.error.startswith("1 of 3 fixtures failed: b.png")
    assert "left the CPU emulator" in one.error
