"""rung.certify: the rules of the release gate, on plain numbers, columns and a tiny fitted model."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rung.certify import (
    CertificationReport,
    Check,
    behaviour_check,
    champion_check,
    latency_check,
    schema_check,
    slice_checks,
    threshold_check,
    validate_behaviour,
)
from rung.certify.behaviour import input_types
from rung.certify.checks import direction, metric_checks, project_tests_check
from rung.config import BehaviourCheck, Bound, CertifySettings, ChampionMargin, SliceGate
from rung.errors import CertificationError
from rung.evaluation import higher_is_better
from rung.models.loaded import LoadedModel
from rung.models.signature import Column

# -- directions ------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "f1", "precision", "recall", "r2", "average_precision"])
def test_higher_is_better_for_scores(metric: str) -> None:
    assert higher_is_better(metric) is True


@pytest.mark.parametrize("metric", ["rmse", "mae", "log_loss", "brier"])
def test_lower_is_better_for_errors(metric: str) -> None:
    assert higher_is_better(metric) is False


def test_unknown_metric_direction_is_an_error_naming_it() -> None:
    with pytest.raises(KeyError, match="wobble"):
        higher_is_better("wobble")


# -- absolute thresholds -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "bound", "status"),
    [
        (0.81, Bound(min=0.8), "passed"),
        (0.8, Bound(min=0.8), "passed"),  # the bound itself is allowed
        (0.79, Bound(min=0.8), "failed"),
        (12.0, Bound(max=12.5), "passed"),
        (13.0, Bound(max=12.5), "failed"),
        (0.85, Bound(min=0.8, max=0.9), "passed"),
        (0.95, Bound(min=0.8, max=0.9), "failed"),
    ],
)
def test_threshold(value: float, bound: Bound, status: str) -> None:
    check = threshold_check("roc_auc", value, bound)
    assert check.name == "threshold.roc_auc"
    assert check.status == status
    assert check.observed == value


@pytest.mark.parametrize("value", [float("nan"), None, "0.9"])
def test_threshold_on_a_missing_or_nan_metric_fails(value: object) -> None:
    check = threshold_check("r2", value, Bound(min=0.0))
    assert check.status == "failed" and "not a finite number" in check.detail


# -- versus the champion ----------------------------------------------------------------------


def test_a_drop_within_the_margin_passes_and_beyond_it_fails() -> None:
    margin = ChampionMargin(max_drop=0.01)
    assert champion_check("roc_auc", 0.795, 0.80, margin, higher=True).status == "passed"
    assert champion_check("roc_auc", 0.790, 0.80, margin, higher=True).status == "passed"  # exactly the margin
    failed = champion_check("roc_auc", 0.78, 0.80, margin, higher=True, champion_ref="churn:1")
    assert failed.status == "failed" and failed.name == "champion.roc_auc"
    assert "0.02 worse than churn:1" in failed.detail


def test_worse_follows_the_metric_direction() -> None:
    margin = ChampionMargin(max_drop=0.5)
    # rmse: lower is better, so a higher rmse is the drop
    assert champion_check("rmse", 10.4, 10.0, margin, higher=False).status == "passed"
    assert champion_check("rmse", 10.6, 10.0, margin, higher=False).status == "failed"
    assert champion_check("rmse", 3.0, 10.0, margin, higher=False).status == "passed"
    # the same numbers on a higher-is-better metric: a big improvement
    assert champion_check("r2", 10.6, 10.0, margin, higher=True).status == "passed"
    assert "better" in champion_check("r2", 10.6, 10.0, margin, higher=True).detail


def test_relative_margin_is_a_fraction_of_the_champion() -> None:
    margin = ChampionMargin(max_relative_drop=0.05)
    assert champion_check("rmse", 104.0, 100.0, margin, higher=False).status == "passed"
    assert champion_check("rmse", 106.0, 100.0, margin, higher=False).status == "failed"


def test_both_margins_must_hold() -> None:
    margin = ChampionMargin(max_drop=0.1, max_relative_drop=0.01)
    assert champion_check("accuracy", 0.95, 1.0, margin, higher=True).status == "failed"  # 5% relative
    assert champion_check("accuracy", 0.995, 1.0, margin, higher=True).status == "passed"


def test_a_margin_without_bounds_allows_no_drop() -> None:
    assert champion_check("f1", 0.7999, 0.8, ChampionMargin(), higher=True).status == "failed"
    assert champion_check("f1", 0.8, 0.8, ChampionMargin(), higher=True).status == "passed"


def test_a_champion_without_the_metric_is_skipped() -> None:
    check = champion_check("roc_auc", 0.8, None, ChampionMargin(max_drop=0.01), higher=True)
    assert check.status == "skipped"


# -- slices ------------------------------------------------------------------------------------

CANDIDATE = {
    "region=north": {"roc_auc": 0.70, "rows": 120},
    "region=south": {"roc_auc": 0.60, "rows": 100},
    "region=tiny": {"roc_auc": 0.10, "rows": 12},
}
CHAMPION = {
    "region=north": {"roc_auc": 0.72, "rows": 120},
    "region=south": {"roc_auc": 0.75, "rows": 100},
    "region=tiny": {"roc_auc": 0.90, "rows": 12},
}


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_slices_are_held_to_bounds_and_small_ones_skipped() -> None:
    checks = _by_name(slice_checks(CANDIDATE, None, SliceGate(min=0.65, min_rows=30), "roc_auc", higher=True))
    assert checks["slice.region=north.roc_auc"].status == "passed"
    assert checks["slice.region=south.roc_auc"].status == "failed"
    tiny = checks["slice.region=tiny.roc_auc"]
    assert tiny.status == "skipped" and "12 rows" in tiny.detail


def test_slices_compared_with_the_champion() -> None:
    gate = SliceGate(max_drop_vs_champion=0.05, min_rows=30)
    checks = _by_name(slice_checks(CANDIDATE, CHAMPION, gate, "roc_auc", higher=True, champion_ref="churn:1"))
    assert checks["slice.region=north.roc_auc"].status == "passed"  # 0.02 worse
    south = checks["slice.region=south.roc_auc"]
    assert south.status == "failed" and "0.15 worse than churn:1" in south.detail
    assert checks["slice.region=tiny.roc_auc"].status == "skipped"


def test_a_slice_the_champion_lacks_is_not_compared() -> None:
    gate = SliceGate(max_drop_vs_champion=0.05)
    checks = _by_name(slice_checks({"region=east": {"roc_auc": 0.5, "rows": 80}}, CHAMPION, gate, "roc_auc", higher=True))
    assert checks["slice.region=east.roc_auc"].status == "skipped"


def test_slice_drop_on_an_error_metric() -> None:
    gate = SliceGate(max_drop_vs_champion=1.0)
    ours = {"size=large": {"rmse": 12.0, "rows": 50}}
    theirs = {"size=large": {"rmse": 10.0, "rows": 50}}
    assert slice_checks(ours, theirs, gate, "rmse", higher=False)[0].status == "failed"
    assert slice_checks(theirs, ours, gate, "rmse", higher=False)[0].status == "passed"


def test_nothing_to_check_on_slices_is_one_skipped_row() -> None:
    assert [c.status for c in slice_checks(CANDIDATE, None, SliceGate(), "roc_auc", higher=True)] == ["skipped"]
    assert [c.name for c in slice_checks({}, CHAMPION, SliceGate(min=0.5), "roc_auc", higher=True)] == ["slices"]


# -- schema ------------------------------------------------------------------------------------

CHAMPION_COLUMNS = [Column("tenure", "long"), Column("charges", "double"), Column("region", "string")]


def test_same_columns_pass() -> None:
    assert schema_check(list(CHAMPION_COLUMNS), CHAMPION_COLUMNS, []).status == "passed"


def test_undeclared_changes_fail_and_are_named() -> None:
    candidate = [Column("tenure", "double"), Column("region", "string"), Column("plan", "string")]
    check = schema_check(candidate, CHAMPION_COLUMNS, [], champion_ref="churn:1")
    assert check.status == "failed"
    for change in ("+plan", "-charges", "tenure: long → double"):
        assert change in check.detail


def test_declared_changes_pass() -> None:
    candidate = [Column("tenure", "double"), Column("region", "string"), Column("plan", "string")]
    assert schema_check(candidate, CHAMPION_COLUMNS, ["plan", "charges", "tenure"]).status == "passed"
    partly = schema_check(candidate, CHAMPION_COLUMNS, ["plan"])
    assert partly.status == "failed" and "+plan" not in partly.detail


def test_no_signature_is_skipped() -> None:
    assert schema_check([], CHAMPION_COLUMNS, []).status == "skipped"


# -- latency -----------------------------------------------------------------------------------


def _round(p99_ms: float, calls: int = 100) -> list[float]:
    """``calls`` timings whose p99 is ``p99_ms`` (all but the slowest two calls take 1 ms)."""
    return [1.0] * (calls - 2) + [p99_ms] * 2


def test_latency_uses_the_p99_not_the_worst_call() -> None:
    one_slow = [1.0] * 99 + [100.0]
    two_slow = [1.0] * 98 + [100.0] * 2
    assert latency_check("latency.single_row_p99_ms", [one_slow], 50.0).status == "passed"
    check = latency_check("latency.single_row_p99_ms", [two_slow], 50.0)
    assert check.status == "failed" and check.observed == pytest.approx(100.0)


def test_latency_is_judged_on_the_best_round_and_says_so() -> None:
    check = latency_check("latency.single_row_p99_ms", [_round(700.0), _round(120.0), _round(30.0)], 50.0)
    assert check.status == "passed" and check.observed == pytest.approx(30.0)
    assert "best of 3 rounds of 100 calls" in check.detail and "700" in check.detail


def test_latency_over_budget_passes_when_not_much_slower_than_the_champion_timed_alongside() -> None:
    # a loaded host: both versions miss the 50 ms budget, the candidate is no slower than the champion
    check = latency_check("latency.single_row_p99_ms", [_round(83.0)], 50.0, [_round(70.0)], champion_ref="churn:1")
    assert check.status == "passed" and check.observed == pytest.approx(83.0)
    assert "churn:1" in check.detail and "70" in check.detail and "limit 105 ms" in check.detail
    assert "1.5" in check.expected


def test_latency_fails_when_much_slower_than_the_champion() -> None:
    check = latency_check("latency.single_row_p99_ms", [_round(200.0), _round(180.0)], 50.0,
                          [_round(70.0), _round(60.0)], champion_ref="churn:1")
    assert check.status == "failed" and check.observed == pytest.approx(180.0)
    assert "limit 90 ms" in check.detail  # 1.5 × the champion's best round (60 ms)


def test_a_fast_champion_does_not_tighten_the_budget() -> None:
    check = latency_check("latency.single_row_p99_ms", [_round(40.0)], 50.0, [_round(2.0)], champion_ref="churn:1")
    assert check.status == "passed"
    assert latency_check("latency.single_row_p99_ms", [_round(60.0)], 50.0, [_round(2.0)]).status == "failed"


def test_latency_with_no_timings_is_skipped() -> None:
    assert latency_check("latency.single_row_p99_ms", [], 50.0).status == "skipped"
    assert latency_check("latency.single_row_p99_ms", [[]], 50.0).status == "skipped"


# -- behaviour ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    """P(positive) rises with x1 and ignores x2 entirely."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x1": rng.normal(size=300), "x2": rng.normal(size=300), "colour": rng.choice(["red", "blue"], 300)})
    y = (frame["x1"] + rng.normal(scale=0.5, size=300) > 0).astype(int)
    estimator = Pipeline([("x1 only", ColumnTransformer([("keep", "passthrough", ["x1"])])), ("fit", LogisticRegression())])
    estimator.fit(frame, y)
    columns = [Column("x1", "double"), Column("x2", "double"), Column("colour", "string")]
    return LoadedModel("tiny", 1, "sklearn", "classification", columns, estimator, Path("."), classes=[0, 1])


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"x1": rng.normal(size=50), "x2": rng.normal(size=50), "colour": rng.choice(["red", "blue"], 50)})


