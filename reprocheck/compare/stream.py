"""The chunk loop: flat arrays in chunks, each dense one in blocks, into one Totals."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from reprocheck.compare.chunking import Chunking
from reprocheck.compare.dense import FloatScratch, add_dense_floats, float_scratch
from reprocheck.compare.dtypes import AnyArray, BoolArray, Kind, differing_bits
from reprocheck.compare.integers import IntScratch, add_dense_ints, add_gathered_ints, int_scratch
from reprocheck.compare.rules import Tolerance
from reprocheck.compare.totals import Totals, add_values, nan_count
from reprocheck.compare.values import float_values, int_values

# Metrics are computed on the gathered bit-different elements of a chunk, or on the whole
# chunk when at least 1 / DENSE of it differs.
DENSE = 8


@dataclass(frozen=True, kw_only=True)
class Stream:
    """What the chunk loop needs to know about the pair of flat arrays."""

    a: AnyArray
    b: AnyArray
    kind: Kind
    tolerance: Tolerance
    image_channels: int | None
    chunking: Chunking

    @property
    def blocks(self) -> bool:
        """Whether dense chunks go block by block (all but bools)."""
        return self.kind == "float" or self.a.dtype != np.bool_

    @cached_property
    def step(self) -> int:
        """Elements per block: whole pixels of an image, at least one element."""
        size = min(self.chunking.block, self.chunking.chunk, self.a.size)
        channels = self.image_channels or 1
        return max(channels, size - size % channels)

    @cached_property
    def scratch(self) -> FloatScratch | IntScratch | None:
        """The block buffers, allocated when the first block needs them."""
        if not self.blocks:
            return None
        if self.kind == "float":
            return float_scratch(self.step, self.a.dtype.itemsize)
        return int_scratch(self.step, self.a.dtype, self.image_channels)


def _add_dense(totals: Totals, stream: Stream, start: int, stop: int) -> int:
    """A chunk where most elements differ, block by block; returns the count of differing
    elements (already added to the totals)."""
    span = range(start, stop, stream.step)
    scratch = stream.scratch
    if isinstance(scratch, IntScratch):
        return add_dense_ints(totals, stream.a, stream.b, stream.tolerance, scratch, span)
    assert isinstance(scratch, FloatScratch)
    return add_dense_floats(totals, stream.a, stream.b, stream.tolerance, scratch, span)


def _add_chunk(totals: Totals, stream: Stream, start: int, expect_dense: bool) -> bool:
    """Fold one chunk in. Returns whether it was dense, the guess for the next chunk: a
    chunk guessed dense skips the bit comparison that decides (the blocks count)."""
    stop = min(start + stream.chunking.chunk, stream.a.size)
    totals.total += stop - start
    if expect_dense and stream.blocks:
        return _add_dense(totals, stream, start, stop) * DENSE >= stop - start
    differs = differing_bits(stream.a[start:stop], stream.b[start:stop])
    count = int(np.count_nonzero(differs))
    dense = count * DENSE >= stop - start  # gathering would cost more than it saves
    if dense and stream.blocks:
        _add_dense(totals, stream, start, stop)
    elif count:
        _add_sparse(totals, stream, start, differs, count, dense)
    else:
        totals.nan_positions += nan_count(stream.a[start:stop])
    return dense


def _add_sparse(
    totals: Totals, stream: Stream, start: int, differs: BoolArray, count: int, dense: bool
) -> None:
    """A chunk with few differing elements (or a dense chunk of bools)."""
    if stream.kind == "int" and stream.blocks:  # here only when few differ
        scratch = stream.scratch
        assert isinstance(scratch, IntScratch)
        positions = np.flatnonzero(differs) + start
        add_gathered_ints(totals, stream.a, stream.b, stream.tolerance, scratch, positions)
        return
    totals.differing_bits += count
    totals.nan_positions += nan_count(stream.a[start : start + differs.size])
    _add_differing(totals, stream, start, differs, dense)


def _add_differing(
    totals: Totals, stream: Stream, start: int, differs: BoolArray, dense: bool
) -> None:
    """The general path: the whole chunk if dense, else its gathered differing elements."""
    chunk_a = stream.a[start : start + differs.size]
    chunk_b = stream.b[start : start + differs.size]
    if dense:
        positions = np.arange(chunk_a.size)
        part_a, part_b = chunk_a, chunk_b
    else:
        positions = np.flatnonzero(differs)
        part_a, part_b = chunk_a[positions], chunk_b[positions]
    if stream.kind == "float":
        values = float_values(part_a, part_b, stream.tolerance)
    else:
        values = int_values(part_a, part_b, stream.tolerance)
    positions += start
    add_values(totals, values, positions)


def _looks_dense(stream: Stream) -> bool:
    """The guess for the first chunk: do most of the first block's elements differ?
    A wrong guess costs time, never correctness."""
    head = min(stream.chunking.block, stream.a.size)
    if not stream.blocks or head == 0:
        return False
    return int(np.count_nonzero(differing_bits(stream.a[:head], stream.b[:head]))) * DENSE >= head


def stream_totals(stream: Stream) -> Totals:
    totals = Totals()
    dense = _looks_dense(stream)
    for start in range(0, stream.a.size, stream.chunking.chunk):
        dense = _add_chunk(totals, stream, start, dense)
    return totals
