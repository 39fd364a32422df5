"""``rung init``: a new project that runs green out of the box, or rung around an existing repository.

A template writes ``rung.yaml``, sample data from a bundled generator, a
``pipeline.py`` with the user's ``train`` step around rung's standard
steps, a pandera schema inferred from the sample, unit tests for the
scoring code, a GitHub Actions workflow and a README. Adopting a
repository (:func:`adopt_repository`, see :mod:`rung.templates.adopt`)
writes only rung's own three files around the user's data and function.
Both ignore ``.rung/`` in git and make the first commit when they made the
repository (:mod:`rung.templates.repository` says what happens inside an
existing one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rung.errors import ProjectExists, RungError
from rung.templates.repository import GitOutcome, ensure_ignored, start_repository

__all__ = ["TEMPLATES", "Template", "Initialised", "create_project", "init_project", "adopt_repository"]


@dataclass(frozen=True)
class Template:
    name: str
    task: str
    dataset: str
    target: str
    slices: tuple[str, ...]
    estimator: str
    description: str


TEMPLATES = {
    "tabular-classification": Template(
        "tabular-classification",
        "classification",
        "churn",
        "churned",
        ("contract", "region"),
        "HistGradientBoostingClassifier",
        "predict which customers will churn",
    ),
    "tabular-regression": Template(
        "tabular-regression",
        "regression",
        "demand",
        "units_sold",
        ("store_size",),
        "HistGradientBoostingRegressor",
        "predict daily units sold per store",
    ),
}

RUNG_YAML = """\
# rung project file: every key is documented in rung's docs/configuration.md
name: {name}
task: {task}
pipeline: pipeline.py:pipeline

data:
  source: data/train.csv      # CSV or Parquet path, or {{url: SQLALCHEMY_URL, query: SELECT ...}}
  target: {target}
  schema: schema.yaml         # pandera schema inferred by `rung init`: edit it

validation:
  min_rows: 100
  max_missing_rate: 0.05
  max_duplicate_rate: 0.01

split:
  test_size: 0.2
  seed: 42

train:
  params:
    learning_rate: 0.1
    max_iter: 200
    max_leaf_nodes: 31
    random_state: 0

evaluate:
  slices: [{slices}]

executor:
  kind: local                 # or: ray (address: ray://... to use a cluster)
  workers: 2

deploy:
  strategy: canary
"""

PIPELINE_PY = '''\
"""The training pipeline of {name}: {description}.

rung's standard steps do ingestion, validation, splitting, evaluation and
registration; `train` is yours. Keep heavy imports inside functions so
`rung run` starts fast when everything is cached.
"""

from rung.pipeline import Pipeline, step
from rung.steps import evaluate, ingest, profile, register, split, validate

TARGET = "{target}"


def build_model(params, categorical):
    """The estimator: one-hot encoded categories, gradient-boosted trees."""
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


def categorical_columns(frame):
    return [c for c in frame.columns if not (frame[c].dtype.kind in "biuf")]


@step(outputs="model")
def train(train_set, params):
    X = train_set.drop(columns=[TARGET])
    y = train_set[TARGET]
    model = build_model(params, categorical_columns(X))
    model.fit(X, y)
    return model


pipeline = Pipeline("{name}", [ingest, validate, split, profile, train, evaluate, register])
'''

TEST_PY = '''\
"""Unit tests for the scoring code of {name}: run them with `pytest`."""

import pandas as pd
import pytest

import pipeline

DATA = "data/train.csv"
PARAMS = {{"max_iter": 50, "random_state": 0}}


@pytest.fixture(scope="module")
def frame():
    return pd.read_csv(DATA)


def test_train_returns_a_model_that_scores_every_row(frame):
    model = pipeline.train(frame, PARAMS)
    X = frame.drop(columns=[pipeline.TARGET]).head(50)
    assert len(model.predict(X)) == 50


def test_model_beats_a_constant_guess(frame):
    cut = int(len(frame) * 0.75)
    train, test = frame.iloc[:cut], frame.iloc[cut:]
    model = pipeline.train(train, PARAMS)
    X, y = test.drop(columns=[pipeline.TARGET]), test[pipeline.TARGET]
    {quality_check}


def test_unseen_category_does_not_break_scoring(frame):
    model = pipeline.train(frame, PARAMS)
    row = frame.drop(columns=[pipeline.TARGET]).head(1).copy()
    column = pipeline.categorical_columns(row)[0]
    row[column] = "never-seen-before"
    assert len(model.predict(row)) == 1
'''

QUALITY = {
    # Ranking, not accuracy: on a few hundred imbalanced rows accuracy can tie the majority class by chance.
    "classification": "from sklearn.metrics import roc_auc_score\n\n    auc = roc_auc_score(y, model.predict_proba(X)[:, 1])\n"
                      "    assert auc > 0.6, f\"AUC {auc:.3f}: no better than a constant guess (0.5)\"",
    "regression": "error = (model.predict(X) - y).abs().mean()\n    assert error < (y - y.mean()).abs().mean()",
}

WORKFLOW = """\
name: {name}
on:
  push:
  pull_request:
  schedule:
    - cron: "0 3 * * 1"   # weekly retraining on the latest data
