"""Arrays -> pictures for the HTML report: PNG bytes, difference heatmaps, ULP histograms.

Pure numpy + zlib; no image library needed. Numerics only, no HTML.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

U8: TypeAlias = npt.NDArray[np.uint8]
AnyArray: TypeAlias = npt.NDArray[Any]

MAX_SIDE = 256  # larger images are downscaled by an integer stride
MIN_SIDE = 16  # smaller or thinner 2-D arrays are vectors or tables, not pictures
MAX_ASPECT = 8
MAX_BINS = 20
_IMAGE_KINDS = "uf"
_PNG_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # gray, gray+alpha, RGB, RGBA
_FLOAT_INT: dict[int, type[np.signedinteger[Any]]] = {2: np.int16, 4: np.int32, 8: np.int64}


def _chunk(tag: bytes, data: bytes) -> bytes:
    body = tag + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_bytes(pixels: U8) -> bytes:
    """An 8-bit PNG of an H x W (gray) or H x W x C (C = 1..4) uint8 array."""
    image = pixels if pixels.ndim == 3 else pixels[:, :, None]
    height, width, channels = image.shape
    rows = np.ascontiguousarray(image).reshape(height, width * channels)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPE[channels], 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)),
            _chunk(b"IEND", b""),
        )
    )


def is_image(array: AnyArray) -> bool:
    """uint/float H x W or H x W x C (C = 1..4) with both sides of at least MIN_SIDE."""
    return image_layout(array.dtype, array.shape)


def image_layout(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bool:
    """:func:`is_image` of an array of ``dtype`` and ``shape``, without the array."""
    if dtype.kind not in _IMAGE_KINDS or len(shape) not in (2, 3):
        return False
    if len(shape) == 3 and not 1 <= shape[2] <= 4:
        return False
    short, long = sorted(shape[:2])
    return bool(short >= MIN_SIDE and long <= MAX_ASPECT * short)


def _stride(array: AnyArray) -> AnyArray:
    step = max(1, -(-max(array.shape[:2]) // MAX_SIDE))
    return array[::step, ::step]


def _display_range(arrays: tuple[AnyArray, ...]) -> tuple[float, float]:
    """The value range mapped onto 0..255: the dtype's for uint8, else the finite data's."""
    if all(a.dtype == np.uint8 for a in arrays):
        return 0.0, 255.0
    finite = [a[np.isfinite(a)] for a in (x.astype(np.float64) for x in arrays)]
    values = [f for f in finite if f.size]
    if not values:
        return 0.0, 1.0
    low, high = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
    return low, high if high > low else low + 1.0


def _to_u8(array: AnyArray, low: float, high: float) -> U8:
    scaled = (np.nan_to_num(array.astype(np.float64), nan=low) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _bgr_to_rgb(image: U8) -> U8:
    """OpenCV images are BGR(A): swap to RGB(A) for display; gray and 2-channel unchanged."""
    if image.ndim == 3 and image.shape[2] in (3, 4):
        order = [2, 1, 0, 3][: image.shape[2]]
        return np.ascontiguousarray(image[:, :, order])
    if image.ndim == 3 and image.shape[2] == 2:
        return np.ascontiguousarray(image[:, :, 0])
    return image


def display_pair(a: AnyArray, b: AnyArray) -> tuple[U8, U8]:
    """Baseline and candidate on one shared 0..255 scale, downscaled, as RGB/gray."""
    a, b = _stride(a), _stride(b)
    low, high = _display_range((a, b))
    return _bgr_to_rgb(_to_u8(a, low, high)), _bgr_to_rgb(_to_u8(b, low, high))


def _hot(level: npt.NDArray[np.float64]) -> U8:
    """Black -> red -> yellow -> white colour map of 0..1 levels."""
    rgb = np.stack([level * 3.0, level * 3.0 - 1.0, level * 3.0 - 2.0], axis=-1)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True, kw_only=True)
class Heatmap:
    pixels: U8
    max_diff: float
    differing: int  # pixels (not elements) that differ


def heatmap(a: AnyArray, b: AnyArray) -> Heatmap:
    """|a - b| per pixel (max over channels), square-root amplified so 1 LSB shows up."""
    a, b = _stride(a), _stride(b)
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    diff[np.isnan(a.astype(np.float64)) != np.isnan(b.astype(np.float64))] = np.inf
    diff = np.nan_to_num(diff, nan=0.0)
    if diff.ndim == 3:
        diff = diff.max(axis=2)
    finite = diff[np.isfinite(diff)]
    top = float(finite.max()) if finite.size else 0.0
    level = np.where(np.isfinite(diff), diff / top if top > 0 else 0.0, 1.0)
    level = np.sqrt(np.clip(level, 0.0, 1.0))
    level[(diff > 0) & (level < 0.25)] = 0.25  # any difference is visible
    return Heatmap(pixels=_hot(level), max_diff=top, differing=int(np.count_nonzero(diff)))


@dataclass(frozen=True, kw_only=True)
class Histogram:
    """Elements per ULP-distance bin: 0, 1, 2-3, 4-7, ... (powers of two, merged when many);
    a label is the lower end of its bin."""

    labels: tuple[str, ...]
    counts: tuple[int, ...]
    nan_or_inf: int = 0


def _bin_label(low: int, high: int) -> str:
    """Bins are [2^(low-1), 2^high - 1] (bin 0 is exactly 0), labelled by their lower end."""
    if low == 0:
        return "0"
    start = 2 ** (low - 1)
    return str(start) if low <= 10 else f"2^{low - 1}"


def _merge(counts: npt.NDArray[np.int64]) -> Histogram:
    """At most MAX_BINS bars: after 0 and 1, neighbouring power-of-two bins are merged."""
    last = int(np.flatnonzero(counts).max()) if counts.any() else 0
    counts = counts[: max(last, 1) + 1]
    width = max(1, -(-(len(counts) - 2) // (MAX_BINS - 2)))
    edges = [0, 1, *range(2, len(counts), width)]
    merged = [int(counts[lo : (edges[i + 1] if i + 1 < len(edges) else len(counts))].sum())
              for i, lo in enumerate(edges)]  # fmt: skip
    labels = [_bin_label(lo, lo) for lo in edges]
    return Histogram(labels=tuple(labels), counts=tuple(merged))


def ulp_distances(a: AnyArray, b: AnyArray) -> npt.NDArray[np.uint64] | None:
    """Per-element ULP distance of two float arrays of one dtype and shape; NaN pairs -> 0."""
    if a.dtype != b.dtype or a.shape != b.shape or a.dtype.kind != "f":
        return None
    bits = _FLOAT_INT.get(a.dtype.itemsize)
    if bits is None:
        return None
    x = np.ascontiguousarray(a).reshape(-1).view(bits).astype(np.int64)
    y = np.ascontiguousarray(b).reshape(-1).view(bits).astype(np.int64)
    lowest = np.iinfo(bits).min
    x = np.where(x < 0, lowest - x, x)  # sign-magnitude -> monotonic, -0.0 == +0.0
    y = np.where(y < 0, lowest - y, y)
    distance = np.maximum(x, y).view(np.uint64) - np.minimum(x, y).view(np.uint64)
    distance[np.isnan(a.reshape(-1)) | np.isnan(b.reshape(-1))] = 0
    return distance


def ulp_histogram(a: AnyArray, b: AnyArray) -> Histogram | None:
    distance = ulp_distances(a, b)
    if distance is None:
        return None
    # bin k holds [2^(k-1), 2^k - 1]; bin 0 holds 0. bit_length via log2 on nonzero values.
    bins = np.zeros(distance.shape, dtype=np.int64)
    nonzero = distance > 0
    bins[nonzero] = np.floor(np.log2(distance[nonzero].astype(np.float64))).astype(np.int64) + 1
    merged = _merge(np.bincount(bins, minlength=2).astype(np.int64))
    flagged = int(np.count_nonzero(np.isfinite(a) != np.isfinite(b)))
    return Histogram(labels=merged.labels, counts=merged.counts, nan_or_inf=flagged)
