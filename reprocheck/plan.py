"""RunConfig -> Plan: which environments run, over which fixtures."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from reprocheck.config import EnvironmentConfig, RunConfig
from reprocheck.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Plan:
    config: RunConfig
    environments: tuple[EnvironmentConfig, ...]
    fixtures: tuple[str, ...]  # paths relative to the fixtures folder, posix style


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


def make_plan(config: RunConfig, only: tuple[str, ...] = ()) -> Plan:
    """Select environments (all, or those named in ``only``, in config order) and fixtures."""
    for name in only:
        config.environment(name)  # raises a ConfigError naming the known environments
    chosen = tuple(e for e in config.environments if not only or e.name in only)
    fixtures = list_fixtures(config)
    if config.pipeline.callable and not fixtures:
        raise ConfigError(
            f"{config.source}: no fixture files in {config.fixtures_dir} match {spec_text(config)}",
            fix="add fixtures or change [fixtures] include/exclude",
        )
    return Plan(config=config, environments=chosen, fixtures=fixtures)


def spec_text(config: RunConfig) -> str:
    return f"include={list(config.fixtures.include)} exclude={list(config.fixtures.exclude)}"
