"""explain: SONAMEs, suspects, knobs, probe stages, causes, and the Explainer run against the
fake engine (a transplant or knob that makes the candidate follow the baseline, or a knob that
makes the pair agree when it is set on both sides)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FakeEngine, Mounted, outcome
from hypothesis import given, settings
from hypothesis import strategies as st

from reprocheck.config import load_config
from reprocheck.engine import BuildRequest, ImageInfo
from reprocheck.explain import (
    Effect,
    Experiment,
    ExperimentKind,
    Explainer,
    Status,
    Suspect,
    elf_soname,
    experiment_cause,
    first_divergent_stage,
    knobs,
    soname,
    suspects,
    version_causes,
)
from reprocheck.explain.effects import Measurement
from reprocheck.explain.knobs import pair_knobs
from reprocheck.explain.model import CpuDifference
from reprocheck.explain.suspects import cpu_difference
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


def candidates(base: dict[str, Any], cand: dict[str, Any], words: list[str]) -> list[Suspect]:
    return suspects(base, cand, words)


def _by_package(found: list[Suspect]) -> dict[str, Suspect]:
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


def test_libc_moves_forward_not_by_soname() -> None:
    libc = _by_package(candidates(BASE, CAND, []))["libc6"]
    assert libc.transplant == {"libc.so.6": LIBC}
    assert (libc.transplantable, libc.how) == (True, "glibc")


@pytest.mark.parametrize(
    ("base", "cand"),
    [
        ({"glibc": "2.36"}, {"glibc": "2.36"}),  # the same glibc, another Debian revision
        ({"glibc": "error: no libc"}, {"glibc": "2.36"}),  # not a glibc
        ({"glibc": "2.31", "machine": "aarch64"}, {"glibc": "2.36", "machine": "x86_64"}),
    ],
)
def test_libc_does_not_move_without_two_glibcs_of_one_architecture(
    base: dict[str, Any], cand: dict[str, Any]
) -> None:
    libc = _by_package(candidates({**BASE, **base}, {**CAND, **cand}, []))["libc6"]
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
    candidate = Suspect(
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


def _jpeg() -> Suspect:
    return _by_package(candidates(BASE, CAND, []))["libjpeg62-turbo"]


TRANSPLANT = Experiment(
    kind=ExperimentKind.TRANSPLANT,
    factor="libjpeg62-turbo",
    environment="new",
    suspect=_jpeg(),
    status=Status.OK,
)
KNOB = Experiment(
    kind=ExperimentKind.KNOB,
    factor="JSIMD_FORCENONE",
    environment="new",
    baseline="old",
    env={"JSIMD_FORCENONE": "1"},
    baseline_env={"JSIMD_FORCENONE": "1"},
    status=Status.OK,
)


def _measured(effect: str, one_sided: str | None = None) -> Measurement:
    agreement = "bit-identical" if effect in ("follows", "agrees") else ""
    return Measurement(
        effect=Effect(effect), one_sided=Effect(one_sided or effect), agreement=agreement
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
    cause = experiment_cause(experiment, _measured(effect), "old")
    assert cause is not None
    assert (cause.factor, cause.kind, cause.confidence) == (experiment.factor, kind, confidence)
    assert cause.evidence.startswith(experiment.describe())
    expected = "bit-identical to old's" if effect == "follows" else "does not match old's"
    assert expected in cause.evidence


@pytest.mark.parametrize("effect", ["unchanged", "failed"])
def test_no_cause_from_an_experiment_without_effect(effect: str) -> None:
    assert experiment_cause(TRANSPLANT, _measured(effect), "old") is None
    assert experiment_cause(KNOB, _measured(effect), "old") is None


def test_describe_names_the_transplanted_libraries() -> None:
    assert TRANSPLANT.describe() == (
        "new with the baseline's libraries of libjpeg62-turbo 1:2.0.6-4 (libjpeg.so.62)"
    )
    assert KNOB.describe() == "new with JSIMD_FORCENONE=1"
    both = dataclasses.replace(TRANSPLANT, extra=(_jpeg(),))
    assert both.describe().count("libjpeg62-turbo 1:2.0.6-4 (libjpeg.so.62)") == 2


def test_version_causes_rank_fitting_suspects_first_with_why() -> None:
    ranked = candidates(BASE, CAND, ["x.jpg/decoded_exp"])
    found = version_causes("x.jpg/decoded_exp", ranked, [])
    causes = {c.factor: c for c in found}
    assert set(causes) == {"libjpeg62-turbo", "libpng16-16t64", "libc6", "libavcodec59"}
    assert found[-1].factor == "libavcodec59"  # loaded, but fits neither decoding nor exp
    assert causes["libjpeg62-turbo"].evidence.endswith("not tried (budget)")
    assert causes["libc6"].evidence.endswith("not tried (budget)")  # glibc moves forward
    assert "libc6 differs (2.31-13 -> 2.36-9)" in causes["libc6"].evidence
    fitting = {c.factor: (c.kind, c.confidence) for c in found[:3]}
    assert set(fitting.values()) == {("version", 0.3)}
    assert (causes["libavcodec59"].kind, causes["libavcodec59"].confidence) == ("version", 0.2)


def test_version_causes_skip_what_moved_rank_ruled_out_last_and_keep_five() -> None:
    ranked = candidates(BASE, CAND, [])
    moved = version_causes("x.jpg/decoded_exp", ranked, [(TRANSPLANT, _measured("changed"))])
    assert "libjpeg62-turbo" not in {c.factor for c in moved}  # its own 0.5 cause names it
    ruled = version_causes("x.jpg/decoded_exp", ranked, [(TRANSPLANT, _measured("unchanged"))])
    assert ruled[-1].factor == "libjpeg62-turbo"
    assert ruled[-1].confidence == 0.05
    assert ruled[-1].evidence.endswith("its transplant changed nothing")
    many = [dataclasses.replace(ranked[0], package=f"libjpeg-{k}") for k in range(8)]
    assert len(version_causes("x.jpg/pixels", many, [])) == 5


def test_version_causes_are_never_empty() -> None:
    (cause,) = version_causes("x.jpg/pixels", [], [])
    assert (cause.factor, cause.kind, cause.confidence) == ("image", "version", 0.05)
    assert "no package, interpreter or pip distribution version differs" in cause.evidence


# --------------------------------------------------------------------------- Explainer

OLD_PIXELS = np.array([[10, 20], [30, 40]], dtype=np.uint8)
NEW_PIXELS = np.array([[10, 25], [30, 40]], dtype=np.uint8)
KNOB_PIXELS = np.array([[12, 22], [32, 42]], dtype=np.uint8)  # both sides with a knob
NEAR_PIXELS = KNOB_PIXELS + np.uint8(1)  # within an atol of 1 of KNOB_PIXELS


class LibraryEngine(FakeEngine):
    """Exports a real shared library for every path, so transplants find a matching SONAME."""

    library: bytes = b""

    def export_files(self, image: str, paths: tuple[str, ...]) -> dict[str, bytes]:
        return dict.fromkeys(paths, self.library)

    def build(self, request: BuildRequest, on_line: Callable[[str], None]) -> ImageInfo:
        with tarfile.open(request.context_tar) as tar:
            member = tar.extractfile("Dockerfile")
            self.dockerfiles.append(member.read().decode() if member else "")
        return super().build(request, on_line)

    @property
    def dockerfiles(self) -> list[str]:
        if not hasattr(self, "_dockerfiles"):
            self._dockerfiles: list[str] = []
        return self._dockerfiles

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
    """How 'new' comes to match 'old': in the hybrid image ('transplant'); with a knob set in
    'new' ('knob VARIABLE'); with the knob set on both sides, which moves both to the same
    pixels ('both VARIABLE'), to pixels within an atol of 1 ('near VARIABLE'), or moves only
    'old' to 'new's pixels ('base VARIABLE'); only in the hybrid image with the knob set on both
    sides, each of them alone moving 'new' elsewhere ('mixed VARIABLE'); or never (None)."""
    engine = LibraryEngine()
    engine.library = _host_library()[1].read_bytes()
    mode, _, variable = (follows or "").partition(" ")

    def old(box: Mounted) -> Any:
        knob = bool(variable) and variable in box.spec.env
        pixels = {"both": KNOB_PIXELS, "near": KNOB_PIXELS, "base": NEW_PIXELS,
                  "mixed": KNOB_PIXELS}.get(mode)  # fmt: skip
        _harness(box, BASE, pixels if knob and pixels is not None else OLD_PIXELS)
        return outcome(0)

    def new(box: Mounted) -> Any:
        knob = bool(variable) and variable in box.spec.env
        if mode == "mixed":
            hybrid = box.spec.image in engine.hybrids()
            moved = {(True, True): KNOB_PIXELS, (True, False): NEW_PIXELS + np.uint8(2),
                     (False, True): NEW_PIXELS + np.uint8(3)}  # fmt: skip
            _harness(box, CAND, moved.get((hybrid, knob), NEW_PIXELS))
            return outcome(0)
        transplanted = mode == "transplant" and box.spec.image in engine.hybrids()
        pixels = {"knob": OLD_PIXELS, "both": KNOB_PIXELS, "near": NEAR_PIXELS}.get(mode)
        chosen = OLD_PIXELS if transplanted else pixels if knob and pixels is not None else None
        _harness(box, CAND, NEW_PIXELS if chosen is None else chosen)
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

    def explain(
        follows: str | None, *, extra: str = "", **kwargs: Any
    ) -> tuple[Any, LibraryEngine, RunResult]:
        files = {"inputs/x.jpg": "x", "pipelines/p.py": "def run(path):\n    return {}\n"}
        config = load_config(make_project(CONFIG + extra, files))
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
    explainer, engine, _ = explained("knob JSIMD_FORCENONE")
    explanation = explainer.explain()
    factors = [e.factor for e in explanation.experiments]
    # likely transplants (png fits an image output too), then knobs, the one fitting a
    # decoded pixels output first; libc6 differs but is never transplanted
    assert factors == ["libjpeg62-turbo", "libpng16-16t64", "JSIMD_FORCENONE"]
    assert [e.sides for e in explanation.experiments] == ["candidate", "candidate", "both"]
    (attribution,) = explanation.attributions
    top = attribution.causes[0]
    assert (top.factor, top.kind, top.confidence) == ("JSIMD_FORCENONE", "knob", 0.95)
    assert "becomes bit-identical to old's" in top.evidence
    assert attribution.ruled_out == (
        "libjpeg62-turbo (transplant changed nothing)",
        "libpng16-16t64 (transplant changed nothing)",
    )
    assert attribution.advice == "set JSIMD_FORCENONE=1 in new to get old's outputs"
    knob_runs = [r for r in engine.runs if "JSIMD_FORCENONE" in r.env]
    sides = sorted(r.labels["io.reprocheck.environment"] for r in knob_runs)
    assert sides == ["new", "old"]  # a knob runs on both sides


def test_budget_bounds_the_experiments(explained) -> None:
    explainer, _, _ = explained(None, max_experiments=3)
    explanation = explainer.explain()
    assert [e.factor for e in explanation.experiments] == [
        "libjpeg62-turbo",
        "libpng16-16t64",
        "JSIMD_FORCENONE",
    ]
    (attribution,) = explanation.attributions
    kinds = [c.kind for c in attribution.causes]
    assert kinds[0] == "stage"
    # every fitting package was tried and ruled out; what is left are version suspects
    assert set(kinds[1:]) == {"version"}
    assert {c.factor for c in attribution.causes[1:]} >= {"libc6", "libavcodec59"}
    assert attribution.causes[-1].factor in {"libjpeg62-turbo", "libpng16-16t64"}  # ruled out
    assert all(c.confidence <= 0.3 for c in attribution.causes[1:])
    assert len(attribution.ruled_out) == 2
    assert attribution.advice == (
        "untested: most likely libavcodec59 (not in old, 7:5.1.4-0 in new); pin it to test, "
        "or accept new's as the new baseline"
    )


def test_knob_on_both_sides_that_makes_the_pair_agree_is_the_cause(explained) -> None:
    explainer, _, _ = explained("both JSIMD_FORCENONE")
    explanation = explainer.explain()
    assert [e.factor for e in explanation.experiments][-1] == "JSIMD_FORCENONE"
    (attribution,) = explanation.attributions
    top = attribution.causes[0]
    assert (top.factor, top.kind, top.confidence) == ("JSIMD_FORCENONE", "knob", 0.95)
    assert top.evidence.startswith("new with JSIMD_FORCENONE=1, and old with JSIMD_FORCENONE=1")
    assert "the two outputs are bit-identical" in top.evidence
    # the one-sided result stays as evidence: on the candidate alone it only moved
    assert top.evidence.endswith("on new alone the output changes but does not match old's")
    assert attribution.advice == (
        "set JSIMD_FORCENONE=1 on every image to make these outputs reproducible across old and new"
    )


def test_knob_that_moves_only_the_baseline_side_is_the_cause(explained) -> None:
    explainer, _, _ = explained("base JSIMD_FORCENONE")
    (attribution,) = explainer.explain().attributions
    top = attribution.causes[0]
    assert (top.factor, top.confidence) == ("JSIMD_FORCENONE", 0.95)
    assert top.evidence.endswith("on new alone the output does not change (the knob moved "
                                 "old's side)")  # fmt: skip


def test_knob_agreement_follows_the_runs_tolerance(explained) -> None:
    exact, _, _ = explained("near JSIMD_FORCENONE")
    (attribution,) = exact.explain().attributions
    knob = next(c for c in attribution.causes if c.factor == "JSIMD_FORCENONE")
    assert knob.confidence == 0.5  # one apart: no agreement without a tolerance
    loose, _, _ = explained("near JSIMD_FORCENONE", extra="[tolerance]\ndefault = { atol = 1 }\n")
    (attribution,) = loose.explain().attributions
    top = attribution.causes[0]
    assert (top.factor, top.confidence) == ("JSIMD_FORCENONE", 0.95)
    assert "the two outputs are within tolerance" in top.evidence


def test_the_cache_key_names_the_side(explained) -> None:
    """A knob's two sides are cached apart, and a second explain runs no container."""
    explainer, engine, run = explained("both JSIMD_FORCENONE")
    first = explainer.explain()
    folders = list((run.run_dir.parent / ".cache" / "experiments").iterdir())
    transplants = sum(e.kind == "transplant" for e in first.experiments)
    assert len(folders) == transplants + 2 * sum(e.kind == "knob" for e in first.experiments)
    runs = len(engine.runs)
    again = explainer.explain()
    assert all(e.cached for e in again.experiments)
    assert len(engine.runs) == runs
    assert again.attributions == first.attributions


