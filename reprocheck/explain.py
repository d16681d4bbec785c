"""Explain drift: attribute each drifting output to a pipeline stage and a cause, by experiment.

For every drifting pair of environments (baseline A, candidate B):

1. stage: the probes recorded inside the container (``reprocheck_probe.record``) locate the
   first stage whose value differs between A and B, per fixture (a command's probes are one
   set for the whole run, ``probes/all.npz``, used for every output);
2. candidates: packages owning the shared libraries the pipeline actually loaded in B whose
   versions differ from A's, ranked by how well they fit the drifting stages;
3. experiments, each a single-factor change rerun on the affected fixtures only, cached by
   content: a *transplant* builds a hybrid image of B with one package's libraries taken from
   A's image (same SONAME, loaded first through LD_LIBRARY_PATH); a *knob* sets one variable
   that steers numerics (threads, CPU dispatch, SIMD) in B;
4. verdict per output: an output that follows A after a transplant or knob is attributed to
   that factor (the strongest evidence); candidates whose experiment changed nothing are
   ruled out; what could not be tested remains, with lower confidence.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import io
import re
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from reprocheck.cache import files_digest, json_digest
from reprocheck.compare import Tolerance, compare_arrays
from reprocheck.config import RunConfig
from reprocheck.engine import LABEL, BuildRequest, ContainerEngine
from reprocheck.errors import OutputError
from reprocheck.images import LABEL_HYBRID, EnvironmentImage
from reprocheck.matrix import OutputComparison, build_matrix
from reprocheck.output_store import OutputFolders
from reprocheck.outputs import OutputReader, OutputRef, index_file
from reprocheck.plan import Plan
from reprocheck.progress import ProgressCallback, ProgressEvent, silent
from reprocheck.run_model import EnvironmentResult, RunResult
from reprocheck.runner import HARNESS_DIR, Runner

CauseKind = Literal["stage", "knob", "package", "version"]
# The probes of a command pipeline, which has no fixtures: <meta>/probes/all.npz
# (harness/reprocheck_probe.py's COMMAND_FIXTURE).
COMMAND_PROBES = "all"
TRANSPLANT_DIR = "/opt/reprocheck-transplant"
# Packages whose libraries cannot be mixed into another release: the C library and loader,
# the C++ runtime every library links, and the Python interpreter itself.
NOT_TRANSPLANTABLE = re.compile(r"^(libc6|libc-bin|libgcc-s1|libstdc\+\+6|libpython3.*|python3.*)$")
# Which packages plausibly explain which stages (matched against output and stage names).
HINTS: tuple[tuple[str, str], ...] = (
    (r"decod|jpe?g|imread|pixel", r"jpeg|turbo|png|libtiff|webp|imgcodecs"),
    (r"linalg|svd|eig|solve|gemm|lstsq|blas|lapack", r"blas|lapack|gfortran|numpy"),
    (r"libm|exp|log|sin|cos|tanh|pow|math|transcend|gamma|erf", r"^libc6$|numpy"),
    (r"dnn|cnn|prob|label|infer", r"opencv-dnn|protobuf|opencv-core|blas"),
    (
        r"resiz|color|hsv|lab|filter|blur|gauss|sobel|edge|canny|keypoint|orb|corner|bilateral",
        r"opencv-imgproc|opencv-core|opencv-features2d|tbb|ipp",
    ),
)


@dataclass(frozen=True, kw_only=True)
class Cause:
    factor: str
    kind: CauseKind
    evidence: str
    confidence: float  # 0..1: 0.95 an output followed a transplant, 0.3 untested version change


@dataclass(frozen=True, kw_only=True)
class Attribution:
    output: str
    baseline: str
    candidate: str
    fixture: str | None
    causes: tuple[Cause, ...]
    ruled_out: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Candidate:
    package: str
    baseline_version: str | None
    candidate_version: str | None
    libraries: tuple[str, ...]  # loaded in the candidate environment
    transplant: dict[str, str] = field(default_factory=dict)  # soname -> path in baseline image
    score: int = 0

    @property
    def transplantable(self) -> bool:
        return bool(self.transplant) and not NOT_TRANSPLANTABLE.match(self.package)


@dataclass(frozen=True, kw_only=True)
class Experiment:
    kind: Literal["knob", "transplant"]
    factor: str
    environment: str
    env: Mapping[str, str] = field(default_factory=dict)
    candidate: Candidate | None = None
    extra: tuple[Candidate, ...] = ()  # more packages transplanted together with candidate
    outputs_dir: Path | None = None
    status: str = "planned"
    cached: bool = False
    seconds: float = 0.0

    def describe(self) -> str:
        if self.kind == "transplant" and self.candidate is not None:
            parts = [
                f"{c.package} {c.baseline_version} ({', '.join(sorted(c.transplant))})"
                for c in (self.candidate, *self.extra)
            ]
            return f"{self.environment} with the baseline's libraries of {' and '.join(parts)}"
        return f"{self.environment} with {', '.join(f'{k}={v}' for k, v in self.env.items())}"


@dataclass(frozen=True, kw_only=True)
class Explanation:
    attributions: tuple[Attribution, ...]
    experiments: tuple[Experiment, ...]


# --------------------------------------------------------------------------- candidates


def soname(path: str) -> str | None:
    match = re.match(r"^(.+?\.so(?:\.\d+)?)", Path(path).name)
    return match.group(1) if match else None


def _owner(fingerprint: Mapping[str, Any], library: str) -> str | None:
    owners = fingerprint.get("library_packages") or {}
    return owners.get(library)


def _dpkg(fingerprint: Mapping[str, Any]) -> dict[str, str]:
    return dict((fingerprint.get("packages") or {}).get("dpkg") or {})


def _hint_score(package: str, words: Iterable[str]) -> int:
    score = 0
    for word in words:
        for stage_re, package_re in HINTS:
            if re.search(stage_re, word, re.I) and re.search(package_re, package):
                score += 1
    return score


def candidates(
    base: Mapping[str, Any], cand: Mapping[str, Any], words: Iterable[str]
) -> list[Candidate]:
    """Packages owning libraries loaded in ``cand`` whose version differs in ``base``."""
    base_by_soname = {soname(p) or p: p for p in base.get("loaded_libraries") or []}
    base_versions, cand_versions = _dpkg(base), _dpkg(cand)
    libs: dict[str, list[str]] = {}
    for library in cand.get("loaded_libraries") or []:
        package = _owner(cand, library)
        if package:
            libs.setdefault(package, []).append(library)
    words = list(words)
    found = []
    for package, libraries in libs.items():
        names = [s for s in map(soname, libraries) if s is not None]
        transplant = {s: base_by_soname[s] for s in names if s in base_by_soname}
        base_owner = {_owner(base, p) for p in transplant.values()} - {None}
        base_version = base_versions.get(package) or next(
            (base_versions.get(o or "") for o in base_owner), None
        )
        if base_version == cand_versions.get(package):
            continue
        found.append(
            Candidate(
                package=package,
                baseline_version=base_version,
                candidate_version=cand_versions.get(package),
                libraries=tuple(libraries),
                transplant=transplant,
                score=_hint_score(package, words),
            )
        )
    return sorted(found, key=lambda c: (-c.score, -len(c.libraries), c.package))


# --------------------------------------------------------------------------- knobs


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
    """Single-factor variable changes, ordered cheap-and-likely first."""
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


# --------------------------------------------------------------------------- stages


def _probes(meta: Path, fixture: str) -> dict[str, OutputRef]:
    """The readable probe records of one fixture, by ``<order>:<stage>``; the probes folder
    is written by the pipeline, so it is read like outputs (no links, no pickle)."""
    prefix = f"{fixture}/"
    refs = index_file(meta / "probes", f"{fixture}.npz")
    return {
        name.removeprefix(prefix): ref
        for name, ref in refs.items()
        if name.startswith(prefix) and ref.error is None and ref.kind == "npz"
    }


def _stage_order(key: str) -> tuple[int, str]:
    number = key.partition(":")[0]
    return (int(number) if number.isdigit() else 1 << 62, key)


def first_divergent_stage(
    base: Path, cand: Path, fixture: str, where: str | None = None
) -> tuple[str, str] | None:
    """(stage, evidence) for the first probe whose value differs, or None without probes;
    ``where`` names the probes in the evidence (default: the fixture)."""
    a, b = _probes(base, fixture), _probes(cand, fixture)
    if not (a and b):
        return None
    with OutputReader() as reader:
        stages = [k for k in a if k in b]
        same: list[str] = []
        for key in sorted(stages, key=_stage_order):
            try:
                result = compare_arrays(reader.load(a[key]), reader.load(b[key]), Tolerance())
            except OutputError:
                continue
            name = key.partition(":")[2]
            if result.verdict != "identical":
                detail = f"max_abs {result.max_abs}, {result.mismatched} of {result.total} differ"
                before = f"; identical before it: {', '.join(same)}" if same else ""
                return (
                    name,
                    f"first divergent recorded stage of {where or fixture}: {name} "
                    f"({detail}){before}",
                )
            same.append(name)
    return None


# --------------------------------------------------------------------------- experiments


def _fixture_of(output: str, fixtures: Iterable[str]) -> str | None:
    matches = [f for f in fixtures if output.startswith(f + "/")]
    return max(matches, key=len) if matches else None


def _pipeline_files(config: RunConfig) -> list[Path]:
    """The files an experiment's result depends on besides image and fixtures: the pipeline's
    folder for a ``file.py:function`` callable, else the project's Python files."""
    target = config.pipeline.callable or ""
    module = target.rpartition(":")[0]
    if module.endswith(".py"):
        folder = (config.root / module).parent
        return [p for p in folder.iterdir() if p.is_file()]
    return sorted(config.root.rglob("*.py"))[:2000]


