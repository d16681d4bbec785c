"""How much of an array one step of the comparison holds in memory at a time."""

from __future__ import annotations

from dataclasses import dataclass

# The pixels of an image with up to four channels never straddle two chunks when the
# chunk is a multiple of this.
PIXEL_ALIGNMENT = 12


@dataclass(frozen=True, kw_only=True)
class Chunking:
    """Chunk and block sizes, in elements.

    ``chunk``: elements per chunk of the stream. A multiple of 1, 2, 3 and 4 so that the
    pixels of an image with up to four channels never straddle two chunks. About 1.5 M
    elements keeps the temporaries of one chunk within a few tens of MB.

    ``block``: elements per block of a dense chunk. A block's scratch buffers (for float32
    about 2 MB) are allocated once per comparison and reused by every block, so the dozen
    or so numpy passes over a block run from cache, not memory. 64 K elements measured
    fastest: 32 K pays numpy's per-call overhead (about 1 us a pass) 10% more, 128 K no
    longer gains.

    The sizes change speed and memory, never a result (mean_abs may differ in the last
    bits for floats, whose sums are rounded per chunk).
    """

    chunk: int = 3 * 2**19
    block: int = 2**16

    def __post_init__(self) -> None:
        if self.chunk <= 0 or self.chunk % PIXEL_ALIGNMENT:
            raise ValueError(f"chunk must be a positive multiple of {PIXEL_ALIGNMENT}")
        if self.block <= 0:
            raise ValueError("block must be positive")


DEFAULT_CHUNKING = Chunking()
