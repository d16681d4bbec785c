"""Suspects: the version changes between a pair's fingerprints that may explain its drift.

Three sources, one :class:`Suspect` each:

* Debian packages owning shared libraries the candidate's pipeline loaded, whose version
  differs from the baseline's (a package renamed between releases takes the version of the
  baseline package owning the library of the same SONAME);
* the interpreter: CPython's version (and the ``python3.X`` package's), which owns the
  builtins, ``math``, ``statistics`` and the ``lib-dynload`` modules;
* pip distributions of the fingerprint whose version differs (not those a Debian package
  installed), with the libraries loaded from their folders or bundled ``.libs``.

Each is scored against words (output names and first divergent stages) by :data:`HINTS`, and
against what the first divergent stage loaded where the probes recorded it: a suspect whose
libraries that stage loaded fits it best; a stage that loaded no native library of any
differing package computed with what was loaded before it, so the interpreter fits it (where
that is not recorded, the interpreter fits outputs and stages named like pure Python).

glibc (``libc6``) moves forward (the older side under the newer glibc) when both versions are
known and differ on one architecture; a pip distribution moves when both sides have it and the
same CPython ABI.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from reprocheck.explain.model import CpuDifference, Suspect, SuspectKind, Transplant

# Which packages plausibly explain which stages (matched against output and stage names).
HINTS: tuple[tuple[str, str], ...] = (
    (r"decod|jpe?g|imread|pixel|webp|png|tiff", r"jpeg|turbo|png|libtiff|webp|imgcodecs"),
    (
        r"linalg|svd|eig|solve|gemm|lstsq|blas|lapack|dot|matmul|kmeans|cluster",
        r"blas|lapack|gfortran|numpy|scikit|sklearn|scipy",
    ),
    (r"libm|exp|log|sin|cos|tanh|pow|math|transcend|gamma|erf", r"^libc6$|numpy"),
    (r"libm|glibc|ctypes", r"^libc6$"),  # the C library's own libm, however it is called
    (r"dnn|cnn|prob|label|infer", r"opencv-dnn|protobuf|opencv-core|opencv-python|blas"),
    (
        r"resiz|color|hsv|lab|filter|blur|gauss|sobel|edge|canny|keypoint|orb|corner|bilateral"
        r"|sift|brisk|homograph|affine|flow|warp|pyr|remap|morph",
        r"opencv-imgproc|opencv-core|opencv-features2d|opencv-calib3d|opencv-video|opencv-python"
        r"|tbb|ipp",
    ),
    (r"label|cluster|kmeans|predict|fit|score", r"scikit|sklearn|scipy"),
)
# Outputs and stages computed by the interpreter itself (builtins, math, statistics): the
# interpreter ranks first for them. Without per-stage loaded libraries this is read from
# the output's and stage's names.
PURE_PYTHON = re.compile(
    r"pure|python|builtin|statistic|stdev|hypot|\bdist|fsum|\bsum\b|math_module|fractions|decimal",
    re.I,
)
PURE_PYTHON_BONUS = 2
# A suspect whose libraries the first divergent stage loaded.
STAGE_LOADED_BONUS = 3
# The C library: moved forward as a whole (loader, libc, libm), never by SONAME.
GLIBC_PACKAGE = "libc6"
# Debian packages of the interpreter: folded into one interpreter suspect.
INTERPRETER_PACKAGE = re.compile(r"^(lib)?python3\.\d+(-[a-z]+)?$")
# pip's own tooling never computes a pipeline's numbers.
TOOLING = frozenset({"pip", "setuptools", "wheel"})
# Distributions whose import name is not their project name.
IMPORT_NAMES: dict[str, tuple[str, ...]] = {
    "opencv": ("cv2",),
    "scikit-learn": ("sklearn", "scikit_learn"),
    "scikit-image": ("skimage", "scikit_image"),
    "pillow": ("PIL", "pillow"),
}


def soname(path: str) -> str | None:
    match = re.match(r"^(.+?\.so(?:\.\d+)?)", Path(path).name)
    return match.group(1) if match else None


def hint_score(package: str, words: Iterable[str]) -> int:
    score = 0
    for word in words:
        for stage_re, package_re in HINTS:
            if re.search(stage_re, word, re.I) and re.search(package_re, package):
                score += 1
    return score


StageLoads = tuple[str, ...] | None  # what a first divergent stage loaded; None: unknown


def loaded_by(suspect: Suspect, libraries: Iterable[str]) -> tuple[str, ...]:
    """The libraries of ``suspect`` among ``libraries`` (either side's paths: by path or
    by SONAME)."""
    mine = {soname(p) or p for p in suspect.libraries} | set(suspect.libraries)
    return tuple(sorted({p for p in libraries if p in mine or (soname(p) or p) in mine}))


def native_loaded(suspects: Iterable[Suspect], libraries: Iterable[str]) -> bool:
    """Whether ``libraries`` hold a native library of a differing package or distribution
    (the interpreter's own modules do not count)."""
    libraries = tuple(libraries)
    return any(loaded_by(s, libraries) for s in suspects if s.kind is not SuspectKind.INTERPRETER)


def stage_fit(suspect: Suspect, loads: StageLoads, suspects: Iterable[Suspect]) -> int:
    """How well ``suspect`` fits what a first divergent stage loaded (0 when unknown)."""
    if loads is None:
        return 0
    if loaded_by(suspect, loads):
        return STAGE_LOADED_BONUS
    if suspect.kind is SuspectKind.INTERPRETER and not native_loaded(suspects, loads):
        return PURE_PYTHON_BONUS
    return 0


def fit(
    suspect: Suspect,
    words: Iterable[str],
    loads: Iterable[StageLoads] = (),
    suspects: Iterable[Suspect] = (),
) -> int:
    """How well ``suspect`` fits the outputs and stages ``words`` name and what their first
    divergent stages loaded (``loads``, one per word where known); the interpreter fits
    stages that loaded no native library of a differing package, or where that is not
    recorded, outputs and stages named like what only the interpreter computes."""
    words, loads, suspects = list(words), list(loads), list(suspects)
    loads += [None] * (len(words) - len(loads))
    score = hint_score(suspect.package, words)
    for word, load in zip(words, loads, strict=False):
        if load is not None:
            score += stage_fit(suspect, load, suspects)
        elif suspect.kind is SuspectKind.INTERPRETER and PURE_PYTHON.search(word):
            score += PURE_PYTHON_BONUS
    return score


def _owner(fingerprint: Mapping[str, Any], library: str) -> str | None:
    owners = fingerprint.get("library_packages") or {}
    owner = owners.get(library)
    return owner if isinstance(owner, str) else None


def _packages(fingerprint: Mapping[str, Any], manager: str) -> dict[str, str]:
    packages = fingerprint.get("packages") or {}
    found = packages.get(manager) if isinstance(packages, dict) else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _loaded(fingerprint: Mapping[str, Any]) -> list[str]:
    libraries = fingerprint.get("loaded_libraries")
    return [str(p) for p in libraries] if isinstance(libraries, list) else []


def suspects(
    base: Mapping[str, Any],
    cand: Mapping[str, Any],
    words: Iterable[str],
    loads: Iterable[StageLoads] = (),
) -> list[Suspect]:
    """Every suspect of the pair, best fitting ``words`` (and what their first divergent
    stages loaded, ``loads``, one per word) first."""
    words, loads = list(words), list(loads)
    found = [
        *library_suspects(base, cand),
        *interpreter_suspects(base, cand),
        *distribution_suspects(base, cand),
    ]
    scored = [dataclasses.replace(s, score=fit(s, words, loads, found)) for s in found]
    return sorted(scored, key=lambda s: (-s.score, -len(s.libraries), s.package))


def glibc_version(fingerprint: Mapping[str, Any]) -> tuple[int, int] | None:
    """glibc's (major, minor), or None for another C library or a failed probe."""
    match = re.match(r"(\d+)\.(\d+)", str(fingerprint.get("glibc") or ""))
    return (int(match[1]), int(match[2])) if match else None


def _same_machine(base: Mapping[str, Any], cand: Mapping[str, Any]) -> bool:
    return str(base.get("machine") or "") == str(cand.get("machine") or "")


def glibc_moves(base: Mapping[str, Any], cand: Mapping[str, Any]) -> bool:
    """glibc can be moved forward: both versions known, different, one architecture."""
    old, new = glibc_version(base), glibc_version(cand)
    return old is not None and new is not None and old != new and _same_machine(base, cand)


def _python_xy(fingerprint: Mapping[str, Any]) -> str | None:
    match = re.match(r"\d+\.\d+", _python_version(fingerprint) or "")
    return match[0] if match else None


def same_abi(base: Mapping[str, Any], cand: Mapping[str, Any]) -> bool:
    """Both run the same CPython X.Y on one architecture: a pip distribution built for one
    loads in the other."""
    xy = {_python_xy(f) for f in (base, cand)}
    implementations = {str((f.get("python") or {}).get("implementation") or "CPython")
                       for f in (base, cand)}  # fmt: skip
    return (
        len(xy) == 1
        and None not in xy
        and implementations == {"CPython"}
        and (_same_machine(base, cand))
    )


def library_suspects(base: Mapping[str, Any], cand: Mapping[str, Any]) -> list[Suspect]:
    """Packages owning libraries loaded in ``cand`` whose version differs in ``base``."""
    base_by_soname = {soname(p) or p: p for p in _loaded(base)}
    base_versions, cand_versions = _packages(base, "dpkg"), _packages(cand, "dpkg")
    libs: dict[str, list[str]] = {}
    for library in _loaded(cand):
        package = _owner(cand, library)
        if package and not INTERPRETER_PACKAGE.match(package):
            libs.setdefault(package, []).append(library)
    found = []
    for package, libraries in libs.items():
        names = [s for s in map(soname, libraries) if s is not None]
        transplant = {s: base_by_soname[s] for s in names if s in base_by_soname}
        base_owner = {_owner(base, p) for p in transplant.values()} - {None}
        base_version = base_versions.get(package) or next(
            (base_versions.get(o or "") for o in sorted(o or "" for o in base_owner)), None
        )
        if base_version == cand_versions.get(package):
            continue
        glibc = package == GLIBC_PACKAGE and glibc_moves(base, cand)
        found.append(
            Suspect(
                package=package,
                baseline_version=base_version,
                candidate_version=cand_versions.get(package),
                libraries=tuple(libraries),
                transplant=transplant,
                movable=Transplant.GLIBC if glibc else None,
            )
        )
    return found


def _python_version(fingerprint: Mapping[str, Any]) -> str | None:
    python = fingerprint.get("python")
    version = python.get("version") if isinstance(python, dict) else None
    return str(version) if version else None


def _interpreter_package(fingerprint: Mapping[str, Any]) -> str | None:
    """``python3.X`` of the fingerprint's CPython version."""
    match = re.match(r"(\d+)\.(\d+)", _python_version(fingerprint) or "")
    return f"python{match[1]}.{match[2]}" if match else None


def _interpreter_version(fingerprint: Mapping[str, Any]) -> str | None:
    """CPython's version, with the Debian package's when the interpreter is Debian's."""
    version = _python_version(fingerprint)
    package = _interpreter_package(fingerprint)
    packaged = _packages(fingerprint, "dpkg").get(package or "")
    return f"{version} ({package} {packaged})" if version and packaged else version


def interpreter_suspects(base: Mapping[str, Any], cand: Mapping[str, Any]) -> list[Suspect]:
    """CPython, when its version (or its Debian package's) differs."""
    old, new = _interpreter_version(base), _interpreter_version(cand)
    package = _interpreter_package(cand)
    if package is None or old == new:
        return []
    libraries = tuple(p for p in _loaded(cand) if INTERPRETER_PACKAGE.match(_owner(cand, p) or "-"))
    return [
        Suspect(
            package=package,
            baseline_version=old,
            candidate_version=new,
            libraries=libraries,
            kind=SuspectKind.INTERPRETER,
        )
    ]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _import_names(distribution: str) -> tuple[str, ...]:
    for prefix, names in IMPORT_NAMES.items():
        if distribution == prefix or distribution.startswith(prefix + "-"):
            return names
    return (distribution.replace("-", "_"),)


def _from_debian(distribution: str, *fingerprints: Mapping[str, Any]) -> bool:
    """A distribution a Debian package installed (python3-numpy's numpy): that package is
    the library suspect already."""
    names = {f"python3-{distribution}", f"python3-{distribution.removeprefix('python-')}"}
    return any(names & set(_packages(f, "dpkg")) for f in fingerprints)


def _distribution_libraries(distribution: str, loaded: Iterable[str]) -> tuple[str, ...]:
    folders = [
        f"/{name}{suffix}" for name in _import_names(distribution) for suffix in ("/", ".libs/")
    ]
    return tuple(p for p in loaded if "-packages/" in p and any(f in p for f in folders))


def distribution_suspects(base: Mapping[str, Any], cand: Mapping[str, Any]) -> list[Suspect]:
    """pip distributions of ``cand`` whose version differs from ``base``'s."""
    old = {_normalise(k): v for k, v in _packages(base, "pip").items()}
    new = {_normalise(k): v for k, v in _packages(cand, "pip").items()}
    abi = same_abi(base, cand)
    found = []
    for name, version in sorted(new.items()):
        if name in TOOLING or old.get(name) == version or _from_debian(name, base, cand):
            continue
        movable = abi and old.get(name) is not None
        found.append(
            Suspect(
                package=name,
                baseline_version=old.get(name),
                candidate_version=version,
                libraries=_distribution_libraries(name, _loaded(cand)),
                kind=SuspectKind.DISTRIBUTION,
                movable=Transplant.DISTRIBUTION if movable else None,
            )
        )
    return found


def _cpu_model(fingerprint: Mapping[str, Any]) -> str:
    cpu = fingerprint.get("cpu")
    return str(cpu.get("model") or "unknown") if isinstance(cpu, Mapping) else "unknown"


def numpy_features(fingerprint: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The CPU features numpy found, and every feature it knows (found or not)."""
    numpy = fingerprint.get("numpy")
    simd = numpy.get("simd") if isinstance(numpy, Mapping) else None
    if not isinstance(simd, Mapping):
        return set(), set()
    found, missing = simd.get("found"), simd.get("not_found")
    found = {str(f) for f in found} if isinstance(found, list) else set()
    missing = {str(f) for f in missing} if isinstance(missing, list) else set()
    return found, found | missing


def cpu_difference(base: Mapping[str, Any], cand: Mapping[str, Any]) -> CpuDifference | None:
    """How the pair's CPUs differ as their pipelines saw them (the model the fingerprint
    records, an emulated one included, and the CPU features numpy found, of those both
    sides' numpy know), or None when they are one CPU."""
    models = _cpu_model(base), _cpu_model(cand)
    (found_a, known_a), (found_b, known_b) = numpy_features(base), numpy_features(cand)
    known = known_a & known_b
    only_a, only_b = (found_a - found_b) & known, (found_b - found_a) & known
    if models[0] == models[1] and not only_a and not only_b:
        return None
    return CpuDifference(baseline_model=models[0], candidate_model=models[1],
                         baseline_only=tuple(sorted(only_a)),
                         candidate_only=tuple(sorted(only_b)))  # fmt: skip
