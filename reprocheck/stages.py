"""The stages after the containers, shared by the CLI and the Python API: the matrix (with a
baseline's pairs), the files a run writes, and the exit code. Each late stage (history,
report files) fails on its own and is handed to the caller's ``on_failure``."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from reprocheck.config import RunConfig
from reprocheck.errors import EXIT_DRIFT, EXIT_ERROR, EXIT_OK
from reprocheck.history import append_history, config_name, history_file, history_lines
from reprocheck.matrix import Matrix, build_matrix, environment_pairs
from reprocheck.report.json_report import report_dict, write_json
from reprocheck.report.paths import NO_EXTRA_REPORTS, ReportPaths
from reprocheck.report.picture_cache import pictures_folder
from reprocheck.report.trend import trend_svg
from reprocheck.report.writers import write_reports
from reprocheck.reuse import forget
from reprocheck.run_model import RunResult
from reprocheck.store import COMPARISONS_FILE, REPORT_FILE
from reprocheck.stored import reference_pairs, renamed

T = TypeVar("T")
OnFailure = Callable[[str, Exception], None]


logger = logging.getLogger(__name__)


def matrix_for(
    config: RunConfig, result: RunResult, golden: RunResult | None = None, name: str | None = None
) -> Matrix:
    """The run's own pairs, plus each environment against baseline ``name``'s same one
    (what ``reprocheck run --baseline NAME`` compares)."""
    if golden is None or name is None:
        return build_matrix(config, result)
    references = renamed(golden, name)
    own = environment_pairs([e.name for e in result.environments], config.compare.mode)
    against = reference_pairs(references, result, name)
    compared = {cand for _base, cand in against}
    unmatched = [e.name for e in result.environments if e.name not in compared]
    if unmatched:
        logger.warning("baseline %s holds no %s (it holds %s): not compared with the baseline",
                       name, ", ".join(unmatched),
                       ", ".join(e.name for e in golden.environments) or "nothing")  # fmt: skip
    return build_matrix(config, result, references=references, pairs=own + against)


def derived_run(config: RunConfig, result: RunResult) -> RunResult:
    """``result`` itself when ``config`` is the one it ran with; else a derived run whose
    reports go to ``<run>/derived/<config>/`` and whose history rows are its own
    (``<run id>@<config>``), so comparing with another config never rewrites the run."""
    if result.config_source.resolve() == config.source.resolve():
        return result
    name = config_name(config).replace("/", "_")
    folder = result.run_dir / "derived" / name
    folder.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(result, run_dir=folder, run_id=f"{result.run_id}@{name}",
                               config_source=config.source)  # fmt: skip


def trend_of(config: RunConfig) -> str | None:
    """The drift-per-run SVG of the project's history."""
    lines = history_lines(history_file(config), config_name(config))
    return trend_svg([(line.started, line.run_id, line.drift) for line in lines])


@dataclass(frozen=True, kw_only=True)
class RunFiles:
    data: dict[str, Any]  # the report
    history: Path | None  # None when the history stage failed
    html: Path | None  # None when the report files failed

    @property
    def complete(self) -> bool:
        return self.history is not None and self.html is not None


def write_run_files(
    config: RunConfig, result: RunResult, matrix: Matrix, on_failure: OnFailure,
    paths: ReportPaths = NO_EXTRA_REPORTS, json_path: Path | None = None,
) -> RunFiles:  # fmt: skip
    """report.json and comparisons.parquet (these must succeed), then the history row and
    the other report files, each on its own: a history that cannot be written (a read-only
    folder, a disk full) must not cost the HTML report."""
    forget(result.run_dir)  # reports written anew no longer stand for the run's reuse key
    with ThreadPoolExecutor(max_workers=1) as pool:  # Arrow encodes without the GIL
        parquet = pool.submit(matrix.comparisons.write_parquet,
                              result.run_dir / COMPARISONS_FILE)  # fmt: skip
        data = report_dict(result, matrix, references=matrix.references)
        parquet.result()
    write_json(result.run_dir / REPORT_FILE, data)
    if json_path:
        write_json(json_path, data)
    history = _stage(on_failure, "history", lambda: append_history(config, result, matrix))
    trend = _stage(on_failure, "trend", lambda: trend_of(config)) if history else None
    html = _stage(on_failure, "reports",
                  lambda: write_reports(data, result.run_dir, paths, trend=trend,
                                        pictures=pictures_folder(config.reports_dir)))  # fmt: skip
    return RunFiles(data=data, history=history, html=html)


def _stage(on_failure: OnFailure, name: str, func: Callable[[], T]) -> T | None:
    try:
        return func()
    except Exception as exc:  # the report of a stored run is never lost to one stage
        on_failure(name, exc)
    return None


def exit_code(result: RunResult, matrix: Matrix) -> int:
    """0 consistent, 1 drift, 2 an environment or an output could not be compared."""
    if matrix.has_errors or any(env.status != "ok" for env in result.environments):
        return EXIT_ERROR
    return EXIT_DRIFT if matrix.has_drift else EXIT_OK
