"""Other CPU models: the plan's emulated copies, the checks of a `cpu` value, and how the
harness puts a program under the emulator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_harness_command import _harness as run_harness

from reprocheck import cpus
from reprocheck.config import load_config
from reprocheck.cpus import AVX2_SINCE, LEVELS, emulation, find_qemu, known_models, qemu_version
from reprocheck.errors import ConfigError
from reprocheck.harness import run as harness
from reprocheck.plan import environment_plan, make_plan

CONFIG = (
    '[pipeline]\ncallable = "p.py:run"\n[fixtures]\npath = "in"\n'
    '[[environments]]\nname = "a"\nimage = "i"\n'
    '[[environments]]\nname = "b"\nimage = "j"\ncpu = "x86-64-v2"\n'
)
QEMU = shutil.which("qemu-x86_64-static")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-user-static is not installed")
NEWEST = find_qemu("x86_64")
# An AVX2 model (x86-64-v3, Haswell) needs qemu 8.0 or later (scripts/setup.sh installs one).
needs_avx2_qemu = pytest.mark.skipif(
    NEWEST is None or qemu_version(NEWEST) < AVX2_SINCE, reason="no qemu-user 8.0 or later"
)


@needs_qemu
def test_levels_map_to_models_qemu_knows() -> None:
    models = known_models(Path(str(QEMU)))
    assert "Haswell" in models and "Nehalem" in models and "qemu64" in models
    assert "vmx-exit-nosave-efer" not in models  # CPUID flags follow the models: not models
    assert all(model in models for model in LEVELS.values())


@needs_avx2_qemu
def test_plan_adds_one_copy_per_cpu_model(make_project) -> None:
    config = load_config(make_project(CONFIG, {"in/x": ""}))
    plan = make_plan(config, (), ("native", "x86-64-v3", "Skylake-Client"))
    assert [e.name for e in plan.environments] == [
        "a",
        "a@x86-64-v3",
        "a@Skylake-Client",
        "b",
    ]  # fmt: skip  (b has its own cpu)
    assert {n: e.model for n, e in plan.emulations.items()} == {
        "a@x86-64-v3": "Haswell", "a@Skylake-Client": "Skylake-Client", "b": "Nehalem"}  # fmt: skip
    assert [e.name for e in make_plan(config).environments] == ["a", "b"]


@needs_avx2_qemu
def test_explains_plan_of_one_environment_keeps_its_cpu_model(make_project) -> None:
    """explain re-runs stored environments: a CPU model's copy (made by --cpus) and an
    environment with its own cpu must run emulated again, not natively."""
    config = load_config(make_project(CONFIG, {"in/x": ""}))
    copy = environment_plan(config, "a@x86-64-v3", ("x",))
    assert [(e.name, e.cpu) for e in copy.environments] == [("a@x86-64-v3", "x86-64-v3")]
    assert {n: e.model for n, e in copy.emulations.items()} == {"a@x86-64-v3": "Haswell"}
    assert copy.fixtures == ("x",)
    own = environment_plan(config, "b", ())
    assert {n: e.model for n, e in own.emulations.items()} == {"b": "Nehalem"}
    assert environment_plan(config, "a", ()).emulations == {}
    with pytest.raises(ConfigError, match="no environment named 'c@x86-64-v3'"):
        environment_plan(config, "c@x86-64-v3", ())
    with pytest.raises(ConfigError, match="no environment named 'b@Haswell'"):
        environment_plan(config, "b@Haswell", ())  # b is emulated itself: it has no copies


@needs_qemu
def test_qemu_is_found_static_and_newest_first(tmp_path: Path, monkeypatch) -> None:
    assert qemu_version(Path(str(QEMU)))[:2] >= (7, 0)
    assert cpus._static(Path(str(QEMU))) and not cpus._static(Path(sys.executable))
    assert not cpus._static(tmp_path / "missing") and not cpus._static(Path("/etc/hostname"))
    found = find_qemu("x86_64")
    assert found is not None and qemu_version(found) == max(
        qemu_version(Path(p).resolve())
        for name in ("qemu-x86_64-static", "qemu-x86_64")
        if (p := shutil.which(name)) and cpus._static(Path(p).resolve())
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu at all
    assert find_qemu("x86_64") is None
    with pytest.raises(ConfigError, match="qemu-x86_64-static is not installed"):
        emulation("b", "Nehalem", None, "cfg")


@needs_qemu
@pytest.mark.parametrize("model", ["x86-64-v3", "Haswell", "Skylake-Client", "EPYC-Rome"])
def test_an_avx2_model_needs_qemu_8(monkeypatch, model: str) -> None:
    """qemu 7.2 computes AVX2/FMA code wrongly: such a model is refused, not run."""
    monkeypatch.setattr(cpus, "qemu_version", lambda _binary: (7, 2, 22))
    with pytest.raises(ConfigError) as error:
        emulation("b", model, None, "cfg")
    assert "is qemu 7.2.22, which computes AVX2/FMA code wrongly under -cpu" in str(error.value)
    assert error.value.fix is not None and "qemu-user 8.0 or later" in error.value.fix
    assert emulation("b", "Nehalem", None, "cfg") is not None  # no AVX: 7.2 is right there
    monkeypatch.setattr(cpus, "qemu_version", lambda _binary: (8, 0))
    found = emulation("b", model, None, "cfg")
    assert found is not None and found.model == LEVELS.get(model, model)


@needs_qemu
@pytest.mark.parametrize(("cpu", "said"), [
    ("Pentium9", "knows no such model (known: x86-64-v2, x86-64-v3, Nehalem"),
    ("x86-64-v4", "AVX-512 cannot be emulated"),
])  # fmt: skip
def test_a_cpu_that_cannot_be_run_is_a_one_line_error(cpu: str, said: str) -> None:
    with pytest.raises(ConfigError) as error:
        emulation("b", cpu, None, "reprocheck.toml")
    assert str(error.value).startswith(f"reprocheck.toml: environment 'b': cpu '{cpu}': ")
    assert said in str(error.value) and "\n" not in str(error.value)


def test_missing_qemu_names_the_package(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(ConfigError, match="qemu-x86_64-static is not installed") as error:
        emulation("b", "Haswell", "linux/amd64", "cfg")
    assert error.value.fix == "apt-get install -y qemu-user-static"
    assert emulation("b", "native", None, "cfg") is None


def test_harness_puts_elf_programs_under_the_emulator(tmp_path: Path) -> None:
    env = {harness.QEMU_ENV: "/run/q", harness.CPU_ENV: "Haswell", "PATH": "/usr/bin:/bin"}
    python = sys.executable
    assert harness.emulated_argv([python, "-c", "1"], env) == [
        "/run/q", "-cpu", "Haswell", str(Path(python).absolute()), "-c", "1"]  # fmt: skip
    assert harness.emulated_argv([python], {"PATH": "/usr/bin"}) == [python]  # native


@pytest.mark.parametrize(
    ("first_line", "interpreter"),
    [
        ("#!/bin/sh", ["/bin/sh"]),
        ("#!/bin/sh -e", ["/bin/sh", "-e"]),
        ("#! /bin/sh", ["/bin/sh"]),
        ("#!/usr/bin/env sh", [shutil.which("sh", path="/usr/bin:/bin")]),
        ("#!/usr/bin/env -S sh -e", ["/usr/bin/env", "-S sh -e"]),  # env itself is emulated
        ("#!/usr/bin/env no-such-program-here", None),
        ("#!/no/such/interpreter", None),
        ("#!/etc/hostname", None),  # not an ELF program
        ("echo no shebang", None),
        ("", None),
    ],
)
def test_a_scripts_interpreter_runs_under_the_emulator(
    tmp_path: Path, first_line: str, interpreter: list[str] | None
) -> None:
    env = {harness.QEMU_ENV: "/run/q", harness.CPU_ENV: "Nehalem", "PATH": "/usr/bin:/bin"}
    script = tmp_path / "run.sh"
    script.write_text(f"{first_line}\necho\n")
    argv = harness.emulated_argv([str(script), "a b"], env)
    if interpreter is None:
        assert argv == [str(script), "a b"]  # left as it is: it runs on the host CPU
    else:
        assert argv == ["/run/q", "-cpu", "Nehalem", *interpreter, str(script), "a b"]


def test_processes_that_left_the_emulator_are_listed_in_start_order() -> None:
    libm = [
        "/usr/bin/python3.11",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib64/ld-linux-x86-64.so.2",
    ]
    numpy = ["/usr/bin/cp", "/usr/lib/python3/dist-packages/numpy/core/_umath.cpython-311.so"]
    processes = [
        {"pid": 9, "start": "30", "executable": "/usr/bin/python3.11", "argv": ["-c"],
         "emulated": False, "files": libm},
        {"pid": 3, "start": "10", "executable": "/run/q", "argv": ["/run/q", "sh"],
         "emulated": True, "files": libm},
        {"pid": 5, "start": "20", "executable": "/usr/bin/ls", "argv": ["ls"], "emulated": False,
         "files": numpy},
        {"pid": 6, "start": "25", "executable": "/usr/bin/ls", "argv": ["ls"], "files": libm},
        # a static tool, and a shell with libc alone: they compute nothing an output holds
        {"pid": 7, "start": "26", "executable": "/usr/bin/qemu-aarch64-static",
         "argv": ["/sbin/ldconfig", "-p"], "emulated": False,
         "files": ["/usr/bin/qemu-aarch64-static"]},
        {"pid": 8, "start": "27", "executable": "/usr/bin/dash", "argv": ["sh"],
         "emulated": False, "files": ["/usr/bin/dash", "/usr/lib/x86_64-linux-gnu/libc.so.6",
                                      "/usr/lib64/ld-linux-x86-64.so.2"]},
    ]  # fmt: skip
    found = harness.left_emulator(processes)
    assert found["count"] == 2
    assert [p["pid"] for p in found["listed"]] == [5, 9]
    many = [dict(processes[0], pid=i, start=str(i)) for i in range(40)]
    assert harness.left_emulator(many)["count"] == 40
    assert len(harness.left_emulator(many)["listed"]) == harness.LEFT_LISTED


# Real qemu-user on this host (no container): the harness runs itself under the emulator as
# it does in one, and sees which processes left it.
EMULATED = {"REPROCHECK_QEMU": str(QEMU), "REPROCHECK_CPU": "Nehalem"}
SLEEPER = "/usr/bin/python3 -c 'import time; time.sleep(0.4)'"


@needs_qemu
def test_a_program_a_command_execs_is_seen_leaving_the_emulator(tmp_path: Path) -> None:
    meta = run_harness(tmp_path, ["sh", "-c", f"{SLEEPER} && sleep 0.4 && echo done"],
                       env=EMULATED)  # fmt: skip
    left = json.loads((meta / "status.json").read_text())["left_emulator"]
    programs = sorted(Path(p["executable"]).name for p in left["listed"])
    # python3 loaded libm and more; sleep used libc alone: it does not count
    assert left["count"] == 1 and programs[0].startswith("python3")
    listed = json.loads((meta / "fingerprint.json").read_text())["pipeline_processes"]["listed"]
    shell = [p for p in listed if p["emulated"]]
    assert len(shell) == 1 and shell[0]["executable"] == QEMU  # sh itself stayed emulated


FORK_THEN_EXEC = """
import os, time
pid = os.fork()
if pid == 0:  # an emulated copy of this Python (libm, libpython mapped), then a libc-only program
    time.sleep(0.5)
    os.execv("/bin/sleep", ["sleep", "0.3"])
