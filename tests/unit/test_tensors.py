"""rung.serving.tensors: OIP tensors as bytes, both ways, and every refusal naming the tensor's field."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from rung.errors import InputError
from rung.serving.tensors import DTYPES, OIP_TYPES, datatype_of, decode, element_count, encode, to_column


@pytest.mark.parametrize("datatype", sorted(DTYPES))
def test_every_numeric_datatype_round_trips(datatype: str) -> None:
    dtype = DTYPES[datatype]
    values = np.array([0, 1, 0, 1, 1, 0], dtype=dtype) if datatype == "BOOL" else np.arange(6).astype(dtype) * 3
    name, raw = encode(values)
    assert name == datatype and len(raw) == 6 * dtype.itemsize and raw == values.astype(dtype.newbyteorder("<")).tobytes()
    back = decode(datatype, [2, 3], raw, "inputs[0]")
    assert isinstance(back, np.ndarray) and back.dtype == dtype and back.tolist() == values.tolist()


def test_bytes_are_length_prefixed_and_decode_to_text() -> None:
    name, raw = encode(np.array(["", "ja", "žluť", "a b"], dtype=object))
    assert name == "BYTES"
    assert raw == b"".join(struct.pack("<I", len(v)) + v for v in (b"", b"ja", "žluť".encode(), b"a b"))
    assert decode("BYTES", [4], raw, "inputs[2]") == [b"", b"ja", "žluť".encode(), b"a b"]
    assert to_column(decode("BYTES", [2, 2], raw, "inputs[2]"), "inputs[2]") == ["", "ja", "žluť", "a b"]
    assert encode([b"\xff", "x"])[1] == b"\x01\x00\x00\x00\xff\x01\x00\x00\x00x"  # bytes kept as they are
    assert encode([b"a\x00"]) == ("BYTES", b"\x02\x00\x00\x00a\x00")  # a trailing NUL too


def test_bf16_keeps_the_high_half_of_a_float32() -> None:
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)  # exact in bfloat16
    name, raw = encode(values, "BF16")
    assert name == "BF16" and len(raw) == 6
    assert decode("BF16", [3], raw, "x").tolist() == values.tolist()


def test_an_asked_datatype_converts_and_a_strided_array_is_packed() -> None:
    assert encode(np.array([1, 2, 3]), "FP32") == ("FP32", np.array([1, 2, 3], "<f4").tobytes())
    matrix = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert decode("INT64", [3], encode(matrix[:, 1])[1], "x").tolist() == [1, 5, 9]
    big = np.array([1, 2], dtype=">i4")  # big-endian in, little-endian out
    assert encode(big)[1] == b"\x01\x00\x00\x00\x02\x00\x00\x00"


@pytest.mark.parametrize(
    ("values", "datatype"),
    [
        (np.array([True]), "BOOL"), (np.array([1], np.int8), "INT8"), (np.array([1], np.int32), "INT32"),
        (np.array([1]), "INT64"), (np.array([1], np.uint16), "UINT16"), (np.array([1.0], np.float16), "FP16"),
        (np.array([1.0], np.float32), "FP32"), (np.array([1.0]), "FP64"), (np.array(["a"]), "BYTES"),
        (np.array([b"a"]), "BYTES"), (np.array(["a", 1], dtype=object), "BYTES"), ([1, 2], "INT64"), ([0.5], "FP64"),
        (["x"], "BYTES"), (np.array([1.0], np.longdouble), "FP64"),
    ],
)
def test_datatype_of_carries_the_values_without_loss(values: object, datatype: str) -> None:
    assert datatype_of(values) == datatype
    assert datatype in OIP_TYPES


def test_a_long_double_is_sent_as_fp64() -> None:
    values = np.array([0.25, 1.5], dtype=np.longdouble)
    name, raw = encode(values)
    assert name == "FP64" and decode("FP64", [2], raw, "x").tolist() == [0.25, 1.5]


def test_to_column_gives_int64_and_float64_arrays_and_plain_bools() -> None:
    floats = to_column(np.array([1.5, np.nan, 2.0]), "x")
    assert isinstance(floats, np.ndarray) and floats.dtype == np.float64 and np.array_equal(floats, [1.5, np.nan, 2.0], equal_nan=True)
    ints = to_column(np.array([3, 4], np.int32), "x")
    assert isinstance(ints, np.ndarray) and ints.dtype == np.int64 and ints.tolist() == [3, 4]
    single = to_column(np.array([1.1, np.nan], np.float32), "x")
    assert single.dtype == np.float64 and single[0] == float(np.float32(1.1))  # exact: float32 widens without loss
    assert to_column(np.array([True, False]), "x") == [True, False]
    assert to_column(np.array([2**64 - 1], np.uint64), "x") == [2**64 - 1]  # beyond int64: Python ints
    assert to_column(np.array([7], np.uint64), "x").dtype == np.int64


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "field", "fragment"),
    [
        ("FP64", [2], b"\x00" * 15, "inputs[1].data", "2 FP64 elements need 16 bytes, got 15"),
        ("FP64", [2], b"\x00" * 17, "inputs[1].data", "need 16 bytes, got 17"),
        ("INT32", [2, 2], b"\x00" * 8, "inputs[1].data", "4 INT32 elements need 16 bytes"),
        ("BF16", [2], b"\x00" * 3, "inputs[1].data", "need 4 bytes, got 3"),
        ("BOOL", [3], b"\x00\x02\x01", "inputs[1].data", "0 or 1"),
        ("FP65", [1], b"\x00" * 8, "inputs[1].datatype", "'FP65' is not an OIP v2 datatype"),
        ("FP64", [-1], b"", "inputs[1].shape", "non-negative integers"),
        ("FP64", [1.5], b"", "inputs[1].shape", "non-negative integers"),
        ("FP64", [True], b"", "inputs[1].shape", "non-negative integers"),
        ("BYTES", [2], struct.pack("<I", 1) + b"a" + b"\x01\x00", "inputs[1].data", "element 1 has no 4-byte length prefix"),
        ("BYTES", [1], struct.pack("<I", 5) + b"abc", "inputs[1].data", "element 0 says 5 bytes, 3 are left"),
        ("BYTES", [1], struct.pack("<I", 1) + b"ab", "inputs[1].data", "1 bytes left after 1 BYTES elements"),
        ("BYTES", [0], b"\x00", "inputs[1].data", "left after 0 BYTES elements"),
    ],
)
def test_bytes_that_do_not_fit_the_tensor_are_refused(datatype: str, shape: list, raw: bytes, field: str, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        decode(datatype, shape, raw, "inputs[1]")
    assert caught.value.field == field and fragment in str(caught.value)


def test_bytes_that_are_not_utf8_are_refused_as_text() -> None:
    with pytest.raises(InputError) as caught:
        to_column(decode("BYTES", [1], struct.pack("<I", 2) + b"\xff\xfe", "inputs[3]"), "inputs[3]")
    assert caught.value.field == "inputs[3].data" and "not UTF-8" in str(caught.value)


def test_element_count() -> None:
    assert element_count([3, 4], "x") == 12 and element_count([0, 5], "x") == 0 and element_count([], "x") == 1
    with pytest.raises(InputError):
        element_count("3", "x")  # type: ignore[arg-type]


def test_any_bytes_decode_or_are_refused_as_bad_input() -> None:
    """Whatever the bytes, datatype and shape, decoding gives the elements or an InputError, never another exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @given(datatype=st.sampled_from(sorted(OIP_TYPES) + ["INT3", ""]), shape=st.lists(st.integers(-1, 5), max_size=3),
           raw=st.binary(max_size=64))
    @settings(max_examples=600, deadline=None, database=None)
    def check(datatype: str, shape: list[int], raw: bytes) -> None:
        try:
            values = decode(datatype, shape, raw, "inputs[0]")
            column = to_column(values, "inputs[0]")
        except InputError:
            return
        assert len(column) == element_count(shape, "inputs[0]")

    check()
