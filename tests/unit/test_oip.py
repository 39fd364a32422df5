"""rung.serving.oip: OIP v2 REST bodies, JSON and binary, to checked columns; answers with requested outputs."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from rung.errors import InputError, RequestInvalid
from rung.models.signature import Column
from rung.serving.oip import Asked, asked_outputs, infer_body, parse_oip, requested_outputs, split_body
from rung.serving.protocols import check_columns, to_jsonable
from rung.serving.tensors import encode

COLUMNS = [Column("age", "long"), Column("income", "double"), Column("plan", "string")]
EXPECTED = {"age": [30, 40], "income": [1.5, 2.5], "plan": ["a", "b"]}
PER_COLUMN = {"inputs": [
    {"name": "age", "shape": [2], "datatype": "INT64", "data": [30, 40]},
    {"name": "income", "shape": [2, 1], "datatype": "FP64", "data": [[1.5], [2.5]]},
    {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
]}


def plain(columns: dict) -> dict:
    """Columns as the values a client sent: arrays as lists, NaN as None."""
    return {name: to_jsonable(v) if isinstance(v, np.ndarray) else v for name, v in columns.items()}


def checked(parsed: tuple[dict, int]) -> tuple[dict, int]:
    columns, rows = parsed
    return plain(check_columns(columns, COLUMNS)), rows


def binary(header: dict[str, Any], *tensors: tuple[str, list[int], Any]) -> tuple[bytes, str]:
    """A body under the binary extension: ``header``'s inputs plus one binary input per ``(name, shape, values)``."""
    parts = []
    inputs = list(header.get("inputs", []))
    for name, shape, values in tensors:
        datatype, raw = encode(values)
        inputs.append({"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": len(raw)}})
        parts.append(raw)
    head = json.dumps(header | {"inputs": inputs}).encode()
    return head + b"".join(parts), str(len(head))


def parse(content: bytes, length: str | None) -> tuple[dict, int]:
    body, blob = split_body(content, length)
    return checked(parse_oip(body, COLUMNS, blob))


def test_oip_column_tensors_and_one_matrix_agree() -> None:
    matrix = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "BYTES", "data": [[30, 1.5, "a"], [40, 2.5, "b"]]}]}
    assert checked(parse_oip(PER_COLUMN, COLUMNS)) == checked(parse_oip(matrix, COLUMNS)) == (EXPECTED, 2)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "inputs"),
        ({"inputs": "x"}, "inputs"),
        ({"inputs": [{"shape": [1], "datatype": "FP64", "data": [1]}]}, "inputs[0].name"),
        ({"inputs": [{"name": "age", "shape": [-1], "datatype": "INT64", "data": [1]}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "age", "shape": [], "datatype": "INT64", "data": [1]}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "age", "shape": [1], "datatype": "INT", "data": [1]}]}, "inputs[0].datatype"),
        ({"inputs": [{"name": "age", "shape": [3], "datatype": "INT64", "data": [1]}]}, "inputs[0].data"),
        ({"inputs": [{"name": "age", "shape": [1], "datatype": "INT64"}]}, "inputs[0].data"),
        ({"inputs": [{"name": "age", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": [1]},
                     {"name": "zip", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}, "inputs[1].shape"),
        ({"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": 8}}]},
         "inputs[0].parameters.binary_data_size"),  # binary, but no binary part
        ({"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": [1], "parameters": []}]},
         "inputs[0].parameters"),
    ],
)
def test_oip_errors_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(InputError) as info:
        checked(parse_oip(body, COLUMNS))
    assert info.value.field == field


