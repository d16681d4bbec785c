"""Agreement classes found with array operations equal what grouping each output's digests
one by one gives, and the report's patterns and listed entries count them the same way."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from reprocheck.agreement import Agreement, agreement
from reprocheck.vocabulary import pattern


def _one_by_one(names, digests, known, count):
    found = {}
    for i in range(count):
        classes: dict[tuple[int, int], list[str]] = {}
        groups: list[list[str]] = []
        for j, name in enumerate(names):
            if not known[j][i]:
                groups.append([name])
                continue
            key = (int(digests[j][i, 0]), int(digests[j][i, 1]))
            if key in classes:
                classes[key].append(name)
            else:
                classes[key] = [name]
                groups.append(classes[key])
        found[f"o{i:04d}"] = groups
    return found


@settings(max_examples=200, deadline=None)
@given(
    width=st.integers(1, 6),
    count=st.integers(0, 60),
    seed=st.integers(0, 2**32 - 1),
    limit=st.integers(0, 70),
)
def test_classes_patterns_and_listing(width, count, seed, limit) -> None:
    rng = np.random.default_rng(seed)
    names = [f"e{j}" for j in range(width)]
    values = rng.integers(0, 3, size=(width, count, 2)).astype(np.uint64)
    digests = [values[j] for j in range(width)]
    known = [rng.random(count) > 0.2 for _ in range(width)]
    outputs = [f"o{i:04d}" for i in range(count)]
    found = agreement(outputs, names, digests, known)
    expected = _one_by_one(names, digests, known, count)
    assert dict(found) == expected
    assert list(found) == outputs and len(found) == count
    counts = Counter(pattern(groups) for groups in expected.values())
    assert [(pattern(p["classes"]), p["outputs"]) for p in found.patterns()] == counts.most_common()
    split = [(o, c) for o, c in expected.items() if len(c) > 1]
    whole = [(o, c) for o, c in expected.items() if len(c) == 1]
    listed = list(expected.items()) if count <= limit else (split + whole)[:limit]
    assert [(e["output"], e["classes"]) for e in found.listed(limit)] == listed
    assert dict(Agreement.of(expected)) == expected


def test_no_environments_no_outputs() -> None:
    assert len(agreement(["x"], [], [], [])) == 0
