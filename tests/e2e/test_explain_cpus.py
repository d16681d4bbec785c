"""explain on one image run on two CPUs, on the real engine: the example's bookworm image
natively (this host has AVX-512) and as an x86-64-v2 CPU (qemu-user -cpu Nehalem).

Measured with ``docker run`` on the image before this test was written (sha1 of each output
natively, under Nehalem, and with each knob set on both sides):

* numpy's own float32 SIMD (``tanh``, ``exp``, ``sin``) differs; with
  ``NPY_DISABLE_CPU_FEATURES`` (numpy's dispatch list) on both sides they are bit-identical;
* glibc's double ``exp`` (through ``math.exp`` and numpy's float64 ``exp``, which calls it)
  differs (glibc picks an FMA variant natively); with ``GLIBC_TUNABLES`` masking AVX/FMA on
  both sides they are bit-identical;
* OpenCV's float32 Gaussian blur differs; with ``OPENCV_CPU_DISABLE`` on both sides it is
  bit-identical;
* numpy's float32 ``tan`` does not differ at all.

That holds on a host whose numpy finds AVX2 but not AVX-512 (an AMD EPYC). On a host with
AVX-512 (numpy's AVX512_SKX: an Intel Xeon) numpy also has its own float32 ``tan`` and
float64 ``exp``: ``tan`` drifts and ``NPY_DISABLE_CPU_FEATURES`` settles it, and float64
``exp`` needs both knobs (numpy's AVX-512 off hands it to glibc, which then picks FMA).

explain must name the knob that settles each as the top cause (confidence >= 0.9), and the
CPU as a cause of its own ("one image on two CPUs"), never "something the images do not
record".
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import pytest
from support import REPO_ROOT, host_avx512, toml_environments, write_project
from test_explain_v2 import ok, reprocheck

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        shutil.which("qemu-x86_64-static") is None, reason="qemu-user-static is not installed"
    ),
]

PIPELINE = """
import math

import cv2
import numpy as np


def run(path):
    gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    g = cv2.resize(gray, (96, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    x = np.linspace(-3, 3, 20000, dtype=np.float32)
    x64 = x.astype(np.float64)
    return {
        "numpy/tanh_f32": np.tanh(x),
        "numpy/exp_f32": np.exp(x),
        "numpy/sin_f32": np.sin(x),
        "numpy/tan_f32": np.tan(x),
        "libm/exp_f64": np.exp(x64),
        "python/math_exp": np.array([math.exp(float(v)) for v in x64]),
        "filter/gaussian_f32": cv2.GaussianBlur(g, (5, 5), 1.3),
    }
"""


AVX512 = host_avx512()
SETTLED_BY = {
    "numpy/tanh_f32": "NPY_DISABLE_CPU_FEATURES",
    "numpy/exp_f32": "NPY_DISABLE_CPU_FEATURES",
    "numpy/sin_f32": "NPY_DISABLE_CPU_FEATURES",
    "libm/exp_f64": "NPY_DISABLE_CPU_FEATURES + GLIBC_TUNABLES" if AVX512 else "GLIBC_TUNABLES",
    "python/math_exp": "GLIBC_TUNABLES",
    "filter/gaussian_f32": "OPENCV_CPU_DISABLE",
} | ({"numpy/tan_f32": "NPY_DISABLE_CPU_FEATURES"} if AVX512 else {})


@pytest.fixture(scope="module")
def explained(docker_engine, debian_bases, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("explain_cpus") / "project"
    config = (
        '[pipeline]\ncallable = "pipelines/p.py:run"\n[fixtures]\npath = "inputs"\n'
        '[compare]\ncpus = ["native", "x86-64-v2"]\n' + toml_environments("bookworm")
    )
    write_project(root, config, {"pipelines/p.py": PIPELINE})
    (root / "inputs").mkdir()
    shutil.copy2(REPO_ROOT / "fixtures" / "photo_baseline.jpg", root / "inputs")
    started = time.monotonic()
    ok(reprocheck(root, "run", "--json", "run.json", "-q"), 1)
    run_seconds = time.monotonic() - started
    started = time.monotonic()
    done = ok(reprocheck(root, "explain", "--json", "explain.json"), 0)
    return {
        "explain": json.loads((root / "explain.json").read_text()),
        "run": json.loads((root / "run.json").read_text()),
        "stdout": done.stdout,
        "run_seconds": run_seconds,
        "explain_seconds": time.monotonic() - started,
    }


def _families(explained: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["family"]: a for a in explained["explain"]["attributions"]}


def test_the_run_drifts_where_the_cpu_matters(explained) -> None:
    verdicts = {c["output"].split("/", 1)[1]: c["verdict"] for c in explained["run"]["comparisons"]}
    assert {o for o, v in verdicts.items() if v == "drift"} == set(SETTLED_BY), verdicts
    assert verdicts["numpy/tan_f32"] == ("drift" if AVX512 else "identical")
    assert explained["run"]["pairs"] == [["bookworm", "bookworm@x86-64-v2"]]


@pytest.mark.parametrize(("family", "knob"), sorted(SETTLED_BY.items()))
def test_the_dispatch_knob_on_both_sides_is_the_top_cause(explained, family, knob) -> None:
    item = _families(explained)[family]
    top = item["causes"][0]
    assert (top["factor"], top["kind"]) == (knob, "knob"), item
    assert top["confidence"] >= 0.9
    assert "the two outputs are bit-identical" in top["evidence"]
    verb = "choose" if " + " in knob else "chooses"
    first = knob.split(" + ")[0]
    assert item["advice"].startswith(f"{knob} {verb} code by CPU feature: set {first}=")
    assert "on the CPUs of bookworm and bookworm@x86-64-v2" in item["advice"]


def test_the_cpu_is_a_cause_of_its_own(explained) -> None:
    for family, item in _families(explained).items():
        (cpu,) = [c for c in item["causes"] if c["kind"] == "cpu"]
        assert cpu["confidence"] == 0.9, family
        assert cpu["evidence"].startswith("one image on two CPUs (")
        assert "x86-64-v2 (qemu-user -cpu Nehalem) in bookworm@x86-64-v2" in cpu["evidence"]
        assert "numpy finds" in cpu["evidence"] and "AVX2" in cpu["evidence"]
        assert SETTLED_BY[family] in cpu["evidence"]
        assert not any(c["factor"] == "image" for c in item["causes"])


def test_the_knob_experiments_ran_the_emulated_side_emulated(explained) -> None:
    """Each knob ran both sides; the emulated side must run under qemu again, or a knob
    would seem to settle what only running natively did."""
    knobs = [e for e in explained["explain"]["experiments"] if e["kind"] == "knob"]
    assert {e["factor"] for e in knobs} >= set(SETTLED_BY.values())
    assert all(e["status"] == "ok" for e in knobs), knobs
    print(f"run {explained['run_seconds']:.0f} s, explain {explained['explain_seconds']:.0f} s "
          f"({len(knobs)} knob experiments)")  # fmt: skip
