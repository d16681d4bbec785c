"""The effect meter: what one experiment did to one drifting output.

Agreement follows the run's rules: two outputs agree when they are bit-identical, or within
the output's tolerance (``[tolerance]``); a transplant's or knob's output "follows" the
baseline's when they agree, and is "unchanged" only when bit-identical to the candidate's. A
forward glibc transplant changes the baseline instead: its output "follows" the candidate's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reprocheck.compare import Tolerance, ToleranceRules, compare_arrays
from reprocheck.errors import ReprocheckError
from reprocheck.explain.model import Effect, Experiment, ExperimentKind, Sides
from reprocheck.output_store import OutputFolders
from reprocheck.run_model import EnvironmentResult

BIT_IDENTICAL = "bit-identical"
WITHIN_TOLERANCE = "within tolerance"


@dataclass(frozen=True, kw_only=True)
class Measurement:
    effect: Effect
    one_sided: Effect  # the candidate side alone, against the baseline as it ran
    agreement: str = ""  # how it agrees, for FOLLOWS and AGREES: bit-identical or within...


FAILED = Measurement(effect=Effect.FAILED, one_sided=Effect.FAILED)


class EffectMeter:
    """Measures experiments' effects on outputs, each (experiment side, output) once."""

    def __init__(self, rules: ToleranceRules) -> None:
        self._rules = rules
        self._outputs = OutputFolders()
        self._memo: dict[tuple[Path, Path | None, str, str], Measurement] = {}

    def close(self) -> None:
        self._outputs.close()

    def measure(
        self, ran: Experiment, base: EnvironmentResult, cand: EnvironmentResult, output: str
    ) -> Measurement:
        if ran.outputs_dir is None or not ran.status.ran:
            return FAILED
        memo = (ran.outputs_dir, ran.baseline_outputs_dir or ran.reference_outputs_dir,
                base.name, output)  # fmt: skip
        if memo not in self._memo:
            self._memo[memo] = self._measure(ran, base, cand, output)
        return self._memo[memo]

    def _measure(
        self, ran: Experiment, base: EnvironmentResult, cand: EnvironmentResult, output: str
    ) -> Measurement:
        assert ran.outputs_dir is not None
        new = self._outputs.load(ran.outputs_dir, output)
        if new is None:
            return FAILED
        tolerance = self._rules.for_output(output)
        # the side the experiment changed (b) and the side it should come to equal (a): the
        # baseline's libraries in the candidate, or the candidate's glibc under the baseline
        reference, changed = (cand, base) if ran.target is Sides.BASELINE else (base, cand)
        # with a knob, the other side as it ran with the knob too
        if ran.knob and ran.reference_outputs_dir is None:
            return FAILED
        a = self._outputs.load(ran.reference_outputs_dir or reference.outputs_dir, output)
        b = self._outputs.load(changed.outputs_dir, output)
        follows = self._agreement(a, new, tolerance)
        if follows:
            return Measurement(effect=Effect.FOLLOWS, one_sided=Effect.FOLLOWS, agreement=follows)
        same = b is not None and self._agreement(b, new, Tolerance()) == BIT_IDENTICAL
        one_sided = Effect.UNCHANGED if same else Effect.CHANGED
        if ran.kind is ExperimentKind.KNOB and ran.baseline_outputs_dir is not None:
            theirs = self._outputs.load(ran.baseline_outputs_dir, output)
            agrees = self._agreement(theirs, new, tolerance)
            if agrees:
                return Measurement(effect=Effect.AGREES, one_sided=one_sided, agreement=agrees)
        return Measurement(effect=one_sided, one_sided=one_sided)

    def moved(
        self, ran: Experiment, base: EnvironmentResult, cand: EnvironmentResult, output: str
    ) -> bool:
        """Whether a knob changed the output on either side, bit for bit (one CPU's side
        may not move: a feature it lacks cannot be turned off)."""
        if self.measure(ran, base, cand, output).one_sided is Effect.CHANGED:
            return True
        if ran.baseline_outputs_dir is None or not ran.status.ran:
            return False
        theirs = self._outputs.load(ran.baseline_outputs_dir, output)
        before = self._outputs.load(base.outputs_dir, output)
        if theirs is None or before is None:
            return False
        return self._agreement(before, theirs, Tolerance()) != BIT_IDENTICAL

    @staticmethod
    def _agreement(a: np.ndarray | None, b: np.ndarray, tolerance: Tolerance) -> str:
        """'bit-identical', 'within tolerance', or '' (they differ, or ``a`` is missing)."""
        if a is None:
            return ""
        try:
            verdict = compare_arrays(a, b, tolerance).verdict
        except ReprocheckError:
            return ""
        if verdict == "identical":
            return BIT_IDENTICAL
        return WITHIN_TOLERANCE if verdict == "within_tolerance" else ""
