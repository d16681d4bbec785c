"""Every comparison of a run, columnar: one Arrow row per output and environment pair.

A run of a million outputs makes millions of comparisons, nearly all "identical"; they are
made in bulk (see :mod:`reprocheck.matrix`) and never become Python objects. Rows become
:class:`OutputComparison` objects only when asked for: the worst few for a report, or all
of them for a small run. ``comparisons.parquet`` next to ``report.json`` is this table.

The columns follow the report's comparison objects (``docs/report-schema.md``), with the
baseline's and candidate's dtype and shape in two columns each; ``rule`` is null exactly
when the comparison has no metrics (verdicts "missing" and "error").
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reprocheck.compare import ArrayComparison, DecisionComparison, RowMatch, Verdict
from reprocheck.safe_files import utf8_text
from reprocheck.store import write_bytes_atomic
from reprocheck.vocabulary import SEVERITY


@dataclass(frozen=True, kw_only=True)
class OutputComparison:
    output: str
    baseline: str
    candidate: str
    verdict: Verdict
    metrics: ArrayComparison | None = None
    note: str | None = None


_ROWS = pa.struct([("matched", pa.int64()), ("only_in_baseline", pa.int64()),
                   ("only_in_candidate", pa.int64()),
                   ("max_displacement", pa.float64())])  # fmt: skip
_DECISION = pa.struct([("kind", pa.string()), ("total", pa.int64()),
                       ("decisions_changed", pa.int64()), ("min_margin", pa.float64()),
                       ("appeared", pa.int64()), ("vanished", pa.int64()),
                       ("moved", pa.int64())])  # fmt: skip

SCHEMA = pa.schema(
    [
        ("output", pa.string()),
        ("baseline", pa.string()),
        ("candidate", pa.string()),
        ("verdict", pa.string()),
        ("note", pa.string()),
        ("rule", pa.string()),
        ("dtype_baseline", pa.string()),
        ("dtype_candidate", pa.string()),
        ("shape_baseline", pa.list_(pa.int64())),
        ("shape_candidate", pa.list_(pa.int64())),
        ("total", pa.int64()),
        ("mismatched", pa.int64()),
        ("bit_identical", pa.bool_()),
        ("max_abs", pa.float64()),
        ("mean_abs", pa.float64()),
        ("max_rel", pa.float64()),
        ("max_ulp", pa.uint64()),
        ("worst_indices", pa.list_(pa.list_(pa.int64()))),
        ("nan_mismatch", pa.int64()),
        ("inf_mismatch", pa.int64()),
        ("psnr", pa.float64()),
        ("differing_pixels", pa.int64()),
        ("rows", _ROWS),
        ("decision", _DECISION),
    ]
)
_METRICS = [f.name for f in SCHEMA][10:]  # the ArrayComparison fields stored as they are


def row_of(item: OutputComparison) -> dict[str, Any]:
    """One comparison as a row of :data:`SCHEMA`."""
    note = None if item.note is None else utf8_text(item.note)[0]  # may quote a file name
    row: dict[str, Any] = {"output": utf8_text(item.output)[0], "baseline": item.baseline,
                           "candidate": item.candidate, "verdict": item.verdict,
                           "note": note}  # fmt: skip
    m = item.metrics
    if m is None:
        return row
    row |= {"rule": m.rule, "dtype_baseline": m.dtype[0], "dtype_candidate": m.dtype[1],
            "shape_baseline": list(m.shape[0]), "shape_candidate": list(m.shape[1]),
            "total": m.total, "mismatched": m.mismatched, "bit_identical": m.bit_identical,
            "max_abs": m.max_abs, "mean_abs": m.mean_abs, "max_rel": m.max_rel,
            "max_ulp": m.max_ulp, "worst_indices": [list(i) for i in m.worst_indices],
            "nan_mismatch": m.nan_mismatch, "inf_mismatch": m.inf_mismatch, "psnr": m.psnr,
            "differing_pixels": m.differing_pixels,
            "rows": None if m.rows is None else vars(m.rows),
            "decision": None if m.decision is None else vars(m.decision)}  # fmt: skip
    return row


def item_of(row: dict[str, Any]) -> OutputComparison:
    """The comparison a row of :data:`SCHEMA` holds (the inverse of :func:`row_of`)."""
    metrics = None
    if row["rule"] is not None:
        fields = {name: row[name] for name in _METRICS}
        fields["worst_indices"] = tuple(tuple(i) for i in row["worst_indices"] or ())
        fields["rows"] = None if row["rows"] is None else RowMatch(**row["rows"])
        decision = row["decision"]
        fields["decision"] = None if decision is None else DecisionComparison(**decision)
        metrics = ArrayComparison(
            verdict=row["verdict"] if row["verdict"] != "nondeterministic" else "drift",
            rule=row["rule"],
            dtype=(row["dtype_baseline"], row["dtype_candidate"]),
            shape=(tuple(row["shape_baseline"]), tuple(row["shape_candidate"])),
            **fields,
        )
    return OutputComparison(output=row["output"], baseline=row["baseline"],
                            candidate=row["candidate"], verdict=row["verdict"],
                            metrics=metrics, note=row["note"])  # fmt: skip


def table_of(items: Iterable[OutputComparison]) -> pa.Table:
    return pa.Table.from_pylist([row_of(item) for item in items], schema=SCHEMA)


class Comparisons(Sequence[OutputComparison]):
    """The comparisons of a matrix: an Arrow table, read as OutputComparison objects on
    demand (iterating a large one materialises every row: ask :meth:`where` first)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table.combine_chunks() if table.num_columns else table

    @classmethod
    def of(cls, items: Iterable[OutputComparison]) -> Comparisons:
        return cls(table_of(items))

    @classmethod
    def concat(cls, tables: Sequence[pa.Table]) -> Comparisons:
        return cls(pa.concat_tables(tables) if tables else SCHEMA.empty_table())

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [item_of(r) for r in self.table.slice(*_bounds(index, len(self))).to_pylist()]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return item_of(self.table.slice(index, 1).to_pylist()[0])

    def __iter__(self) -> Iterator[OutputComparison]:
        for batch in self.table.to_batches(max_chunksize=4096):
            yield from (item_of(row) for row in batch.to_pylist())

    def counts(self) -> dict[str, int]:
        """How many comparisons have each verdict."""
        if not len(self):
            return {}
        found = pc.value_counts(self.table["verdict"]).to_pylist()
        return {entry["values"]: entry["counts"] for entry in found}

    def pair_counts(self) -> dict[tuple[str, str], dict[str, int]]:
        """Verdict counts per (baseline, candidate) pair."""
        counts: dict[tuple[str, str], dict[str, int]] = {}
        if not len(self):
            return counts
        grouped = self.table.group_by(["baseline", "candidate", "verdict"]).aggregate(
            [("verdict", "count")]
        )
        for row in grouped.to_pylist():
            pair = counts.setdefault((row["baseline"], row["candidate"]), {})
            pair[row["verdict"]] = row["verdict_count"]
        return counts

    def any_of(self, verdicts: Iterable[str]) -> bool:
        wanted = pa.array(sorted(verdicts), type=pa.string())
        return len(self) > 0 and pc.any(pc.is_in(self.table["verdict"], wanted)).as_py() is True

    def where(self, verdicts: Iterable[str]) -> Comparisons:
        """The comparisons with one of ``verdicts``, in order."""
        wanted = pa.array(sorted(verdicts), type=pa.string())
        return Comparisons(self.table.filter(pc.is_in(self.table["verdict"], wanted)))

    def with_decisions(self) -> Comparisons:
        """The comparisons of outputs declared as decisions, in order."""
        return Comparisons(self.table.filter(pc.is_valid(self.table["decision"])))

    def worst(self, limit: int | None = None) -> list[OutputComparison]:
        """Comparisons worst first (as :func:`severity_order`); the
        first ``limit`` of them."""
        order = self.order
        if limit is not None:
            order = order.slice(0, limit)
        return [item_of(row) for row in self.table.take(order).to_pylist()]

    @functools.cached_property
    def order(self) -> pa.Array:
        """Row indices worst first (:func:`severity_order`), sorted once."""
        return severity_order(self.table)

    def write_parquet(self, path: Path) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(self.table, sink, compression="zstd")
        write_bytes_atomic(path, sink.getvalue().to_pybytes())


