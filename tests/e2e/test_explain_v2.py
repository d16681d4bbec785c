"""explain v2 on the real engine: causes proven by swapping, on the example's Debian images.

* OpenCV's ``sepFilter2D`` on float32 drifts from bookworm (OpenCV 4.6) to trixie (4.10) on an
  AVX-512 machine; with ``OPENCV_CPU_DISABLE`` set on the candidate alone it changes without
  matching bookworm's, and with it set on both sides the two are bit-identical (measured with
  ``docker run`` on the images before this test was written). explain must name that knob
  first with confidence >= 0.9.
* glibc's float libm functions called through ctypes (``cbrtf``, ``erff``, ``lgammaf``,
  ``log1pf``, ``expm1f``, ``atanhf``) differ between glibc 2.36 (bookworm) and 2.41 (trixie);
  bookworm's Python run under trixie's loader and libc/libm gives trixie's values bit for bit
  (measured by hand the same way). explain must name libc6 first, proven by that forward
  transplant, with confidence >= 0.9.
* A pure Python ``sum()`` (CPython 3.12 changed it) gets ranked version suspects, the
  interpreter first: its first divergent stage loaded no library of a differing package.
* A pip pair (examples/project: Debian bookworm's Python with numpy 1.26.4 or 2.2.6 from PyPI,
  each wheel bundling its own OpenBLAS) drifts in a float32 classifier's probabilities;
  numpy 1.26.4's installed files moved into the numpy 2.2.6 image give numpy 1.26.4's values
  bit for bit (measured by hand with the same multi-stage build). explain must name the numpy
  distribution first, proven by that transplant, with confidence >= 0.9.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import REPO_ROOT, host_avx512, toml_environments, write_project

pytestmark = pytest.mark.docker

PIPELINE = """
import ctypes
import math

import cv2
import numpy as np

try:
    import reprocheck_probe as probe
except ImportError:
    probe = None


_LIBM = ctypes.CDLL("libm.so.6")


def _record(name, value):
    if probe is not None:
        probe.record(name, value)


def _glibc_float(values):
    columns = []
    for name in ("cbrtf", "erff", "lgammaf", "log1pf", "expm1f", "atanhf"):
        fn = getattr(_LIBM, name)
        fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
        columns.append([fn(v / 5.0 if name == "atanhf" else v) for v in values])
    return np.array(columns, dtype=np.float64)


def run(path):
    gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    _record("gray", gray)
    g = gray.astype(np.float32) / np.float32(255)
    kx, ky = np.float32([0.2, 0.5, 0.3]), np.float32([0.1, 0.7, 0.2])
    sep = cv2.sepFilter2D(g, -1, kx, ky)
    _record("sep_filter", sep)
    v = (g.ravel()[::97][:256] * np.float32(4)).astype(np.float32)
    values = [float(x) for x in g.ravel()[::31][:512]] + [1e16, 1.0, -1e16]
    return {
        "filter/sep_f32": sep,
        "libm/numpy_float32": np.stack([np.arcsinh(v), np.expm1(v), np.log1p(v)]),
        "python/sum": np.float64(sum(values)),
        "libm/glibc_f32": _glibc_float([float(x) * 4.0 + 0.01 for x in v]),
    }