def test_glob_selects_the_outputs_to_explain(explained) -> None:
    explainer, engine, _ = explained("transplant")
    explanation = explainer.explain("other/*")
    assert explanation.attributions == ()
    assert explanation.experiments == ()
    assert len(engine.runs) == 2  # the run itself only


# --------------------------------------------------------------------------- suspects v2

PY_BASE: dict[str, Any] = {
    **BASE,
    "python": {"version": "3.11.2", "implementation": "CPython"},
    "packages": {
        "dpkg": {**BASE["packages"]["dpkg"], "python3.11": "3.11.2-6", "python3-numpy": "1:1.24"},
        "pip": {"numpy": "1.24.2", "pip": "23.0", "scikit-learn": "1.3.2", "joblib": "1.2.0"},
    },
}
SITE = "/opt/venv/lib/python3.13/site-packages"
PY_CAND: dict[str, Any] = {
    **CAND,
    "python": {"version": "3.13.5", "implementation": "CPython"},
    "loaded_libraries": [
        *CAND["loaded_libraries"],
        "/usr/lib/python3.13/lib-dynload/_json.cpython-313-x86_64-linux-gnu.so",
        f"{SITE}/sklearn/utils/_openmp_helpers.cpython-313-x86_64-linux-gnu.so",
        f"{SITE}/scikit_learn.libs/libgomp-a34b3233.so.1.0.0",
    ],
    "library_packages": {
        **CAND["library_packages"],
        "/usr/lib/python3.13/lib-dynload/_json.cpython-313-x86_64-linux-gnu.so": (
            "libpython3.13-stdlib"
        ),
    },
    "packages": {
        "dpkg": {**CAND["packages"]["dpkg"], "python3.13": "3.13.5-2", "python3-numpy": "1:2.2"},
        "pip": {"numpy": "2.2.4", "pip": "25.0", "scikit-learn": "1.6.1", "joblib": "1.4.2"},
    },
}