def severity_order(table: pa.Table) -> pa.Array:
    """Row indices, worst first: the verdict's rank (:data:`vocabulary.SEVERITY`: errors,
    then failing verdicts, then new and nondeterministic outputs), decisions changed, a NaN
    or Inf mismatch, max relative difference, max |diff| (the outputs' own units; ULP counts
    never rank: across a sign or a NaN they are astronomic for a tiny change); ties keep
    report order.

    A relative difference that is infinite (some baseline element is exactly 0) ranks by
    max |diff| instead, i.e. relative to 1 there: 0 -> 1e-30 is not worse than 1 -> 2."""
    verdicts = pa.array(list(SEVERITY), type=pa.string())
    ranks = pa.array(list(SEVERITY.values()), type=pa.int8())
    rank = pc.fill_null(pc.take(ranks, pc.index_in(table["verdict"], value_set=verdicts)), 0)
    changed = pc.fill_null(pc.struct_field(table["decision"], "decisions_changed"), 0)
    special = pc.greater(pc.add(pc.fill_null(table["nan_mismatch"], 0),
                                pc.fill_null(table["inf_mismatch"], 0)), 0)  # fmt: skip
    keyed = pa.table({
        "rank": rank,
        "changed": changed,
        "special": pc.cast(special, pa.int8()),
        "rel": _sortable(_finite_rel(table["max_rel"], table["max_abs"])),
        "abs": _sortable(table["max_abs"]),
        "index": pa.array(range(table.num_rows), type=pa.int64()),
    })  # fmt: skip
    keys = [("rank", "descending"), ("changed", "descending"), ("special", "descending"),
            ("rel", "descending"), ("abs", "descending"), ("index", "ascending")]  # fmt: skip
    return pc.sort_indices(keyed, sort_keys=keys)


def _finite_rel(rel: pa.ChunkedArray, abs_: pa.ChunkedArray) -> pa.ChunkedArray:
    """max_rel, or max_abs where max_rel is +inf (a zero baseline element)."""
    infinite = pc.fill_null(pc.equal(rel, float("inf")), False)
    return pc.if_else(infinite, abs_, rel)


def _sortable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """NaN as the largest value, null as 0."""
    return pc.fill_null(pc.if_else(pc.is_nan(column), float("inf"), column), 0.0)


def _bounds(index: slice, length: int) -> tuple[int, int]:
    start, stop, step = index.indices(length)
    if step != 1:
        raise ValueError("Comparisons slices take no step")
    return start, max(0, stop - start)
