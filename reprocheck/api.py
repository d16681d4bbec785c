"""The Python API: run a configuration, load a stored run, compare two arrays, and ask the
resulting :class:`Report` what drifted.

>>> from reprocheck import api
>>> report = api.run("reprocheck.toml")              # what `reprocheck run` does
>>> report.verdict                                   # "consistent", "drift" or "error"
>>> report.drifted()                                 # outputs whose verdict fails
>>> report.metric("val.json/accuracy")               # {"bookworm": 0.912, "trixie": 0.912}
>>> api.compare(a, b, atol=1e-6).verdict             # one pair of arrays

Nothing here prints or exits: failures are :class:`~reprocheck.errors.ReprocheckError`
subclasses carrying a one-line message and a fix. ``docs/api.md`` has the whole tour.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reprocheck.cache import RunCache
from reprocheck.compare import ArrayComparison, DecisionRule, Tolerance, compare_arrays
from reprocheck.comparisons import OutputComparison, item_of, severity_order
from reprocheck.config import OutputsConfig, RunConfig, load_config
from reprocheck.engine import BUILD_ENGINE, ContainerEngine, get_engine
from reprocheck.errors import (
    EXIT_DRIFT,
    EXIT_ERROR,
    EXIT_OK,
    RunNotFoundError,
    StoredRunError,
)
from reprocheck.matrix import Matrix
from reprocheck.output_store import OutputStore, open_store
from reprocheck.plan import make_plan
from reprocheck.progress import ProgressCallback, silent
from reprocheck.refresh import recorder
from reprocheck.report.json_report import SCHEMA_VERSION, report_dict
from reprocheck.run_model import USABLE, RunResult, new_run_id
from reprocheck.runner import Runner
from reprocheck.stages import matrix_for, write_run_files
from reprocheck.store import (
    COMPARISONS_FILE,
    HTML_FILE,
    MANIFEST,
    REPORT_FILE,
    find_run,
    load_run,
    save_run,
)
from reprocheck.stored import load_baseline
from reprocheck.vocabulary import FAILING

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ArrayComparison",
    "DecisionChange",
    "Report",
    "ReportVerdict",
    "Tolerance",
    "assert_consistent",
    "assert_metric_within",
    "assert_no_decision_changes",
    "compare",
    "describe",
    "load",
    "run",
]

logger = logging.getLogger(__name__)
ReportVerdict = Literal["consistent", "drift", "error"]
PathLike = str | os.PathLike[str]
LISTED_OFFENDERS = 20  # offenders an assertion message lists before "... and N more"
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class DecisionChange:
    """One output whose downstream decisions (a class, labels, boxes) changed in one pair."""

    output: str
    baseline: str
    candidate: str
    kind: str  # "argmax", "labels" or "boxes"
    changed: int
    total: int
    min_margin: float | None  # the closest call's margin in the baseline, when known

    def __str__(self) -> str:
        margin = "" if self.min_margin is None else f", closest margin {self.min_margin:.3g}"
        return (f"{self.output} {self.baseline} -> {self.candidate}: {self.changed} of "
                f"{self.total} {self.kind} decisions changed{margin}")  # fmt: skip


class Report:
    """A compared run: the report dict (``report.json``, schema 2), every comparison (the
    ``comparisons.parquet`` table) and, when known, the run it describes.

    Made by :func:`run`, :func:`load` or :meth:`Report.read`; answers which outputs
    drifted, whether any decision changed, and a scalar metric's value per environment.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        comparisons: pa.Table,
        *,
        run: RunResult | None = None,
        outputs: OutputsConfig | None = None,
        problems: Iterable[str] = (),
        path: Path | None = None,
    ) -> None:
        self.data: dict[str, Any] = dict(data)
        self.table: pa.Table = comparisons
        self.run = run
        self.problems: tuple[str, ...] = tuple(problems)  # late stages that failed (history...)
        self._outputs = outputs or OutputsConfig()
        self._path = path or (run.run_dir if run is not None else Path(self.data["run_dir"]))
        entries = [*self.data["environments"], *self.data.get("references", [])]
        # Where each environment's outputs are: the run's own folders when the run is known
        # (a run folder copied elsewhere, say a CI artifact), else as the report recorded.
        self._folders = {e["name"]: Path(e["outputs_dir"]) for e in entries
                         if e["status"] in USABLE}  # fmt: skip
        for env in () if run is None else run.environments:
            if env.name in self._folders:
                self._folders[env.name] = env.outputs_dir

    @classmethod
    def read(cls, run_dir: PathLike) -> Report:
        """The report a run folder holds (``report.json`` and ``comparisons.parquet`` as
        ``reprocheck run`` or ``compare`` wrote them), without a configuration."""
        folder = Path(run_dir).resolve()
        path = folder / REPORT_FILE
        if not path.is_file():
            raise RunNotFoundError(f"{folder} has no {REPORT_FILE}",
                                   fix="pass a run folder that 'reprocheck run' wrote")  # fmt: skip
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StoredRunError(f"{path} cannot be read: {exc}") from exc
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            found = data.get("schema_version") if isinstance(data, dict) else None
            raise StoredRunError(
                f"{path} is not a report of schema {SCHEMA_VERSION} (schema_version {found!r})",
                fix=f"'reprocheck compare --run {folder}' writes it again",
            )
        table = _read_comparisons(folder / COMPARISONS_FILE)
        run = load_run(folder) if (folder / MANIFEST).is_file() else None
        return cls(data, table, run=run, path=folder)

    # --- what the run was -------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The run folder (report.json, report.html, comparisons.parquet, outputs)."""
        return self._path

    @property
    def run_id(self) -> str:
        return str(self.data["run_id"])

    @property
    def environments(self) -> list[str]:
        """The run's environments, in configured order (the first is the baseline)."""
        return [env["name"] for env in self.data["environments"]]

    @property
    def references(self) -> list[str]:
        """Stored environments compared with the run (``BASELINE/<env>``)."""
        return [env["name"] for env in self.data.get("references", [])]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Every (baseline, candidate) pair compared."""
        return [(base, cand) for base, cand in self.data["pairs"]]

    @property
    def summary(self) -> dict[str, int]:
        """How many comparisons have each verdict."""
        return dict(self.data["summary"])

    def failed_environments(self) -> dict[str, str]:
        """Environments that did not finish cleanly: name -> "status: error"."""
        return {env["name"]: f"{env['status']}: {env.get('error') or ''}".rstrip(": ")
                for env in self.data["environments"] if env["status"] != "ok"}  # fmt: skip

    # --- verdicts -----------------------------------------------------------------------

    @property
    def verdict(self) -> ReportVerdict:
        """The run's verdict: ``"error"`` when an environment failed or an output could not
        be read or compared; else ``"drift"`` when an output drifted beyond tolerance, is
        incomparable or missing; else ``"consistent"`` (``reprocheck run`` exits 2, 1, 0)."""
        if self.failed_environments() or self._any({"error"}):
            return "error"
        return "drift" if self._any(FAILING) else "consistent"

    @property
    def exit_code(self) -> int:
        """The exit code ``reprocheck run`` gives this report (a late stage that failed,
        listed in :attr:`problems`, is an error too)."""
        codes = {"consistent": EXIT_OK, "drift": EXIT_DRIFT, "error": EXIT_ERROR}
        return EXIT_ERROR if self.problems else codes[self.verdict]

    def drifted(self, *, candidate: str | None = None) -> list[str]:
        """Output names with a failing verdict (drift, incomparable, missing) in any pair,
        or in the pairs whose candidate is ``candidate``; every comparison counts, not only
        the ones report.json lists."""
        return self._outputs_with(FAILING, candidate)

    def errors(self, *, candidate: str | None = None) -> list[str]:
        """Output names that could not be read or compared ("*" stands for a whole
        environment that produced nothing)."""
        return self._outputs_with({"error"}, candidate)

    def failing(self) -> list[OutputComparison]:
        """Every failing or erroneous comparison, worst first."""
        rows = self.table.filter(pc.is_in(self.table["verdict"], _verdicts(FAILING | {"error"})))
        return [item_of(row) for row in rows.take(severity_order(rows)).to_pylist()]

    def decisions_changed(self) -> int:
        """How many downstream decisions changed, over every output and pair."""
        return sum(change.changed for change in self.decision_changes())

    def decision_changes(self, pattern: str = "*") -> list[DecisionChange]:
        """The outputs (matching ``pattern``) whose decisions changed, most changes first."""
        table = self.table.filter(pc.is_valid(self.table["decision"]))
        found = []
        for row in table.select(["output", "baseline", "candidate", "decision"]).to_pylist():
            decision = row["decision"]
            if decision["decisions_changed"] and fnmatch.fnmatchcase(row["output"], pattern):
                found.append(DecisionChange(
                    output=row["output"], baseline=row["baseline"], candidate=row["candidate"],
                    kind=decision["kind"], changed=decision["decisions_changed"],
                    total=decision["total"], min_margin=decision["min_margin"],
                ))  # fmt: skip
        return sorted(found, key=lambda change: -change.changed)

    # --- values -------------------------------------------------------------------------

    def metric(self, name: str) -> dict[str, float]:
        """A scalar output's value per environment (references included), read from the
        stored outputs; environments without it are left out. Raises KeyError when no
        environment has ``name`` and ValueError when it is not a scalar."""
        found: dict[str, float] = {}
        for env, store in self._stores():
            if name in store:
                found[env] = _scalar(name, store.load(name))
        if not found:
            raise KeyError(f"no environment of run {self.run_id} has an output named {name!r}")
        return found

    def metrics(self, pattern: str = "*") -> dict[str, dict[str, float]]:
        """Every scalar output (one element) matching the glob ``pattern``: name ->
        environment -> value. Outputs of more than one element are left out."""
        found: dict[str, dict[str, float]] = {}
        for env, store in self._stores():
            ids, layouts = store.layout_ids()
            single = np.array([math.prod(shape) == 1 for _dtype, shape in layouts] + [False])
            rows = np.flatnonzero(single[ids])  # ids -1 (unreadable) pick the False
            names = store.table["name"].take(pa.array(rows)).to_pylist()
            for row, name in zip(rows.tolist(), names, strict=True):
                if fnmatch.fnmatchcase(name, pattern):
                    found.setdefault(name, {})[env] = _scalar(name, store.load_at(row))
        return dict(sorted(found.items()))

    def metric_tolerances(self) -> dict[str, tuple[float, float]]:
        """The ``[metrics]`` tolerance (atol, rtol) of each listed scalar output that has
        one, as the report recorded it."""
        found = {}
        for entry in self.data.get("metrics") or []:
            if entry.get("atol") is not None or entry.get("rtol") is not None:
                found[str(entry["output"])] = (float(entry.get("atol") or 0.0),
                                               float(entry.get("rtol") or 0.0))  # fmt: skip
        return found

    def array(self, name: str, environment: str) -> npt.NDArray[Any]:
        """One stored output of one environment (or reference), as an array."""
        for env, store in self._stores():
            if env == environment and name in store:
                return store.load(name)
        raise KeyError(f"{environment!r} has no output named {name!r} in run {self.run_id}")

    def comparisons(self) -> pd.DataFrame:
        """Every comparison as a pandas DataFrame, one row per output and pair (the columns
        of ``comparisons.parquet``: output, baseline, candidate, verdict, max_abs, ...)."""
        return self.table.to_pandas()

    def headline(self) -> str:
        """One line: ``run <id>: drift (2 identical, 1 drift)``."""
        counts = sorted(self.summary.items(), key=lambda item: -item[1])
        shown = ", ".join(f"{count} {verdict}" for verdict, count in counts) or "no comparisons"
        return f"run {self.run_id}: {self.verdict} ({shown})"

    def __repr__(self) -> str:
        return (f"<Report {self.run_id}: {self.verdict}, {len(self.environments)} "
                f"environments, {self.table.num_rows} comparisons>")  # fmt: skip

    # --- internals ----------------------------------------------------------------------

    def _any(self, verdicts: Iterable[str]) -> bool:
        if not self.table.num_rows:
            return False
        return pc.any(pc.is_in(self.table["verdict"], _verdicts(verdicts))).as_py() is True

    def _outputs_with(self, verdicts: Iterable[str], candidate: str | None) -> list[str]:
        table = self.table.filter(pc.is_in(self.table["verdict"], _verdicts(verdicts)))
        if candidate is not None:
            table = table.filter(pc.equal(table["candidate"], candidate))
        return sorted(set(table["output"].to_pylist()))

    def _stores(self) -> Iterator[tuple[str, OutputStore]]:
        """(name, store) of each environment and reference that produced outputs."""
        for name, folder in self._folders.items():
            if not folder.is_dir():
                continue
            store = open_store(folder, self._outputs)
            try:
                yield name, store
            finally:
                store.close()


def _verdicts(verdicts: Iterable[str]) -> pa.Array:
    return pa.array(sorted(verdicts), type=pa.string())


def _scalar(name: str, array: npt.NDArray[Any]) -> float:
    if array.size != 1:
        raise ValueError(f"{name} is not a scalar: shape {array.shape}")
    value = array.reshape(-1)[0]
    if np.iscomplexobj(value):
        raise ValueError(f"{name} is complex ({value}), not a real scalar")
    return float(value)


def _read_comparisons(path: Path) -> pa.Table:
    if not path.is_file():
        raise StoredRunError(
            f"{path} is missing", fix=f"'reprocheck compare --run {path.parent}' writes it again"
        )
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise StoredRunError(f"{path} cannot be read: {exc}") from exc


# --- run, load, compare ---------------------------------------------------------------------


def _config(config_path: PathLike | None) -> RunConfig:
    return load_config(None if config_path is None else Path(config_path))


def run(
    config_path: PathLike | None = None,
    *,
    envs: Iterable[str] = (),
    out: PathLike | None = None,
    cache: bool = True,
    rebuild: bool = False,
    refresh: bool = False,
    jobs: int | None = None,
    baseline: str | None = None,
    progress: ProgressCallback = silent,
    engine: ContainerEngine | None = None,
) -> Report:
    """Run the configuration as ``reprocheck run`` does and return its report.

    Builds missing images, runs each environment (or reuses its cached result unless
    ``cache`` is false), stores the run under ``reports/<run-id>`` (or ``out``), compares,
    writes report.json, comparisons.parquet, report.md, report.html and the history row.

    ``config_path``: reprocheck.toml or pyproject.toml (default: found from the current
    folder); ``envs``: run only these environments; ``rebuild``: build the images again
    without the layer cache; ``refresh``: rebuild and record, per environment, the package
    versions that changed against its last stored run (``EnvironmentResult.image_change``);
    ``jobs``: environments at a time (default ``[run] jobs``, else one per core);
    ``baseline``: also compare each environment with saved baseline NAME's; ``progress``:
    called with each
    :class:`~reprocheck.progress.ProgressEvent`; ``engine``: a container engine (default:
    the one ``[run] engine`` names).

    Raises :class:`~reprocheck.errors.ReprocheckError` for a configuration, engine or image
    problem, and KeyboardInterrupt when interrupted (finished environments are stored).
    A failing history or HTML file is logged and listed in :attr:`Report.problems`.
    """
    config = _config(config_path)
    plan = make_plan(config, tuple(envs))
    golden = load_baseline(config, baseline) if baseline else None
    engine = engine or get_engine(BUILD_ENGINE)
    run_dir = (Path(out) if out is not None else config.reports_dir / new_run_id()).resolve()
    refreshed = recorder(plan, refresh)
    runner = Runner(engine, plan, progress, run_id=run_dir.name, rebuild=rebuild or refresh,
                    cache=RunCache.open(config, read=cache))  # fmt: skip
    result = refreshed(runner.run(run_dir, jobs or config.run.jobs or os.cpu_count() or 1))
    save_run(result, latest=run_dir.parent == config.reports_dir.resolve())
    if result.interrupted:
        raise KeyboardInterrupt(f"interrupted; the finished environments are in {run_dir}")
    matrix = matrix_for(config, result, golden, baseline)
    return _finish(config, result, matrix)


def _finish(config: RunConfig, result: RunResult, matrix: Matrix) -> Report:
    """The files ``reprocheck run`` writes into the run folder (and the history row)."""
    problems: list[str] = []

    def note(name: str, exc: Exception) -> None:
        text = f"{name}: {type(exc).__name__}: {exc}"
        logger.warning("%s", text)
        problems.append(text)

    files = write_run_files(config, result, matrix, note)
    return Report(files.data, matrix.comparisons.table, run=result, outputs=config.outputs,
                  problems=problems)  # fmt: skip


def load(
    run: PathLike | None = None,
    config_path: PathLike | None = None,
    *,
    baseline: str | None = None,
) -> Report:
    """A stored run (an id, a folder, or None for the latest) compared again with the
    current configuration's tolerances and decisions, and with saved ``baseline`` when
    given. Nothing is written (``reprocheck compare --run`` rewrites the report files);
    :meth:`Report.read` takes the stored report as it is instead."""
    config = _config(config_path)
    result = load_run(find_run(config.reports_dir, None if run is None else str(run)))
    golden = load_baseline(config, baseline) if baseline else None
    matrix = matrix_for(config, result, golden, baseline)
    data = report_dict(result, matrix, references=matrix.references)
    return Report(data, matrix.comparisons.table, run=result, outputs=config.outputs)


def compare(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    atol: float = 0.0,
    rtol: float = 0.0,
    ulp: int | None = None,
    max_mismatch_fraction: float = 0.0,
    match: Literal["elements", "rows"] = "elements",
    decision: Literal["argmax", "labels", "boxes"] | None = None,
    iou: float = 0.5,
) -> ArrayComparison:
    """Compare candidate ``b`` with baseline ``a`` as a run compares one output: exact
    unless ``atol``/``rtol``/``ulp`` allow more (an element passes when any of them does);
    ``match="rows"`` pairs rows by nearest neighbour; ``decision`` also counts changed
    argmax classes, labels or boxes. Raises OutputError for a dtype that does not compare
    (object, str, bytes)."""
    tolerance = Tolerance(atol=atol, rtol=rtol, ulp=ulp,
                          max_mismatch_fraction=max_mismatch_fraction, match=match)  # fmt: skip
    rule = None if decision is None else DecisionRule(pattern="*", kind=decision, iou=iou)
    return compare_arrays(np.asarray(a), np.asarray(b), tolerance, rule)


# --- describing and asserting -----------------------------------------------------------------


def describe(item: OutputComparison) -> str:
    """One line for one comparison, in the report's terms."""
    head = f"{item.output} {item.baseline} -> {item.candidate}: {item.verdict}"
    parts = [] if item.metrics is None else _metric_parts(item.metrics)
    if item.note:
        parts.append(item.note)
    return f"{head} ({', '.join(parts)})" if parts else head


