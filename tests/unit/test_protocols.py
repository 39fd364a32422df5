"""rung.serving.protocols: OIP v2 and MLflow bodies to checked columns, errors naming the field."""

from __future__ import annotations

import pytest

from rung.errors import InputError
from rung.models.signature import Column
from rung.serving.protocols import check_columns, oip_outputs, parse_mlflow, parse_oip

COLUMNS = [Column("age", "long"), Column("income", "double"), Column("plan", "string")]
ROWS = [{"age": 30, "income": 1.5, "plan": "a"}, {"age": 40, "income": 2.5, "plan": "b"}]
EXPECTED = {"age": [30, 40], "income": [1.5, 2.5], "plan": ["a", "b"]}


def checked(parsed: tuple[dict, int]) -> tuple[dict, int]:
    columns, rows = parsed
    return check_columns(columns, COLUMNS), rows


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


def test_oip_column_tensors_and_one_matrix_agree() -> None:
    per_column = {"inputs": [
        {"name": "age", "shape": [2], "datatype": "INT64", "data": [30, 40]},
        {"name": "income", "shape": [2, 1], "datatype": "FP64", "data": [[1.5], [2.5]]},
        {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
    ]}
    matrix = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "BYTES", "data": [[30, 1.5, "a"], [40, 2.5, "b"]]}]}
    assert checked(parse_oip(per_column, COLUMNS)) == checked(parse_oip(matrix, COLUMNS)) == (EXPECTED, 2)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dataframe_records": [{"age": "x", "income": 1.0, "plan": "a"}]}, "age"),
        ({"dataframe_records": [{"age": 1, "income": 1.0, "plan": 3}]}, "plan"),
        ({"dataframe_records": [{"age": 1, "income": 1.0}]}, "plan"),
        ({"dataframe_records": [{"age": 1, "income": 1.0, "plan": "a", "zip": 1}]}, "zip"),
        ({"dataframe_records": [{"age": True, "income": 1.0, "plan": "a"}]}, "age"),
        ({"dataframe_records": []}, "inputs"),
        ({"dataframe_records": ROWS, "instances": ROWS}, "body"),
        ({"instances": [[1, 2]]}, "instances[0]"),
        ({"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}}, "dataframe_split.data[0]"),
        ({"inputs": {"age": [1, 2], "income": [1.0], "plan": ["a"]}}, "inputs"),
    ],
)
def test_mlflow_errors_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(InputError) as info:
        checked(parse_mlflow(body, COLUMNS))
    assert info.value.field == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "inputs"),
        ({"inputs": "x"}, "inputs"),
        ({"inputs": [{"shape": [1], "datatype": "FP64", "data": [1]}]}, "inputs[0].name"),
        ({"inputs": [{"name": "age", "shape": [-1], "datatype": "INT64", "data": [1]}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "age", "shape": [1], "datatype": "INT", "data": [1]}]}, "inputs[0].datatype"),
        ({"inputs": [{"name": "age", "shape": [3], "datatype": "INT64", "data": [1]}]}, "inputs[0].data"),
        ({"inputs": [{"name": "age", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}, "inputs[0].shape"),
    ],
)
def test_oip_errors_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(InputError) as info:
        checked(parse_oip(body, COLUMNS))
    assert info.value.field == field


def test_oip_outputs_carry_types_and_shapes() -> None:
    import numpy as np

    out = {o["name"]: o for o in oip_outputs({"predict": np.array([0, 1]), "proba": np.array([0.1, float("nan")])})}
    assert out["predict"] == {"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 1]}
    assert out["proba"]["datatype"] == "FP64" and out["proba"]["data"] == [0.1, None]