class Explainer:
    """Plans and runs experiments for the drifting pairs of one stored run."""

    def __init__(
        self,
        engine: ContainerEngine,
        config: RunConfig,
        run: RunResult,
        *,
        max_experiments: int = 16,
        progress: ProgressCallback = silent,
    ) -> None:
        self._engine = engine
        self._config = config
        self._run = run
        self._budget = max_experiments
        self._progress = progress
        self._cache = config.reports_dir / ".cache" / "experiments"
        self._code = files_digest([*HARNESS_DIR.rglob("*.py"), *_pipeline_files(config)])
        self._envs = {env.name: env for env in run.environments}
        self._command = config.pipeline.command is not None
        self._outputs = OutputFolders()
        self._effects: dict[tuple[Path, str, str], str] = {}

    def explain(self, glob: str = "*") -> Explanation:
        matrix = build_matrix(self._config, self._run)
        drifting = [
            c
            for c in matrix.comparisons
            if c.verdict == "drift" and fnmatch.fnmatchcase(c.output, glob)
        ]
        by_pair: dict[tuple[str, str], list[OutputComparison]] = {}
        for item in drifting:
            by_pair.setdefault((item.baseline, item.candidate), []).append(item)
        attributions: list[Attribution] = []
        experiments: list[Experiment] = []
        for (a, b), items in by_pair.items():
            found, done = self._explain_pair(self._envs[a], self._envs[b], items)
            attributions.extend(found)
            experiments.extend(done)
        self._outputs.close()
        return Explanation(attributions=tuple(attributions), experiments=tuple(experiments))

    def _explain_pair(
        self, base: EnvironmentResult, cand: EnvironmentResult, items: list[OutputComparison]
    ) -> tuple[list[Attribution], list[Experiment]]:
        fixtures = sorted({f for i in items if (f := _fixture_of(i.output, self._fixtures(cand)))})
        stages = self._stages(base, cand, fixtures)
        words = [self._words(i.output, stages, cand) for i in items]
        ranked = candidates(base.fingerprint, cand.fingerprint, words)
        remaining = {i.output for i in items}
        done: list[Experiment] = []
        for experiment in self._plan(cand, ranked, base, items, done):
            if not remaining or len(done) >= self._budget:
                break
            ran = self._execute(experiment, base, cand, fixtures)
            if ran.status == "not_transplantable":
                continue  # the SONAME differs: nothing to test, nothing spent
            done.append(ran)
            remaining -= self._followed(ran, base, items)
        verdicts = [self._attribute(i, base, cand, stages, ranked, done) for i in items]
        return verdicts, done

    def _fixtures(self, env: EnvironmentResult) -> list[str]:
        return [f.fixture for f in env.fixtures]

    def _stages(
        self, base: EnvironmentResult, cand: EnvironmentResult, fixtures: list[str]
    ) -> dict[str, tuple[str, str] | None]:
        """The first divergent stage by probes name: per fixture, or a command's one set."""
        if self._command:
            where = "the command"
            return {COMMAND_PROBES: first_divergent_stage(base.meta_dir, cand.meta_dir,
                                                          COMMAND_PROBES, where)}  # fmt: skip
        return {f: first_divergent_stage(base.meta_dir, cand.meta_dir, f) for f in fixtures}

    def _stage(
        self, output: str, stages: Mapping[str, tuple[str, str] | None], cand: EnvironmentResult
    ) -> tuple[str, str] | None:
        probes = COMMAND_PROBES if self._command else _fixture_of(output, self._fixtures(cand))
        return stages.get(probes or "")

    def _words(
        self, output: str, stages: Mapping[str, tuple[str, str] | None], cand: EnvironmentResult
    ) -> str:
        fixture = _fixture_of(output, self._fixtures(cand))
        return _stage_words(output, fixture, self._stage(output, stages, cand))

    def _plan(
        self,
        cand: EnvironmentResult,
        ranked: list[Candidate],
        base: EnvironmentResult,
        items: list[OutputComparison],
        done: list[Experiment],
    ) -> Iterator[Experiment]:
        """Likely transplants first, then knobs, then the likely transplants that each moved an
        output without settling it, together (two libraries can share one drift), then the
        less likely transplants. ``done`` fills in as the caller runs what this yields."""
        transplants = [
            Experiment(kind="transplant", factor=c.package, environment=cand.name, candidate=c)
            for c in ranked
            if c.transplantable
        ]
        likely = [t for t in transplants if t.candidate and t.candidate.score > 0]
        yield from likely
        for name, env in knobs(cand.fingerprint):
            yield Experiment(kind="knob", factor=name, environment=cand.name, env=env)
        combined = self._combination(done, base, items)
        if combined is not None:
            yield combined
        yield from (t for t in transplants if t not in likely)

    def _combination(
        self, done: list[Experiment], base: EnvironmentResult, items: list[OutputComparison]
    ) -> Experiment | None:
        open_outputs = [
            i.output for i in items if not any(self._effect(e, base, i.output) == "follows"
                                               for e in done)
        ]  # fmt: skip
        movers = [
            e for e in done
            if e.kind == "transplant" and e.candidate is not None
            and any(self._effect(e, base, output) == "changed" for output in open_outputs)
        ][:3]  # fmt: skip
        if len(movers) < 2:
            return None
        chosen = [e.candidate for e in movers if e.candidate is not None]
        return Experiment(
            kind="transplant",
            factor=" + ".join(sorted(c.package for c in chosen)),
            environment=movers[0].environment,
            candidate=chosen[0],
            extra=tuple(chosen[1:]),
        )

    def _execute(
        self,
        experiment: Experiment,
        base: EnvironmentResult,
        cand: EnvironmentResult,
        fixtures: list[str],
    ) -> Experiment:
        """Run one experiment, or reuse its cached result: the cache key names everything the
        result depends on, so a cached experiment costs no export, build or container."""
        env_config = self._config.environment(cand.name)
        source = base.image_id if experiment.kind == "transplant" else None
        key = json_digest(experiment.kind, experiment.factor, cand.image_id, source, fixtures,
                          dict(experiment.env), self._code, self._config.pipeline.model_dump(),
                          env_config.env)  # fmt: skip
        folder = self._cache / key[:24]
        message = f"{experiment.kind} {experiment.factor}"
        self._progress(ProgressEvent(stage="explain", subject=cand.name, message=message))
        if (folder / "done").is_file():
            status = (folder / "done").read_text().strip() or "ok"
            return dataclasses.replace(
                experiment, outputs_dir=folder / "outputs", status=status, cached=True
            )
        image = self._image(experiment, base, cand)
        if image is None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "done").write_text("not_transplantable")
            return dataclasses.replace(experiment, status="not_transplantable")
        plan = Plan(config=self._config, environments=(env_config,), fixtures=tuple(fixtures))
        merged = env_config.model_copy(update={"env": {**env_config.env, **experiment.env}})
        runner = Runner(self._engine, plan, run_id=self._run.run_id)
        result = runner.run_in(merged, image, folder, 1)
        if _settled(result):
            (folder / "done").write_text(result.status)
        return dataclasses.replace(
            experiment, outputs_dir=result.outputs_dir, status=result.status, seconds=result.seconds
        )

    def _image(
        self, experiment: Experiment, base: EnvironmentResult, cand: EnvironmentResult
    ) -> EnvironmentImage | None:
        original = EnvironmentImage(
            environment=cand.name,
            ref=cand.image_ref or "",
            image_id=cand.image_id or "",
            dockerfile=None,
            architecture="",
        )
        if experiment.candidate is None:
            return original
        files: dict[str, bytes] = {}
        for candidate in (experiment.candidate, *experiment.extra):
            found = transplant_files(
                self._engine, original.image_id, base.image_id or "", candidate
            )
            if not found:
                return None
            files |= found
        origin = f"{experiment.factor} from {base.name}"
        return hybrid_image(self._engine, original, files, origin)

    def _followed(
        self, ran: Experiment, base: EnvironmentResult, items: list[OutputComparison]
    ) -> set[str]:
        return {i.output for i in items if self._effect(ran, base, i.output) == "follows"}

    def _effect(self, ran: Experiment, base: EnvironmentResult, output: str) -> str:
        """'follows' (now equals the baseline), 'changed', 'unchanged' or 'failed'."""
        if ran.outputs_dir is None or ran.status not in ("ok", "partial"):
            return "failed"
        memo = (ran.outputs_dir, base.name, output)
        if memo not in self._effects:
            self._effects[memo] = self._measure(ran.outputs_dir, base, ran.environment, output)
        return self._effects[memo]

    def _measure(self, folder: Path, base: EnvironmentResult, cand: str, output: str) -> str:
        new = self._outputs.load(folder, output)
        if new is None:
            return "failed"
        a = self._outputs.load(base.outputs_dir, output)
        b = self._outputs.load(self._envs[cand].outputs_dir, output)
        if a is not None and compare_arrays(a, new, Tolerance()).verdict == "identical":
            return "follows"
        if b is not None and compare_arrays(b, new, Tolerance()).verdict == "identical":
            return "unchanged"
        return "changed"

    def _attribute(
        self,
        item: OutputComparison,
        base: EnvironmentResult,
        cand: EnvironmentResult,
        stages: Mapping[str, tuple[str, str] | None],
        ranked: list[Candidate],
        done: list[Experiment],
    ) -> Attribution:
        fixture = _fixture_of(item.output, self._fixtures(cand))
        causes: list[Cause] = []
        stage = self._stage(item.output, stages, cand)
        if stage:
            causes.append(Cause(factor=stage[0], kind="stage", evidence=stage[1], confidence=0.9))
        ruled_out: list[str] = []
        singles = [ran for ran in done if not ran.extra]
        for ran in singles + [ran for ran in done if ran.extra]:
            if ran.extra and _settled_by_one(causes):
                continue  # a combination adds nothing where one factor alone explains it
            effect = self._effect(ran, base, item.output)
            cause = _experiment_cause(ran, effect, base.name)
            if cause is not None:
                causes.append(cause)
            elif effect == "unchanged" and ran.kind == "transplant":
                ruled_out.append(f"{ran.factor} (transplant changed nothing)")
        if not any(c.kind in ("package", "knob") and c.confidence >= 0.9 for c in causes):
            words = self._words(item.output, stages, cand)
            causes.extend(_untested(words, ranked, done))
            causes.extend(component_causes(words, base, cand, causes))
        causes.sort(key=lambda c: -c.confidence)
        return Attribution(
            output=item.output,
            baseline=item.baseline,
            candidate=item.candidate,
            fixture=fixture,
            causes=tuple(causes),
            ruled_out=tuple(ruled_out),
        )


