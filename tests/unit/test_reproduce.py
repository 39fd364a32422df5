"""rung.reproduce.compare_metrics: per-metric tolerance, overall and per slice."""

from __future__ import annotations

import math

import pytest

from rung.reproduce import Reproduction, compare_metrics


def rows_by_metric(rows):
    return {r["metric"]: r for r in rows}


def test_within_tolerance_is_ok() -> None:
    rows = compare_metrics({"overall": {"auc": 0.9}}, {"overall": {"auc": 0.9 + 5e-7}}, 1e-6)
    assert len(rows) == 1
    row = rows[0]
    assert row["ok"] is True
    assert row["metric"] == "auc"
    assert row["original"] == 0.9
    assert row["difference"] == pytest.approx(5e-7)


def test_outside_tolerance_is_not_ok() -> None:
    rows = compare_metrics({"overall": {"auc": 0.9}}, {"overall": {"auc": 0.9 + 2e-6}}, 1e-6)
    assert rows[0]["ok"] is False
    assert rows[0]["difference"] == pytest.approx(2e-6)


def test_exact_match_with_zero_tolerance() -> None:
    rows = compare_metrics({"overall": {"auc": 0.9}}, {"overall": {"auc": 0.9}}, 0.0)
    assert rows[0]["ok"] is True
    assert rows[0]["difference"] == 0.0


def test_tolerance_is_relative_above_one() -> None:
    # rmse 1000: relative tolerance 1e-3 allows a difference of 1.0
    ok = compare_metrics({"overall": {"rmse": 1000.0}}, {"overall": {"rmse": 1000.9}}, 1e-3)
    bad = compare_metrics({"overall": {"rmse": 1000.0}}, {"overall": {"rmse": 1001.5}}, 1e-3)
    assert ok[0]["ok"] is True
    assert bad[0]["ok"] is False


def test_tolerance_is_absolute_below_one() -> None:
    ok = compare_metrics({"overall": {"r2": 0.001}}, {"overall": {"r2": 0.0019}}, 1e-3)
    bad = compare_metrics({"overall": {"r2": 0.001}}, {"overall": {"r2": 0.0025}}, 1e-3)
    assert ok[0]["ok"] is True
    assert bad[0]["ok"] is False


@pytest.mark.parametrize(
    ("original", "new", "missing_side"),
    [({"auc": 0.9, "f1": 0.8}, {"auc": 0.9}, "reproduced"), ({"auc": 0.9}, {"auc": 0.9, "f1": 0.8}, "original")],
)
def test_missing_metric_is_not_ok(original, new, missing_side) -> None:
    rows = rows_by_metric(compare_metrics({"overall": original}, {"overall": new}, 1e-6))
    assert rows["auc"]["ok"] is True
    assert rows["f1"]["ok"] is False
    assert rows["f1"][missing_side] is None
    assert rows["f1"]["difference"] is None


def test_nan_equals_nan() -> None:
    rows = compare_metrics({"overall": {"r2": float("nan")}}, {"overall": {"r2": float("nan")}}, 1e-6)
    assert rows[0]["ok"] is True
    assert rows[0]["difference"] == 0.0


def test_nan_against_a_number_is_not_ok() -> None:
    for a, b in ((float("nan"), 0.5), (0.5, float("nan"))):
        rows = compare_metrics({"overall": {"r2": a}}, {"overall": {"r2": b}}, 1e-6)
        assert rows[0]["ok"] is False, (a, b)


def test_slices_are_compared_and_rows_ignored() -> None:
    original = {"overall": {"auc": 0.9}, "slices": {"region=north": {"auc": 0.8, "rows": 10}}}
    new = {"overall": {"auc": 0.9}, "slices": {"region=north": {"auc": 0.7, "rows": 10}}}
    rows = rows_by_metric(compare_metrics(original, new, 1e-6))
    assert set(rows) == {"auc", "region=north/auc"}
    assert rows["auc"]["ok"] is True
    assert rows["region=north/auc"]["ok"] is False
    assert rows["region=north/auc"]["difference"] == pytest.approx(0.1)


def test_rows_are_sorted_by_metric() -> None:
    rows = compare_metrics({"overall": {"b": 1.0, "a": 1.0, "c": 1.0}}, {"overall": {"c": 1.0, "a": 1.0, "b": 1.0}}, 0)
    assert [r["metric"] for r in rows] == ["a", "b", "c"]


def test_empty_results() -> None:
    assert compare_metrics({}, {}, 1e-6) == []


def test_reproduction_ok_needs_every_row() -> None:
    rows = compare_metrics({"overall": {"a": 1.0, "b": 2.0}}, {"overall": {"a": 1.0, "b": 3.0}}, 1e-6)
    reproduction = Reproduction(ref="m:1", run_id="r", tolerance=1e-6, code="c", comparisons=rows)
    assert reproduction.ok is False
    assert reproduction.to_dict()["ok"] is False
    good = Reproduction(ref="m:1", run_id="r", tolerance=1e-6, code="c", comparisons=rows[:1])
    assert good.ok is True
    assert math.isclose(good.to_dict()["tolerance"], 1e-6)
