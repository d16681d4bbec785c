"""``run --refresh``: what a rebuilt image changed.

Before the run, the last stored result of each environment (newest run folder first) is
looked up; after it, an environment whose image ID differs gets an
:class:`~reprocheck.run_model.ImageChange` listing the package versions (Debian and pip,
from the two fingerprints) that differ. It is stored in ``run.json`` and shown in the
reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

from reprocheck.errors import ReprocheckError
from reprocheck.plan import Plan
from reprocheck.run_model import (
    EnvironmentResult,
    ImageChange,
    PackageChange,
    RunResult,
    flat_packages,
)
from reprocheck.store import MANIFEST, load_run

_SCANNED_RUNS = 200  # stored runs looked at, newest first, for an environment's last result


@dataclasses.dataclass(frozen=True, kw_only=True)
class Previous:
    run_id: str
    environment: EnvironmentResult


def previous_environments(reports_dir: Path, names: Iterable[str]) -> dict[str, Previous]:
    """Each named environment's newest stored result that ran (status ok or partial), by
    the modification time of the runs' ``run.json``; unreadable runs are skipped."""
    wanted = set(names)
    found: dict[str, Previous] = {}
    manifests = []
    for folder in reports_dir.iterdir() if reports_dir.is_dir() else ():
        path = folder / MANIFEST
        if folder.is_symlink() or not path.is_file():
            continue
        manifests.append((path.stat().st_mtime, folder))
    for _, folder in sorted(manifests, reverse=True)[:_SCANNED_RUNS]:
        try:
            run = load_run(folder)
        except ReprocheckError:
            continue
        for env in run.environments:
            if env.name in wanted and env.name not in found and not env.failed:
                found[env.name] = Previous(run_id=run.run_id, environment=env)
        if len(found) == len(wanted):
            break
    return found


def package_changes(
    before: EnvironmentResult, after: EnvironmentResult
) -> tuple[PackageChange, ...]:
    """Debian and pip package versions that differ between two results' fingerprints."""
    old, new = flat_packages(before.fingerprint), flat_packages(after.fingerprint)
    return tuple(
        PackageChange(package=name, before=old.get(name), after=new.get(name))
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    )


def with_image_changes(result: RunResult, previous: dict[str, Previous]) -> RunResult:
    """``result`` with an image change on each environment that ran on another image than
    its previous stored result."""
    envs = []
    for env in result.environments:
        last = previous.get(env.name)
        if last is not None and not env.failed and last.environment.image_id != env.image_id:
            change = ImageChange(previous_run=last.run_id,
                                 previous_image=last.environment.image_id,
                                 packages=package_changes(last.environment, env))  # fmt: skip
            env = dataclasses.replace(env, image_change=change)
        envs.append(env)
    return dataclasses.replace(result, environments=tuple(envs))


def recorder(plan: Plan, refresh: bool) -> Callable[[RunResult], RunResult]:
    """What ``run --refresh`` adds to a run's result: the environments' last stored results
    are looked up now (before this run is stored), the image changes after it ran. Without
    ``refresh``, the result as it is."""
    if not refresh:
        return lambda result: result
    names = [env.name for env in plan.environments]
    previous = previous_environments(plan.config.reports_dir, names)
    return lambda result: with_image_changes(result, previous)
