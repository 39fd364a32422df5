"""Open Inference Protocol tensors as bytes: the binary data extension (REST) and ``raw_*_contents`` (gRPC).

Both carry a tensor as its elements, flattened in row-major order, little
endian, with no padding; a ``BYTES`` element is a 4-byte little-endian length
and then that many bytes. Decoding goes straight from the bytes to a numpy
array (one ``frombuffer``, no per-element work) and encoding is the array's
own buffer, so a 1,000-row tensor costs a copy, not a parse; a numeric
column stays an array from there on (:func:`to_column`).

Every problem is an :class:`~rung.errors.InputError` naming the tensor's
field (``inputs[2].shape``), so REST answers a 4xx and gRPC
``INVALID_ARGUMENT`` with the same words.
"""

from __future__ import annotations

import math
import struct
from typing import Any, overload

import numpy as np

from rung.errors import InputError

__all__ = ["DTYPES", "OIP_TYPES", "datatype_of", "decode", "element_count", "encode", "to_column"]

# Numeric OIP datatypes and their little-endian numpy dtypes (BF16 has none: decoded through float32).
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
OIP_TYPES = frozenset(DTYPES) | {"BF16", "BYTES"}
_LENGTH = struct.Struct("<I")
_INT64_MAX = np.iinfo(np.int64).max


def element_count(shape: list[int], where: str) -> int:
    """The number of elements of ``shape``; a shape that is not a list of non-negative integers is refused."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InputError(f"{where}.shape: expected a list of non-negative integers", field=f"{where}.shape")
    return math.prod(shape)


def decode(datatype: str, shape: list[int], raw: bytes | memoryview, where: str) -> np.ndarray | list[bytes]:
    """The flat elements of one tensor sent as bytes: a numpy array, or for ``BYTES`` a list of ``bytes``.

    ``raw`` must hold exactly what ``shape`` and ``datatype`` need: a short or
    long buffer is refused, never read past or padded.
    """
    count = element_count(shape, where)
    if datatype == "BYTES":
        return _decode_bytes(raw, count, where)
    if datatype == "BF16":
        halves = _frombuffer(raw, np.dtype("<u2"), count, where, datatype)
        return (halves.astype("<u4") << 16).view("<f4")
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise InputError(f"{where}.datatype: {datatype!r} is not an OIP v2 datatype", field=f"{where}.datatype")
    array = _frombuffer(raw, dtype, count, where, datatype)
    if datatype == "BOOL" and array.size and bytes(raw).strip(b"\x00\x01"):
        raise InputError(f"{where}: a BOOL element is one byte, 0 or 1", field=f"{where}.data")
    return array


def _frombuffer(raw: bytes | memoryview, dtype: np.dtype[Any], count: int, where: str, datatype: str) -> np.ndarray:
    needed = count * dtype.itemsize
    if len(raw) != needed:
        raise InputError(f"{where}: {count} {datatype} elements need {needed} bytes, got {len(raw)}", field=f"{where}.data")
    return np.frombuffer(raw, dtype=dtype, count=count)


def _decode_bytes(raw: bytes | memoryview, count: int, where: str) -> list[bytes]:
    """The elements of a ``BYTES`` tensor: one tight pass (the REST and gRPC hot path), then a checked one if it fails."""
    data = bytes(raw)
    if count * 4 > len(data):
        raise _bytes_refusal(data, count, where)
    unpack = _LENGTH.unpack_from
    out: list[bytes] = []
    append = out.append
    offset = 0
    try:
        for _ in range(count):
            start = offset + 4
            offset = start + unpack(data, offset)[0]
            append(data[start:offset])  # a slice past the end is short: caught by the offset check below
    except struct.error:
        raise _bytes_refusal(data, count, where) from None
    if offset != len(data):
        raise _bytes_refusal(data, count, where)
    return out


def _bytes_refusal(data: bytes, count: int, where: str) -> InputError:
    """What is wrong with a ``BYTES`` tensor's bytes, element by element: the first problem, named."""
    offset, end = 0, len(data)
    for i in range(count):
        if offset + 4 > end:
            return InputError(f"{where}: BYTES element {i} has no 4-byte length prefix ({end} bytes for {count} elements)",
                              field=f"{where}.data")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > end:
            return InputError(f"{where}: BYTES element {i} says {length} bytes, {end - offset} are left", field=f"{where}.data")
        offset += length
    return InputError(f"{where}: {end - offset} bytes left after {count} BYTES elements", field=f"{where}.data")


def datatype_of(values: Any) -> str:
    """The OIP datatype that carries ``values`` (a numpy array or a list) without loss."""
    try:
        array = values if isinstance(values, np.ndarray) else np.asarray(values)
    except UnicodeDecodeError:  # bytes that are not ASCII beside text: numpy finds no common type
        return "BYTES"
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iuf":
        name = {"i": "INT", "u": "UINT", "f": "FP"}[kind] + str(array.dtype.itemsize * 8)
        return name if name in DTYPES else "FP64"  # a long double has no OIP type: FP64 is the nearest
    return "BYTES"


def encode(values: Any, datatype: str | None = None) -> tuple[str, bytes]:
    """``values`` as ``(datatype, bytes)``: the datatype of :func:`datatype_of` unless one is asked for."""
    datatype = datatype or datatype_of(values)
    if datatype == "BYTES":  # a list as objects: numpy's own bytes type would drop trailing NULs
        items = values if isinstance(values, np.ndarray) else np.array(values, dtype=np.object_)
        parts = []
        for value in items.ravel().tolist():
            item = value if isinstance(value, bytes) else str(value).encode()
            parts.append(_LENGTH.pack(len(item)))
            parts.append(item)
        return datatype, b"".join(parts)
    array = values if isinstance(values, np.ndarray) else np.asarray(values)
    if datatype == "BF16":
        return datatype, (np.ascontiguousarray(array, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
    return datatype, np.ascontiguousarray(array, dtype=DTYPES[datatype]).tobytes()


@overload
def to_column(values: list[bytes], where: str) -> list[Any]: ...
@overload
def to_column(values: np.ndarray | list[bytes], where: str) -> list[Any] | np.ndarray: ...
def to_column(values: np.ndarray | list[bytes], where: str) -> list[Any] | np.ndarray:
    """Decoded elements as a column's values: an int64 or float64 array for numbers, a list of bools or text (UTF-8).

    A numeric tensor stays an array, as :func:`~rung.serving.protocols.check_columns`
    makes JSON's numbers: int64 for integers, float64 for floats (a float16,
    bfloat16 or float32 is exact in float64), NaN a missing value as ``null``
    is in JSON; a ``UINT64`` beyond int64 and ``BOOL`` are plain Python values
    (one ``tolist``, a C loop), as JSON gives them. Whether the column's kind
    fits the model's signature is :func:`~rung.serving.protocols.check_columns`'s
    to say, naming the column.
    """
    if isinstance(values, list):
        try:
            return list(map(bytes.decode, values))  # UTF-8
        except UnicodeDecodeError as exc:
            raise InputError(f"{where}: a BYTES element is not UTF-8 text ({exc.reason})", field=f"{where}.data") from None
    kind = values.dtype.kind
    if kind == "f":
        return values.astype(np.float64)
    if kind == "i" or (kind == "u" and (values.dtype.itemsize < 8 or not values.size or values.max() <= _INT64_MAX)):
        return values.astype(np.int64)
    out: list[Any] = values.tolist()
    return out
