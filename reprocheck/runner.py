"""Plan -> RunResult: one hermetic container per environment; a failure is a status.

Layout of a run folder (``reports/<run-id>/``)::

    run.json                          manifest: environments, images, statuses (see store.py)
    environments/<name>/outputs/      outputs as written by the pipeline
    environments/<name>/meta/         spec.json, status.json, fingerprint.json, probes/
    environments/<name>/log.txt       the container's stdout and stderr (tail)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shlex
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast, get_args

from reprocheck.cache import CACHE_DIR, NO_CACHE, CacheEntry, RunCache
from reprocheck.config import EnvironmentConfig, RunConfig
from reprocheck.cpus import CPU_ENV, QEMU_ENV, QEMU_IN_CONTAINER, REQUESTED_ENV
from reprocheck.engine import (
    RUN_LABEL,
    ContainerEngine,
    ContainerOutcome,
    ContainerSpec,
    Mount,
    container_labels,
)
from reprocheck.engine.targets import Engines, EngineTarget, connect_target, target_of
from reprocheck.errors import ConfigError, ReprocheckError, UnsafeFileError
from reprocheck.images import EnvironmentImage, ImageBuilder, ca_bundle, is_digest_reference
from reprocheck.plan import Plan
from reprocheck.progress import ProgressCallback, ProgressEvent, silent
from reprocheck.run_model import (
    META_FILE_BYTES,
    EnvironmentResult,
    EnvStatus,
    FixtureResult,
    FixtureState,
    RunResult,
    status_bytes,
)
from reprocheck.safe_files import read_json_object, read_regular_bytes
from reprocheck.shards import SHARDS_DIR, join, joined_fixtures, split
from reprocheck.store import run_folders

HARNESS_DIR = Path(__file__).parent / "harness"
CONTAINER_CA = "/run/reprocheck/host-ca.crt"
# The host waits this much longer than [run] timeout: the harness enforces the timeout inside
# the container itself (so a container outlives a killed reprocheck by at most the timeout),
# and the host's own wait is the fallback.
DEADLINE_GRACE = 30.0
# After Ctrl-C or SIGTERM, how long to keep removing this run's containers and waiting for
# the environments that were running to come back.
STOP_SECONDS = 10.0
EXIT_DEADLINE = 124  # the harness's exit code when it killed the pipeline at the deadline
FIXTURES_NAMED = 3  # failed fixtures named, with their exception, in an environment's error
# Processes that left the CPU emulator: kept per environment, named in its error, characters.
LEFT_LISTED, LEFT_NAMED, LEFT_CHARS = 16, 3, 200
JOURNAL_FILE = "status.jsonl"  # in meta: each fixture's state (harness/run.py spells it too)
SHARD_RETRIES = 1  # a shard that crashed, timed out or could not start runs once more
_RETRIED: frozenset[str] = frozenset({"crash", "error", "timeout", "oom"})


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where one environment's containers (or one shard's) run: an engine and the image as
    that engine has it."""

    target: EngineTarget
    engine: ContainerEngine
    image: EnvironmentImage
    host: dict[str, Any]  # the engine's machine, recorded in the fingerprint

    @property
    def where(self) -> str:
        """Empty on the default engine; else the engine and its machine's ID (cache keys)."""
        return "" if self.target.default else f"{self.engine.where}#{self.host.get('id', '')}"


def container_user(config: RunConfig) -> str:
    """Never root: the host user when it is not root, else nobody."""
    if config.run.user:
        return config.run.user
    uid, gid = os.getuid(), os.getgid()
    return f"{uid}:{gid}" if uid != 0 else "65534:65534"


def _can_enter(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid:gid`` (without capabilities) may pass through folder ``path``."""
    info = path.stat()
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def check_access(config: RunConfig) -> None:
    """Before any container: the container's user must be able to enter the project and the
    fixtures folders it gets mounted (a project cloned into a private folder would otherwise
    fail in every environment with "file does not exist"). Their parents do not matter: a
    container sees only the mounted folder."""
    user = container_user(config)
    uid_text, _, gid_text = user.partition(":")
    if not (uid_text.isdigit() and (gid_text or "0").isdigit()):
        return  # a user name: resolved inside the image, nothing to check here
    uid, gid = int(uid_text), int(gid_text or 0)
    for folder in (config.root, config.fixtures_dir):
        if folder.is_dir() and not _can_enter(folder, uid, gid):
            raise ConfigError(
                f"the containers run as user {user}, which cannot enter {folder} "
                f"(mode {stat.filemode(folder.stat().st_mode)})",
                fix=f"'chmod o+rx {folder}', or set [run] user",
            )


class Runner:
    """Runs a plan environment by environment; never lets one failure lose the others.

    Ctrl-C or SIGTERM while :meth:`run` waits removes this run's containers, keeps the
    environments that finished and marks the others ``interrupted``; the result says it was
    ``stopped`` even when every container had finished (its stores were still being made)."""

    def __init__(
        self, engine: ContainerEngine, plan: Plan, progress: ProgressCallback = silent, *,
        run_id: str, cache: RunCache = NO_CACHE, rebuild: bool = False,
        engines: Engines | None = None, preload: Callable[[], object] | None = None,
    ) -> None:  # fmt: skip
        self._engine = engine
        # an engine on another machine hashes inputs with the project's remembered hashes
        self._engines = engines or Engines(
            default=engine, connect=functools.partial(connect_target, hashes=cache.hashes)
        )
        self._hosts: dict[EngineTarget, dict[str, Any]] = {}
        self._cache = cache
        self._plan = plan
        self._config = plan.config
        self._progress = progress
        self._images = ImageBuilder(engine, plan.config, progress, rebuild=rebuild)
        self._run_id = run_id
        self._done = 0  # container runs finished, for progress
        self._lock = threading.Lock()
        self._indexing = threading.Lock()  # output stores are built one at a time
        # Output stores and cache entries are made here while the next containers run (a
        # job slot is a container, not its bookkeeping); None: made in the caller's thread.
        self._finisher: ThreadPoolExecutor | None = None
        self._finishing: list[Future[None]] = []
        # What the caller imports once every container ran (comparing, the reports): done by
        # the finisher after its first store, on a core the containers may leave idle.
        self._preload = preload
        self._total = len(plan.environments) * plan.config.run.repeat
        self._cancel = threading.Event()
        self._run_dir: Path | None = None
        self._masked = _masked_paths(self._config, ())

    def run(self, run_dir: Path, jobs: int = 1) -> RunResult:
        """Run every environment, ``jobs`` at a time; results keep the configured order."""
        check_access(self._config)
        started = datetime.now(UTC).isoformat(timespec="seconds")
        envs = self._plan.environments
        self._run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)  # hidden from the containers from the start
        earlier = run_folders(self._config.reports_dir / CACHE_DIR, self._config.root)
        self._masked = _masked_paths(self._config, (run_dir, *earlier))
        pool = ThreadPoolExecutor(max_workers=max(1, jobs))
        self._finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")
        futures = [
            pool.submit(self._run_environment, env, run_dir / "environments" / env.name)
            for env in envs
        ]
        stopped = False
        with _interrupt_once():
            try:
                outcomes = [future.result() for future in futures]
                for finishing in self._finishing:  # never raises (failures are warnings)
                    finishing.result()
            except KeyboardInterrupt:
                stopped = True
                outcomes = self._interrupt(pool, futures, run_dir)
        pool.shutdown(wait=False)
        with self._lock:  # what is still to finish after a stop is dropped (stores are atomic)
            self._finisher.shutdown(wait=False, cancel_futures=stopped)
            self._finisher = None
        results = [first for first, _extra in outcomes]
        repeats = [run for _first, extra in outcomes for run in extra]
        return RunResult(
            run_id=self._run_id,
            run_dir=run_dir,
            config_source=self._config.source,
            started=started,
            environments=tuple(results),
            repeats=tuple(repeats),
            stopped=stopped,
        )

    def _interrupt(
        self, pool: ThreadPoolExecutor, futures: list[Future[_Outcomes]], run_dir: Path
    ) -> list[_Outcomes]:
        """Stop this run's containers; keep what finished, mark the rest interrupted."""
        self._cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:  # again and again: a container may start late
            for engine in self._engines.connected():  # every host this run reached
                with contextlib.suppress(Exception):  # a lost host must not stop the others
                    engine.stop({RUN_LABEL: self._run_id})
            if all(future.done() for future in futures):
                break
            time.sleep(0.2)
        outcomes = []
        for env, future in zip(self._plan.environments, futures, strict=True):
            folder = run_dir / "environments" / env.name
            finished = future.done() and not future.cancelled() and future.exception() is None
            outcomes.append(future.result() if finished else (_interrupted(env, folder), []))
        return outcomes

    def _run_environment(self, env: EnvironmentConfig, folder: Path) -> _Outcomes:
        try:
            return self._run_environment_in(env, folder)
        except Exception as exc:  # a bug in one environment must not lose the others
            error = f"internal error: {type(exc).__name__}: {exc}"
            self._emit(env.name, error, finished=True)
            return _setup_failure(env, folder, error), []

    def _run_environment_in(self, env: EnvironmentConfig, folder: Path) -> _Outcomes:
        try:
            places = self._placements(env)
        except ReprocheckError as exc:
            self._finished(self._config.run.repeat)
            self._emit(env.name, f"image failed: {exc}", finished=True)
            return _setup_failure(env, folder, str(exc)), []
        first = self._run_repeat(env, places, folder, 1)
        extra = [
            self._run_repeat(env, places, folder / "repeats" / str(k), k)
            for k in range(2, self._config.run.repeat + 1)
        ]
        return first, extra

    def _placements(self, env: EnvironmentConfig) -> list[Placement]:
        """The engine and image of each host ``env`` runs on (its ``hosts``, else one): the
        image resolved here, and on another engine delivered there by digest. An image given
        by digest that only other engines run is not resolved (nor pulled) here."""
        targets = [target_of(self._config, env, host) for host in env.hosts or (None,)]
        here = any(t.default for t in targets) or not is_digest_reference(env.image)
        local = self._images.resolve(env) if here else None
        places = []
        for target in targets:
            engine = self._engines.get(target)
            if target.default:
                assert local is not None
                image = local
            else:
                from reprocheck.registry import deliver  # only runs on other engines need it

                image = deliver(self._config, local, env, engine, self._engine, self._progress)
            places.append(Placement(target=target, engine=engine, image=image,
                                    host=self._host_info(target, engine)))  # fmt: skip
        return places

    def _host_info(self, target: EngineTarget, engine: ContainerEngine) -> dict[str, Any]:
        with self._lock:
            if target not in self._hosts:
                self._hosts[target] = engine.host_info()
            return self._hosts[target]

    def _run_repeat(
        self, env: EnvironmentConfig, places: list[Placement], folder: Path, repeat: int
    ) -> EnvironmentResult:
        """One run of ``env``: one container, or one per shard joined into one result."""
        fixtures = self._plan.fixtures
        slices = split(fixtures, self._config.shards_of(env)) if self._config.pipeline.callable \
            else [fixtures]  # fmt: skip
        try:
            if len(slices) <= 1:
                return self._run_container(env, places[0], folder, repeat)
            shard_root = folder / SHARDS_DIR
            jobs = [(k, part, places[k % len(places)]) for k, part in enumerate(slices)]
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                parts = list(pool.map(lambda job: self._run_shard(env, job, shard_root, repeat),
                                      jobs))  # fmt: skip
            return self._joined(env, places[0], folder, repeat, parts)
        finally:
            self._finished(1)

    def _run_shard(
        self, env: EnvironmentConfig, job: tuple[int, tuple[str, ...], Placement],
        shard_root: Path, repeat: int,
    ) -> tuple[tuple[str, ...], EnvironmentResult]:  # fmt: skip
        k, part, place = job
        label = f"shard {k}"
        result = self._run_container(env, place, shard_root / str(k), repeat, fixtures=part,
                                     part=label)  # fmt: skip
        for attempt in range(SHARD_RETRIES):
            if result.status not in _RETRIED or self._cancel.is_set():
                break
            self._emit(env.name, f"{label} {result.status}: retrying ({attempt + 1})")
            result = self._run_container(env, place, shard_root / str(k), repeat,
                                         fixtures=part, part=f"{label} retry")  # fmt: skip
        return part, result

    def _joined(
        self, env: EnvironmentConfig, place: Placement, folder: Path, repeat: int,
        parts: list[tuple[tuple[str, ...], EnvironmentResult]],
    ) -> EnvironmentResult:  # fmt: skip
        """The shards' folders joined into ``folder``; the environment's status from every
        fixture's (a shard that failed twice fails its fixtures, not the others)."""
        outputs, meta = folder / "outputs", folder / "meta"
        for path in (outputs, meta):
            path.mkdir(parents=True, exist_ok=True)
        join(folder, [r.outputs_dir.parent for _part, r in parts],
             self._spec_json(self._plan.fixtures))  # fmt: skip
        fixtures = joined_fixtures(parts, _RETRIED)
        if self._cancel.is_set() and any(r.status == "interrupted" for _p, r in parts):
            return _interrupted(env, folder, place.image, repeat)
        error = _failures(fixtures)
        status: EnvStatus = "ok" if error is None else "partial"
        left = tuple(dict.fromkeys(p for _part, r in parts for p in r.left_emulator))
        status, error = _mixed_cpu(status, error, left[:LEFT_LISTED], len(left))
        states = {r.status for _p, r in parts}
        if len(states) == 1 and states <= _RETRIED:  # every shard failed alike: as one would
            status, error = parts[0][1].status, parts[0][1].error
        shutil.rmtree(folder / SHARDS_DIR, ignore_errors=True)
        result = EnvironmentResult(
            name=env.name, image=env.image, image_ref=place.image.ref,
            image_id=place.image.image_id, image_digest=place.image.digest, status=status,
            error=error, outputs_dir=outputs,
            meta_dir=meta, fingerprint=_read_json(meta / "fingerprint.json"),
            fixtures=tuple(fixtures), seconds=round(max(r.seconds or 0 for _p, r in parts), 3),
            repeat=repeat, left_emulator=left[:LEFT_LISTED],
        )  # fmt: skip
        if not result.failed:
            self._index(env.name, outputs)
        return result

    def run_in(
        self, env: EnvironmentConfig, image: EnvironmentImage, folder: Path, repeat: int
    ) -> EnvironmentResult:
        """One container of ``env`` in ``image`` on the default engine (explain's runs)."""
        place = Placement(target=EngineTarget(), engine=self._engine, image=image,
                          host=self._host_info(EngineTarget(), self._engine))  # fmt: skip
        return self._run_container(env, place, folder, repeat)

    def _run_container(
        self, env: EnvironmentConfig, place: Placement, folder: Path, repeat: int, *,
        fixtures: tuple[str, ...] | None = None, part: str = "",
    ) -> EnvironmentResult:  # fmt: skip
        """One container of ``env`` over ``fixtures`` (default: the plan's) in ``folder``."""
        image = place.image
        if self._cancel.is_set():
            return _interrupted(env, folder, image, repeat)
        fixtures = self._plan.fixtures if fixtures is None else fixtures
        plan = self._plan if fixtures == self._plan.fixtures else \
            dataclasses.replace(self._plan, fixtures=fixtures)  # fmt: skip
        outputs, meta = _fresh_dirs(folder)
        label = env.name if repeat == 1 else f"{env.name} (repeat {repeat})"
        label = f"{label} {part}" if part else label
        spec = self._container_spec(env, image, outputs, meta, where=place.where)
        cache = self._cache.entry(spec, plan, repeat)
        cached = cache.restore(env, image, folder, repeat)
        if cached is not None:  # nothing the result depends on changed: no container
            self._emit(label, f"cached (key {cache.short_key}…)", finished=not part)
            return cached
        (meta / "spec.json").write_text(json.dumps(self._spec_json(fixtures), indent=1))
        where = "" if place.target.default else f" on {place.engine.where}"
        self._emit(label, f"running in {image.ref}{where}")
        try:
            outcome = place.engine.run(spec)
        except ReprocheckError as exc:  # the engine refused this container: this env's error
            if self._cancel.is_set():
                return _interrupted(env, folder, image, repeat)
            self._emit(label, f"error: {exc}", finished=True)
            return _setup_failure(env, folder, str(exc), image, repeat)
        (folder / "log.txt").write_text(outcome.log)
        if outcome.transfer:
            (meta / "transfer.json").write_text(json.dumps(dict(outcome.transfer), indent=1))
        _record_host(meta, place.host)
        planned = fixtures if self._config.pipeline.callable else ()
        result = _collect(env, image, outputs, meta, outcome, repeat, planned)
        if self._cancel.is_set() and result.status != "ok":
            result = _interrupted(env, folder, image, repeat)
        if part or not self._finish_later(label, folder, result, cache):
            self._finish(label, folder, result, cache, index=not part)  # a shard: joined next
        self._emit(label, f"{result.status} in {outcome.duration:.1f} s{_copies(outcome)}",
                   finished=not part)  # fmt: skip
        return result

    def _finish_later(
        self, label: str, folder: Path, result: EnvironmentResult, cache: CacheEntry
    ) -> bool:  # fmt: skip
        """Hand the result's store and cache entry to the finisher; False when there is
        none (explain's runs, or :meth:`run` has returned): the caller finishes it."""
        with self._lock:
            if self._finisher is None:
                return False
            self._finishing.append(self._finisher.submit(self._finish, label, folder, result,
                                                         cache))  # fmt: skip
            return True

    def _finish(
        self, label: str, folder: Path, result: EnvironmentResult, cache: CacheEntry, *,
        index: bool = True,
    ) -> None:  # fmt: skip
        """The output store, then the cache entry (an "ok" result only, with its store)."""
        if index and not result.failed:
            self._index(label, result.outputs_dir)
        cache.store(folder, result)
        preload, self._preload = self._preload, None  # once (one finisher thread)
        if preload is not None:
            with contextlib.suppress(Exception):  # the caller's own import says what failed
                preload()

    def _index(self, label: str, outputs: Path) -> None:
        """Write the output store now, while other environments still run; if that fails,
        comparing builds it again (and says why here). One store at a time: building one
        holds every output's row (a million outputs: hundreds of MB), and the work holds
        the GIL anyway, so building them together would only add up their memory."""
        from reprocheck.output_store import write_store  # numpy, pyarrow: once a container ran

        try:
            with self._indexing:
                write_store(outputs, self._config.outputs)
        except Exception as exc:  # the outputs are kept; only the index is missing
            self._emit(label, f"warning: outputs not indexed: {type(exc).__name__}: {exc}")

    def _finished(self, runs: int) -> None:
        with self._lock:
            self._done += runs

    def _emit(self, subject: str, message: str, finished: bool = False) -> None:
        event = ProgressEvent(stage="run", subject=subject, message=message, finished=finished,
                              done=self._done, total=self._total)  # fmt: skip
        self._progress(event)

    def _spec_json(self, fixtures: tuple[str, ...]) -> dict[str, Any]:
        """spec.json: what the harness in the container runs, over ``fixtures``."""
        pipeline = self._config.pipeline
        return {
            "mode": "callable" if pipeline.callable else "command",
            "callable": pipeline.callable,
            "command": list(pipeline.command or ()),
            "project": "/project",
            "fixtures_dir": "/fixtures",
            "fixtures": list(fixtures),
            "outputs": "/out",
            "meta": "/meta",
            "deadline": self._config.run.timeout,
        }

    def _container_spec(
        self, env: EnvironmentConfig, image: EnvironmentImage, outputs: Path, meta: Path,
        where: str = "",
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
        emulated = self._plan.emulations.get(env.name)
        if emulated is not None:  # the harness runs itself (and the command) under qemu-user
            mounts.append(Mount(source=emulated.binary, target=QEMU_IN_CONTAINER))
            env_vars |= {QEMU_ENV: QEMU_IN_CONTAINER, CPU_ENV: emulated.model,
                         REQUESTED_ENV: emulated.requested}  # fmt: skip
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
            timeout=settings.timeout + DEADLINE_GRACE,
            labels=container_labels(self._run_id, env.name),
            platform=env.platform,
            masked=self._masked,
            where=where,
        )


_Outcomes = tuple[EnvironmentResult, list[EnvironmentResult]]


def raise_interrupt(_signum: int, _frame: object) -> None:
    """A signal handler that stops like Ctrl-C (KeyboardInterrupt in the main thread)."""
    raise KeyboardInterrupt


@contextmanager
def _interrupt_once() -> Iterator[None]:
    """Ctrl-C and SIGTERM (a CI job cancelled, ``kill``) stop a run, once: a second signal
    while the run stops its containers is ignored, or it would end the stop half-way and
    leave the process waiting at exit for a container nobody stops."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = threading.Event()

    def interrupt(_signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _masked_paths(config: RunConfig, extra: tuple[Path, ...]) -> tuple[str, ...]:
    """Container paths under /project that hold stored runs, baselines or caches: hidden
    so that one environment's pipeline cannot read another's outputs or a baseline."""
    root = config.root.resolve()
    history = (root / config.history).resolve().parent
    folders = (config.reports_dir, (root / config.baselines).resolve(), history, *extra)
    inside = {f.resolve() for f in folders if f.resolve() != root and f.resolve().is_dir()}
    inside = {f for f in inside if f.is_relative_to(root)}
    # A folder inside another masked one is hidden already (a second mount would show it).
    outer = {f for f in inside if not any(f != o and f.is_relative_to(o) for o in inside)}
    return tuple(sorted(f"/project/{f.relative_to(root).as_posix()}" for f in outer))


def _record_host(meta: Path, host: dict[str, Any]) -> None:
    """The engine and machine the container ran on, in its fingerprint (when it has one)."""
    path = meta / "fingerprint.json"
    fingerprint = _read_json(path)
    if fingerprint and host:
        fingerprint["engine"] = host
        path.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))


def _copies(outcome: ContainerOutcome) -> str:
    """`` (inputs reused; outputs 0.2 s)``: what a run on another machine copied."""
    figures = outcome.transfer
    if not figures:
        return ""
    copied = figures.get("inputs_copied", 0)
    ins = (f"{copied} input volume(s) copied in {figures.get('copy_in_seconds', 0):.1f} s"
           if copied else "inputs reused")  # fmt: skip
    return f" ({ins}; outputs copied in {figures.get('copy_out_seconds', 0):.1f} s)"


def _fresh_dirs(folder: Path) -> tuple[Path, Path]:
    if folder.exists():
        shutil.rmtree(folder)
    outputs, meta = folder / "outputs", folder / "meta"
    for path in (outputs, meta):
        path.mkdir(parents=True)
        path.chmod(0o777)  # the container runs as an unprivileged user
    return outputs, meta


def _interrupted(
    env: EnvironmentConfig, folder: Path, image: EnvironmentImage | None = None, repeat: int = 1
) -> EnvironmentResult:
    result = _setup_failure(env, folder, "interrupted (Ctrl-C or SIGTERM)", image, repeat)
    return dataclasses.replace(result, status="interrupted")


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
        image_digest=image.digest if image else None,
        status="error",
        error=error,
        outputs_dir=folder / "outputs",
        meta_dir=folder / "meta",
        repeat=repeat,
    )


def _read_json(path: Path, limit: int = META_FILE_BYTES) -> dict[str, Any]:
    """A JSON object the container wrote, or {}; never follows a link it planted."""
    try:
        return read_json_object(path, limit=limit)
    except UnsafeFileError:
        return {}


def _with_journal(status: dict[str, Any], meta: Path, planned: int) -> dict[str, Any]:
    """``status`` with the fixtures' states its journal holds (status.jsonl, appended by the
    harness as each fixture starts and ends) when the harness did not finish: a crash or a
    kill leaves status.json as it was at the start. Lines that are not a fixture's state (the
    pipeline can write there too) are passed over."""
    if status.get("finished") is not None:
        return status  # written whole at the end
    try:
        data = read_regular_bytes(meta / JOURNAL_FILE, status_bytes(planned))
    except (OSError, UnsafeFileError):
        return status
    fixtures = dict(_object(status.get("fixtures")))
    for line in data.splitlines():
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(item, dict) and isinstance(item.get("fixture"), str) \
                and isinstance(item.get("entry"), dict):  # fmt: skip
            fixtures[item["fixture"]] = item["entry"]
    return {**status, "fixtures": fixtures}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _number(value: object) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None  # type: ignore[arg-type]


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _fixture_result(fixture: str, entry: object) -> FixtureResult:
    """One fixture's entry of status.json, which the pipeline could have rewritten: only
    values of the expected types are taken."""
    data = _object(entry) or {"status": "not_run"}
    status = data.get("status")
    if status not in get_args(FixtureState):
        return FixtureResult(
            fixture=fixture,
            status="error",
            error=f"status.json holds no valid status for it: {status!r}"[:300],
        )
    state = cast(FixtureState, status)  # checked against the Literal's values above
    return FixtureResult(fixture=fixture, status=state, seconds=_number(data.get("seconds")),
                         error=_text(data.get("error")))  # fmt: skip


def _fixture_results(status: dict[str, Any], planned: list[str]) -> tuple[FixtureResult, ...]:
    recorded = _object(status.get("fixtures"))
    return tuple(_fixture_result(fixture, recorded.get(fixture)) for fixture in planned)


def _log_tail(log: str, lines: int = 15) -> str:
    return "\n".join(log.strip().splitlines()[-lines:])


def _crash_tail(log: str, frames: int = 4) -> str:
    """What a crash left on stderr: Python's fatal error and its innermost frames when the
    harness's faulthandler wrote them (the pipeline's own code), else the log's last lines."""
    lines = log.strip().splitlines()
    fatal = next((i for i, line in enumerate(lines) if line.startswith("Fatal Python error")), None)
    if fatal is None:
        return _log_tail(log, 8)
    stack = [line.strip() for line in lines[fatal + 1 :] if line.strip().startswith("File ")]
    return "\n".join([*lines[max(0, fatal - 2) : fatal + 1], *stack[:frames]])


def _exit_description(code: int | None) -> str:
    """``exit code 139 (SIGSEGV)``: the signal a process died of, by name."""
    if code is not None and 128 < code < 128 + 65:
        try:
            return f"exit code {code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit code {code}"


def _environment_status(
    outcome: ContainerOutcome, status: dict[str, Any], fixtures: tuple[FixtureResult, ...],
    watchdog: dict[str, Any],
) -> tuple[EnvStatus, str | None]:  # fmt: skip
    if outcome.timed_out or (outcome.exit_code == EXIT_DEADLINE and "deadline" in watchdog):
        return "timeout", f"timed out after {outcome.duration:.0f} s ([run] timeout)"
    if outcome.oom_killed:
        return "oom", "killed: out of memory ([run] memory)"
    if status.get("harness_error"):
        lines = str(status["harness_error"]).strip().splitlines() or ["harness error"]
        return "error", lines[-1]
    if outcome.exit_code != 0 or not status:
        tail = _crash_tail(outcome.log) or "(no output on stdout or stderr)"
        return "crash", f"{_exit_description(outcome.exit_code)}: {tail}"
    command = _object(status.get("command"))
    if command.get("status") == "error":
        how = (f"was killed by {command['signal']}" if command.get("signal")
               else f"exited {command.get('exit_code')}")  # fmt: skip
        return "error", f"command {how}: {_log_tail(str(command.get('error', '')), 8)}"
    failures = _failures(fixtures)
    return ("ok", None) if failures is None else ("partial", failures)


def _failures(fixtures: Sequence[FixtureResult]) -> str | None:
    """``2 of 6 fixtures failed: a.png: ...; b.png: ...``, or None when none failed."""
    failed = [f for f in fixtures if f.status != "ok"]
    if not failed:
        return None
    causes = "; ".join(f"{f.fixture}: {f.reason}" for f in failed[:FIXTURES_NAMED])
    more = f"; and {len(failed) - FIXTURES_NAMED} more" if len(failed) > FIXTURES_NAMED else ""
    return f"{len(failed)} of {len(fixtures)} fixtures failed: {causes}{more}"


def _left_emulator(status: dict[str, Any]) -> tuple[str, ...]:
    """``PROGRAM: ARGV`` of each process the harness saw leave the CPU model's emulator."""
    found = []
    for entry in _object(status.get("left_emulator")).get("listed") or []:
        if not isinstance(entry, dict):
            continue
        given = entry.get("argv")
        argv = [a for a in given if isinstance(a, str)] if isinstance(given, list) else []
        program = entry.get("executable")
        program = program if isinstance(program, str) and program else "?"
        found.append(f"{program}: {shlex.join(argv)}".rstrip(": ")[:LEFT_CHARS])
    return tuple(found[:LEFT_LISTED])


def _count(value: Any) -> int:
    count = _object(value).get("count")
    return count if isinstance(count, int) and count >= 0 else 0


def _mixed_cpu(
    state: EnvStatus, error: str | None, left: tuple[str, ...], count: int
) -> tuple[EnvStatus, str | None]:
    """An environment whose processes left the CPU model's emulator is ``mixed_cpu``: its
    outputs are compared, but they are not all the emulated CPU's."""
    count = max(count, len(left))
    if not count or state not in ("ok", "partial"):
        return state, error
    shown = "; ".join(left[:LEFT_NAMED])
    more = f"; and {count - LEFT_NAMED} more" if count > LEFT_NAMED else ""
    why = (f"{count} process(es) left the CPU emulator (a program the pipeline exec'd runs on "
           f"the host CPU, or under the system's binfmt emulator at its default CPU): "
           f"{shown}{more}")  # fmt: skip
    return "mixed_cpu", why if error is None else f"{error}; {why}"


def _collect(
    env: EnvironmentConfig,
    image: EnvironmentImage,
    outputs: Path,
    meta: Path,
    outcome: ContainerOutcome,
    repeat: int,
    planned: tuple[str, ...],
) -> EnvironmentResult:
    """The environment's result from what the container left in /meta, all of it untrusted
    (the pipeline runs with write access there): ``planned`` comes from the host's plan
    (empty for a command, which has no per-fixture status), not from the spec it could
    have rewritten."""
    status = _with_journal(_read_json(meta / "status.json", status_bytes(len(planned))), meta,
                           len(planned))  # fmt: skip
    fixtures = _fixture_results(status, list(planned))
    watchdog = _read_json(meta / "watchdog.json")
    state, error = _environment_status(outcome, status, fixtures, watchdog)
    left = _left_emulator(status)
    state, error = _mixed_cpu(state, error, left, _count(status.get("left_emulator")))
    return EnvironmentResult(
        name=env.name,
        image=env.image,
        image_ref=image.ref,
        image_id=image.image_id,
        image_digest=image.digest,
        status=state,
        error=error,
        outputs_dir=outputs,
        meta_dir=meta,
        fingerprint=_read_json(meta / "fingerprint.json"),
        fixtures=fixtures,
        seconds=round(outcome.duration, 3),
        repeat=repeat,
        left_emulator=left,
    )