def test_directional_check_passes_when_the_score_moves_as_expected(model: LoadedModel, rows: pd.DataFrame) -> None:
    check = behaviour_check(model, rows, BehaviourCheck(kind="directional", feature="x1", change=1.0, expect="increase"))
    assert check.status == "passed" and check.observed == 0.0
    assert check.name == "behaviour.directional x1"


def test_directional_check_fails_when_every_row_moves_the_other_way(model: LoadedModel, rows: pd.DataFrame) -> None:
    declared = BehaviourCheck(name="x1 lowers risk", kind="directional", feature="x1", change=1.0, expect="decrease")
    check = behaviour_check(model, rows, declared)
    assert check.status == "failed" and check.observed == 1.0
    assert check.name == "behaviour.x1 lowers risk" and "50 of 50 rows" in check.detail


def test_directional_check_allows_a_violation_rate(model: LoadedModel, rows: pd.DataFrame) -> None:
    # x2 does not move the score: "increase" is violated by every row, "non_decreasing" by none
    strict = BehaviourCheck(kind="directional", feature="x2", change=1.0, expect="increase", max_violation_rate=0.99)
    assert behaviour_check(model, rows, strict).status == "failed"
    assert behaviour_check(model, rows, strict.model_copy(update={"max_violation_rate": 1.0})).status == "passed"
    lenient = BehaviourCheck(kind="directional", feature="x2", change=1.0, expect="non_decreasing")
    assert behaviour_check(model, rows, lenient).status == "passed"


