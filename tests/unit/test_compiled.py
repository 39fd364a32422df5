"""The compiled route through a scikit-learn pipeline: identical answers, or no compiled route at all."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from rung.models.compiled import CompiledPipeline, compile_model
from rung.models.loaded import LoadedModel
from rung.models.signature import Column, to_frame
from rung.serving.batching import predict_columns

NUMERIC = ["tenure", "charges", "calls"]
TEXT = ["contract", "region"]


def _frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "tenure": rng.integers(0, 72, rows),
        "charges": rng.normal(70, 20, rows).round(2),
        "calls": rng.integers(0, 9, rows),
        "contract": rng.choice(["monthly", "yearly", "two-year"], rows),
        "region": rng.choice(["north", "south", "east", "west"], rows),
    })
    frame.loc[rng.random(rows) < 0.05, "charges"] = np.nan
    return frame


def _target(frame: pd.DataFrame) -> np.ndarray:
    return ((frame["tenure"] < 20) ^ (frame["contract"] == "yearly")).astype(int).to_numpy()


def _model(estimator: Any, task: str = "classification", columns: list[Column] | None = None) -> LoadedModel:
    columns = columns or [Column(n, "long" if n != "charges" else "double") for n in NUMERIC] + [Column(n, "string") for n in TEXT]
    classes = [c.item() for c in getattr(estimator, "classes_", [])]
    return LoadedModel("m", 1, "sklearn", task, columns, estimator, Path("."), classes)


def _encoder(**kwargs: Any) -> ColumnTransformer:
    return ColumnTransformer(
        [("text", OneHotEncoder(handle_unknown="ignore", sparse_output=False), TEXT),
         ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), ["charges"])],
        remainder="passthrough", **kwargs)


def _requests(seed: int) -> list[dict[str, list[Any]]]:
    """Batches of 1 to 40 rows as a client sends them: plain Python values, missing values as None, some categories never seen."""
    rng = np.random.default_rng(seed)
    out = []
    for i, size in enumerate((1, 1, 2, 7, 40, 3)):
        frame = _frame(size, seed=int(rng.integers(1 << 30)))
        columns = {name: [None if pd.isna(v) else v for v in frame[name].tolist()] for name in frame}
        if i % 2 == 0:
            columns["region"][0] = "atlantis"
        if i % 3 == 2:
            columns["calls"][-1] = None
        out.append(columns)
    return out


def _assert_same_answers(model: LoadedModel, compiled: CompiledPipeline, seed: int = 1) -> None:
    """Same outputs to the bit, and the same refusals (a model without an imputer refuses missing values)."""
    answered = 0
    for columns in _requests(seed):
        try:
            expected = model.predict(to_frame(model.columns, columns))
        except ValueError:
            with pytest.raises(ValueError):
                model.outputs(compiled, columns)
            continue
        answered += 1
        got = model.outputs(compiled, columns)
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key].dtype == expected[key].dtype
            np.testing.assert_array_equal(got[key], expected[key])  # bit for bit, not approximately
    assert answered >= 3


FITTED = {
    "one-hot + scaled + passthrough → logistic regression": lambda: make_pipeline(_encoder(), LogisticRegression(max_iter=500)),
    "one-hot → boosted trees": lambda: make_pipeline(_encoder(), HistGradientBoostingClassifier(max_iter=30)),
    "one-hot → nested impute + logistic": lambda: make_pipeline(_encoder(), make_pipeline(SimpleImputer(), LogisticRegression(max_iter=500))),
    "columns by position, a dropped one": lambda: make_pipeline(
        ColumnTransformer([("text", OneHotEncoder(handle_unknown="ignore", sparse_output=False), [3, 4]),
                           ("gone", "drop", [1]), ("kept", "passthrough", [0, 2])]),
        LogisticRegression(max_iter=500)),
}


@pytest.mark.parametrize("name", list(FITTED))
def test_a_compiled_pipeline_answers_exactly_as_the_estimator(name: str) -> None:
    train = _frame(600)
    estimator = FITTED[name]().fit(train, _target(train))
    model = _model(estimator)
    compiled, why = compile_model(model, train)
    assert compiled is not None, why
    _assert_same_answers(model, compiled)
    model.compiled = compiled
    columns = _requests(7)[4]
    np.testing.assert_array_equal(predict_columns(model, columns)["proba"], model.predict(to_frame(model.columns, columns))["proba"])


def test_regression_and_a_plain_estimator_on_named_columns_compile_too() -> None:
    train = _frame(400).fillna({"charges": 70.0})
    ridge = make_pipeline(_encoder(), Ridge()).fit(train, train["charges"].to_numpy() * 2)
    model = _model(ridge, task="regression")
    compiled, why = compile_model(model, train)
    assert compiled is not None, why
    _assert_same_answers(model, compiled)

    numbers = train[NUMERIC]
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(numbers, _target(train))
    plain = _model(forest, columns=[Column(n, "double") for n in NUMERIC])
    compiled, why = compile_model(plain, numbers)
    assert compiled is not None, why
    for columns in _requests(3):
        columns = {n: [70.0 if v is None else v for v in columns[n]] for n in NUMERIC}
        np.testing.assert_array_equal(plain.outputs(compiled, columns)["proba"], plain.predict(to_frame(plain.columns, columns))["proba"])


def test_a_classifier_without_probabilities_answers_labels_only() -> None:
    train = _frame(300)
    model = _model(make_pipeline(_encoder(), RidgeClassifier()).fit(train, _target(train)))
    compiled, why = compile_model(model, train)
    assert compiled is not None, why
    assert set(model.outputs(compiled, _requests(4)[3])) == {"predict"}
    _assert_same_answers(model, compiled)


def test_a_single_column_name_hands_the_transformer_a_1d_array() -> None:
    train = _frame(300)
    lengths = FunctionTransformer(_name_lengths)
    estimator = make_pipeline(
        ColumnTransformer([("len", lengths, "region"), ("text", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["contract"])]),
        LogisticRegression()).fit(train, _target(train))
    model = _model(estimator)
    compiled, why = compile_model(model, train)
    assert compiled is not None, why
    assert compiled.blocks[0].one_d
    _assert_same_answers(model, compiled)


def test_the_compiled_route_travels_to_a_worker_process_intact() -> None:
    train = _frame(300)
    model = _model(FITTED["one-hot → boosted trees"]().fit(train, _target(train)))
    model.compiled, _ = compile_model(model, train)
    copy = pickle.loads(pickle.dumps(model))
    columns = _requests(5)[4]
    np.testing.assert_array_equal(predict_columns(copy, columns)["proba"], model.predict(to_frame(model.columns, columns))["proba"])


def _name_lengths(values: Any) -> np.ndarray:
    return np.asarray([[len(str(v))] for v in values], dtype=float)


def _frames_count_double(values: Any) -> np.ndarray:
    """Behaves differently on a frame than on an array: the check at load time must catch it."""
    factor = 2.0 if isinstance(values, pd.DataFrame) else 3.0
    return np.asarray(values, dtype=float) * factor


def _needs_a_frame(values: Any) -> np.ndarray:
    return values[["tenure"]].to_numpy(dtype=float)


@pytest.mark.parametrize(("build", "reason"), [
    (lambda: make_pipeline(ColumnTransformer([("n", FunctionTransformer(_frames_count_double), NUMERIC[:1])]), LogisticRegression()),
     "differs from the estimator's"),
    (lambda: make_pipeline(ColumnTransformer([("n", FunctionTransformer(_needs_a_frame), NUMERIC)]), LogisticRegression()),
     "the compiled route fails"),
    (lambda: make_pipeline(ColumnTransformer([("t", OneHotEncoder(handle_unknown="ignore"), TEXT)], sparse_threshold=1.0),
                           LogisticRegression()), "sparse"),
    (lambda: make_pipeline(_encoder(), LogisticRegression(max_iter=500)).set_output(transform="pandas"), "frames"),
    (lambda: make_pipeline(SimpleImputer(), LogisticRegression()), "neither a pipeline"),
])
def test_whatever_it_cannot_reproduce_stays_on_the_estimator(build: Any, reason: str) -> None:
    train = _frame(300)
    if reason == "neither a pipeline":
        train = train[NUMERIC].to_numpy()  # fitted on an array: no column names to go by
    estimator = build().fit(train, _target(_frame(300)))
    model = _model(estimator)
    compiled, why = compile_model(model, _frame(300))
    assert compiled is None
    assert why and reason in why


def test_no_training_rows_or_another_flavour_means_no_compiled_route() -> None:
    train = _frame(200)
    model = _model(FITTED["one-hot → boosted trees"]().fit(train, _target(train)))
    assert compile_model(model, None) == (None, "no training rows to check it against")
    assert compile_model(model, train.drop(columns=["region"]))[1] == "the training rows lack 'region'"
    model.flavor = "pyfunc"
    assert compile_model(model, train) == (None, "pyfunc flavour")


def test_an_estimator_that_refuses_missing_values_is_matched_by_the_compiled_route() -> None:
    train = _frame(300).fillna({"charges": 70.0})
    estimator = make_pipeline(
        ColumnTransformer([("t", OneHotEncoder(handle_unknown="ignore", sparse_output=False), TEXT)], remainder="passthrough"),
        LogisticRegression(max_iter=500)).fit(train, _target(train))
    model = _model(estimator)
    compiled, why = compile_model(model, train)  # the checks include missing values, which both routes refuse
    assert compiled is not None, why
    row = {name: values[:1] for name, values in _requests(2)[0].items()} | {"tenure": [None]}
    with pytest.raises(ValueError):
        model.predict(to_frame(model.columns, row))
    with pytest.raises(ValueError):
        model.outputs(compiled, row)


@pytest.mark.parametrize(("name", "lowered"), [
    ("one-hot + scaled + passthrough → logistic regression", ("_OneHot", "_Impute", "_Scale", "_Logistic")),
    ("one-hot → boosted trees", ("_OneHot", "_Impute", "_Scale", "_Boosted")),
    ("one-hot → nested impute + logistic", ("_OneHot", "_Impute", "_Scale", "_Impute", "_Logistic")),
])
def test_simple_steps_run_as_numpy_and_answer_the_same(name: str, lowered: tuple[str, ...]) -> None:
    train = _frame(600)
    model = _model(FITTED[name]().fit(train, _target(train)))
    compiled, why = compile_model(model, train)
    assert compiled is not None, why
    assert compiled.lowered == lowered
    _assert_same_answers(model, compiled, seed=11)


@pytest.mark.parametrize("kind", ["two classes", "three classes", "regression"])
def test_boosted_trees_walked_in_numpy_answer_to_the_bit_with_missing_values_and_large_batches(kind: str) -> None:
    """Small batches go down every tree at once; a batch past MAX_ROWS (40 rows here) is scikit-learn's again."""
    from rung.models.lowered import _Boosted

    train = _frame(800, seed=3)
    train.loc[train.index % 11 == 0, "calls"] = np.nan  # NaN reaching the trees, not only the imputed column
    if kind == "regression":
        estimator = make_pipeline(_encoder(), HistGradientBoostingRegressor(max_iter=80, random_state=0))
        target: Any = train["tenure"].to_numpy() * 1.5
    else:
        estimator = make_pipeline(_encoder(), HistGradientBoostingClassifier(max_iter=80, random_state=0))
        target = _target(train) if kind == "two classes" else np.asarray(train["tenure"] // 25, dtype=int)
    model = _model(estimator.fit(train, target), task="regression" if kind == "regression" else "classification")
    compiled, why = compile_model(model, train)
    assert compiled is not None, why
    assert compiled.lowered[-1] == "_Boosted"
    assert max(len(c["tenure"]) for c in _requests(5)) > _Boosted.MAX_ROWS
    for seed in (5, 6):
        _assert_same_answers(model, compiled, seed=seed)


def test_boosted_trees_with_native_categories_stay_on_scikit_learn() -> None:
    train = _frame(500)
    calls = 9  # after the encoder: 3 + 4 one-hot columns, charges, tenure, then calls
    estimator = make_pipeline(_encoder(), HistGradientBoostingClassifier(max_iter=20, categorical_features=[calls]))
    model = _model(estimator.fit(train, _target(train)))
    compiled, why = compile_model(model, train)
    assert compiled is not None, why
    assert "_Boosted" not in compiled.lowered
    _assert_same_answers(model, compiled)


def test_numeric_columns_as_arrays_answer_as_lists_do() -> None:
    """check_columns hands the route int64 / float64 arrays (NaN missing); a batch of requests may be lists."""
    train = _frame(400)
    model = _model(FITTED["one-hot → nested impute + logistic"]().fit(train, _target(train)))
    model.compiled, _ = compile_model(model, train)
    for columns in _requests(9):
        arrays = {n: np.array([np.nan if v is None else v for v in vs], dtype=float) if n in NUMERIC else vs
                  for n, vs in columns.items()}
        for key, values in predict_columns(model, columns).items():
            np.testing.assert_array_equal(predict_columns(model, arrays)[key], values)
            np.testing.assert_array_equal(model.predict(to_frame(model.columns, arrays))[key], values)


def test_missing_and_unseen_categories_and_many_classes() -> None:
    """NaN as a category of its own, None and unseen categories as none, softmax over three classes."""
    train = _frame(250)  # all of them checked, the first with a region (a column that starts with None is not text to pandas)
    train["region"] = train["region"].astype(object)
    train.loc[train.index % 7 == 3, "region"] = np.nan
    target = np.asarray(train["tenure"] // 25, dtype=int)  # 0, 1, 2
    model = _model(FITTED["one-hot + scaled + passthrough → logistic regression"]().fit(train, target))
    compiled, why = compile_model(model, train)
    assert compiled is not None, why
    assert "_Logistic" in compiled.lowered and len(model.classes) == 3
    rows = {name: values[:2] for name, values in _requests(3)[3].items()}
    for region in (None, float("nan"), "atlantis", "north"):
        columns = {**rows, "region": ["south", region]}
        expected = model.predict(to_frame(model.columns, columns))
        for key, values in model.outputs(compiled, columns).items():
            np.testing.assert_array_equal(values, expected[key])


def test_infinity_is_refused_where_the_estimator_refuses_it() -> None:
    train = _frame(300)
    row = {name: values[:1] for name, values in _requests(2)[1].items()} | {"charges": [float("inf")]}
    for name in ("one-hot + scaled + passthrough → logistic regression", "one-hot → nested impute + logistic"):
        model = _model(FITTED[name]().fit(train, _target(train)))
        compiled, why = compile_model(model, train)
        assert compiled is not None and compiled.lowered, why
        with pytest.raises(ValueError):
            model.predict(to_frame(model.columns, row))
        with pytest.raises(ValueError, match="infinity"):
            model.outputs(compiled, row)


def test_a_lowered_route_that_differs_gives_way_to_the_fitted_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from rung.models import lowered

    real = lowered._Logistic.predict_proba
    monkeypatch.setattr(lowered._Logistic, "predict_proba", lambda self, X: real(self, X) * (1 + 1e-12))
    train = _frame(300)
    model = _model(FITTED["one-hot + scaled + passthrough → logistic regression"]().fit(train, _target(train)))
    compiled, why = compile_model(model, train)
    assert compiled is not None, why
    assert compiled.lowered == ()
    _assert_same_answers(model, compiled)