"""


def reprocheck(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "reprocheck.cli", *args], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True,
                          text=True, timeout=1800, check=False)  # fmt: skip


def ok(proc: subprocess.CompletedProcess[str], code: int) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == code, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def explained(docker_engine, debian_bases, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("explain_v2") / "project"
    config = (
        '[pipeline]\ncallable = "pipelines/p.py:run"\n[fixtures]\npath = "inputs"\n'
        + toml_environments("bookworm", "trixie")
    )
    write_project(root, config, {"pipelines/p.py": PIPELINE})
    (root / "inputs").mkdir()
    shutil.copy2(REPO_ROOT / "fixtures" / "photo_baseline.jpg", root / "inputs")
    ok(reprocheck(root, "run", "--json", "run.json", "-q"), 1)
    started = time.monotonic()
    cold = ok(reprocheck(root, "explain", "--max-experiments", "3", "--json", "e1.json"), 0)
    cold_seconds = time.monotonic() - started
    started = time.monotonic()
    ok(reprocheck(root, "explain", "--max-experiments", "3", "--json", "e2.json"), 0)
    return {
        "first": json.loads((root / "e1.json").read_text()),
        "again": json.loads((root / "e2.json").read_text()),
        "stdout": cold.stdout,
        "cold_seconds": cold_seconds,
        "cached_seconds": time.monotonic() - started,
        "run": json.loads((root / "run.json").read_text()),
        "root": str(root),
    }


def _attribution(explained: dict[str, Any], family: str) -> dict[str, Any]:
    (item,) = [a for a in explained["first"]["attributions"] if a["family"] == family]
    return item


def test_the_knob_on_both_sides_is_the_top_cause(explained) -> None:
    item = _attribution(explained, "filter/sep_f32")
    assert (item["baseline"], item["candidate"]) == ("bookworm", "trixie")
    top = item["causes"][0]
    assert (top["factor"], top["kind"]) == ("OPENCV_CPU_DISABLE", "knob"), item
    assert top["confidence"] >= 0.9
    assert "the two outputs are bit-identical" in top["evidence"]
    assert "on trixie alone the output changes but does not match bookworm's" in top["evidence"]
    assert item["advice"].startswith("set OPENCV_CPU_DISABLE=")
    assert "on every image" in item["advice"]
    knob = next(e for e in explained["first"]["experiments"]
                if e["factor"] == "OPENCV_CPU_DISABLE")  # fmt: skip
    assert (knob["sides"], knob["status"]) == ("both", "ok")
    assert "what to do" in explained["stdout"]
    assert "filter/sep_f32 (1) bookworm -> trixie: set OPENCV_CPU_DISABLE=" in explained["stdout"]


def test_every_drifting_output_gets_ranked_suspects(explained) -> None:
    drifting = {c["output"] for c in explained["run"]["comparisons"] if c["verdict"] == "drift"}
    attributions = explained["first"]["attributions"]
    assert {a["output"] for a in attributions} == drifting
    for item in attributions:
        assert any(c["kind"] != "stage" for c in item["causes"]), item
        assert item["advice"], item
    # numpy 1.24 and 2.2 hand these float32 ufuncs to glibc's libm on a CPU without AVX-512:
    # glibc moved forward settles them too. With AVX-512 both numpys compute them in their
    # own AVX512_SKX code, alike, and they do not drift.
    if not host_avx512():
        libm = _attribution(explained, "libm/numpy_float32")
        top = libm["causes"][0]
        assert (top["factor"], top["kind"], top["confidence"]) == ("libc6", "package", 0.95), libm
    else:
        assert "libm/numpy_float32" not in {a["family"] for a in attributions}


def test_the_interpreter_ranks_first_for_a_pure_python_output(explained) -> None:
    item = _attribution(explained, "python/sum")
    top = next(c for c in item["causes"] if c["kind"] != "stage")
    assert (top["factor"], top["kind"]) == ("python3.13", "version"), item
    assert "3.11.2" in top["evidence"] and "3.13.5" in top["evidence"]
    assert item["advice"].startswith("untested: most likely the interpreter")


def test_a_second_explain_reuses_every_experiment(explained) -> None:
    first, again = explained["first"], explained["again"]
    assert again["experiments"] and all(e["cached"] for e in again["experiments"])
    assert again["attributions"] == first["attributions"]
    print(f"explain cold {explained['cold_seconds']:.1f} s, cached "
          f"{explained['cached_seconds']:.1f} s, experiments "
          f"{[(e['factor'], e['seconds']) for e in first['experiments']]}")  # fmt: skip


def test_glibc_moved_forward_is_the_top_cause(explained) -> None:
    item = _attribution(explained, "libm/glibc_f32")
    top = item["causes"][0]
    assert (top["factor"], top["kind"]) == ("libc6", "package"), item
    assert top["confidence"] >= 0.9
    assert top["evidence"].startswith("bookworm under trixie's glibc 2.41")
    assert "the output becomes bit-identical to trixie's" in top["evidence"]
    assert item["advice"].startswith("glibc's libm computes these differently")
    glibc = next(e for e in explained["first"]["experiments"] if e["factor"] == "libc6")
    assert (glibc["kind"], glibc["sides"], glibc["status"]) == ("transplant", "baseline", "ok")


def test_stages_record_what_they_loaded(explained) -> None:
    meta = Path(explained["root"]) / "reports" / "latest" / "environments" / "trixie" / "meta"
    stages = json.loads((meta / "probes" / "photo_baseline.jpg.libraries.json").read_text())
    assert list(stages["stages"]) == ["gray", "sep_filter"]
    item = _attribution(explained, "python/sum")
    top = next(c for c in item["causes"] if c["kind"] != "stage")
    assert (
        "the first divergent stage loaded no native library of any differing package"
        in (top["evidence"])
    )


PIP_PIPELINE_CONFIG = """
[pipeline]
callable = "model.py:run"
[fixtures]
path = "fixtures"
include = ["batch_1.csv"]
[[environments]]
name = "numpy126"
image = "images/numpy126"
[[environments]]
name = "numpy22"
image = "images/numpy22"
[tolerance]
default = { ulp = 0 }
"""


@pytest.fixture(scope="module")
def pip_explained(docker_engine, tmp_path_factory) -> dict[str, Any]:
    """The examples/project pip pair (built from its Dockerfiles, cached by the engine)."""
    root = tmp_path_factory.mktemp("explain_pip") / "project"
    source = REPO_ROOT / "examples" / "project"
    shutil.copytree(source / "images", root / "images")
    (root / "fixtures").mkdir()
    shutil.copy2(source / "fixtures" / "batch_1.csv", root / "fixtures")
    shutil.copy2(source / "model.py", root / "model.py")
    (root / "reprocheck.toml").write_text(PIP_PIPELINE_CONFIG)
    ok(reprocheck(root, "run", "-q"), 1)
    started = time.monotonic()
    ok(reprocheck(root, "explain", "--max-experiments", "2", "--json", "e.json"), 0)
    return {"explain": json.loads((root / "e.json").read_text()),
            "seconds": time.monotonic() - started}  # fmt: skip


def test_a_pip_distribution_transplant_is_the_top_cause(pip_explained) -> None:
    (item,) = [a for a in pip_explained["explain"]["attributions"]
               if a["family"] == "probabilities"]  # fmt: skip
    top = item["causes"][0]
    assert (top["factor"], top["kind"]) == ("numpy", "package"), item
    assert top["confidence"] >= 0.9
    assert top["evidence"].startswith(
        "numpy22 with the baseline's pip distribution numpy 1.26.4 (its package folders"
    )
    assert "bit-identical to numpy126's" in top["evidence"]
    assert item["advice"].startswith("pin numpy==1.26.4 (as in numpy126)")
    print(f"pip explain {pip_explained['seconds']:.1f} s")


@pytest.fixture(scope="module")
def two_causes(docker_engine, debian_bases, tmp_path_factory) -> dict[str, Any]:
    """The example on one photo from bullseye to bookworm and trixie. ``libm/transcendental``
    stacks numpy ufuncs of which some run numpy's own SIMD (exp, log, sin, cos) and the others
    glibc's libm (log10, expm1, tan, tanh, ...); both changed between the releases.
    ``linalg/svd`` moves with LAPACK, whose bullseye build needs bullseye's BLAS next to it."""
    root = tmp_path_factory.mktemp("two_causes") / "project"
    config = (
        '[pipeline]\ncallable = "example/pipeline.py:run"\n[fixtures]\npath = "inputs"\n'
        + toml_environments("bullseye", "bookworm", "trixie")
    )
    write_project(root, config)
    shutil.copytree(REPO_ROOT / "example", root / "example")
    (root / "inputs").mkdir()
    shutil.copy2(REPO_ROOT / "fixtures" / "photo_baseline.jpg", root / "inputs")
    ok(reprocheck(root, "run", "-q"), 1)
    found = {}
    for output in ("libm/transcendental", "linalg/svd"):
        ok(reprocheck(root, "explain", "--output", f"*/{output}", "--json", "e.json"), 0)
        for item in json.loads((root / "e.json").read_text())["attributions"]:
            found[item["candidate"], output] = item
    return found


