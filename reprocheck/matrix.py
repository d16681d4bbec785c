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

from reprocheck.agreement import Agreement
from reprocheck.agreement import agreement as agreement_of
from reprocheck.compare import (
    ArrayComparison,
    DecisionRule,
    DecisionRules,
    Tolerance,
    ToleranceRules,
    compare_arrays,
)
from reprocheck.compare.batch import batch_columns
from reprocheck.compare.dtypes import value_kind
from reprocheck.comparisons import SCHEMA, Comparisons, OutputComparison, table_of
from reprocheck.config import DecisionConfig, RunConfig
from reprocheck.errors import OutputError
from reprocheck.output_store import OutputStore, empty_store, open_store
from reprocheck.run_model import EnvironmentResult, RunResult
from reprocheck.safe_files import utf8_text
from reprocheck.vocabulary import FAILING

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
    agreement: Agreement  # any mapping of output -> classes is taken and converted
    noise: tuple[Noise, ...] = ()
    references: tuple[EnvironmentResult, ...] = ()  # stored environments compared with the run
    # Scalar outputs (0-d, or declared in [metrics]): their value per environment and how
    # to show them.
    metrics: tuple[MetricValues, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.comparisons, Comparisons):  # a plain sequence of comparisons
            object.__setattr__(self, "comparisons", Comparisons.of(self.comparisons))
        object.__setattr__(self, "agreement", Agreement.of(self.agreement))

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

    def load(self, output: str, row: int | None = None) -> np.ndarray | None:
        """The output's array, None when absent; ``row`` (-1: absent) spares the lookup."""
        if row is None:
            return self.store.load(output) if output in self.store else None
        return None if row < 0 else self.store.load_at(row)


@dataclass(frozen=True, kw_only=True)
class _Aligned:
    """One side's store rows lined up with the run's sorted output names."""

    row: npt.NDArray[np.int64]  # -1 where the side has no such output
    digest: npt.NDArray[np.uint64]  # (n, 2) words; zeros where absent or unreadable
    known: npt.NDArray[np.bool_]  # a digest is there

    @property
    def present(self) -> npt.NDArray[np.bool_]:
        return self.row >= 0

    def same_as(self, other: _Aligned) -> npt.NDArray[np.bool_]:
        """Both have the output, digested, with equal digests."""
        equal: npt.NDArray[np.bool_] = (self.digest == other.digest).all(axis=1)
        return equal & self.known & other.known


def _align(store: OutputStore, outputs: list[str], same: bool) -> _Aligned:
    """``same``: the store's rows are ``outputs`` in order (no lookup needed)."""
    if same:
        return _Aligned(row=np.arange(len(outputs), dtype=np.int64), digest=store.digest_words,
                        known=store.known)  # fmt: skip
    row = store.rows_of(outputs)
    words = np.vstack([store.digest_words, np.zeros((1, 2), dtype=np.uint64)])
    known = np.append(store.known, False)
    return _Aligned(row=row, digest=words[row], known=known[row])  # -1 picks the last


def _outputs(stores: Sequence[OutputStore]) -> tuple[list[str], list[bool]]:
    """Every output name, sorted, and per store whether its rows are exactly those (the
    common case: every environment made the same outputs; compared as Arrow columns)."""
    first = stores[0].table["name"] if stores else None
    same = [first is not None and s.table["name"].equals(first) for s in stores]
    if all(same) and stores:
        return stores[0].names, same
    names = sorted(set().union(*(s.table["name"].to_pylist() for s in stores)))
    return names, [s.table["name"].to_pylist() == names for s in stores]


@dataclass(frozen=True, kw_only=True)
class _Rules:
    """Each output's tolerance and decision rule, and whether a bit-identical comparison of
    it can be written from its dtype and shape alone."""

    tolerance: list[Tolerance]
    decision: list[DecisionRule | None]
    bulk: npt.NDArray[np.bool_]
    rule_index: npt.NDArray[np.int32]  # each output's tolerance as an index into ``distinct``
    distinct: list[Tolerance]
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
    index, distinct = _distinct(tolerance)
    return _Rules(tolerance=tolerance, decision=decision, bulk=bulk, rule_index=index,
                  distinct=distinct, new_passes=config.compare.new_outputs == "pass")  # fmt: skip


