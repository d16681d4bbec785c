"""RunConfig -> Plan: which environments run, over which fixtures."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

from reprocheck.config import EnvironmentConfig, RunConfig
from reprocheck.cpus import NATIVE, Emulation, emulation
from reprocheck.errors import ConfigError

CPU_SEPARATOR = "@"  # a CPU model's copy of an environment: bookworm@x86-64-v2


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
                name = f"{env.name}{CPU_SEPARATOR}{cpu}"
                found.append(env.model_copy(update={"name": name, "cpu": cpu}))
    return tuple(found)


def environment_plan(config: RunConfig, name: str, fixtures: tuple[str, ...]) -> Plan:
    """A plan of one environment of a stored run over ``fixtures`` (explain's experiments):
    a configured environment, or a CPU model's copy of one (``bookworm@x86-64-v2``, made by
    ``[compare] cpus`` or ``run --cpus``), with its emulation."""
    env = _configured(config, name)
    found = emulation(env.name, env.cpu, env.platform, str(config.source))
    return Plan(config=config, environments=(env,), fixtures=fixtures,
                emulations={env.name: found} if found else {})  # fmt: skip


def _configured(config: RunConfig, name: str) -> EnvironmentConfig:
    base, at, cpu = name.rpartition(CPU_SEPARATOR)
    known = {e.name: e for e in config.environments}
    if at and name not in known and base in known:
        copies = with_cpus((known[base],), (cpu,))
        if len(copies) == 2:
            return copies[1]
    return config.environment(name)  # a ConfigError naming the known environments


def spec_text(config: RunConfig) -> str:
    return f"include={list(config.fixtures.include)} exclude={list(config.fixtures.exclude)}"
