"""The environment fingerprint diff for people: only what differs between environments.

Reads the report's fingerprint summaries and, where it still exists, each environment's
full ``fingerprint.json`` (``fingerprint.file``) for the cv2 build lines and CPU flags.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprocheck.report.common import Report, fingerprint

SUMMARY_KEYS: tuple[str, ...] = (
    "os", "machine", "glibc", "python", "numpy", "cv2", "cpu_model",
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class DiffRow:
    label: str
    values: tuple[str | None, ...]  # one per environment; None when absent there


@dataclass(frozen=True, kw_only=True)
class EnvironmentDiff:
    environments: tuple[str, ...]
    rows: tuple[DiffRow, ...]  # versions, cv2 build lines, BLAS, env variables, CPU flags
    packages: tuple[DiffRow, ...]  # Debian and pip packages that differ or exist on one side


def _full(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The full fingerprint.json, or {} when it is gone (a moved or merged run)."""
    path = summary.get("file")
    try:
        data = json.loads(Path(str(path)).read_text()) if path else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _mapping(parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, Mapping) else {}


def _flat(summary: Mapping[str, Any], full: Mapping[str, Any]) -> dict[str, str | None]:
    """label -> value of one environment, for every row the diff may show."""
    values = {key: _text(summary.get(key)) for key in SUMMARY_KEYS}
    build = _mapping(_mapping(full, "cv2"), "build")
    values |= {f"cv2 build: {key}": _text(value) for key, value in build.items()}
    libraries = [Path(str(p)).name for p in _mapping(full, "blas").get("libraries") or []]
    values["BLAS libraries"] = " ".join(libraries) or None
    env = _mapping(summary, "env")
    values |= {f"env: {key}": _text(value) for key, value in env.items()}
    return values


def _cpu_flags(full: Mapping[str, Any]) -> set[str] | None:
    cpu = full.get("cpu")
    flags = cpu.get("flags") if isinstance(cpu, dict) else None
    return set(map(str, flags)) if isinstance(flags, list) else None


def _differing(labels: Sequence[str], per_env: Sequence[Mapping[str, str | None]]) -> list[DiffRow]:
    rows = []
    for label in labels:
        values = tuple(env.get(label) for env in per_env)
        if len(set(values)) > 1:
            rows.append(DiffRow(label=label, values=values))
    return rows


def _flag_row(flags: Sequence[set[str] | None]) -> list[DiffRow]:
    """One row: per environment, the CPU flags that not every environment has."""
    known = [f for f in flags if f is not None]
    if len(known) < 2:
        return []
    shared = set.intersection(*known)
    values = tuple(None if f is None else " ".join(sorted(f - shared)) or "-" for f in flags)
    if shared == set.union(*known):
        return []
    return [DiffRow(label="CPU flags (not in all)", values=values)]


def _union(keys: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for mapping in keys:
        seen |= dict.fromkeys(mapping)
    return list(seen)


def environment_diff(report: Report) -> EnvironmentDiff:
    """What differs between the environments that produced a fingerprint."""
    envs = [e for e in report.get("environments") or [] if fingerprint(e).get("packages")]
    summaries = [fingerprint(e) for e in envs]
    fulls = [_full(s) for s in summaries]
    flat = [_flat(s, f) for s, f in zip(summaries, fulls, strict=True)]
    packages = [dict(s.get("packages") or {}) for s in summaries]
    return EnvironmentDiff(
        environments=tuple(str(e.get("name")) for e in envs),
        rows=(*_differing(_union(flat), flat), *_flag_row([_cpu_flags(f) for f in fulls])),
        packages=tuple(_differing(sorted(_union(packages)), packages)),
    )