def _metric_parts(m: ArrayComparison) -> list[str]:
    if m.verdict == "incomparable" and m.rows is None:
        parts = [f"{m.dtype[0]}{list(m.shape[0])} vs {m.dtype[1]}{list(m.shape[1])}"]
    else:
        parts = [f"{m.mismatched} of {m.total} elements differ"]
        if m.mismatched and m.max_abs is not None:
            parts.append(f"max |diff| {m.max_abs:.6g}")
        if m.mismatched and m.max_ulp:
            parts.append(f"max {m.max_ulp:,} ULP")
        if m.nan_mismatch:
            parts.append(f"{m.nan_mismatch} NaN mismatches")
        if m.mismatched and m.worst_indices and m.worst_indices[0]:  # not for a scalar
            parts.append(f"worst at {m.worst_indices[0]}")
    if m.rows is not None:
        parts.append(f"rows: {m.rows.matched} matched, {m.rows.only_in_baseline} only in "
                     f"baseline, {m.rows.only_in_candidate} only in candidate")  # fmt: skip
    if m.decision is not None and m.decision.decisions_changed:
        parts.append(f"{m.decision.decisions_changed} of {m.decision.total} "
                     f"{m.decision.kind} decisions changed")  # fmt: skip
    parts.append(f"rule {m.rule}")
    return parts