def test_binary_tensors_give_the_columns_json_gives() -> None:
    content, length = binary({}, ("age", [2], np.array([30, 40])), ("income", [2, 1], np.array([1.5, 2.5])),
                             ("plan", [2], np.array(["a", "b"], dtype=object)))
    assert parse(content, length) == (EXPECTED, 2)
    narrow, length = binary({}, ("age", [2], np.array([30, 40], np.int32)), ("income", [2], np.array([1.5, 2.5], np.float32)),
                            ("plan", [2], ["a", "b"]))
    assert parse(narrow, length) == (EXPECTED, 2)  # 1.5 and 2.5 are exact in float32
    mixed, length = binary({"inputs": [{"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]},
                           ("age", [2], np.array([30, 40])), ("income", [2], np.array([1.5, 2.5])))
    assert parse(mixed, length) == (EXPECTED, 2)
    matrix, length = binary({}, ("x", [2, 3], np.array([[30, 1.5, 7], [40, 2.5, 8]])))
    columns, rows = parse_oip(*split_body(matrix, length)[:1], COLUMNS, split_body(matrix, length)[1])
    assert rows == 2 and plain(columns) == {"age": [30.0, 40.0], "income": [1.5, 2.5], "plan": [7.0, 8.0]}


def test_binary_numbers_stay_arrays_that_the_check_passes_on() -> None:
    content, length = binary({}, ("age", [2], np.array([30, 40], np.int32)), ("income", [2], np.array([np.nan, 2.5], np.float32)),
                             ("plan", [2], ["a", "b"]))
    body, blob = split_body(content, length)
    columns = check_columns(parse_oip(body, COLUMNS, blob)[0], COLUMNS)
    assert columns["age"].dtype == np.int64 and columns["income"].dtype == np.float64 and columns["plan"] == ["a", "b"]
    wrong, length = binary({}, ("age", [2], np.array([30, 40])), ("income", [2], np.array([1.5, 2.5])), ("plan", [2], np.array([1, 2])))
    with pytest.raises(InputError) as info:
        parse(wrong, length)
    assert info.value.field == "plan" and "expected text, got 1" in str(info.value)


def test_a_nan_sent_as_binary_is_a_missing_value() -> None:
    content, length = binary({}, ("age", [2], np.array([30, 40])), ("income", [2], np.array([np.nan, 2.5])), ("plan", [2], ["a", "b"]))
    assert parse(content, length)[0]["income"] == [None, 2.5]


def test_a_body_without_the_header_is_all_json() -> None:
    assert split_body(b'{"inputs": []}', None) == ({"inputs": []}, None)
    body, blob = split_body(b'{"a": 1}xyz', "8")
    assert body == {"a": 1} and bytes(blob) == b"xyz"  # type: ignore[arg-type]
    assert bytes(split_body(b'{"a": 1}', "8")[1]) == b""  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("content", "length", "field", "fragment"),
    [
        (b'{"a": 1}', "x", "inference-header-content-length", "expected the JSON header's length in bytes, got 'x'"),
        (b'{"a": 1}', "-1", "inference-header-content-length", "got '-1'"),
        (b'{"a": 1}', "٣", "inference-header-content-length", "expected the JSON header's length"),
        (b'{"a": 1}', "9", "inference-header-content-length", "is 9, but the body has only 8 bytes"),
        (b'{"a": 1}', "5", "inference-header-content-length", "the first 5 bytes (Inference-Header-Content-Length) are not valid JSON"),
        (b'{"a": 1}xyz', "11", "inference-header-content-length", "not valid JSON"),
        (b'{"a": 1', None, "body", "the body is not valid JSON"),
    ],
)
def test_a_body_that_cannot_be_split_says_why(content: bytes, length: str | None, field: str, fragment: str) -> None:
    with pytest.raises(RequestInvalid) as info:
        split_body(content, length)
    assert type(info.value) is RequestInvalid and info.value.field == field and fragment in str(info.value)


def _refused(content: bytes, length: str) -> InputError:
    with pytest.raises(InputError) as info:
        parse(content, length)
    return info.value


def test_binary_sizes_that_do_not_add_up_are_named() -> None:
    content, length = binary({}, ("age", [2], np.array([30, 40])), ("income", [2], np.array([1.5, 2.5])), ("plan", [2], ["a", "b"]))
    extra = _refused(content + b"\x00", length)
    assert extra.field == "inputs[2].parameters.binary_data_size" and "has 43 bytes" in str(extra)
    short = _refused(content[:-1], length)
    assert short.field == "inputs[2].parameters.binary_data_size" and "binary part has 9 left" in str(short)
    head = json.loads(content[:int(length)])
    head["inputs"][0]["parameters"]["binary_data_size"] = 12  # the next tensor's first bytes taken as its own
    moved = json.dumps(head).encode()
    assert _refused(moved + content[int(length):], str(len(moved))).field == "inputs[0].data"
    head["inputs"][0]["parameters"]["binary_data_size"] = "16"
    typed = json.dumps(head).encode()
    assert _refused(typed + content[int(length):], str(len(typed))).field == "inputs[0].parameters.binary_data_size"
    both = json.dumps({"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": [1],
                                   "parameters": {"binary_data_size": 8}}]}).encode()
    assert _refused(both + b"\x00" * 8, str(len(both))).field == "inputs[0].data"
    only_json = json.dumps(PER_COLUMN).encode()
    assert _refused(only_json + b"\x00", str(len(only_json))).field == "inference-header-content-length"


def test_asked_outputs_and_their_binary_flags() -> None:
    assert asked_outputs({"inputs": []}) == Asked([], {}, False)
    assert asked_outputs({"parameters": {"binary_data_output": True}}) == Asked([], {}, True)
    asked = asked_outputs({"parameters": {"binary_data_output": True},
                           "outputs": [{"name": "proba", "parameters": {"binary_data": False}}, {"name": "predict"}]})
    assert asked.names == ["proba", "predict"] and not asked.is_binary("proba") and asked.is_binary("predict")
    assert asked_outputs({"outputs": [{"name": "p", "parameters": {"binary_data": True}}]}).is_binary("p")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"parameters": "x"}, "parameters"),
        ({"parameters": {"binary_data_output": 1}}, "parameters.binary_data_output"),
        ({"outputs": {"name": "x"}}, "outputs"),
        ({"outputs": ["predict"]}, "outputs[0]"),
        ({"outputs": [{"name": "predict"}, {"name": ""}]}, "outputs[1].name"),
        ({"outputs": [{"name": "predict", "parameters": 3}]}, "outputs[0].parameters"),
        ({"outputs": [{"name": "predict", "parameters": {"binary_data": "true"}}]}, "outputs[0].parameters.binary_data"),
        ({"outputs": [{"name": "predict", "parameters": {"classification": 2}}]}, "outputs[0].parameters.classification"),
    ],
)
def test_bad_outputs_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(InputError) as info:
        asked_outputs(body)
    assert info.value.field == field


