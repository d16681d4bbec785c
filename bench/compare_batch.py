"""Per-output cost of compare_batch against a loop of compare_arrays, in the same run.

    python bench/compare_batch.py [--rows 10000] [--repeat 3]

Batches of ``--rows`` small outputs (one per dataset sample):

* float32, 64 values a row: 10% of the rows with one element moved by 1 ULP (the others
  bit-identical), then every element of every row moved by 1 ULP;
* uint8, 8 x 8 images (so PSNR and differing pixels are computed): 10% of the rows with
  one pixel moved by 1, then every pixel of every row moved by 1.

For each, the best of ``--repeat`` wall times of ``compare_batch(a, b)`` and of
``[compare_arrays(a[i], b[i]) for i in range(n)]``, in microseconds per output, and their
ratio (above 1: the batch is faster). The two results are checked equal; nothing is
asserted about speed. When another checkout is installed in editable mode, put this one
first: ``PYTHONPATH=. python bench/compare_batch.py``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from reprocheck.compare import ArrayComparison, compare_arrays, compare_batch

ROWS = 10_000


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    a: np.ndarray
    b: np.ndarray


def float_cases(rng: np.random.Generator, rows: int) -> list[Case]:
    a = rng.standard_normal((rows, 64)).astype(np.float32)
    up = np.float32(np.inf)
    some = a.copy()
    picked = rng.choice(rows, rows // 10, replace=False)
    columns = rng.integers(0, 64, picked.size)
    some[picked, columns] = np.nextafter(a[picked, columns], up)
    return [
        Case(name="float32 x64, 10% of rows 1 ULP", a=a, b=some),
        Case(name="float32 x64, every element 1 ULP", a=a, b=np.nextafter(a, up)),
    ]


def uint8_cases(rng: np.random.Generator, rows: int) -> list[Case]:
    a = rng.integers(0, 255, (rows, 8, 8), dtype=np.uint8)  # below 255: +1 never wraps
    some = a.copy()
    picked = rng.choice(rows, rows // 10, replace=False)
    y, x = rng.integers(0, 8, picked.size), rng.integers(0, 8, picked.size)
    some[picked, y, x] += 1
    return [
        Case(name="uint8 8x8, 10% of rows 1 pixel", a=a, b=some),
        Case(name="uint8 8x8, every pixel +1", a=a, b=a + np.uint8(1)),
    ]


def best_of(
    repeat: int, call: Callable[[], list[ArrayComparison]]
) -> tuple[float, list[ArrayComparison]]:
    best = float("inf")
    result: list[ArrayComparison] = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - start)
    return best, result


def one_by_one(a: np.ndarray, b: np.ndarray) -> list[ArrayComparison]:
    return [compare_arrays(a[i], b[i]) for i in range(len(a))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = [*float_cases(rng, args.rows), *uint8_cases(rng, args.rows)]
    print(f"{args.rows} outputs a batch, best of {args.repeat}; microseconds per output")
    print(f"{'case':36s} {'compare_batch':>14s} {'compare_arrays':>15s} {'ratio':>7s}  equal")
    for case in cases:
        rows = len(case.a)
        batch_time, batched = best_of(args.repeat, partial(compare_batch, case.a, case.b))
        loop_time, looped = best_of(args.repeat, partial(one_by_one, case.a, case.b))
        per_batch, per_loop = 1e6 * batch_time / rows, 1e6 * loop_time / rows
        equal = "yes" if batched == looped else "NO"
        print(
            f"{case.name:36s} {per_batch:14.2f} {per_loop:15.2f} {per_loop / per_batch:6.1f}x"
            f"  {equal}"
        )


if __name__ == "__main__":
    main()
