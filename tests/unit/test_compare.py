"""Golden tests of compare.py: one verdict or metric per test, hand-computed values."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from reprocheck.compare import (
    Chunking,
    DecisionRule,
    DecisionRules,
    Tolerance,
    ToleranceRules,
    agreement_classes,
    compare_arrays,
)
from reprocheck.errors import OutputError

F32_ONE_UP = float(np.nextafter(np.float32(1.0), np.float32(2.0)))


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# --------------------------------------------------------------------------- verdicts


def test_identical_arrays() -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    result = compare_arrays(a, a.copy())
    assert result.verdict == "identical"
    assert result.bit_identical
    assert (result.mismatched, result.max_abs, result.max_ulp) == (0, 0.0, 0)
    assert result.total == 12


def test_only_sign_of_zero_is_within_tolerance_even_when_exact() -> None:
    result = compare_arrays(f32(0.0, 1.0), f32(-0.0, 1.0))
    assert result.verdict == "within_tolerance"
    assert not result.bit_identical
    assert (result.mismatched, result.max_ulp, result.max_abs) == (0, 0, 0.0)


def test_only_nan_payload_is_within_tolerance() -> None:
    quiet = np.array([0x7FC00000, 0x3F800000], dtype=np.uint32).view(np.float32)
    payload = np.array([0x7FC00001, 0x3F800000], dtype=np.uint32).view(np.float32)
    result = compare_arrays(quiet, payload)
    assert result.verdict == "within_tolerance"
    assert (result.mismatched, result.nan_mismatch) == (0, 0)


def test_one_ulp_is_drift_when_exact() -> None:
    result = compare_arrays(f32(1.0, 2.0), f32(F32_ONE_UP, 2.0))
    assert result.verdict == "drift"
    assert (result.mismatched, result.max_ulp) == (1, 1)
    assert result.worst_indices == ((0,),)


@pytest.mark.parametrize(
    ("tolerance", "verdict"),
    [
        (Tolerance(atol=0.1), "within_tolerance"),
        (Tolerance(atol=0.09), "drift"),
        (Tolerance(rtol=0.01), "within_tolerance"),  # 0.1 <= 0.01 * 10
        (Tolerance(rtol=0.009), "drift"),
        (Tolerance(atol=0.05, rtol=0.005), "within_tolerance"),  # 0.05 + 0.05
        (Tolerance(ulp=0), "drift"),
    ],
)
def test_atol_and_rtol_bound(tolerance: Tolerance, verdict: str) -> None:
    a = np.array([10.0, 5.0])
    b = np.array([10.1, 5.0])
    b[0] = 10.0 + 0.1 * (1 - 1e-12)  # strictly inside 0.1 of the baseline
    assert compare_arrays(a, b, tolerance).verdict == verdict


def test_ulp_bound_is_inclusive() -> None:
    a = f32(1.0)
    b = f32(float(np.nextafter(np.float32(F32_ONE_UP), np.float32(2.0))))  # 2 ULP
    assert compare_arrays(a, b, Tolerance(ulp=2)).verdict == "within_tolerance"
    assert compare_arrays(a, b, Tolerance(ulp=1)).verdict == "drift"


def test_max_mismatch_fraction_is_inclusive() -> None:
    a = np.zeros(4)
    b = np.array([1.0, 0.0, 0.0, 0.0])
    assert compare_arrays(a, b, Tolerance(max_mismatch_fraction=0.25)).verdict == (
        "within_tolerance"
    )
    assert compare_arrays(a, b, Tolerance(max_mismatch_fraction=0.2)).verdict == "drift"


def test_nan_vs_number_is_never_within_tolerance() -> None:
    result = compare_arrays(f32(np.nan, 1.0), f32(1.0, 1.5), Tolerance(atol=1e30, ulp=10**9))
    assert result.verdict == "drift"
    assert (result.nan_mismatch, result.mismatched) == (1, 2)
    assert result.max_abs == 0.5  # the NaN position is excluded
    assert result.worst_indices == ((0,), (1,))  # NaN vs number ranks as the worst error


def test_inf_vs_other_value_counts_and_is_never_within_tolerance() -> None:
    result = compare_arrays(
        f32(np.inf, np.inf, -np.inf), f32(np.inf, 3.0, np.inf), Tolerance(rtol=1)
    )
    assert result.verdict == "drift"
    assert (result.inf_mismatch, result.mismatched) == (2, 2)
    assert result.max_abs == np.inf


def test_integers_ignore_rtol_but_honour_atol() -> None:
    a = np.array([1000, 7], dtype=np.int32)
    b = np.array([1001, 7], dtype=np.int32)
    assert compare_arrays(a, b, Tolerance(rtol=0.5)).verdict == "drift"
    assert compare_arrays(a, b, Tolerance(atol=1)).verdict == "within_tolerance"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (np.zeros(3, np.float32), np.zeros(3, np.float64)),
        (np.zeros(3), np.zeros(4)),
        (np.zeros((2, 3)), np.zeros((3, 2))),
        (np.zeros(3, np.int32), np.zeros(3, np.float32)),
    ],
)
def test_dtype_or_shape_difference_is_incomparable(a: np.ndarray, b: np.ndarray) -> None:
    result = compare_arrays(a, b)
    assert result.verdict == "incomparable"
    assert result.dtype == (str(a.dtype), str(b.dtype))
    assert result.shape == (a.shape, b.shape)
    assert result.max_abs is None


def test_byte_order_alone_is_not_a_difference() -> None:
    little = np.array([1.5, -2.0], dtype="<f8")
    assert compare_arrays(little, little.astype(">f8")).verdict == "identical"


def test_unsupported_dtype_raises_output_error() -> None:
    with pytest.raises(OutputError):
        compare_arrays(np.array(["a"]), np.array(["a"]))


# --------------------------------------------------------------------------- metrics


def test_abs_rel_and_mean_metrics() -> None:
    a = np.array([1.0, 2.0, np.nan, 4.0])
    b = np.array([1.5, 2.0, np.nan, 3.0])
    result = compare_arrays(a, b)
    assert result.max_abs == 1.0
    assert result.mean_abs == pytest.approx(1.5 / 3)  # the NaN position is excluded
    assert result.max_rel == 0.5
    assert result.worst_indices == ((3,), (0,))


def test_relative_error_against_zero_baseline_is_inf() -> None:
    result = compare_arrays(np.array([0.0, 1.0]), np.array([1e-300, 1.0]))
    assert result.max_rel == np.inf
    assert result.as_json()["max_rel"] == "inf"


def test_worst_indices_are_multi_dimensional_largest_first_at_most_five() -> None:
    a = np.zeros((3, 4))
    b = a.copy()
    for rank, index in enumerate([(2, 3), (0, 1), (1, 0), (2, 0), (0, 0), (1, 1)]):
        b[index] = 10.0 - rank
    assert compare_arrays(a, b).worst_indices == ((2, 3), (0, 1), (1, 0), (2, 0), (0, 0))


def test_image_psnr_and_differing_pixels() -> None:
    a = np.zeros((2, 2, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 1] = [3, 4, 0]  # one pixel, two channels
    b[1, 1, 2] = 5  # another pixel
    result = compare_arrays(a, b)
    mse = (9 + 16 + 25) / 12
    assert result.differing_pixels == 2
    assert result.psnr == pytest.approx(10 * np.log10(255**2 / mse))


def test_non_image_arrays_have_no_psnr() -> None:
    result = compare_arrays(np.zeros((2, 2, 5), np.uint8), np.ones((2, 2, 5), np.uint8))
    assert (result.psnr, result.differing_pixels) == (None, None)


def test_complex_indices_point_at_the_real_or_imaginary_part() -> None:
    a = np.array([1 + 1j, 2 + 2j], dtype=np.complex64)
    b = np.array([1 + 1j, 2 + 3j], dtype=np.complex64)
    result = compare_arrays(a, b)
    assert result.worst_indices == ((1, 1),)
    assert (result.total, result.max_abs) == (4, 1.0)


def test_as_json_is_strict_json() -> None:
    result = compare_arrays(f32(0.0, np.nan, 1.0), f32(1.0, 2.0, np.inf))
    text = json.dumps(result.as_json(), allow_nan=False)
    loaded = json.loads(text)
    assert loaded["max_abs"] == "inf"
    assert loaded["worst_indices"] == [[1], [2], [0]]
    assert loaded["shape"] == [[3], [3]]


def test_empty_arrays_are_identical_with_no_metrics() -> None:
    result = compare_arrays(np.zeros(0), np.zeros(0))
    assert (result.verdict, result.total, result.max_abs, result.max_ulp) == (
        "identical",
        0,
        None,
        None,
    )


# --------------------------------------------------------------------------- rows


def test_rows_in_another_order_are_within_tolerance() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((40, 3))
    b = a[rng.permutation(40)] + 1e-9
    result = compare_arrays(a, b, Tolerance(atol=1e-6, match="rows"))
    assert result.verdict == "within_tolerance"
    assert result.rows is not None
    assert (result.rows.matched, result.rows.only_in_baseline, result.rows.only_in_candidate) == (
        40,
        0,
        0,
    )
    assert result.rows.max_displacement == pytest.approx(1e-9, rel=1e-3)
    assert compare_arrays(a, b).verdict == "drift"  # element-wise the order matters


def test_rows_missing_and_extra_are_drift() -> None:
    a = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    b = np.array([[2.0, 2.0], [0.0, 0.0], [5.0, 5.0], [6.0, 6.0]])
    result = compare_arrays(a, b, Tolerance(atol=0.1, match="rows"))
    assert result.verdict == "drift"
    assert result.rows is not None
    assert (result.rows.matched, result.rows.only_in_baseline, result.rows.only_in_candidate) == (
        2,
        1,
        2,
    )
    assert result.rows.max_displacement == 0.0


def test_rows_beyond_atol_do_not_match() -> None:
    a = np.array([[0.0, 1.0]])
    b = np.array([[0.0, 1.2]])
    result = compare_arrays(a, b, Tolerance(atol=0.1, match="rows"))
    assert result.rows is not None
    assert (result.rows.matched, result.verdict) == (0, "drift")
    matched = compare_arrays(a, b, Tolerance(atol=0.25, match="rows"))
    assert matched.rows is not None and matched.rows.max_displacement == pytest.approx(0.2)


def test_rows_identical_and_one_dimensional() -> None:
    a = np.array([3, 1, 2], dtype=np.int64)
    assert compare_arrays(a, a.copy(), Tolerance(match="rows")).verdict == "identical"
    shuffled = compare_arrays(a, a[::-1].copy(), Tolerance(match="rows"))
    assert shuffled.verdict == "within_tolerance"


def test_rows_across_float_widths_and_duplicates() -> None:
    a = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0]], dtype=np.float64)
    b = np.array([[3.0, 4.0], [1.0, 2.0]], dtype=np.float32)
    result = compare_arrays(a, b, Tolerance(match="rows"))
    assert result.rows is not None
    assert (result.rows.matched, result.rows.only_in_baseline, result.verdict) == (2, 1, "drift")


def test_rows_need_the_same_column_count() -> None:
    result = compare_arrays(np.zeros((3, 2)), np.zeros((3, 3)), Tolerance(match="rows"))
    assert (result.verdict, result.rows) == ("incomparable", None)


# --------------------------------------------------------------------------- decisions


def test_argmax_decisions_and_margin() -> None:
    a = np.array([[0.1, 0.9, 0.0], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    b = np.array([[0.1, 0.9, 0.0], [0.3, 0.5, 0.2], [0.2, 0.1, 0.7]])
    result = compare_arrays(a, b, decision=DecisionRule(pattern="*", kind="argmax"))
    assert result.decision is not None
    assert (result.decision.total, result.decision.decisions_changed) == (3, 1)
    assert result.decision.min_margin == pytest.approx(0.2)


def test_labels_decisions() -> None:
    a = np.array([[1, 2], [3, 4]], dtype=np.int32)
    b = np.array([[1, 0], [3, 0]], dtype=np.int32)
    result = compare_arrays(a, b, decision=DecisionRule(pattern="*", kind="labels"))
    assert result.decision is not None
    assert (result.decision.total, result.decision.decisions_changed) == (4, 2)


def test_boxes_appear_vanish_and_move() -> None:
    a = np.array([[0, 0, 10, 10], [100, 100, 10, 10], [50, 50, 4, 4]], dtype=np.float32)
    b = np.array([[0, 0, 10, 11], [50, 50, 4, 4], [300, 0, 5, 5]], dtype=np.float32)
    result = compare_arrays(a, b, decision=DecisionRule(pattern="*", kind="boxes", iou=0.5))
    decision = result.decision
    assert decision is not None
    assert (decision.appeared, decision.vanished, decision.moved) == (1, 1, 1)
    assert (decision.total, decision.decisions_changed) == (3, 2)


def test_boxes_below_iou_threshold_do_not_match() -> None:
    a = np.array([[0, 0, 10, 10]], dtype=np.float64)
    b = np.array([[5, 0, 10, 10]], dtype=np.float64)  # IoU = 50 / 150
    loose = compare_arrays(a, b, decision=DecisionRule(pattern="*", kind="boxes", iou=0.3))
    strict = compare_arrays(a, b, decision=DecisionRule(pattern="*", kind="boxes", iou=0.34))
    assert loose.decision is not None and strict.decision is not None
    assert (loose.decision.moved, loose.decision.decisions_changed) == (1, 0)
    assert (strict.decision.appeared, strict.decision.vanished) == (1, 1)


# --------------------------------------------------------------------------- rules


RULES = (
    Tolerance(pattern="*", atol=1.0),
    Tolerance(pattern="logits*", atol=2.0),
    Tolerance(pattern="logits_?", atol=3.0),
    Tolerance(pattern="logits_a", atol=4.0),
    Tolerance(pattern="*.png", atol=5.0),
)


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("logits_a", "logits_a"),  # no wildcard beats any wildcard
        ("logits_b", "logits_?"),  # one wildcard each: the longer literal part wins
        ("logits_long", "logits*"),
        ("mask.png", "*.png"),
        ("other", "*"),
    ],
)
def test_most_specific_tolerance_rule_wins_in_any_order(name: str, pattern: str) -> None:
    for seed in range(5):
        shuffled = list(RULES)
        random.Random(seed).shuffle(shuffled)
        assert ToleranceRules(rules=tuple(shuffled)).for_output(name).pattern == pattern


def test_default_tolerance_when_no_rule_matches() -> None:
    rules = ToleranceRules(default=Tolerance(rtol=1e-6), rules=(Tolerance(pattern="a*"),))
    assert rules.for_output("b") == Tolerance(rtol=1e-6)
    assert rules.for_output("A1").pattern == "default"  # globs are case-sensitive


def test_rule_name_is_reported() -> None:
    tolerance = ToleranceRules(rules=RULES).for_output("logits_b")
    assert compare_arrays(f32(1.0), f32(1.0), tolerance).rule == "logits_?"


def test_bracket_counts_as_one_wildcard() -> None:
    rules = ToleranceRules(rules=(Tolerance(pattern="out[0-9]_x*"), Tolerance(pattern="out?_xy*")))
    assert rules.for_output("out1_xyz").pattern == "out?_xy*"


def test_decision_rules_follow_the_same_specificity() -> None:
    rules = DecisionRules(
        rules=(
            DecisionRule(pattern="*", kind="labels"),
            DecisionRule(pattern="det_boxes", kind="boxes"),
        )
    )
    assert rules.for_output("det_boxes") == DecisionRule(pattern="det_boxes", kind="boxes")
    assert rules.for_output("x") == DecisionRule(pattern="*", kind="labels")
    assert DecisionRules().for_output("x") is None


# --------------------------------------------------------------------------- agreement classes


def test_agreement_classes_group_bit_identical_arrays_in_order() -> None:
    zeros = np.zeros(4, dtype=np.float32)
    classes = agreement_classes(
        {
            "bookworm": zeros,
            "bullseye": np.ones(4, dtype=np.float32),
            "trixie": zeros.copy(),
            "broken": None,
            "alpine": np.ones(4, dtype=np.float32),
            "gone": None,
        }
    )
    assert classes == [["bookworm", "trixie"], ["bullseye", "alpine"], ["broken"], ["gone"]]


def test_agreement_classes_need_same_dtype_and_shape_not_just_bytes() -> None:
    classes = agreement_classes(
        {
            "f32": np.zeros(4, dtype=np.float32),
            "i32": np.zeros(4, dtype=np.int32),
            "square": np.zeros((2, 2), dtype=np.float32),
        }
    )
    assert classes == [["f32"], ["i32"], ["square"]]


def test_agreement_classes_separate_sign_of_zero() -> None:
    classes = agreement_classes({"a": f32(0.0), "b": f32(-0.0)})
    assert classes == [["a"], ["b"]]


# --------------------------------------------------------------- boxes with counts, memory


def test_boxes_with_different_counts_still_report_the_decision() -> None:
    a = np.array([[0, 0, 10, 10], [5, 5, 2, 2]], dtype=np.float64)
    b = np.array([[0, 0, 10, 10]], dtype=np.float64)
    rule = DecisionRule(pattern="*", kind="boxes")
    plain = compare_arrays(a, b, decision=rule)
    assert plain.verdict == "incomparable"
    assert plain.decision is not None and plain.decision.vanished == 1
    as_rows = compare_arrays(a, b, Tolerance(match="rows"), decision=rule)
    assert as_rows.verdict == "drift"
    assert as_rows.decision is not None and as_rows.decision.decisions_changed == 1


@pytest.mark.parametrize("fraction", [0.01, 1.0])
def test_streaming_memory_is_a_few_chunks_not_the_arrays(fraction: float) -> None:
    import tracemalloc

    rng = np.random.default_rng(3)
    a = rng.standard_normal(2**21).astype(np.float32)
    b = a.copy()
    moved = rng.permutation(a.size)[: int(a.size * fraction)]
    b.view(np.int32)[moved] += 1
    tracemalloc.start()
    result = compare_arrays(a, b, Tolerance(ulp=1), chunking=Chunking(chunk=3 * 2**12))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.verdict == "within_tolerance"
    assert result.mismatched == moved.size
    assert peak < 0.1 * (a.nbytes + b.nbytes)


def test_rows_with_many_duplicates_match_in_few_rounds() -> None:
    import time

    a = np.ones((1200, 3))
    started = time.perf_counter()
    result = compare_arrays(a, a + 1e-3, Tolerance(atol=1e-2, match="rows"))
    # one pair per round (about 15 s here) instead of one round (about 0.1 s)
    assert time.perf_counter() - started < 3.0
    assert result.rows is not None
    assert (result.rows.matched, result.verdict) == (1200, "within_tolerance")


# --------------------------------------------------------------------------- integer blocks


def test_image_where_every_pixel_moved_by_one_across_blocks() -> None:
    a = np.full((300, 400, 3), 7, dtype=np.uint8)
    result = compare_arrays(a, a + 1, Tolerance(atol=1))
    assert result.verdict == "within_tolerance"
    assert (result.mismatched, result.differing_pixels) == (a.size, 300 * 400)
    assert (result.max_abs, result.mean_abs, result.max_ulp) == (1.0, 1.0, 1)
    assert result.max_rel == 1 / 7
    assert result.psnr == pytest.approx(20 * np.log10(255.0))
    assert result.worst_indices == ((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0), (0, 1, 1))


@pytest.mark.parametrize(
    ("dtype", "low", "high"), [(np.int64, -(2**63), 2**63 - 1), (np.uint64, 0, 2**64 - 1)]
)
def test_64_bit_extremes_stay_exact_across_blocks(dtype: type, low: int, high: int) -> None:
    a = np.full(200_000, low, dtype=dtype)
    b = np.full(200_000, high, dtype=dtype)
    b[123_456] = low
    result = compare_arrays(a, b)
    assert (result.max_ulp, result.max_abs) == (2**64 - 1, float(2**64 - 1))
    assert result.mean_abs == (2**64 - 1) * (a.size - 1) / a.size  # exact, then rounded once
    assert result.worst_indices == ((0,), (1,), (2,), (3,), (4,))


def test_int8_ratio_against_minus_128_and_zero() -> None:
    a = np.array([-128, 5, 0, 3] * 1000, dtype=np.int8)
    b = a.copy()
    b[0] = 127  # 255 / 128, the largest ratio without the zero
    assert compare_arrays(a, b).max_rel == 255 / 128
    b[2] = 1  # 1 / 0
    assert compare_arrays(a, b).max_rel == np.inf


@pytest.mark.parametrize(("chunk", "block"), [(10, 4), (0, 4), (12, 0)])
def test_chunking_needs_whole_pixels_and_a_block(chunk: int, block: int) -> None:
    with pytest.raises(ValueError, match=r"chunk|block"):
        Chunking(chunk=chunk, block=block)
