"""rung.evaluation: metrics match sklearn's, per slice, and flatten to MLflow names."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as m
from sklearn.linear_model import LinearRegression, LogisticRegression

from rung.evaluation import MIN_SLICE_ROWS, PRIMARY_METRIC, evaluate_model, flatten_metrics


@pytest.fixture(scope="module")
def classification():
    rng = np.random.default_rng(7)
    n = 300
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    noise = rng.normal(scale=1.0, size=n)
    y = (x1 + 0.5 * x2 + noise > 0).astype(int)
    region = np.where(x2 > 0.3, "north", np.where(x2 < -0.3, "south", "east"))
    frame = pd.DataFrame({"x1": x1, "x2": x2, "target": y})
    train, test = frame.iloc[:200], frame.iloc[200:].reset_index(drop=True)
    model = LogisticRegression().fit(train[["x1", "x2"]], train["target"])
    return model, test, region[200:]


def test_classification_metrics_match_sklearn(classification) -> None:
    model, test, _ = classification
    result = evaluate_model(model, test, target="target", task="classification")
    X, y = test[["x1", "x2"]], test["target"]
    pred, proba = model.predict(X), model.predict_proba(X)
    expected = {
        "accuracy": m.accuracy_score(y, pred),
        "balanced_accuracy": m.balanced_accuracy_score(y, pred),
        "f1": m.f1_score(y, pred, average="macro"),
        "precision": m.precision_score(y, pred, average="macro"),
        "recall": m.recall_score(y, pred, average="macro"),
        "roc_auc": m.roc_auc_score(y, proba[:, 1]),
        "log_loss": m.log_loss(y, proba),
    }
    assert result["rows"] == len(test)
    assert result["slices"] == {}
    assert set(result["overall"]) == set(expected)
    for name, value in expected.items():
        assert result["overall"][name] == pytest.approx(value), name
    assert 0.5 < result["overall"]["roc_auc"] <= 1.0
    assert PRIMARY_METRIC["classification"] in result["overall"]


def test_slices_are_computed_per_value(classification) -> None:
    model, test, region = classification
    frame = test.assign(region=region)
    # the model was fitted without `region`: give it a wrapper that drops the column
    wrapped = DropColumns(model, ["region"])
    result = evaluate_model(wrapped, frame, target="target", task="classification", slices=["region"])
    counts = pd.Series(region).value_counts()
    assert set(result["slices"]) == {f"region={v}" for v in counts.index if counts[v] >= MIN_SLICE_ROWS}
    assert result["slices"]
    for name, metrics in result["slices"].items():
        value = name.split("=", 1)[1]
        mask = region == value
        sub = test[mask]
        pred = model.predict(sub[["x1", "x2"]])
        assert metrics["rows"] == int(mask.sum())
        assert metrics["accuracy"] == pytest.approx(m.accuracy_score(sub["target"], pred))
        if sub["target"].nunique() > 1:
            proba = model.predict_proba(sub[["x1", "x2"]])[:, 1]
            assert metrics["roc_auc"] == pytest.approx(m.roc_auc_score(sub["target"], proba))


class DropColumns:
    def __init__(self, model, columns):
        self.model = model
        self.columns = columns
        self.classes_ = model.classes_

    def predict(self, X):
        return self.model.predict(X.drop(columns=self.columns))

    def predict_proba(self, X):
        return self.model.predict_proba(X.drop(columns=self.columns))


def test_small_slices_are_skipped_and_capped(classification) -> None:
    model, test, _ = classification
    labels = ["big"] * (len(test) - 3) + ["tiny"] * 3
    frame = test.assign(group=labels)
    result = evaluate_model(DropColumns(model, ["group"]), frame, target="target", task="classification", slices=["group"])
    assert set(result["slices"]) == {"group=big"}
    assert result["slices"]["group=big"]["rows"] == len(test) - 3


def test_max_slice_values_keeps_the_most_frequent(classification) -> None:
    model, test, _ = classification
    labels = (["a"] * 50 + ["b"] * 30 + ["c"] * 20)[: len(test)]
    frame = test.assign(group=labels)
    result = evaluate_model(
        DropColumns(model, ["group"]), frame, target="target", task="classification", slices=["group"], max_slice_values=2
    )
    assert set(result["slices"]) == {"group=a", "group=b"}


def test_unknown_slice_column(classification) -> None:
    model, test, _ = classification
    with pytest.raises(KeyError, match="evaluate.slices: column 'nope'"):
        evaluate_model(model, test, target="target", task="classification", slices=["nope"])


def test_model_without_probabilities_has_no_auc(classification) -> None:
    model, test, _ = classification

    class LabelsOnly:
        def predict(self, X):
            return model.predict(X)

    result = evaluate_model(LabelsOnly(), test, target="target", task="classification")
    assert "roc_auc" not in result["overall"]
    assert "log_loss" not in result["overall"]
    assert result["overall"]["accuracy"] == pytest.approx(
        m.accuracy_score(test["target"], model.predict(test[["x1", "x2"]]))
    )


def test_regression_metrics() -> None:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(120, 2))
    y = 3 * X[:, 0] - 2 * X[:, 1] + rng.normal(scale=0.5, size=120)
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "price": y})
    model = LinearRegression().fit(frame[["a", "b"]][:80], frame["price"][:80])
    test = frame.iloc[80:].reset_index(drop=True)
    result = evaluate_model(model, test, target="price", task="regression")
    pred = model.predict(test[["a", "b"]])
    overall = result["overall"]
    assert set(overall) == {"rmse", "mae", "r2"}
    mse = m.mean_squared_error(test["price"], pred)
    assert overall["rmse"] == pytest.approx(math.sqrt(mse))
    assert overall["rmse"] ** 2 == pytest.approx(mse)
    assert overall["mae"] == pytest.approx(m.mean_absolute_error(test["price"], pred))
    assert overall["r2"] == pytest.approx(m.r2_score(test["price"], pred))
    assert PRIMARY_METRIC["regression"] == "rmse"


def test_flatten_metrics() -> None:
    result = {
        "rows": 10,
        "overall": {"accuracy": 0.9, "roc_auc": 0.95, "log_loss": float("nan")},
        "slices": {
            "region=north": {"accuracy": 0.8, "rows": 6},
            "city=São Paulo/x": {"accuracy": 0.7, "log_loss": float("inf"), "rows": 5},
        },
    }
    flat = flatten_metrics(result)
    assert flat == {
        "accuracy": 0.9,
        "roc_auc": 0.95,
        "slice.region_north.accuracy": 0.8,
        "slice.city_São Paulo/x.accuracy": 0.7,
    }
    assert not any(k.endswith(".rows") for k in flat)


def test_flatten_metrics_replaces_unsafe_characters() -> None:
    flat = flatten_metrics({"overall": {}, "slices": {"tier=a:b(c)": {"f1": 0.5}}})
    assert flat == {"slice.tier_a_b_c_.f1": 0.5}


def test_flatten_real_result(classification) -> None:
    model, test, region = classification
    frame = test.assign(region=region)
    result = evaluate_model(DropColumns(model, ["region"]), frame, target="target", task="classification", slices=["region"])
    flat = flatten_metrics(result)
    assert flat["accuracy"] == result["overall"]["accuracy"]
    for name, metrics in result["slices"].items():
        key = name.replace("=", "_")
        assert flat[f"slice.{key}.accuracy"] == metrics["accuracy"]
    assert all(math.isfinite(v) for v in flat.values())