def test_the_interpreter_is_one_suspect_not_its_packages() -> None:
    found = _by_package(suspects(PY_BASE, PY_CAND, []))
    python = found["python3.13"]
    assert python.kind == "interpreter"
    assert python.baseline_version == "3.11.2 (python3.11 3.11.2-6)"
    assert python.candidate_version == "3.13.5 (python3.13 3.13.5-2)"
    assert python.libraries == (
        "/usr/lib/python3.13/lib-dynload/_json.cpython-313-x86_64-linux-gnu.so",
    )
    assert not python.transplantable
    assert "libpython3.13-stdlib" not in found  # folded into the interpreter


def test_no_interpreter_suspect_when_cpython_is_the_same() -> None:
    assert "python3.11" not in _by_package(suspects(PY_BASE, PY_BASE, []))


def test_pip_distributions_are_suspects_unless_debian_installed_them() -> None:
    found = _by_package(suspects(PY_BASE, PY_CAND, []))
    sklearn = found["scikit-learn"]
    assert (sklearn.kind, sklearn.baseline_version, sklearn.candidate_version) == (
        "distribution", "1.3.2", "1.6.1",
    )  # fmt: skip
    assert len(sklearn.libraries) == 2  # its package folder and its bundled .libs
    assert not sklearn.transplantable
    assert found["joblib"].libraries == ()  # pure Python: installed, nothing loaded
    assert "numpy" not in found  # python3-numpy installed it: the library suspect covers it
    assert "pip" not in found


@pytest.mark.parametrize(
    ("words", "first"),
    [
        ("stats/python_sum", "python3.13"),
        ("x/statistics/stdev", "python3.13"),
        ("x.jpg/decode/pixels", "libjpeg62-turbo"),
        ("clusters/kmeans_labels", "scikit-learn"),
    ],
)
def test_suspects_rank_by_what_the_output_computes(words: str, first: str) -> None:
    assert suspects(PY_BASE, PY_CAND, [words])[0].package == first


