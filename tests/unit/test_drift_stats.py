"""Drift statistics against scipy and known distributions, and :func:`rung.monitor.drift.compare` on top of them."""

from __future__ import annotations

import json
import math
import re
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.spatial import distance

from rung.config.drift import DriftSettings, FeatureDrift
from rung.errors import DriftError, RungError
from rung.monitor import stats
from rung.monitor.drift import compare, default_method
from rung.monitor.report import html_report

SIZES = [(50, 50), (700, 1300), (12_000, 12_000), (30_000, 17_000)]


def _pair(n_ref: int, n_cur: int, seed: int = 0, shift: float = 0.1, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref, cur = rng.normal(0, 1, n_ref), rng.normal(shift, 1.2, n_cur)
    if ties:
        ref, cur = np.round(ref, 1), np.round(cur, 1)
    return ref, cur


def _js(reference: np.ndarray, current: np.ndarray) -> float:
    """Drift's Jensen-Shannon distance of two numeric samples: Evidently's bins, natural log."""
    return stats.js_distance(*stats.evidently_bins(reference, current), base=math.e)


# --- numeric statistics against scipy ---------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(("n_ref", "n_cur"), SIZES)
def test_wasserstein_matches_scipy(n_ref: int, n_cur: int, ties: bool) -> None:
    ref, cur = _pair(n_ref, n_cur, ties=ties)
    expected = sps.wasserstein_distance(ref, cur) / np.std(ref)
    assert stats.wasserstein_norm(ref, cur) == pytest.approx(expected, abs=1e-9, rel=1e-9)
    presorted = stats.wasserstein_norm(np.sort(ref), np.sort(cur), presorted=True)
    assert presorted == pytest.approx(expected, abs=1e-9, rel=1e-9)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(("n_ref", "n_cur"), SIZES)
def test_ks_matches_scipy(n_ref: int, n_cur: int, ties: bool) -> None:
    ref, cur = _pair(n_ref, n_cur, ties=ties)
    expected = sps.ks_2samp(ref, cur)
    result = stats.ks_2samp(ref, cur)
    assert result.statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-300)


def test_ks_on_identical_tied_samples_is_zero() -> None:
    values = np.repeat([1.0, 2.0, 3.0], 5000)
    result = stats.ks_2samp(values, values[::-1])
    assert result.statistic == 0.0
    assert result.p_value == pytest.approx(1.0)


@pytest.mark.parametrize(("n_ref", "n_cur"), SIZES)
def test_jensen_shannon_numeric_bins_like_evidently(n_ref: int, n_cur: int) -> None:
    """Sturges bins over both samples together, natural log: Evidently's recipe with scipy's distance."""
    ref, cur = _pair(n_ref, n_cur, shift=0.3)
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    expected = distance.jensenshannon(np.histogram(ref, edges)[0] / ref.size, np.histogram(cur, edges)[0] / cur.size)
    assert _js(ref, cur) == pytest.approx(expected, abs=1e-12)


def test_jensen_shannon_few_values_uses_the_values_as_bins() -> None:
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 8, 4000).astype(float)
    cur = rng.integers(2, 12, 3000).astype(float)
    values = np.union1d(ref, cur)
    p = np.array([(ref == v).sum() for v in values]) / ref.size
    q = np.array([(cur == v).sum() for v in values]) / cur.size
    assert _js(ref, cur) == pytest.approx(distance.jensenshannon(p, q), abs=1e-12)


def test_jensen_shannon_is_bounded_and_zero_on_equal_samples() -> None:
    ref, _ = _pair(5000, 5000)
    assert _js(ref, ref.copy()) == pytest.approx(0.0, abs=1e-12)
    disjoint = _js(ref, ref + 100)
    assert disjoint == pytest.approx(np.sqrt(np.log(2)), abs=1e-9)


