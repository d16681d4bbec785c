"""Drift history: every run appends its per-output verdicts and metrics to one table.

Outputs that are identical in a pair are kept as one row per pair (output ``*``) whose
``count`` says how many they are, so a run of a million outputs adds rows only for what
differed; every other row has ``count`` 1 (and so has every row of an older history file).

A Parquet file, so a nightly job's trend survives across runs. ``trend_png`` draws drift
counts per run (matplotlib, optional).

Concurrent runs of one project append under an exclusive lock and replace the file through
a unique temporary file, so no run loses its rows. A damaged file (truncated, not a table,
wrong columns) is moved aside with one warning and a new history starts: the run completes.
"""

from __future__ import annotations

import importlib.util
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from reprocheck.config import RunConfig
from reprocheck.errors import HistoryError, UnsafeFileError
from reprocheck.matrix import Matrix
from reprocheck.run_model import RunResult
from reprocheck.safe_files import read_regular_bytes
from reprocheck.store import write_bytes_atomic

logger = logging.getLogger(__name__)

COLUMNS = ["run_id", "started", "output", "baseline", "candidate", "verdict",
           "mismatched", "total", "max_abs", "max_ulp", "count", "config"]  # fmt: skip
ALL_OUTPUTS = "*"  # the output of a row that stands for ``count`` identical outputs
TEXT_COLUMNS = ["run_id", "started", "output", "baseline", "candidate", "verdict", "config"]
NUMBER_COLUMNS = ["mismatched", "total", "max_abs", "max_ulp", "count"]
# How long a run waits for another one writing the same history (a write takes well under
# a second; the lock is an flock, so a killed writer never leaves it held).
LOCK_SECONDS = 120.0
_REASON_CHARS = 200
# What a damaged file raises while being read: pandas' parser errors and pyarrow's
# ArrowInvalid are ValueErrors; the others come from corrupt footers and odd column types.
_DAMAGE: tuple[type[Exception], ...] = (
    ValueError, TypeError, KeyError, IndexError, NotImplementedError, OSError,
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class RunLine:
    run_id: str
    started: str
    environments: tuple[str, ...]
    drift: int
    compared: int
    worst_output: str | None
    worst_abs: float | None


def history_file(config: RunConfig) -> Path:
    stem = (config.root / config.history).resolve()
    return stem.with_suffix(".parquet")


def rows(run: RunResult, matrix: Matrix) -> pd.DataFrame:
    """This run's history rows: one per comparison that is not identical, one per pair for
    the identical ones."""
    table = matrix.comparisons.table
    identical = pc.equal(table["verdict"], "identical")
    # Columns are selected before rows are filtered: a filter copies every column it keeps.
    differing = table.select(
        ["output", "baseline", "candidate", "verdict", "mismatched", "total", "max_abs",
         "max_ulp"]
    ).filter(pc.invert(identical)).to_pandas()  # fmt: skip
    differing["max_ulp"] = differing["max_ulp"].astype("float64")
    differing["count"] = 1
    same = table.select(["baseline", "candidate", "total", "verdict"]).filter(identical)
    same = same.group_by(["baseline", "candidate"], use_threads=False)
    grouped = same.aggregate([("total", "sum"), ("verdict", "count")]).to_pandas()
    summary = pd.DataFrame({
        "output": ALL_OUTPUTS, "baseline": grouped["baseline"], "candidate": grouped["candidate"],
        "verdict": "identical", "mismatched": 0, "total": grouped["total_sum"], "max_abs": 0.0,
        "max_ulp": 0.0, "count": grouped["verdict_count"],
    })  # fmt: skip
    parts = [df for df in (differing, summary) if not df.empty]
    found = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS[2:])
    found.insert(0, "started", run.started)
    found.insert(0, "run_id", run.run_id)
    found["config"] = ""
    return found[COLUMNS]


def load_history(path: Path) -> pd.DataFrame:
    """The stored history, or an empty table when there is none yet. A damaged file is moved
    aside (see :func:`_move_aside`) and reads as empty, so it never stops a run."""
    table = _read_or_none(path)
    if table is not None:
        return table
    try:
        with _locked(path):  # another run may be replacing the file right now: look again
            return _load_locked(path)
    except OSError as exc:  # a read-only reports folder: neither lock nor rename works
        logger.warning("history %s is unreadable and cannot be moved aside (%s): ignoring it",
                       path, _one_line(exc))  # fmt: skip
        return _empty()


