"""Plan -> RunResult: one hermetic container per environment; a failure is a status.

Layout of a run folder (``reports/<run-id>/``)::

    run.json                          manifest: environments, images, statuses (see store.py)
    environments/<name>/outputs/      outputs as written by the pipeline
    environments/<name>/meta/         spec.json, status.json, fingerprint.json, probes/
    environments/<name>/log.txt       the container's stdout and stderr (tail)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from reprocheck.config import EnvironmentConfig, RunConfig
from reprocheck.engine import ContainerEngine, ContainerOutcome, ContainerSpec, Mount
from reprocheck.errors import ReprocheckError
from reprocheck.images import EnvironmentImage, ImageBuilder, ca_bundle
from reprocheck.plan import Plan
from reprocheck.progress import ProgressCallback, ProgressEvent, silent

HARNESS_DIR = Path(__file__).parent / "harness"
CONTAINER_CA = "/run/reprocheck/host-ca.crt"
EnvStatus = Literal["ok", "partial", "error", "crash", "timeout", "oom"]
FixtureState = Literal["ok", "error", "running", "not_run"]


@dataclass(frozen=True, kw_only=True)
class FixtureResult:
    fixture: str
    status: FixtureState
    seconds: float | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class EnvironmentResult:
    name: str
    image: str  # as configured: a Dockerfile folder or a reference
    image_ref: str | None
    image_id: str | None
    status: EnvStatus
    error: str | None
    outputs_dir: Path
    meta_dir: Path
    fingerprint: dict[str, Any] = field(default_factory=dict)
    fixtures: tuple[FixtureResult, ...] = ()
    seconds: float = 0.0
    repeat: int = 1

    @property
    def failed(self) -> bool:
        return self.status not in ("ok", "partial")


@dataclass(frozen=True, kw_only=True)
class RunResult:
    run_id: str
    run_dir: Path
    config_source: Path
    started: str
    environments: tuple[EnvironmentResult, ...]
    repeats: tuple[EnvironmentResult, ...] = ()  # extra runs for the noise floor ([run] repeat)


def new_run_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


def container_user(config: RunConfig) -> str:
    """Never root: the host user when it is not root, else nobody."""
    if config.run.user:
        return config.run.user
    uid, gid = os.getuid(), os.getgid()
    return f"{uid}:{gid}" if uid != 0 else "65534:65534"


class Runner:
    """Runs a plan environment by environment; never lets one failure lose the others."""

    def __init__(
        self, engine: ContainerEngine, plan: Plan, progress: ProgressCallback = silent
    ) -> None:
        self._engine = engine
        self._plan = plan
        self._config = plan.config
        self._progress = progress
        self._images = ImageBuilder(engine, plan.config, progress)
        self._done = 0  # container runs finished, for progress
        self._lock = threading.Lock()
        self._total = len(plan.environments) * plan.config.run.repeat

    def run(self, run_dir: Path, jobs: int = 1) -> RunResult:
        """Run every environment, ``jobs`` at a time; results keep the configured order."""
        started = datetime.now(UTC).isoformat(timespec="seconds")
        envs = self._plan.environments
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [
                pool.submit(self._run_environment, env, run_dir / "environments" / env.name)
                for env in envs
            ]
        outcomes = [future.result() for future in futures]
        results = [first for first, _extra in outcomes]
        repeats = [run for _first, extra in outcomes for run in extra]
        return RunResult(
            run_id=run_dir.name,
            run_dir=run_dir,
            config_source=self._config.source,
            started=started,
            environments=tuple(results),
            repeats=tuple(repeats),
        )

    def _run_environment(
        self, env: EnvironmentConfig, folder: Path
    ) -> tuple[EnvironmentResult, list[EnvironmentResult]]:
        try:
            image = self._images.resolve(env)
        except ReprocheckError as exc:
            self._finished(self._config.run.repeat)
            self._emit(env.name, f"image failed: {exc}", finished=True)
            return _setup_failure(env, folder, str(exc)), []
        first = self.run_in(env, image, folder, 1)
        extra = [
            self.run_in(env, image, folder / "repeats" / str(k), k)
            for k in range(2, self._config.run.repeat + 1)
        ]
        return first, extra

    def run_in(
        self, env: EnvironmentConfig, image: EnvironmentImage, folder: Path, repeat: int
    ) -> EnvironmentResult:
        outputs, meta = _fresh_dirs(folder)
        self._write_spec(meta)
        label = env.name if repeat == 1 else f"{env.name} (repeat {repeat})"
        self._emit(label, f"running in {image.ref}")
        try:
            outcome = self._engine.run(self._container_spec(env, image, outputs, meta, folder))
        except ReprocheckError as exc:  # the engine refused this container: this env's error
            self._finished(1)
            self._emit(label, f"error: {exc}", finished=True)
            return _setup_failure(env, folder, str(exc), image, repeat)
        (folder / "log.txt").write_text(outcome.log)
        result = _collect(env, image, outputs, meta, outcome, repeat)
        self._finished(1)
        self._emit(label, f"{result.status} in {outcome.duration:.1f} s", finished=True)
        return result

    def _finished(self, runs: int) -> None:
        with self._lock:
            self._done += runs

    def _emit(self, subject: str, message: str, finished: bool = False) -> None:
        event = ProgressEvent(stage="run", subject=subject, message=message, finished=finished,
                              done=self._done, total=self._total)  # fmt: skip
        self._progress(event)

    def _write_spec(self, meta: Path) -> None:
        pipeline = self._config.pipeline
        spec = {
            "mode": "callable" if pipeline.callable else "command",
            "callable": pipeline.callable,
            "command": list(pipeline.command or ()),
            "project": "/project",
            "fixtures_dir": "/fixtures",
            "fixtures": list(self._plan.fixtures),
            "outputs": "/out",
            "meta": "/meta",
        }
        (meta / "spec.json").write_text(json.dumps(spec, indent=1))

    def _container_spec(
        self, env: EnvironmentConfig, image: EnvironmentImage, outputs: Path, meta: Path,
        folder: Path,
    ) -> ContainerSpec:  # fmt: skip
        settings = self._config.run
        mounts = [
            Mount(source=self._config.root, target="/project"),
            Mount(source=self._config.fixtures_dir, target="/fixtures"),
            Mount(source=HARNESS_DIR.resolve(), target="/opt/reprocheck"),
            Mount(source=outputs, target="/out", read_only=False),
            Mount(source=meta, target="/meta", read_only=False),
        ]
        env_vars = {
            "PYTHONPATH": "/opt/reprocheck",
            "HOME": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "MPLCONFIGDIR": "/tmp",
        }
        ca = ca_bundle(self._config)
        if ca is not None:
            mounts.append(Mount(source=ca, target=CONTAINER_CA))
            env_vars |= {"PIP_CERT": CONTAINER_CA, "REQUESTS_CA_BUNDLE": CONTAINER_CA}
        return ContainerSpec(
            image=image.image_id,
            command=(env.python, "/opt/reprocheck/run.py", "/meta"),
            mounts=tuple(mounts),
            env=env_vars | env.env,
            workdir="/project",
            user=container_user(self._config),
            memory=settings.memory,
            cpus=settings.cpus,
            pids_limit=settings.pids_limit,
            network=settings.network,
            read_only=settings.read_only,
            shm_size=settings.shm_size,
            timeout=settings.timeout,
            labels={"io.reprocheck.run": folder.parts[-3], "io.reprocheck.environment": env.name},
            platform=env.platform,
        )


def _fresh_dirs(folder: Path) -> tuple[Path, Path]:
    if folder.exists():
        shutil.rmtree(folder)
    outputs, meta = folder / "outputs", folder / "meta"
    for path in (outputs, meta):
        path.mkdir(parents=True)
        path.chmod(0o777)  # the container runs as an unprivileged user
    return outputs, meta


def _setup_failure(
    env: EnvironmentConfig,
    folder: Path,
    error: str,
    image: EnvironmentImage | None = None,
    repeat: int = 1,
) -> EnvironmentResult:
    folder.mkdir(parents=True, exist_ok=True)
    return EnvironmentResult(
        name=env.name,
        image=env.image,
        image_ref=image.ref if image else None,
        image_id=image.image_id if image else None,
        status="error",
        error=error,
        outputs_dir=folder / "outputs",
        meta_dir=folder / "meta",
        repeat=repeat,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _fixture_results(status: dict[str, Any], planned: list[str]) -> tuple[FixtureResult, ...]:
    recorded = status.get("fixtures") or {}
    results = []
    for fixture in planned:
        entry = recorded.get(fixture) or {"status": "not_run"}
        results.append(
            FixtureResult(
                fixture=fixture,
                status=entry.get("status", "not_run"),
                seconds=entry.get("seconds"),
                error=entry.get("error"),
            )
        )
    return tuple(results)


def _log_tail(log: str, lines: int = 15) -> str:
    return "\n".join(log.strip().splitlines()[-lines:])


def _environment_status(
    outcome: ContainerOutcome, status: dict[str, Any], fixtures: tuple[FixtureResult, ...]
) -> tuple[EnvStatus, str | None]:
    if outcome.timed_out:
        return "timeout", f"timed out after {outcome.duration:.0f} s ([run] timeout)"
    if outcome.oom_killed:
        return "oom", "killed: out of memory ([run] memory)"
    if status.get("harness_error"):
        return "error", str(status["harness_error"]).strip().splitlines()[-1]
    if outcome.exit_code != 0 or not status:
        return "crash", f"exit code {outcome.exit_code}: {_log_tail(outcome.log, 5)}"
    command = status.get("command") or {}
    if command.get("status") == "error":
        return "error", f"command exited {command.get('exit_code')}: {command.get('error', '')}"
    if any(f.status != "ok" for f in fixtures):
        failed = sum(f.status != "ok" for f in fixtures)
        return "partial", f"{failed} of {len(fixtures)} fixtures failed"
    return "ok", None


def _collect(
    env: EnvironmentConfig,
    image: EnvironmentImage,
    outputs: Path,
    meta: Path,
    outcome: ContainerOutcome,
    repeat: int,
) -> EnvironmentResult:
    status = _read_json(meta / "status.json")
    spec = _read_json(meta / "spec.json")
    # A command processes the fixtures folder as a whole: it has no per-fixture status.
    planned = list(spec.get("fixtures", [])) if spec.get("mode") == "callable" else []
    fixtures = _fixture_results(status, planned)
    state, error = _environment_status(outcome, status, fixtures)
    return EnvironmentResult(
        name=env.name,
        image=env.image,
        image_ref=image.ref,
        image_id=image.image_id,
        status=state,
        error=error,
        outputs_dir=outputs,
        meta_dir=meta,
        fingerprint=_read_json(meta / "fingerprint.json"),
        fixtures=fixtures,
        seconds=round(outcome.duration, 3),
        repeat=repeat,
    )