os.waitpid(pid, 0)
"""


@needs_qemu
def test_what_a_process_mapped_before_its_exec_is_not_its_programs(tmp_path: Path) -> None:
    """A forked child is sampled as the emulated Python it copies, then execs a program that
    uses libc alone: the libraries of the copy are not the program's (CI once counted it as
    leaving the emulator with them)."""
    script = tmp_path / "pipeline.py"
    script.write_text(FORK_THEN_EXEC)
    meta = run_harness(tmp_path, ["python3", str(script)], env=EMULATED)
    status = json.loads((meta / "status.json").read_text())
    assert status["command"]["status"] == "ok"
    assert status["left_emulator"] == {"count": 0, "listed": []}
    listed = json.loads((meta / "fingerprint.json").read_text())["pipeline_processes"]["listed"]
    (child,) = [p for p in listed if p["emulated"] is False]
    assert Path(child["executable"]).name == "sleep", child
    assert child["libraries"] <= 2, child  # libc and the loader, not the copied Python's libm


@needs_qemu
def test_a_script_run_through_its_interpreter_stays_emulated(tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text("#!/usr/bin/env python3\nimport time\ntime.sleep(0.3)\n")
    script.chmod(0o755)
    meta = run_harness(tmp_path, [str(script)], env=EMULATED)
    status = json.loads((meta / "status.json").read_text())
    assert status["command"]["status"] == "ok"
    assert status["left_emulator"] == {"count": 0, "listed": []}
    listed = json.loads((meta / "fingerprint.json").read_text())["pipeline_processes"]["listed"]
    assert listed and all(p["emulated"] is True for p in listed)


def test_natively_nothing_is_said_of_an_emulator(tmp_path: Path) -> None:
    meta = run_harness(tmp_path, ["sh", "-c", "sleep 0.1"])
    assert "left_emulator" not in json.loads((meta / "status.json").read_text())
    listed = json.loads((meta / "fingerprint.json").read_text())["pipeline_processes"]["listed"]
    assert all(p["emulated"] is None for p in listed)


CALLABLE = """
import multiprocessing, subprocess, sys, time

