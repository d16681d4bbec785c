"""Drift history: every run appends its per-output verdicts and metrics to one table.

Parquet when pyarrow is importable, CSV otherwise (pandas either way), so a nightly job's
trend survives across runs. ``trend_png`` draws drift counts per run (matplotlib, optional).
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reprocheck.config import RunConfig
from reprocheck.matrix import Matrix
from reprocheck.runner import RunResult

COLUMNS = ["run_id", "started", "output", "baseline", "candidate", "verdict",
           "mismatched", "total", "max_abs", "max_ulp"]  # fmt: skip
TEXT_COLUMNS = ["run_id", "started", "output", "baseline", "candidate", "verdict"]


@dataclass(frozen=True, kw_only=True)
class RunLine:
    run_id: str
    started: str
    environments: tuple[str, ...]
    drift: int
    compared: int
    worst_output: str | None
    worst_ulp: float | None


def _has_parquet() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def history_file(config: RunConfig) -> Path:
    stem = (config.root / config.history).resolve()
    return stem.with_suffix(".parquet" if _has_parquet() else ".csv")


def rows(run: RunResult, matrix: Matrix) -> pd.DataFrame:
    records = []
    for item in matrix.comparisons:
        metrics = item.metrics
        records.append({
            "run_id": run.run_id, "started": run.started, "output": item.output,
            "baseline": item.baseline, "candidate": item.candidate, "verdict": item.verdict,
            "mismatched": metrics.mismatched if metrics else None,
            "total": metrics.total if metrics else None,
            "max_abs": metrics.max_abs if metrics else None,
            "max_ulp": float(metrics.max_ulp) if metrics and metrics.max_ulp is not None else None,
        })  # fmt: skip
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def load_history(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    # CSV keeps no types: an all-digit run id or environment name would come back an int.
    return pd.read_csv(path, dtype=dict.fromkeys(TEXT_COLUMNS, str))


def append_history(config: RunConfig, run: RunResult, matrix: Matrix) -> Path:
    """Add this run's rows (replacing earlier rows of the same run id) and write atomically."""
    path = history_file(config)
    old = load_history(path)
    old = old[old["run_id"] != run.run_id]
    new = rows(run, matrix)
    table = new if old.empty else pd.concat([old, new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        table.to_parquet(tmp, index=False)
    else:
        table.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def run_lines(table: pd.DataFrame) -> list[RunLine]:
    lines = []
    for run_id, group in table.groupby("run_id", sort=False):
        drift = group[group["verdict"] == "drift"]
        worst = drift.sort_values("max_ulp", ascending=False).head(1)
        envs = sorted(set(group["baseline"]) | set(group["candidate"]))
        lines.append(RunLine(
            run_id=str(run_id), started=str(group["started"].iloc[0]),
            environments=tuple(envs), drift=len(drift), compared=len(group),
            worst_output=None if worst.empty else str(worst["output"].iloc[0]),
            worst_ulp=None if worst.empty else float(worst["max_ulp"].iloc[0]),
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
