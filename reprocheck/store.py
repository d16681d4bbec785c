"""Stored runs: the run.json manifest, ``reports/latest``, atomic writes, lookup by id."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reprocheck.errors import RunNotFoundError
from reprocheck.runner import EnvironmentResult, FixtureResult, RunResult

MANIFEST = "run.json"
MANIFEST_VERSION = 1
LATEST = "latest"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers never see a half-written file."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _env_json(env: EnvironmentResult, run_dir: Path) -> dict[str, Any]:
    data = asdict(env)
    data["outputs_dir"] = env.outputs_dir.relative_to(run_dir).as_posix()
    data["meta_dir"] = env.meta_dir.relative_to(run_dir).as_posix()
    data.pop("fingerprint")  # stored by the harness in meta/fingerprint.json
    return data


def save_run(result: RunResult) -> Path:
    """Write the manifest and point ``latest`` at the run."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "run_id": result.run_id,
        "config_source": str(result.config_source),
        "started": result.started,
        "environments": [_env_json(e, result.run_dir) for e in result.environments],
        "repeats": [_env_json(e, result.run_dir) for e in result.repeats],
    }
    path = result.run_dir / MANIFEST
    write_atomic(path, json.dumps(manifest, indent=1))
    point_latest(result.run_dir)
    return path


def point_latest(run_dir: Path) -> None:
    link = run_dir.parent / LATEST
    tmp = run_dir.parent / f".{LATEST}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    tmp.replace(link)


def _env_from_json(data: dict[str, Any], run_dir: Path) -> EnvironmentResult:
    meta = run_dir / data["meta_dir"]
    fingerprint_path = meta / "fingerprint.json"
    fingerprint = json.loads(fingerprint_path.read_text()) if fingerprint_path.is_file() else {}
    return EnvironmentResult(
        **{k: v for k, v in data.items() if k not in ("outputs_dir", "meta_dir", "fixtures")},
        outputs_dir=run_dir / data["outputs_dir"],
        meta_dir=meta,
        fingerprint=fingerprint,
        fixtures=tuple(FixtureResult(**f) for f in data.get("fixtures", [])),
    )


def load_run(run_dir: Path) -> RunResult:
    path = run_dir / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunNotFoundError(f"{path} is not a reprocheck run: {exc}") from exc
    resolved = run_dir.resolve()
    return RunResult(
        run_id=data["run_id"],
        run_dir=resolved,
        config_source=Path(data["config_source"]),
        started=data["started"],
        environments=tuple(_env_from_json(e, resolved) for e in data["environments"]),
        repeats=tuple(_env_from_json(e, resolved) for e in data.get("repeats", [])),
    )


def find_run(reports_dir: Path, ref: str | None) -> Path:
    """A run folder from an id, a path, or None/'latest' for the newest run."""
    candidates = [Path(ref), reports_dir / ref] if ref else [reports_dir / LATEST]
    for candidate in candidates:
        if (candidate / MANIFEST).is_file():
            return candidate.resolve()
    what = f"run {ref!r}" if ref else "any run"
    raise RunNotFoundError(
        f"no stored {what} in {reports_dir}", fix="run 'reprocheck run' first or pass a run folder"
    )
