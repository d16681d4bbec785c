"""Stored runs built by hand for the unit tier: run folders laid out as runner.py writes them
(``environments/<name>/outputs`` and ``meta``), without any container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from reprocheck.run_model import EnvironmentResult, FixtureResult, RunResult


def stored_env(
    run_dir: Path,
    name: str,
    outputs: dict[str, dict[str, Any]],
    *,
    fingerprint: dict[str, Any] | None = None,
    folder: Path | None = None,
    repeat: int = 1,
) -> EnvironmentResult:
    """An ok environment whose ``outputs`` (fixture -> arrays) are written as ``<fixture>.npz``."""
    folder = folder or run_dir / "environments" / name
    out, meta = folder / "outputs", folder / "meta"
    out.mkdir(parents=True, exist_ok=True)
    meta.mkdir(parents=True, exist_ok=True)
    for fixture, arrays in outputs.items():
        np.savez(out / f"{fixture}.npz", **arrays)
    fingerprint = fingerprint or {"os": {"VERSION_CODENAME": name}}
    (meta / "fingerprint.json").write_text(json.dumps(fingerprint))
    return EnvironmentResult(
        name=name,
        image=f"img/{name}:1",
        image_ref=f"img/{name}:1",
        image_id=f"sha256:{name}",
        status="ok",
        error=None,
        outputs_dir=out,
        meta_dir=meta,
        fingerprint=fingerprint,
        fixtures=tuple(FixtureResult(fixture=f, status="ok", seconds=0.1) for f in outputs),
        seconds=1.5,
        repeat=repeat,
    )


def stored_run(
    run_dir: Path,
    environments: tuple[EnvironmentResult, ...],
    *,
    started: str = "2024-05-01T10:00:00+00:00",
    repeats: tuple[EnvironmentResult, ...] = (),
) -> RunResult:
    return RunResult(
        run_id=run_dir.name,
        run_dir=run_dir,
        config_source=run_dir.parent / "reprocheck.toml",
        started=started,
        environments=environments,
        repeats=repeats,
    )
