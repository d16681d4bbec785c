"""RunResult -> Matrix: every output compared across environment pairs, plus agreement
classes and the within-environment noise floor. Numerics live in compare.py."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from reprocheck.compare import (
    ArrayComparison,
    DecisionRule,
    DecisionRules,
    Tolerance,
    ToleranceRules,
    Verdict,
    agreement_classes,
    compare_arrays,
)
from reprocheck.config import DecisionConfig, RunConfig
from reprocheck.errors import OutputError
from reprocheck.outputs import OutputReader, OutputRef, index_outputs
from reprocheck.runner import EnvironmentResult, RunResult

# Verdicts that make `reprocheck run` exit 1.
FAILING: frozenset[str] = frozenset({"drift", "incomparable", "missing"})


@dataclass(frozen=True, kw_only=True)
class OutputComparison:
    output: str
    baseline: str
    candidate: str
    verdict: Verdict
    metrics: ArrayComparison | None = None
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class Noise:
    """An output that varies between repeated runs of one environment."""

    output: str
    environment: str
    repeats: int
    max_abs: float | None
    max_ulp: int | None


@dataclass(frozen=True, kw_only=True)
class Matrix:
    pairs: tuple[tuple[str, str], ...]
    comparisons: tuple[OutputComparison, ...]
    agreement: Mapping[str, list[list[str]]]
    noise: tuple[Noise, ...] = ()
    references: tuple[EnvironmentResult, ...] = ()  # stored environments compared with the run

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.comparisons:
            counts[item.verdict] = counts.get(item.verdict, 0) + 1
        return counts

    @property
    def has_drift(self) -> bool:
        return any(c.verdict in FAILING for c in self.comparisons)

    @property
    def has_errors(self) -> bool:
        """An output could not be read or compared somewhere (exit 2)."""
        return any(c.verdict == "error" for c in self.comparisons)


def tolerance_rules(config: RunConfig) -> ToleranceRules:
    rules = {
        pattern: Tolerance(pattern=pattern, **rule.model_dump())
        for pattern, rule in config.tolerance.items()
    }
    default = rules.pop("default", Tolerance())
    return ToleranceRules(default=default, rules=tuple(rules.values()))


def decision_rules(config: RunConfig) -> DecisionRules:
    rules = []
    for pattern, entry in config.decisions.items():
        spec = entry if isinstance(entry, DecisionConfig) else DecisionConfig(kind=entry)
        rules.append(DecisionRule(pattern=pattern, kind=spec.kind, iou=spec.iou))
    return DecisionRules(rules=tuple(rules))


def environment_pairs(names: list[str], mode: str) -> tuple[tuple[str, str], ...]:
    if mode == "all-pairs":
        return tuple(itertools.combinations(names, 2))
    return tuple((names[0], other) for other in names[1:])


class _Side:
    """One environment's outputs, with the fixture failures that explain absences."""

    def __init__(self, env: EnvironmentResult, config: RunConfig) -> None:
        self.env = env
        spec = config.outputs
        self.refs: dict[str, OutputRef] = (
            {}
            if env.failed
            else index_outputs(
                env.outputs_dir,
                spec.include,
                spec.exclude,
                spec.max_file_bytes,
                spec.max_array_bytes,
            )
        )
        self.failed_fixtures = [f for f in env.fixtures if f.status != "ok"]
        self.reader = OutputReader(spec.max_array_bytes)

    def failure(self, output: str) -> str | None:
        if self.env.failed:
            return f"{self.env.name}: {self.env.status}: {self.env.error}"
        for fixture in self.failed_fixtures:
            if output.startswith(fixture.fixture + "/"):
                return f"{self.env.name}: fixture {fixture.fixture} failed: {fixture.reason}"
        return None

    def load(self, output: str) -> np.ndarray | None:
        ref = self.refs.get(output)
        return None if ref is None else self.reader.load(ref)


@dataclass(frozen=True, kw_only=True)
class _Loaded:
    """One output's array in every environment, or why it could not be read there."""

    arrays: Mapping[str, np.ndarray | None]
    errors: Mapping[str, str]


def _load_everywhere(output: str, sides: Mapping[str, _Side]) -> _Loaded:
    arrays: dict[str, np.ndarray | None] = {}
    errors: dict[str, str] = {}
    for name, side in sides.items():
        try:
            arrays[name] = side.load(output)
        except OutputError as exc:
            arrays[name] = None
            errors[name] = f"{name}: {exc}"
    return _Loaded(arrays=arrays, errors=errors)


