"""Sharding: an environment's fixtures split across containers, the results joined into
what one container gives.

A callable pipeline treats fixtures one by one, seeded the same way before each, and writes
one output file and one probe file per fixture: shards that each see a slice of the fixtures
write disjoint files, and joining them gives the files of an unsharded run byte for byte.
``status.json`` is joined fixture by fixture; the fingerprint is the first shard's (every
shard's is kept next to it when they differ, as shards spread over unlike hosts do).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reprocheck.run_model import EnvironmentResult, FixtureResult
from reprocheck.safe_files import read_json_object

SHARDS_DIR = "shards"
META_LIMIT = 256 << 20
# Fingerprint keys that describe the process, not what it computes with.
_VOLATILE = frozenset({"env"})


def split(fixtures: Sequence[str], shards: int) -> list[tuple[str, ...]]:
    """``fixtures`` in ``shards`` contiguous slices of near-equal count (no empty slice:
    fewer fixtures than shards gives fewer slices)."""
    count = max(1, min(shards, len(fixtures)))
    size, extra = divmod(len(fixtures), count)
    slices, start = [], 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        slices.append(tuple(fixtures[start:end]))
        start = end
    return slices


def _move_tree(source: Path, target: Path) -> None:
    """Move every file under ``source`` to the same place under ``target``."""
    if not source.is_dir():
        return
    for dirpath, _dirs, files in os.walk(source):
        rel = Path(dirpath).relative_to(source)
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            (Path(dirpath) / name).replace(target / rel / name)


def _json(path: Path) -> dict[str, Any]:
    try:
        return read_json_object(path, limit=META_LIMIT)
    except Exception:  # a shard that crashed before writing it: nothing to join
        return {}


def join(folder: Path, shard_folders: Sequence[Path], spec: dict[str, Any]) -> None:
    """Join the shards' folders into ``folder`` (outputs, meta, log), as one container would
    have left them; ``spec`` is the unsharded run's spec.json."""
    outputs, meta = folder / "outputs", folder / "meta"
    status: dict[str, Any] = {"fixtures": {}, "harness_error": None, "command": None}
    fingerprints: list[dict[str, Any]] = []
    transfers: dict[str, Any] = {}
    logs: list[str] = []
    for k, shard in enumerate(shard_folders):
        _move_tree(shard / "outputs", outputs)
        _move_tree(shard / "meta" / "probes", meta / "probes")
        _join_status(status, _json(shard / "meta" / "status.json"), k)
        fingerprints.append(_json(shard / "meta" / "fingerprint.json"))
        transfer = _json(shard / "meta" / "transfer.json")
        if transfer:
            transfers[f"shard {k}"] = transfer
        log = shard / "log.txt"
        if log.is_file():
            logs.append(f"==> shard {k} <==\n{log.read_text(errors='replace')}")
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "status.json").write_text(json.dumps(status, indent=1, sort_keys=True))
    (meta / "spec.json").write_text(json.dumps(spec, indent=1))
    fingerprint = next((f for f in fingerprints if f), {})
    if fingerprint:
        (meta / "fingerprint.json").write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
    differing = [k for k, f in enumerate(fingerprints) if f and _stable(f) != _stable(fingerprint)]
    if differing:
        (meta / "shard-fingerprints.json").write_text(json.dumps(fingerprints, indent=1))
    if transfers:  # what each shard copied to and from another machine's engine
        (meta / "transfer.json").write_text(json.dumps(transfers, indent=1))
    (folder / "log.txt").write_text("\n".join(logs))


def _join_status(status: dict[str, Any], part: dict[str, Any], k: int) -> None:
    """Shard ``k``'s status.json into ``status``: fixtures, first start, last finish."""
    fixtures = part.get("fixtures")
    if isinstance(fixtures, dict):
        status["fixtures"].update(fixtures)
    for key in ("started", "finished"):
        values = [v for v in (status.get(key), part.get(key)) if isinstance(v, int | float)]
        if values:
            status[key] = min(values) if key == "started" else max(values)
    if part.get("harness_error") and not status["harness_error"]:
        status["harness_error"] = f"shard {k}: {part['harness_error']}"


def _stable(fingerprint: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fingerprint.items() if k not in _VOLATILE}


def joined_fixtures(
    parts: Sequence[tuple[Sequence[str], EnvironmentResult]], failed: frozenset[str]
) -> list[FixtureResult]:
    """Every fixture's result, shard by shard: as its shard reported it, but an error naming
    the shard's failure when the shard ended in a ``failed`` status before running it (or
    said nothing of it)."""
    fixtures: list[FixtureResult] = []
    for part, result in parts:
        known = {f.fixture: f for f in result.fixtures}
        for name in part:
            fixture = known.get(name)
            if fixture is None or (result.status in failed and fixture.status == "not_run"):
                why = f"its shard failed: {result.error}"[:300]
                fixture = FixtureResult(fixture=name, status="error", error=why)
            fixtures.append(fixture)
    return fixtures


def remove(folder: Path) -> None:
    shutil.rmtree(folder / SHARDS_DIR, ignore_errors=True)
