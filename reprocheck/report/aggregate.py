"""What report.json says about many comparisons without listing every one: verdict counts
per pair, outputs grouped by their key across fixtures, agreement patterns, and the worst
comparisons. Everything is computed on the Arrow table (:mod:`reprocheck.comparisons`); only
what gets listed becomes Python objects, so the report stays small at any run size.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from reprocheck.comparisons import Comparisons, item_of
from reprocheck.vocabulary import PROBLEMS

# Comparisons, groups and agreement entries listed in report.json; every comparison is in
# comparisons.parquet. At this size report.json stays around a few MB.
LISTED = 1000
OUTPUTS_NAMED = 50  # failing outputs named in one group


def listed_comparisons(comparisons: Comparisons, limit: int | None = None) -> list[Any]:
    """Every comparison, in order, when there are at most ``limit`` (:data:`LISTED`); else
    the worst ``limit`` of them, worst first."""
    limit = LISTED if limit is None else limit
    if len(comparisons) <= limit:
        return list(comparisons)
    return comparisons.worst(limit)


def group_keys(outputs: pa.Array | pa.ChunkedArray, fixtures: Sequence[str]) -> pa.Array:
    """``*/linalg/svd`` for ``a.jpg/linalg/svd`` when ``a.jpg`` is a fixture (the longest
    fixture that is a prefix wins); an output of no fixture is its own key. Worked out once
    per distinct output name (each appears once per pair), splitting only as deep as the
    deepest fixture."""
    if not fixtures or len(outputs) == 0:
        return pa.chunked_array([outputs]) if isinstance(outputs, pa.Array) else outputs
    names = pc.unique(outputs)
    keys = names
    known = pa.array(sorted(set(fixtures)), type=pa.string())
    depths = sorted({f.count("/") + 1 for f in fixtures})
    parts = pc.split_pattern(names, "/", max_splits=depths[-1])
    count = pc.list_value_length(parts)
    for depth in depths:
        prefix = pc.binary_join(pc.list_slice(parts, 0, depth), "/")
        hit = pc.and_(pc.is_in(prefix, known), pc.greater(count, depth))
        if not pc.any(hit).as_py():
            continue
        rest = pc.binary_join(pc.list_slice(parts, depth), "/")  # the last part is unsplit
        keys = pc.if_else(hit, pc.binary_join_element_wise("*", rest, "/"), keys)
    return pc.take(keys, pc.index_in(outputs, value_set=names))


def groups(
    comparisons: Comparisons, fixtures: Sequence[str], limit: int | None = None
) -> list[Any]:
    """Per output key and pair: how many outputs, their verdicts, the failing ones named and
    the worst comparison; worst groups first, at most ``limit`` (:data:`LISTED`)."""
    limit = LISTED if limit is None else limit
    table = comparisons.table
    if not len(comparisons):
        return []
    rank = pa.array(_ranks(comparisons.order))
    failing = pc.is_in(table["verdict"], pa.array(sorted(PROBLEMS)))
    keyed = pa.table({
        "key": group_keys(table["output"], fixtures), "baseline": table["baseline"],
        "candidate": table["candidate"], "rank": rank, "failing": pc.cast(failing, pa.int64()),
    })  # fmt: skip
    summary = keyed.group_by(["key", "baseline", "candidate"], use_threads=False).aggregate(
        [("rank", "min"), ("failing", "sum"), ("rank", "count")]
    )
    summary = summary.sort_by([("rank_min", "ascending")]).slice(0, limit)
    chosen = summary.to_pylist()
    wanted = pa.array(sorted({g["key"] for g in chosen}), type=pa.string())
    members = keyed.append_column("output", table["output"]).append_column(
        "verdict", table["verdict"]
    )
    members = members.filter(pc.is_in(members["key"], wanted)).sort_by([("rank", "ascending")])
    by_group: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for row in members.select(["key", "baseline", "candidate", "output", "verdict"]).to_pylist():
        group = (row["key"], row["baseline"], row["candidate"])
        by_group.setdefault(group, []).append((row["output"], row["verdict"]))
    worst_rows = table.take(pc.take(comparisons.order, summary["rank_min"])).to_pylist()
    found = []
    for g, worst_row in zip(chosen, worst_rows, strict=True):
        entries = by_group.get((g["key"], g["baseline"], g["candidate"]), [])
        worst = item_of(worst_row)
        found.append({
            "key": g["key"], "baseline": g["baseline"], "candidate": g["candidate"],
            "outputs": g["rank_count"],
            "verdicts": dict(Counter(verdict for _, verdict in entries)),
            "failing": [o for o, v in entries if v in PROBLEMS][:OUTPUTS_NAMED],
            "failing_count": g["failing_sum"],
            "worst": worst,
        })  # fmt: skip
    return found


def _ranks(severity: pa.Array) -> npt.NDArray[np.int64]:
    """Each row's position in severity order (0 = the worst comparison of the run)."""
    order = severity.to_numpy()
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order), dtype=np.int64)
    return ranks


def decisions(comparisons: Comparisons, fixtures: Sequence[str]) -> list[dict[str, Any]]:
    """What drift did to the decisions outputs drive, per output key, pair and decision
    kind (one line for all fixtures): decisions changed of how many, the largest drift and
    the closest call's margin as a multiple of the drift there. Changed decisions first."""
    table = comparisons.table
    drifted = table.filter(pc.and_(pc.is_valid(table["decision"]),
                                   pc.not_equal(table["verdict"], "identical")))  # fmt: skip
    if not drifted.num_rows:
        return []
    keys = group_keys(drifted["output"], fixtures).to_pylist()
    found: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    columns = ["baseline", "candidate", "max_abs", "max_ulp", "decision"]
    for key, row in zip(keys, drifted.select(columns).to_pylist(), strict=True):
        decision = row["decision"]
        entry = found.setdefault((key, row["baseline"], row["candidate"], decision["kind"]), {
            "key": key, "baseline": row["baseline"], "candidate": row["candidate"],
            "kind": decision["kind"], "outputs": 0, "decisions": 0, "changed": 0,
            "max_abs": None, "max_ulp": None, "margin_ratio": None,
        })  # fmt: skip
        entry["outputs"] += 1
        entry["decisions"] += decision["total"]
        entry["changed"] += decision["decisions_changed"]
        entry["max_abs"] = _larger(entry["max_abs"], row["max_abs"])
        entry["max_ulp"] = _larger(entry["max_ulp"], row["max_ulp"])
        margin, drift = decision["min_margin"], row["max_abs"]
        if margin is not None and drift and math.isfinite(drift):
            ratio = margin / drift
            entry["margin_ratio"] = ratio if entry["margin_ratio"] is None else min(
                entry["margin_ratio"], ratio)  # fmt: skip
    ranked = sorted(found.values(), key=lambda e: (-e["changed"], e["margin_ratio"] or 0.0))
    return ranked[:LISTED]


def _larger(old: Any, new: Any) -> Any:
    if new is None or (isinstance(new, float) and math.isnan(new)):
        return old
    return new if old is None or new > old else old
