"""rung.certify's I/O side and the gate, over fakes: the timing loop, gathering the inputs, certify() end to end.

The rules are tested on literals in test_certify.py; here the adapters are
small stand-ins (a store, MLflow, a model loader) so that what the gate
reads, in which order, and what it records can be checked without MLflow.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rung.certify import certify
from rung.certify.inputs import find_champion, load_candidate, load_champion, run_project_tests, snapshot_inputs
from rung.certify.report import Check
from rung.certify.timing import LATENCY_ROUNDS, latency_checks
from rung.clock import ManualClock
from rung.config import CertifySettings, LatencyBudget, TestsGate
from rung.errors import CertificationError, IntegrityError, RungError
from rung.models.loaded import LoadedModel
from rung.models.signature import Column
from rung.pipeline.artifacts import ArtifactStore
from rung.store.records import ModelVersionRecord


class Ticker:
    """A seconds counter that moves ``step`` on every read: each timed call lasts ``step`` s."""

    def __init__(self, step: float) -> None:
        self.step, self.now, self.reads = step, 0.0, 0

    def __call__(self) -> float:
        self.now += self.step
        self.reads += 1
        return self.now


def _model(name: str = "tiny", version: int = 1, columns: list[Column] | None = None) -> LoadedModel:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    estimator = LogisticRegression().fit(pd.DataFrame(x, columns=["x1", "x2"]), (x[:, 0] > 0).astype(int))
    columns = columns if columns is not None else [Column("x1", "double"), Column("x2", "double")]
    return LoadedModel(name, version, "sklearn", "classification", columns, estimator, Path("."), classes=[0, 1])


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return _model()


@pytest.fixture(scope="module")
def inputs() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"x1": rng.normal(size=40), "x2": rng.normal(size=40), "extra": rng.normal(size=40)})


BUDGET = LatencyBudget(single_row_p99_ms=5.0, batch_1000_p99_ms=5.0, repeats=10)


# -- timing --------------------------------------------------------------------------------------


def test_latency_is_timed_with_the_given_timer(model: LoadedModel, inputs: pd.DataFrame) -> None:
    timer = Ticker(0.002)  # 2 ms a call: within 5 ms
    checks = latency_checks(model, None, inputs, BUDGET, "", timer=timer)
    assert [c.name for c in checks] == ["latency.single_row_p99_ms", "latency.batch_1000_p99_ms"]
    assert all(c.status == "passed" and c.observed == pytest.approx(2.0) for c in checks)
    assert checks[0].detail.startswith("single rows, one thread; best of 1 round of 10 calls")
    assert timer.reads == 2 * 2 * BUDGET.repeats  # one round each: two reads per timed call


def test_a_slow_candidate_is_timed_again_and_fails_saying_why_no_champion_was_timed(
    model: LoadedModel, inputs: pd.DataFrame
) -> None:
    checks = latency_checks(model, None, inputs, BUDGET, "churn has no @champion yet", timer=Ticker(0.010))
    assert all(c.status == "failed" for c in checks)
    assert f"best of {LATENCY_ROUNDS} rounds" in checks[0].detail
    assert checks[0].detail.endswith("; no champion timed alongside: churn has no @champion yet")


def test_over_budget_a_candidate_as_fast_as_the_champion_passes(model: LoadedModel, inputs: pd.DataFrame) -> None:
    champion = _model("tiny", 7)
    checks = latency_checks(model, champion, inputs, BUDGET, "", timer=Ticker(0.010))
    assert all(c.status == "passed" for c in checks)
    assert "tiny:7 timed alongside: p99 10 ms" in checks[0].detail


def test_a_champion_taking_columns_the_snapshot_lacks_is_not_timed(model: LoadedModel, inputs: pd.DataFrame) -> None:
    champion = _model("tiny", 7, [Column("x1", "double"), Column("gone", "double")])
    checks = latency_checks(model, champion, inputs, BUDGET, "", timer=Ticker(0.010))
    assert checks[0].status == "failed"
    assert checks[0].detail.endswith("no champion timed alongside: tiny:7 takes gone, which the data snapshot lacks")


def test_no_rows_no_latency(model: LoadedModel, inputs: pd.DataFrame) -> None:
    assert latency_checks(model, None, inputs.iloc[:0], BUDGET, "") == [
        Check("latency", "skipped", detail="the data snapshot has no rows")
    ]


# -- gathering -----------------------------------------------------------------------------------


def _record(version: int = 2, **lineage: Any) -> ModelVersionRecord:
    return ModelVersionRecord("churn", version, "run", "mlrun", "models:/churn/2", "sklearn", {"model.pkl": "ab" * 32},
                              {"overall": {"roc_auc": 0.8}, "slices": {}}, dict(lineage),
                              datetime(2026, 1, 1, tzinfo=UTC))


class FakeTracking:
    def __init__(self, champion: int | None) -> None:
        self.champion = champion
        self.tags: list[tuple[str, int, dict[str, str]]] = []
        self.calls: list[str] = []

    def aliases(self) -> dict[str, dict[str, int]]:
        return {"churn": {"champion": self.champion}} if self.champion is not None else {}

    def check_reachable(self) -> None:
        self.calls.append("check_reachable")

    def set_version_tags(self, name: str, version: int, tags: dict[str, str]) -> None:
        self.tags.append((name, version, tags))


class FakeStore:
    def __init__(self, *records: ModelVersionRecord) -> None:
        self.records = {(r.name, r.version): r for r in records}
        self.events: list[dict[str, Any]] = []

    def get_model_version(self, name: str, version: int) -> ModelVersionRecord | None:
        return self.records.get((name, version))

    def append_event(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, **fields})


class FakeLoader:
    def __init__(self, models: dict[int, LoadedModel | Exception]) -> None:
        self.models = models

    def load(self, record: ModelVersionRecord) -> LoadedModel:
        found = self.models[record.version]
        if isinstance(found, Exception):
            raise found
        return found


def test_the_champion_is_found_by_its_alias_else_the_reason() -> None:
    one, two = _record(1), _record(2)
    assert find_champion(FakeTracking(1), FakeStore(one), two) == (one, "")
    assert find_champion(FakeTracking(None), FakeStore(one), two) == (None, "churn has no @champion yet")
    assert find_champion(FakeTracking(2), FakeStore(one), two) == (None, "churn:2 is the @champion")
    assert find_champion(FakeTracking(1), FakeStore(), two) == (None, "@champion churn:1 is not in rung's metadata store")


def test_loading_the_candidate_gives_its_integrity_check(model: LoadedModel) -> None:
    record = _record(model_sha256="0123456789abcdef0123")
    loaded, check = load_candidate(FakeLoader({2: model}), record)
    assert loaded is model
    assert check == Check("integrity", "passed", "1 files", "sha256 as registered", "sha256 0123456789abcdef…")
    loaded, check = load_candidate(FakeLoader({2: IntegrityError("model.pkl was changed")}), record)
    assert loaded is None and check == Check("integrity", "failed", None, "sha256 as registered", "model.pkl was changed")
    with pytest.raises(CertificationError, match="^churn:2: the model cannot be loaded: no flavor"):
        load_candidate(FakeLoader({2: RungError("no flavor")}), record)


def test_a_champion_that_cannot_be_loaded_says_why(model: LoadedModel) -> None:
    assert load_champion(FakeLoader({}), None, "no champion") == (None, "no champion")
    assert load_champion(FakeLoader({1: model}), _record(1), "") == (model, "")
    assert load_champion(FakeLoader({1: RungError("gone")}), _record(1), "") == (None, "churn:1 cannot be loaded to compare: gone")


def test_the_snapshot_is_read_without_the_target(tmp_path: Path, inputs: pd.DataFrame) -> None:
    artifacts = ArtifactStore(tmp_path)
    ref = artifacts.put(inputs.assign(churned=1))
    frame = snapshot_inputs(_record(data={"snapshot": ref}), artifacts, "churned")
    assert list(frame.columns) == ["x1", "x2", "extra"]
    with pytest.raises(CertificationError, match="no data snapshot is recorded"):
        snapshot_inputs(_record(), artifacts, "churned")


def _project_tests(root: Path, body: str) -> None:
    (root / "tests").mkdir()
    (root / "tests" / "test_score.py").write_text(body, encoding="utf-8")


def test_the_project_tests_are_skipped_when_told_or_absent(tmp_path: Path) -> None:
    assert run_project_tests(tmp_path, TestsGate(), skip=True).detail == "--skip-tests"
    assert run_project_tests(tmp_path, TestsGate(enabled=False), skip=False).detail == "certify.tests.enabled is false"
    assert run_project_tests(tmp_path, TestsGate(), skip=False) == Check("tests", "skipped", detail="no tests in the project")


class FakeRun:
    """Stands in for subprocess.run: records the command, answers as pytest would (a real run is in the integration tests)."""

    def __init__(self, returncode: int = 0, stdout: str = "", timeout: bool = False) -> None:
        self.returncode, self.stdout, self.timeout = returncode, stdout, timeout
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((command, kwargs))
        if self.timeout:
            raise subprocess.TimeoutExpired(command, kwargs["timeout"])
        return subprocess.CompletedProcess(command, self.returncode, self.stdout, "")


def test_the_project_tests_run_in_the_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _project_tests(tmp_path, "def test_ok():\n    pass\n")
    run = FakeRun(0, ".\n==== 1 passed in 0.01s ====\n")
    monkeypatch.setattr(subprocess, "run", run)
    check = run_project_tests(tmp_path, TestsGate(timeout_s=42.0), skip=False)
    assert check == Check("tests", "passed", "1 passed in 0.01s", "pytest passes", "pytest tests")
    ((command, kwargs),) = run.calls
    assert command == [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    assert kwargs == {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 42.0}


def test_failing_and_hanging_project_tests_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _project_tests(tmp_path, "def test_no():\n    assert False\n")
    monkeypatch.setattr(subprocess, "run", FakeRun(1, "F\n1 failed in 0.02s\n"))
    assert run_project_tests(tmp_path, TestsGate(), skip=False).detail == "pytest tests exited 1"
    monkeypatch.setattr(subprocess, "run", FakeRun(timeout=True))
    check = run_project_tests(tmp_path, TestsGate(timeout_s=1.0), skip=False)
    assert check == Check("tests", "failed", "timed out", "pytest passes", "pytest tests ran past certify.tests.timeout_s 1 s")


def test_without_pytest_the_tests_are_skipped_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _project_tests(tmp_path, "def test_ok():\n    pass\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytest" else real(name, *a))
    check = run_project_tests(tmp_path, TestsGate(), skip=False)
    assert check.status == "skipped" and check.detail.endswith("so tests was not run: pip install pytest")


# -- the gate --------------------------------------------------------------------------------------


def _project(tmp_path: Path, inputs: pd.DataFrame, loader: FakeLoader, champion: int | None = 1,
             certify_settings: dict[str, Any] | None = None) -> SimpleNamespace:
    artifacts = ArtifactStore(tmp_path / "artifacts")
    snapshot = artifacts.put(inputs.assign(churned=0))
    candidate, incumbent = _record(2, data={"snapshot": snapshot}), _record(1, data={"snapshot": snapshot})
    store = FakeStore(candidate, incumbent)
    settings = SimpleNamespace(certify=CertifySettings.model_validate({"latency": {"repeats": 10}, **(certify_settings or {})}),
                               data=SimpleNamespace(target="churned"))
    return SimpleNamespace(root=tmp_path, settings=settings, artifacts=artifacts, store=store, tracking=FakeTracking(champion),
                           models_loader=loader, primary_metric="roc_auc",
                           model_version=lambda ref: store.records[("churn", int(ref.split(":")[1]))])


def test_the_gate_runs_every_check_and_records_the_verdict(tmp_path: Path, model: LoadedModel, inputs: pd.DataFrame) -> None:
    project = _project(tmp_path, inputs, FakeLoader({1: _model("churn", 1), 2: model}))
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
    report = certify(project, "churn:2", actor="ci", clock=clock, chain="r-1", timer=Ticker(0.001))  # type: ignore[arg-type]
    assert report.certified and report.champion == 1 and report.started_at == clock.now()
    assert [c.name for c in report.checks] == [
        "integrity", "champion.roc_auc", "slices", "latency.single_row_p99_ms", "latency.batch_1000_p99_ms", "schema",
        "behaviour", "tests",
    ]
    assert report.duration_s == pytest.approx(0.001 * (1 + 2 * 2 * 10 * 1))  # the timer's reads between start and end
    (event,) = project.store.events
    assert event == {"kind": "certification", "actor": "ci", "subject": "churn:2", "data": report.to_dict(),
                     "time": clock.now(), "chain": "r-1"}
    (tags,) = project.tracking.tags
    assert tags[:2] == ("churn", 2) and tags[2]["rung.certified"] == "true"
    assert tags[2]["rung.certified_at"] == "2026-03-01T00:00:00+00:00"


def test_a_tampered_candidate_skips_what_needs_it_loaded(tmp_path: Path, inputs: pd.DataFrame) -> None:
    project = _project(tmp_path, inputs, FakeLoader({2: IntegrityError("model.pkl was changed")}), champion=None)
    report = certify(project, "churn:2", timer=Ticker(0.001))  # type: ignore[arg-type]
    checks = {c.name: c for c in report.checks}
    assert not report.certified and checks["integrity"].status == "failed"
    assert checks["champion"].detail == "churn has no @champion yet"
    for name in ("latency", "schema", "behaviour"):
        assert checks[name].detail == "the model was not loaded: its integrity check failed"
    assert project.tracking.tags[0][2]["rung.certified"] == "false"


def test_settings_errors_stop_the_gate_before_loading_and_recording(tmp_path: Path, inputs: pd.DataFrame) -> None:
    loader = FakeLoader({})  # loading anything would raise KeyError
    project = _project(tmp_path, inputs, loader, certify_settings={"thresholds": {"f1": {"min": 0.5}}})
    with pytest.raises(CertificationError, match="certify.thresholds.f1"):
        certify(project, "churn:2")  # type: ignore[arg-type]
    behaviour = {"behaviour": [{"kind": "directional", "feature": "nope", "change": 1.0}]}
    project = _project(tmp_path, inputs, loader, certify_settings=behaviour)
    with pytest.raises(CertificationError, match=r"certify.behaviour\[0\].feature"):
        certify(project, "churn:2")  # type: ignore[arg-type]
    assert project.store.events == [] and project.tracking.tags == []
    assert project.tracking.calls == ["check_reachable"]


def test_without_a_champion_the_schema_is_skipped_and_declared_behaviour_runs(
    tmp_path: Path, model: LoadedModel, inputs: pd.DataFrame
) -> None:
    behaviour = {"behaviour": [{"name": "x1 raises risk", "kind": "directional", "feature": "x1", "change": 1.0,
                                "expect": "increase", "rows": 25}]}
    project = _project(tmp_path, inputs, FakeLoader({2: model}), champion=None, certify_settings=behaviour)
    report = certify(project, "churn:2", timer=Ticker(0.001))  # type: ignore[arg-type]
    checks = {c.name: c for c in report.checks}
    assert report.champion is None
    assert checks["schema"] == Check("schema", "skipped", detail="churn has no @champion yet")
    assert checks["behaviour.x1 raises risk"].status == "passed" and "of 25 rows" in checks["behaviour.x1 raises risk"].detail
    assert "behaviour" not in checks
