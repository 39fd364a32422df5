"""The same project on other backends: PostgreSQL, Ray, XGBoost and LightGBM, and 8 concurrent runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import RUNG, rung_cli


def _run_json(project_dir: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    result = rung_cli("run", "--json", *args, cwd=project_dir, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.postgres
def test_pipeline_on_postgresql(project_dir: Path, postgres_url: str) -> None:
    import sqlalchemy as sa

    env = {"RUNG_DATABASE_URL": postgres_url}
    first = _run_json(project_dir, env=env)
    second = _run_json(project_dir, env=env)
    assert first["model_version"] == 1 and second["cache_hits"] == 7
    lineage = json.loads(rung_cli("lineage", "churn:1", "--json", cwd=project_dir, env=env).stdout)
    assert lineage["pipeline_run"]["id"] == first["id"]
    # the records are in PostgreSQL, not in the SQLite default
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM pipeline_runs").scalar() == 2
        assert conn.exec_driver_sql("SELECT count(*) FROM model_versions").scalar() == 1
    engine.dispose()
    assert not (project_dir / ".rung" / "rung.db").exists()


@pytest.mark.postgres
def test_sql_data_source_on_postgresql(project_dir: Path, postgres_url: str) -> None:
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    pd.read_csv(project_dir / "data" / "train.csv").to_sql("customers", engine, index=False)
    engine.dispose()
    plain_url = sa.make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    config = project_dir / "rung.yaml"
    config.write_text(config.read_text().replace(
        "source: data/train.csv", f"source: {{url: '{plain_url}', query: 'SELECT * FROM customers'}}"))
    first = _run_json(project_dir)
    assert first["status"] == "succeeded" and first["model_version"] == 1
    # a query is always re-read, but the same rows are the same snapshot: everything after ingest is cached
    second = _run_json(project_dir)
    statuses = {s["name"]: s["status"] for s in second["steps"]}
    assert statuses.pop("ingest") == "succeeded" and set(statuses.values()) == {"cached"}


@pytest.mark.ray
@pytest.mark.slow
def test_pipeline_on_ray(project_dir: Path) -> None:
    run = _run_json(project_dir, env={"RUNG_EXECUTOR": "ray"})
    assert run["status"] == "succeeded" and run["model_version"] == 1
    assert all(s["status"] == "succeeded" for s in run["steps"])
    logs = project_dir / ".rung" / "logs" / run["id"]
    assert (logs / "train.log").is_file()


NUMERIC_PIPELINE = '''
from rung.pipeline import Pipeline, step
from rung.steps import evaluate, ingest, profile, register, split, validate


@step(outputs="model")
def train(train_set, params):
    {import_line}
    X = train_set.drop(columns=["churned"])
    model = {estimator}
    model.fit(X, train_set["churned"])
    return model


pipeline = Pipeline("churn", [ingest, validate, split, profile, train, evaluate, register])
'''


@pytest.mark.parametrize(
    ("flavor", "import_line", "estimator"),
    [
        ("xgboost", "from xgboost import XGBClassifier", "XGBClassifier(n_estimators=30, max_depth=3)"),
        ("lightgbm", "from lightgbm import LGBMClassifier", "LGBMClassifier(n_estimators=30, verbose=-1)"),
    ],
)
def test_xgboost_and_lightgbm_use_their_native_flavours(project_dir: Path, flavor: str, import_line: str, estimator: str) -> None:
    data = project_dir / "data" / "train.csv"
    pd.read_csv(data).select_dtypes("number").to_csv(data, index=False)
    from rung.data.validation import infer_schema

    infer_schema(pd.read_csv(data)).to_yaml(project_dir / "schema.yaml")
    path = project_dir / "rung.yaml"
    path.write_text(path.read_text().replace("slices: [contract, region]", "slices: []"))
    (project_dir / "pipeline.py").write_text(NUMERIC_PIPELINE.format(import_line=import_line, estimator=estimator))
    run = _run_json(project_dir)
    assert run["metrics"]["overall"]["roc_auc"] > 0.6
    models = json.loads(rung_cli("models", "--json", cwd=project_dir).stdout)
    assert models[0]["flavor"] == flavor

    import mlflow

    uri = f"sqlite:///{project_dir}/.rung/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model("models:/churn@champion")
    assert model.metadata.flavors.get(flavor) is not None
    assert len(model.predict(pd.read_csv(data).drop(columns=["churned"]).head(3))) == 3


@pytest.mark.slow
def test_eight_concurrent_runs_on_one_sqlite_project(project_dir: Path) -> None:
    """8 `rung run` processes at once: all 8 runs recorded completely, 8 distinct versions."""
    procs = [
        subprocess.Popen([RUNG, "run", "--json", "--no-cache"], cwd=project_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
        assert "database is locked" not in err
    runs = json.loads(rung_cli("runs", "--json", cwd=project_dir).stdout)
    assert len(runs) == 8 and all(r["status"] == "succeeded" for r in runs)
    for run in runs:
        detail = json.loads(rung_cli("runs", run["id"], "--json", cwd=project_dir).stdout)
        assert len(detail["steps"]) == 7 and all(s["status"] == "succeeded" for s in detail["steps"])
    versions = sorted(m["version"] for m in json.loads(rung_cli("models", "--json", cwd=project_dir).stdout))
    assert versions == list(range(1, 9))
    assert sorted(r["model_version"] for r in runs) == versions


def test_cli_help_is_fast_and_lazy() -> None:
    """`rung --help` imports none of the heavy libraries."""
    code = (
        "import sys, runpy; sys.argv=['rung','--help']\n"
        "try:\n    runpy.run_module('rung.cli.__main__', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('mlflow','pandas','sklearn','ray','pandera','pyarrow') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in result.stdout, result.stdout[-500:] + result.stderr[-2000:]
