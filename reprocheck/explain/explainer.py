"""The Explainer: for each drifting pair, facts, suspects, experiments in phases, attribution.

The phases run in this order, each planned from the experiments done before it, until every
output is settled or the budget is spent:

1. likely transplants: packages whose name fits the drifting outputs or stages, or whose
   libraries the first divergent stage loaded (glibc moved forward: the older side under the
   newer side's glibc; a pip distribution: its files from the baseline's image), and pip
   distributions whose native code the pipeline ran;
2. knobs, best fitting first, each run on both sides of the pair;
3. a combination of the likely transplants that each moved an output without settling it
   (two libraries can share one drift);
4. the remaining transplants.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reprocheck.config import EXPLAIN_MAX_EXPERIMENTS as MAX_EXPERIMENTS
from reprocheck.config import RunConfig
from reprocheck.engine import ContainerEngine
from reprocheck.explain.attribute import Measured, OutputFacts, attribute
from reprocheck.explain.effects import EffectMeter
from reprocheck.explain.knobs import DISPATCH_KNOBS, pair_knobs
from reprocheck.explain.model import (
    Attribution,
    CpuDifference,
    Effect,
    Experiment,
    ExperimentKind,
    Explanation,
    Sides,
    Status,
    Suspect,
    SuspectKind,
    Transplant,
)
from reprocheck.explain.runner import ExperimentRunner
from reprocheck.explain.stages import (
    COMMAND_PROBES,
    Stage,
    family_of,
    first_divergent_stage,
    fixture_of,
    loaded_at,
    stage_words,
)
from reprocheck.explain.suspects import cpu_difference, fit, glibc_version
from reprocheck.explain.suspects import suspects as find_suspects
from reprocheck.matrix import OutputComparison, build_matrix, tolerance_rules
from reprocheck.progress import ProgressCallback, silent
from reprocheck.run_model import EnvironmentResult, RunResult

# Effects that settle an output: no further experiment is needed for it.
SETTLING = (Effect.FOLLOWS, Effect.AGREES)
# At most this many transplants are combined, in at most this many combinations.
COMBINED_AT_MOST = 3
COMBINATIONS_AT_MOST = 2
# At most this many (transplant, knob) pairs that each moved one output are run together.
MIXED_AT_MOST = 2


@dataclass(frozen=True, kw_only=True)
class Pair:
    """One drifting pair and what is known of its outputs before any experiment."""

    base: EnvironmentResult
    cand: EnvironmentResult
    facts: tuple[OutputFacts, ...]
    fixtures: tuple[str, ...]  # the fixtures the drifting outputs come from
    suspects: tuple[Suspect, ...]
    cpus: CpuDifference | None = None  # how the pair's CPUs differ, when they do


Phase = Callable[[Pair, Sequence[Experiment]], list[Experiment]]


class Explainer:
    """Plans and runs experiments for the drifting pairs of one stored run."""

    def __init__(
        self,
        engine: ContainerEngine,
        config: RunConfig,
        run: RunResult,
        *,
        max_experiments: int = MAX_EXPERIMENTS,
        progress: ProgressCallback = silent,
    ) -> None:
        self._config = config
        self._run = run
        self._budget = max_experiments
        self._runner = ExperimentRunner(engine, config, run, progress)
        self._envs = {env.name: env for env in run.environments}
        self._command = config.pipeline.command is not None
        self._phases: tuple[Phase, ...] = (
            _likely_transplants,
            _knobs,
            self._combination,
            _other_transplants,
        )
        self._meter = EffectMeter(tolerance_rules(config))
        # transplants that found no library of the same SONAME: not run, not counted
        self._untestable: list[Experiment] = []

    def explain(self, glob: str = "*") -> Explanation:
        matrix = build_matrix(self._config, self._run)
        by_pair: dict[tuple[str, str], list[OutputComparison]] = {}
        for c in matrix.comparisons:
            if c.verdict == "drift" and fnmatch.fnmatchcase(c.output, glob):
                by_pair.setdefault((c.baseline, c.candidate), []).append(c)
        attributions: list[Attribution] = []
        experiments: list[Experiment] = []
        try:
            for (a, b), items in by_pair.items():
                pair = self._pair(self._envs[a], self._envs[b], items)
                self._untestable = []
                done = self._experiments(pair)
                attributions.extend(self._attribute(pair, done))
                experiments.extend(done)
        finally:
            self._meter.close()
        return Explanation(attributions=tuple(attributions), experiments=tuple(experiments))

    # ----------------------------------------------------------------------- facts

    def _pair(
        self, base: EnvironmentResult, cand: EnvironmentResult, items: list[OutputComparison]
    ) -> Pair:
        names = [f.fixture for f in cand.fixtures]
        fixture = {i.output: fixture_of(i.output, names) for i in items}
        fixtures = sorted({f for f in fixture.values() if f is not None})
        stages = self._stages(base, cand, fixtures)
        facts = []
        loads = {where: loaded_at(base.meta_dir, cand.meta_dir, where, stage)
                 for where, stage in stages.items()}  # fmt: skip
        cpus = cpu_difference(base.fingerprint, cand.fingerprint)
        same_image = base.image_id is not None and base.image_id == cand.image_id
        for item in items:
            where = COMMAND_PROBES if self._command else fixture[item.output]
            stage = stages.get(where or "")
            facts.append(OutputFacts(
                output=item.output, baseline=base.name, candidate=cand.name,
                fixture=fixture[item.output], family=family_of(item.output, fixture[item.output]),
                stage=stage, words=stage_words(item.output, fixture[item.output], stage),
                loads=loads.get(where or ""), cpus=cpus, same_image=same_image,
            ))  # fmt: skip
        ranked = find_suspects(base.fingerprint, cand.fingerprint, [f.words for f in facts],
                               [f.loads for f in facts])  # fmt: skip
        if self._command:  # a command's own programs would start under the image's glibc
            ranked = [_unmoved(s) if s.how is Transplant.GLIBC else s for s in ranked]
        return Pair(base=base, cand=cand, facts=tuple(facts), fixtures=tuple(fixtures),
                    suspects=tuple(ranked), cpus=cpus)  # fmt: skip

    def _stages(
        self, base: EnvironmentResult, cand: EnvironmentResult, fixtures: list[str]
    ) -> dict[str, Stage | None]:
        """The first divergent stage by probes name: per fixture, or a command's one set."""
        if self._command:
            where = "the command"
            return {COMMAND_PROBES: first_divergent_stage(base.meta_dir, cand.meta_dir,
                                                          COMMAND_PROBES, where)}  # fmt: skip
        return {f: first_divergent_stage(base.meta_dir, cand.meta_dir, f) for f in fixtures}

    # ----------------------------------------------------------------------- experiments

    def _experiments(self, pair: Pair) -> list[Experiment]:
        """Run the phases in order until every output is settled or the budget is spent;
        a transplant that finds no library of the same SONAME costs nothing."""
        done: list[Experiment] = []
        open_outputs = {f.output for f in pair.facts}
        for phase in self._phases:
            for experiment in phase(pair, tuple(done)):
                if not open_outputs or len(done) >= self._budget:
                    return done
                ran = self._runner.execute(experiment, pair.base, pair.cand, list(pair.fixtures))
                if ran.status is Status.NOT_TRANSPLANTABLE:
                    self._untestable.append(ran)
                    continue
                done.append(ran)
                open_outputs -= {o for o in open_outputs if self._effect(pair, ran, o) in SETTLING}
        return done

    def _effect(self, pair: Pair, ran: Experiment, output: str) -> Effect:
        return self._meter.measure(ran, pair.base, pair.cand, output).effect

    def _combination(self, pair: Pair, done: Sequence[Experiment]) -> list[Experiment]:
        """Per still unsettled output, the library transplants that each moved it, together;
        then those movers with one library fitting the output whose transplant alone did not
        run (LAPACK without the BLAS it was built with). The sets most outputs share first, at
        most :data:`COMBINATIONS_AT_MOST`. Then a transplant with a knob (:meth:`_mixed`), and
        two dispatch knobs together (:meth:`_knobs_together`)."""
        open_outputs = [
            f.output for f in pair.facts
            if not any(self._effect(pair, e, f.output) in SETTLING for e in done)
        ]  # fmt: skip
        libraries = [
            e for e in done
            if e.kind is ExperimentKind.TRANSPLANT and not e.combined
            and e.suspect is not None and e.suspect.how is Transplant.LIBRARIES
        ]  # fmt: skip
        facts = {f.output: f for f in pair.facts}
        ranked: dict[tuple[str, ...], list[int]] = {}  # packages -> [kind, outputs]
        chosen: dict[tuple[str, ...], list[Suspect]] = {}

        def count(kind: int, experiments: list[Experiment]) -> None:
            together = [s for e in experiments[:COMBINED_AT_MOST] for s in e.suspects]
            if len(together) >= 2:
                key = tuple(sorted(s.package for s in together))
                ranked.setdefault(key, [kind, 0])[1] += 1
                chosen.setdefault(key, together)

        for output in open_outputs:
            movers = [e for e in libraries if self._effect(pair, e, output) is Effect.CHANGED]
            if not movers:
                continue
            count(0, movers)
            f = facts[output]
            for broken in libraries:
                if not broken.status.ran and broken.suspect is not None and fit(
                        broken.suspect, [f.words], [f.loads], pair.suspects) > 0:  # fmt: skip
                    count(1, [*movers[: COMBINED_AT_MOST - 1], broken])
        best = sorted(ranked, key=lambda k: (ranked[k][0], -ranked[k][1]))
        found = [Experiment(kind=ExperimentKind.TRANSPLANT, factor=" + ".join(key),
                            environment=pair.cand.name, baseline=pair.base.name,
                            suspect=chosen[key][0], extra=tuple(chosen[key][1:]))
                 for key in best[:COMBINATIONS_AT_MOST]]  # fmt: skip
        together = self._knobs_together(pair, done, open_outputs)
        return found + self._mixed(pair, done, open_outputs) + together

    def _mixed(
        self, pair: Pair, done: Sequence[Experiment], open_outputs: list[str]
    ) -> list[Experiment]:
        """A transplant and a knob that each moved the same unsettled outputs, run together
        (the knob on both sides): glibc's libm and numpy's own SIMD can share one output."""
        transplants = [e for e in done if e.kind is ExperimentKind.TRANSPLANT
                       and e.suspect is not None and not e.combined]  # fmt: skip
        knobs = [e for e in done if e.kind is ExperimentKind.KNOB]
        scored = []
        for t in transplants:
            moved = {o for o in open_outputs if self._effect(pair, t, o) is Effect.CHANGED}
            for k in knobs if moved else ():
                both = {o for o in moved if self._meter.measure(
                    k, pair.base, pair.cand, o).one_sided is Effect.CHANGED}  # fmt: skip
                if both:
                    scored.append((len(both), t, k))
        scored.sort(key=lambda s: -s[0])  # stable: earlier (likelier) experiments first
        return [
            dataclasses.replace(t, factor=f"{t.factor} + {k.factor}", knob=k.factor, env=k.env,
                                baseline_env=k.baseline_env, outputs_dir=None,
                                status=Status.PLANNED, cached=False, seconds=0.0)
            for _n, t, k in scored[:MIXED_AT_MOST]
        ]  # fmt: skip

    def _knobs_together(
        self, pair: Pair, done: Sequence[Experiment], open_outputs: list[str]
    ) -> list[Experiment]:
        """For a pair whose CPUs differ: a dispatch knob that moved an unsettled output,
        together with another dispatch knob (both on both sides). numpy's own SIMD and
        glibc's libm can both choose code by CPU feature in one output: with numpy's AVX-512
        turned off, numpy hands ``exp`` to glibc, which picks its FMA code on its own."""
        if pair.cpus is None:
            return []
        knobs = {e.factor: e for e in done if e.kind is ExperimentKind.KNOB and e.status.ran
                 and e.factor in DISPATCH_KNOBS}  # fmt: skip
        scored: dict[tuple[str, str], int] = {}
        for output in open_outputs:
            for moved in knobs.values():
                if not self._meter.moved(moved, pair.base, pair.cand, output):
                    continue
                for other in knobs:
                    if other != moved.factor:
                        a, b = sorted((moved.factor, other), key=DISPATCH_KNOBS.index)
                        scored[a, b] = scored.get((a, b), 0) + 1
        best = sorted(scored, key=lambda key: -scored[key])[:MIXED_AT_MOST]
        return [
            Experiment(kind=ExperimentKind.KNOB, factor=f"{a} + {b}", environment=pair.cand.name,
                       baseline=pair.base.name, env={**knobs[a].env, **knobs[b].env},
                       baseline_env={**knobs[a].baseline_env, **knobs[b].baseline_env})
            for a, b in best
        ]  # fmt: skip

    # ----------------------------------------------------------------------- attribution

    def _attribute(self, pair: Pair, done: list[Experiment]) -> list[Attribution]:
        found = []
        for facts in pair.facts:
            measured: list[Measured] = [
                (ran, self._meter.measure(ran, pair.base, pair.cand, facts.output))
                for ran in [*done, *self._untestable]
            ]
            found.append(attribute(facts, measured, pair.suspects))
        return found