def test_a_pure_python_output_ranks_the_interpreter_first_in_its_causes() -> None:
    ranked = suspects(PY_BASE, PY_CAND, [])
    causes = version_causes("x/math_module", ranked, [])
    assert causes[0].factor == "python3.13"
    assert "computed by the interpreter itself" in causes[0].evidence
    assert causes[0].evidence.endswith("the interpreter cannot be transplanted")
    joblib = [s for s in ranked if s.package == "joblib"]
    (unloaded,) = version_causes("x/other", joblib, [])
    assert unloaded.confidence == 0.1  # nothing of it was loaded
    assert "installed, but none of its libraries was loaded" in unloaded.evidence


# --------------------------------------------------------------------------- attribution


def _facts(output: str = "x.jpg/pixels", stage: Any = ("decoded", "first ...")) -> Any:
    from reprocheck.explain.attribute import OutputFacts

    return OutputFacts(output=output, baseline="old", candidate="new", fixture="x.jpg",
                       family=output.partition("/")[2], stage=stage,
                       words=output)  # fmt: skip


def test_a_transplant_that_follows_advises_a_pin() -> None:
    from reprocheck.explain import attribute

    found = attribute(_facts(), [(TRANSPLANT, _measured("follows"))], [_jpeg()])
    assert found.causes[0].factor == "libjpeg62-turbo"
    assert found.family == "pixels"
    assert found.advice == (
        "pin libjpeg62-turbo at 1:2.0.6-4 (as in old) to get old's outputs in new, or accept "
        "new's as the new baseline"
    )


def test_a_combination_counts_only_where_no_single_factor_settles() -> None:
    from reprocheck.explain import attribute

    both = dataclasses.replace(TRANSPLANT, factor="a + b", extra=(_jpeg(),))
    single = attribute(_facts(), [(KNOB, _measured("agrees", "changed")),
                                  (both, _measured("follows"))], [])  # fmt: skip
    assert [c.factor for c in single.causes if c.kind != "stage"] == ["JSIMD_FORCENONE"]
    combined = attribute(_facts(), [(TRANSPLANT, _measured("changed")),
                                    (both, _measured("follows"))], [])  # fmt: skip
    assert combined.causes[0].factor == "a + b"
    assert combined.advice.startswith("pin libjpeg62-turbo at 1:2.0.6-4 (as in old) and ")


CPUS = CpuDifference(baseline_model="Intel Xeon", candidate_model="x86-64-v2 (qemu-user -cpu "
                     "Nehalem)", baseline_only=("AVX2", "AVX512F", "FMA3"))  # fmt: skip
EFFECTS = st.sampled_from([e.value for e in Effect])
KINDS = st.sampled_from(["library", "interpreter", "distribution"])


@st.composite
def _suspect_lists(draw: Any) -> list[Suspect]:
    names = draw(st.lists(st.sampled_from(["libc6", "libjpeg62-turbo", "python3.13", "numpy",
                                           "libopenblas0", "scikit-learn"]),
                          unique=True, max_size=6))  # fmt: skip
    return [
        Suspect(package=name, baseline_version=draw(st.one_of(st.none(), st.just("1"))),
                candidate_version="2", kind=draw(KINDS),
                libraries=tuple(draw(st.lists(st.just(f"/lib/{name}.so.1"), max_size=1))),
                transplant=draw(st.sampled_from([{}, {f"{name}.so.1": f"/b/{name}.so.1"}])))
        for name in names
    ]  # fmt: skip


