"""``rung init --data FILE --target COL [--train FILE.py:FUNCTION]``: rung around a team's own data and code.

The user's training function stays where it is and as it is: rung writes
``rung.yaml``, a ``rung_pipeline.py`` that calls the function between its
standard steps (or rung's default model when there is no ``--train``), and
``rung_schema.yaml`` inferred from the data (types, ranges, category sets,
nullability; id columns get no bounds). A function named ``prepare`` next to
the training function (or ``--prepare FILE.py:FUNCTION``) becomes the
project's prepare hook, packaged with every model it trains. Every
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

__all__ = ["Adoption", "TrainFunction", "find_train_function", "id_columns", "infer_task", "write_adoption"]

PIPELINE_FILE = "rung_pipeline.py"
SCHEMA_FILE = "rung_schema.yaml"
MAX_CLASSES = 20

RUNG_YAML = """\
# rung project file: every key is documented in rung's docs/configuration.md
name: {name}
task: {task}  # {task_why}
pipeline: {pipeline}:pipeline

data:
  source: {data}
  target: {target}
  schema: {schema}  # a pandera schema inferred by `rung init`: review it
{id_line}  # features: [a, b]  # the model's inputs; default: every schema column but the target, id and drop
  drop: [{drop}]{drop_why}

validation:                   # bounds start from the data `rung init` saw
  min_rows: {min_rows}
  max_missing_rate: {max_missing_rate}
  max_duplicate_rate: {max_duplicate_rate}

split:
  test_size: 0.2
  seed: 42

train:
  params: {{}}                  # passed to your training function when it takes a `params` argument
{prepare_line}
evaluate:
  slices: []                  # columns to report metrics per value of, e.g. [region]

executor:
  kind: local
  workers: 2

deploy:
  strategy: canary
"""

PIPELINE_PY = """\
\"\"\"The pipeline rung runs for {name}: {what} between rung's standard steps.

Written by `rung init`; yours to change. `prepared(train_set, ctx)` gives the
model's input columns (rung.yaml's `data:` says which){through} and the
target, so the model is fitted on exactly what evaluation, certification,
serving and batch scoring give it. Imports of your code are inside the step,
so `rung run` starts fast when everything is cached.
\"\"\"

from rung.pipeline import Pipeline, step
from rung.steps import evaluate, ingest, prepared, profile, register, split, validate

TARGET = "{target}"
{helpers}

@step(outputs="model")
def train(train_set, params, ctx):
{body}

pipeline = Pipeline("{name}", [ingest, validate, split, profile, train, evaluate, register])
"""

DEFAULT_MODEL = """

def build_model(params, categorical):
    \"\"\"rung's default model: one-hot encoded categories, gradient-boosted trees. Replace it with yours.\"\"\"
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import {estimator}
    from sklearn.pipeline import Pipeline as SkPipeline
    from sklearn.preprocessing import OneHotEncoder

    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    return SkPipeline([("encode", encode), ("model", {estimator}(**params))])
"""

DEFAULT_BODY = """\
    X, y = prepared(train_set, ctx)
    model = build_model(params, [c for c in X.columns if X[c].dtype.kind not in "biuf"])
    model.fit(X, y)
    return model
