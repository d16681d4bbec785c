"""Which dtypes compare, how, and the flat views the stream walks."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from reprocheck.errors import OutputError

Kind = Literal["float", "int"]
AnyArray: TypeAlias = npt.NDArray[np.generic]
FloatArray: TypeAlias = npt.NDArray[np.float64]
UIntArray: TypeAlias = npt.NDArray[np.uint64]
BitsArray: TypeAlias = npt.NDArray[np.signedinteger[Any]]
DistanceArray: TypeAlias = npt.NDArray[np.unsignedinteger[Any]]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
IndexArray: TypeAlias = npt.NDArray[np.intp]
WideArray: TypeAlias = npt.NDArray[np.floating[Any]]  # float32 or float64

FLOAT_BITS: dict[int, type[np.signedinteger[Any]]] = {
    2: np.int16,
    4: np.int32,
    8: np.int64,
}
BITS_VIEW: dict[int, type[np.unsignedinteger[Any]]] = {
    1: np.uint8,
    2: np.uint16,
    4: np.uint32,
    8: np.uint64,
}
IMAGE_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def value_kind(dtype: np.dtype[np.generic]) -> Kind:
    """How values of ``dtype`` compare; OutputError for a dtype that does not compare."""
    if dtype.kind in "fc" and dtype.itemsize // (2 if dtype.kind == "c" else 1) in FLOAT_BITS:
        return "float"
    if dtype.kind in "iub":
        return "int"
    raise OutputError(
        f"cannot compare arrays of dtype {dtype}",
        fix="outputs must be float16/32/64, complex64/128, integer or bool arrays",
    )


def native(array: AnyArray) -> AnyArray:
    if array.dtype.isnative:
        return array
    return array.astype(array.dtype.newbyteorder("="))


def flat(array: AnyArray) -> tuple[AnyArray, tuple[int, ...]]:
    """A flat C-order view (complex as real pairs) and the shape its indices refer to."""
    flat_view = np.ascontiguousarray(array).reshape(-1)
    if array.dtype.kind == "c":
        return flat_view.view(flat_view.real.dtype), (*array.shape, 2)
    return flat_view, array.shape


def differing_bits(chunk_a: AnyArray, chunk_b: AnyArray) -> BoolArray:
    bits = BITS_VIEW[chunk_a.dtype.itemsize]
    differs: BoolArray = chunk_a.view(bits) != chunk_b.view(bits)
    return differs
