"""rung.data.validation: inferred schemas and every check, all failures reported together."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rung.config import ValidationSettings
from rung.data.validation import ValidationReport, infer_schema, validate_frame

N = 200


def clean_frame(n: int = N, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(50_000, 1_000, n),
            "region": rng.choice(["north", "south", "east"], n),
            "target": rng.integers(0, 2, n),
        }
    )


@pytest.fixture(scope="module")
def schema():
    return infer_schema(clean_frame())


SETTINGS = ValidationSettings(min_rows=100)


def failed(report: ValidationReport, column: str | None, name_part: str):
    matches = [c for c in report.failed if c.column == column and name_part in c.name]
    assert matches, f"no failed check {name_part!r} on {column!r} in {report.failed}"
    return matches[0]


def test_clean_frame_passes(schema) -> None:
    report = validate_frame(clean_frame(seed=1), schema, SETTINGS, target="target")
    assert report.ok, report.failed
    assert report.failed == []
    assert report.rows == N
    names = [(c.name, c.column) for c in report.checks]
    assert ("row count", None) in names
    assert ("target column present", "target") in names
    assert ("schema", None) in names
    assert ("duplicate rows", None) in names
    assert {c.column for c in report.checks if c.name == "missing rate"} == {"age", "income", "region", "target"}
    assert report.summary().startswith("0 of ")


def test_out_of_range_number(schema) -> None:
    frame = clean_frame(seed=1)
    frame.loc[7, "age"] = 500
    report = validate_frame(frame, schema, SETTINGS)
    assert not report.ok
    check = failed(report, "age", "in_range")
    assert check.failures == 1
    assert check.samples == [{"row": 7, "value": 500}]


def test_unseen_category(schema) -> None:
    frame = clean_frame(seed=1)
    frame.loc[3, "region"] = "mars"
    frame.loc[9, "region"] = "venus"
    report = validate_frame(frame, schema, SETTINGS)
    check = failed(report, "region", "isin")
    assert check.failures == 2
    assert {"row": 3, "value": "mars"} in check.samples
    assert {"row": 9, "value": "venus"} in check.samples
    assert [c.column for c in report.failed] == ["region"]


def test_too_many_missing_values() -> None:
    reference = clean_frame()
    reference.loc[:4, "income"] = np.nan  # the schema learns that income may be missing
    schema = infer_schema(reference)
    frame = clean_frame(seed=1)
    frame.loc[:29, "income"] = np.nan  # 30 of 200 = 15 %
    report = validate_frame(frame, schema, SETTINGS)
    assert [(c.name, c.column) for c in report.failed] == [("missing rate", "income")]
    check = report.failed[0]
    assert check.observed == pytest.approx(0.15)
    assert check.expected == "<= 0.05"


def test_per_column_missing_rate_overrides_the_default() -> None:
    reference = clean_frame()
    reference.loc[:4, "income"] = np.nan
    schema = infer_schema(reference)
    frame = clean_frame(seed=1)
    frame.loc[:29, "income"] = np.nan
    lenient = ValidationSettings(min_rows=100, missing_rate={"income": 0.2})
    assert validate_frame(frame, schema, lenient).ok
    strict = ValidationSettings(min_rows=100, missing_rate={"income": 0.1})
    assert not validate_frame(frame, schema, strict).ok


def test_missing_values_in_a_never_missing_column_break_the_schema(schema) -> None:
    frame = clean_frame(seed=1)
    frame["income"] = frame["income"].astype(float)
    frame.loc[[4, 5], "income"] = np.nan
    report = validate_frame(frame, schema, SETTINGS)
    check = failed(report, "income", "not_nullable")
    assert check.failures == 2
    assert [s["row"] for s in check.samples] == [4, 5]


def test_duplicate_rows(schema) -> None:
    frame = clean_frame(seed=1)
    frame = pd.concat([frame, frame.iloc[:6]], ignore_index=True)
    report = validate_frame(frame, schema, SETTINGS)
    check = failed(report, None, "duplicate rows")
    assert check.failures == 6
    assert check.observed == pytest.approx(round(6 / 206, 4))
    assert len(check.samples) == SETTINGS.sample_rows
    assert check.samples[0] == json.loads(json.dumps(frame.iloc[0].to_dict(), default=str))


def test_duplicate_rate_within_bound_passes(schema) -> None:
    frame = pd.concat([clean_frame(seed=1), clean_frame(seed=1).iloc[:1]], ignore_index=True)
    report = validate_frame(frame, schema, ValidationSettings(min_rows=100, max_duplicate_rate=0.01))
    assert report.ok


def test_too_few_rows(schema) -> None:
    report = validate_frame(clean_frame(n=20, seed=1), schema, SETTINGS)
    assert [(c.name, c.column) for c in report.failed] == [("row count", None)]
    check = report.failed[0]
    assert check.observed == 20
    assert check.expected == ">= 100"


def test_missing_target_column(schema) -> None:
    report = validate_frame(clean_frame(seed=1).drop(columns="target"), schema, SETTINGS, target="target")
    assert not report.ok
    assert any(c.name == "target column present" and c.column == "target" for c in report.failed)


def test_a_declared_slice_column_must_exist(schema) -> None:
    frame = clean_frame(seed=1)
    report = validate_frame(frame, schema, SETTINGS, target="target", slice_columns=["regoin"])
    assert [(c.name, c.column) for c in report.failed] == [("slice column present", "regoin")]
    assert validate_frame(frame, schema, SETTINGS, target="target", slice_columns=list(frame.columns[:1])).ok


def test_missing_schema_column_is_not_reported_as_nan(schema) -> None:
    report = validate_frame(clean_frame(seed=1).drop(columns="region"), schema, SETTINGS)
    check = next(c for c in report.failed if "column_in_dataframe" in c.name)
    assert check.column in (None, "region")


def test_all_failures_are_reported_at_once(schema) -> None:
    frame = clean_frame(seed=1)
    frame.loc[0, "age"] = 500
    frame.loc[1, "region"] = "mars"
    frame["income"] = frame["income"].astype(float)
    frame.loc[2:40, "income"] = np.nan
    frame = pd.concat([frame, frame.iloc[50:60]], ignore_index=True)
    settings = ValidationSettings(min_rows=1000, sample_rows=3)
    report = validate_frame(frame, schema, settings, target="target")
    failures = {(c.column, c.name.split("(")[0]) for c in report.failed}
    assert failures == {
        (None, "row count"),
        ("age", "in_range"),
        ("region", "isin"),
        ("income", "not_nullable"),
        ("income", "missing rate"),
        (None, "duplicate rows"),
    }
    for check in report.failed:
        assert len(check.samples) <= 3
        if check.name not in ("row count", "missing rate"):
            assert check.samples, check
    summary = report.summary()
    assert summary.startswith(f"6 of {len(report.checks)} data checks failed")
    assert "and 1 more" in summary
    as_dict = report.to_dict()
    assert as_dict["ok"] is False
    assert as_dict["rows"] == 210
    json.dumps(as_dict)  # samples are JSON-safe (numpy scalars, NaN)


def test_sample_rows_limits_samples(schema) -> None:
    frame = clean_frame(seed=1)
    frame.loc[:19, "age"] = 999
    report = validate_frame(frame, schema, ValidationSettings(min_rows=1, sample_rows=2))
    check = failed(report, "age", "in_range")
    assert check.failures == 20
    assert check.samples == [{"row": 0, "value": 999}, {"row": 1, "value": 999}]


# -- infer_schema -------------------------------------------------------------------------------


def test_infer_schema_widens_ranges_by_the_margin() -> None:
    frame = pd.DataFrame({"t": [10.0, 20.0, 30.0], "n": [-5, 0, 5]})
    schema = infer_schema(frame, margin=0.5)
    # span 20 -> [0, 40] for t (never below 0 for a never-negative column), [-10, 10] for n
    ok = pd.DataFrame({"t": [0.0, 40.0], "n": [-10, 10]})
    schema.validate(ok)
    settings = ValidationSettings(min_rows=0)
    report = validate_frame(pd.DataFrame({"t": [-0.5, 40.5], "n": [-11, 11]}), schema, settings)
    assert {c.column for c in report.failed} == {"t", "n"}
    assert {c.failures for c in report.failed} == {2}


def test_infer_schema_types_and_nullability() -> None:
    frame = pd.DataFrame(
        {"i": [1, 2, 3], "f": [1.0, None, 3.0], "b": [True, False, True], "s": ["a", "b", None]}
    )
    schema = infer_schema(frame)
    assert not schema.columns["i"].nullable
    assert schema.columns["f"].nullable
    assert schema.columns["s"].nullable
    assert "int" in str(schema.columns["i"].dtype)
    assert "float" in str(schema.columns["f"].dtype)
    assert "bool" in str(schema.columns["b"].dtype)


def test_infer_schema_skips_category_sets_for_many_values() -> None:
    frame = pd.DataFrame({"id": [f"id-{i}" for i in range(60)], "few": ["x", "y"] * 30})
    schema = infer_schema(frame)
    assert schema.columns["id"].checks == []
    assert len(schema.columns["few"].checks) == 1
    new = pd.DataFrame({"id": ["never-seen"], "few": ["x"]})
    assert validate_frame(new, schema, ValidationSettings(min_rows=0)).ok


def test_wrong_target_names_the_columns_that_exist(schema) -> None:
    report = validate_frame(clean_frame(seed=1), schema, SETTINGS, target="taget")
    check = failed(report, "taget", "target column present")
    assert check.observed == "columns: age, income, region, target"
    assert "taget: target column present (columns: age, income, region, target)" in report.summary()


def _csv(tmp_path, frame: pd.DataFrame, column: str, tokens: dict[int, str]):
    """``frame`` written as a CSV with raw ``tokens`` in some cells of ``column``, read back as the ingest step does."""
    from rung.data.sources import read_table

    text = frame.astype(object)
    for row, token in tokens.items():
        text.loc[row, column] = token
    path = tmp_path / "batch.csv"
    text.to_csv(path, index=False)
    return read_table(path)


def test_non_numeric_tokens_in_a_numeric_column_are_reported_not_made_missing(schema, tmp_path) -> None:
    nullable_schema = infer_schema(clean_frame().assign(income=lambda f: f.income.where(f.index % 50 != 0)))
    tokens = {3: "n/a", 4: "n/a", 5: "N/A", 6: "unknown"}
    frame = _csv(tmp_path, clean_frame(seed=1), "income", tokens)
    report = validate_frame(frame, nullable_schema, SETTINGS, target="target")
    check = failed(report, "income", "non-numeric values")
    assert check.failures == 4
    assert check.samples == ["n/a", "N/A", "unknown"]
    assert "income: non-numeric values" in report.summary()
    # the other checks see the numbers as numbers: no dtype failure piled on top, no silent missing values
    assert [c.name for c in report.failed] == ["non-numeric values"]


def test_non_numeric_tokens_in_an_integer_column(schema, tmp_path) -> None:
    frame = _csv(tmp_path, clean_frame(seed=1), "age", {0: "n/a", 9: "forty"})
    check = failed(validate_frame(frame, schema, SETTINGS), "age", "non-numeric values")
    assert check.failures == 2 and check.samples == ["n/a", "forty"]


def test_empty_cells_are_still_missing_values(tmp_path) -> None:
    base = clean_frame().assign(income=lambda f: f.income.where(f.index % 50 != 0))
    frame = _csv(tmp_path, clean_frame(seed=1), "income", {3: "", 4: ""})
    assert frame["income"].isna().sum() == 2 and frame["income"].dtype.kind == "f"
    assert validate_frame(frame, infer_schema(base), SETTINGS).ok
