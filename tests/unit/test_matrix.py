"""matrix: pairs of environments, rules from the config, and drift that is noise."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from runs import stored_env, stored_run

from reprocheck.compare import Tolerance
from reprocheck.config import load_config
from reprocheck.matrix import (
    Noise,
    OutputComparison,
    _mark_noise,
    build_matrix,
    decision_rules,
    environment_pairs,
    tolerance_rules,
)

CONFIG = '[pipeline]\ncallable = "p.py:run"\n[[environments]]\nname = "a"\nimage = "i"\n'


def _item(verdict: str, base: str = "a", cand: str = "b") -> OutputComparison:
    return OutputComparison(output="x/v", baseline=base, candidate=cand, verdict=verdict)  # type: ignore[arg-type]


NOISE = Noise(output="x/v", environment="b", repeats=3, max_abs=0.25, max_ulp=4)


@pytest.mark.parametrize("env", ["a", "b"])
def test_drift_in_a_noisy_environment_is_nondeterministic(env: str) -> None:
    noise = dataclasses.replace(NOISE, environment=env)
    marked = _mark_noise(_item("drift"), {("x/v", env): noise})
    assert marked.verdict == "nondeterministic"
    assert marked.note == f"varies within {env} across 3 runs (max_abs 0.25)"


@pytest.mark.parametrize("verdict", ["identical", "within_tolerance", "missing", "error"])
def test_only_drift_is_marked(verdict: str) -> None:
    item = _item(verdict)
    assert _mark_noise(item, {("x/v", "b"): NOISE}) is item


def test_drift_without_noise_stays_drift() -> None:
    item = _item("drift")
    assert _mark_noise(item, {("x/v", "c"): NOISE, ("y/v", "b"): NOISE}) is item


def test_repeats_that_vary_make_drift_nondeterministic(make_project, tmp_path) -> None:
    run_dir = tmp_path / "run"
    # v and w share a dtype and shape: compared in one batch, one of them noisy
    a = stored_env(run_dir, "a", {"x": {"v": np.zeros(3), "w": np.ones(3)}})
    b = stored_env(run_dir, "b", {"x": {"v": np.full(3, 0.5), "w": np.full(3, 2.0)}})
    again = stored_env(
        run_dir,
        "b",
        {"x": {"v": np.full(3, 0.75), "w": np.full(3, 2.0)}},
        folder=run_dir / "environments/b/repeats/2",
        repeat=2,
    )
    config = load_config(make_project(CONFIG + '[[environments]]\nname = "b"\nimage = "j"\n'))
    matrix = build_matrix(config, stored_run(run_dir, (a, b), repeats=(again,)))
    verdicts = {c.output: c.verdict for c in matrix.comparisons}
    assert verdicts == {"x/v": "nondeterministic", "x/w": "drift"}
    notes = {c.output: c.note for c in matrix.comparisons}
    assert notes == {"x/v": "varies within b across 2 runs (max_abs 0.25)", "x/w": None}
    (noise,) = matrix.noise
    assert (noise.output, noise.environment, noise.repeats) == ("x/v", "b", 2)
    assert noise.max_abs == 0.25


def test_json_metrics_compare_as_numbers(make_project, tmp_path) -> None:
    """A metric one environment writes as 3 and another as 3.0 (an int from one library
    version, a float from the next) is the same number; a nested metric is compared too."""
    run_dir = tmp_path / "run"
    a, b = stored_env(run_dir, "a", {}), stored_env(run_dir, "b", {})
    (a.outputs_dir / "eval.json").write_text('{"count": 3, "m": {"acc": 0.91, "n": null}}')
    (b.outputs_dir / "eval.json").write_text('{"count": 3.0, "m": {"acc": 0.97, "n": null}}')
    config = load_config(make_project(CONFIG + '[[environments]]\nname = "b"\nimage = "j"\n'))
    matrix = build_matrix(config, stored_run(run_dir, (a, b)))
    verdicts = {c.output: c.verdict for c in matrix.comparisons}
    assert verdicts == {"eval/count": "identical", "eval/m/acc": "drift",
                        "eval/m/n": "identical"}  # fmt: skip


def test_environment_pairs() -> None:
    names = ["a", "b", "c"]
    assert environment_pairs(names, "baseline") == (("a", "b"), ("a", "c"))
    assert environment_pairs(names, "all-pairs") == (("a", "b"), ("a", "c"), ("b", "c"))
    assert environment_pairs(["a"], "baseline") == ()


def test_rules_from_config(make_project) -> None:
    config = load_config(
        make_project(
            CONFIG
            + """