@given(
    suspect_list=_suspect_lists(),
    effects=st.lists(st.tuples(st.booleans(), EFFECTS, EFFECTS), max_size=5),
    output=st.sampled_from(["x/libm/exp", "x/pixels", "x/python_sum", "x/other", "x"]),
    with_stage=st.booleans(),
    cpus=st.sampled_from([None, CPUS]),
    same_image=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_no_drifting_output_ends_without_a_cause(
    suspect_list: list[Suspect], effects: list[Any], output: str, with_stage: bool,
    cpus: CpuDifference | None, same_image: bool,
) -> None:  # fmt: skip
    """Whatever the suspects and the experiments' effects, every output gets a cause beyond
    its stage and one sentence of advice; untested suspects never claim more than 0.3."""
    from reprocheck.explain import attribute

    measured = []
    for is_knob, effect, one_sided in effects:
        ran = KNOB if is_knob else dataclasses.replace(
            TRANSPLANT, suspect=suspect_list[0] if suspect_list else _jpeg())  # fmt: skip
        measured.append((ran, _measured(effect, one_sided)))
    stage = ("decoded", "first ...") if with_stage else None
    facts = dataclasses.replace(_facts(output, stage), cpus=cpus, same_image=same_image)
    found = attribute(facts, measured, suspect_list)
    beyond = [c for c in found.causes if c.kind != "stage"]
    assert (cpus is not None) == any(c.kind == "cpu" for c in found.causes)
    assert beyond
    assert all(c.confidence <= 0.3 for c in beyond if c.kind == "version")
    assert found.advice
    assert [c.confidence for c in found.causes] == sorted(
        (c.confidence for c in found.causes), reverse=True
    )


def test_every_output_of_an_explained_run_gets_suspects_without_experiments(explained) -> None:
    explainer, _, _ = explained(None, max_experiments=0)
    explanation = explainer.explain()
    assert explanation.experiments == ()
    for attribution in explanation.attributions:
        assert any(c.kind == "version" for c in attribution.causes)
        assert attribution.advice


# --------------------------------------------------------------------------- advice


def test_advice_by_family_groups_fixtures_of_one_pair() -> None:
    from reprocheck.explain import advice_by_family

    pair = {"baseline": "a", "candidate": "b"}
    items = [
        {
            **pair,
            "output": f"{f}/filter/sep",
            "family": "filter/sep",
            "advice": "set X=1",
        }
        for f in ("p.jpg", "q.png")
    ]
    items += [{**pair, "output": "p.jpg/libm", "family": "libm", "advice": "pin libc6"}]
    items += [{**pair, "output": "old/one"}]  # an attribution of an older explain: no advice
    found = advice_by_family(items)
    assert [(a.family, a.outputs, a.advice) for a in found] == [
        ("filter/sep", 2, "set X=1"),
        ("libm", 1, "pin libc6"),
    ]


def test_the_reports_show_the_advice() -> None:
    from reprocheck.report.html import _attributions
    from reprocheck.report.markdown import render_markdown

    report: dict[str, Any] = {
        "attributions": [
            {"output": "p.jpg/filter/sep", "family": "filter/sep", "baseline": "a",
             "candidate": "b", "causes": [], "advice": "set X=1 on every image"}
        ]
    }  # fmt: skip
    line = "filter/sep (1 output, a -> b): set X=1 on every image"
    assert f"- {line}" in render_markdown(report)
    assert f"<li>{line}</li>" in _attributions(report).replace("&gt;", ">")


def test_the_terminal_prints_one_advice_per_family(explained) -> None:
    import io

    from rich.console import Console

    from reprocheck.render import print_explanation

    explainer, _, _ = explained("both JSIMD_FORCENONE")
    buffer = io.StringIO()
    print_explanation(Console(file=buffer, width=200), explainer.explain(), 1.0)
    text = buffer.getvalue()
    assert "what to do" in text
    assert "pixels (1) old -> new: set JSIMD_FORCENONE=1 on every image" in text


# --------------------------------------------------------------------------- stage libraries


def _maps(monkeypatch: pytest.MonkeyPatch, *sets: set[str]) -> None:
    """``mapped_libraries`` answers each of ``sets`` in turn (then the last one again)."""
    from reprocheck.harness import reprocheck_probe

    answers = list(sets)

    def mapped() -> set[str]:
        return set(answers.pop(0) if len(answers) > 1 else answers[0])

    monkeypatch.setattr(reprocheck_probe, "mapped_libraries", mapped)


def test_a_callable_records_what_each_stage_loaded(tmp_path, monkeypatch) -> None:
    from reprocheck.explain.stages import stage_libraries
    from reprocheck.harness import reprocheck_probe

    imported = {LIBC, BLAS}  # mapped before the fixture began: no stage's
    _maps(monkeypatch, imported, imported | {JPEG_NEW}, imported | {JPEG_NEW},
          imported | {JPEG_NEW, PNG})  # fmt: skip
    reprocheck_probe.begin("x.jpg")
    reprocheck_probe.record("decoded", np.zeros(2))
    reprocheck_probe.record("gray", np.zeros(2))
    reprocheck_probe.record("decoded", np.ones(2))
    reprocheck_probe.end(str(tmp_path / "probes"))
    assert stage_libraries(tmp_path, "x.jpg") == {
        "decoded": (JPEG_NEW,), "gray": (), "decoded#2": (PNG,),
    }  # fmt: skip
    assert set(np.load(tmp_path / "probes" / "x.jpg.npz")) == {
        "000:decoded", "001:gray", "002:decoded#2",
    }  # fmt: skip


def test_a_commands_processes_record_what_each_stage_loaded(tmp_path, monkeypatch) -> None:
    from reprocheck.explain.stages import stage_libraries
    from reprocheck.harness import reprocheck_probe

    monkeypatch.setattr(reprocheck_probe, "_current", None)
    monkeypatch.setattr(reprocheck_probe, "_mapped", set())
    monkeypatch.setenv(reprocheck_probe.RECORDS_ENV, str(tmp_path / ".probe-records"))
    _maps(monkeypatch, {LIBC}, {LIBC, BLAS})
    reprocheck_probe.record("load", np.zeros(2))
    reprocheck_probe.record("load", np.zeros(2))
    # a process's first record counts everything it mapped; the stage names follow the
    # joined probes' (a stage recorded again is name#2)
    assert stage_libraries(tmp_path, "all") == {"load": (LIBC,), "load#2": (BLAS,)}


@pytest.mark.parametrize("text", [None, "{not json", '{"stages": [1]}', '"text"'])
def test_stage_libraries_of_runs_without_them_are_unknown(tmp_path, text) -> None:
    from reprocheck.explain.stages import loaded_at, stage_libraries

    if text is not None:
        (tmp_path / "probes").mkdir()
        (tmp_path / "probes" / "x.jpg.libraries.json").write_text(text)
    assert stage_libraries(tmp_path, "x.jpg") is None
    assert loaded_at(tmp_path, tmp_path, "x.jpg", ("decoded", "...")) is None


def test_a_linked_libraries_file_is_not_followed(tmp_path) -> None:
    from reprocheck.explain.stages import stage_libraries

    (tmp_path / "elsewhere.json").write_text('{"stages": {"decoded": ["/x.so.1"]}}')
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "x.jpg.libraries.json").symlink_to(tmp_path / "elsewhere.json")
    assert stage_libraries(tmp_path, "x.jpg") is None


def test_loaded_at_joins_both_sides_of_the_first_divergent_stage(tmp_path) -> None:
    from reprocheck.explain.stages import loaded_at

    for side, library in (("a", JPEG_OLD), ("b", JPEG_NEW)):
        (tmp_path / side / "probes").mkdir(parents=True)
        stages = {"decoded": [library], "gray": []}
        (tmp_path / side / "probes" / "x.jpg.libraries.json").write_text(
            json.dumps({"stages": stages})
        )
    assert loaded_at(tmp_path / "a", tmp_path / "b", "x.jpg", ("decoded", "")) == (
        JPEG_OLD, JPEG_NEW,
    )  # fmt: skip
    assert loaded_at(tmp_path / "a", tmp_path / "b", "x.jpg", ("gray", "")) == ()
    assert loaded_at(tmp_path / "a", tmp_path / "b", "x.jpg", None) is None


@pytest.mark.parametrize(
    ("words", "loads", "first"),
    [
        # the stage loaded libjpeg: it ranks first whatever the names say
        ("x/python_sum other", (JPEG_OLD,), "libjpeg62-turbo"),
        # the stage loaded nothing of a differing package: the interpreter, whatever the names
        ("x.jpg/decode/pixels decoded", (), "python3.13"),
        ("x.jpg/decode/pixels decoded", (f"{LIB}/libunchanged.so.1",), "python3.13"),
        # not recorded: the names decide, as before
        ("x.jpg/decode/pixels decoded", None, "libjpeg62-turbo"),
        ("stats/python_sum", None, "python3.13"),
    ],
)
def test_suspects_rank_by_what_the_first_divergent_stage_loaded(
    words: str, loads: tuple[str, ...] | None, first: str
) -> None:
    ranked = suspects(PY_BASE, PY_CAND, [words], [loads])
    assert ranked[0].package == first
    cause = version_causes(words, ranked, [], loads)[0]
    assert cause.factor == first
    if loads == ():
        assert "the first divergent stage loaded no native library of any differing" in (
            cause.evidence
        )
    if loads == (JPEG_OLD,):
        assert "the first divergent stage loaded its libraries (libjpeg.so.62.3.0)" in (
            cause.evidence
        )


