"""Decision lines: what a drift did to the decisions an output drives, one line per output
key and pair across fixtures (report.aggregate.decisions, common.decision_line)."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from reprocheck.compare import DecisionRule, compare_arrays
from reprocheck.comparisons import Comparisons, OutputComparison
from reprocheck.render import print_summary
from reprocheck.report.aggregate import decisions
from reprocheck.report.common import decision_line, decision_lines

ARGMAX = DecisionRule(pattern="*/prob", kind="argmax")
PROB = np.array([[0.25, 0.75], [0.5, 0.0], [0.125, 0.875]], dtype=np.float32)


def _item(a: np.ndarray, b: np.ndarray, rule: DecisionRule | None = ARGMAX,
          output: str = "x.png/prob") -> OutputComparison:  # fmt: skip
    metrics = compare_arrays(a, b, decision=rule)
    return OutputComparison(output=output, baseline="old", candidate="new",
                            verdict=metrics.verdict, metrics=metrics)  # fmt: skip


def _lines(*items: OutputComparison, fixtures: tuple[str, ...] = ("x.png",)) -> list[str]:
    return [decision_line(e) for e in decisions(Comparisons.of(items), fixtures)]


def test_drift_that_changes_no_decision() -> None:
    b = PROB.copy()
    b[0, 1] += 2.0**-10  # 2**14 float32 ULP above 0.75; the closest call is 0.5 wide
    assert _lines(_item(PROB, b)) == [
        "*/prob (old->new): 0 of 3 argmax decisions changed; drift up to 16,384 ULP "
        "(max_abs 0.000977); the closest call's margin is 512x the drift"
    ]


def test_drift_that_changes_a_decision() -> None:
    b = PROB.copy()
    b[1] = [0.0, 0.5]
    (line,) = _lines(_item(PROB, b))
    assert ": 1 of 3 argmax decisions changed;" in line
    assert "max_abs 0.5)" in line
    assert line.endswith("the closest call's margin is 1x the drift")


def test_fixtures_of_one_key_are_one_line() -> None:
    """Three fixtures, one key: one line summing their decisions, the closest call of all."""
    b = PROB.copy()
    b[0, 1] += 2.0**-10
    far = PROB.copy()
    far[0, 1] += 2.0**-14
    items = [_item(PROB, b, output="x.png/prob"), _item(PROB, far, output="y.png/prob"),
             _item(PROB, PROB.copy(), output="z.png/prob")]  # fmt: skip
    (line,) = _lines(*items, fixtures=("x.png", "y.png", "z.png"))
    assert line.startswith("*/prob (old->new): 0 of 6 argmax decisions changed over 2 outputs")
    assert line.endswith("the closest call's margin is 512x the drift")


def test_no_line_for_identical_outputs_or_without_a_rule() -> None:
    b = PROB.copy()
    b[0, 1] += 2.0**-10
    assert _lines(_item(PROB, PROB.copy())) == []
    assert _lines(_item(PROB, b, rule=None)) == []
    missing = OutputComparison(output="x.png/prob", baseline="old", candidate="new",
                               verdict="missing")  # fmt: skip
    assert _lines(missing) == []


def test_changed_decisions_come_first_and_alone() -> None:
    moved, flipped = PROB.copy(), PROB.copy()
    moved[0, 1] += 2.0**-10
    flipped[1] = [0.0, 0.5]
    report = {"decisions": decisions(Comparisons.of([
        _item(PROB, moved, output="x.png/a/prob"), _item(PROB, flipped, output="x.png/b/prob"),
    ]), ("x.png",))}  # fmt: skip
    (line,) = decision_lines(report, 10)
    assert line.startswith("*/b/prob (old->new): 1 of 3")


def test_summary_prints_from_a_schema_1_report() -> None:
    """The terminal renders from the report model; an older report (all comparisons listed,
    no summary sections) renders too."""
    report = {"run_id": "r1", "environments": [{"name": "a", "status": "ok"}],
              "pairs": [["a", "b"]], "comparisons": [
                  {"output": "x", "baseline": "a", "candidate": "b", "verdict": "drift",
                   "total": 4, "mismatched": 1, "max_abs": 0.5, "max_ulp": 3}]}  # fmt: skip
    console = Console(file=io.StringIO(), width=200)
    print_summary(console, report, quiet=False)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "run r1: 1 drift" in text and "worst drifting outputs (1 in all)" in text


def test_without_a_terminal_a_heartbeat_line_comes_while_nothing_else_does() -> None:
    """A CI log shows no progress bars: a long image build must still print something."""
    import time

    from reprocheck.progress import ProgressEvent
    from reprocheck.render import ProgressPrinter

    console = Console(file=io.StringIO(), width=200)  # a file: not a terminal
    with ProgressPrinter(console, quiet=False, verbose=False, heartbeat=0.2) as progress:
        progress(ProgressEvent(stage="build", subject="trixie", message="Step 3/9 : RUN apt"))
        time.sleep(0.7)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "still working" in text and "build trixie: Step 3/9 : RUN apt" in text
    quiet = Console(file=io.StringIO())
    with ProgressPrinter(quiet, quiet=True, verbose=False, heartbeat=0.2):
        time.sleep(0.3)
    assert quiet.file.getvalue().strip() == ""  # type: ignore[attr-defined]
