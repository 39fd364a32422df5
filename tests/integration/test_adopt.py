"""`rung adopt`: a version a team registered with MLflow's own API goes round the whole loop.

The team's script below is what such a team has: scikit-learn, MLflow's
fluent API, a registered model, no rung. It runs in its own process against
the project's MLflow (sqlite) with an artifact store of its own; rung then
adopts what it registered, certifies, serves, monitors it, and retrains past it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from click.testing import Result

from rung.errors import RungError
from tests.conftest import RUNG, http_ok, one_line_error, rung_cli, stop_processes, wait_until

TEAM_SCRIPT = '''
"""The team's own training job: MLflow's API only."""
import json, sys
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

root, artifacts, *modes = sys.argv[1:]
mlflow.set_tracking_uri(f"sqlite:///{Path(root) / '.rung' / 'mlflow.db'}")
experiment = mlflow.get_experiment_by_name("team-churn")
experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(
    "team-churn", artifact_location=Path(artifacts).as_uri())
frame = pd.read_csv(Path(root) / "data" / "train.csv").iloc[:1000]  # the rest is the team's held-out reference
X, y = frame.drop(columns=["churned"]), frame["churned"]
categorical = ["contract", "region", "paperless_billing"]
model = make_pipeline(
    ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), categorical)],
                      remainder=make_pipeline(SimpleImputer(), StandardScaler())),
    LogisticRegression(max_iter=500),
).fit(X, y)
client = mlflow.MlflowClient()
where = {}
for mode in modes:  # "signature", "example", "bare"; "+skops": MLflow's default format, else cloudpickle
    kind, _, fmt = mode.partition("+")
    options = {"serialization_format": "cloudpickle"} if fmt != "skops" else {"skops_trusted_types": ["numpy.dtype"]}
    if kind == "signature":
        options["signature"] = infer_signature(X, model.predict(X))
    elif kind == "example":
        options |= {"input_example": X.head(3), "signature": False}
    else:
        options["signature"] = False
    with mlflow.start_run(experiment_id=experiment_id):
        mlflow.log_params({"C": 1.0, "max_iter": 500})
        mlflow.log_metric("train_accuracy", model.score(X, y))
        mlflow.set_tag("mlflow.source.git.commit", "0123456789abcdef0123456789abcdef01234567")
        mlflow.log_input(mlflow.data.from_pandas(frame, name="churn-train", targets="churned"), context="training")
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name="churn", **options)
    where[info.registered_model_version] = client.get_logged_model(info.model_id).artifact_location
print(json.dumps(where))
'''

SETTINGS = """
deploy:
  strategy: canary
  grace_s: 5
  canary: {steps: [50, 100], window_s: 2, min_requests: 20, max_extensions: 5}
monitor:
  window: 3
  min_rows: 20
certify:
  tests: {enabled: false}
  versus_champion: {roc_auc: {max_drop: 0.2}}
  slices: {max_drop_vs_champion: 0.3}
  latency: {repeats: 20}
"""
ROW = {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north",
       "support_calls": 1, "age": 42, "paperless_billing": "no"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


@pytest.fixture
def project(tmp_path: Path, template_project: Path) -> Path:
    """The churn project, with the team's held-out rows as a reference file (rows 1000 on, with the target)."""
    root = tmp_path / "churn"
    shutil.copytree(template_project, root)
    config = (root / "rung.yaml").read_text().replace("max_iter: 200", "max_iter: 40")  # a quicker rung-trained version
    (root / "rung.yaml").write_text(config + SETTINGS)
    (root / ".rung").mkdir(exist_ok=True)
    pd.read_csv(root / "data" / "train.csv").iloc[1000:].to_csv(tmp_path / "reference.csv", index=False)
    (tmp_path / "team_train.py").write_text(TEAM_SCRIPT)
    return root


