"""The history of a nightly job: what the Nth night's run spends on its history stage (adding
its rows, then reading the runs' lines for the trend), against the first night's, measured in
one run. Each night adds ``--rows`` drifting comparisons (a million outputs with 10% drifting
is 100,000 rows a night).

With --against REF the code of git REF (checked out into a temporary worktree) runs the same
nights in a project of its own, and the ratios compare the two. No figure is asserted: this
prints, CI runs it small as a smoke test.

    python bench/history.py --nights 30 --rows 100000 --against 49bc389
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = '[pipeline]\ncallable = "p.py:run"\n[[environments]]\nname = "a"\nimage = "i"\n'
# Runs in a process of its own with PYTHONPATH at the code measured: the same calls exist in
# every version since the history had a stage of its own (append_history, trend_of).
NIGHTS = """
import json, resource, sys, time
from pathlib import Path

import numpy as np
import pyarrow as pa

from reprocheck.compare import compare_arrays
from reprocheck.comparisons import Comparisons, table_of
from reprocheck.config import load_config
from reprocheck.history import append_history
from reprocheck.matrix import Matrix, OutputComparison
from reprocheck.run_model import RunResult
from reprocheck.stages import trend_of

config = load_config(Path(sys.argv[1]))
nights, rows = int(sys.argv[2]), int(sys.argv[3])
a = np.ones(64, dtype=np.float32)
b = a.copy()
b[0] = np.nextafter(b[0], np.float32(2))
one = table_of([OutputComparison(output="x", baseline="a", candidate="c", verdict="drift",
                                 metrics=compare_arrays(a, b))])
table = one.take(pa.array(np.zeros(rows, dtype=np.int64)))
table = table.set_column(0, "output", pa.array([f"preds/s{i:07d}" for i in range(rows)]))
matrix = Matrix(pairs=(("a", "c"),), comparisons=Comparisons(table), agreement={})
seconds = []
for night in range(nights):
    run_id = f"night-{night:04d}"
    day = f"{2026 + night // 336}-{1 + night // 28 % 12:02d}-{1 + night % 28:02d}"
    started = f"{day}T02:00:00+00:00"
    run = RunResult(run_id=run_id, run_dir=config.reports_dir / run_id,
                    config_source=config.source, started=started, environments=())
    began = time.perf_counter()
    append_history(config, run, matrix)
    trend_of(config)
    seconds.append(time.perf_counter() - began)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak}))
"""


def nights(code: Path, project: Path, count: int, rows: int) -> dict[str, object]:
    (project / "reprocheck.toml").parent.mkdir(parents=True)
    (project / "reprocheck.toml").write_text(CONFIG)
    # cwd: not this checkout, which `python -c` would put first on sys.path
    command = [sys.executable, "-c", NIGHTS, str(project / "reprocheck.toml"), str(count),
               str(rows)]  # fmt: skip
    done = subprocess.run(command, env={"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin"},
                          cwd=project, capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the nights failed under {code}: {done.stderr[-800:]}")
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--rows", type=int, default=100_000, help="history rows a night adds")
    parser.add_argument("--against", default=None, help="git ref of the code to compare with")
    args = parser.parse_args()
    print(f"history stage of night 1 and night {args.nights}, {args.rows:,} rows a night")
    with tempfile.TemporaryDirectory(prefix="reprocheck-history-") as tmp:
        codes = {"current": ROOT}
        if args.against:
            worktree = Path(tmp) / "against"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                            str(worktree), args.against], check=True)  # fmt: skip
            codes[args.against] = worktree
        last: dict[str, float] = {}
        try:
            for label, code in codes.items():
                found = nights(code, Path(tmp) / label / "project", args.nights, args.rows)
                seconds = [float(s) for s in found["seconds"]]  # type: ignore[attr-defined]
                last[label] = seconds[-1]
                growth = seconds[-1] / seconds[0]
                print(f"  {label:12} night 1 {seconds[0]:7.3f} s  night {args.nights} "
                      f"{seconds[-1]:7.3f} s ({growth:5.1f}x night 1)  all nights "
                      f"{sum(seconds):7.2f} s  peak {found['peak_mb']:6.0f} MB")  # fmt: skip
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(Path(tmp) / "against")], check=False)  # fmt: skip
        if args.against:
            speedup = last[args.against] / last["current"]
            print(f"  night {args.nights}: current is {speedup:.1f}x faster than {args.against}")


if __name__ == "__main__":
    main()