@pytest.mark.parametrize("candidate", ["bookworm", "trixie"])
def test_two_causes_of_one_output_are_found_together(two_causes, candidate) -> None:
    item = two_causes[candidate, "libm/transcendental"]
    top = item["causes"][0]
    assert (top["factor"], top["kind"]) == ("libc6 + NPY_DISABLE_CPU_FEATURES", "package"), item
    assert top["confidence"] >= 0.9
    assert f"under {candidate}'s glibc" in top["evidence"]
    assert "and NPY_DISABLE_CPU_FEATURES on both sides" in top["evidence"]
    alone = {c["factor"]: c["confidence"] for c in item["causes"]}
    assert alone.get("libc6") == 0.5  # glibc alone moved the output without settling it
    assert item["advice"].startswith(
        "two causes together (libc6 + NPY_DISABLE_CPU_FEATURES): build every image on one glibc"
    )


def test_a_library_is_transplanted_with_the_companion_it_needs(two_causes) -> None:
    """bullseye's LAPACK alone in trixie moves the singular values without matching; its BLAS
    alone does not run; the two together give bullseye's values."""
    item = two_causes["trixie", "linalg/svd"]
    top = item["causes"][0]
    assert (top["factor"], top["kind"], top["confidence"]) == (
        "libblas3 + liblapack3", "package", 0.95), item  # fmt: skip
    assert {c["factor"]: c["confidence"] for c in item["causes"]}.get("liblapack3") == 0.5
