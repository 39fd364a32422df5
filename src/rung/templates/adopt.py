"""``rung init --data ... --target ... --train FILE.py:FUNCTION``: rung around a repository that already has a model.

The user's training function stays where it is and as it is: rung writes
``rung.yaml``, a ``rung_pipeline.py`` that calls the function between its
standard steps, and ``rung_schema.yaml`` inferred from the data. Every
argument is checked before a file is written, so a typo costs nothing:
a target that is not a column lists the columns, a function that is not in
the file lists the functions. The validation bounds start from what the
data shows, so the first ``rung run`` is green on the data it was set up
with and stops on a batch that is worse.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rung.errors import ConfigError, DataError, ProjectExists

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TrainFunction", "write_adoption", "find_train_function", "infer_task"]

PIPELINE_FILE = "rung_pipeline.py"
SCHEMA_FILE = "rung_schema.yaml"
MAX_CLASSES = 20

RUNG_YAML = """\
# rung project file: every key is documented in rung's docs/configuration.md
name: {name}
task: {task}
pipeline: {pipeline}:pipeline

data:
  source: {data}
  target: {target}
  schema: {schema}            # pandera schema inferred by `rung init`: edit it

validation:                   # bounds start from the data `rung init` saw
  min_rows: {min_rows}
  max_missing_rate: {max_missing_rate}
  max_duplicate_rate: {max_duplicate_rate}

split:
  test_size: 0.2
  seed: 42

train:
  params: {{}}                  # passed to {function} when it takes a `params` argument

evaluate:
  slices: []                  # columns to report metrics per value of, e.g. [region]

executor:
  kind: local
  workers: 2

deploy:
  strategy: canary
"""

PIPELINE_PY = '''\
"""The pipeline rung runs for {name}: `{function}` from {file} between rung's standard steps.

Written by `rung init`; yours to change. The import of your code is inside
the step, so `rung run` starts fast when everything is cached.
"""

from rung.pipeline import Pipeline, step
from rung.steps import evaluate, ingest, profile, register, split, validate

TARGET = "{target}"


@step(outputs="model")
def train(train_set, params):
    """Your training function on the training split: features X, target y; it returns the fitted model."""
    from {module} import {function}

    X = train_set.drop(columns=[TARGET])
    y = train_set[TARGET]
    return {call}


pipeline = Pipeline("{name}", [ingest, validate, split, profile, train, evaluate, register])
'''


@dataclass(frozen=True)
class TrainFunction:
    """``FILE.py:FUNCTION`` checked against the file: the module to import and how to call it."""

    file: str
    module: str
    function: str
    takes_params: bool

    @property
    def call(self) -> str:
        return f"{self.function}(X, y, params=params)" if self.takes_params else f"{self.function}(X, y)"


def find_train_function(root: Path, spec: str) -> TrainFunction:
    """Parse ``spec`` and find the function in the file without importing it (user code may be slow or have side effects)."""
    file, sep, function = spec.rpartition(":")
    if not sep or not file.endswith(".py") or not function:
        raise ConfigError(f"--train {spec}: write FILE.py:FUNCTION, e.g. src/model.py:fit")
    path = root / file
    if not path.is_file():
        raise ConfigError(f"--train {spec}: {file} not found in {root}")
    module = ".".join(Path(file).with_suffix("").parts)
    if not all(part.isidentifier() for part in module.split(".")):
        raise ConfigError(f"--train {spec}: {file} cannot be imported as a module (every folder and the file need Python names)")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=file)
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--train {spec}: {file} does not parse: {exc}") from None
    defined = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if function not in defined:
        known = ", ".join(defined) or "none"
        raise ConfigError(f"--train {spec}: {file} has no function '{function}' (functions defined there: {known})")
    args = defined[function].args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return TrainFunction(file=Path(file).as_posix(), module=module, function=function, takes_params="params" in names)


def infer_task(target: pd.Series) -> str:
    """Classification for text, booleans and integers with at most 20 values; regression otherwise."""
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        return "classification"
    values = target.dropna()
    whole = bool((values == values.round()).all())
    return "classification" if whole and values.nunique() <= MAX_CLASSES else "regression"


def _bound(observed: float, default: float) -> float:
    """The default, or the observed rate rounded up to the next percent when the data already exceeds it."""
    return default if observed <= default else min(1.0, math.ceil(round(observed * 100, 6)) / 100)


def write_adoption(root: Path, *, name: str, data: str, target: str, train: str, task: str | None) -> list[str]:
    """Check the arguments against the repository, then write rung's three files; returns their names."""
    from rung.config import PROJECT_FILE
    from rung.data.sources import read_table
    from rung.data.validation import infer_schema

    if (root / PROJECT_FILE).exists():
        raise ProjectExists(f"{root} already holds a rung project ({PROJECT_FILE}); edit it or run `rung run`")
    taken = [f for f in (PIPELINE_FILE, SCHEMA_FILE) if (root / f).exists()]
    if taken:
        raise ProjectExists(f"{root}: {', '.join(taken)} already exist; rung will not overwrite them")
    data_path = Path(data) if Path(data).is_absolute() else root / data
    frame = read_table(data_path, label=f"--data {data}")
    if target not in frame.columns:
        raise DataError(f"--target {target}: no such column in {data}; its columns are: {', '.join(map(str, frame.columns))}")
    function = find_train_function(root, train)
    task = task or infer_task(frame[target])
    source = data_path.relative_to(root).as_posix() if data_path.is_relative_to(root) else str(data_path)
    missing = float(frame.isna().mean().max())
    fields = {
        "name": name,
        "task": task,
        "pipeline": PIPELINE_FILE,
        "data": _yaml_scalar(source),
        "target": _yaml_scalar(target),
        "schema": SCHEMA_FILE,
        "min_rows": min(100, len(frame)),
        "max_missing_rate": _bound(missing, 0.05),
        "max_duplicate_rate": _bound(float(frame.duplicated().mean()), 0.01),
        "function": function.function,
        "file": function.file,
        "module": function.module,
        "call": function.call,
    }
    infer_schema(frame).to_yaml(root / SCHEMA_FILE)
    (root / PIPELINE_FILE).write_text(PIPELINE_PY.format(**fields | {"target": target.replace('"', '\\"')}), encoding="utf-8")
    (root / PROJECT_FILE).write_text(RUNG_YAML.format(**fields), encoding="utf-8")
    return [PROJECT_FILE, PIPELINE_FILE, SCHEMA_FILE]


def _yaml_scalar(value: str) -> str:
    """A plain YAML scalar when it is safe to write one, else a single-quoted string."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", value) and value.lower() not in ("true", "false", "null", "yes", "no", "on", "off"):
        return value
    return "'" + value.replace("'", "''") + "'"