def _team_registers(root: Path, *modes: str) -> dict[int, Path]:
    """Run the team's script; the artifact folder of each version it registered."""
    script, artifacts = root.parent / "team_train.py", root.parent / "team-artifacts"
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    done = subprocess.run([sys.executable, str(script), str(root), str(artifacts), *modes],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    where = json.loads(done.stdout.strip().splitlines()[-1])
    return {int(v): Path(p.removeprefix("file://")) for v, p in where.items()}


def test_an_adopted_version_is_certified_served_monitored_and_retrained_past(project: Path) -> None:
    from rung.monitor.windows import window_bounds
    from rung.project import Project

    _team_registers(project, "signature")
    reference = project.parent / "reference.csv"
    adopted = _json(rung_cli("adopt", "models:/churn/1", "--reference", str(reference), "--json", cwd=project))
    assert adopted["ref"] == "churn:1" and adopted["flavor"] == "sklearn" and adopted["signature_from"] == "MLmodel"
    assert sorted(adopted["aliases"]) == ["challenger", "champion"] and adopted["reference_rows"] == 500
    assert adopted["metrics_from"] == "reference" and 0.6 < adopted["metrics"]["roc_auc"] < 1.0

    port = _port()
    url = f"http://127.0.0.1:{port}"
    log = open(project / "processes.log", "w")
    gateway = subprocess.Popen([RUNG, "serve", "--port", str(port)], cwd=project, stdout=log, stderr=subprocess.STDOUT)
    controller = subprocess.Popen([RUNG, "controller", "--interval", "0.2"], cwd=project, stdout=log, stderr=subprocess.STDOUT)
    answers: list[int] = []
    failures: list[str] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []
    rung = Project.open(project)
    try:
        lineage = _json(rung_cli("lineage", "churn:1", "--json", cwd=project))  # while the gateway starts
        assert lineage["adopted_from"] == "models:/churn/1"
        assert lineage["code"]["git_commit"] == "0123456789abcdef0123456789abcdef01234567"
        assert lineage["params"] == {"C": "1.0", "max_iter": "500"} and lineage["pipeline_run"]["trigger"] == "adopt"
        assert lineage["mlflow"]["datasets"][0]["name"] == "churn-train" and lineage["mlflow"]["registered_at"]
        assert lineage["data"]["rows"] == 500 and "MLmodel" in lineage["files"]
        tags = rung.tracking.version_tags("churn", 1)
        assert tags["rung.sha256"] == lineage["sha256"] and tags["rung.adopted_from"] == "models:/churn/1"
        report = _json(rung_cli("certify", "churn:1", "--json", cwd=project))
        assert report["certified"] is True, report
        assert next(c for c in report["checks"] if c["name"] == "integrity")["status"] == "passed"

        wait_until(lambda: http_ok(f"{url}/v2/health/ready", timeout=1), timeout=60, interval=0.2,
                   message="the gateway did not become ready")
        first = httpx.post(f"{url}/invocations", json={"dataframe_records": [ROW, {**ROW, "tenure_months": 2}]}, timeout=10)
        assert first.status_code == 200, first.text
        assert first.headers["x-rung-model-version"] == "1" and len(first.json()["predictions"]) == 2

        def load() -> None:
            rows = pd.read_csv(reference).drop(columns=["churned"]).sample(400, random_state=0)
            records = json.loads(rows.to_json(orient="records"))
            with httpx.Client(base_url=url, timeout=10) as client:
                i = 0
                while not stop.is_set():
                    r = client.post("/invocations", json={"dataframe_records": records[i % 400: i % 400 + 5]})
                    if r.status_code == 200:
                        answers.append(int(r.headers["x-rung-model-version"]))
                    else:
                        failures.append(r.text)
                    i += 5
                    time.sleep(0.01)

        threads = [threading.Thread(target=load)]
        threads[0].start()
        # monitoring: a window of the adopted version closes, its drift measured against the adopted reference
        _, end = window_bounds(datetime.now(UTC) + timedelta(seconds=1), rung.settings.monitor.window_s)
        time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 1.0)  # + the request log's flush
        windows = _json(rung_cli("monitor", "--json", cwd=project))
        assert isinstance(windows, list)
        window = next(w for w in windows if w["version"] == 1 and (w["report"] or {}).get("drift"))
        assert window["report"]["drift"]["reference_rows"] == 500, window["report"]
        assert {f["name"] for f in window["report"]["drift"]["features"]} >= {"tenure_months", "contract"}

        # retraining past it: a rung run registers churn:2, certified against the adopted champion, rolled out
        retrained = _json(rung_cli("retrain", "--reason", "the team's first rung-trained version", "--json", cwd=project))
        assert retrained["status"] == "deployed" and retrained["version"] == 2, retrained
        rollout = wait_until(lambda: _rollout_ended(rung), timeout=60, interval=0.3, message="the canary of churn:2 ended")
        assert (rollout.version, rollout.strategy, rollout.state) == (2, "canary", "promoted"), rollout
        wait_until(lambda: rung.tracking.aliases()["churn"].get("champion") == 2, timeout=20, message="@champion on churn:2")
        wait_until(lambda: answers and answers[-1] == 2, timeout=10, message="churn:2 answering")
        stop.set()
        threads[0].join()
        assert failures == [] and 1 in answers and 2 in answers
        assert [(r.trigger, r.model_version) for r in rung.runs()] == [("manual", 2), ("adopt", 1)]
        kinds = [e.kind for e in rung.store.events(limit=500)]
        assert "model.adopted" in kinds and "retrain.triggered" in kinds
    finally:
        rung.close()
        stop.set()
        for t in threads:
            t.join()
        stop_processes(controller, gateway)
        log.close()


