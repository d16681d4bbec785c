"""Drift history: every run adds its per-output verdicts and metrics as a table of its own.

Outputs that are identical in a pair are kept as one row per pair (output ``*``) whose
``count`` says how many they are, so a run of a million outputs adds rows only for what
differed; every other row has ``count`` 1 (and so has every row of an older history file).

``reports/history.parquet`` is a folder of Parquet files, one per run (a dataset as pyarrow
and Spark write them: ``pandas.read_parquet`` reads the folder as one table). A run writes
only its own file, atomically (a run compared again replaces it), so a run costs the same on
the first night as on the thousandth, whatever the history holds, and runs at the same time
never share a file. Each file's metadata holds its run's line (drift count, comparisons,
environments, worst output): ``reprocheck history`` and the report's trend read only those.
A history written as one file (before this layout) becomes the folder, one file per run,
the first time a run adds to it (under a lock; a crash midway is taken up by the next run).

A damaged file (truncated, not a table, wrong columns) is moved aside with one warning: it
costs that run's rows, never the history, and never the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import hashlib
import importlib.util
import io
import json
import logging
import math
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
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
from reprocheck.safe_files import open_regular, read_regular_bytes
from reprocheck.store import write_bytes_atomic

logger = logging.getLogger(__name__)

COLUMNS = ["run_id", "started", "output", "baseline", "candidate", "verdict",
           "mismatched", "total", "max_abs", "max_ulp", "count", "config"]  # fmt: skip
ALL_OUTPUTS = "*"  # the output of a row that stands for ``count`` identical outputs
TEXT_COLUMNS = ["run_id", "started", "output", "baseline", "candidate", "verdict", "config"]
NUMBER_COLUMNS = ["mismatched", "total", "max_abs", "max_ulp", "count"]
# One schema for every run's file, so the folder reads as one table (pandas, pyarrow).
SCHEMA = pa.schema(
    [(name, pa.string()) for name in COLUMNS[:6]]
    + [("mismatched", pa.int64()), ("total", pa.int64()), ("max_abs", pa.float64()),
       ("max_ulp", pa.float64()), ("count", pa.int64()), ("config", pa.string())]
)  # fmt: skip
# How long a run waits for another one converting a one-file history into the folder (the
# only writer that takes the lock; an flock, so a killed writer never leaves it held).
LOCK_SECONDS = 120.0
PART_PREFIX = "run-"  # a run's file: run-<digest of its id>.parquet (any run id is a name)
LINE_KEY = b"reprocheck.run_line"  # its RunLine (and config) in the file's metadata
_CONVERTING = ".converting"  # a one-file history while it becomes the folder
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
    """Every stored row, oldest run first; an empty table when there is no history yet. A
    damaged run file (or a damaged one-file history) is moved aside (see :func:`_move_aside`)
    and its rows are missing: it never stops a run."""
    one_file = None if _is_folder(path) else _load_one_file(path)
    if one_file is not None:
        return one_file
    tables = [table for _line, table in sorted(_parts(path, with_rows=True), key=_line_order)]
    tables = [table for table in tables if table is not None and not table.empty]
    return pd.concat(tables, ignore_index=True) if tables else _empty()


def history_lines(path: Path, config: str | None = None) -> list[RunLine]:
    """One line per stored run (of ``config`` only when given, and runs of no config), read
    from each run file's metadata: the rows are read only where that is missing."""
    one_file = None if _is_folder(path) else _load_one_file(path)
    if one_file is not None:
        return run_lines(one_file, config)
    lines = []
    for stored, _table in _parts(path, with_rows=False):
        if stored is not None and (config is None or stored.config in (config, "")):
            lines.append(stored.line)
    return sorted(lines, key=lambda line: line.started)


def append_history(config: RunConfig, run: RunResult, matrix: Matrix) -> Path:
    """Write this run's rows as its own file in the history folder (replacing the file of an
    earlier comparison of the same run id), atomically; the folder's path."""
    path = history_file(config)
    _make_folder(path)
    new = rows(run, matrix)
    new["config"] = config_name(config)
    part = path / part_name(run.run_id)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(part.lstat().st_mode):  # a folder, FIFO or link in its place
            _move_part_aside(part, UnsafeFileError(f"{part} is not a regular file"))
    if new.empty:  # nothing compared: no line, and no earlier rows of this run id stand
        part.unlink(missing_ok=True)
    else:
        write_bytes_atomic(part, _part_bytes(new))
    return path


