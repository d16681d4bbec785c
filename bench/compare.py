"""Throughput and peak memory of reprocheck.compare against numpy.testing.

    python bench/compare.py [--sizes 1e6,1e7,1e8] [--repeat 3]

For each dtype and size, the same baseline/candidate pair (the candidate is the baseline
moved by 1 to MAX_ULP ULP on ``--fraction`` of the elements, default 1%) is compared by
``compare_arrays`` (every metric) and by ``numpy.testing.assert_allclose`` followed by
``numpy.testing.assert_array_max_ulp``, with tolerances under which both pass. Speed is
the bytes of both arrays over the best of ``--repeat`` wall times; peak memory is the
tracemalloc peak of one more call (numpy reports its buffers to tracemalloc) over the
bytes of both arrays. By default 1e8 is added for float32 when memory allows.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.testing as npt

from reprocheck.compare import Tolerance, compare_arrays

FRACTION = 0.01
MAX_ULP = 4
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-13}
BITS = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}
BIG = 100_000_000
# assert_allclose holds several full-size temporaries; ask for this many times the pair.
HEADROOM = 12


@dataclass(frozen=True, kw_only=True)
class Timing:
    seconds: float
    peak_bytes: int


def make_pair(dtype: np.dtype, size: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(size, dtype=np.float64).astype(dtype)
    b = a.copy()
    moved = np.sort(rng.permutation(size)[: int(size * fraction)])
    steps = rng.integers(1, MAX_ULP + 1, size=moved.size).astype(BITS[dtype])
    b.view(BITS[dtype])[moved] += steps  # away from zero by 1..MAX_ULP representable values
    return a, b


def reprocheck_call(a: np.ndarray, b: np.ndarray) -> None:
    result = compare_arrays(a, b, Tolerance(rtol=RTOL[a.dtype], ulp=MAX_ULP))
    assert result.verdict == "within_tolerance", result.verdict
    assert result.max_ulp == MAX_ULP, result.max_ulp


def numpy_call(a: np.ndarray, b: np.ndarray) -> None:
    try:
        npt.assert_allclose(b, a, rtol=RTOL[a.dtype], atol=0)
        npt.assert_array_max_ulp(a, b, maxulp=MAX_ULP)
    except AssertionError as error:  # equal settings: both should pass
        raise SystemExit(f"numpy.testing rejected the pair: {error}") from error


def measure(
    call: Callable[[np.ndarray, np.ndarray], None], a: np.ndarray, b: np.ndarray, repeat: int
) -> Timing:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call(a, b)
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    tracemalloc.reset_peak()
    call(a, b)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return Timing(seconds=best, peak_bytes=peak)


def available_bytes() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def plan(sizes: list[int], explicit: bool) -> list[tuple[np.dtype, int]]:
    runs = [(np.dtype(t), n) for t in (np.float32, np.float64) for n in sizes]
    if not explicit:
        pair = 2 * BIG * np.dtype(np.float32).itemsize
        if available_bytes() > HEADROOM * pair:
            runs.append((np.dtype(np.float32), BIG))
        else:
            print(f"skipping float32 {BIG:.0e}: not enough free memory")
    return runs


def report(dtype: np.dtype, size: int, ours: Timing, theirs: Timing, nbytes: int) -> None:
    gbs_ours = nbytes / ours.seconds / 1e9
    gbs_theirs = nbytes / theirs.seconds / 1e9
    print(
        f"{dtype.name:8} {size:>11.0e} "
        f"{gbs_ours:10.2f} {gbs_theirs:10.2f} {gbs_ours / gbs_theirs:7.1f}x "
        f"{ours.peak_bytes / nbytes:9.3f} {theirs.peak_bytes / nbytes:9.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=None, help="comma-separated, e.g. 1e6,1e7,1e8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=FRACTION, help="share of moved elements")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in (args.sizes or "1e6,1e7").split(",")]
    print(f"numpy {np.__version__}; {args.fraction:.0%} of elements moved by 1..{MAX_ULP} ULP")
    print(
        f"{'dtype':8} {'size':>11} {'ours GB/s':>10} {'numpy GB/s':>10} {'ratio':>8} "
        f"{'ours mem':>9} {'numpy mem':>9}   (mem = peak / bytes of both arrays)"
    )
    for dtype, size in plan(sizes, explicit=args.sizes is not None):
        a, b = make_pair(dtype, size, args.fraction)
        ours = measure(reprocheck_call, a, b, args.repeat)
        theirs = measure(numpy_call, a, b, args.repeat)
        report(dtype, size, ours, theirs, a.nbytes + b.nbytes)
        del a, b


if __name__ == "__main__":
    main()
