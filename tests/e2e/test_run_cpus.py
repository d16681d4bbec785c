"""Other CPU models on this machine, on the real engine: the example's bookworm image run
natively, as an x86-64-v3 CPU (qemu-user -cpu Haswell, qemu 8.0 or later) and as an x86-64-v2
CPU (-cpu Nehalem) in the same kind of container.
Which outputs depend on the CPU is measured, not assumed: numpy's float32 and float64
transcendental functions and OpenCV's float32 filters do; decoding complete JPEGs does not."""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from remote_engines import MEASURED
from support import REPO_ROOT, toml_environments, write_project
from test_cli_run import reprocheck

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        shutil.which("qemu-x86_64-static") is None, reason="qemu-user-static is not installed"
    ),
]


def _classes(report: dict[str, Any]) -> dict[str, list[list[str]]]:
    """Each output's agreement classes (environments with bit-identical values)."""
    return {e["output"].split("/", 1)[1]: e["classes"] for e in report["agreement"]}


def test_native_v3_and_v2_show_what_depends_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = reprocheck(REPO_ROOT, "run", "--env", "bookworm", "--cpus",
                      "native,x86-64-v3,x86-64-v2", "--out", str(out), "--no-cache")  # fmt: skip
    assert done.returncode == 1, done.stderr  # drift between the CPU models
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"] == [["bookworm", "bookworm@x86-64-v3"],
                               ["bookworm", "bookworm@x86-64-v2"]]  # fmt: skip
    envs = {e["name"]: e for e in report["environments"]}
    assert {n: e["status"] for n, e in envs.items()} == dict.fromkeys(envs, "ok")
    verdicts: dict[tuple[str, str], set[str]] = defaultdict(set)
    for item in report["comparisons"]:
        verdicts[item["candidate"], item["output"].split("/", 1)[1]].add(item["verdict"])
    v2 = "bookworm@x86-64-v2"
    for output in ("libm/numpy_float32", "libm/transcendental", "filter/gaussian_f32",
                   "dnn/probabilities"):  # fmt: skip
        assert "drift" in verdicts[v2, output], (output, verdicts[v2, output])
    for output in ("decode/pixels", "resize/linear", "linalg/svd"):
        for cpu in ("bookworm@x86-64-v3", v2):
            assert verdicts[cpu, output] == {"identical"}, (cpu, output, verdicts[cpu, output])
    # x86-64-v3 is an AVX2 CPU: on a host without AVX-512 (numpy finds none) it computes as
    # the host does, everywhere; on an AVX-512 host numpy's float32 functions move.
    native = json.loads((out / "environments/bookworm/meta/fingerprint.json").read_text())
    avx512 = "AVX512F" in native["numpy"]["simd"]["found"]
    v3_drift = {o for (cpu, o), v in verdicts.items() if cpu.endswith("v3") and "drift" in v}
    if avx512:
        assert "libm/numpy_float32" in v3_drift, v3_drift
    else:
        assert v3_drift == set(), v3_drift
        for output, classes in _classes(report).items():
            assert any({"bookworm", "bookworm@x86-64-v3"} <= set(c) for c in classes), output
    emulated = json.loads((out / f"environments/{v2}/meta/fingerprint.json").read_text())["cpu"]
    assert emulated["emulated"] == {"qemu_model": "Nehalem", "requested": "x86-64-v2"}
    assert emulated["model"] == "x86-64-v2 (qemu-user -cpu Nehalem)" and emulated["host_model"]
    summaries = {n: e["fingerprint"]["cpu_model"] for n, e in envs.items()}
    assert summaries["bookworm@x86-64-v3"] == "x86-64-v3 (qemu-user -cpu Haswell)"
    assert summaries["bookworm"] != summaries[v2]
    MEASURED["seconds per environment"] = {n: e["seconds"] for n, e in envs.items()}
    MEASURED["drifting outputs (v3, v2)"] = (
        len(v3_drift),
        sum(1 for (c, _o), v in verdicts.items() if c == v2 and "drift" in v),
    )


def test_an_unknown_cpu_model_is_a_config_error(tmp_path: Path) -> None:
    done = reprocheck(REPO_ROOT, "run", "--env", "bookworm", "--cpus", "Pentium9",
                      "--out", str(tmp_path / "run"))  # fmt: skip
    assert done.returncode == 2
    assert re.search(r"cpu 'Pentium9': qemu-x86_64(-static)? knows no such model", done.stderr)
    assert "Traceback" not in done.stderr


# A command whose shell starts python3: the shell runs under the emulator, python3 (exec'd by
# the shell) on the host CPU. The environment must say so rather than mix two CPUs quietly.
MIXED = """
[pipeline]
command = ["sh", "-c", "python3 -c 'import numpy, sys, time; time.sleep(0.5); numpy.save(sys.argv[1] + \\"/v.npy\\", numpy.tanh(numpy.linspace(-3, 3, 1000, dtype=numpy.float32)))' {outputs}"]
[fixtures]
path = "inputs"
"""  # noqa: E501
# The same through a script whose #! interpreter reprocheck starts under the emulator.
SCRIPT = """#!/usr/bin/env python3
import sys
import numpy
numpy.save(sys.argv[1] + "/v.npy", numpy.tanh(numpy.linspace(-3, 3, 1000, dtype=numpy.float32)))
"""


def _project(tmp_path: Path, config: str, cpus: str) -> Path:
    root = tmp_path / "project"
    write_project(root, config + f"\n[compare]\ncpus = {cpus}\n" + toml_environments("bookworm"),
                  {"inputs/a.txt": "a"})  # fmt: skip
    return root


def test_a_program_the_pipeline_execs_is_reported_as_leaving_the_emulator(tmp_path: Path) -> None:
    root = _project(tmp_path, MIXED, '["native", "x86-64-v2"]')
    done = reprocheck(root, "run", "--json", "report.json", "--no-cache")
    assert done.returncode == 2, done.stdout + done.stderr  # not a clean run
    assert "Traceback" not in done.stdout + done.stderr
    report = json.loads((root / "report.json").read_text())
    envs = {e["name"]: e for e in report["environments"]}
    assert envs["bookworm"]["status"] == "ok" and envs["bookworm"]["left_emulator"] == []
    mixed = envs["bookworm@x86-64-v2"]
    assert mixed["status"] == "mixed_cpu"
    assert mixed["error"].startswith("1 process(es) left the CPU emulator (a program the pipeline")
    (left,) = mixed["left_emulator"]
    assert left.startswith("/usr/bin/python3") and "time.sleep(0.5)" in left
    assert "bookworm@x86-64-v2: 1 process(es) left the CPU emulator" in done.stdout
    # its outputs are still compared: the host CPU computed both, so they agree
    assert {c["verdict"] for c in report["comparisons"]} == {"identical"}


def test_a_script_started_through_its_interpreter_stays_emulated(tmp_path: Path) -> None:
    config = '[pipeline]\ncommand = ["./run.py", "{outputs}"]\n[fixtures]\npath = "inputs"\n'
    root = _project(tmp_path, config, '["native", "x86-64-v2"]')
    (root / "run.py").write_text(SCRIPT)
    (root / "run.py").chmod(0o755)
    done = reprocheck(root, "run", "--json", "report.json", "--no-cache")
    assert done.returncode == 1, done.stdout + done.stderr  # tanh float32 moves on Nehalem
    report = json.loads((root / "report.json").read_text())
    assert {e["name"]: e["status"] for e in report["environments"]} == {
        "bookworm": "ok", "bookworm@x86-64-v2": "ok"}  # fmt: skip
    assert {c["verdict"] for c in report["comparisons"]} == {"drift"}