def _distinct(tolerance: list[Tolerance]) -> tuple[npt.NDArray[np.int32], list[Tolerance]]:
    """Each output's rule as an index into the distinct rules (by identity: the rules come
    from one config, each object once)."""
    if all(t is tolerance[0] for t in tolerance):  # one rule for all: the common case
        return np.zeros(len(tolerance), dtype=np.int32), tolerance[:1]
    by_id: dict[int, int] = {}
    distinct: list[Tolerance] = []
    found = []
    for t in tolerance:
        k = by_id.get(id(t))
        if k is None:
            k = by_id[id(t)] = len(distinct)
            distinct.append(t)
        found.append(k)
    return np.array(found, dtype=np.int32), distinct


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
    outputs, same = _outputs([side.store for side in sides.values()])
    aligned = {name: _align(side.store, outputs, ordered)
               for (name, side), ordered in zip(sides.items(), same, strict=True)}  # fmt: skip
    rules = _rules(config, outputs)
    noise = tuple(_noise(config, run, own))
    noisy = {(n.output, n.environment): n for n in noise}
    tables: list[pa.Table] = []
    for index, (base, cand) in enumerate(pairs):
        pair = _Pair(index=index, base=sides[base], cand=sides[cand], a=aligned[base],
                     b=aligned[cand])  # fmt: skip
        tables.extend(_compare_pair_outputs(pair, outputs, rules, noisy))
    ordered = _in_output_order(tables) if outputs else table_of(_failed_pairs(sides, pairs))
    agreement = agreement_of(outputs, list(own), [aligned[name].digest for name in own],
                             [aligned[name].known for name in own])  # fmt: skip
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
    bit-identical outputs in bulk, small ones of one layout in batches, the rest one by one."""
    base_ids, layouts = pair.base.store.layout_ids()
    numeric = np.array([_numeric(dtype) for dtype, _shape in layouts] + [False], dtype=bool)
    base_layout = np.append(base_ids, -1)[pair.a.row]  # row -1 (absent) picks the -1
    same = pair.a.same_as(pair.b) & rules.bulk & numeric[base_layout]
    bulk = np.flatnonzero(same)
    if bulk.size:
        yield _identical_rows(pair, bulk, rules).append_column("_at", pa.array(bulk))
    rest = np.flatnonzero((pair.a.present | pair.b.present) & ~same)
    found: dict[int, OutputComparison] = {}
    batched, batches = _batches(pair, rest, rules, layouts, base_layout)
    for i in rest[~batched].tolist():
        found[i] = _compare_one(outputs[i], pair, i, rules.tolerance[i], rules.decision[i],
                                new_passes=rules.new_passes)  # fmt: skip
    for (dtype, shape), tolerance, members in batches:
        step = max(1, BATCH_BYTES // max(1, math.prod(shape) * np.dtype(dtype).itemsize))
        for start in range(0, len(members), step):
            chunk = members[start : start + step]
            batch = _compare_batch(pair, outputs, chunk, tolerance)
            if isinstance(batch, dict):
                found |= batch
            else:
                yield _mark_noise_in(batch, noisy).append_column("_at", pa.array(chunk, pa.int64()))
    if found:
        at = sorted(found)
        items = [_mark_noise(found[i], noisy) for i in at]
        yield table_of(items).append_column("_at", pa.array(at, pa.int64()))


def _batches(
    pair: _Pair,
    rest: npt.NDArray[np.intp],
    rules: _Rules,
    layouts: list[tuple[str, tuple[int, ...]]],
    base_layout: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.bool_], list[tuple[tuple[str, tuple[int, ...]], Tolerance, list[int]]]]:
    """Which of ``rest`` are compared in batches of one dtype, shape and tolerance (readable
    on both sides with one numeric layout, at most :data:`BATCH_ELEMENTS` elements,
    elementwise tolerance, no decision), and the batches."""
    cand_ids, cand_layouts = pair.cand.store.layout_ids()
    # The candidate's layouts as indices into the baseline's list (-1: none there).
    index = {layout: k for k, layout in enumerate(layouts)}
    mapped = np.array([index.get(layout, -1) for layout in cand_layouts] + [-1], dtype=np.int64)
    a_layout = base_layout[rest]
    b_layout = mapped[np.append(cand_ids, -1)[pair.b.row[rest]]]
    fits = np.array([_fits_batch(dtype, shape) for dtype, shape in layouts] + [False], bool)
    batched = (a_layout >= 0) & (a_layout == b_layout) & rules.bulk[rest] & fits[a_layout]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, layout in zip(rest[batched].tolist(), a_layout[batched].tolist(), strict=True):
        groups.setdefault((layout, int(rules.rule_index[i])), []).append(i)
    batches = [(layouts[layout], rules.distinct[rule], members)
               for (layout, rule), members in groups.items()]  # fmt: skip
    return batched, batches


def _fits_batch(dtype: str, shape: tuple[int, ...]) -> bool:
    if not _numeric(dtype):
        return False
    if not shape and not np.dtype(dtype).isnative:
        return False  # compare_batch reports a 0-d row's dtype as numpy scalars have it: native
    return math.prod(shape) <= BATCH_ELEMENTS


def _compare_batch(
    pair: _Pair, outputs: list[str], at: list[int], tolerance: Tolerance
) -> pa.Table | dict[int, OutputComparison]:
    """Outputs of one dtype, shape and tolerance compared as the rows of two arrays, as a
    table; if they cannot be read together, one by one (each then says what is wrong)."""
    try:
        a = pair.base.store.load_rows(pair.a.row[at].tolist())
        b = pair.cand.store.load_rows(pair.b.row[at].tolist())
        columns = batch_columns(a, b, tolerance)
    except OutputError:
        return {i: _compare_one(outputs[i], pair, i, tolerance, None) for i in at}
    count = len(at)
    names = [outputs[i] for i in at]
    dtype, shape = columns.pop("dtype"), columns.pop("shape")
    columns |= {
        "output": pa.array([utf8_text(name)[0] for name in names], pa.string()),
        "baseline": pa.repeat(pa.scalar(pair.base.env.name, pa.string()), count),
        "candidate": pa.repeat(pa.scalar(pair.cand.env.name, pa.string()), count),
        "note": pa.nulls(count, pa.string()),
        "rule": columns.pop("rule"),
        "dtype_baseline": [d for d, _ in dtype], "dtype_candidate": [d for _, d in dtype],
        "shape_baseline": [list(s) for s, _ in shape],
        "shape_candidate": [list(s) for _, s in shape],
        "rows": pa.nulls(count, SCHEMA.field("rows").type),
        "decision": pa.nulls(count, SCHEMA.field("decision").type),
    }  # fmt: skip
    return pa.table({field.name: columns[field.name] for field in SCHEMA}, schema=SCHEMA)


def _mark_noise_in(table: pa.Table, noisy: Mapping[tuple[str, str], Noise]) -> pa.Table:
    """:func:`_mark_noise` over a table's rows (only the drifting rows of noisy outputs
    become objects)."""
    if not noisy:
        return table
    outputs = pa.array(sorted({output for output, _env in noisy}), pa.string())
    suspect = pc.and_(pc.equal(table["verdict"], "drift"), pc.is_in(table["output"], outputs))
    rows = np.flatnonzero(suspect.to_numpy(zero_copy_only=False))
    if not rows.size:
        return table
    verdicts, notes = table["verdict"].to_pylist(), table["note"].to_pylist()
    for row in rows.tolist():
        item = _mark_noise(OutputComparison(output=table["output"][row].as_py(),
                                            baseline=table["baseline"][row].as_py(),
                                            candidate=table["candidate"][row].as_py(),
                                            verdict="drift"), noisy)  # fmt: skip
        verdicts[row], notes[row] = item.verdict, item.note
    for name, values in (("verdict", verdicts), ("note", notes)):
        column = pa.array(values, pa.string())
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


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
    table = pair.base.store.table.select(["name", "dtype", "shape", "size", "nans"])
    source = table.take(pa.array(pair.a.row[at]))  # only the columns used: a take copies
    n = len(at)
    comparable = pc.greater(pc.subtract(source["size"], source["nans"]), 0)
    zero = pc.if_else(comparable, 0.0, pa.scalar(None, pa.float64()))
    ndim, channels = _ndim_and_channels(source["shape"].combine_chunks())
    pictures = (ndim == 2) | ((ndim == 3) & (channels >= 1) & (channels <= 4))
    image = pc.and_(pc.is_in(source["dtype"], _IMAGE_DTYPES), pa.array(pictures))
    patterns = pa.array([t.pattern for t in rules.distinct], pa.string())
    zeros = np.zeros(n, dtype=np.int64)  # shared by the columns that are all 0
    columns = {
        "output": source["name"],
        "baseline": pa.repeat(pa.scalar(pair.base.env.name, pa.string()), n),
        "candidate": pa.repeat(pa.scalar(pair.cand.env.name, pa.string()), n),
        "verdict": pa.repeat(pa.scalar("identical", pa.string()), n),
        "note": pa.nulls(n, pa.string()),
        "rule": pc.take(patterns, pa.array(rules.rule_index[at])),
        "dtype_baseline": _dtype_names(source["dtype"]),
        "dtype_candidate": _dtype_names(source["dtype"]),
        "shape_baseline": source["shape"],
        "shape_candidate": source["shape"],
        "total": source["size"],
        "mismatched": pa.array(zeros),
        "bit_identical": pa.array(np.ones(n, dtype=bool)),
        "max_abs": zero,
        "mean_abs": zero,
        "max_rel": zero,
        "max_ulp": pc.if_else(comparable, pa.scalar(0, pa.uint64()), pa.scalar(None, pa.uint64())),
        "worst_indices": pa.ListArray.from_arrays(
            pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.list_(pa.int64()))
        ),
        "nan_mismatch": pa.array(zeros),
        "inf_mismatch": pa.array(zeros),
        "psnr": pc.if_else(image, float("inf"), pa.scalar(None, pa.float64())),
        "differing_pixels": pc.if_else(image, pa.scalar(0, pa.int64()), _NULL_INT),
        "rows": pa.nulls(n, SCHEMA.field("rows").type),
        "decision": pa.nulls(n, SCHEMA.field("decision").type),
    }
    return pa.table(columns, schema=SCHEMA)


def _ndim_and_channels(
    shapes: pa.ListArray,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Each shape's length and, for three dimensions, its last one (0 otherwise), read from
    the list's offsets and values (a list-valued if_else copies every list)."""
    offsets = np.asarray(shapes.offsets.to_numpy(), dtype=np.int64)
    values = np.asarray(shapes.values.to_numpy(zero_copy_only=False), dtype=np.int64)
    ndim = np.diff(offsets)
    third = np.minimum(offsets[:-1] + 2, max(len(values) - 1, 0))
    channels = values[third] if len(values) else np.zeros(len(ndim), dtype=np.int64)
    return ndim, np.where(ndim == 3, channels, 0)