OUTPUTS = {"predict": np.array([0, 1]), "proba": np.array([0.25, float("nan")])}
HEAD = {"model_name": "m", "model_version": "1", "id": "r", "parameters": {"variant": "champion"}}


def test_json_outputs_carry_types_and_shapes() -> None:
    content, length = infer_body(HEAD, OUTPUTS, Asked([], {}))
    assert length is None
    body = json.loads(content)
    assert body["model_name"] == "m" and body["id"] == "r" and body["parameters"] == {"variant": "champion"}
    assert body["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 1]},
                               {"name": "proba", "datatype": "FP64", "shape": [2], "data": [0.25, None]}]


def test_output_datatypes_follow_the_arrays() -> None:
    outputs = {"predict": np.array(["yes", "no"]), "proba": np.array([0.5, 0.25], np.float32),
               "n": np.array([1, 2], np.int32), "o": np.array(["x", 3], dtype=object)}
    listed = {o["name"]: (o["datatype"], o["data"]) for o in json.loads(infer_body(HEAD, outputs, Asked([], {}))[0])["outputs"]}
    assert listed == {"predict": ("BYTES", ["yes", "no"]), "proba": ("FP32", [0.5, 0.25]), "n": ("INT32", [1, 2]),
                      "o": ("BYTES", ["x", "3"])}


def test_json_numbers_are_written_as_their_python_values_are() -> None:
    """Whole arrays to orjson give the digits tolist() gives: float32 as its float64 value, a column of a matrix too."""
    proba = np.array([[0.9, 0.1], [1 / 3, 2 / 3], [np.nan, np.nan]])
    outputs = {"predict": np.array([True, False, True]), "proba": proba[:, 1], "single": np.array([1.1], np.float32),
               "wide": np.array([2**63 - 1, -(2**63)]), "small": np.array([5e-324, 1e300, -0.0])}
    content, _ = infer_body(HEAD, outputs, Asked([], {}))
    data = {o["name"]: o["data"] for o in json.loads(content)["outputs"]}
    assert data == {"predict": [True, False, True], "proba": [0.1, 2 / 3, None], "single": [1.100000023841858],
                    "wide": [2**63 - 1, -(2**63)], "small": [5e-324, 1e300, -0.0]}
    assert b'"data":[1.100000023841858]' in content


def test_binary_outputs_follow_the_json_in_order() -> None:
    outputs = {"predict": np.array(["yes", "no"]), "proba": np.array([0.25, 0.5])}
    content, length = infer_body(HEAD, outputs, Asked(["proba", "predict"], {"predict": True}, True))
    assert length is not None
    body = json.loads(content[:length])
    assert body["outputs"] == [
        {"name": "proba", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 16}},
        {"name": "predict", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 13}},
    ]
    assert content[length:] == np.array([0.25, 0.5]).tobytes() + struct.pack("<I", 3) + b"yes" + struct.pack("<I", 2) + b"no"
    one, length = infer_body(HEAD, outputs, Asked(["predict"], {"predict": False}, True))
    assert length is None and [o["name"] for o in json.loads(one)["outputs"]] == ["predict"]


def test_an_unknown_output_is_named_with_what_the_model_gives() -> None:
    with pytest.raises(InputError) as info:
        requested_outputs(["proba", "label"], OUTPUTS)
    assert info.value.field == "outputs[1].name" and "no output 'label'; it gives predict, proba" in str(info.value)
    assert list(requested_outputs(["proba"], OUTPUTS)) == ["proba"] and requested_outputs([], OUTPUTS) is OUTPUTS


def test_any_body_under_the_header_is_read_or_refused_as_bad_input() -> None:
    """Whatever the bytes and the header's value, a request is columns or a 4xx error, never another exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    good, length = binary({}, ("age", [1], np.array([30])), ("income", [1], np.array([1.5])), ("plan", [1], ["a"]))
    cut = st.integers(0, len(good))
    spoilt = st.one_of(st.binary(max_size=80), st.tuples(cut, st.binary(max_size=6), cut).map(
        lambda t: good[:t[0]] + t[1] + good[t[2]:]))

    @given(content=spoilt, header=st.one_of(st.just(length), st.integers(0, 120).map(str), st.text(max_size=4)))
    @settings(max_examples=500, deadline=None, database=None)
    def check(content: bytes, header: str) -> None:
        try:
            body, blob = split_body(content, header)
            asked_outputs(body)
            checked(parse_oip(body, COLUMNS, blob))
        except RequestInvalid:
            pass

    check()