def test_sturges_edges_match_numpy() -> None:
    rng = np.random.default_rng(4)
    for size in (10, 1000, 123_457):
        x = rng.exponential(3, size)
        assert np.allclose(stats.sturges_edges(x.min(), x.max(), x.size), np.histogram_bin_edges(x, "sturges"), rtol=0, atol=0)


def test_psi_matches_a_direct_computation() -> None:
    ref, cur = _pair(8000, 6000, shift=0.4)
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, 11)[1:-1]))
    edges = np.concatenate(([-np.inf], inner, [np.inf]))
    p = np.maximum(np.histogram(ref, edges)[0] / ref.size, 1e-4)
    q = np.maximum(np.histogram(cur, edges)[0] / cur.size, 1e-4)
    assert stats.psi(ref, cur) == pytest.approx(float(np.sum((q - p) * np.log(q / p))), rel=1e-12)


def test_psi_grows_with_the_shift_and_is_near_zero_without_one() -> None:
    rng = np.random.default_rng(5)
    ref = rng.normal(0, 1, 20_000)
    same = stats.psi(ref, rng.normal(0, 1, 20_000))
    small = stats.psi(ref, rng.normal(0.25, 1, 20_000))
    large = stats.psi(ref, rng.normal(1.0, 1, 20_000))
    assert same < 0.01 < small < 0.25 < large


def test_psi_known_value_for_two_categories() -> None:
    # shares 0.5/0.5 -> 0.25/0.75: (0.25-0.5) ln(0.5) + (0.75-0.5) ln(1.5)
    expected = -0.25 * np.log(0.5) + 0.25 * np.log(1.5)
    assert stats.psi_categorical([50, 50], [25, 75]) == pytest.approx(expected, rel=1e-12)


def test_nan_and_infinities_are_dropped_like_evidently() -> None:
    ref, cur = _pair(2000, 2000, shift=0.2)
    dirty_ref = np.concatenate([ref, [np.nan, np.inf]])
    dirty_cur = np.concatenate([[np.nan, -np.inf, np.nan], cur])
    assert stats.wasserstein_norm(dirty_ref, dirty_cur) == pytest.approx(stats.wasserstein_norm(ref, cur), abs=1e-12)
    assert stats.ks_2samp(dirty_ref, dirty_cur) == stats.ks_2samp(ref, cur)
    with pytest.raises(ValueError, match="finite"):
        stats.wasserstein_norm([np.nan], [1.0])


def test_constant_reference_divides_by_evidentlys_floor() -> None:
    assert stats.wasserstein_norm(np.ones(100), np.ones(100)) == 0.0
    assert stats.wasserstein_norm(np.ones(100), np.full(100, 1.01)) == pytest.approx(0.01 / 0.001)
    assert stats.ks_2samp([3.0], [3.0]).statistic == 0.0


# --- categorical statistics ---------------------------------------------------------------------


def test_category_counts_align_both_sides() -> None:
    categories, ref, cur = stats.category_counts(["a", "b", "a", None], ["b", "c", np.nan, "c"])  # type: ignore[arg-type]
    table = dict(zip(categories, zip(ref.tolist(), cur.tolist(), strict=True), strict=True))
    assert table == {"a": (2, 0), "b": (1, 1), "c": (0, 2)}


def test_chi_square_matches_scipy_contingency_with_an_unseen_category() -> None:
    ref = np.array([400, 300, 300, 0])
    cur = np.array([90, 110, 100, 40])  # the last category never appeared in the reference
    expected = sps.chi2_contingency(np.vstack([ref, cur]), correction=False)
    result = stats.chi_square(ref, cur)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.p_value < 1e-6


def test_chi_square_degenerate_tables() -> None:
    assert stats.chi_square([10], [5]) == stats.TestResult(0.0, 1.0)
    assert stats.chi_square([10, 0], [5, 0]) == stats.TestResult(0.0, 1.0)
    with pytest.raises(ValueError, match="aligned"):
        stats.chi_square([1, 2], [1, 2, 3])


