"""The cached experiment runner: each side of an experiment is one container run of the
affected fixtures, cached by content under ``reports/.cache/experiments``.

A side's cache key names everything its outputs depend on: which side ran (baseline or
candidate) in which environment, the image (and a transplant's source image), the variables,
the fixtures, the harness and pipeline code and the environment's configuration. So the
baseline side of a knob is reused by every candidate paired with that baseline.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from reprocheck.cache import files_digest, json_digest
from reprocheck.config import RunConfig
from reprocheck.engine import ContainerEngine
from reprocheck.errors import ReprocheckError
from reprocheck.explain.model import Experiment, ExperimentKind, Sides, Status, Transplant
from reprocheck.explain.transplants import (
    LoaderEngine,
    distribution_hybrid,
    glibc_files,
    glibc_hybrid,
    hybrid_image,
    loader_command,
    python_executable,
    transplant_files,
)
from reprocheck.images import EnvironmentImage
from reprocheck.plan import environment_plan
from reprocheck.progress import ProgressCallback, ProgressEvent
from reprocheck.run_model import USABLE, EnvironmentResult, RunResult
from reprocheck.runner import HARNESS_DIR, Runner


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """What one side runs in: its image (a hybrid for a transplant) and the engine to run
    it with (one that starts the harness under another glibc's loader, for glibc)."""

    image: EnvironmentImage
    engine: ContainerEngine


@dataclass(frozen=True, kw_only=True)
class SideRun:
    outputs_dir: Path | None
    status: Status
    cached: bool
    seconds: float


def _pipeline_files(config: RunConfig) -> list[Path]:
    """The files an experiment's result depends on besides image and fixtures: the pipeline's
    folder for a ``file.py:function`` callable, else the project's Python files."""
    target = config.pipeline.callable or ""
    module = target.rpartition(":")[0]
    if module.endswith(".py"):
        folder = (config.root / module).parent
        return [p for p in folder.iterdir() if p.is_file()]
    return sorted(config.root.rglob("*.py"))[:2000]


def _original(env: EnvironmentResult) -> EnvironmentImage:
    return EnvironmentImage(
        environment=env.name,
        ref=env.image_ref or "",
        image_id=env.image_id or "",
        dockerfile=None,
        architecture="",
    )


def _settled(result: EnvironmentResult) -> bool:
    """An outcome worth caching: the harness ran and reported, even if the pipeline failed
    (a transplanted library missing its own dependencies fails the same way every time).
    Crashes, timeouts, OOM kills and engine refusals may be transient: not cached."""
    reported = (result.meta_dir / "status.json").is_file()
    return result.status in USABLE or (result.status == "error" and reported)


class ExperimentRunner:
    """Runs the sides of experiments, each at most once per content."""

    def __init__(
        self,
        engine: ContainerEngine,
        config: RunConfig,
        run: RunResult,
        progress: ProgressCallback,
    ) -> None:
        self._engine = engine
        self._config = config
        self._run = run
        self._progress = progress
        self._cache = config.reports_dir / ".cache" / "experiments"
        self._code = files_digest([*HARNESS_DIR.rglob("*.py"), *_pipeline_files(config)])

    def execute(
        self,
        experiment: Experiment,
        base: EnvironmentResult,
        cand: EnvironmentResult,
        fixtures: list[str],
    ) -> Experiment:
        """Run ``experiment``'s sides (or reuse their cached results)."""
        if experiment.sides is not Sides.BOTH:  # a transplant: one side, from the other
            changed, other = (base, cand) if experiment.sides is Sides.BASELINE else (cand, base)
            ran = self._side(experiment.sides, experiment, changed, other, fixtures)
            found = dataclasses.replace(experiment, outputs_dir=ran.outputs_dir,
                                        status=ran.status, cached=ran.cached,
                                        seconds=ran.seconds)  # fmt: skip
            return self._with_knob(found, other, fixtures) if experiment.knob else found
        theirs = self._side("baseline", experiment, base, None, fixtures)
        mine = self._side("candidate", experiment, cand, None, fixtures)
        return dataclasses.replace(
            experiment, outputs_dir=mine.outputs_dir,
            baseline_outputs_dir=theirs.outputs_dir if theirs.status.ran else None,
            status=mine.status, cached=mine.cached and theirs.cached,
            seconds=mine.seconds + theirs.seconds,
        )  # fmt: skip

    def _with_knob(
        self, experiment: Experiment, other: EnvironmentResult, fixtures: list[str]
    ) -> Experiment:
        """A transplant with a knob: the other side runs with the knob too (as the knob's own
        experiment ran it, so that run is reused)."""
        knob = Experiment(kind=ExperimentKind.KNOB, factor=experiment.knob,
                          environment=experiment.environment, baseline=experiment.baseline,
                          env=experiment.env, baseline_env=experiment.baseline_env)  # fmt: skip
        side = Sides.CANDIDATE if experiment.sides is Sides.BASELINE else Sides.BASELINE
        theirs = self._side(side, knob, other, None, fixtures)
        return dataclasses.replace(
            experiment,
            reference_outputs_dir=theirs.outputs_dir if theirs.status.ran else None,
            status=experiment.status if theirs.status.ran else theirs.status,
            cached=experiment.cached and theirs.cached,
            seconds=experiment.seconds + theirs.seconds,
        )

    def _side(
        self,
        side: str,
        experiment: Experiment,
        env: EnvironmentResult,
        source: EnvironmentResult | None,
        fixtures: list[str],
    ) -> SideRun:
        """One side: ``env``'s image (with ``source``'s libraries for a transplant) and the
        side's variables."""
        variables = experiment.baseline_env if side == "baseline" else experiment.env
        plan = environment_plan(self._config, env.name, tuple(fixtures))
        (env_config,) = plan.environments
        how = experiment.suspect.how if experiment.suspect else None
        key = json_digest(side, env.name, experiment.kind, experiment.factor, env.image_id,
                          source.image_id if source else None, fixtures, dict(variables),
                          self._code, self._config.pipeline.model_dump(),
                          env_config.env, how)  # fmt: skip
        folder = self._cache / key[:24]
        message = f"{experiment.kind} {experiment.factor} ({side})"
        self._progress(ProgressEvent(stage="explain", subject=env.name, message=message))
        if (folder / "done").is_file():
            status = _status((folder / "done").read_text().strip() or "ok")
            return SideRun(outputs_dir=folder / "outputs", status=status, cached=True, seconds=0)
        try:
            prepared = self._prepare(experiment, env, source)
        except ReprocheckError as exc:  # a hybrid that does not build cannot be tried
            why = f"{message}: not transplantable: {exc}"
            self._progress(ProgressEvent(stage="explain", subject=env.name, message=why))
            prepared = None
        if prepared is None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "done").write_text(Status.NOT_TRANSPLANTABLE)
            return SideRun(outputs_dir=None, status=Status.NOT_TRANSPLANTABLE, cached=False,
                           seconds=0)  # fmt: skip
        merged = env_config.model_copy(update={"env": {**env_config.env, **variables}})
        runner = Runner(prepared.engine, plan, run_id=self._run.run_id)
        result = runner.run_in(merged, prepared.image, folder, 1)
        if _settled(result):
            (folder / "done").write_text(result.status)
        return SideRun(outputs_dir=result.outputs_dir, status=Status(result.status),
                       cached=False, seconds=result.seconds)  # fmt: skip

    def _prepare(
        self, experiment: Experiment, env: EnvironmentResult, source: EnvironmentResult | None
    ) -> Prepared | None:
        """The image (and engine) ``env``'s side of ``experiment`` runs in; None when the
        transplant finds nothing to move."""
        original = _original(env)
        suspect = experiment.suspect
        if experiment.kind is ExperimentKind.KNOB or source is None or suspect is None:
            return Prepared(image=original, engine=self._engine)
        origin = _origin(experiment, source)
        match suspect.how:
            case Transplant.GLIBC:
                files = glibc_files(self._engine, source.image_id or "", source.fingerprint)
                if not files:
                    return None
                prefix = loader_command(files, python_executable(env.fingerprint))
                image = glibc_hybrid(self._engine, original, files, origin)
                return Prepared(image=image, engine=LoaderEngine(self._engine, prefix))
            case Transplant.DISTRIBUTION:
                pythons = (python_executable(source.fingerprint),
                           python_executable(env.fingerprint))  # fmt: skip
                image = distribution_hybrid(self._engine, original, source.image_id or "",
                                            suspect.package, pythons, origin)  # fmt: skip
                return Prepared(image=image, engine=self._engine)
            case Transplant.LIBRARIES:
                return self._libraries(experiment, original, source)

    def _libraries(
        self, experiment: Experiment, original: EnvironmentImage, source: EnvironmentResult
    ) -> Prepared | None:
        files: dict[str, bytes] = {}
        for suspect in experiment.suspects:
            found = transplant_files(self._engine, original.image_id, source.image_id or "",
                                     suspect)  # fmt: skip
            if not found:
                return None
            files |= found
        image = hybrid_image(self._engine, original, files, _origin(experiment, source))
        return Prepared(image=image, engine=self._engine)


def _status(text: str) -> Status:
    """A cached side's status; one this version does not know counts as an error."""
    try:
        return Status(text)
    except ValueError:
        return Status.ERROR


def _origin(experiment: Experiment, source: EnvironmentResult) -> str:
    return f"{experiment.factor} from {source.name}"