def _listing(lines: list[str]) -> str:
    shown = [f"  {line}" for line in lines[:LISTED_OFFENDERS]]
    if len(lines) > LISTED_OFFENDERS:
        shown.append(f"  ... and {len(lines) - LISTED_OFFENDERS} more")
    return "\n".join(shown)


def _report_line(report: Report) -> str:
    html = report.path / HTML_FILE
    return f"\n  report: {html}" if html.is_file() else ""


def assert_consistent(report: Report) -> None:
    """Fail (AssertionError) unless every environment finished and every output is
    identical or within tolerance; the message lists the failing environments and
    comparisons, worst first."""
    __tracebackhide__ = True
    if report.verdict == "consistent":
        return
    lines = [f"environment {name}: {why}" for name, why in report.failed_environments().items()]
    lines += [describe(item) for item in report.failing()]
    raise AssertionError(f"reprocheck: {report.headline()}\n{_listing(lines)}"
                         f"{_report_line(report)}")  # fmt: skip


def assert_no_decision_changes(report: Report, pattern: str = "*") -> None:
    """Fail unless no decision (``[decisions]`` in the configuration) of an output matching
    ``pattern`` changed in any pair; the message lists each change."""
    __tracebackhide__ = True
    changes = report.decision_changes(pattern)
    if changes:
        total = sum(change.changed for change in changes)
        listing = _listing([str(change) for change in changes])
        raise AssertionError(f"reprocheck: {total} decision(s) changed in {len(changes)} "
                             f"comparison(s) of run {report.run_id}\n{listing}"
                             f"{_report_line(report)}")  # fmt: skip


