"""RunResult -> Matrix: every output compared across environment pairs, plus agreement
classes and the within-environment noise floor. Numerics live in the compare package.

Each environment's outputs come from its output store (:mod:`reprocheck.output_store`).
Where two environments' digests say an output is bit-identical, and its comparison needs
nothing but its dtype and shape (elementwise tolerance, no decision rule), the comparison
is made in bulk, as columns; only the other outputs are loaded and compared one by one.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from reprocheck.compare import (
    ArrayComparison,
    DecisionRule,
    DecisionRules,
    Tolerance,
    ToleranceRules,
    compare_arrays,
)
from reprocheck.compare.batch import compare_batch
from reprocheck.compare.dtypes import value_kind
from reprocheck.comparisons import FAILING, SCHEMA, Comparisons, OutputComparison, table_of
from reprocheck.config import DecisionConfig, RunConfig
from reprocheck.errors import OutputError
from reprocheck.output_store import OutputStore, empty_store, open_store
from reprocheck.run_model import EnvironmentResult, RunResult

__all__ = ["FAILING", "Matrix", "Noise", "OutputComparison", "build_matrix"]


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
    comparisons: Comparisons  # any sequence of OutputComparison is taken and converted
    agreement: Mapping[str, list[list[str]]]
    noise: tuple[Noise, ...] = ()
    references: tuple[EnvironmentResult, ...] = ()  # stored environments compared with the run
    # Scalar outputs (0-d, or declared in [metrics]): their value per environment and how
    # to show them.
    metrics: tuple[MetricValues, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.comparisons, Comparisons):  # a plain sequence of comparisons
            object.__setattr__(self, "comparisons", Comparisons.of(self.comparisons))

    def counts(self) -> dict[str, int]:
        return self.comparisons.counts()

    @property
    def has_drift(self) -> bool:
        return self.comparisons.any_of(FAILING)

    @property
    def has_errors(self) -> bool:
        """An output could not be read or compared somewhere (exit 2)."""
        return self.comparisons.any_of({"error"})


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
        self.store: OutputStore = (
            empty_store(spec) if env.failed else open_store(env.outputs_dir, spec)
        )
        self.failed_fixtures = [f for f in env.fixtures if f.status != "ok"]

    def failure(self, output: str) -> str | None:
        if self.env.failed:
            return f"{self.env.name}: {self.env.status}: {self.env.error}"
        for fixture in self.failed_fixtures:
            if output.startswith(fixture.fixture + "/"):
                return f"{self.env.name}: fixture {fixture.fixture} failed: {fixture.reason}"
        return None

    def load(self, output: str) -> np.ndarray | None:
        return self.store.load(output) if output in self.store else None


@dataclass(frozen=True, kw_only=True)
class _Aligned:
    """One side's store rows lined up with the run's sorted output names."""

    row: npt.NDArray[np.int64]  # -1 where the side has no such output
    digest: npt.NDArray[np.object_]  # None where absent or unreadable
    known: npt.NDArray[np.bool_]  # a digest is there

    @property
    def present(self) -> npt.NDArray[np.bool_]:
        return self.row >= 0


def _align(store: OutputStore, outputs: list[str]) -> _Aligned:
    if store.names == outputs:
        row = np.arange(len(outputs), dtype=np.int64)
        digest = np.array([*store.digests, None], dtype=object)[:-1]
    else:
        found = [store.row.get(name, -1) for name in outputs]
        row = np.array(found, dtype=np.int64)
        digests = np.array([*store.digests, None], dtype=object)
        digest = digests[row]  # -1 picks the None appended last
    known = np.fromiter((d is not None for d in digest), dtype=bool, count=len(digest))
    return _Aligned(row=row, digest=digest, known=known)


def _union(names: Iterable[list[str]]) -> list[str]:
    lists = list(names)
    if lists and all(n == lists[0] for n in lists[1:]):
        return lists[0]  # the common case: every environment made the same outputs
    return sorted(set().union(*lists))


@dataclass(frozen=True, kw_only=True)
class _Rules:
    """Each output's tolerance and decision rule, and whether a bit-identical comparison of
    it can be written from its dtype and shape alone."""

    tolerance: list[Tolerance]
    decision: list[DecisionRule | None]
    bulk: npt.NDArray[np.bool_]
    new_passes: bool = True  # an output only the candidate made is "new", else "missing"


def metric_rules(config: RunConfig) -> ToleranceRules:
    """``[metrics]`` entries as tolerances; where one matches an output it replaces the
    ``[tolerance]`` rules (the default's pattern is empty: "no metric matched")."""
    rules = tuple(Tolerance(pattern=glob, atol=m.atol, rtol=m.rtol)
                  for glob, m in config.metrics.items())  # fmt: skip
    return ToleranceRules(default=Tolerance(pattern=""), rules=rules)


def _rules(config: RunConfig, outputs: list[str]) -> _Rules:
    tolerances, decisions = tolerance_rules(config), decision_rules(config)
    tolerance = ([tolerances.default] * len(outputs) if not tolerances.rules
                 else [tolerances.for_output(o) for o in outputs])  # fmt: skip
    metrics = metric_rules(config)
    if metrics.rules:
        found = (metrics.for_output(o) for o in outputs)
        tolerance = [m if m.pattern else t for m, t in zip(found, tolerance, strict=True)]
    decision: list[DecisionRule | None] = [None] * len(outputs)
    if decisions.rules:
        decision = [decisions.for_output(o) for o in outputs]
    bulk = np.fromiter(((t.match == "elements" and d is None) for t, d in zip(tolerance, decision,
                       strict=True)), dtype=bool, count=len(outputs))  # fmt: skip
    return _Rules(tolerance=tolerance, decision=decision, bulk=bulk,
                  new_passes=config.compare.new_outputs == "pass")  # fmt: skip


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
    outputs = _union(side.store.names for side in sides.values())
    aligned = {name: _align(side.store, outputs) for name, side in sides.items()}
    rules = _rules(config, outputs)
    noise = tuple(_noise(config, run, own))
    noisy = {(n.output, n.environment): n for n in noise}
    tables: list[pa.Table] = []
    for index, (base, cand) in enumerate(pairs):
        pair = _Pair(index=index, base=sides[base], cand=sides[cand], a=aligned[base],
                     b=aligned[cand])  # fmt: skip
        tables.extend(_compare_pair_outputs(pair, outputs, rules, noisy))
    ordered = _in_output_order(tables) if outputs else table_of(_failed_pairs(sides, pairs))
    agreement = _agreement(outputs, {name: aligned[name] for name in own})
    metrics = _metric_values(config, outputs, sides)
    for side in sides.values():
        side.store.close()
    return Matrix(pairs=pairs, comparisons=Comparisons(ordered), agreement=agreement,
                  noise=noise, references=references, metrics=metrics)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class _Pair:
    index: int
    base: _Side
    cand: _Side
    a: _Aligned
    b: _Aligned


def _compare_pair_outputs(
    pair: _Pair, outputs: list[str], rules: _Rules, noisy: Mapping[tuple[str, str], Noise]
) -> Iterable[pa.Table]:
    """This pair's comparisons as tables with the output's position (``_at``) for sorting:
    bit-identical outputs in bulk, the others one by one."""
    same = pair.a.present & pair.b.present & (pair.a.digest == pair.b.digest)
    same &= pair.a.known & rules.bulk
    same &= _comparable_dtypes(pair.base.store, pair.a.row, same)
    bulk = np.flatnonzero(same)
    if bulk.size:
        yield _identical_rows(pair, bulk, rules).append_column("_at", pa.array(bulk))
    rest = np.flatnonzero((pair.a.present | pair.b.present) & ~same).tolist()
    found: dict[int, OutputComparison] = {}
    batches: dict[tuple[str, tuple[int, ...], Tolerance], list[int]] = {}
    for i in rest:
        layout = _batchable(pair, outputs[i], rules, i)
        if layout is None:
            found[i] = _compare_one(outputs[i], pair.base, pair.cand, rules.tolerance[i],
                                    rules.decision[i], new_passes=rules.new_passes)  # fmt: skip
        else:
            batches.setdefault((*layout, rules.tolerance[i]), []).append(i)
    for (dtype, shape, tolerance), members in batches.items():
        step = max(1, BATCH_BYTES // max(1, math.prod(shape) * np.dtype(dtype).itemsize))
        for start in range(0, len(members), step):
            chunk = members[start : start + step]
            found |= _compare_batch(pair, [outputs[i] for i in chunk], chunk, tolerance)
    if found:
        at = sorted(found)
        items = [_mark_noise(found[i], noisy) for i in at]
        yield table_of(items).append_column("_at", pa.array(at, pa.int64()))


def _batchable(
    pair: _Pair, output: str, rules: _Rules, i: int
) -> tuple[str, tuple[int, ...]] | None:
    """(dtype, shape) when this output can be compared with others of its kind in one batch:
    readable on both sides, one dtype and shape, elementwise tolerance, no decision."""
    if not rules.bulk[i]:
        return None
    layout = pair.base.store.layout(output)
    if layout is None or layout != pair.cand.store.layout(output) or not _numeric(layout[0]):
        return None
    if not layout[1] and not np.dtype(layout[0]).isnative:
        return None  # compare_batch reports a 0-d row's dtype as numpy scalars have it: native
    return layout if math.prod(layout[1]) <= BATCH_ELEMENTS else None


def _compare_batch(
    pair: _Pair, names: list[str], at: list[int], tolerance: Tolerance
) -> dict[int, OutputComparison]:
    """Outputs of one dtype, shape and tolerance compared as the rows of two arrays; if
    they cannot be read together, one by one (each then says what is wrong)."""
    try:
        a = pair.base.store.load_stacked(names)
        b = pair.cand.store.load_stacked(names)
        results = compare_batch(a, b, tolerance)
    except OutputError:
        return {i: _compare_one(name, pair.base, pair.cand, tolerance, None)
                for i, name in zip(at, names, strict=True)}  # fmt: skip
    return {
        i: OutputComparison(output=name, baseline=pair.base.env.name,
                            candidate=pair.cand.env.name, verdict=m.verdict, metrics=m)
        for i, name, m in zip(at, names, results, strict=True)
    }  # fmt: skip


def _comparable_dtypes(
    store: OutputStore, rows: npt.NDArray[np.int64], where: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """Whether each output's dtype is one compare_arrays takes (others are errors there)."""
    dtypes = np.array([*store.column("dtype"), None], dtype=object)[rows]
    ok = np.zeros(len(rows), dtype=bool)
    for dtype in set(dtypes[where].tolist()):
        ok[dtypes == dtype] = _numeric(dtype)
    return ok


@functools.lru_cache(maxsize=256)
def _numeric(dtype: str | None) -> bool:
    if dtype is None:
        return False
    try:
        value_kind(np.dtype(dtype))
    except OutputError:
        return False
    return True


_NULL_INT = pa.scalar(None, pa.int64())
# Outputs up to this many elements are compared in batches of their dtype and shape (many
# small per-sample outputs); larger ones one by one, where the per-call cost does not count.
BATCH_ELEMENTS = 4096
BATCH_BYTES = 32 * 1024**2  # of each side's arrays held at once
_IMAGE_DTYPES = pa.array(["|u1", "<u2", ">u2"], type=pa.string())


def _identical_rows(pair: _Pair, at: npt.NDArray[np.intp], rules: _Rules) -> pa.Table:
    """What compare_arrays returns for bit-identical arrays, as columns: every element
    equal, metrics 0 where any element is comparable (not NaN), PSNR inf for images."""
    source = pair.base.store.table.take(pa.array(pair.a.row[at]))
    n = len(at)
    comparable = pc.greater(pc.subtract(source["size"], source["nans"]), 0)
    zero = pc.if_else(comparable, 0.0, pa.scalar(None, pa.float64()))
    ndim = pc.list_value_length(source["shape"])
    channels = pc.list_element(
        pc.if_else(pc.equal(ndim, 3), source["shape"], pa.scalar([0, 0, 0], pa.list_(pa.int64()))),
        2,
    )
    image = pc.and_(pc.is_in(source["dtype"], _IMAGE_DTYPES),
                    pc.or_(pc.equal(ndim, 2), pc.and_(pc.greater_equal(channels, 1),
                                                      pc.less_equal(channels, 4))))  # fmt: skip
    rule = [rules.tolerance[i].pattern for i in at.tolist()]
    columns = {
        "output": source["name"],
        "baseline": pa.array([pair.base.env.name] * n, pa.string()),
        "candidate": pa.array([pair.cand.env.name] * n, pa.string()),
        "verdict": pa.array(["identical"] * n, pa.string()),
        "note": pa.nulls(n, pa.string()),
        "rule": pa.array(rule, pa.string()),
        "dtype_baseline": _dtype_names(source["dtype"]),
        "dtype_candidate": _dtype_names(source["dtype"]),
        "shape_baseline": source["shape"],
        "shape_candidate": source["shape"],
        "total": source["size"],
        "mismatched": pa.array(np.zeros(n, dtype=np.int64)),
        "bit_identical": pa.array(np.ones(n, dtype=bool)),
        "max_abs": zero,
        "mean_abs": zero,
        "max_rel": zero,
        "max_ulp": pc.if_else(comparable, pa.scalar(0, pa.uint64()), pa.scalar(None, pa.uint64())),
        "worst_indices": pa.array([[]] * n, pa.list_(pa.list_(pa.int64()))),
        "nan_mismatch": pa.array(np.zeros(n, dtype=np.int64)),
        "inf_mismatch": pa.array(np.zeros(n, dtype=np.int64)),
        "psnr": pc.if_else(image, float("inf"), pa.scalar(None, pa.float64())),
        "differing_pixels": pc.if_else(image, pa.scalar(0, pa.int64()), _NULL_INT),
        "rows": pa.nulls(n, SCHEMA.field("rows").type),
        "decision": pa.nulls(n, SCHEMA.field("decision").type),
    }
    return pa.table(columns, schema=SCHEMA)


def _dtype_names(column: pa.ChunkedArray) -> pa.Array:
    """numpy's names of the stored ``dtype.str`` codes ('<f4' -> 'float32'), as
    compare_arrays reports them."""
    codes = pc.unique(column)
    names = pa.array([str(np.dtype(code)) for code in codes.to_pylist()], pa.string())
    return pc.take(names, pc.index_in(column, value_set=codes))


def _in_output_order(tables: Sequence[pa.Table]) -> pa.Table:
    """The pairs' tables as one, output by output (pairs in order within an output)."""
    if not tables:
        return SCHEMA.empty_table()
    joined = pa.concat_tables(tables)
    order = pc.sort_indices(joined, sort_keys=[("_at", "ascending")])  # stable: pair order kept
    return joined.take(order).drop_columns(["_at"])


METRICS_LISTED = 1000  # scalar outputs whose values are reported per environment


@dataclass(frozen=True, kw_only=True)
class MetricValues:
    output: str
    values: Mapping[str, float | None]  # by environment, in matrix order
    unit: str = ""
    scale: float = 1.0
    # The [metrics] tolerance declared for it (None: not declared; the output then compares
    # by the [tolerance] rules).
    atol: float | None = None
    rtol: float | None = None


def _metric_values(
    config: RunConfig, outputs: list[str], sides: Mapping[str, _Side]
) -> tuple[MetricValues, ...]:
    """The value of each scalar output in every environment: outputs declared in
    ``[metrics]`` first, then 0-d outputs, at most :data:`METRICS_LISTED`."""
    declared = metric_rules(config)
    chosen: list[str] = []
    if declared.rules:
        chosen = [o for o in outputs if declared.for_output(o).pattern][:METRICS_LISTED]
    for side in sides.values():
        if len(chosen) >= METRICS_LISTED:
            break
        table = side.store.table
        if not table.num_rows:
            continue
        scalar = pc.and_(pc.equal(pc.list_value_length(table["shape"]), 0),
                         pc.is_null(table["error"]))  # fmt: skip
        for name in table.filter(scalar)["name"].to_pylist():
            if name not in chosen and len(chosen) < METRICS_LISTED:
                chosen.append(name)
    found = []
    for output in sorted(chosen):
        rule = declared.for_output(output).pattern
        spec = config.metrics.get(rule) if rule else None
        found.append(MetricValues(
            output=output, values={n: _scalar(side, output) for n, side in sides.items()},
            unit=spec.unit if spec else "", scale=spec.scale if spec else 1.0,
            atol=spec.atol if spec else None, rtol=spec.rtol if spec else None,
        ))  # fmt: skip
    return tuple(found)


def _scalar(side: _Side, output: str) -> float | None:
    try:
        array = side.load(output)
    except OutputError:
        return None
    if array is None or array.size != 1 or array.dtype.kind not in "biuf":
        return None
    return float(array.reshape(-1)[0])


def _agreement(outputs: list[str], sides: Mapping[str, _Aligned]) -> dict[str, list[list[str]]]:
    """Per output, the environments grouped by bit-identical arrays (by digest); an absent or
    unreadable array is a class of its own. One shared list for outputs on which all agree."""
    names = list(sides)
    if not names:
        return {}
    first = sides[names[0]].digest
    agree = sides[names[0]].known.copy()
    for name in names[1:]:
        agree &= sides[name].digest == first
    everyone = [names]
    found: dict[str, list[list[str]]] = {}
    for i, output in enumerate(outputs):
        if agree[i]:
            found[output] = everyone
            continue
        classes: dict[object, list[str]] = {}
        groups: list[list[str]] = []
        for name in names:
            key = sides[name].digest[i]
            if key is None:
                groups.append([name])
            elif key in classes:
                classes[key].append(name)
            else:
                classes[key] = [name]
                groups.append(classes[key])
        found[output] = groups
    return found


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


def _compare_one(
    output: str, base: _Side, cand: _Side, tolerance: Tolerance, decision: DecisionRule | None,
    *, new_passes: bool = False,
) -> OutputComparison:  # fmt: skip
    pair = functools.partial(
        OutputComparison, output=output, baseline=base.env.name, candidate=cand.env.name
    )
    arrays: list[np.ndarray | None] = []
    unreadable = []
    for side in (base, cand):
        try:
            arrays.append(side.load(output))
        except OutputError as exc:
            arrays.append(None)
            unreadable.append(f"{side.env.name}: {exc}")
    if unreadable:
        return pair(verdict="error", note="; ".join(unreadable))
    a, b = arrays
    if a is None or b is None:
        failure = base.failure(output) if a is None else cand.failure(output)
        if failure:
            return pair(verdict="error", note=failure)
        absent = base.env.name if a is None else cand.env.name
        if a is None and new_passes:
            return pair(verdict="new", note=f"not produced in {absent}; new in {cand.env.name}")
        return pair(verdict="missing", note=f"not produced in {absent}")
    try:
        metrics = compare_arrays(a, b, tolerance, decision)
    except Exception as exc:
        return pair(verdict="error", note=f"cannot compare: {type(exc).__name__}: {exc}")
    return pair(verdict=metrics.verdict, metrics=metrics)


def _failed_pairs(
    sides: Mapping[str, _Side], pairs: Iterable[tuple[str, str]]
) -> Iterable[OutputComparison]:
    """Pairs where an environment failed as a whole and no output was seen at all."""
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
        others = [_Side(e, config) for e in extras if not e.failed]
        yield from _noise_in(first, others)
        for other in others:
            other.store.close()


def _noise_in(first: _Side, others: list[_Side]) -> Iterable[Noise]:
    """Outputs whose arrays differ between repeats (by digest first: most do not)."""
    for output, digest in zip(first.store.names, first.store.digests, strict=True):
        if digest is not None and all(
            o.store.digests[o.store.row[output]] == digest for o in others if output in o.store
        ):
            continue
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
