"""Agreement classes: per output, the environments grouped by bit-identical arrays.

A run of a million outputs has a handful of distinct groupings ("all agree", "{a, b} | {c}"),
so an output's classes are kept as an index into the run's distinct patterns, found with
array operations over the environments' digests; the Mapping interface (output -> classes)
builds an output's lists only when asked for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from reprocheck.vocabulary import pattern

Classes = list[list[str]]


class Agreement(Mapping[str, Classes]):
    """Outputs in order, a pattern index per output, and the distinct patterns."""

    def __init__(self, outputs: Sequence[str], ids: npt.NDArray[np.int64],
                 patterns: list[Classes]) -> None:  # fmt: skip
        self._outputs = outputs
        self._ids = ids
        self._patterns = patterns
        self._index: dict[str, int] | None = None

    @classmethod
    def of(cls, classes: Mapping[str, Classes]) -> Agreement:
        """From a plain mapping (each distinct grouping becomes one pattern)."""
        if isinstance(classes, Agreement):
            return classes
        patterns: list[Classes] = []
        seen: dict[str, int] = {}
        ids = []
        for groups in classes.values():
            key = pattern(groups)
            if key not in seen:
                seen[key] = len(patterns)
                patterns.append([list(group) for group in groups])
            ids.append(seen[key])
        return cls(list(classes), np.array(ids, dtype=np.int64), patterns)

    def __getitem__(self, output: str) -> Classes:
        if self._index is None:
            self._index = {name: i for i, name in enumerate(self._outputs)}
        return self._patterns[int(self._ids[self._index[output]])]

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)

    def patterns(self) -> list[dict[str, Any]]:
        """Each pattern and how many outputs share it, commonest first (ties: the pattern
        of the earlier output first)."""
        counts = np.bincount(self._ids, minlength=len(self._patterns))
        first = np.full(len(self._patterns), len(self._ids), dtype=np.int64)
        np.minimum.at(first, self._ids, np.arange(len(self._ids), dtype=np.int64))
        order = np.lexsort((first, -counts))
        return [{"classes": self._patterns[k], "outputs": int(counts[k])}
                for k in order.tolist() if counts[k]]  # fmt: skip

    def listed(self, limit: int) -> list[dict[str, Any]]:
        """Per output, its classes: all of them up to ``limit``, else the outputs that split
        the environments first (in output order), then those on which all agree."""
        split = np.array([len(p) > 1 for p in self._patterns] + [False], dtype=bool)
        divided = split[self._ids] if len(self._ids) else np.zeros(0, dtype=bool)
        chosen = np.arange(len(self._ids)) if len(self._ids) <= limit else np.concatenate(
            [np.flatnonzero(divided)[:limit], np.flatnonzero(~divided)])[:limit]  # fmt: skip
        return [{"output": self._outputs[i], "classes": self._patterns[int(self._ids[i])]}
                for i in chosen.tolist()]  # fmt: skip


def agreement(
    outputs: Sequence[str],
    names: Sequence[str],
    digests: Sequence[npt.NDArray[np.uint64]],
    known: Sequence[npt.NDArray[np.bool_]],
) -> Agreement:
    """The classes of every output from each environment's digests (``(n, 2)`` words) and
    whether each digest is there (an absent or unreadable array is a class of its own).
    Each environment is labelled with the first environment whose array equals its own;
    the labels' combinations are the patterns."""
    count, width = len(outputs), len(names)
    if not width:
        return Agreement([], np.zeros(0, dtype=np.int64), [])
    labels = np.empty((count, width), dtype=np.int64)
    for j in range(width):
        labels[:, j] = j
        for k in range(j):
            same = known[j] & known[k] & (digests[j] == digests[k]).all(axis=1)
            labels[:, j] = np.where(same & (labels[:, j] == j), k, labels[:, j])
    code = np.zeros(count, dtype=np.int64)
    for j in range(width):
        code = code * width + labels[:, j]  # distinct label rows, distinct codes (width**width)
    if width > 12:  # the codes would overflow: number the rows instead
        _rows, inverse = np.unique(labels, axis=0, return_inverse=True)
        code = inverse.reshape(-1).astype(np.int64)
    _codes, first, ids = np.unique(code, return_index=True, return_inverse=True)
    patterns = [_classes(labels[int(at)], names) for at in first.tolist()]
    return Agreement(list(outputs), ids.reshape(-1).astype(np.int64), patterns)


def _classes(labels: npt.NDArray[np.int64], names: Sequence[str]) -> Classes:
    groups: dict[int, list[str]] = {}
    for j, label in enumerate(labels.tolist()):
        groups.setdefault(label, []).append(names[j])
    return list(groups.values())
