"""Throughput of reprocheck.compare against numpy.testing, per dtype and share of differences.

    python bench/compare.py [--megabytes 64] [--repeat 3] [--dtypes uint8,float32]
                            [--fractions 1,0.01] [--memory]

For each dtype (uint8, int16, int32, int64, float32, float64) and each share of differing
elements (every element, then 1%), one baseline/candidate pair of ``--megabytes`` MB per
array is compared three ways in the same run:

* ``compare_arrays`` with every metric, under a tolerance that the pair meets: integers
  moved by 1 under ``atol=1``; floats moved by 1 to MAX_ULP ULP under ``rtol`` and ``ulp``.
  uint8 is an RGBA image (H x W x 4), so PSNR and differing pixels are computed too.
* ``numpy.testing.assert_array_equal``, which fails (caught) and reports its mismatch
  statistics, as a check that finds the same differences would.
* ``numpy.testing.assert_allclose`` under the same tolerance (it passes).

Speed is the bytes of both arrays over the best of ``--repeat`` wall times; the ratios
are ours over numpy's (above 1: ours is faster). Nothing is asserted about speed.
``--memory`` adds the tracemalloc peak of one more ``compare_arrays`` call over the bytes
of both arrays. When another checkout is installed in editable mode, put this one first:
``PYTHONPATH=. python bench/compare.py``.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.testing as npt

from reprocheck.compare import ArrayComparison, Tolerance, compare_arrays

DTYPES = ("uint8", "int16", "int32", "int64", "float32", "float64")
FRACTIONS = (1.0, 0.01)
MEGABYTES = 64
MAX_ULP = 4
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-13}
BITS = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}
IMAGE_WIDTH, IMAGE_CHANNELS = 4096, 4

Call = Callable[[np.ndarray, np.ndarray], None]


@dataclass(frozen=True, kw_only=True)
class Case:
    dtype: np.dtype
    fraction: float
    a: np.ndarray
    b: np.ndarray
    moved: int


def moved_positions(rng: np.random.Generator, size: int, fraction: float) -> np.ndarray:
    if fraction >= 1.0:
        return np.arange(size)
    return np.sort(rng.choice(size, int(size * fraction), replace=False))


def make_case(dtype: np.dtype, megabytes: int, fraction: float) -> Case:
    """Integers moved by +1 (never past the dtype's top); floats by 1..MAX_ULP ULP.

    Integers stay within +-2**52, where assert_allclose's conversion to float64 is exact.
    """
    rng = np.random.default_rng(0)
    size = megabytes * 2**20 // dtype.itemsize
    if dtype.kind == "f":
        a = rng.standard_normal(size, dtype=np.float64).astype(dtype)
    else:
        low, high = max(np.iinfo(dtype).min, -(2**52)), min(np.iinfo(dtype).max, 2**52)
        a = rng.integers(low, high, size=size, dtype=dtype, endpoint=False)
    b = a.copy()
    moved = moved_positions(rng, size, fraction)
    if dtype.kind == "f":
        steps = rng.integers(1, MAX_ULP + 1, size=moved.size).astype(BITS[dtype])
        b.view(BITS[dtype])[moved] += steps  # away from zero by 1..MAX_ULP representable values
    else:
        b[moved] += dtype.type(1)
    if dtype == np.uint8 and size % (IMAGE_WIDTH * IMAGE_CHANNELS) == 0:
        a, b = (x.reshape(-1, IMAGE_WIDTH, IMAGE_CHANNELS) for x in (a, b))
    return Case(dtype=dtype, fraction=fraction, a=a, b=b, moved=int(moved.size))


def tolerance(dtype: np.dtype) -> Tolerance:
    if dtype.kind == "f":
        return Tolerance(rtol=RTOL[dtype], ulp=MAX_ULP)
    return Tolerance(atol=1.0)


def ours(case: Case) -> Call:
    def call(a: np.ndarray, b: np.ndarray) -> None:
        result = compare_arrays(a, b, tolerance(case.dtype))
        check(result, case)

    return call


def check(result: ArrayComparison, case: Case) -> None:
    expected_ulp = 1 if case.dtype.kind != "f" else MAX_ULP
    assert result.verdict == "within_tolerance", result.verdict
    assert result.mismatched == case.moved, (result.mismatched, case.moved)
    assert result.max_ulp == expected_ulp, result.max_ulp
    assert (result.psnr is not None) == (case.a.ndim == 3)


def numpy_equal(a: np.ndarray, b: np.ndarray) -> None:
    try:
        npt.assert_array_equal(b, a)
    except AssertionError:
        return  # the expected outcome: its mismatch statistics were computed
    raise SystemExit("numpy.testing.assert_array_equal accepted a pair that differs")


def numpy_close(case: Case) -> Call:
    def call(a: np.ndarray, b: np.ndarray) -> None:
        if case.dtype.kind == "f":
            npt.assert_allclose(b, a, rtol=RTOL[case.dtype], atol=0)
        else:
            npt.assert_allclose(b, a, rtol=0, atol=1)

    return call


def gigabytes_per_second(call: Call, case: Case, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call(case.a, case.b)
        best = min(best, time.perf_counter() - start)
    return (case.a.nbytes + case.b.nbytes) / best / 1e9


def peak_ratio(call: Call, case: Case) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    call(case.a, case.b)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / (case.a.nbytes + case.b.nbytes)


def row(case: Case, repeat: int, memory: bool) -> str:
    speed = gigabytes_per_second(ours(case), case, repeat)
    equal = gigabytes_per_second(numpy_equal, case, repeat)
    close = gigabytes_per_second(numpy_close(case), case, repeat)
    line = (
        f"{case.dtype.name:8} {case.fraction:>9.0%} {speed:10.2f} {equal:10.2f} {close:10.2f} "
        f"{speed / equal:8.1f}x {speed / close:8.1f}x"
    )
    if memory:
        line += f" {peak_ratio(ours(case), case):9.3f}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=MEGABYTES, help="size of each array")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best one counts")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--fractions", default=",".join(str(f) for f in FRACTIONS))
    parser.add_argument("--memory", action="store_true", help="also the peak memory of ours")
    args = parser.parse_args()
    print(f"numpy {np.__version__}; {args.megabytes} MB per array; GB/s of both arrays")
    header = (
        f"{'dtype':8} {'differing':>9} {'ours':>10} {'np.equal':>10} {'np.close':>10} "
        f"{'/equal':>9} {'/close':>9}"
    )
    print(header + (f" {'peak mem':>9}" if args.memory else ""))
    for name in args.dtypes.split(","):
        for fraction in (float(f) for f in args.fractions.split(",")):
            case = make_case(np.dtype(name), args.megabytes, fraction)
            print(row(case, args.repeat, args.memory), flush=True)
            del case


if __name__ == "__main__":
    main()
