"""Live metrics with intervals, and confidence-based performance estimation, against scikit-learn and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score, log_loss, mean_absolute_error, roc_auc_score

from rung.monitor.performance import delong_auc, estimate_performance, live_metrics, wilson_interval


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a calibrated model: each label is drawn as Bernoulli(its score)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1.5, 2.5, n)
    return p, (rng.random(n) < p).astype(int)


def _slow_delong_variance(y: np.ndarray, s: np.ndarray) -> float:
    """DeLong et al. (1988) straight from the definition: O(m n) pairwise comparisons."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(np.var(v10, ddof=1) / pos.size + np.var(v01, ddof=1) / neg.size)


def test_classification_values_match_sklearn() -> None:
    p, y = _calibrated(3000, seed=1)
    metrics = live_metrics(y, scores=p)
    assert metrics["accuracy"].value == pytest.approx(accuracy_score(y, p >= 0.5), abs=1e-12)
    assert metrics["roc_auc"].value == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert metrics["f1"].value == pytest.approx(f1_score(y, p >= 0.5), abs=1e-12)
    assert metrics["log_loss"].value == pytest.approx(log_loss(y, p), abs=1e-12)
    assert metrics.omitted == {}
    for name, estimate in metrics.items():
        assert estimate.low <= estimate.value <= estimate.high, name
        assert estimate.high - estimate.low < 0.1, name
        assert estimate.n == 3000 and not estimate.estimated


def test_predicted_labels_are_used_when_given() -> None:
    y = np.array(["yes", "no", "yes", "yes", "no", "no"])
    pred = np.array(["yes", "no", "no", "yes", "yes", "no"])
    metrics = live_metrics(y, y_pred=pred)
    assert metrics["accuracy"].value == pytest.approx(4 / 6)
    assert metrics["f1"].value == pytest.approx(f1_score(y, pred, pos_label="yes"))
    assert set(metrics.omitted) == {"roc_auc", "log_loss"}


def test_wilson_interval_matches_scipy() -> None:
    for k, n in [(0, 10), (3, 10), (10, 10), (812, 1000)]:
        expected = binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson")
        low, high = wilson_interval(k, n, confidence=0.9)
        assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_delong_matches_its_definition(ties: bool) -> None:
    p, y = _calibrated(800, seed=2)
    scores = np.round(p, 1) if ties else p
    auc, var = delong_auc(y, scores)
    assert auc == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert var == pytest.approx(_slow_delong_variance(y, scores), rel=1e-9)


def test_auc_interval_narrows_with_more_rows_and_covers_the_truth() -> None:
    p_small, y_small = _calibrated(200, seed=3)
    p_large, y_large = _calibrated(20_000, seed=3)
    small = live_metrics(y_small, scores=p_small)["roc_auc"]
    large = live_metrics(y_large, scores=p_large)["roc_auc"]
    assert large.high - large.low < (small.high - small.low) / 5
    # the population AUC of this calibrated model, from a very large sample
    p, y = _calibrated(400_000, seed=4)
    truth = roc_auc_score(y, p)
    assert large.low <= truth <= large.high


def test_bootstrap_intervals_are_reproducible() -> None:
    p, y = _calibrated(500, seed=5)
    first, second = live_metrics(y, scores=p), live_metrics(y, scores=p)
    assert first["log_loss"] == second["log_loss"] and first["f1"] == second["f1"]


def test_regression_metrics() -> None:
    rng = np.random.default_rng(6)
    truth = rng.normal(10, 2, 5000)
    pred = truth + rng.normal(0, 0.5, 5000)
    pred[:10] = np.nan  # unusable rows are left out
    metrics = live_metrics(truth, pred, task="regression")
    keep = np.isfinite(pred)
    assert metrics["rmse"].value == pytest.approx(np.sqrt(np.mean((pred[keep] - truth[keep]) ** 2)), rel=1e-12)
    assert metrics["mae"].value == pytest.approx(mean_absolute_error(truth[keep], pred[keep]), rel=1e-12)
    assert metrics["rmse"].n == 4990
    assert metrics["rmse"].low < 0.5 < metrics["rmse"].high
    assert metrics["mae"].low <= metrics["mae"].value <= metrics["mae"].high


def test_too_few_rows_or_one_class_are_omitted_with_a_reason() -> None:
    one = live_metrics([1], scores=[0.7])
    assert dict(one) == {}
    assert set(one.omitted) == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert "at least 2" in one.omitted["accuracy"]
    single_class = live_metrics([1, 1, 1], scores=[0.2, 0.9, 0.6])
    assert "roc_auc" not in single_class and "one class" in single_class.omitted["roc_auc"]
    assert single_class["log_loss"].value == pytest.approx(log_loss([1, 1, 1], [0.2, 0.9, 0.6], labels=[0, 1]))
    unlabelled = live_metrics([None, None, 1.0], scores=[0.1, 0.2, 0.3])
    assert "accuracy" in unlabelled.omitted
    assert live_metrics([1.0], [2.0], task="regression").omitted["rmse"].startswith("1 labelled")
    with pytest.raises(ValueError, match="y_pred"):
        live_metrics([1, 0])


def test_cbpe_is_close_to_the_realised_metrics_of_a_calibrated_model() -> None:
    p, y = _calibrated(20_000, seed=7)
    estimated = estimate_performance(p)
    realised = live_metrics(y, scores=p)
    for name, tolerance in (("accuracy", 0.01), ("roc_auc", 0.01), ("f1", 0.02)):
        assert estimated[name].estimated
        assert abs(estimated[name].value - realised[name].value) < tolerance, name
        assert estimated[name].low <= realised[name].value <= estimated[name].high, name
    assert estimated["accuracy"].value == pytest.approx(np.mean(np.maximum(p, 1 - p)), abs=1e-12)


def test_cbpe_is_wrong_when_the_model_is_not_calibrated() -> None:
    """The documented assumption: overconfident scores make the estimate optimistic."""
    p, y = _calibrated(20_000, seed=8)
    overconfident = np.clip((p - 0.5) * 3 + 0.5, 0, 1)
    estimated = estimate_performance(overconfident)["accuracy"].value
    realised = live_metrics(y, scores=overconfident)["accuracy"].value
    assert estimated > realised + 0.05


def test_cbpe_expected_auc_edge_cases() -> None:
    assert estimate_performance([0.0, 0.0, 1.0, 1.0])["roc_auc"].value == pytest.approx(1.0)
    assert "roc_auc" in estimate_performance([1.0, 1.0, 1.0]).omitted
    assert "accuracy" in estimate_performance([0.4]).omitted
    with pytest.raises(ValueError, match="probabilities"):
        estimate_performance([0.2, 1.3])