def _settled(result: EnvironmentResult) -> bool:
    """An outcome worth caching: the harness ran and reported, even if the pipeline failed
    (a transplanted library missing its own dependencies fails the same way every time).
    Crashes, timeouts, OOM kills and engine refusals may be transient: not cached."""
    reported = (result.meta_dir / "status.json").is_file()
    return result.status in ("ok", "partial") or (result.status == "error" and reported)


def _settled_by_one(causes: list[Cause]) -> bool:
    return any(c.kind in ("package", "knob") and c.confidence >= 0.9 for c in causes)


def _experiment_cause(ran: Experiment, effect: str, base: str) -> Cause | None:
    what = ran.describe()
    if effect == "follows":
        kind: CauseKind = "package" if ran.kind == "transplant" else "knob"
        evidence = f"{what}: the output becomes bit-identical to {base}'s"
        return Cause(factor=ran.factor, kind=kind, evidence=evidence, confidence=0.95)
    if effect == "changed":
        kind = "package" if ran.kind == "transplant" else "knob"
        evidence = f"{what}: the output changes but does not match {base}'s"
        return Cause(factor=ran.factor, kind=kind, evidence=evidence, confidence=0.5)
    return None


def _stage_words(output: str, fixture: str | None, stage: tuple[str, str] | None) -> str:
    """What hints match against: the output's name without its fixture (a fixture called
    'x.jpg' says nothing about a libm output) and its first divergent stage."""
    name = output[len(fixture) + 1 :] if fixture is not None else output
    return name + (f" {stage[0]}" if stage else "")


