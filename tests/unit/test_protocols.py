"""rung.serving.protocols: MLflow, KServe v1 and CSV bodies to checked columns, errors naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from rung.errors import InputError, RequestInvalid
from rung.models.signature import Column
from rung.serving.protocols import check_columns, parse_csv, parse_kserve, parse_mlflow, to_jsonable

COLUMNS = [Column("age", "long"), Column("income", "double"), Column("plan", "string")]
ROWS = [{"age": 30, "income": 1.5, "plan": "a"}, {"age": 40, "income": 2.5, "plan": "b"}]
EXPECTED = {"age": [30, 40], "income": [1.5, 2.5], "plan": ["a", "b"]}


def plain(columns: dict) -> dict:
    """Checked columns as the values a client sent: arrays as lists, NaN as None."""
    return {name: to_jsonable(v) if isinstance(v, np.ndarray) else v for name, v in columns.items()}


def checked(parsed: tuple[dict, int]) -> tuple[dict, int]:
    columns, rows = parsed
    return plain(check_columns(columns, COLUMNS)), rows


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": ["age", "income", "plan"], "data": [[30, 1.5, "a"], [40, 2.5, "b"]]}},
        {"dataframe_records": ROWS},
        {"instances": ROWS},
        {"instances": [[30, 1.5, "a"], [40, 2.5, "b"]]},
        {"inputs": {"age": [30, 40], "income": [1.5, 2.5], "plan": ["a", "b"]}},
    ],
)
def test_every_mlflow_layout_gives_the_same_columns(body: dict) -> None:
    assert checked(parse_mlflow(body, COLUMNS)) == (EXPECTED, 2)


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_records": [row | {"zip": "x", "id": i} for i, row in enumerate(ROWS)]},
        {"dataframe_split": {"columns": ["id", "age", "income", "plan"], "data": [[7, 30, 1.5, "a"], [8, 40, 2.5, "b"]]}},
        {"inputs": EXPECTED | {"zip": [{"nested": 1}, None]}},
    ],
)
def test_columns_the_model_does_not_take_are_left_out(body: dict) -> None:
    """A request may carry a whole record: the model gets its own columns, in its order, whatever the extras hold."""
    columns, rows = checked(parse_mlflow(body, COLUMNS))
    assert (columns, rows) == (EXPECTED, 2) and list(columns) == ["age", "income", "plan"]


def test_a_missing_column_is_named_with_what_the_model_takes() -> None:
    with pytest.raises(InputError) as info:
        checked(parse_mlflow({"dataframe_records": [{"age": 1, "plan": "a", "zip": 1}]}, COLUMNS))
    assert info.value.field == "income" and "the model takes age, income, plan" in str(info.value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dataframe_records": [{"age": "x", "income": 1.0, "plan": "a"}]}, "age"),
        ({"dataframe_records": [{"age": 1, "income": 1.0, "plan": 3}]}, "plan"),
        ({"dataframe_records": [{"age": 1, "income": 1.0}]}, "plan"),
        ({"dataframe_records": [{"age": 1, "income": 1.0, "zip": 1}]}, "plan"),
        ({"dataframe_records": [{"age": True, "income": 1.0, "plan": "a"}]}, "age"),
        ({"dataframe_records": []}, "inputs"),
        ({"dataframe_records": ROWS, "instances": ROWS}, "body"),
        ({"instances": [[1, 2]]}, "instances[0]"),
        ({"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}}, "dataframe_split.data[0]"),
        ({"dataframe_split": {"columns": ["age", "income", "plan"], "data": [[1, 2.0, "a"], "abc"]}}, "dataframe_split.data[1]"),
        ({"dataframe_split": {"columns": ["age", "income", "plan"], "data": [[1, 2.0, "a"], [1, [2.0], "a"]]}}, "income"),
        ({"inputs": {"age": [1, 2], "income": [1.0], "plan": ["a"]}}, "inputs"),
    ],
)
def test_mlflow_errors_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(InputError) as info:
        checked(parse_mlflow(body, COLUMNS))
    assert info.value.field == field


@pytest.mark.parametrize(
    "body",
    [
        {"instances": ROWS},
        {"instances": [[30, 1.5, "a"], [40, 2.5, "b"]]},
        {"instances": [row | {"id": 7} for row in ROWS]},
        {"inputs": {"age": [30, 40], "income": [1.5, 2.5], "plan": ["a", "b"]}},
        {"inputs": ROWS},
    ],
)
def test_kserve_v1_reads_records_and_columns_as_mlflow_does(body: dict) -> None:
    assert checked(parse_kserve(body, COLUMNS)) == checked(parse_mlflow(body, COLUMNS)) == (EXPECTED, 2)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([ROWS], "body"),
        ({}, "body"),
        ({"instances": ROWS, "inputs": ROWS}, "body"),
        ({"dataframe_records": ROWS}, "body"),  # MLflow's, not KServe's
        ({"instances": []}, "inputs"),
        ({"instances": "x"}, "instances"),
        ({"instances": [[1, 2]]}, "instances[0]"),
        ({"instances": [ROWS[0], {"age": 1, "income": 2.0}]}, "plan"),
        ({"inputs": {"age": [1, 2], "income": [1.0], "plan": ["a"]}}, "inputs"),
    ],
)
def test_kserve_v1_errors_name_the_field(body: object, field: str) -> None:
    with pytest.raises(InputError) as info:
        checked(parse_kserve(body, COLUMNS))
    assert info.value.field == field


def test_numeric_columns_become_one_array_of_the_dtype_pandas_gives_the_list() -> None:
    """int64 when every value is an integer, else float64 with NaN for null; what pandas makes of the same list."""
    import pandas as pd

    signature = [Column("n", "long"), Column("x", "double"), Column("y", "double"), Column("m", "long"), Column("ok", "boolean"),
                 Column("t", "string")]
    sent = {"n": [1, 2], "x": [1, 2.5], "y": [None, 2.5], "m": [None, 3], "ok": [True, False], "t": ["a", None]}
    columns = check_columns(sent, signature)
    for name in ("n", "x", "y"):
        assert isinstance(columns[name], np.ndarray)
        assert columns[name].dtype == pd.to_numeric(pd.Series(sent[name])).dtype
    assert columns["n"].tolist() == [1, 2] and np.isnan(columns["y"][0]) and columns["y"][1] == 2.5
    assert columns["m"] == [None, 3]  # integers with a missing value: left to pandas and Arrow, as they were
    assert columns["ok"] == [True, False] and columns["t"] == ["a", None]  # booleans and text stay lists
    assert check_columns({"n": [2**70]}, [Column("n", "long")])["n"] == [2**70]  # beyond int64: left to pandas
    assert check_columns({"x": [np.float64(1.5)]}, [Column("x", "double")])["x"] == [1.5]  # a float subclass: checked


def test_array_columns_are_checked_as_lists_are() -> None:
    array = np.array([30, 40])
    assert check_columns({"age": array}, [Column("age", "long")])["age"] is array
    for values, column, fragment in [(np.array([True, False]), Column("age", "long"), "expected a number, got True"),
                                     (np.array([30, 40]), Column("plan", "string"), "expected text, got 30"),
                                     (np.array(["a"]), Column("age", "long"), "expected a number, got 'a'")]:
        with pytest.raises(InputError) as info:
            check_columns({column.name: values}, [column])
        assert info.value.field == column.name and fragment in str(info.value)
    assert check_columns({"ok": np.array([True])}, [Column("ok", "boolean")])["ok"] == [True]


def test_to_jsonable_gives_plain_values_and_nan_as_null() -> None:
    assert to_jsonable(np.array([0.5, np.nan])) == [0.5, None]
    assert to_jsonable(np.array([1, 2])) == [1, 2] and to_jsonable(np.array(["a"])) == ["a"]
    assert to_jsonable([1.0, float("nan")]) == [1.0, None]


def test_csv_reads_cells_as_the_signature_says() -> None:
    body = "\ufeffid,age,income,plan,flag\n7,30,1.5,a,x\n8,40,2.5,b,\n".encode()
    columns, rows = parse_csv(body, COLUMNS)
    assert rows == 2 and columns["id"] == ["7", "8"] and columns["flag"] == ["x", None]  # not the model's: text
    assert plain(check_columns(columns, COLUMNS)) == EXPECTED


def test_csv_empty_and_na_cells_are_missing_where_the_model_takes_numbers() -> None:
    columns, _ = parse_csv(b",age,income,plan\n0,,NaN,\n1,3.0,NA,NA\n", COLUMNS)  # with DataFrame.to_csv()'s index
    assert plain(check_columns(columns, COLUMNS)) == {"age": [None, 3.0], "income": [None, None], "plan": [None, "NA"]}
    assert parse_csv(b"ok,n\ntrue,1\nFALSE,\n", [Column("ok", "boolean"), Column("n", "long")])[0] == {
        "ok": [True, False], "n": [1, None]}
    assert parse_csv(b"a,b\n1,x\n2.5,y\n", [])[0] == {"a": [1, 2.5], "b": ["x", "y"]}  # no signature: guessed


@pytest.mark.parametrize(
    ("body", "error", "field", "fragment"),
    [
        (b"", RequestInvalid, "body", "empty"),
        (b"\n\n", RequestInvalid, "body", "empty"),
        (b"age,income,plan\n1,2\n", RequestInvalid, "body", "line 2 has 2 values; the header has 3"),
        (b"age,income,plan\n1,2,\xff\n", RequestInvalid, "body", "not UTF-8"),
        (b'age,income,plan\n1,2,"a\n', RequestInvalid, "body", "cannot be read"),
        (b"age,age,plan\n1,2,a\n", RequestInvalid, "body", "appears twice"),
        (b",\n1,2\n", RequestInvalid, "body", "names no columns"),
        (b"age,income,plan\n", InputError, "inputs", "no rows"),
        (b"30,1.5,a\n40,2.5,b\n", InputError, "age", "must be the header"),
        (b"age,income,plan\n1,2,a\nold,2,a\n", InputError, "age", "expected a number, got 'old' (CSV line 3)"),
        (b"age,plan\n1,a\n", InputError, "income", "missing input column 'income'"),
    ],
)
def test_bad_csv_says_what_is_wrong(body: bytes, error: type[Exception], field: str, fragment: str) -> None:
    with pytest.raises(error) as info:
        columns, _ = parse_csv(body, COLUMNS)
        check_columns(columns, COLUMNS)
    assert type(info.value) is error and info.value.field == field and fragment in str(info.value)  # type: ignore[attr-defined]


def test_any_csv_body_is_read_or_refused_as_bad_input() -> None:
    """Whatever the bytes, parsing and checking a CSV body ends in columns or a 4xx error, never another exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    cell = st.one_of(st.sampled_from(["", "1", "-2.5", "NaN", "NA", "true", "x", '"q"', "age", "plan", "1e309"]), st.text(max_size=5))
    row = st.lists(cell, min_size=0, max_size=5).map(",".join)
    text = st.lists(row, max_size=6).map("\n".join).map(str.encode)

    @given(body=st.one_of(text, st.binary(max_size=60)))
    @settings(max_examples=400, deadline=None, database=None)
    def parse(body: bytes) -> None:
        for signature in (COLUMNS, [Column("ok", "boolean")], []):
            try:
                columns, _ = parse_csv(body, signature)
                check_columns(columns, signature)
            except RequestInvalid:
                pass

    parse()