def append_history(config: RunConfig, run: RunResult, matrix: Matrix) -> Path:
    """Add this run's rows (replacing earlier rows of the same run id) and write atomically.

    The read-modify-write holds an exclusive lock, so concurrent runs of one project each
    keep their rows."""
    path = history_file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        old = _load_locked(path)
        old = old[old["run_id"] != run.run_id]
        new = rows(run, matrix)
        new["config"] = config_name(config)
        table = new if old.empty else pd.concat([old, new], ignore_index=True)
        write_bytes_atomic(path, _serialized(table))
    return path


def _serialized(table: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _damage_errors() -> tuple[type[Exception], ...]:
    """:data:`_DAMAGE`, and every pyarrow error (an absurd size in a footer is a
    MemoryError)."""
    return (*_DAMAGE, UnsafeFileError, pa.ArrowException)


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)


def _read(path: Path) -> pd.DataFrame:
    """The table in ``path``, in :data:`COLUMNS` order; raises on any damage."""
    data = read_regular_bytes(path)  # a folder, FIFO or link there is damage, not "no file"
    table = _read_parquet(data)
    if "count" not in table.columns:  # written before identical outputs were summed up
        table["count"] = 1
    if "config" not in table.columns:  # written before rows named their config
        table["config"] = ""
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"no column {', '.join(missing)}")
    table = table[COLUMNS].copy()
    empty = [column for column in TEXT_COLUMNS if table[column].isna().any()]
    if empty:
        raise ValueError(f"empty values in column {', '.join(empty)}")
    for column in NUMBER_COLUMNS:
        table[column] = pd.to_numeric(table[column])
    return table


def _read_parquet(data: bytes) -> pd.DataFrame:
    # Bad UTF-8 or offsets in a column pass read_table and fail only later, in run_lines.
    pq.read_table(pa.BufferReader(data)).validate(full=True)
    return pd.read_parquet(io.BytesIO(data))


def _read_or_none(path: Path) -> pd.DataFrame | None:
    """The stored table, an empty one when there is no file, None when it is damaged."""
    if not path.exists() and not path.is_symlink():
        return _empty()
    try:
        return _read(path)
    except _damage_errors():
        return None


def _load_locked(path: Path) -> pd.DataFrame:
    """:func:`load_history` for a caller holding the lock: only then is moving aside safe."""
    if not path.exists() and not path.is_symlink():
        return _empty()
    try:
        return _read(path)
    except _damage_errors() as exc:
        _move_aside(path, exc)
        return _empty()


def _move_aside(path: Path, exc: BaseException) -> Path:
    """Rename a damaged history to ``<name>.damaged-<UTC stamp>`` and say so in one line."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    count = 1
    while target.exists():  # two damaged files within one second
        count += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{count}")
    path.rename(target)
    logger.warning("history %s is unreadable (%s): moved it to %s and starting a new history",
                   path, _one_line(exc), target)  # fmt: skip
    return target


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock on ``path`` (a sibling ``.<name>.lock`` file)."""
    lock = FileLock(path.with_name(f".{path.name}.lock"), timeout=LOCK_SECONDS)
    try:
        lock.acquire()
    except Timeout as exc:
        raise HistoryError(
            f"{path} stayed locked for {LOCK_SECONDS:.0f} s by another reprocheck run",
            fix="wait for the other run to finish, then run again",
        ) from exc
    try:
        yield
    finally:
        lock.release()


def config_name(config: RunConfig) -> str:
    """The config a history row came from: its file, relative to the project."""
    source = config.source.resolve()
    root = config.root.resolve()
    return source.relative_to(root).as_posix() if source.is_relative_to(root) else str(source)


def run_lines(table: pd.DataFrame, config: str | None = None) -> list[RunLine]:
    """One line per run, of ``config`` only when given (rows older than the config column
    count for every config)."""
    if config is not None and "config" in table.columns:
        table = table[table["config"].isin([config, ""])]
    lines = []
    for run_id, group in table.groupby("run_id", sort=False):
        drift = group[group["verdict"] == "drift"]
        worst = drift.sort_values("max_abs", ascending=False).head(1)
        envs = sorted(set(group["baseline"]) | set(group["candidate"]))
        lines.append(RunLine(
            run_id=str(run_id), started=str(group["started"].iloc[0]),
            environments=tuple(envs), drift=len(drift), compared=int(group["count"].sum()),
            worst_output=None if worst.empty else str(worst["output"].iloc[0]),
            worst_abs=None if worst.empty else float(worst["max_abs"].iloc[0]),
        ))  # fmt: skip
    return sorted(lines, key=lambda line: line.started)


def trend_png(lines: list[RunLine]) -> bytes | None:
    """Drift counts per run as a PNG, or None when matplotlib is absent or nothing is stored."""
    if not lines or importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.plot([line.started[:16] for line in lines], [line.drift for line in lines], marker="o")
    ax.set_ylabel("drifting comparisons")
    ax.set_title("reprocheck drift per run")
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