def test_jensen_shannon_categorical_matches_scipy() -> None:
    ref, cur = np.array([10, 20, 30, 0]), np.array([5, 5, 30, 10])
    assert stats.js_distance(ref, cur, base=math.e) == pytest.approx(distance.jensenshannon(ref, cur), abs=1e-12)


# --- compare(): known distributions -------------------------------------------------------------


def _frames(n: int, seed: int = 0, shift: float = 0.0, new_category: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    colours = ["red", "green", "blue"]

    def frame(mean: float, extra: bool) -> pd.DataFrame:
        weights = [0.5, 0.3, 0.2]
        colour = rng.choice(colours, n, p=weights).astype(object)
        if extra:
            colour[rng.random(n) < 0.2] = "purple"
        return pd.DataFrame({
            "x": rng.normal(mean, 1.0, n),
            "y": rng.exponential(2.0, n),
            "colour": colour,
        })

    return frame(0.0, False), frame(shift, new_category)


@pytest.mark.parametrize("n", [5000, 600])
def test_same_distribution_does_not_drift_at_default_thresholds(n: int) -> None:
    ref, cur = _frames(n, seed=11)
    report = compare(ref, cur, settings=DriftSettings(multivariate=False))
    assert report.drifted_features == []
    assert not report.dataset_drifted
    methods = {f.name: f.method for f in report.features}
    if n > 1000:
        assert methods == {"x": "wasserstein", "y": "wasserstein", "colour": "jensenshannon"}
    else:
        assert methods == {"x": "ks", "y": "ks", "colour": "chisquare"}


@pytest.mark.parametrize("n", [5000, 600])
def test_half_a_standard_deviation_shift_drifts(n: int) -> None:
    ref, cur = _frames(n, seed=12, shift=0.5)
    report = compare(ref, cur, settings=DriftSettings(multivariate=False))
    assert report.drifted_features == ["x"]
    x = report.features[0]
    assert x.kind == "numeric" and x.drifted
    assert x.out_of_range is not None and x.out_of_range >= 0


def test_new_category_is_reported_and_chi_square_p_is_small() -> None:
    ref, cur = _frames(5000, seed=13, new_category=True)
    settings = DriftSettings(multivariate=False, categorical_method="chisquare")
    colour = next(f for f in compare(ref, cur, settings=settings).features if f.name == "colour")
    assert colour.unseen == ("purple",)
    assert colour.unseen_share == pytest.approx(0.2, abs=0.02)
    assert colour.p_value is not None and colour.p_value < 1e-10
    assert colour.drifted
    assert any("unseen" in note for note in colour.notes)


def test_default_method_follows_evidently() -> None:
    assert default_method("numeric", 1000) == "ks"
    assert default_method("categorical", 1000) == "chisquare"
    assert default_method("numeric", 1001) == "wasserstein"
    assert default_method("categorical", 1001) == "jensenshannon"


def test_dataset_drift_needs_the_share() -> None:
    rng = np.random.default_rng(14)
    ref = pd.DataFrame({f"f{i}": rng.normal(0, 1, 3000) for i in range(4)})
    cur = pd.DataFrame({f"f{i}": rng.normal(1.0 if i < 2 else 0.0, 1, 3000) for i in range(4)})
    half = compare(ref, cur, settings=DriftSettings(multivariate=False))
    assert half.drift_share == 0.5 and half.dataset_drifted
    strict = compare(ref, cur, settings=DriftSettings(multivariate=False, dataset_share=0.75))
    assert not strict.dataset_drifted


# --- compare(): edge cases ----------------------------------------------------------------------


def test_all_missing_current_is_reported_not_computed() -> None:
    ref, cur = _frames(2000, seed=15)
    cur["x"] = np.nan
    cur["colour"] = None
    report = compare(ref, cur, settings=DriftSettings(multivariate=False))
    by_name = {f.name: f for f in report.features}
    for name in ("x", "colour"):
        feature = by_name[name]
        assert feature.all_missing and feature.method is None and feature.statistic is None
        assert not feature.drifted
        assert feature.missing_current == 1.0
    assert [f.name for f in report.compared] == ["y"]


def test_constant_and_single_value_columns() -> None:
    ref = pd.DataFrame({"c": np.full(3000, 7.0), "d": np.arange(3000.0)})
    same = compare(ref, ref.copy(), settings=DriftSettings(multivariate=False))
    assert same.drifted_features == []
    cur = pd.DataFrame({"c": np.full(3000, 8.0), "d": np.arange(3000.0)})
    moved = compare(ref, cur, settings=DriftSettings(multivariate=False))
    c = moved.features[0]
    assert c.kind == "categorical"  # two distinct values: compared as categories
    assert c.drifted and c.unseen == ("8",)
    one_row = compare(ref.iloc[:1], cur.iloc[:1], settings=DriftSettings(multivariate=False))
    single = one_row.features[0]
    assert single.method == "chisquare" and single.unseen == ("8",)
    assert single.p_value is not None and single.p_value > 0.05  # one row a side is no evidence
    assert not single.drifted


def test_missing_values_and_out_of_range_are_measured() -> None:
    rng = np.random.default_rng(16)
    ref = pd.DataFrame({"x": rng.uniform(0, 1, 4000)})
    values = rng.uniform(0, 1.25, 4000)
    values[:400] = np.nan
    report = compare(ref, pd.DataFrame({"x": values}), settings=DriftSettings(multivariate=False))
    x = report.features[0]
    assert x.missing_reference == 0.0
    assert x.missing_current == pytest.approx(0.1)
    assert x.out_of_range == pytest.approx(0.2, abs=0.03)
    assert x.current_values == 3600


def test_values_that_are_not_numbers_are_type_errors() -> None:
    rng = np.random.default_rng(17)
    ref = pd.DataFrame({"x": rng.normal(0, 1, 3000)})
    cur_values = rng.normal(0, 1, 3000).astype(object)
    cur_values[:30] = "n/a"
    cur_values[30:40] = None
    report = compare(ref, pd.DataFrame({"x": cur_values}), settings=DriftSettings(multivariate=False))
    x = report.features[0]
    assert x.kind == "numeric"
    assert x.type_errors == 30
    assert x.missing_current == pytest.approx(10 / 3000)
    assert x.current_values == 2960
    assert not x.drifted
    words = compare(ref, pd.DataFrame({"x": ["abc"] * 3000}), settings=DriftSettings(multivariate=False)).features[0]
    assert words.all_missing and words.type_errors == 3000 and words.missing_current == 0.0
    assert words.notes[-1] == "current values missing or not numbers: not compared"


def test_missing_reference_is_a_rung_error() -> None:
    cur = pd.DataFrame({"x": [1.0, 2.0]})
    with pytest.raises(DriftError, match="no reference data"):
        compare(None, cur)
    with pytest.raises(DriftError, match="reference data has no rows"):
        compare(pd.DataFrame({"x": []}), cur)
    with pytest.raises(DriftError, match="current data has no rows"):
        compare(cur, cur.iloc[:0])
    assert issubclass(DriftError, RungError)


def test_columns_on_one_side_only_are_reported_not_compared() -> None:
    ref = pd.DataFrame({"a": np.arange(100.0), "b": np.arange(100.0), "gone": np.arange(100.0)})
    cur = pd.DataFrame({"a": np.arange(100.0), "b": np.arange(100.0), "new": np.arange(100.0)})
    report = compare(ref, cur, settings=DriftSettings(multivariate=False), ignore=["b"])
    assert [f.name for f in report.features] == ["a"]
    assert report.missing_columns == ["gone"] and report.extra_columns == ["new"]
    with pytest.raises(DriftError, match="no column in common"):
        compare(ref[["gone"]], cur[["new"]])
    with pytest.raises(DriftError, match="categorical names columns the reference does not have: typo"):
        compare(ref, cur, categorical=["typo"])
    twice = pd.concat([cur, cur[["a"]]], axis=1)
    with pytest.raises(DriftError, match="current data has more than one column named a"):
        compare(ref, twice)


def test_per_feature_settings_override_method_and_threshold() -> None:
    ref, cur = _frames(3000, seed=18, shift=0.15)
    settings = DriftSettings(
        multivariate=False,
        features={"x": FeatureDrift(method="psi", threshold=0.5), "y": FeatureDrift(method="ks")},
    )
    by_name = {f.name: f for f in compare(ref, cur, settings=settings).features}
    assert by_name["x"].method == "psi" and by_name["x"].threshold == 0.5 and not by_name["x"].drifted
    assert by_name["y"].method == "ks" and by_name["y"].p_value is not None
    with pytest.raises(DriftError, match="does not apply"):
        compare(ref, cur, settings=DriftSettings(features={"colour": FeatureDrift(method="wasserstein")}))
    with pytest.raises(DriftError, match="does not have"):
        compare(ref, cur, settings=DriftSettings(features={"nope": FeatureDrift()}))
    with pytest.raises(ValueError):
        DriftSettings(numeric_method="chisquare")


def test_global_method_applies_where_it_fits() -> None:
    ref, cur = _frames(3000, seed=19)
    report = compare(ref, cur, settings=DriftSettings(method="wasserstein", threshold=0.2, multivariate=False))
    by_name = {f.name: f for f in report.features}
    assert by_name["x"].method == "wasserstein" and by_name["x"].threshold == 0.2
    assert by_name["colour"].method == "jensenshannon"


def test_forced_categorical_and_few_values() -> None:
    rng = np.random.default_rng(20)
    ref = pd.DataFrame({"code": rng.integers(0, 50, 3000), "flag": rng.integers(0, 2, 3000)})
    cur = pd.DataFrame({"code": rng.integers(0, 50, 3000), "flag": rng.integers(0, 2, 3000)})
    report = compare(ref, cur, categorical=["code"], settings=DriftSettings(multivariate=False))
    kinds = {f.name: f.kind for f in report.features}
    assert kinds == {"code": "categorical", "flag": "categorical"}
    assert report.drifted_features == []


def test_multivariate_catches_a_change_in_correlation() -> None:
    rng = np.random.default_rng(21)
    n = 4000
    ref = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    a = rng.normal(size=n)
    cur = pd.DataFrame({"a": a, "b": a + rng.normal(scale=0.05, size=n)})  # same marginals, new relation
    report = compare(ref, cur, settings=DriftSettings(max_rows_multivariate=1000))
    assert report.drifted_features == []
    assert report.multivariate is not None and report.multivariate.auc is not None
    assert report.multivariate.auc > 0.8 and report.multivariate.drifted
    calm = compare(ref, pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)}),
                   settings=DriftSettings(max_rows_multivariate=1000))
    assert calm.multivariate is not None and calm.multivariate.auc is not None
    assert calm.multivariate.auc < 0.6 and not calm.multivariate.drifted


def test_report_to_dict_is_json_and_html_has_plots() -> None:
    ref, cur = _frames(3000, seed=22, shift=0.6, new_category=True)
    ref["when"] = pd.Timestamp("2024-01-01")
    cur["when"] = pd.Timestamp("2025-01-01")
    report = compare(ref, cur, settings=DriftSettings(max_rows_multivariate=500))
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert set(data["drifted_features"]) == {"x", "colour"}
    assert data["skipped"] == {"when": "date/time column: moves with the calendar, not compared"}
    assert data["multivariate"]["auc"] > 0.65
    page = html_report(report, ref, cur, title="t <1>")
    assert page.count("<svg") == 3
    assert "t &lt;1&gt;" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert page.index("<h2>x ") < page.index("<h2>colour ") < page.index("<h2>y ")  # drifted first
    for svg in re.findall(r"<svg.*?</svg>", page, flags=re.S):
        ElementTree.fromstring(svg)  # well-formed
