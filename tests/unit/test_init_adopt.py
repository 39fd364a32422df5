"""The pure parts of `rung init` in an existing repository: the ignore file, the training function, the task."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rung.errors import ConfigError
from rung.templates.adopt import find_train_function, infer_task
from rung.templates.repository import ensure_ignored


def test_ensure_ignored_creates_appends_and_is_idempotent(tmp_path: Path) -> None:
    assert ensure_ignored(tmp_path) is True
    assert (tmp_path / ".gitignore").read_text() == ".rung/\n"
    assert ensure_ignored(tmp_path) is False
    (tmp_path / ".gitignore").write_text("*.pyc\n  .rung/  \nbuild")
    assert ensure_ignored(tmp_path) is False  # already there, spacing aside
    other = tmp_path / "other"
    other.mkdir()
    (other / ".gitignore").write_text("build")
    assert ensure_ignored(other) is True
    assert (other / ".gitignore").read_text() == "build\n.rung/\n"


def test_train_function_is_found_without_importing_the_file(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.py").write_text(
        "raise SystemExit('importing this file would stop rung')\n"
        "def fit(X, y):\n    pass\n\n"
        "def tuned(X, y, params):\n    pass\n"
    )
    plain = find_train_function(tmp_path, "src/model.py:fit")
    assert (plain.module, plain.call) == ("src.model", "fit(X, y)")
    assert find_train_function(tmp_path, "src/model.py:tuned").call == "tuned(X, y, params=params)"
    with pytest.raises(ConfigError, match=r"no function 'train' \(functions defined there: fit, tuned\)"):
        find_train_function(tmp_path, "src/model.py:train")
    with pytest.raises(ConfigError, match="write FILE.py:FUNCTION"):
        find_train_function(tmp_path, "src/model.py")
    (tmp_path / "my-code").mkdir()
    (tmp_path / "my-code" / "m.py").write_text("def fit(X, y):\n    pass\n")
    with pytest.raises(ConfigError, match="cannot be imported as a module"):
        find_train_function(tmp_path, "my-code/m.py:fit")


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0, 1, 1, 0], "classification"),
        (["yes", "no", "no"], "classification"),
        ([True, False], "classification"),
        ([1.0, 2.0, 3.0], "classification"),
        ([0.5, 1.25, 3.0], "regression"),
        (list(range(100)), "regression"),
    ],
)
def test_the_task_is_guessed_from_the_target(values: list, task: str) -> None:
    assert infer_task(pd.Series(values)) == task
