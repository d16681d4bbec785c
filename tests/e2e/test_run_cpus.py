"""Another CPU model on this machine, on the real engine: the example's bookworm image run
natively and as an x86-64-v2 CPU (qemu-user -cpu Nehalem) in the same kind of container.
Which outputs depend on the CPU is measured, not assumed: numpy's float32 and float64
transcendental functions and OpenCV's float32 filters do; decoding complete JPEGs does not."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from support import REPO_ROOT
from test_cli_run import reprocheck

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        shutil.which("qemu-x86_64-static") is None, reason="qemu-user-static is not installed"
    ),
]


def test_native_and_x86_64_v2_show_what_depends_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = reprocheck(REPO_ROOT, "run", "--env", "bookworm", "--cpus", "native,x86-64-v2",
                      "--out", str(out), "--no-cache")  # fmt: skip
    assert done.returncode == 1, done.stderr  # drift between the CPU models
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"] == [["bookworm", "bookworm@x86-64-v2"]]
    verdicts: dict[str, set[str]] = defaultdict(set)
    for item in report["comparisons"]:
        verdicts[item["output"].split("/", 1)[1]].add(item["verdict"])
    for output in ("libm/numpy_float32", "libm/transcendental", "filter/gaussian_f32",
                   "dnn/probabilities"):  # fmt: skip
        assert "drift" in verdicts[output], (output, verdicts[output])
    for output in ("decode/pixels", "resize/linear", "linalg/svd"):
        assert verdicts[output] == {"identical"}, (output, verdicts[output])
    emulated = json.loads((out / "environments/bookworm@x86-64-v2/meta/fingerprint.json")
                          .read_text())["cpu"]  # fmt: skip
    assert emulated["emulated"] == {"qemu_model": "Nehalem", "requested": "x86-64-v2"}
    assert emulated["model"] == "x86-64-v2 (qemu-user -cpu Nehalem)" and emulated["host_model"]
    summaries = {e["name"]: e["fingerprint"]["cpu_model"] for e in report["environments"]}
    assert summaries["bookworm@x86-64-v2"] == "x86-64-v2 (qemu-user -cpu Nehalem)"
    assert summaries["bookworm"] != summaries["bookworm@x86-64-v2"]


def test_an_unknown_cpu_model_is_a_config_error(tmp_path: Path) -> None:
    done = reprocheck(REPO_ROOT, "run", "--env", "bookworm", "--cpus", "Pentium9",
                      "--out", str(tmp_path / "run"))  # fmt: skip
    assert done.returncode == 2
    assert "cpu 'Pentium9': qemu-x86_64-static knows no such model" in done.stderr
    assert "Traceback" not in done.stderr
