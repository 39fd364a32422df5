"""The foundation through the real CLI: init ▸ run ▸ runs ▸ models ▸ lineage ▸ reproduce."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import rung_cli


def _json(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_init_creates_a_project_that_runs_green(tmp_path: Path) -> None:
    made = rung_cli("init", "churn", "--template", "tabular-classification", "--rows", "1200", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    root = tmp_path / "churn"
    for name in ("rung.yaml", "pipeline.py", "schema.yaml", "data/train.csv", "tests/test_scoring.py",
                 ".github/workflows/rung.yml", "README.md"):
        assert (root / name).is_file(), name
    assert (root / ".git").is_dir()
    again = rung_cli("init", "churn", cwd=tmp_path)
    assert again.returncode != 0 and "already holds a rung project" in again.stderr

    # the generated project's own unit tests pass
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=root,
                           capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_run_registers_a_version_with_full_lineage(git_project: Path) -> None:
    run = _json(rung_cli("run", "--json", cwd=git_project))
    assert run["status"] == "succeeded"
    assert run["model_name"] == "churn" and run["model_version"] == 1
    assert run["metrics"]["overall"]["roc_auc"] > 0.6
    assert {s["name"]: s["status"] for s in run["steps"]} == {
        "ingest": "succeeded", "validate": "succeeded", "split": "succeeded", "profile": "succeeded",
        "train": "succeeded", "evaluate": "succeeded", "register": "succeeded",
    }

    models = _json(rung_cli("models", "--json", cwd=git_project))
    assert [(m["name"], m["version"]) for m in models] == [("churn", 1)]
    assert models[0]["aliases"] == ["challenger", "champion"]

    lineage = _json(rung_cli("lineage", "churn:1", "--json", cwd=git_project))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=git_project, capture_output=True, text=True).stdout.strip()
    assert lineage["code"]["git_commit"] == head and lineage["code"]["git_dirty"] is False
    assert lineage["params"]["max_iter"] == 200
    assert lineage["environment"]["packages"]["scikit-learn"]
    assert lineage["pipeline_run"]["id"] == run["id"]
    snapshot = lineage["data"]["snapshot"]
    stored = git_project / ".rung" / "artifacts" / snapshot[:2] / snapshot
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == snapshot.split(".")[0]

    # MLflow holds the same story: run, tags, dataset input, version tag with the model's sha256
    import mlflow

    uri = f"sqlite:///{git_project}/.rung/mlflow.db"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version("churn", "1")
    assert version.tags["rung.sha256"] == lineage["sha256"]
    mlrun = client.get_run(lineage["mlflow_run_id"])
    assert mlrun.data.tags["mlflow.source.git.commit"] == head
    assert mlrun.data.tags["rung.run_id"] == run["id"]
    assert mlrun.data.metrics["roc_auc"] == pytest.approx(run["metrics"]["overall"]["roc_auc"])
    assert any(i.dataset.name == "churn-train" for i in mlrun.inputs.dataset_inputs)
    # scikit-learn models are stored with skops, never pickle, and the recorded file hashes match the files
    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_registry_uri(client.tracking_uri)
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/churn/1"))
    files = {p.relative_to(model_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in model_dir.rglob("*") if p.is_file() and p.name != "registered_model_meta"}
    assert files == lineage["files"]
    assert any(name.endswith(".skops") for name in files) and not any(name.endswith(".pkl") for name in files)


def test_unchanged_rerun_is_all_cache_hits_and_new_data_makes_a_challenger(project_dir: Path) -> None:
    first = _json(rung_cli("run", "--json", cwd=project_dir))
    second = _json(rung_cli("run", "--json", cwd=project_dir))
    assert second["cache_hits"] == second["steps_total"] == 7
    assert second["model_version"] == first["model_version"] == 1

    data = project_dir / "data" / "train.csv"
    frame = pd.read_csv(data)
    frame.iloc[::-1].to_csv(data, index=False)  # same rows, new order: new content hash
    third = _json(rung_cli("run", "--json", cwd=project_dir))
    assert third["model_version"] == 2
    statuses = {s["name"]: s["status"] for s in third["steps"]}
    assert statuses["ingest"] == "succeeded" and statuses["register"] == "succeeded"
    models = {m["version"]: m["aliases"] for m in _json(rung_cli("models", "--json", cwd=project_dir))}
    assert models == {2: ["challenger"], 1: ["champion"]}

    listed = _json(rung_cli("runs", "--json", cwd=project_dir))
    assert [r["id"] for r in listed] == [third["id"], second["id"], first["id"]]
    table = rung_cli("runs", cwd=project_dir)
    assert table.returncode == 0 and "7/7" in table.stdout
    steps = _json(rung_cli("runs", second["id"][:8], "--json", cwd=project_dir))
    assert {s["status"] for s in steps["steps"]} == {"cached"}


def test_reproduce_uses_the_snapshot_after_the_source_changed(project_dir: Path) -> None:
    _json(rung_cli("run", "--json", cwd=project_dir))
    from rung.templates.datasets import churn

    churn(rows=900, seed=99).to_csv(project_dir / "data" / "train.csv", index=False)
    config = project_dir / "rung.yaml"  # a different split would change every metric
    config.write_text(config.read_text().replace("seed: 42", "seed: 7").replace("test_size: 0.2", "test_size: 0.3"))
    result = _json(rung_cli("reproduce", "churn:1", "--json", cwd=project_dir))
    assert result["ok"] is True, result
    assert any("settings recorded" in note for note in result["notes"])
    assert {m["metric"] for m in result["metrics"]} >= {"roc_auc", "accuracy", "contract=month-to-month/accuracy"}
    human = rung_cli("reproduce", "churn:1", cwd=project_dir)
    assert human.returncode == 0 and "reproduced" in human.stdout


def test_reproduce_checks_out_the_recorded_commit(git_project: Path) -> None:
    _json(rung_cli("run", "--json", cwd=git_project))
    pipeline = git_project / "pipeline.py"
    pipeline.write_text(pipeline.read_text().replace("model.fit(X, y)", "model.set_params(model__max_iter=2)\n    model.fit(X, y)"))
    subprocess.run(["git", "commit", "-qam", "weaker model"], cwd=git_project, check=True)
    result = _json(rung_cli("reproduce", "churn:1", "--json", cwd=git_project))
    assert result["ok"] is True, result
    assert "checked out from git" in result["code"]


def test_reproduce_reports_differences_with_exit_1(project_dir: Path) -> None:
    _json(rung_cli("run", "--json", cwd=project_dir))
    pipeline = project_dir / "pipeline.py"  # no git: reproduction uses the current code
    pipeline.write_text(pipeline.read_text().replace("model.fit(X, y)", "model.set_params(model__max_iter=2)\n    model.fit(X, y)"))
    result = rung_cli("reproduce", "churn:1", cwd=project_dir)
    assert result.returncode == 1
    assert "did not reproduce" in result.stderr
    assert "Traceback" not in result.stderr


def test_regression_template_runs(tmp_path: Path) -> None:
    assert rung_cli("init", "demand", "--template", "tabular-regression", "--rows", "1000", "--no-git", cwd=tmp_path).returncode == 0
    run = _json(rung_cli("run", "--json", cwd=tmp_path / "demand"))
    overall = run["metrics"]["overall"]
    assert set(overall) == {"rmse", "mae", "r2"} and overall["r2"] > 0.5
    assert any(k.startswith("store_size=") for k in run["metrics"]["slices"])


def test_python_api(tmp_path: Path) -> None:
    import rung

    root = rung.init("api", directory=tmp_path / "api", rows=800, git=False)
    project = rung.Project.open(root)
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    seen: list[str] = []
    result = project.run(on_update=lambda u: seen.append(f"{u.step}:{u.status}"))
    assert result.run.status == "succeeded" and result.run.model_version == 1
    assert "train:succeeded" in seen
    assert project.lineage("api:1")["model"]["version"] == 1
    assert [r.id for r in project.runs()] == [result.run.id]
    # rung used as a library leaves the caller's MLflow settings alone
    assert {k: os.environ.get(k) for k in before} == before
    project.close()