# --------------------------------------------------------------------------- glibc forward

GLIBC_BASE: dict[str, Any] = {**BASE, "machine": "x86_64",
                              "python": {"executable": "/usr/bin/python3"}}  # fmt: skip
LIBM = f"{LIB}/libm.so.6"
GLIBC_BASE["loaded_libraries"] = [*BASE["loaded_libraries"], LIBM]
GLIBC_BASE["library_packages"] = {**BASE["library_packages"], LIBM: "libc6"}
GLIBC_CAND: dict[str, Any] = {
    **CAND,
    "machine": "x86_64",
    "loaded_libraries": [*CAND["loaded_libraries"], LIBM, f"{LIB}/ld-linux-x86-64.so.2"],
    "library_packages": {**CAND["library_packages"], LIBM: "libc6"},
}


def _glibc_engine(*, stage_loads_libm: bool) -> LibraryEngine:
    """'old' (glibc 2.31) gives 'new's pixels when its harness starts under the glibc hybrid's
    loader; the decoded stage loaded libm on both sides (or nothing)."""
    engine = LibraryEngine()
    libm = LIBM

    def run(fingerprint: dict[str, Any], pixels: np.ndarray) -> Any:
        def behaviour(box: Mounted) -> Any:
            _harness(box, fingerprint, pixels)
            loads = [libm] if stage_loads_libm else []
            (box.meta / "probes" / "x.jpg.libraries.json").write_text(
                json.dumps({"stages": {"decoded": loads}})
            )
            return outcome(0)

        return behaviour

    def old(box: Mounted) -> Any:
        moved = box.spec.command[0].startswith("/opt/reprocheck-glibc/")
        return run(GLIBC_BASE, NEW_PIXELS if moved else OLD_PIXELS)(box)

    engine.behaviours = {"old": old, "new": run(GLIBC_CAND, NEW_PIXELS)}
    return engine


def _explain_with(engine: LibraryEngine, make_project: Any, **kwargs: Any) -> Any:
    files = {"inputs/x.jpg": "x", "pipelines/p.py": "def run(path):\n    return {}\n"}
    config = load_config(make_project(CONFIG, files))
    for env in config.environments:
        engine.add(env.image)
    run = Runner(engine, make_plan(config), run_id="run-1").run(config.reports_dir / "run-1")
    return Explainer(engine, config, run, **kwargs).explain()


def test_glibc_moved_forward_under_the_older_side_is_the_cause(make_project, no_host_ca):
    engine = _glibc_engine(stage_loads_libm=True)
    explanation = _explain_with(engine, make_project)
    first = explanation.experiments[0]  # the stage loaded libm: glibc is tried first
    assert (first.factor, first.sides, first.status) == ("libc6", "baseline", "ok")
    (attribution,) = explanation.attributions
    top = attribution.causes[0]
    assert (top.factor, top.kind, top.confidence) == ("libc6", "package", 0.95)
    assert top.evidence == (
        "old under new's glibc 2.36 (its loader, libc and libm): the output becomes "
        "bit-identical to new's"
    )
    assert attribution.advice.startswith("glibc's libm computes these differently (2.31-13 in "
                                         "old, 2.36-9 in new)")  # fmt: skip
    moved = [r for r in engine.runs if r.command[0].startswith("/opt/reprocheck-glibc/")]
    (spec,) = moved
    assert spec.command[:4] == ("/opt/reprocheck-glibc/ld-linux-x86-64.so.2", "--library-path",
                                "/opt/reprocheck-glibc", "/usr/bin/python3")  # fmt: skip
    assert spec.command[4:] == ("/opt/reprocheck/run.py", "/meta")
    assert spec.labels["io.reprocheck.environment"] == "old"
    (build,) = [b for b in engine.builds if "io.reprocheck.hybrid" in b.labels]
    assert build.labels["io.reprocheck.hybrid"] == "libc6 from new"


# --------------------------------------------------------------------------- pip distributions

PIP_BASE: dict[str, Any] = {
    "machine": "x86_64",
    "python": {"version": "3.11.2", "implementation": "CPython",
               "executable": "/opt/venv/bin/python3"},
    "loaded_libraries": [f"{SITE}/sklearn/_loss.cpython-311-x86_64-linux-gnu.so"],
    "packages": {"dpkg": {}, "pip": {"scikit-learn": "1.3.2", "numpy": "1.26.4"}},
}  # fmt: skip
PIP_CAND: dict[str, Any] = {
    **PIP_BASE,
    "packages": {"dpkg": {}, "pip": {"scikit-learn": "1.6.1", "numpy": "1.26.4"}},
}


def test_a_pip_distribution_moves_only_on_the_same_cpython() -> None:
    (sklearn,) = suspects(PIP_BASE, PIP_CAND, [])
    assert (sklearn.package, sklearn.how, sklearn.transplantable) == (
        "scikit-learn", "distribution", True,
    )  # fmt: skip
    other = {**PIP_CAND, "python": {**PIP_CAND["python"], "version": "3.12.1"}}
    (sklearn,) = [s for s in suspects(PIP_BASE, other, []) if s.package == "scikit-learn"]
    assert not sklearn.transplantable
    assert version_causes("x/labels", [sklearn], [])[0].evidence.endswith(
        "it needs the same CPython version on both sides and the distribution installed in both"
    )


