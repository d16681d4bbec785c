"""Knobs: single environment variables that steer numerics (threads, CPU dispatch, SIMD).

A knob experiment is symmetric: each side of the pair runs with the knob as its own
fingerprint spells it (its own dispatch list, its glibc's tunable names), so a knob that
makes the pair agree proves the dispatch is the cause, whichever side it changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from reprocheck.explain.suspects import numpy_features

# Which knobs plausibly explain which outputs and stages; a knob without an entry fits none.
KNOB_HINTS: dict[str, str] = {
    "OMP_NUM_THREADS": r"linalg|svd|eig|solve|gemm|blas|dot|matmul|kmeans|cluster",
    "OPENBLAS_NUM_THREADS": r"linalg|svd|eig|solve|gemm|blas|dot|matmul|kmeans|cluster",
    "cv2.setNumThreads": r"resiz|filter|blur|dnn|keypoint|flow|warp",
    "JSIMD_FORCENONE": r"decod|jpe?g|imread|pixel",
    "OPENCV_CPU_DISABLE": (
        r"resiz|color|hsv|lab|filter|blur|gauss|sobel|scharr|laplac|edge|canny|keypoint|orb"
        r"|corner|bilateral|sift|brisk|flow|warp|pyr|remap|morph|dnn|cnn|prob|sep|_f32|float32"
    ),
    "NPY_DISABLE_CPU_FEATURES": r"numpy|np_|libm|transcend|exp|log|sin|cos|tanh|float32|sum|mean",
    "GLIBC_TUNABLES": r"libm|math|glibc|exp|log|sin|cos|tan|pow|gamma|erf|transcend",
    "OPENBLAS_CORETYPE": r"linalg|svd|eig|solve|gemm|blas|dot|matmul|kmeans|cluster",
}
# Knobs that choose code by CPU feature: for a pair whose CPUs differ they come first.
DISPATCH_KNOBS = (
    "NPY_DISABLE_CPU_FEATURES",
    "OPENCV_CPU_DISABLE",
    "GLIBC_TUNABLES",
    "OPENBLAS_CORETYPE",
    "JSIMD_FORCENONE",
)


def _glibc_hwcaps(glibc: str | None) -> str | None:
    """The tunable masking AVX/FMA, or None when ``glibc`` is no glibc version (a musl
    image, or a failed probe, whose value is an "error: ..." string)."""
    version = re.match(r"(\d+)\.(\d+)", glibc or "2.36")
    if version is None:
        return None
    modern = (int(version[1]), int(version[2])) >= (2, 33)
    names = (
        ["AVX2", "AVX", "FMA", "AVX512F"]
        if modern
        else ["AVX2_Usable", "AVX_Usable", "FMA_Usable", "AVX512F_Usable"]
    )
    return "glibc.cpu.hwcaps=" + ",".join(f"-{n}" for n in names)


def knobs(fingerprint: Mapping[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Single-factor variable changes as ``fingerprint``'s environment spells them, ordered
    cheap-and-likely first."""
    cv2 = fingerprint.get("cv2") or {}
    dispatch = str((cv2.get("build") or {}).get("Dispatched code generation", "")).split()
    simd = ((fingerprint.get("numpy") or {}).get("simd")) or {}
    found: list[tuple[str, dict[str, str]]] = [
        ("OMP_NUM_THREADS", {"OMP_NUM_THREADS": "1"}),
        ("OPENBLAS_NUM_THREADS", {"OPENBLAS_NUM_THREADS": "1"}),
        ("cv2.setNumThreads", {"OPENCV_FOR_THREADS_NUM": "1"}),
        ("JSIMD_FORCENONE", {"JSIMD_FORCENONE": "1"}),
    ]
    if dispatch:
        found.append(("OPENCV_CPU_DISABLE", {"OPENCV_CPU_DISABLE": ",".join(dispatch)}))
    if simd.get("dispatch"):  # numpy >= 1.22 honours it; older ones do not have dispatch
        found.append(
            ("NPY_DISABLE_CPU_FEATURES", {"NPY_DISABLE_CPU_FEATURES": " ".join(simd["dispatch"])})
        )
    tunable = _glibc_hwcaps(fingerprint.get("glibc"))
    if tunable is not None:
        found.append(("GLIBC_TUNABLES", {"GLIBC_TUNABLES": tunable}))
    return found


def knob_fit(name: str, words: Iterable[str]) -> int:
    """How many places in ``words`` the knob's hint names."""
    pattern = KNOB_HINTS.get(name)
    return 0 if pattern is None else sum(len(re.findall(pattern, w, re.I)) for w in words)


def _openblas_core(fingerprint: Mapping[str, Any]) -> str | None:
    """The core OpenBLAS chose at run time (its first library's, as the fingerprint says)."""
    blas = fingerprint.get("blas")
    found = blas.get("openblas") if isinstance(blas, Mapping) else None
    for info in found.values() if isinstance(found, Mapping) else ():
        if isinstance(info, Mapping) and info.get("corename"):
            return str(info["corename"])
    return None


def coretype(base: Mapping[str, Any], cand: Mapping[str, Any]) -> dict[str, str] | None:
    """OPENBLAS_CORETYPE for both sides when their OpenBLAS chose different cores: the core of
    the side whose CPU has fewer features (numpy's count), which both can run."""
    cores = _openblas_core(base), _openblas_core(cand)
    if cores[0] is None or cores[1] is None or cores[0] == cores[1]:
        return None
    fewer = len(numpy_features(base)[0]) <= len(numpy_features(cand)[0])
    return {"OPENBLAS_CORETYPE": cores[0] if fewer else cores[1]}


def pair_knobs(
    base: Mapping[str, Any], cand: Mapping[str, Any], words: Iterable[str], *,
    cpus_differ: bool = False,
) -> list[tuple[str, dict[str, str], dict[str, str]]]:  # fmt: skip
    """(name, baseline's variables, candidate's variables) for each knob of the candidate,
    the best fitting ``words`` first (ties keep the cheap-and-likely order); when the pair's
    CPUs differ, the knobs that choose code by CPU feature before all others. The baseline
    spells a knob its own way; where its fingerprint has no value (numpy without dispatch
    there), it gets the candidate's."""
    words = list(words)
    theirs = dict(knobs(base))
    found = [(name, theirs.get(name, env), env) for name, env in knobs(cand)]
    core = coretype(base, cand)
    if core is not None:
        found.append(("OPENBLAS_CORETYPE", core, core))
    order = {name: i for i, (name, _, _) in enumerate(found)}

    def rank(knob: tuple[str, dict[str, str], dict[str, str]]) -> tuple[bool, int, int]:
        name = knob[0]
        if cpus_differ and name in DISPATCH_KNOBS:
            return False, -knob_fit(name, words), DISPATCH_KNOBS.index(name)
        return cpus_differ, -knob_fit(name, words), order[name]

    return sorted(found, key=rank)
