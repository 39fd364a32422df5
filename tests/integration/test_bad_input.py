"""Bad input: one clear line, a non-zero exit, no traceback, and nothing half-registered."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from tests.conftest import one_line_error, rung_cli


def _no_model_registered(project_dir: Path) -> None:
    models = rung_cli("models", "--json", cwd=project_dir)
    assert models.returncode == 0, models.stderr
    assert json.loads(models.stdout) == []


def test_outside_a_project(tmp_path: Path) -> None:
    one_line_error(rung_cli("run", cwd=tmp_path), "no rung.yaml", "rung init")


def test_a_demo_whose_drift_comes_after_its_last_day_is_refused_before_it_starts(tmp_path: Path) -> None:
    one_line_error(rung_cli("demo", "--days", "12", "--drift-day", "12", "--keep", str(tmp_path / "d")), "--drift-day 12",
                   "more --days")
    assert not (tmp_path / "d").exists()


def test_malformed_yaml_names_the_line(project_dir: Path) -> None:
    (project_dir / "rung.yaml").write_text("name: churn\ndata:\n  source: [unclosed\n")
    one_line_error(rung_cli("run", cwd=project_dir), "rung.yaml", "line")


def test_invalid_key_value_names_the_key_and_choices(project_dir: Path) -> None:
    path = project_dir / "rung.yaml"
    path.write_text(path.read_text().replace("strategy: canary", "strategy: canery"))
    one_line_error(
        rung_cli("runs", cwd=project_dir), "rung.yaml: deploy.strategy: 'canery' is not one of direct, canary, ab, shadow"
    )


def test_unknown_key(project_dir: Path) -> None:
    path = project_dir / "rung.yaml"
    path.write_text(path.read_text() + "\nsplt:\n  test_size: 0.3\n")
    one_line_error(rung_cli("run", cwd=project_dir), "splt", "unknown key")


def test_missing_data_file(project_dir: Path) -> None:
    (project_dir / "data" / "train.csv").unlink()
    one_line_error(rung_cli("run", cwd=project_dir), "data source data/train.csv not found")
    _no_model_registered(project_dir)


def test_unreadable_data(project_dir: Path) -> None:
    path = project_dir / "rung.yaml"
    path.write_text(path.read_text().replace("data/train.csv", "data/train.parquet"))
    (project_dir / "data" / "train.parquet").write_bytes(b"this is not parquet at all")
    one_line_error(rung_cli("run", cwd=project_dir), "cannot be read as parquet")
    _no_model_registered(project_dir)


def test_schema_violations_stop_before_training_with_a_full_report(project_dir: Path) -> None:
    data = project_dir / "data" / "train.csv"
    frame = pd.read_csv(data)
    frame.loc[0:4, "region"] = "mars"
    frame.loc[5:9, "tenure_months"] = -50
    frame.loc[10:400, "age"] = None
    frame.to_csv(data, index=False)
    result = rung_cli("run", cwd=project_dir)
    one_line_error(result, "step 'validate' failed", "data checks failed")
    report = result.stderr
    assert "mars" in report and "region" in report and "tenure_months" in report and "missing rate" in report
    runs = json.loads(rung_cli("runs", "--json", cwd=project_dir).stdout)
    assert runs[0]["status"] == "failed"
    steps = {s["name"]: s["status"] for s in json.loads(rung_cli("runs", runs[0]["id"], "--json", cwd=project_dir).stdout)["steps"]}
    assert steps["validate"] == "failed" and steps["train"] == "skipped" and steps["register"] == "skipped"
    saved = json.loads((project_dir / ".rung" / "runs" / runs[0]["id"] / "validation.json").read_text())
    failing = {(c["name"], c["column"]) for c in saved["checks"] if not c["passed"]}
    assert ("missing rate", "age") in failing
    assert any(column == "region" for _, column in failing) and any(column == "tenure_months" for _, column in failing)
    _no_model_registered(project_dir)


def test_misspelt_slice_column_stops_before_training(project_dir: Path) -> None:
    config = project_dir / "rung.yaml"
    config.write_text(config.read_text().replace("slices: [", "slices: [regoin, ", 1))
    result = rung_cli("run", cwd=project_dir)
    one_line_error(result, "step 'validate' failed", "regoin: slice column present")
    _no_model_registered(project_dir)


def test_training_function_that_raises(project_dir: Path) -> None:
    pipeline = project_dir / "pipeline.py"
    pipeline.write_text(pipeline.read_text().replace("    model.fit(X, y)\n", "    raise ValueError('boom: bad feature')\n"))
    result = rung_cli("run", cwd=project_dir)
    one_line_error(result, "step 'train' failed: boom: bad feature", "log:")
    log = Path(result.stderr.split("log: ")[1].split(")")[0])
    assert "Traceback" in log.read_text() and "boom: bad feature" in log.read_text()
    _no_model_registered(project_dir)


def test_pipeline_that_does_not_import(project_dir: Path) -> None:
    (project_dir / "pipeline.py").write_text("import not_a_module_anywhere\n")
    one_line_error(rung_cli("run", cwd=project_dir), "pipeline.py: importing it failed", "not_a_module_anywhere")


def test_unreachable_mlflow_fails_fast_before_training(project_dir: Path) -> None:
    started = time.monotonic()
    result = rung_cli("run", cwd=project_dir, env={"RUNG_TRACKING_URI": "http://127.0.0.1:9"})
    one_line_error(result, "MLflow tracking server http://127.0.0.1:9 cannot be reached")
    assert time.monotonic() - started < 30
    runs = json.loads(rung_cli("runs", "--json", cwd=project_dir).stdout)
    assert runs == []


def test_unknown_model_version(project_dir: Path) -> None:
    one_line_error(rung_cli("lineage", "churn:7", cwd=project_dir), "no model version churn:7")
    one_line_error(rung_cli("lineage", "churn", cwd=project_dir), "NAME:VERSION")
    one_line_error(rung_cli("runs", "nope", cwd=project_dir), "no pipeline run 'nope'")


def test_unreachable_database(project_dir: Path) -> None:
    result = rung_cli("runs", cwd=project_dir, env={"RUNG_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"})
    one_line_error(result, "cannot open the metadata store", "RUNG_DATABASE_URL")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = rung_cli("--debug", "run", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr
