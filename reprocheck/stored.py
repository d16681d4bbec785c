"""Runs beyond one run: named baselines, merged split runs, and runs as references.

A baseline is a copy of a run folder (outputs, fingerprints, manifest) under
``baselines/NAME``; comparing against it uses the same matrix, with the stored
environments renamed ``NAME/<environment>``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reprocheck.config import RunConfig
from reprocheck.errors import ConfigError, ReprocheckError, RunNotFoundError
from reprocheck.plan import with_cpus
from reprocheck.run_model import EnvironmentResult, RunResult, new_run_id
from reprocheck.store import MANIFEST, check_run_folder, load_run, save_run

logger = logging.getLogger(__name__)
_BASELINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def baselines_dir(config: RunConfig) -> Path:
    return (config.root / config.baselines).resolve()


def save_baseline(config: RunConfig, run_dir: Path, name: str, *, replace: bool = False) -> Path:
    """Copy a stored run to ``baselines/NAME``; an existing baseline of that name is
    replaced only with ``replace`` (``baseline save --force``)."""
    if not _BASELINE_NAME.fullmatch(name):  # match() lets "name\n" through ($)
        raise ConfigError(f"baseline name {name!r} is not valid", fix="use letters, digits, . _ -")
    unfinished = [f"{env.name} ({env.status})" for env in load_run(run_dir).environments
                  if env.status != "ok"]  # fmt: skip
    if unfinished:
        raise ConfigError(
            f"run {run_dir.name} cannot be a baseline: {', '.join(unfinished)} did not finish "
            "ok, and every later run would compare against what is missing",
            fix="save a run whose environments all finished: baseline save NAME --run RUN_ID",
        )
    target = baselines_dir(config) / name
    if (target.exists() or target.is_symlink()) and not replace:
        raise ConfigError(
            f"baseline {name!r} already exists ({target})",
            fix=f"pick another name, or replace it: baseline save {name} --force",
        )
    staging = target.with_name(f".{name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    # symlinks=True: a link the pipeline planted is copied as a link, never followed.
    shutil.copytree(run_dir, staging, symlinks=True,
                    ignore=_ignoring(["*.html", "repeats"]))  # fmt: skip
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _ignoring(patterns: list[str]) -> Callable[[str, list[str]], set[str]]:
    """A copytree filter: ``patterns``, and special files a pipeline may have left among its
    outputs (FIFOs, sockets, devices), which cannot be copied and are not outputs."""
    by_pattern = shutil.ignore_patterns(*patterns)

    def ignore(folder: str, names: list[str]) -> set[str]:
        modes = {name: (Path(folder) / name).lstat().st_mode for name in names}
        kept = (stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK)
        special = {name for name, mode in modes.items() if not any(k(mode) for k in kept)}
        return set(by_pattern(folder, names)) | special

    return ignore


@dataclass(frozen=True, kw_only=True)
class BaselineInfo:
    name: str
    run_id: str
    started: str
    environments: tuple[str, ...]


def list_baselines(config: RunConfig) -> list[BaselineInfo]:
    """Every stored baseline, by name; a folder that is not a readable run is listed as
    damaged rather than skipped."""
    found = []
    folder = baselines_dir(config)
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith(".") or not path.is_dir() or path.is_symlink():
            continue
        try:
            run = load_run(path)
        except ReprocheckError as exc:
            found.append(BaselineInfo(name=path.name, run_id="(damaged)", started="-",
                                      environments=(str(exc)[:80],)))  # fmt: skip
            continue
        envs = tuple(e.name for e in run.environments)
        found.append(BaselineInfo(name=path.name, run_id=run.run_id, started=run.started,
                                  environments=envs))  # fmt: skip
    return found


def load_baseline(config: RunConfig, name: str) -> RunResult:
    folder = baselines_dir(config) / name
    if not (folder / MANIFEST).is_file():
        raise RunNotFoundError(
            f"no baseline named {name!r} in {baselines_dir(config)}",
            fix=f"create it with 'reprocheck baseline save {name}'",
        )
    return load_run(folder)


def renamed(run: RunResult, prefix: str) -> tuple[EnvironmentResult, ...]:
    """The run's environments named ``prefix/<environment>`` for use as references."""
    return tuple(dataclasses.replace(e, name=f"{prefix}/{e.name}") for e in run.environments)


def reference_pairs(
    references: tuple[EnvironmentResult, ...], run: RunResult, prefix: str
) -> tuple[tuple[str, str], ...]:
    """(``prefix/<env>``, ``<env>``) for every environment present on both sides."""
    names = {env.name for env in run.environments}
    pairs = []
    for ref in references:
        own = ref.name.removeprefix(prefix + "/")
        if own in names:
            pairs.append((ref.name, own))
    return tuple(pairs)


def merge_runs(config: RunConfig, run_dirs: list[Path], out_dir: Path | None) -> RunResult:
    """Join runs of disjoint environment sets (split across CI jobs) into one run folder."""
    runs = [load_run(d) for d in run_dirs]
    by_name: dict[str, tuple[RunResult, EnvironmentResult]] = {}
    for run in runs:
        for env in run.environments:
            if env.name in by_name:
                raise ConfigError(
                    f"environment {env.name!r} appears in both {by_name[env.name][0].run_dir} "
                    f"and {run.run_dir}", fix="merge runs of different environments"
                )  # fmt: skip
            by_name[env.name] = (run, env)
    run_id = new_run_id()  # unique, so each merge is its own row in the history
    if out_dir is not None:
        check_run_folder(out_dir, config.root)
    target = (out_dir or config.reports_dir / run_id).resolve()
    planned = with_cpus(tuple(config.environments), tuple(config.compare.cpus))
    ordered = [n for n in (e.name for e in planned) if n in by_name]
    ordered += sorted(set(by_name) - set(ordered))
    merged = tuple(_copy_env(by_name[name][1], target) for name in ordered)
    repeats = tuple(
        _copy_env(extra, target, Path("repeats") / str(extra.repeat))
        for run in runs
        for extra in run.repeats
    )
    result = RunResult(
        run_id=run_id,
        run_dir=target,
        config_source=config.source,
        started=min(run.started for run in runs),
        environments=merged,
        repeats=repeats,
    )
    save_run(result, latest=target.parent == config.reports_dir.resolve())
    return result


def _copy_env(env: EnvironmentResult, target: Path, sub: Path = Path()) -> EnvironmentResult:
    """Copy one environment's folder (a repeat's under ``sub``), links as links."""
    source = env.outputs_dir.parent
    folder = target / "environments" / env.name / sub
    if source.resolve() != folder.resolve():
        shutil.copytree(source, folder, dirs_exist_ok=True, symlinks=True,
                        ignore=_ignoring(["repeats"]))  # fmt: skip
    return dataclasses.replace(env, outputs_dir=folder / "outputs", meta_dir=folder / "meta")


def require_runs(paths: list[Path]) -> list[Path]:
    """The run folders among ``paths`` (a shell glob like ``split/*`` also matches the
    ``latest`` link and stray files): links and anything without a manifest are skipped
    with a warning; the same run given twice counts once."""
    found: list[Path] = []
    for path in paths:
        if path.is_symlink() or not (path / MANIFEST).is_file():
            logger.warning("merge: skipping %s (%s)", path,
                           "a link" if path.is_symlink() else "not a run folder")  # fmt: skip
            continue
        if path.resolve() not in found:
            found.append(path.resolve())
    if not found:
        shown = ", ".join(str(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
        raise RunNotFoundError(f"no reprocheck run folder (with {MANIFEST}) among {shown}")
    return found
