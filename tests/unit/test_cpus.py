"""Other CPU models: the plan's emulated copies, the checks of a `cpu` value, and how the
harness puts a program under the emulator."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from reprocheck.config import load_config
from reprocheck.cpus import LEVELS, emulation, known_models
from reprocheck.errors import ConfigError
from reprocheck.harness import run as harness
from reprocheck.plan import make_plan

CONFIG = (
    '[pipeline]\ncallable = "p.py:run"\n[fixtures]\npath = "in"\n'
    '[[environments]]\nname = "a"\nimage = "i"\n'
    '[[environments]]\nname = "b"\nimage = "j"\ncpu = "x86-64-v2"\n'
)
QEMU = shutil.which("qemu-x86_64-static")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-user-static is not installed")


@needs_qemu
def test_levels_map_to_models_qemu_knows() -> None:
    models = known_models(Path(str(QEMU)))
    assert "Haswell" in models and "Nehalem" in models and "qemu64" in models
    assert "vmx-exit-nosave-efer" not in models  # CPUID flags follow the models: not models
    assert all(model in models for model in LEVELS.values())


@needs_qemu
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
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho\n")
    assert harness.emulated_argv([str(script)], env) == [str(script)]  # a script: left as is
    assert harness.emulated_argv([python], {"PATH": "/usr/bin"}) == [python]  # native
