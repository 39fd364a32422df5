"""train.tune without a cluster: the rung.yaml block, the metric, the held-out rows, one trial's work, the best trial.

The search on Ray Tune itself, with MLflow child runs and the registered
version, is ``tests/integration/test_ray_work.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rung.config import Settings, load_settings
from rung.errors import ConfigError, MissingDependency
from rung.tuning import (
    TASK_METRICS,
    Objective,
    Trial,
    TuneSearch,
    best_trial,
    holdout,
    ray_space,
    run_trials_inline,
    tune_metric,
)

SPACE = {"C": {"loguniform": [0.01, 10]}, "max_iter": {"randint": [50, 60]}, "fit_intercept": {"choice": [True, False]}}


def settings(task: str = "classification", primary: str | None = None, **tune) -> Settings:
    return Settings.model_validate({
        "name": "t", "task": task, "data": {"target": "y"}, "evaluate": {"primary_metric": primary},
        "train": {"params": {"C": 1.0}, "tune": {"space": SPACE, **tune}},
    })


def frame(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] + 0.3 * rng.normal(size=rows) > 0).astype(int)})


# -- the rung.yaml block --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tune", "expected"),
    [
        ("{space: {lr: {normal: [0, 1]}}}", "train.tune.space.lr: 'normal' is not a distribution; use one of uniform, loguniform"),
        ("{space: {lr: {uniform: [0, 1], choice: [1]}}}", "train.tune.space.lr: write one distribution"),
        ("{space: {lr: {uniform: [1, 0]}}}", "train.tune.space.lr: uniform: [1, 0]: the low bound must be below the high one"),
        ("{space: {lr: {loguniform: [0, 0.3]}}}", "train.tune.space.lr: loguniform: [0, 0.3]: both bounds must be > 0"),
        ("{space: {d: {randint: [2.5, 8]}}}", "train.tune.space.d.randint.0: Input should be a valid integer"),
        ("{space: {d: {choice: []}}}", "train.tune.space.d: choice: give at least one value"),
        ("{space: {d: 3}}", "train.tune.space.d: write one distribution"),
        ("{trials: 3}", "train.tune.space: required key is missing"),
        ("{space: {}}", "train.tune.space: Dictionary should have at least 1 item"),
        ("{trials: 0, space: {d: {choice: [1]}}}", "train.tune.trials: Input should be greater than or equal to 1"),
        ("{max_concurrent: 0, space: {d: {choice: [1]}}}", "train.tune.max_concurrent: Input should be greater than or equal to 1"),
        ("{validation_size: 1.5, space: {d: {choice: [1]}}}", "train.tune.validation_size: Input should be less than 1"),
        ("{triels: 3, space: {d: {choice: [1]}}}", "train.tune.triels: unknown key"),
    ],
)
def test_a_bad_tune_block_is_one_line_naming_the_field(tmp_path: Path, tune: str, expected: str) -> None:
    (tmp_path / "rung.yaml").write_text(f"name: x\ntrain:\n  params: {{C: 1}}\n  tune: {tune}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"rung.yaml: {expected}"), message
    assert "\n" not in message


def test_a_tune_block_reads_back_as_written_and_keeps_train_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "rung.yaml").write_text(
        "name: x\ntrain:\n  params: {C: 1}\n  mine: kept\n  tune:\n    trials: 4\n    space:\n"
        "      C: {loguniform: [0.01, 10]}\n      k: {randint: [2, 8]}\n      solver: {choice: [lbfgs, saga]}\n")
    loaded = load_settings(tmp_path)
    assert loaded.params == {"C": 1} and loaded.train["mine"] == "kept"
    assert loaded.tune is not None and loaded.tune.trials == 4 and loaded.tune.space["k"].randint == (2, 8)
    written = loaded.pipeline_settings()["train"]["tune"]["space"]
    assert written == {"C": {"loguniform": [0.01, 10]}, "k": {"randint": [2, 8]}, "solver": {"choice": ["lbfgs", "saga"]}}
    assert loaded.with_pipeline_settings(loaded.pipeline_settings()).tune == loaded.tune  # rung reproduce reads it back
    assert Settings.model_validate({"name": "x"}).tune is None


# -- the metric -----------------------------------------------------------------------------------


def test_the_metric_defaults_to_the_primary_one_with_its_direction() -> None:
    assert tune_metric(settings()) == ("roc_auc", "max")
    assert tune_metric(settings("regression")) == ("rmse", "min")
    assert tune_metric(settings(metric="log_loss")) == ("log_loss", "min")
    assert tune_metric(settings(primary="f1")) == ("f1", "max")
    assert tune_metric(settings(primary="f1", metric="accuracy")) == ("accuracy", "max")


@pytest.mark.parametrize(("task", "metric"), [("classification", "rmse"), ("regression", "roc_auc"), ("classification", "auc")])
def test_a_metric_rung_does_not_compute_for_the_task_is_refused(task: str, metric: str) -> None:
    with pytest.raises(ConfigError) as caught:
        tune_metric(settings(task, metric=metric))
    assert str(caught.value).startswith(f"rung.yaml: train.tune.metric: {metric!r} is not a metric rung computes for a {task}")
    assert caught.value.field == "train.tune.metric"


def test_the_metrics_a_search_may_use_are_the_ones_evaluation_computes() -> None:
    """The oracle: rung.evaluation's own output on a classifier with probabilities and on a regressor."""
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from rung.evaluation import evaluate_model

    data = frame()
    classifier = LogisticRegression().fit(data[["a", "b"]], data["y"])
    assert set(evaluate_model(classifier, data, target="y", task="classification")["overall"]) == set(TASK_METRICS["classification"])
    regressor = LinearRegression().fit(data[["a"]], data["b"])
    scored = evaluate_model(regressor, data[["a", "b"]], target="b", task="regression")
    assert set(scored["overall"]) == set(TASK_METRICS["regression"])