def test_directional_check_leaves_out_rows_without_a_value(model: LoadedModel, rows: pd.DataFrame) -> None:
    gappy = rows.assign(x1=rows["x1"].where(rows.index % 2 == 0))
    check = behaviour_check(model, gappy, BehaviourCheck(kind="directional", feature="x1", change=1.0, expect="increase"))
    assert check.status == "passed" and "of 25 rows" in check.detail


def test_invariance_check(model: LoadedModel, rows: pd.DataFrame) -> None:
    ignored = BehaviourCheck(kind="invariance", feature="colour", values=["red", "blue", "green"])
    assert behaviour_check(model, rows, ignored).status == "passed"
    used = BehaviourCheck(kind="invariance", feature="x1", values=[0.0, 1.0])
    check = behaviour_check(model, rows, used)
    assert check.status == "failed" and check.observed == 1.0
    loose = BehaviourCheck(kind="invariance", feature="x1", values=[0.0, 1.0], tolerance=1.0)
    assert behaviour_check(model, rows, loose).status == "passed"


INPUTS = {"x1": True, "x2": True, "colour": False}


@pytest.mark.parametrize(
    ("check", "key"),
    [
        (BehaviourCheck(kind="directional", feature="x9", change=1.0), "certify.behaviour[1].feature"),
        (BehaviourCheck(kind="directional", feature="colour", change=1.0), "certify.behaviour[1].feature"),
        (BehaviourCheck(kind="directional", feature="x1"), "certify.behaviour[1].change"),
        (BehaviourCheck(kind="invariance", feature="x1"), "certify.behaviour[1].values"),
        (BehaviourCheck(kind="invariance", feature="x1", values=["a"]), "certify.behaviour[1].values"),
        (BehaviourCheck(kind="invariance", feature="x1", values=[1], expect="increase"), "certify.behaviour[1].expect"),
    ],
)
def test_a_check_that_cannot_run_is_a_settings_error_naming_its_key(check: BehaviourCheck, key: str) -> None:
    fine = BehaviourCheck(kind="invariance", feature="colour", values=["red"])
    with pytest.raises(CertificationError) as caught:
        validate_behaviour([fine, check], INPUTS)
    assert key in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


