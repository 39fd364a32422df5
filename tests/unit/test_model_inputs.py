"""Which columns are the model's inputs, and a trained model seen through its inputs and prepare hook."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from rung.config.pipeline import DataSettings
from rung.data.features import model_inputs
from rung.errors import ConfigError
from rung.models.hooks import PrepareHook
from rung.models.trained import as_trained

COLUMNS = ["customer_id", "age", "region", "year", "churned"]


def test_every_known_column_but_target_id_and_drop() -> None:
    data = DataSettings(target="churned", id="customer_id", drop=["year"])
    assert model_inputs(COLUMNS, data) == ["age", "region"]


def test_a_column_the_schema_does_not_know_is_never_an_input() -> None:
    data = DataSettings(target="churned")
    assert model_inputs([*COLUMNS, "discount"], data, known=COLUMNS) == ["customer_id", "age", "region", "year"]


def test_declared_features_win_and_are_checked() -> None:
    assert model_inputs(COLUMNS, DataSettings(target="churned", features=["region", "age"])) == ["region", "age"]
    with pytest.raises(ConfigError, match="tenure"):
        model_inputs(COLUMNS, DataSettings(target="churned", features=["tenure"]))
    with pytest.raises(ConfigError, match="target"):
        model_inputs(COLUMNS, DataSettings(target="churned", features=["churned"]))


def test_no_input_left_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no input columns"):
        model_inputs(["churned", "id"], DataSettings(target="churned", id=["id"]))


def test_a_trained_model_takes_raw_rows_through_its_prepare_hook(tmp_path: Path) -> None:
    (tmp_path / "prep.py").write_text("def prepare(frame):\n    return frame.assign(age=frame['age'] * 2)\n")
    frame = pd.DataFrame({"age": [10.0, 20.0, 30.0, 40.0], "extra": list("abcd"), "y": [0, 0, 1, 1]})
    fitted = LogisticRegression().fit(frame[["age"]] * 2, frame["y"])
    trained = as_trained(fitted, task="classification", inputs=["age"], target=frame["y"],
                         prepare=PrepareHook.from_spec("prep.py:prepare", tmp_path))
    assert trained.flavor == "sklearn" and trained.classes == [0, 1] and trained.classes_ == [0, 1]
    expected = fitted.predict_proba(frame[["age"]] * 2)
    assert (trained.predict_proba(frame) == expected).all()  # the extra column is left out, age is doubled
    again = pickle.loads(pickle.dumps(trained))  # travels to workers: the hook is imported again, not pickled
    assert (again.predict_proba(frame) == expected).all()
    with pytest.raises(ConfigError, match="age"):
        trained.predict(frame.drop(columns=["age"]))


def test_a_prepare_hook_that_is_not_there_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FILE.py:FUNCTION"):
        PrepareHook.from_spec("prep:prepare", tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        PrepareHook.from_spec("nope.py:prepare", tmp_path)
    (tmp_path / "prep.py").write_text("def other(frame):\n    return frame\n")
    with pytest.raises(ConfigError, match="no function 'prepare'"):
        PrepareHook.from_spec("prep.py:prepare", tmp_path).load()