jobs:
  train:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install rung pytest
      - name: Unit tests of the scoring code
        run: pytest -q tests
      - name: Pipeline (validate, train, evaluate, register)
        run: rung run
"""

README = """\
# {name}

A rung project: {description}.

```
rung run                 # ingest ▸ validate ▸ train ▸ evaluate ▸ register (tracked in MLflow)
rung runs                # pipeline runs: status, duration, metrics, cache hits
rung models              # registered versions, aliases, metrics
rung lineage {name}:1     # data snapshot ▸ code ▸ params ▸ environment ▸ run ▸ version
rung reproduce {name}:1   # re-run from the record and compare metrics
pytest tests             # unit tests of the scoring code
```

- `rung.yaml`: the project's settings (data source, validation bounds, split, training parameters, slices).
- `pipeline.py`: the pipeline; `train` is yours to change.
- `schema.yaml`: the pandera schema the data must pass before training (inferred from the sample; edit it).
- `data/train.csv`: sample data made by rung's generator; point `data.source` at your own.
- `.rung/`: rung's state (metadata, MLflow store, artifacts, logs); not committed.
"""

GITIGNORE = ".rung/\n__pycache__/\n"


@dataclass(frozen=True)
class Initialised:
    """What ``rung init`` made: the project's directory, the files it wrote, and what it did with git."""

    root: Path
    files: list[str]
    git: GitOutcome | None
    inferred: list[str] = field(default_factory=list)  # with --data: what rung read from the data and code
    review: list[str] = field(default_factory=list)  # and what a person should check


def create_project(name: str, template: str = "tabular-classification", directory: Path | None = None, *, rows: int = 4000, git: bool = True) -> Path:
    """Write a new project; returns its directory. Refuses to overwrite one."""
    return init_project(name, template, directory, rows=rows, git=git).root


def _check_name(name: str) -> None:
    from rung.config import Settings

    try:
        Settings(name=name)
    except Exception:
        raise RungError(f"'{name}' is not a valid project name; use letters, digits, '-', '_' and '.'") from None


def init_project(name: str, template: str = "tabular-classification", directory: Path | None = None, *, rows: int = 4000,
                 git: bool = True) -> Initialised:
    """Write a new project from a template, then start its repository (see :mod:`rung.templates.repository`)."""
    from rung.config import PROJECT_FILE
    from rung.data.validation import infer_schema
    from rung.templates.datasets import DATASETS

    if template not in TEMPLATES:
        raise RungError(f"unknown template '{template}'; use one of {', '.join(TEMPLATES)}")
    _check_name(name)
    spec = TEMPLATES[template]
    root = (directory or Path(name)).resolve()
    if (root / PROJECT_FILE).exists():
        raise ProjectExists(f"{root} already holds a rung project; choose another directory")
    if root.exists() and any(root.iterdir()):
        raise ProjectExists(f"{root} exists and is not empty; choose a new directory or --dir")
    frame = DATASETS[spec.dataset](rows=rows)
    fields = {
        "name": name,
        "task": spec.task,
        "target": spec.target,
        "slices": ", ".join(spec.slices),
        "estimator": spec.estimator,
        "description": spec.description,
        "quality_check": QUALITY[spec.task],
    }
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "tests").mkdir(exist_ok=True)
    (root / ".github" / "workflows").mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / "data" / "train.csv", index=False)
    infer_schema(frame).to_yaml(root / "schema.yaml")
    files = {
        PROJECT_FILE: RUNG_YAML,
        "pipeline.py": PIPELINE_PY,
        "tests/test_scoring.py": TEST_PY,
        "tests/conftest.py": "import sys\nfrom pathlib import Path\n\nsys.path.insert(0, str(Path(__file__).parent.parent))\n",
        ".github/workflows/rung.yml": WORKFLOW,
        "README.md": README,
        ".gitignore": GITIGNORE,
    }
    for relative, text in files.items():
        (root / relative).write_text(text.format(**fields), encoding="utf-8")
    outcome = start_repository(root, f"New rung project {name} ({template})") if git else None
    return Initialised(root=root, files=sorted(files) + ["data/train.csv", "schema.yaml"], git=outcome)


def adopt_repository(root: Path, *, data: str, target: str, train: str | None = None, name: str | None = None,
                     task: str | None = None, prepare: str | None = None, git: bool = True) -> Initialised:
    """Set rung up in an existing directory around its data and training function (see :mod:`rung.templates.adopt`)."""
    from rung.templates.adopt import write_adoption

    root = root.resolve()
    name = name or _name_from(root)
    _check_name(name)
    adoption = write_adoption(root, name=name, data=data, target=target, train=train, task=task, prepare=prepare)
    files = list(adoption.files)
    if ensure_ignored(root):
        files.append(".gitignore")
    outcome = start_repository(root, f"Set up rung for {name}") if git else None
    return Initialised(root=root, files=files, git=outcome, inferred=adoption.inferred, review=adoption.review)


def _name_from(root: Path) -> str:
    """The directory's name as a project name: characters a name cannot hold become '-'."""
    import re

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-.") or "project"
    return name if name[0].isalnum() else f"p{name}"