# -- the report --------------------------------------------------------------------------------


def _report(*checks: Check) -> CertificationReport:
    return CertificationReport("churn", 2, tuple(checks), 1, datetime(2026, 1, 1, tzinfo=UTC), 1.5)


def test_a_report_is_certified_only_without_failures() -> None:
    ok = _report(Check("integrity", "passed"), Check("champion", "skipped"))
    assert ok.certified and ok.counts() == {"passed": 1, "failed": 0, "skipped": 1}
    bad = _report(Check("integrity", "passed"), Check("threshold.roc_auc", "failed", 0.5))
    assert not bad.certified and [c.name for c in bad.failed] == ["threshold.roc_auc"]
    as_dict = bad.to_dict()
    assert as_dict["ref"] == "churn:2" and as_dict["champion"] == "churn:1" and as_dict["certified"] is False


def test_report_json_has_no_nan_and_the_summary_fits_a_tag() -> None:
    many = [Check(f"slice.region=r{i:04d}.roc_auc", "failed", float("nan")) for i in range(500)]
    report = _report(*many)
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert "NaN" not in text
    summary = report.summary()
    assert len(summary) < 5000
    parsed = json.loads(summary)
    assert parsed["certified"] is False and parsed["counts"]["failed"] == 500
    assert not math.isnan(report.duration_s)