def test_a_pip_distribution_transplant_that_follows_is_the_cause(make_project, no_host_ca):
    engine = LibraryEngine()

    def old(box: Mounted) -> Any:
        _harness(box, PIP_BASE, OLD_PIXELS)
        return outcome(0)

    def new(box: Mounted) -> Any:
        moved = box.spec.image in engine.hybrids()
        _harness(box, PIP_CAND, OLD_PIXELS if moved else NEW_PIXELS)
        return outcome(0)

    engine.behaviours = {"old": old, "new": new}
    explanation = _explain_with(engine, make_project)
    first = explanation.experiments[0]  # a loaded pip distribution is tried before the knobs
    assert (first.factor, first.sides, first.status) == ("scikit-learn", "candidate", "ok")
    (attribution,) = explanation.attributions
    top = attribution.causes[0]
    assert (top.factor, top.kind, top.confidence) == ("scikit-learn", "package", 0.95)
    assert top.evidence.startswith("new with the baseline's pip distribution scikit-learn 1.3.2")
    assert attribution.advice.startswith("pin scikit-learn==1.3.2 (as in old) in new's")
    (dockerfile,) = engine.dockerfiles
    assert dockerfile.startswith(f"FROM {engine.present['img/old:1'].id} AS source\n")
    assert '["/opt/venv/bin/python3", "/tmp/reprocheck-dist.py", "export", "scikit-learn"' in (
        dockerfile
    )
    assert f"FROM {engine.present['img/new:1'].id}\n" in dockerfile