[tolerance.default]
atol = 1e-6
[tolerance."*/prob"]
ulp = 4
max_mismatch_fraction = 0.01
[decisions]
"*/prob" = "argmax"
"*/boxes" = { kind = "boxes", iou = 0.7 }
"""
        )
    )
    tolerances = tolerance_rules(config)
    assert tolerances.default == Tolerance(pattern="default", atol=1e-6)
    assert tolerances.for_output("x.png/prob") == Tolerance(
        pattern="*/prob", ulp=4, max_mismatch_fraction=0.01
    )
    assert tolerances.for_output("x.png/mean").atol == 1e-6
    decisions = decision_rules(config)
    prob, boxes = decisions.for_output("x/prob"), decisions.for_output("x/boxes")
    assert prob is not None and boxes is not None
    assert (prob.kind, prob.iou) == ("argmax", 0.5)
    assert (boxes.kind, boxes.iou) == ("boxes", 0.7)
    assert decisions.for_output("x/mean") is None


def test_rules_without_config(make_project) -> None:
    config = load_config(make_project(CONFIG))
    assert tolerance_rules(config).default == Tolerance()
    assert tolerance_rules(config).rules == ()
    assert decision_rules(config).rules == ()


def _verdicts(matrix) -> dict[tuple[str, str, str], str]:  # type: ignore[no-untyped-def]
    return {(c.output, c.baseline, c.candidate): c.verdict for c in matrix.comparisons}


def test_an_unreadable_output_is_an_error_and_the_others_are_compared(
    make_project, tmp_path
) -> None:
    config = load_config(make_project(CONFIG))
    run_dir = tmp_path / "run"
    a = stored_env(run_dir, "a", {"x": {"v": np.zeros(3)}})
    b = stored_env(run_dir, "b", {"x": {"v": np.zeros(3)}})
    for env in (a, b):
        np.save(env.outputs_dir / "text.npy", np.array(["a", "b"]))
        (env.outputs_dir / "junk.npz").write_bytes(b"PK junk")
    (b.outputs_dir / "scalar.npy").write_bytes(b"")  # empty file: no npy header
    np.save(a.outputs_dir / "scalar.npy", np.float64(1.0))
    matrix = build_matrix(config, stored_run(run_dir, (a, b)))
    found = _verdicts(matrix)
    assert found == {
        ("junk", "a", "b"): "error", ("scalar", "a", "b"): "error",
        ("text", "a", "b"): "error", ("x/v", "a", "b"): "identical",
    }  # fmt: skip
    notes = {c.output: c.note for c in matrix.comparisons}
    assert "dtype <U1" in str(notes["text"])
    assert "b:" in str(notes["scalar"])
    assert matrix.has_errors and not matrix.has_drift


def test_outputs_neither_side_made_are_not_part_of_a_pair(make_project, tmp_path) -> None:
    config = load_config(make_project(CONFIG))
    run_dir = tmp_path / "run"
    a = stored_env(run_dir, "a", {"x": {"v": np.zeros(3)}})
    b = stored_env(run_dir, "b", {"x": {"v": np.zeros(3)}})
    c = stored_env(run_dir, "c", {"x": {"v": np.zeros(3), "extra": np.ones(1)}})
    pairs = environment_pairs(["a", "b", "c"], "all-pairs")
    matrix = build_matrix(config, stored_run(run_dir, (a, b, c)), pairs=pairs)
    assert _verdicts(matrix) == {
        ("x/v", "a", "b"): "identical", ("x/v", "a", "c"): "identical",
        ("x/v", "b", "c"): "identical", ("x/extra", "a", "c"): "new",
        ("x/extra", "b", "c"): "new",
    }  # fmt: skip
    assert not matrix.has_drift  # a new output passes by default


def test_new_outputs_fail_when_asked_and_absent_ones_always_do(make_project, tmp_path) -> None:
    config = load_config(make_project(CONFIG + '[compare]\nnew_outputs = "fail"\n'))
    run_dir = tmp_path / "run"
    a = stored_env(run_dir, "a", {"x": {"v": np.zeros(3), "gone": np.ones(1)}})
    b = stored_env(run_dir, "b", {"x": {"v": np.zeros(3), "extra": np.ones(1)}})
    matrix = build_matrix(config, stored_run(run_dir, (a, b)), pairs=(("a", "b"),))
    assert _verdicts(matrix) == {("x/v", "a", "b"): "identical", ("x/gone", "a", "b"): "missing",
                                 ("x/extra", "a", "b"): "missing"}  # fmt: skip
    assert matrix.has_drift


@pytest.mark.parametrize(
    "value",
    [np.float64(2.0), np.asarray(2), np.asarray(True), np.zeros((0, 3)), np.asarray(np.nan)],
)
def test_scalars_and_empty_arrays_compare(make_project, tmp_path, value) -> None:
    config = load_config(make_project(CONFIG))
    run_dir = tmp_path / "run"
    a = stored_env(run_dir, "a", {"x": {"v": np.asarray(value)}})
    b = stored_env(run_dir, "b", {"x": {"v": np.ones_like(value)}})
    matrix = build_matrix(config, stored_run(run_dir, (a, b)))
    (item,) = matrix.comparisons
    assert item.verdict in ("drift", "identical")
    assert not matrix.has_errors