def _dtype_names(column: pa.ChunkedArray) -> pa.Array:
    """numpy's names of the stored ``dtype.str`` codes ('<f4' -> 'float32'), as
    compare_arrays reports them."""
    codes = pc.unique(column)
    names = pa.array([str(np.dtype(code)) for code in codes.to_pylist()], pa.string())
    return pc.take(names, pc.index_in(column, value_set=codes))


def _in_output_order(tables: list[pa.Table]) -> pa.Table:
    """The pairs' tables as one, output by output (pairs in order within an output). Takes
    ``tables`` over (the list is emptied): each column's source is let go as soon as it is
    reordered, so the peak is one copy plus a column, not two copies."""
    if not tables:
        return SCHEMA.empty_table()
    joined = pa.concat_tables(tables)
    tables.clear()
    order = pc.sort_indices(joined["_at"])  # stable: pair order kept within an output
    names = [name for name in joined.column_names if name != "_at"]
    sources: list[pa.ChunkedArray | None] = [joined[name] for name in names]
    del joined
    columns = []
    for k in range(len(sources)):
        columns.append(pc.take(sources[k], order))
        sources[k] = None
    return pa.table(columns, schema=SCHEMA)


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
    chosen.sort(key=lambda name: (not declared.for_output(name).pattern, name))  # declared first
    rows = {name: side.store.rows_of(chosen).tolist() for name, side in sides.items()}
    for k, output in enumerate(chosen):
        rule = declared.for_output(output).pattern
        spec = config.metrics.get(rule) if rule else None
        values = {n: _scalar(side, output, rows[n][k]) for n, side in sides.items()}
        found.append(MetricValues(
            output=output, values=values,
            unit=spec.unit if spec else "", scale=spec.scale if spec else 1.0,
            atol=spec.atol if spec else None, rtol=spec.rtol if spec else None,
        ))  # fmt: skip
    return tuple(found)


def _scalar(side: _Side, output: str, row: int) -> float | None:
    try:
        array = side.load(output, row)
    except OutputError:
        return None
    if array is None or array.size != 1 or array.dtype.kind not in "biuf":
        return None
    value = array.reshape(-1)[0]
    return int(value) if array.dtype.kind in "iu" else float(value)  # an int past 2**53 exact


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
    output: str, sides: _Pair, i: int, tolerance: Tolerance, decision: DecisionRule | None,
    *, new_passes: bool = False,
) -> OutputComparison:  # fmt: skip
    base, cand = sides.base, sides.cand
    pair = functools.partial(
        OutputComparison, output=output, baseline=base.env.name, candidate=cand.env.name
    )
    arrays: list[np.ndarray | None] = []
    unreadable = []
    for side, row in ((base, int(sides.a.row[i])), (cand, int(sides.b.row[i]))):
        try:
            arrays.append(side.load(output, row))
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
