"""The pure attribution step: one drifting output's facts, the experiments' measured effects
and the pair's suspects in; its ranked causes and one sentence of advice out.

Nothing here runs a container or reads a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reprocheck.explain.effects import Measurement
from reprocheck.explain.model import (
    Attribution,
    Cause,
    CauseKind,
    CpuDifference,
    Effect,
    Experiment,
    ExperimentKind,
    Sides,
    Status,
    Suspect,
    SuspectKind,
    Transplant,
)
from reprocheck.explain.stages import Stage
from reprocheck.explain.suspects import PURE_PYTHON, StageLoads, fit, loaded_by, native_loaded

# Confidence of each kind of evidence, strongest first.
SETTLED = 0.95  # an experiment made the pair agree: it follows, or agrees with a knob on both
STAGE = 0.9  # the first recorded stage whose values differ
MOVED = 0.5  # an experiment changed the output without making the pair agree
SUSPECT_FITS = 0.3  # an untested version change that fits the output's name or stage
SUSPECT_LOADED = 0.2  # an untested version change the pipeline loaded, fitting nothing
SUSPECT_UNLOADED = 0.1  # an installed distribution none of whose libraries was loaded
SUSPECT_RULED_OUT = 0.05  # a suspect whose transplant changed nothing, or no suspect at all
ONE_IMAGE_TWO_CPUS = 0.9  # one image on two CPUs: the CPU is all that differs
CPUS_DIFFER = 0.15  # the CPUs differ as well as the images (below a loaded suspect)
# At most this many version suspects per output.
MAX_SUSPECTS = 5

Measured = tuple[Experiment, Measurement]


@dataclass(frozen=True, kw_only=True)
class OutputFacts:
    """What explain knows of one drifting output before any experiment."""

    output: str
    baseline: str
    candidate: str
    fixture: str | None
    family: str  # the output without its fixture
    stage: Stage | None
    words: str  # what hints match against: the family and the stage
    loads: StageLoads = None  # what the first divergent stage loaded; None: not recorded
    cpus: CpuDifference | None = None  # how the pair's CPUs differ, when they do
    same_image: bool = False  # both sides ran one image (by ID)


def attribute(
    facts: OutputFacts, measured: Sequence[Measured], suspects: Sequence[Suspect]
) -> Attribution:
    """Ranked causes (never none beyond the stage), what was ruled out, and the advice."""
    causes: list[Cause] = []
    if facts.stage:
        stage, evidence = facts.stage
        causes.append(Cause(factor=stage, kind=CauseKind.STAGE, evidence=evidence,
                            confidence=STAGE))  # fmt: skip
    found = experiment_causes(measured, facts.baseline)
    causes.extend(cause for cause, _ in found)
    ruled_out = [
        f"{ran.factor} (transplant changed nothing)"
        for ran, m in measured
        if ran.kind is ExperimentKind.TRANSPLANT and m.effect is Effect.UNCHANGED
    ]
    if facts.cpus is not None:
        causes.append(cpu_cause(facts, found))
    if not settled(causes):
        causes.extend(version_causes(facts.words, suspects, measured, facts.loads,
                                     cpus=facts.cpus))  # fmt: skip
    causes.sort(key=lambda c: -c.confidence)
    winner = max(found, key=lambda f: f[0].confidence, default=None)
    return Attribution(
        output=facts.output,
        baseline=facts.baseline,
        candidate=facts.candidate,
        fixture=facts.fixture,
        causes=tuple(causes),
        ruled_out=tuple(ruled_out),
        family=facts.family,
        advice=advise(facts, winner, causes, suspects),
    )


def cpu_cause(facts: OutputFacts, found: Sequence[tuple[Cause, Measured]]) -> Cause:
    """The CPU as a cause: all that differs for one image on two CPUs, else a suspect; a
    dispatch knob that made the pair agree says which code chooses by CPU feature."""
    assert facts.cpus is not None
    cpus = facts.cpus.describe(facts.baseline, facts.candidate)
    if facts.same_image:
        evidence = f"one image on two CPUs ({cpus}): the CPU is all that differs"
        confidence = ONE_IMAGE_TWO_CPUS
    else:
        evidence = f"the CPUs differ too ({cpus})"
        confidence = CPUS_DIFFER
    knobs = [c.factor for c, (ran, _m) in found
             if ran.kind is ExperimentKind.KNOB and c.confidence >= SETTLED]  # fmt: skip
    if knobs:
        evidence += f"; the code {', '.join(knobs)} chooses by CPU feature makes the difference"
    return Cause(factor="CPU", kind=CauseKind.CPU, evidence=evidence, confidence=confidence)


def settled(causes: Sequence[Cause]) -> bool:
    return any(
        c.kind in (CauseKind.PACKAGE, CauseKind.KNOB) and c.confidence >= SETTLED for c in causes
    )


def experiment_causes(
    measured: Sequence[Measured], base: str
) -> list[tuple[Cause, tuple[Experiment, Measurement]]]:
    """Causes from experiments: single factors first; a combination only where no single
    factor settles the output."""
    singles = [m for m in measured if not m[0].combined]
    found = [(c, m) for m in singles if (c := experiment_cause(m[0], m[1], base)) is not None]
    if settled([c for c, _ in found]):
        return found
    combined = [m for m in measured if m[0].combined]
    return found + [
        (c, m) for m in combined if (c := experiment_cause(m[0], m[1], base)) is not None
    ]


def experiment_cause(ran: Experiment, measured: Measurement, base: str) -> Cause | None:
    """The cause ``ran`` proves for one output; ``base`` is the pair's baseline (the side a
    forward glibc transplant moves is the baseline, which should then follow the candidate)."""
    what = ran.describe()
    if ran.target is Sides.BASELINE:
        base = ran.reference
    kind = CauseKind.PACKAGE if ran.kind is ExperimentKind.TRANSPLANT else CauseKind.KNOB
    match measured.effect:
        case Effect.FOLLOWS:
            if ran.knob:
                base = f"{base} with {ran.knob}"
            evidence = f"{what}: the output becomes {measured.agreement} to {base}'s"
            if measured.agreement != "bit-identical":
                evidence = f"{what}: the output becomes {measured.agreement} of {base}'s"
            return Cause(factor=ran.factor, kind=kind, evidence=evidence, confidence=SETTLED)
        case Effect.AGREES:
            alone = _one_sided(measured.one_sided, base)
            evidence = (
                f"{what}, and {ran.describe_baseline()}: the two outputs are "
                f"{measured.agreement}, so the code {ran.factor} switches is the cause; "
                f"on {ran.environment} alone {alone}"
            )
            return Cause(factor=ran.factor, kind=kind, evidence=evidence, confidence=SETTLED)
        case Effect.CHANGED:
            evidence = f"{what}: the output changes but does not match {base}'s"
            return Cause(factor=ran.factor, kind=kind, evidence=evidence, confidence=MOVED)
        case Effect.UNCHANGED | Effect.FAILED:
            return None


def _one_sided(effect: Effect, base: str) -> str:
    if effect is Effect.UNCHANGED:
        return f"the output does not change (the knob moved {base}'s side)"
    return f"the output changes but does not match {base}'s"


# --------------------------------------------------------------------------- suspects


def _tested(suspect: Suspect, measured: Sequence[Measured]) -> Measured | None:
    return next(((r, m) for r, m in measured if r.suspect == suspect and not r.combined), None)


def _why_untested(suspect: Suspect, tried: Measured | None) -> str:
    if tried is not None and tried[0].status is Status.NOT_TRANSPLANTABLE:
        if suspect.how is not Transplant.LIBRARIES:
            return "its transplant found nothing to move, or its hybrid image did not build"
        return "cannot be transplanted (no library of the same SONAME in the baseline)"
    if tried is not None:
        return f"its transplant does not run in the candidate ({tried[0].status})"
    if suspect.transplantable:
        return "not tried (budget)"
    match suspect.kind:
        case SuspectKind.INTERPRETER:
            return "the interpreter cannot be transplanted"
        case SuspectKind.DISTRIBUTION:
            return ("not transplanted: it needs the same CPython version on both sides and "
                    "the distribution installed in both")  # fmt: skip
        case SuspectKind.LIBRARY:
            return "cannot be transplanted"


def _how_loaded(
    suspect: Suspect, words: str, loads: StageLoads, suspects: Sequence[Suspect]
) -> str:
    if loads is not None:
        return _stage_loaded(suspect, loads, suspects)
    match suspect.kind:
        case SuspectKind.INTERPRETER:
            pure = PURE_PYTHON.search(words)
            return "the interpreter runs the pipeline" + (
                "; the output's stage is computed by the interpreter itself (by its name: "
                "per-stage loaded libraries are not recorded)" if pure else ""
            )  # fmt: skip
        case SuspectKind.LIBRARY | SuspectKind.DISTRIBUTION:
            if suspect.libraries:
                return "its libraries are loaded by the pipeline"
            return "installed, but none of its libraries was loaded"


def _stage_loaded(suspect: Suspect, loads: tuple[str, ...], suspects: Sequence[Suspect]) -> str:
    """What the first divergent stage loaded, as it bears on ``suspect``."""
    mine = loaded_by(suspect, loads)
    if mine:
        names = ", ".join(sorted({p.rpartition("/")[2] for p in mine})[:3])
        return f"the first divergent stage loaded its libraries ({names})"
    if suspect.kind is SuspectKind.INTERPRETER and not native_loaded(suspects, loads):
        return ("the interpreter runs the pipeline, and the first divergent stage loaded no "
                "native library of any differing package")  # fmt: skip
    if suspect.kind is SuspectKind.INTERPRETER:
        return "the interpreter runs the pipeline"
    if suspect.libraries:
        return "its libraries are loaded by the pipeline, before the first divergent stage"
    return "installed, but none of its libraries was loaded"


def version_causes(
    words: str,
    suspects: Sequence[Suspect],
    measured: Sequence[Measured],
    loads: StageLoads = None,
    *,
    cpus: CpuDifference | None = None,
) -> list[Cause]:
    """The untested (or untestable) version changes, best fitting the output first, those
    whose transplant changed nothing last; at least one cause, even with no suspect (but
    when the CPUs differ, which is a cause of its own)."""
    ranked: list[tuple[tuple[int, int, int, int, str], Cause]] = []
    for suspect in suspects:
        tried = _tested(suspect, measured)
        effect = tried[1].effect if tried is not None else None
        if effect in (Effect.FOLLOWS, Effect.CHANGED):
            continue  # the experiment's own cause names it
        ruled_out = effect is Effect.UNCHANGED
        score = fit(suspect, [words], [loads], suspects)
        why = "its transplant changed nothing" if ruled_out else _why_untested(suspect, tried)
        evidence = (
            f"{suspect.package} differs ({suspect.baseline_version} -> "
            f"{suspect.candidate_version}), {_how_loaded(suspect, words, loads, suspects)}; {why}"
        )
        confidence = (SUSPECT_RULED_OUT if ruled_out else SUSPECT_FITS if score > 0
                      else SUSPECT_LOADED if suspect.loaded else SUSPECT_UNLOADED)  # fmt: skip
        cause = Cause(factor=suspect.package, kind=CauseKind.VERSION, evidence=evidence,
                      confidence=confidence)  # fmt: skip
        key = (ruled_out, -score, -suspect.loaded, -len(suspect.libraries), suspect.package)
        ranked.append((key, cause))
    causes = [cause for _, cause in sorted(ranked, key=lambda r: r[0])][:MAX_SUSPECTS]
    if not causes and cpus is None:
        evidence = (
            "no package, interpreter or pip distribution version differs between the two "
            "fingerprints: the images differ in something they do not record"
        )
        causes.append(Cause(factor="image", kind=CauseKind.VERSION, evidence=evidence,
                            confidence=SUSPECT_RULED_OUT))  # fmt: skip
    return causes


# --------------------------------------------------------------------------- advice


def advise(
    facts: OutputFacts,
    winner: tuple[Cause, Measured] | None,
    causes: Sequence[Cause],
    suspects: Sequence[Suspect],
) -> str:
    """One sentence of what to do about this output, from the winning experiment, else
    from the most likely suspect."""
    base, cand = facts.baseline, facts.candidate
    if winner is not None:
        _, (ran, measured) = winner
        if ran.kind is ExperimentKind.KNOB:
            return _knob_advice(ran, measured, base, cand, cpus=facts.cpus is not None)
        if measured.effect is Effect.FOLLOWS and ran.knob:
            return _mixed_advice(ran, base, cand)
        if measured.effect is Effect.FOLLOWS:
            return _transplant_advice(ran, base, cand)
        return (f"{ran.factor} moves these outputs without settling them: pin it together with "
                f"the other suspects listed, or accept {cand}'s as the new baseline")  # fmt: skip
    top = next((c.factor for c in causes if c.kind is CauseKind.VERSION), None)
    suspect = next((s for s in suspects if s.package == top), None)
    if facts.cpus is not None and (facts.same_image or suspect is None):
        return (f"the CPUs of {base} and {cand} compute it differently and no dispatch knob "
                "settled it: test on every CPU model you deploy to, or give it a tolerance "
                "that covers them")  # fmt: skip
    if suspect is None:
        return f"no version change explains it: compare the images of {base} and {cand}"
    versions = f"{_in(suspect.baseline_version, base)}, {_in(suspect.candidate_version, cand)}"
    if suspect.kind is SuspectKind.INTERPRETER:
        return (f"untested: most likely the interpreter ({versions}); run the same Python "
                f"version in every image, or accept {cand}'s as the new baseline")  # fmt: skip
    return (f"untested: most likely {suspect.package} ({versions}); pin it to test, or accept "
            f"{cand}'s as the new baseline")  # fmt: skip


def _transplant_advice(ran: Experiment, base: str, cand: str) -> str:
    suspect = ran.suspect
    if suspect is not None and suspect.how is Transplant.GLIBC:
        return (f"glibc's libm computes these differently ({_in(suspect.baseline_version, base)}"
                f", {_in(suspect.candidate_version, cand)}): build every image on one glibc "
                f"(one Debian release), or accept {cand}'s as the new baseline")  # fmt: skip
    if suspect is not None and suspect.how is Transplant.DISTRIBUTION:
        return (f"pin {suspect.package}=={suspect.baseline_version} (as in {base}) in {cand}'s "
                f"requirements to get {base}'s outputs, or accept {cand}'s as the new "
                "baseline")  # fmt: skip
    return (f"pin {_pins(ran.suspects, base)} to get {base}'s outputs in {cand}, "
            f"or accept {cand}'s as the new baseline")  # fmt: skip


def _mixed_advice(ran: Experiment, base: str, cand: str) -> str:
    """Two causes together: a package (or glibc) and the code a knob switches."""
    variables = ", ".join(f"{k}={v}" for k, v in ran.env.items())
    suspect = ran.suspect
    if suspect is not None and suspect.how is Transplant.GLIBC:
        first = "build every image on one glibc (one Debian release)"
    else:
        first = f"pin {_pins(ran.suspects, base)}"
    return (f"two causes together ({ran.factor}): {first} and set {variables} on every image "
            f"to get the same outputs in {base} and {cand}, or accept {cand}'s as the new "
            "baseline")  # fmt: skip


def _in(version: str | None, environment: str) -> str:
    return f"not in {environment}" if version is None else f"{version} in {environment}"


def _pins(suspects: Sequence[Suspect], base: str) -> str:
    return " and ".join(f"{s.package} at {s.baseline_version} (as in {base})" for s in suspects)


def _knob_advice(
    ran: Experiment, measured: Measurement, base: str, cand: str, *, cpus: bool = False
) -> str:
    variables = ", ".join(f"{k}={v}" for k, v in ran.env.items())
    if measured.effect is Effect.AGREES and cpus:
        verb = "choose" if " + " in ran.factor else "chooses"
        return (f"{ran.factor} {verb} code by CPU feature: set {variables} on every "
                f"environment to compute these outputs the same on the CPUs of {base} and "
                f"{cand}, or give them a tolerance that covers both")  # fmt: skip
    if measured.effect is Effect.AGREES:
        return (f"set {variables} on every image to make these outputs reproducible across "
                f"{base} and {cand}")  # fmt: skip
    if measured.effect is Effect.FOLLOWS:
        return f"set {variables} in {cand} to get {base}'s outputs"
    return (f"{ran.factor} moves these outputs without settling them: set it on every image "
            "and compare again, or accept the new outputs")  # fmt: skip