def child():
    time.sleep(0.4)

def run(path):
    if {spawn!r}:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.4)"], check=True)
    process = multiprocessing.get_context("fork").Process(target=child)  # a fork stays
    process.start()
    process.join()
    return {{"value": 1}}
"""


def _callable_harness(tmp_path: Path, spawn: bool) -> dict[str, Any]:
    """Run the harness on a callable under the emulator; its status.json."""
    folders = {name: tmp_path / name for name in ("meta", "out", "fixtures", "project")}
    for folder in folders.values():
        folder.mkdir()
    (folders["fixtures"] / "a").write_text("a")
    (folders["project"] / "p.py").write_text(CALLABLE.format(spawn=spawn))
    spec = {"mode": "callable", "callable": "p.py:run", "command": None,
            "project": str(folders["project"]), "fixtures_dir": str(folders["fixtures"]),
            "fixtures": ["a"], "outputs": str(folders["out"]), "meta": str(folders["meta"]),
            "deadline": 300}  # fmt: skip
    (folders["meta"] / "spec.json").write_text(json.dumps(spec))
    environment = {**os.environ, "PYTHONPATH": str(Path(harness.__file__).parent), **EMULATED}
    done = subprocess.run([sys.executable, harness.__file__, str(folders["meta"])],
                          env=environment, capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    status: dict[str, Any] = json.loads((folders["meta"] / "status.json").read_text())
    assert status["fixtures"]["a"]["status"] == "ok", status
    return status


@needs_qemu
@pytest.mark.parametrize("spawn", [True, False])
def test_a_callables_subprocess_is_seen_leaving_the_emulator(tmp_path: Path, spawn: bool) -> None:
    left = _callable_harness(tmp_path, spawn)["left_emulator"]
    if spawn:
        assert left["count"] == 1
        assert Path(left["listed"][0]["executable"]).name.startswith("python3")
        assert left["listed"][0]["argv"][-1] == "import time; time.sleep(0.4)"
    else:
        assert left == {"count": 0, "listed": []}  # the forked child is the emulator's too


@pytest.mark.skipif(find_qemu("aarch64") is None, reason="no static qemu-aarch64")
@needs_qemu
def test_an_arm64_model_without_a_platform_runs_under_qemu_aarch64() -> None:
    found = emulation("arm", "cortex-a53", None, "cfg")
    assert found is not None and found.binary == find_qemu("aarch64")
    assert found.model == "cortex-a53"
    native_arch = emulation("x", "Nehalem", None, "cfg")
    assert native_arch is not None and native_arch.binary == find_qemu("x86_64")
    with pytest.raises(ConfigError, match="knows no such model"):
        emulation("x", "cortex-a53", "linux/amd64", "cfg")  # a platform says which qemu