def test_adopt_refuses_what_it_cannot_take_and_changes_nothing(project: Path) -> None:
    from rung.project import Project
    from rung.reproduce import reproduce

    where = _team_registers(project, "bare", "example", "signature+skops")
    reference = str(project.parent / "reference.csv")
    partial = project.parent / "partial.csv"
    pd.read_csv(reference).drop(columns=["age"]).to_csv(partial, index=False)
    with Project.open(project) as rung:
        rung.tracking.set_alias("churn", "prod", 3)

        one_line_error(rung_cli("adopt", "models:/churn/1", "--reference", reference, cwd=project),
                       "neither a signature nor an input example", "signature=", "input_example=")
        assert "no version 9 of 'churn'" in _refused(project, "models:/churn/9", "--reference", reference)
        assert "registry.model_name: fraud" in _refused(project, "models:/fraud/1", "--reference", reference)
        assert "lacks the model's input column(s) age" in _refused(project, "models:/churn/3", "--reference", str(partial))
        assert "not a registered version" in _refused(project, "churn:3", "--reference", reference)
        assert rung.store.list_model_versions() == [] and rung.store.events(limit=10) == []
        assert "rung.sha256" not in rung.tracking.version_tags("churn", 1)
        assert rung.tracking.aliases()["churn"] == {"prod": 3}

        by_alias = _adopted(project, "models:/churn@prod", "--reference", reference)
        assert by_alias["ref"] == "churn:3" and sorted(by_alias["aliases"]) == ["challenger", "champion"]
        assert rung.models_loader.load(rung.model_version("churn:3")).flavor == "sklearn"  # skops, as MLflow saves it
        again = _refused(project, "models:/churn/3", "--reference", reference)
        assert "churn:3 in rung already" in again and "nothing changed" in again
        from_example = _adopted(project, "models:/churn/2", "--reference", reference)
        assert from_example["signature_from"] == "input example" and from_example["aliases"] == ["challenger"]
        assert from_example["inputs"] == list(ROW)
        assert [c.name for c in rung.models_loader.load(rung.model_version("churn:2")).columns] == list(ROW)
        assert rung.tracking.aliases()["churn"] == {"prod": 3, "champion": 3, "challenger": 2}  # the champion stays
        assert [e.kind for e in rung.store.events(limit=10)] == ["model.adopted"] * 2

        # a file changed in MLflow's artifact store after adoption: a machine without rung's copy refuses to load it
        pickled = where[2] / "model.pkl"
        pickled.write_bytes(pickled.read_bytes() + b"\0")
        shutil.rmtree(project / ".rung" / "models" / "churn" / "2")
        tampered = rung_cli("certify", "churn:2", "--json", cwd=project)
        assert tampered.returncode == 1, tampered.stderr
        integrity = next(c for c in json.loads(tampered.stdout)["checks"] if c["name"] == "integrity")
        assert integrity["status"] == "failed" and "model.pkl" in integrity["detail"], integrity
        with pytest.raises(RungError, match="adopted from models:/churn/3"):
            reproduce(rung, "churn:3")


def _invoke(project: Path, *args: str) -> Result:
    """``rung adopt ARGS -C PROJECT`` in this process (the CLI's own code, without a new interpreter's imports)."""
    from typer.testing import CliRunner

    from rung.cli import app

    return CliRunner().invoke(app, ["adopt", *args, "--project", str(project), "--json"])


def _adopted(project: Path, *args: str) -> dict:
    result = _invoke(project, *args)
    assert result.exit_code == 0, f"{result.exception!r} {result.output}"
    return json.loads(result.stdout)


def _refused(project: Path, *args: str) -> str:
    """The one-line message ``rung adopt`` refuses with (``rung`` prints a RungError as its one line)."""
    result = _invoke(project, *args)
    assert isinstance(result.exception, RungError), f"{result.exception!r} {result.output}"
    message = str(result.exception)
    assert "\n" not in message and result.stdout == ""
    return message


def _rollout_ended(project: Any) -> Any:
    """The latest rollout once it was promoted or rolled back, else None."""
    latest = project.store.deployments("churn", limit=1)
    return latest[0] if latest and latest[0].state in ("promoted", "rolled_back") else None
