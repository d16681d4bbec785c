"""A run that changed nothing is the run it repeats.

When every container result of a run came from the result cache, and the config file,
reprocheck's own code and the environments are those of an earlier complete run, its
comparisons and reports would be that run's again: ``reprocheck run`` then points at that
run (its reports, its exit code) instead of comparing and rendering everything anew, and
adds no history row (the earlier run's rows are that result already). ``--no-cache``,
``--out``, ``--baseline``, ``--rebuild`` and ``--refresh`` always make a run of their own.

A complete run is recorded twice, so neither half alone is trusted:

* ``<run>/reuse.json``: the run's key, exit code and each environment's outputs as they were
  compared (names, sizes, modification times). Writing the run's reports again
  (``reprocheck compare``) removes it first: reports compared under another config are no
  longer the key's; outputs removed or replaced since make the run compare again.
* ``reports/.cache/reuse/<key>.json``: which run that is (a run folder beside the others).

The key is the sha256 of the container results' cache keys, the environments (names, in
order, and CPU models), the config file's bytes and reprocheck's package files.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprocheck import __version__
from reprocheck.cache import (
    CACHE_DIR,
    FileHashes,
    RunCache,
    files_digest,
    json_digest,
    tree_digest,
    tree_listing,
)
from reprocheck.config import RunConfig
from reprocheck.errors import EXIT_DRIFT, EXIT_ERROR, EXIT_OK, UnsafeFileError
from reprocheck.run_model import RunResult
from reprocheck.safe_files import read_json_object, read_regular_bytes
from reprocheck.store import (
    COMPARISONS_FILE,
    HTML_FILE,
    MANIFEST,
    MARKDOWN_FILE,
    REPORT_FILE,
    point_latest,
    write_atomic,
)

logger = logging.getLogger(__name__)

REUSE_VERSION = 1
REUSE_FILE = "reuse.json"  # in a run folder
REUSE_DIR = "reuse"  # under the cache folder
REPORT_FILES = (REPORT_FILE, MARKDOWN_FILE, HTML_FILE)  # what a complete run holds
_RECORD_BYTES = 1 << 16
_REPORT_BYTES = 256 << 20
_PACKAGE = Path(__file__).parent


@dataclass(frozen=True, kw_only=True)
class Reused:
    """The earlier run a run repeats: its folder, report (as report.json holds it) and exit
    code."""

    run_dir: Path
    report: dict[str, Any]
    exit_code: int
    files: dict[str, bytes]  # REPORT_FILES as the run wrote them


def run_key(
    config: RunConfig, cache: RunCache, result: RunResult, models: tuple[str, ...] | None
) -> str | None:
    """The key of ``result``'s comparisons and reports; None when a container result was
    neither restored from the cache nor stored in it, or an environment failed."""
    settled = cache.settled()
    if settled is None:
        return None
    if result.interrupted or any(env.status != "ok" for env in result.environments):
        return None
    hashes = cache.hashes
    code = _code_digest(hashes)
    hashes.save()
    return json_digest({
        "reuse": REUSE_VERSION, "reprocheck": __version__, "code": code,
        "config": files_digest([config.source], hashes), "results": list(settled.entries),
        "environments": [env.name for env in result.environments],
        "cpus": list(models or ()),
    })  # fmt: skip


def all_restored(cache: RunCache) -> bool:
    """Whether every container result of this run came from the cache (none ran)."""
    settled = cache.settled()
    return settled is not None and settled.all_restored


def _code_digest(hashes: FileHashes) -> str:
    """reprocheck's own files (a changed comparison or report is a change of its own)."""
    return tree_digest(_PACKAGE, hashes)


def _pointer(config: RunConfig, key: str) -> Path:
    return config.reports_dir / CACHE_DIR / REUSE_DIR / f"{key}.json"


def record(config: RunConfig, key: str, run_dir: Path, exit_code: int) -> None:
    """Remember that ``run_dir`` (complete, its reports written) is the result of ``key``.
    A failure to write only costs the next run its shortcut."""
    if exit_code >= EXIT_ERROR or run_dir.parent != config.reports_dir.resolve():
        return
    try:
        record = {"key": key, "exit_code": exit_code, "outputs": _outputs(run_dir)}
        write_atomic(run_dir / REUSE_FILE, _json(record))
        write_atomic(_pointer(config, key), _json({"run": run_dir.name}))
    except OSError as exc:
        logger.warning("cannot record run %s for reuse (%s)", run_dir.name, exc.strerror or exc)


