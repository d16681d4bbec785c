"""Smoke tests of the benchmarks under bench/ at a small size: each runs and prints its figures."""

from __future__ import annotations

import subprocess
import sys

from support import REPO_ROOT


def test_scale_bench_prints_its_figures() -> None:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "scale.py"), "--outputs",
                           "300"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "300 outputs x 3 environments" in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("current"))
    assert "us/comparison" in line and "exit 1" in line  # 10% of one environment drifts


def test_batch_bench_prints_its_ratios() -> None:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "compare_batch.py"),
                           "--rows", "200", "--repeat", "1"], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.rstrip().endswith(("yes", "no"))]
    assert len(rows) == 4 and all(line.rstrip().endswith("yes") for line in rows), proc.stdout


def test_warm_bench_prints_its_figures(docker_engine, debian_bases) -> None:
    """The example's warm run against its floor, and the run that changed nothing (which
    must be a repeated run: the bench stops otherwise)."""
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "warm.py"), "--rounds",
                           "1"], capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "floor: slowest bare container" in proc.stdout
    assert "x the slowest container" in proc.stdout
    assert "CPU the bare containers cost" in proc.stdout
    assert "(repeated run)" in proc.stdout and "x the interpreter's start" in proc.stdout


def test_history_bench_prints_its_figures() -> None:
    command = [sys.executable, str(REPO_ROOT / "bench" / "history.py"), "--nights", "3",
               "--rows", "200"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if x.strip().startswith("current")]
    assert "night 1" in line and "night 3" in line and "peak" in line