def build_matrix(
    config: RunConfig,
    run: RunResult,
    *,
    references: tuple[EnvironmentResult, ...] = (),
    pairs: tuple[tuple[str, str], ...] | None = None,
) -> Matrix:
    """Compare the run's environments pairwise (``[compare] mode``), plus explicit ``pairs``
    that may involve ``references`` (stored baselines or another run's environments)."""
    own = {env.name: _Side(env, config) for env in run.environments}
    sides = own | {env.name: _Side(env, config) for env in references}
    pairs = pairs if pairs is not None else environment_pairs(list(own), config.compare.mode)
    tolerances, decisions = tolerance_rules(config), decision_rules(config)
    outputs = sorted(set().union(*(side.refs for side in sides.values())))
    noise = tuple(_noise(config, run, own))
    noisy = {(n.output, n.environment): n for n in noise}
    comparisons: list[OutputComparison] = []
    agreement: dict[str, list[list[str]]] = {}
    for output in outputs:
        loaded = _load_everywhere(output, sides)
        agreement[output] = agreement_classes({name: loaded.arrays[name] for name in own})
        tolerance, decision = tolerances.for_output(output), decisions.for_output(output)
        for base, cand in pairs:
            if output not in sides[base].refs and output not in sides[cand].refs:
                continue  # made by neither side: not part of this pair
            item = _compare_pair(output, sides[base], sides[cand], loaded, tolerance, decision)
            comparisons.append(_mark_noise(item, noisy))
    comparisons.extend(_failed_pairs(sides, pairs, outputs))
    for side in sides.values():
        side.reader.close()
    return Matrix(
        pairs=pairs,
        comparisons=tuple(comparisons),
        agreement=agreement,
        noise=noise,
        references=references,
    )


def _mark_noise(item: OutputComparison, noisy: Mapping[tuple[str, str], Noise]) -> OutputComparison:
    """Drift where an environment disagrees with itself is noise, shown apart from OS drift."""
    if item.verdict != "drift":
        return item
    for env in (item.baseline, item.candidate):
        noise = noisy.get((item.output, env))
        if noise is not None:
            note = f"varies within {env} across {noise.repeats} runs (max_abs {noise.max_abs})"
            return dataclasses.replace(item, verdict="nondeterministic", note=note)
    return item


def _compare_pair(
    output: str,
    base: _Side,
    cand: _Side,
    loaded: _Loaded,
    tolerance: Tolerance,
    decision: DecisionRule | None,
) -> OutputComparison:
    a, b = loaded.arrays[base.env.name], loaded.arrays[cand.env.name]
    pair = functools.partial(
        OutputComparison, output=output, baseline=base.env.name, candidate=cand.env.name
    )
    unreadable = [loaded.errors[n] for n in (base.env.name, cand.env.name) if n in loaded.errors]
    if unreadable:
        return pair(verdict="error", note="; ".join(unreadable))
    if a is None or b is None:
        failure = base.failure(output) if a is None else cand.failure(output)
        if failure:
            return pair(verdict="error", note=failure)
        absent = base.env.name if a is None else cand.env.name
        return pair(verdict="missing", note=f"not produced in {absent}")
    try:
        metrics = compare_arrays(a, b, tolerance, decision)
    except Exception as exc:
        return pair(verdict="error", note=f"cannot compare: {type(exc).__name__}: {exc}")
    return pair(verdict=metrics.verdict, metrics=metrics)


def _failed_pairs(
    sides: Mapping[str, _Side], pairs: Iterable[tuple[str, str]], outputs: list[str]
) -> Iterable[OutputComparison]:
    """Pairs where an environment failed as a whole and no output was seen at all."""
    if outputs:
        return
    for base, cand in pairs:
        failure = sides[base].failure("") or sides[cand].failure("")
        if failure:
            yield OutputComparison(output="*", baseline=base, candidate=cand, verdict="error",
                                   note=failure)  # fmt: skip


def _noise(config: RunConfig, run: RunResult, sides: Mapping[str, _Side]) -> Iterable[Noise]:
    by_env: dict[str, list[EnvironmentResult]] = {}
    for extra in run.repeats:
        by_env.setdefault(extra.name, []).append(extra)
    for name, extras in by_env.items():
        first = sides.get(name)
        if first is None or first.env.failed:
            continue
        yield from _noise_in(config, first, [_Side(e, config) for e in extras if not e.failed])


def _noise_in(config: RunConfig, first: _Side, others: list[_Side]) -> Iterable[Noise]:
    for output in first.refs:
        try:
            worst = _worst_repeat(output, first, others)
        except Exception:
            continue
        if worst is not None:
            yield Noise(output=output, environment=first.env.name, repeats=len(others) + 1,
                        max_abs=worst.max_abs, max_ulp=worst.max_ulp)  # fmt: skip


def _worst_repeat(output: str, first: _Side, others: list[_Side]) -> ArrayComparison | None:
    a = first.load(output)
    assert a is not None
    worst: ArrayComparison | None = None
    for other in others:
        b = other.load(output)
        if b is None:
            continue
        result = compare_arrays(a, b, Tolerance())
        if not result.bit_identical and (worst is None or _worse(result, worst)):
            worst = result
    return worst


def _worse(new: ArrayComparison, old: ArrayComparison) -> bool:
    return (new.max_abs or 0.0) > (old.max_abs or 0.0)
