"""RunConfig -> Plan: which environments run, over which fixtures."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

from reprocheck.config import EnvironmentConfig, RunConfig
from reprocheck.cpus import NATIVE, Emulation, emulation
from reprocheck.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Plan:
    config: RunConfig
    environments: tuple[EnvironmentConfig, ...]
    fixtures: tuple[str, ...]  # paths relative to the fixtures folder, posix style
    emulations: Mapping[str, Emulation] = field(default_factory=dict)  # by environment name


def matches(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Glob selection used for fixtures and outputs alike."""
    included = any(fnmatch.fnmatchcase(name, pattern) for pattern in include)
    return included and not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)


def list_fixtures(config: RunConfig) -> tuple[str, ...]:
    folder = config.fixtures_dir
    if not folder.is_dir():
        raise ConfigError(
            f"{config.source}: fixtures.path {config.fixtures.path!r} is not a folder ({folder})",
            fix="create it or point [fixtures] path at your inputs",
        )
    spec = config.fixtures
    names = (p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file())
    return tuple(n for n in names if matches(n, spec.include, spec.exclude))


def make_plan(
    config: RunConfig, only: tuple[str, ...] = (), cpus: tuple[str, ...] | None = None
) -> Plan:
    """Select environments (all, or those named in ``only``, in config order), add a copy
    of each per CPU model in ``cpus`` (default ``[compare] cpus``), check each environment's
    CPU can be emulated, and list the fixtures."""
    for name in only:
        config.environment(name)  # raises a ConfigError naming the known environments
    chosen = tuple(e for e in config.environments if not only or e.name in only)
    chosen = with_cpus(chosen, tuple(cpus if cpus is not None else config.compare.cpus))
    emulations = {e.name: em for e in chosen
                  if (em := emulation(e.name, e.cpu, e.platform, str(config.source)))}  # fmt: skip
    fixtures = list_fixtures(config)
    if config.pipeline.callable and not fixtures:
        raise ConfigError(
            f"{config.source}: no fixture files in {config.fixtures_dir} match {spec_text(config)}",
            fix="add fixtures or change [fixtures] include/exclude",
        )
    return Plan(config=config, environments=chosen, fixtures=fixtures, emulations=emulations)


def with_cpus(
    environments: tuple[EnvironmentConfig, ...], cpus: tuple[str, ...]
) -> tuple[EnvironmentConfig, ...]:
    """Each native environment followed by a copy per CPU model (``bookworm@x86-64-v3``)."""
    if not cpus:
        return environments
    found: list[EnvironmentConfig] = []
    for env in environments:
        found.append(env)
        if env.cpu != NATIVE:
            continue
        for cpu in dict.fromkeys(cpus):
            if cpu != NATIVE:
                found.append(env.model_copy(update={"name": f"{env.name}@{cpu}", "cpu": cpu}))
    return tuple(found)


def spec_text(config: RunConfig) -> str:
    return f"include={list(config.fixtures.include)} exclude={list(config.fixtures.exclude)}"