# -- held-out rows, trials, the best one ----------------------------------------------------------


def test_the_validation_rows_are_held_out_stratified_and_seeded() -> None:
    data = frame(500)
    fit, valid = holdout(data, settings(validation_size=0.25))
    assert len(valid) == 125 and len(fit) == 375 and not set(fit.index) & set(valid.index)
    assert abs(valid["y"].mean() - data["y"].mean()) < 0.01
    again, _ = holdout(data, settings(validation_size=0.25))
    other, _ = holdout(data, settings(validation_size=0.25, seed=7))
    assert list(again.index) == list(fit.index) and list(other.index) != list(fit.index)


def fit_logistic(train_set, params):
    from sklearn.linear_model import LogisticRegression

    if params["C"] <= 0:
        raise ValueError("C must be positive")
    return LogisticRegression(C=params["C"], max_iter=params.get("max_iter", 100)).fit(train_set[["a", "b"]], train_set["y"])


def fit_ridge(train_set, params):
    from sklearn.linear_model import RidgeClassifier

    return RidgeClassifier().fit(train_set[["a", "b"]], train_set["y"])


def objective(func, metric: str = "roc_auc") -> Objective:
    data = frame(300)
    return Objective(func=func, uses=frozenset({"params"}), outputs=("model",), inputs={}, train=data.iloc[:200],
                     valid=data.iloc[200:], fixed={"C": 1.0, "max_iter": 100}, metric=metric, settings=settings(),
                     root=Path.cwd())


def test_a_trial_trains_with_its_draw_over_the_fixed_params_and_scores_the_held_out_rows() -> None:
    trials = run_trials_inline(objective(fit_logistic), [{"C": np.float64(0.5)}, {"C": 2.0, "max_iter": np.int64(50)}])
    assert [t.index for t in trials] == [0, 1]
    assert trials[0].params == {"C": 0.5, "max_iter": 100} and type(trials[0].params["C"]) is float
    assert trials[1].params == {"C": 2.0, "max_iter": 50} and type(trials[1].params["max_iter"]) is int
    assert all(t.error is None and 0.5 < (t.value or 0) <= 1 and set(t.metrics) == set(TASK_METRICS["classification"])
               for t in trials)


def test_a_failing_trial_is_a_result_not_an_exception() -> None:
    broken, fine = run_trials_inline(objective(fit_logistic), [{"C": -1.0}, {"C": 1.0}])
    assert broken.value is None and broken.error == "ValueError: C must be positive"
    assert fine.value is not None
    (no_proba,) = run_trials_inline(objective(fit_ridge), [{}])
    assert no_proba.value is None and no_proba.error is not None and "roc_auc" in no_proba.error
    assert "accuracy" in no_proba.metrics


def test_the_best_trial_follows_the_metric_direction_and_skips_failed_ones() -> None:
    trials = [Trial(0, {}, 0.7), Trial(1, {}, None, error="boom"), Trial(2, {}, 0.9), Trial(3, {}, 0.9), Trial(4, {}, 0.2)]
    best_max, best_min = best_trial(trials, "max"), best_trial(trials, "min")
    assert best_max is not None and best_max.index == 2  # the first of equals
    assert best_min is not None and best_min.index == 4
    assert best_trial([Trial(0, {}, None, error="x")], "max") is None


def test_the_space_in_ray_tune_terms_includes_randint_high_end() -> None:
    space = ray_space(settings().tune.space)  # type: ignore[union-attr]
    assert (space["max_iter"].lower, space["max_iter"].upper) == (50, 61)  # Ray's upper bound is exclusive
    assert (space["C"].lower, space["C"].upper) == (0.01, 10)
    assert space["fit_intercept"].categories == [True, False]


def test_without_ray_the_search_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rung.tracking import Tracking

    monkeypatch.setitem(sys.modules, "ray", None)
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=tmp_path / "art", lock_path=tmp_path / "lock")
    with pytest.raises(MissingDependency) as caught:
        TuneSearch(settings(), tmp_path, tracking=tracking, experiment="t")
    assert str(caught.value) == "train.tune needs ray, which is not installed: pip install 'rung[ray]'"