def _transplants(pair: Pair) -> list[Experiment]:
    return [_transplant(pair, s) for s in pair.suspects if s.transplantable]


def _transplant(pair: Pair, suspect: Suspect) -> Experiment:
    """The candidate with the baseline's ``suspect``; for glibc, the older side under the
    newer side's glibc (the baseline, when the candidate's glibc is the newer)."""
    target, moved = Sides.CANDIDATE, ""
    if suspect.how is Transplant.GLIBC:
        old, new = glibc_version(pair.base.fingerprint), glibc_version(pair.cand.fingerprint)
        forward = old is not None and new is not None and new > old
        target = Sides.BASELINE if forward else Sides.CANDIDATE
        newer = pair.cand if forward else pair.base
        moved = f"{newer.fingerprint.get('glibc')} (its loader, libc and libm)"
    return Experiment(kind=ExperimentKind.TRANSPLANT, factor=suspect.package,
                      environment=pair.cand.name, baseline=pair.base.name, suspect=suspect,
                      target=target, moved=moved)  # fmt: skip


def _unmoved(suspect: Suspect) -> Suspect:
    return dataclasses.replace(suspect, movable=None)


def _likely(suspect: Suspect | None) -> bool:
    """A suspect worth trying before the knobs: it fits the outputs' names or stages, or it
    is a pip distribution whose native code the pipeline ran (on a pip image those are the
    numeric libraries, and a whole distribution moves in one experiment)."""
    if suspect is None:
        return False
    loaded_distribution = suspect.kind is SuspectKind.DISTRIBUTION and bool(suspect.libraries)
    return suspect.score > 0 or loaded_distribution


def _likely_transplants(pair: Pair, done: Sequence[Experiment]) -> list[Experiment]:
    return [t for t in _transplants(pair) if _likely(t.suspect)]


def _other_transplants(pair: Pair, done: Sequence[Experiment]) -> list[Experiment]:
    return [t for t in _transplants(pair) if t.suspect is not None and not _likely(t.suspect)]


def _knobs(pair: Pair, done: Sequence[Experiment]) -> list[Experiment]:
    words = [f.words for f in pair.facts]
    found = pair_knobs(pair.base.fingerprint, pair.cand.fingerprint, words,
                       cpus_differ=pair.cpus is not None)  # fmt: skip
    cand, base = pair.cand.name, pair.base.name
    kind = ExperimentKind.KNOB
    return [
        Experiment(
            kind=kind, factor=name, environment=cand, baseline=base, env=mine, baseline_env=theirs
        )
        for name, theirs, mine in found
    ]