# -- more of the rules, one branch each ------------------------------------------------------


@pytest.mark.parametrize("value", [None, float("nan"), "0.8", True])
def test_a_candidate_without_a_finite_metric_fails_against_the_champion(value: object) -> None:
    check = champion_check("roc_auc", value, 0.8, ChampionMargin(max_drop=0.01), higher=True)
    assert check.status == "failed" and check.observed is None and "not a finite number" in check.detail


def test_the_same_score_as_the_champion_says_so() -> None:
    check = champion_check("roc_auc", 0.8, 0.8, ChampionMargin(), higher=True, champion_ref="churn:1")
    assert check.status == "passed" and check.detail == "same as churn:1 (0.8)"


def test_a_relative_margin_on_a_zero_champion_allows_only_no_drop() -> None:
    margin = ChampionMargin(max_relative_drop=0.5)
    assert champion_check("mae", 0.0, 0.0, margin, higher=False).status == "passed"
    assert champion_check("mae", 0.1, 0.0, margin, higher=False).status == "failed"


def test_a_slice_without_a_finite_metric_is_skipped() -> None:
    checks = slice_checks({"region=x": {"roc_auc": float("nan"), "rows": 500}}, None, SliceGate(min=0.5), "roc_auc",
                          higher=True)
    assert checks[0].status == "skipped" and checks[0].detail == "no finite roc_auc for this slice"


def test_slices_without_bounds_and_without_a_champion_say_both() -> None:
    (check,) = slice_checks(CANDIDATE, None, SliceGate(max_drop_vs_champion=0.05), "roc_auc", higher=True)
    assert check.detail == "no certify.slices.min/max set, and no champion to compare with"


def test_an_unknown_metric_direction_is_a_settings_error_at_its_key() -> None:
    with pytest.raises(CertificationError, match=r"rung.yaml: certify.slices.metric: .*wobble"):
        direction("wobble", "certify.slices.metric")


# -- the recorded metrics, together ------------------------------------------------------------


class _Version:
    """A version as the metric rules see it (what ModelVersionRecord offers)."""

    def __init__(self, ref: str, overall: dict[str, float], slices: dict[str, dict[str, float]] | None = None) -> None:
        self.ref = ref
        self.metrics = {"overall": overall, "slices": slices or {}}


CANDIDATE_VERSION = _Version("churn:2", {"roc_auc": 0.80, "accuracy": 0.75}, CANDIDATE)
CHAMPION_VERSION = _Version("churn:1", {"roc_auc": 0.82, "accuracy": 0.74}, CHAMPION)


def test_without_versus_champion_the_primary_metric_may_drop_by_the_default_margin() -> None:
    checks = _by_name(metric_checks(CertifySettings(), "roc_auc", CANDIDATE_VERSION, CHAMPION_VERSION, ""))
    champion = checks["champion.roc_auc"]
    assert champion.status == "failed" and champion.expected == "worse by ≤ 0.01 vs churn:1"
    assert "champion.accuracy" not in checks
    assert checks["slice.region=south.roc_auc"].status == "failed"  # slices are compared by default, 0.05 at most


def test_thresholds_and_declared_margins_each_give_a_check() -> None:
    settings = CertifySettings.model_validate({
        "thresholds": {"roc_auc": {"min": 0.7}, "accuracy": {"min": 0.8}},
        "versus_champion": {"accuracy": {"max_drop": 0.0}},
        "slices": {"max_drop_vs_champion": 0.05, "min_rows": 30},
    })
    checks = _by_name(metric_checks(settings, "roc_auc", CANDIDATE_VERSION, CHAMPION_VERSION, ""))
    assert checks["threshold.roc_auc"].status == "passed"
    assert checks["threshold.accuracy"].status == "failed"
    assert checks["champion.accuracy"].status == "passed" and "champion.roc_auc" not in checks
    assert checks["slice.region=south.roc_auc"].status == "failed"
    assert [name for name in checks][:3] == ["threshold.roc_auc", "threshold.accuracy", "champion.accuracy"]