def assert_metric_within(
    report: Report, pattern: str, *, atol: float | None = None, rtol: float | None = None
) -> None:
    """Fail unless every scalar output matching ``pattern`` (a glob such as
    ``"*/accuracy"``) stays within ``atol + rtol * |baseline|`` of the baseline's value in
    every compared pair. Without ``atol`` and ``rtol``, each output's ``[metrics]``
    tolerance applies (exact when it has none); either given replaces it (the other is 0).
    An environment of a pair without the value is an offender; no matching scalar output at
    all is a failure too."""
    __tracebackhide__ = True
    metrics = report.metrics(pattern)
    if not metrics:
        raise AssertionError(f"reprocheck: no scalar output matches {pattern!r} in run "
                             f"{report.run_id}")  # fmt: skip
    declared = report.metric_tolerances()
    offenders = []
    for name, values in metrics.items():
        limit = (declared.get(name, (0.0, 0.0)) if atol is None and rtol is None
                 else (atol or 0.0, rtol or 0.0))  # fmt: skip
        for base, cand in report.pairs:
            problem = _metric_problem(values.get(base), values.get(cand), *limit)
            if problem:
                offenders.append(f"{name} {base} -> {cand}: {problem}")
    if offenders:
        if atol is not None or rtol is not None:
            given = f"atol={atol or 0:g} rtol={rtol or 0:g}"
        elif not declared:
            given = "atol=0 rtol=0 (exact: no [metrics] tolerance)"
        else:
            given = "the [metrics] tolerances"
        raise AssertionError(f"reprocheck: {len(offenders)} metric value(s) of {pattern!r} "
                             f"outside {given} in run {report.run_id}\n"
                             f"{_listing(offenders)}{_report_line(report)}")  # fmt: skip


def _metric_problem(base: float | None, cand: float | None, atol: float, rtol: float) -> str:
    if base is None or cand is None:
        return f"{base} -> {cand}: no value in the {'baseline' if base is None else 'candidate'}"
    if math.isnan(base) and math.isnan(cand):
        return ""
    diff = abs(cand - base)
    allowed = atol + rtol * abs(base)
    if diff <= allowed or base == cand:  # equal infinities differ by NaN
        return ""
    return f"{base:.9g} -> {cand:.9g} (|diff| {diff:.3g} > {allowed:.3g})"
