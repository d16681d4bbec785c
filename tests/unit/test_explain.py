"""explain: SONAMEs, candidate packages, knobs, probe stages, causes, and the Explainer run
against the fake engine (a transplant or knob that makes the candidate follow the baseline)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FakeEngine, Mounted, outcome

from reprocheck.config import load_config
from reprocheck.explain import (
    Candidate,
    Experiment,
    Explainer,
    _experiment_cause,
    _untested,
    candidates,
    elf_soname,
    first_divergent_stage,
    knobs,
    soname,
)
from reprocheck.plan import make_plan
from reprocheck.run_model import RunResult
from reprocheck.runner import Runner

LIB = "/usr/lib/x86_64-linux-gnu"
JPEG_OLD, JPEG_NEW = f"{LIB}/libjpeg.so.62.3.0", f"{LIB}/libjpeg.so.62.4.0"
PNG = f"{LIB}/libpng16.so.16.39.0"
BLAS = f"{LIB}/libopenblas.so.0"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"

BASE: dict[str, Any] = {
    "glibc": "2.31",
    "loaded_libraries": [JPEG_OLD, PNG, BLAS, LIBC, f"{LIB}/libavcodec.so.58.91.100"],
    "library_packages": {
        JPEG_OLD: "libjpeg62-turbo",
        PNG: "libpng16-16",
        BLAS: "libopenblas0-pthread",
        LIBC: "libc6",
        f"{LIB}/libavcodec.so.58.91.100": "libavcodec58",
    },
    "packages": {
        "dpkg": {
            "libjpeg62-turbo": "1:2.0.6-4",
            "libpng16-16": "1.6.37-3",
            "libc6": "2.31-13",
            "libopenblas0-pthread": "0.3.21+ds-4",
            "libavcodec58": "7:4.3.6-0",
        }
    },
}
CAND: dict[str, Any] = {
    "glibc": "2.36",
    "loaded_libraries": [JPEG_NEW, PNG, BLAS, LIBC, f"{LIB}/libavcodec.so.59.37.100"],
    "library_packages": {
        JPEG_NEW: "libjpeg62-turbo",
        PNG: "libpng16-16t64",
        BLAS: "libopenblas0-pthread",
        LIBC: "libc6",
        f"{LIB}/libavcodec.so.59.37.100": "libavcodec59",
    },
    "packages": {
        "dpkg": {
            "libjpeg62-turbo": "1:2.1.5-2",
            "libpng16-16t64": "1.6.43-5",
            "libc6": "2.36-9",
            "libopenblas0-pthread": "0.3.21+ds-4",
            "libavcodec59": "7:5.1.4-0",
        }
    },
}


def _by_package(found: list[Candidate]) -> dict[str, Candidate]:
    return {c.package: c for c in found}


# --------------------------------------------------------------------------- sonames


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"{LIB}/libz.so.1.2.13", "libz.so.1"),
        ("libstdc++.so.6.0.30", "libstdc++.so.6"),
        (f"{LIB}/libopenblas.so.0", "libopenblas.so.0"),
        (f"{LIB}/libfoo.so", "libfoo.so"),
        ("/etc/ld.so.conf.d/x.conf", None),
        ("/usr/bin/python3", None),
    ],
)
def test_soname_from_file_name(path: str, expected: str | None) -> None:
    assert soname(path) == expected


def _host_library() -> tuple[str, Path]:
    """(SONAME, path) of a shared library on this host, from the ldconfig cache (which
    indexes libraries by their SONAME)."""
    try:
        listing = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no ldconfig on this host")
    entries = [line.strip().split(" => ") for line in listing.splitlines() if " => " in line]
    libraries = {left.split()[0]: Path(right) for left, right in entries}
    for name in ("libz.so.1", "libm.so.6", "libc.so.6"):
        if name in libraries and libraries[name].is_file():
            return name, libraries[name]
    pytest.skip("none of libz, libm, libc found through ldconfig")


def test_elf_soname_of_a_host_library() -> None:
    name, path = _host_library()
    assert elf_soname(path.read_bytes()) == name


def test_elf_soname_of_an_executable_without_soname() -> None:
    assert elf_soname(Path(sys.executable).resolve().read_bytes()) is None


@pytest.mark.parametrize("data", [b"", b"not an ELF file at all", b"\x7fELF" + b"\0" * 12])
def test_elf_soname_of_non_elf_bytes(data: bytes) -> None:
    assert elf_soname(data) is None


# --------------------------------------------------------------------------- candidates


def test_candidates_list_packages_whose_version_differs() -> None:
    found = _by_package(candidates(BASE, CAND, []))
    assert set(found) == {"libjpeg62-turbo", "libpng16-16t64", "libc6", "libavcodec59"}
    jpeg = found["libjpeg62-turbo"]
    assert (jpeg.baseline_version, jpeg.candidate_version) == ("1:2.0.6-4", "1:2.1.5-2")
    assert jpeg.libraries == (JPEG_NEW,)
    assert jpeg.transplant == {"libjpeg.so.62": JPEG_OLD}


def test_candidates_drop_equal_versions() -> None:
    assert "libopenblas0-pthread" not in _by_package(candidates(BASE, CAND, []))
    same = candidates(BASE, BASE, ["x.jpg/decode/pixels"])
    assert same == []


def test_renamed_package_takes_the_version_of_the_baseline_owner() -> None:
    png = _by_package(candidates(BASE, CAND, []))["libpng16-16t64"]
    assert (png.baseline_version, png.candidate_version) == ("1.6.37-3", "1.6.43-5")
    assert png.transplant == {"libpng16.so.16": PNG}


def test_library_without_owner_is_ignored() -> None:
    cand = {**CAND, "library_packages": {**CAND["library_packages"], JPEG_NEW: None}}
    assert "libjpeg62-turbo" not in _by_package(candidates(BASE, cand, []))


def test_hint_words_rank_the_fitting_package_first() -> None:
    unranked = [c.package for c in candidates(BASE, CAND, [])]
    assert unranked[0] != "libjpeg62-turbo"  # without hints: library count, then name
    ranked = candidates(BASE, CAND, ["x.jpg/decode/pixels"])
    assert ranked[0].package == "libjpeg62-turbo"
    assert ranked[0].score > 0
    assert all(c.score == 0 for c in ranked[1:] if c.package not in ("libpng16-16t64",))


def test_math_stage_ranks_libc_first() -> None:
    ranked = candidates(BASE, CAND, ["x.npy/transcendental"])
    assert ranked[0].package == "libc6"


def test_transplantable_needs_a_soname_counterpart() -> None:
    found = _by_package(candidates(BASE, CAND, []))
    assert found["libjpeg62-turbo"].transplantable
    avcodec = found["libavcodec59"]  # libavcodec.so.59 has no counterpart in the baseline
    assert avcodec.transplant == {}
    assert avcodec.baseline_version is None
    assert not avcodec.transplantable


def test_libc_is_never_transplantable() -> None:
    libc = _by_package(candidates(BASE, CAND, []))["libc6"]
    assert libc.transplant == {"libc.so.6": LIBC}
    assert not libc.transplantable


@pytest.mark.parametrize(
    ("package", "transplantable"),
    [
        ("libc6", False),
        ("libstdc++6", False),
        ("libgcc-s1", False),
        ("python3.11", False),
        ("libpython3.11", False),
        ("libjpeg62-turbo", True),
        ("libopenblas0-pthread", True),
    ],
)
def test_transplantable_by_package(package: str, transplantable: bool) -> None:
    candidate = Candidate(
        package=package,
        baseline_version="1",
        candidate_version="2",
        libraries=("/x/lib.so.1",),
        transplant={"lib.so.1": "/y/lib.so.1"},
    )
    assert candidate.transplantable is transplantable


# --------------------------------------------------------------------------- knobs


def _knobs(fingerprint: dict[str, Any]) -> dict[str, dict[str, str]]:
    return dict(knobs(fingerprint))


def test_glibc_tunable_names_before_2_33() -> None:
    value = _knobs({"glibc": "2.31"})["GLIBC_TUNABLES"]["GLIBC_TUNABLES"]
    assert value == "glibc.cpu.hwcaps=-AVX2_Usable,-AVX_Usable,-FMA_Usable,-AVX512F_Usable"


@pytest.mark.parametrize("glibc", ["2.36", "2.41"])
def test_glibc_tunable_names_from_2_33(glibc: str) -> None:
    value = _knobs({"glibc": glibc})["GLIBC_TUNABLES"]["GLIBC_TUNABLES"]
    assert value == "glibc.cpu.hwcaps=-AVX2,-AVX,-FMA,-AVX512F"


@pytest.mark.parametrize("glibc", ["error: RuntimeError: C library version not found", "musl"])
def test_no_glibc_tunable_without_a_glibc_version(glibc: str) -> None:
    found = _knobs({"glibc": glibc})
    assert "GLIBC_TUNABLES" not in found
    assert "OMP_NUM_THREADS" in found


def test_numpy_knob_only_with_simd_dispatch() -> None:
    assert "NPY_DISABLE_CPU_FEATURES" not in _knobs({})
    assert "NPY_DISABLE_CPU_FEATURES" not in _knobs({"numpy": {"simd": {"dispatch": None}}})
    found = _knobs({"numpy": {"simd": {"dispatch": ["SSE41", "AVX2", "AVX512F"]}}})
    assert found["NPY_DISABLE_CPU_FEATURES"] == {"NPY_DISABLE_CPU_FEATURES": "SSE41 AVX2 AVX512F"}


def test_opencv_knob_from_the_dispatch_line() -> None:
    assert "OPENCV_CPU_DISABLE" not in _knobs({"cv2": {"build": {}}})
    build = {"Dispatched code generation": "SSE4_1 SSE4_2 FP16 AVX AVX2"}
    found = _knobs({"cv2": {"build": build}})
    assert found["OPENCV_CPU_DISABLE"] == {"OPENCV_CPU_DISABLE": "SSE4_1,SSE4_2,FP16,AVX,AVX2"}


def test_knobs_start_with_threads_and_end_with_glibc() -> None:
    names = [name for name, _ in knobs({"glibc": "2.36"})]
    assert names[:2] == ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"]
    assert names[-1] == "GLIBC_TUNABLES"


# --------------------------------------------------------------------------- stages


def _probes(meta: Path, fixture: str, **stages: np.ndarray) -> None:
    path = meta / "probes" / f"{fixture}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"{i:03d}:{name}": v for i, (name, v) in enumerate(stages.items())})


def test_first_divergent_stage(tmp_path: Path) -> None:
    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    moved = img.copy()
    moved[1, 2] += 0.5
    _probes(tmp_path / "a", "x.png", decoded=img, after_resize=img, after_blur=img)
    _probes(tmp_path / "b", "x.png", decoded=img, after_resize=moved, after_blur=moved + 1)
    stage = first_divergent_stage(tmp_path / "a", tmp_path / "b", "x.png")
    assert stage is not None
    name, evidence = stage
    assert name == "after_resize"
    assert "max_abs 0.5, 1 of 16 differ" in evidence
    assert evidence.endswith("identical before it: decoded")


def test_first_stage_divergent_has_no_identical_prefix(tmp_path: Path) -> None:
    _probes(tmp_path / "a", "x.png", decoded=np.zeros(3))
    _probes(tmp_path / "b", "x.png", decoded=np.zeros(4))  # a shape change diverges too
    stage = first_divergent_stage(tmp_path / "a", tmp_path / "b", "x.png")
    assert stage is not None
    assert stage[0] == "decoded"
    assert "identical before it" not in stage[1]


def test_no_divergent_stage_when_probes_agree(tmp_path: Path) -> None:
    _probes(tmp_path / "a", "x.png", decoded=np.ones(3), resized=np.ones(2))
    _probes(tmp_path / "b", "x.png", decoded=np.ones(3), resized=np.ones(2))
    assert first_divergent_stage(tmp_path / "a", tmp_path / "b", "x.png") is None


def test_no_divergent_stage_without_probes_on_both_sides(tmp_path: Path) -> None:
    _probes(tmp_path / "a", "x.png", decoded=np.ones(3))
    assert first_divergent_stage(tmp_path / "a", tmp_path / "b", "x.png") is None
    assert first_divergent_stage(tmp_path / "a", tmp_path / "a", "other.png") is None


# --------------------------------------------------------------------------- causes


def _jpeg() -> Candidate:
    return _by_package(candidates(BASE, CAND, []))["libjpeg62-turbo"]


TRANSPLANT = Experiment(
    kind="transplant", factor="libjpeg62-turbo", environment="new", candidate=_jpeg(), status="ok"
)
KNOB = Experiment(
    kind="knob",
    factor="JSIMD_FORCENONE",
    environment="new",
    env={"JSIMD_FORCENONE": "1"},
    status="ok",
)


@pytest.mark.parametrize(
    ("experiment", "effect", "kind", "confidence"),
    [
        (TRANSPLANT, "follows", "package", 0.95),
        (KNOB, "follows", "knob", 0.95),
        (TRANSPLANT, "changed", "package", 0.5),
        (KNOB, "changed", "knob", 0.5),
    ],
)
def test_experiment_cause(experiment: Experiment, effect: str, kind: str, confidence: float):
    cause = _experiment_cause(experiment, effect, "old")
    assert cause is not None
    assert (cause.factor, cause.kind, cause.confidence) == (experiment.factor, kind, confidence)
    assert cause.evidence.startswith(experiment.describe())
    expected = "bit-identical to old's" if effect == "follows" else "does not match old's"
    assert expected in cause.evidence


@pytest.mark.parametrize("effect", ["unchanged", "failed"])
def test_no_cause_from_an_experiment_without_effect(effect: str) -> None:
    assert _experiment_cause(TRANSPLANT, effect, "old") is None
    assert _experiment_cause(KNOB, effect, "old") is None


def test_describe_names_the_transplanted_libraries() -> None:
    assert TRANSPLANT.describe() == (
        "new with the baseline's libraries of libjpeg62-turbo 1:2.0.6-4 (libjpeg.so.62)"
    )
    assert KNOB.describe() == "new with JSIMD_FORCENONE=1"
    both = dataclasses.replace(TRANSPLANT, extra=(_jpeg(),))
    assert both.describe().count("libjpeg62-turbo 1:2.0.6-4 (libjpeg.so.62)") == 2


def test_untested_lists_fitting_candidates_with_why() -> None:
    ranked = candidates(BASE, CAND, ["x.jpg/decoded_exp"])
    causes = {c.factor: c for c in _untested("x.jpg/decoded_exp", ranked, [])}
    assert set(causes) == {"libjpeg62-turbo", "libpng16-16t64", "libc6"}  # not libavcodec59
    assert causes["libjpeg62-turbo"].evidence.endswith("not tried (budget)")
    assert causes["libc6"].evidence.endswith("cannot be transplanted")
    assert "libc6 differs (2.31-13 -> 2.36-9)" in causes["libc6"].evidence
    assert {(c.kind, c.confidence) for c in causes.values()} == {("version", 0.3)}


def test_untested_skips_what_was_tried_and_keeps_three() -> None:
    ranked = candidates(BASE, CAND, [])
    tried = _untested("x.jpg/decoded_exp", ranked, [TRANSPLANT])
    assert {c.factor for c in tried} == {"libpng16-16t64", "libc6"}
    many = [dataclass_copy(ranked[0], package=f"libjpeg-{k}") for k in range(5)]
    assert len(_untested("x.jpg/pixels", many, [])) == 3


def dataclass_copy(candidate: Candidate, **changes: Any) -> Candidate:
    import dataclasses

    return dataclasses.replace(candidate, **changes)


# --------------------------------------------------------------------------- Explainer

OLD_PIXELS = np.array([[10, 20], [30, 40]], dtype=np.uint8)
NEW_PIXELS = np.array([[10, 21], [30, 40]], dtype=np.uint8)


class LibraryEngine(FakeEngine):
    """Exports a real shared library for every path, so transplants find a matching SONAME."""

    library: bytes = b""

    def export_files(self, image: str, paths: tuple[str, ...]) -> dict[str, bytes]:
        return dict.fromkeys(paths, self.library)

    def hybrids(self) -> set[str]:
        return {i.id for i in self.present.values() if "io.reprocheck.hybrid" in i.labels}


def _harness(box: Mounted, fingerprint: dict[str, Any], pixels: np.ndarray) -> None:
    box.write_outputs("x.jpg", pixels=pixels)
    probes = box.meta / "probes" / "x.jpg.npz"
    probes.parent.mkdir(parents=True, exist_ok=True)
    np.savez(probes, **{"000:decoded": pixels.astype(np.float32)})
    box.write_status({"x.jpg": {"status": "ok", "seconds": 0.1}})
    (box.meta / "fingerprint.json").write_text(json.dumps(fingerprint))


def _engine(follows: str | None) -> LibraryEngine:
    """'new' follows 'old' in the hybrid image ('transplant'), with a knob set ('knob
    VARIABLE'), or never (None)."""
    engine = LibraryEngine()
    engine.library = _host_library()[1].read_bytes()

    def old(box: Mounted) -> Any:
        _harness(box, BASE, OLD_PIXELS)
        return outcome(0)

    def new(box: Mounted) -> Any:
        transplanted = follows == "transplant" and box.spec.image in engine.hybrids()
        knob = follows is not None and follows.startswith("knob ") and follows[5:] in box.spec.env
        _harness(box, CAND, OLD_PIXELS if transplanted or knob else NEW_PIXELS)
        return outcome(0)

    engine.behaviours = {"old": old, "new": new}
    return engine


CONFIG = """
[pipeline]
callable = "pipelines/p.py:run"
[fixtures]
path = "inputs"
[[environments]]
name = "old"
image = "img/old:1"
[[environments]]
name = "new"
image = "img/new:1"
"""


@pytest.fixture
def explained(make_project, no_host_ca):
    """Run the project on the fake engine, then return a function that explains the run."""

    def explain(follows: str | None, **kwargs: Any) -> tuple[Any, LibraryEngine, RunResult]:
        files = {"inputs/x.jpg": "x", "pipelines/p.py": "def run(path):\n    return {}\n"}
        config = load_config(make_project(CONFIG, files))
        engine = _engine(follows)
        for env in config.environments:
            engine.add(env.image)
        run = Runner(engine, make_plan(config), run_id="run-1").run(config.reports_dir / "run-1")
        explainer = Explainer(engine, config, run, **kwargs)
        return explainer, engine, run

    return explain


def test_transplant_that_follows_the_baseline_is_the_cause(explained) -> None:
    explainer, engine, _ = explained("transplant")
    explanation = explainer.explain()
    assert [(e.kind, e.factor, e.status, e.cached) for e in explanation.experiments] == [
        ("transplant", "libjpeg62-turbo", "ok", False)
    ]
    (attribution,) = explanation.attributions
    assert (attribution.output, attribution.baseline, attribution.candidate) == (
        "x.jpg/pixels",
        "old",
        "new",
    )
    assert attribution.fixture == "x.jpg"
    top, stage = attribution.causes[:2]
    assert (top.factor, top.kind, top.confidence) == ("libjpeg62-turbo", "package", 0.95)
    assert (stage.factor, stage.kind) == ("decoded", "stage")
    (build,) = [b for b in engine.builds if "io.reprocheck.hybrid" in b.labels]
    assert build.labels["io.reprocheck.hybrid"] == "libjpeg62-turbo from old"


def test_experiments_are_cached(explained) -> None:
    explainer, engine, _ = explained("transplant")
    explainer.explain()
    runs = len(engine.runs)
    again = explainer.explain()
    assert [e.cached for e in again.experiments] == [True]
    assert again.attributions[0].causes[0].factor == "libjpeg62-turbo"
    assert len(engine.runs) == runs


def test_knob_after_a_transplant_that_changed_nothing(explained) -> None:
    explainer, _, _ = explained("knob JSIMD_FORCENONE")
    explanation = explainer.explain()
    factors = [e.factor for e in explanation.experiments]
    # likely transplants (png fits an image output too), then knobs until one follows;
    # libc6 differs but is never transplanted
    assert factors == [
        "libjpeg62-turbo",
        "libpng16-16t64",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "cv2.setNumThreads",
        "JSIMD_FORCENONE",
    ]
    (attribution,) = explanation.attributions
    top = attribution.causes[0]
    assert (top.factor, top.kind, top.confidence) == ("JSIMD_FORCENONE", "knob", 0.95)
    assert attribution.ruled_out == (
        "libjpeg62-turbo (transplant changed nothing)",
        "libpng16-16t64 (transplant changed nothing)",
    )


def test_budget_bounds_the_experiments(explained) -> None:
    explainer, _, _ = explained(None, max_experiments=3)
    explanation = explainer.explain()
    assert [e.factor for e in explanation.experiments] == [
        "libjpeg62-turbo",
        "libpng16-16t64",
        "OMP_NUM_THREADS",
    ]
    (attribution,) = explanation.attributions
    assert [c.kind for c in attribution.causes] == ["stage"]  # every fitting package was tried
    assert len(attribution.ruled_out) == 2


def test_glob_selects_the_outputs_to_explain(explained) -> None:
    explainer, engine, _ = explained("transplant")
    explanation = explainer.explain("other/*")
    assert explanation.attributions == ()
    assert explanation.experiments == ()
    assert len(engine.runs) == 2  # the run itself only