def test_without_a_champion_one_skipped_row_says_why() -> None:
    checks = metric_checks(CertifySettings(), "roc_auc", CANDIDATE_VERSION, None, "churn has no @champion yet")
    assert checks[0] == Check("champion", "skipped", detail="churn has no @champion yet")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"thresholds": {"roc_auc": {}}}, "certify.thresholds.roc_auc: set min, max or both"),
        ({"thresholds": {"f1": {"min": 0.5}}}, "certify.thresholds.f1: churn:2 has no metric 'f1' (it has: accuracy, roc_auc)"),
        ({"versus_champion": {"f1": {"max_drop": 0.1}}}, "certify.versus_champion.f1: churn:2 has no metric 'f1'"),
        ({"versus_champion": {"wobble": {"max_drop": 0.1}}}, "certify.versus_champion.wobble"),
        ({"slices": {"metric": "wobble", "max_drop_vs_champion": 0.1}}, "certify.slices.metric"),
    ],
)
def test_a_metric_rule_that_cannot_run_is_a_settings_error(settings: dict[str, object], message: str) -> None:
    with pytest.raises(CertificationError) as caught:
        metric_checks(CertifySettings.model_validate(settings), "roc_auc", CANDIDATE_VERSION, CHAMPION_VERSION, "")
    assert message in str(caught.value) and str(caught.value).startswith("rung.yaml: ")


# -- the project's tests, from their outcome ----------------------------------------------------


def test_pytest_outcomes() -> None:
    passed = project_tests_check("tests", 0, "..\n===== 2 passed in 0.1s =====\n")
    assert passed == Check("tests", "passed", "2 passed in 0.1s", "pytest passes", "pytest tests")
    empty = project_tests_check("tests", 5, "no tests ran in 0.01s\n")
    assert empty.status == "skipped" and empty.detail == "no tests collected in tests"
    failed = project_tests_check("tests", 1, "F\n1 failed in 0.2s\n\n")
    assert failed.status == "failed" and failed.observed == "1 failed in 0.2s" and failed.detail == "pytest tests exited 1"
    assert project_tests_check("tests", 4, "").observed == "exit 4"


# -- behaviour, the remaining branches ---------------------------------------------------------


def test_non_increasing_is_violated_only_by_rises(model: LoadedModel, rows: pd.DataFrame) -> None:
    up = BehaviourCheck(kind="directional", feature="x1", change=1.0, expect="non_increasing")
    assert behaviour_check(model, rows, up).status == "failed"
    flat = BehaviourCheck(kind="directional", feature="x2", change=1.0, expect="non_increasing")
    assert behaviour_check(model, rows, flat).status == "passed"


def test_a_directional_check_with_no_values_is_skipped(model: LoadedModel, rows: pd.DataFrame) -> None:
    check = behaviour_check(model, rows.assign(x1=np.nan), BehaviourCheck(kind="directional", feature="x1", change=1.0))
    assert check.status == "skipped" and check.detail == "no rows with a value for x1"


def test_rows_the_model_cannot_take_are_a_settings_error_naming_the_check(model: LoadedModel, rows: pd.DataFrame) -> None:
    declared = BehaviourCheck(kind="directional", feature="x1", change=1.0)
    with pytest.raises(CertificationError, match=r"^rung.yaml: certify.behaviour\[3\]: missing input column\(s\): colour"):
        behaviour_check(model, rows.drop(columns=["colour"]), declared, 3)


def test_input_types_come_from_the_signature_else_the_frame(model: LoadedModel, rows: pd.DataFrame) -> None:
    assert input_types(model, rows.iloc[:0]) == {"x1": True, "x2": True, "colour": False}
    assert input_types(None, rows.assign(n=1)) == {"x1": True, "x2": True, "colour": False, "n": True}