"""

ESTIMATORS = {"classification": "HistGradientBoostingClassifier", "regression": "HistGradientBoostingRegressor"}


@dataclass(frozen=True)
class TrainFunction:
    """``FILE.py:FUNCTION`` checked against the file: the module to import and how to call it.

    Two shapes of training function are recognised from their parameters:
    ``fit(X, y)`` (scikit-learn's habit: inputs and target apart) and
    ``fit(frame)`` (one frame, the target one of its columns; a ``target``
    parameter, if there is one, receives its name). Either may take
    ``params`` (``train.params`` of rung.yaml). Either returns any fitted model.
    """

    file: str
    module: str
    function: str
    takes_params: bool
    takes_frame: bool = False
    takes_target: bool = False

    @property
    def call(self) -> str:
        args = ["frame" if self.takes_frame else "X, y"]
        if self.takes_target:
            args.append("target=TARGET")
        if self.takes_params:
            args.append("params=params")
        return f"{self.function}({', '.join(args)})"

    def body(self) -> str:
        lines = [f'    """`{self.function}` from {self.file} on the training split; it returns the fitted model."""',
                 f"    from {self.module} import {self.function}", "", "    X, y = prepared(train_set, ctx)"]
        if self.takes_frame:
            lines.append("    frame = X.assign(**{TARGET: y})")
        lines.append(f"    return {self.call}")
        return "\n".join(lines) + "\n"


def find_train_function(root: Path, spec: str, *, option: str = "--train") -> TrainFunction:
    """Parse ``spec`` and find the function in the file without importing it (user code may be slow or have side effects)."""
    file, sep, function = spec.rpartition(":")
    if not sep or not file.endswith(".py") or not function:
        raise ConfigError(f"{option} {spec}: write FILE.py:FUNCTION, e.g. src/model.py:fit")
    path = root / file
    if not path.is_file():
        raise ConfigError(f"{option} {spec}: {file} not found in {root}")
    module = ".".join(Path(file).with_suffix("").parts)
    if not all(part.isidentifier() for part in module.split(".")):
        raise ConfigError(f"{option} {spec}: {file} cannot be imported as a module (every folder and the file need Python names)")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=file)
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{option} {spec}: {file} does not parse: {exc}") from None
    defined = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if function not in defined:
        known = ", ".join(defined) or "none"
        raise ConfigError(f"{option} {spec}: {file} has no function '{function}' (functions defined there: {known})")
    args = defined[function].args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    positional = [a.arg for a in (*args.posonlyargs, *args.args)]
    data_args = [a for a in positional[: len(positional) - len(args.defaults)] if a not in ("params", "target")]
    if option == "--train" and not data_args and not args.vararg:
        raise ConfigError(f"{option} {spec}: {function}() takes no data; write it as {function}(X, y) or {function}(frame)")
    return TrainFunction(file=Path(file).as_posix(), module=module, function=function, takes_params="params" in names,
                         takes_frame=len(data_args) == 1 and not args.vararg, takes_target="target" in names)


@dataclass(frozen=True)
class Adoption:
    """What ``rung init --data`` wrote, and what it inferred that a person should look at."""

    files: list[str]
    inferred: list[str]  # one line each: the task, the columns, ids, the prepare hook
    review: list[str]  # what to check before trusting the first green run


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


def id_columns(frame: pd.DataFrame, target: str) -> list[str]:
    """Columns that look like row ids: named ``id`` or ``*_id``/``*id``, one distinct value per row."""
    out = []
    for name in frame.columns:
        text = str(name).lower()
        named = text == "id" or text.endswith(("_id", "-id", " id")) or text in ("uuid", "key", "index")
        if name != target and named and frame[name].notna().all() and frame[name].is_unique:
            out.append(str(name))
    return out


def write_adoption(root: Path, *, name: str, data: str, target: str, train: str | None, task: str | None,
                   prepare: str | None = None) -> Adoption:
    """Check the arguments against the repository, then write rung's three files.

    ``train`` is the team's ``FILE.py:FUNCTION`` (without it, rung's default
    model); ``prepare`` its feature preparation, ``FILE.py:FUNCTION``; a
    function named ``prepare`` in the training file is taken when not given.
    """
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
    if task is not None and task not in ("classification", "regression"):
        raise ConfigError(f"--task {task}: use classification or regression")
    function = find_train_function(root, train) if train else None
    if prepare is None and function is not None and "prepare" in defined_functions(root, function.file):
        prepare = f"{function.file}:prepare"
    hook = find_train_function(root, prepare, option="--prepare") if prepare else None
    task_why = f"given with --task {task}" if task else _task_reason(frame[target])
    task = task or infer_task(frame[target])
    ids = id_columns(frame, target)
    constant = [str(c) for c in frame.columns if c != target and c not in ids and frame[c].nunique(dropna=False) <= 1]
    source = data_path.relative_to(root).as_posix() if data_path.is_relative_to(root) else str(data_path)
    missing = float(frame.isna().mean().max())
    fields = {
        "name": name,
        "task": task,
        "task_why": task_why,
        "pipeline": PIPELINE_FILE,
        "data": _yaml_scalar(source),
        "target": _yaml_scalar(target),
        "schema": SCHEMA_FILE,
        "id_line": f"  id: [{', '.join(_yaml_scalar(c) for c in ids)}]  # row ids: never a model input\n" if ids else "",
        "prepare_line": f"  prepare: {hook.file}:{hook.function}  # raw rows in, the model's features out; packaged with the model\n"
        if hook else "",
        "drop": ", ".join(_yaml_scalar(c) for c in constant),
        "drop_why": "  # constant in the data: no use to a model" if constant else "  # columns the model must not take",
        "min_rows": min(100, len(frame)),
        "max_missing_rate": _bound(missing, 0.05),
        "max_duplicate_rate": _bound(float(frame.duplicated().mean()), 0.01),
    }
    schema = infer_schema(frame)
    for column in ids:  # the next batch brings new ids: no range or value set for them
        schema = schema.update_column(column, checks=[])
    schema.to_yaml(root / SCHEMA_FILE)
    pipeline = PIPELINE_PY.format(
        name=name,
        target=target.replace("\\", "\\\\").replace('"', '\\"'),
        what=f"`{function.function}` from {function.file}" if function else "rung's default model",
        through=f", through `{hook.function}` from {hook.file}," if hook else "",
        helpers=DEFAULT_MODEL.format(estimator=ESTIMATORS[task]) if function is None else "",
        body=function.body() if function else DEFAULT_BODY,
    )
    (root / PIPELINE_FILE).write_text(pipeline, encoding="utf-8")
    (root / PROJECT_FILE).write_text(RUNG_YAML.format(**fields), encoding="utf-8")
    inputs = [str(c) for c in frame.columns if c != target and c not in ids and c not in constant]
    numeric = [c for c in inputs if frame[c].dtype.kind in "biuf"]
    text = [c for c in inputs if c not in numeric]
    inferred = [
        f"task: {task} ({task_why})",
        f"{len(frame)} rows; model inputs: {len(numeric)} numeric ({_names(numeric)}), {len(text)} text ({_names(text)})",
    ]
    if ids:
        inferred.append(f"row ids, never inputs: {', '.join(ids)}")
    if constant:
        inferred.append(f"constant, dropped: {', '.join(constant)}")
    if hook:
        inferred.append(f"prepare hook: {hook.file}:{hook.function}, run before the model in training, serving and batch scoring")
    review = [f"{SCHEMA_FILE}: numeric ranges are the observed ones widened by half their span; text columns with at most "
              "50 values accept only the values seen (an unseen one fails validation)"]
    nullable = [str(c) for c in frame.columns if frame[c].isna().any()]
    if nullable:
        review.append(f"columns with missing values (allowed by the schema): {_names(nullable)}")
    review.append("rung.yaml data: list `features:` or `drop:` if the model should not take every column above")
    return Adoption(files=[PROJECT_FILE, PIPELINE_FILE, SCHEMA_FILE], inferred=inferred, review=review)


def _task_reason(target: pd.Series) -> str:
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        return "the target is text or yes/no"
    values = target.dropna()
    if infer_task(target) == "classification":
        return f"the target has {values.nunique()} whole-number values"
    return f"the target is numeric with {values.nunique()} distinct values"


def _names(columns: list[str], limit: int = 6) -> str:
    return ", ".join(columns[:limit]) + (f", … {len(columns) - limit} more" if len(columns) > limit else "") if columns else "none"


def defined_functions(root: Path, file: str) -> set[str]:
    """The top-level function names of a Python file, found by parsing it (empty when it does not parse)."""
    try:
        tree = ast.parse((root / file).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return set()
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _yaml_scalar(value: str) -> str:
    """A plain YAML scalar when it is safe to write one, else a single-quoted string."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", value) and value.lower() not in ("true", "false", "null", "yes", "no", "on", "off"):
        return value
    return "'" + value.replace("'", "''") + "'"