def part_name(run_id: str) -> str:
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()  # any str
    return f"{PART_PREFIX}{digest[:24]}.parquet"


@dataclass(frozen=True)
class _Stored:
    line: RunLine
    config: str


def _line_order(part: tuple[_Stored | None, pd.DataFrame | None]) -> tuple[str, str]:
    stored = part[0]
    return ("", "") if stored is None else (stored.line.started, stored.line.run_id)


def _part_bytes(table: pd.DataFrame) -> bytes:
    """One run's rows with its line (and config) in the file's metadata."""
    (line,) = run_lines(table)
    arrow = pa.Table.from_pandas(table[COLUMNS], preserve_index=False).cast(SCHEMA)
    meta = {**(arrow.schema.metadata or {}), LINE_KEY: json.dumps(
        {"line": asdict(line), "config": str(table["config"].iloc[0])}).encode()}  # fmt: skip
    sink = pa.BufferOutputStream()
    pq.write_table(arrow.replace_schema_metadata(meta), sink)
    return bytes(sink.getvalue().to_pybytes())


def _parts(
    folder: Path, *, with_rows: bool
) -> Iterator[tuple[_Stored | None, pd.DataFrame | None]]:
    """Each run file's line (None when it has none) and, with ``with_rows``, its rows; a damaged
    file is moved aside and skipped."""
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError as exc:
        logger.warning("history %s cannot be listed (%s): ignoring it", folder, _one_line(exc))
        return
    for name in names:
        part = folder / name
        if not (name.startswith(PART_PREFIX) and name.endswith(".parquet")):
            continue  # a temporary file being written, something of the user's
        seen = _identity(part)
        try:
            table = _read(part) if with_rows else None
            stored = _stored_line(part, table)
        except _damage_errors() as exc:
            if _unreadable(exc):  # not damaged: it may be readable to someone else, later
                logger.warning("history file %s cannot be read (%s): leaving out its run's "
                               "rows", part, _one_line(exc))  # fmt: skip
            elif seen is not None and _identity(part) == seen:  # not rewritten meanwhile
                _move_part_aside(part, exc)
            continue
        yield stored, table


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Which file is at ``path`` (a run that writes its file again puts a new one there)."""
    try:
        found = path.lstat()
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def _unreadable(exc: BaseException) -> bool:
    """An error reading a file that says nothing of its content (permissions, the disk)."""
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    return isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EPERM, errno.EIO)


def _stored_line(part: Path, table: pd.DataFrame | None) -> _Stored | None:
    """The line in the file's metadata (its footer alone is read), else worked out from
    its rows."""
    with open_regular(part) as handle:
        metadata = pq.read_schema(handle).metadata or {}
    try:
        found = json.loads(metadata[LINE_KEY])
        stored = _Stored(line=_line(found["line"]), config=found["config"])
        if isinstance(stored.config, str):
            return stored
    except (KeyError, TypeError, ValueError, RecursionError, OverflowError):
        pass  # no line, or not one this version wrote: the rows say it
    table = _read(part) if table is None else table
    lines = run_lines(table)
    return None if not lines else _Stored(line=lines[0], config=str(table["config"].iloc[0]))


def _line(data: object) -> RunLine:
    """A RunLine from its JSON form; ValueError or TypeError when it is not one."""
    if not isinstance(data, dict):
        raise TypeError("not an object")
    line = RunLine(**{**data, "environments": tuple(data.get("environments") or ())})
    worst = line.worst_abs
    typed = (
        all(isinstance(t, str) for t in (line.run_id, line.started, *line.environments))
        and all(type(n) is int and 0 <= n < 2**63 for n in (line.drift, line.compared))
        and (line.worst_output is None or isinstance(line.worst_output, str))
        # float() of an int beyond a float's range raises OverflowError
        and (worst is None or (type(worst) in (int, float) and math.isfinite(float(worst))))
    )
    if not typed:
        raise TypeError("fields of the wrong type")
    return dataclasses.replace(line, worst_abs=None if worst is None else float(worst))


def _move_part_aside(part: Path, exc: BaseException) -> None:
    """Beside the history folder (pandas reads every file in it as the table)."""
    try:
        _move_aside(part, exc, beside=part.parent.parent, name=f"{part.parent.name}.{part.name}",
                    what="leaving out its run's rows")  # fmt: skip
    except FileNotFoundError:
        pass  # another run moved it aside first
    except OSError as exc2:  # a read-only reports folder
        logger.warning("history file %s is unreadable and cannot be moved aside (%s): "
                       "ignoring it", part, _one_line(exc2))  # fmt: skip


def _is_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _converting(path: Path) -> Path:
    """Where a one-file history lies while it becomes the folder."""
    return path.with_name(f".{path.name}{_CONVERTING}")


def _load_one_file(path: Path) -> pd.DataFrame | None:
    """A history written as one file (empty when there is nothing); None when ``path`` has
    become the folder meanwhile (another run converted it, or made the first one)."""
    source = path
    converting = _converting(path)
    if not path.exists() and not path.is_symlink() and converting.exists():
        source = converting  # a conversion that stopped midway: its file is the history
    table = _read_or_none(source)
    if table is not None:
        return table
    try:
        with _locked(path):  # another run may be replacing the file right now: look again
            return None if _is_folder(path) else _load_locked(source)
    except OSError as exc:  # a read-only reports folder: neither lock nor rename works
        logger.warning("history %s is unreadable and cannot be moved aside (%s): ignoring it",
                       source, _one_line(exc))  # fmt: skip
        return _empty()


def _make_folder(path: Path) -> None:
    """The history folder, made from a one-file history (its runs, a file each) when there
    is one. A one-file history that is damaged, or a FIFO or link there, is moved aside."""
    converting = _converting(path)
    if _is_folder(path) and not converting.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        for stale in path.parent.glob(f".{glob.escape(path.name)}.new-*"):
            shutil.rmtree(stale, ignore_errors=True)  # of a conversion that was killed
        if _is_folder(path):
            converting.unlink(missing_ok=True)  # killed after the folder was in place
            return
        if not path.exists() and not path.is_symlink() and converting.exists():
            converting.rename(path)  # a conversion that stopped midway: take it up again
        new = path.with_name(f".{path.name}.new-{uuid.uuid4().hex[:12]}")
        try:
            new.mkdir()
            _convert(path, new)
            if path.exists() or path.is_symlink():
                path.rename(converting)
            new.rename(path)
            converting.unlink(missing_ok=True)
        finally:
            shutil.rmtree(new, ignore_errors=True)  # gone once renamed; else half a copy


def _convert(path: Path, new: Path) -> None:
    """Write the runs of the one-file history at ``path`` into the folder ``new``, a file
    each. A file that cannot be read, or whose rows cannot be stored as the folder stores
    them, is moved aside (the history starts anew)."""
    old = _load_locked(path)  # a damaged file is moved aside: an empty table
    try:
        for run_id, table in old.groupby("run_id", sort=False):
            (new / part_name(str(run_id))).write_bytes(_part_bytes(table))
    except _damage_errors() as exc:
        _move_aside(path, exc)
        for written in new.iterdir():
            written.unlink()


def _damage_errors() -> tuple[type[Exception], ...]:
    """:data:`_DAMAGE`, and every pyarrow error (an absurd size in a footer is a
    MemoryError)."""
    return (*_DAMAGE, UnsafeFileError, pa.ArrowException)


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)


def _read(path: Path) -> pd.DataFrame:
    """The table in ``path``, in :data:`COLUMNS` order; raises on any damage."""
    data = read_regular_bytes(path)  # a folder, FIFO or link there is damage, not "no file"
    return _normalised(_read_parquet(data))


def _normalised(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` in :data:`COLUMNS` order and types; raises on any damage."""
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
    # Bad UTF-8 or offsets in a column pass read_table and fail only later, in run_lines; so
    # does a text column whose type a flipped bit turned into bytes.
    table = pq.read_table(pa.BufferReader(data))
    table.validate(full=True)
    for name in set(TEXT_COLUMNS) & set(table.column_names):
        kind = table.schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or pa.types.is_null(kind)):  # fmt: skip
            raise ValueError(f"column {name} is {kind}, not text")
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


def _move_aside(
    path: Path, exc: BaseException, *, beside: Path | None = None, name: str | None = None,
    what: str = "starting a new history",
) -> Path:  # fmt: skip
    """Rename a damaged history file to ``<name>.damaged-<UTC stamp>`` in ``beside``
    (default: its own folder) and say so in one line."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    beside = path.parent if beside is None else beside
    name = path.name if name is None else name
    target = beside / f"{name}.damaged-{stamp}"
    count = 1
    while target.exists():  # two damaged files within one second
        count += 1
        target = beside / f"{name}.damaged-{stamp}-{count}"
    path.rename(target)
    logger.warning("history %s is unreadable (%s): moved it to %s, %s",
                   path, _one_line(exc), target, what)  # fmt: skip
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
