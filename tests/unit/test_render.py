"""render.decision_line: what a drift did to the decisions an output drives."""

from __future__ import annotations

import numpy as np

from reprocheck.compare import DecisionRule, compare_arrays
from reprocheck.matrix import OutputComparison
from reprocheck.render import decision_line

ARGMAX = DecisionRule(pattern="*/prob", kind="argmax")
PROB = np.array([[0.25, 0.75], [0.5, 0.0], [0.125, 0.875]], dtype=np.float32)


def _item(a: np.ndarray, b: np.ndarray, rule: DecisionRule | None = ARGMAX) -> OutputComparison:
    metrics = compare_arrays(a, b, decision=rule)
    return OutputComparison(
        output="x.png/prob",
        baseline="old",
        candidate="new",
        verdict=metrics.verdict,
        metrics=metrics,
    )


def test_drift_that_changes_no_decision() -> None:
    b = PROB.copy()
    b[0, 1] += 2.0**-10  # 2**14 float32 ULP above 0.75; the closest call is 0.5 wide
    line = decision_line(_item(PROB, b))
    assert line == (
        "x.png/prob (old->new) drifts by 16,384 ULP (max_abs 0.000977); "
        "0 of 3 argmax decisions changed; the closest call's margin is 512x the drift"
    )


def test_drift_that_changes_a_decision() -> None:
    b = PROB.copy()
    b[1] = [0.0, 0.5]
    line = decision_line(_item(PROB, b))
    assert line is not None
    assert "; 1 of 3 argmax decisions changed" in line
    assert "max_abs 0.5)" in line
    assert line.endswith("the closest call's margin is 1x the drift")


def test_no_line_for_identical_outputs() -> None:
    assert decision_line(_item(PROB, PROB.copy())) is None


def test_no_line_without_a_decision_rule() -> None:
    b = PROB.copy()
    b[0, 1] += 2.0**-10
    assert decision_line(_item(PROB, b, rule=None)) is None


def test_no_line_without_metrics() -> None:
    item = OutputComparison(output="x.png/prob", baseline="old", candidate="new", verdict="missing")
    assert decision_line(item) is None


def test_terminal_text_never_carries_control_sequences() -> None:
    import io

    from rich.console import Console

    from reprocheck.render import escape

    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    console.print(escape("out\x1b[31mred\x07 [bold]x[/] a\tb"))
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b" not in printed and "\x07" not in printed
    assert "out\\x1b[31mred\\x07 [bold]x[/] a" in printed  # rich expands the tab