def _untested(words: str, ranked: list[Candidate], done: list[Experiment]) -> list[Cause]:
    """Candidates that fit the output but could not be (or were not) tested."""
    ran = {e.factor: e for e in done}
    causes = []
    for c in ranked:
        experiment = ran.get(c.package)
        broken = experiment is not None and experiment.status not in ("ok", "partial")
        if (experiment is not None and not broken) or _hint_score(c.package, [words]) == 0:
            continue
        if experiment is not None and broken:
            why = f"its transplant does not run in the candidate ({experiment.status})"
        else:
            why = "cannot be transplanted" if not c.transplantable else "not tried (budget)"
        evidence = (
            f"{c.package} differs ({c.baseline_version} -> {c.candidate_version}), "
            f"its libraries are loaded by the pipeline; {why}"
        )
        causes.append(Cause(factor=c.package, kind="version", evidence=evidence, confidence=0.3))
    return causes[:3]


# Components every fingerprint names, and the stages each can move.
COMPONENTS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("numpy", ("numpy", "version"), r"libm|linalg|svd|eig|solve|gemm|exp|log|float|transcend"),
    ("cv2", ("cv2", "version"), r"decod|resiz|color|filter|edge|keypoint|dnn|canny|orb|corner"),
    ("glibc", ("glibc",), r"libm|exp|log|sin|math|transcend|gamma|erf"),
)