def forget(run_dir: Path) -> None:
    """``run_dir``'s reports are being written again: it no longer stands for its key."""
    (run_dir / REUSE_FILE).unlink(missing_ok=True)


def find(config: RunConfig, key: str) -> Reused | None:
    """The complete earlier run recorded under ``key``, or None (a damaged, moved or
    half-removed one is passed over: the run then compares and reports as usual)."""
    run_dir = _standing(config.reports_dir.resolve(), _pointer(config, key))
    if run_dir is None:
        return None
    try:
        own = read_json_object(run_dir / REUSE_FILE, _RECORD_BYTES)
        files = {name: read_regular_bytes(run_dir / name, _REPORT_BYTES) for name in REPORT_FILES}
        report = json.loads(files[REPORT_FILE])
        outputs = _outputs(run_dir) if _whole(run_dir, report) else None
    except (OSError, UnsafeFileError, ValueError, RecursionError):
        return None
    code = own.get("exit_code")
    if code not in (EXIT_OK, EXIT_DRIFT) or isinstance(code, bool):
        return None
    if outputs is None or own.get("outputs") != outputs:  # an output removed or rewritten
        return None
    return Reused(run_dir=run_dir, report=report, exit_code=code, files=files)


def _outputs(run_dir: Path) -> dict[str, str]:
    """Each environment's outputs folder as it stands (names, sizes, modification times: no
    byte read), so a run whose outputs changed since its reports were written is compared
    again rather than repeated."""
    folder = run_dir / "environments"
    return {env.name: tree_listing(env / "outputs") for env in sorted(folder.iterdir())
            if (env / "outputs").is_dir()}  # fmt: skip


def _whole(run_dir: Path, report: Any) -> bool:
    """Whether ``report`` is ``run_dir``'s own (not a copy's from another folder) and the run
    still holds what compare and explain read: its manifest, comparisons and every
    environment's outputs."""
    if not isinstance(report, dict) or report.get("run_id") != run_dir.name:
        return False
    if report.get("run_dir") != str(run_dir):  # a copied or moved project: compare anew
        return False
    envs = report.get("environments")
    if not isinstance(envs, list) or not all(isinstance(e, dict) for e in envs):
        return False
    names = [e.get("name") for e in envs]
    if not all(isinstance(name, str) and name and "/" not in name for name in names):
        return False
    kept = [run_dir / MANIFEST, run_dir / COMPARISONS_FILE]
    folders = [run_dir / "environments" / str(name) / "outputs" for name in names]
    return all(p.is_file() for p in kept) and all(p.is_dir() for p in folders)


def _standing(reports: Path, pointer: Path) -> Path | None:
    """The run folder ``pointer`` names when that run still stands for the pointer's key."""
    try:
        name = read_json_object(pointer, _RECORD_BYTES).get("run")
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            return None
        if (reports / name).is_symlink():
            return None
        own = read_json_object(reports / name / REUSE_FILE, _RECORD_BYTES)
    except (OSError, UnsafeFileError):
        return None
    return reports / name if own.get("key") == pointer.stem else None


def adopt(reused: Reused, new_run_dir: Path) -> None:
    """Make ``reused`` the project's latest run in place of ``new_run_dir`` (whose
    environments the cache restored; nothing else of it is kept)."""
    shutil.rmtree(new_run_dir, ignore_errors=True)
    point_latest(reused.run_dir)


def prune(cache_folder: Path, *, everything: bool = False) -> int:
    """Remove records whose run is gone or no longer stands for the key (every record with
    ``everything``); their count."""
    folder = cache_folder / REUSE_DIR
    pointers = sorted(folder.glob("*.json")) if folder.is_dir() else []
    doomed = [p for p in pointers if everything or _standing(cache_folder.parent, p) is None]
    removed = 0
    for pointer in doomed:
        try:
            pointer.unlink(missing_ok=True)
        except OSError:  # a folder of that name, a read-only folder: left as it is
            continue
        removed += 1
    return removed


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=1)