def _site(root: Path, version: str, files: dict[str, str]) -> Path:
    """A site-packages folder holding distribution demo-pkg ``version`` with ``files``."""
    info = f"demo_pkg-{version}.dist-info"
    files = {**files, f"{info}/METADATA": f"Name: demo-pkg\nVersion: {version}\n"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    record = [*files, f"{info}/RECORD", "../../bin/demo", "demo_pkg/__pycache__/x.pyc"]
    (root / info / "RECORD").write_text("".join(f"{r},,\n" for r in record))
    return root


def test_dist_transplant_moves_one_distributions_files(tmp_path) -> None:
    """The in-image script: export the baseline's files, then place them instead of the
    candidate's own (files of the candidate's version alone are gone)."""
    from reprocheck.explain.transplants import DIST_SCRIPT

    old = _site(tmp_path / "old", "1.0", {"demo_pkg/__init__.py": "V = 1",
                                          "demo_pkg.libs/libx-1a.so.1": "elf"})  # fmt: skip
    new = _site(tmp_path / "new", "2.0", {"demo_pkg/__init__.py": "V = 2",
                                          "demo_pkg/extra.py": ""})  # fmt: skip
    (new / "neighbour.py").write_text("another distribution's")
    script = tmp_path / "dist.py"

    def call(site: Path, *args: str) -> None:
        script.write_bytes(DIST_SCRIPT.read_bytes())
        env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
        subprocess.run([sys.executable, "-S", str(script), *args], env=env, check=True)

    call(old, "export", "Demo_Pkg", str(tmp_path / "staged"))
    staged = {p.relative_to(tmp_path / "staged").as_posix()
              for p in (tmp_path / "staged").rglob("*") if p.is_file()}  # fmt: skip
    info = "demo_pkg-1.0.dist-info"
    assert staged == {"demo_pkg/__init__.py", "demo_pkg.libs/libx-1a.so.1",
                      f"{info}/METADATA", f"{info}/RECORD"}  # fmt: skip
    call(new, "place", "demo-pkg", str(tmp_path / "staged"))
    assert (new / "demo_pkg" / "__init__.py").read_text() == "V = 1"
    assert not (new / "demo_pkg" / "extra.py").exists()
    assert not (new / "demo_pkg-2.0.dist-info").exists()
    assert (new / "demo_pkg.libs" / "libx-1a.so.1").is_file()
    assert (new / "neighbour.py").is_file()
    assert not (tmp_path / "staged").exists()
    assert not script.exists()


# --------------------------------------------------------------------------- two CPUs


def _cpu_fingerprint(model: str, found: list[str], missing: list[str], core: str = "") -> Any:
    fp: dict[str, Any] = {"cpu": {"model": model},
                          "numpy": {"simd": {"found": found, "not_found": missing,
                                             "dispatch": ["SSE41", "AVX2", "AVX512F"]}},
                          "glibc": "2.36"}  # fmt: skip
    if core:
        fp["blas"] = {"openblas": {"/x/libscipy_openblas.so": {"corename": core}}}
    return fp


NATIVE = _cpu_fingerprint("Intel Xeon", ["SSE41", "AVX2", "AVX512F"], [], "SkylakeX")
NEHALEM = _cpu_fingerprint("x86-64-v2 (qemu-user -cpu Nehalem)", ["SSE41"],
                           ["AVX2", "AVX512F"], "Nehalem")  # fmt: skip


def test_a_cpu_difference_is_the_models_and_the_features_numpy_found() -> None:
    found = cpu_difference(NATIVE, NEHALEM)
    assert found is not None
    assert found.baseline_only == ("AVX2", "AVX512F") and found.candidate_only == ()
    assert found.describe("a", "b") == (
        "Intel Xeon in a, x86-64-v2 (qemu-user -cpu Nehalem) in b; numpy finds AVX2, AVX512F "
        "only in a"
    )
    assert cpu_difference(NATIVE, NATIVE) is None
    assert cpu_difference({}, {}) is None


def test_a_feature_only_one_numpy_knows_is_no_cpu_difference() -> None:
    """An older numpy (bullseye's) does not know AVX512_SPR: not a difference of the CPU."""
    old = _cpu_fingerprint("Intel Xeon", ["AVX2"], ["AVX512F"])
    new = _cpu_fingerprint("Intel Xeon", ["AVX2", "AVX512_SPR"], ["AVX512F"])
    assert cpu_difference(old, new) is None
    damaged = {"cpu": "not a dict", "numpy": {"simd": {"found": "AVX2"}}}
    assert cpu_difference(damaged, damaged) is None


def test_for_two_cpus_the_dispatch_knobs_come_first_and_openblas_gets_a_common_core() -> None:
    names = [name for name, _b, _c in pair_knobs(NATIVE, NEHALEM, ["x/linalg/svd"])]
    assert names[0] in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # threads fit linalg too
    cpu_first = pair_knobs(NATIVE, NEHALEM, ["x/other"], cpus_differ=True)
    names = [name for name, _b, _c in cpu_first]
    assert names[:4] == ["NPY_DISABLE_CPU_FEATURES", "GLIBC_TUNABLES", "OPENBLAS_CORETYPE",
                         "JSIMD_FORCENONE"]  # fmt: skip
    (core,) = [(b, c) for name, b, c in cpu_first if name == "OPENBLAS_CORETYPE"]
    assert core == ({"OPENBLAS_CORETYPE": "Nehalem"},) * 2  # the core both CPUs can run
    reverse = {n: c for n, _b, c in pair_knobs(NEHALEM, NATIVE, [], cpus_differ=True)}
    assert reverse["OPENBLAS_CORETYPE"] == {"OPENBLAS_CORETYPE": "Nehalem"}
    same = [n for n, _b, _c in pair_knobs(NATIVE, NATIVE, [])]
    assert "OPENBLAS_CORETYPE" not in same


NUMPY_KNOB = Experiment(kind=ExperimentKind.KNOB, factor="NPY_DISABLE_CPU_FEATURES",
                        environment="new", baseline="old",
                        env={"NPY_DISABLE_CPU_FEATURES": "AVX2 AVX512F"},
                        baseline_env={"NPY_DISABLE_CPU_FEATURES": "AVX2 AVX512F"},
                        status=Status.OK)  # fmt: skip


def test_one_image_on_two_cpus_names_the_cpu_and_the_knob_that_settles_it() -> None:
    from reprocheck.explain import attribute

    facts = dataclasses.replace(_facts("x/libm/numpy_float32"), cpus=CPUS, same_image=True)
    found = attribute(facts, [(NUMPY_KNOB, _measured("agrees", "changed"))], [])
    top, cpu = [c for c in found.causes if c.kind != "stage"][:2]
    assert (top.factor, top.kind, top.confidence) == ("NPY_DISABLE_CPU_FEATURES", "knob", 0.95)
    assert (cpu.factor, cpu.kind, cpu.confidence) == ("CPU", "cpu", 0.9)
    assert "one image on two CPUs (Intel Xeon in old, x86-64-v2" in cpu.evidence
    assert cpu.evidence.endswith(
        "the code NPY_DISABLE_CPU_FEATURES chooses by CPU feature makes the difference"
    )
    assert found.advice == (
        "NPY_DISABLE_CPU_FEATURES chooses code by CPU feature: set NPY_DISABLE_CPU_FEATURES="
        "AVX2 AVX512F on every environment to compute these outputs the same on the CPUs of "
        "old and new, or give them a tolerance that covers both"
    )
    assert not any(c.factor == "image" for c in found.causes)  # never "something unrecorded"


def test_two_dispatch_knobs_together_are_named_together() -> None:
    """numpy's AVX-512 off hands float64 exp to glibc, which picks FMA on its own: only both
    knobs together settle it, and the cause and advice name both."""
    from reprocheck.explain import attribute

    both = dataclasses.replace(
        NUMPY_KNOB, factor="NPY_DISABLE_CPU_FEATURES + GLIBC_TUNABLES",
        env={**NUMPY_KNOB.env, "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2_Usable"},
        baseline_env={**NUMPY_KNOB.baseline_env, "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2_Usable"},
    )  # fmt: skip
    facts = dataclasses.replace(_facts("x/libm/exp_f64"), cpus=CPUS, same_image=True)
    found = attribute(facts, [(NUMPY_KNOB, _measured("changed")),
                              (both, _measured("agrees", "changed"))], [])  # fmt: skip
    top = found.causes[0]
    assert (top.factor, top.kind, top.confidence) == (both.factor, "knob", 0.95)
    assert found.advice.startswith(
        "NPY_DISABLE_CPU_FEATURES + GLIBC_TUNABLES choose code by CPU feature: set "
        "NPY_DISABLE_CPU_FEATURES=AVX2 AVX512F, GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2_Usable on "
        "every environment"
    )


def test_two_cpus_without_a_settling_knob_still_say_it_is_the_cpu() -> None:
    from reprocheck.explain import attribute

    facts = dataclasses.replace(_facts("x/other", None), cpus=CPUS, same_image=True)
    found = attribute(facts, [(NUMPY_KNOB, _measured("unchanged"))], [])
    assert [(c.factor, c.confidence) for c in found.causes] == [("CPU", 0.9)]
    assert found.advice.startswith("the CPUs of old and new compute it differently")
    other_images = dataclasses.replace(facts, same_image=False)
    found = attribute(other_images, [], [_jpeg()])
    assert [c.factor for c in found.causes] == ["libjpeg62-turbo", "CPU"]
    assert found.causes[1].confidence == 0.15


def test_a_transplant_and_a_knob_that_each_moved_an_output_run_together(explained) -> None:
    """Two causes of one output (glibc's libm and numpy's own SIMD, say): each experiment
    alone moves it without settling it; the transplant with the knob on both sides settles."""
    explainer, engine, _ = explained("mixed JSIMD_FORCENONE")
    explanation = explainer.explain()
    mixed = [e for e in explanation.experiments if e.knob]
    assert [e.factor for e in mixed][:1] == ["libjpeg62-turbo + JSIMD_FORCENONE"]
    ran = mixed[0]
    assert ran.status == "ok" and ran.reference_outputs_dir is not None
    assert ran.describe().endswith(", and JSIMD_FORCENONE on both sides (JSIMD_FORCENONE=1)")
    (attribution,) = explanation.attributions
    top = attribution.causes[0]
    assert (top.factor, top.kind, top.confidence) == (
        "libjpeg62-turbo + JSIMD_FORCENONE", "package", 0.95)  # fmt: skip
    assert "the output becomes bit-identical to old with JSIMD_FORCENONE's" in top.evidence
    assert attribution.advice.startswith(
        "two causes together (libjpeg62-turbo + JSIMD_FORCENONE): pin libjpeg62-turbo at "
        "1:2.0.6-4 (as in old) and set JSIMD_FORCENONE=1 on every image"
    )
    singles = {c.factor: c.confidence for c in attribution.causes if "+" not in c.factor}
    assert singles["libjpeg62-turbo"] == 0.5 and singles["JSIMD_FORCENONE"] == 0.5
    # the other side with the knob is the knob experiment's own run, reused
    knob_runs = [
        r
        for r in engine.runs
        if "JSIMD_FORCENONE" in r.env and r.labels["io.reprocheck.environment"] == "old"
    ]
    assert len(knob_runs) == 1  # fmt: skip