def _component_version(fingerprint: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    value: Any = fingerprint
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return str(value) if value is not None else None


def component_causes(
    output: str, base: EnvironmentResult, cand: EnvironmentResult, found: list[Cause]
) -> list[Cause]:
    """Version changes of numpy, OpenCV and glibc that fit the output, when no experiment
    settled it: the fallback for libraries that no transplant can test (a pip wheel's own
    bundled libraries, glibc, a different SONAME)."""
    named = {c.factor for c in found} | (
        {"glibc"} if any(c.factor == "libc6" for c in found) else set()
    )
    causes = []
    for name, path, stages in COMPONENTS:
        old = _component_version(base.fingerprint, path)
        new = _component_version(cand.fingerprint, path)
        if old == new or name in named or not re.search(stages, output, re.I):
            continue
        evidence = (
            f"{name} {old} in {base.name}, {new} in {cand.name}; not testable by transplant "
            "(bundled in a wheel, the C library, or another SONAME)"
        )
        causes.append(Cause(factor=name, kind="version", evidence=evidence, confidence=0.25))
    return causes


# --------------------------------------------------------------------------- hybrid images


def elf_soname(data: bytes) -> str | None:
    """DT_SONAME of a shared library (pyelftools), or None when it has none or is not ELF."""
    try:
        elf = ELFFile(io.BytesIO(data))
        dynamic = elf.get_section_by_name(".dynamic")
        tags = dynamic.iter_tags() if isinstance(dynamic, DynamicSection) else []
        return next(
            (str(getattr(t, "soname", "")) for t in tags if t.entry.d_tag == "DT_SONAME"), None
        )
    except ELFError:
        return None


def transplant_files(
    engine: ContainerEngine, target_id: str, source_id: str, candidate: Candidate
) -> dict[str, bytes]:
    """SONAME -> the source image's library, for the libraries whose SONAME matches the
    target's own (a library under another SONAME would not be loaded in its place)."""
    mine = engine.export_files(target_id, candidate.libraries)
    theirs = engine.export_files(source_id, tuple(candidate.transplant.values()))
    wanted = {elf_soname(data) for data in mine.values()} - {None}
    found = {elf_soname(data): data for data in theirs.values()}
    return {name: data for name, data in found.items() if name in wanted and name is not None}


def hybrid_image(
    engine: ContainerEngine, target: EnvironmentImage, files: Mapping[str, bytes], origin: str
) -> EnvironmentImage:
    """``target``'s image with ``files`` (SONAME -> library) loaded first."""
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    digest = json_digest(target.image_id, hashes)
    tag = f"reprocheck/hybrid:{digest[:16]}"
    existing = engine.image(tag)
    if existing is None:
        with _hybrid_context(target.image_id, files) as tarball:
            labels = {LABEL: "1", LABEL_HYBRID: origin}
            request = BuildRequest(context_tar=tarball, tag=tag, labels=labels)
            existing = engine.build(request, lambda _line: None)
    return dataclasses.replace(target, ref=tag, image_id=existing.id)


@contextmanager
def _hybrid_context(base_id: str, files: Mapping[str, bytes]) -> Iterator[Path]:
    dockerfile = (
        f"FROM {base_id}\nCOPY transplant/ {TRANSPLANT_DIR}/\n"
        f"ENV LD_LIBRARY_PATH={TRANSPLANT_DIR}\n"
    )
    with tempfile.TemporaryDirectory(prefix="reprocheck-hybrid-") as tmp:
        tarball = Path(tmp) / "context.tar"
        with tarfile.open(tarball, "w") as tar:
            _add(tar, "Dockerfile", dockerfile.encode())
            for name, data in files.items():
                _add(tar, f"transplant/{name}", data)
        yield tarball


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o755
    tar.addfile(info, io.BytesIO(data))


def attributions_json(explanation: Explanation) -> list[dict[str, Any]]:
    return [dataclasses.asdict(a) for a in explanation.attributions]


def experiments_json(explanation: Explanation) -> list[dict[str, Any]]:
    return [
        {
            "kind": e.kind,
            "factor": e.factor,
            "environment": e.environment,
            "description": e.describe(),
            "status": e.status,
            "cached": e.cached,
            "seconds": e.seconds,
        }
        for e in explanation.experiments
    ]
