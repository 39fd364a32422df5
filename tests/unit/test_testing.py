"""rung.testing: a temporary project that runs and closes, a manual clock, a webhook receiver."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rung.clock import ManualClock as ClockManualClock
from rung.testing import HERMETIC, ManualClock, WebhookReceiver, temporary_project


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _mlflow_engines(uri: str) -> list[Any]:
    engines = []
    for module_name in ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store"):
        engine = getattr(sys.modules[module_name].SqlAlchemyStore, "_engine_map", {}).get(uri)
        if engine is not None:
            engines.append(engine)
    return engines


def test_temporary_project_runs_on_sqlite_and_closes_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the environment of a developer machine: a shared database the test must not touch
    monkeypatch.setenv("RUNG_DATABASE_URL", "postgresql+psycopg://nobody@invalid.example:5432/rung")
    monkeypatch.setenv("RUNG_TRACKING_URI", "http://invalid.example:5000")
    with temporary_project(tmp_path, rows=600) as project:
        assert project.root == (tmp_path / "churn").resolve()
        assert project.database_url.startswith("sqlite:///")
        assert project.tracking_uri == f"sqlite:///{project.state_dir / 'mlflow.db'}"
        assert project.settings.executor.kind == "local"
        result = project.run()
        assert result.run.status == "succeeded"
        assert result.run.model_version == 1
        assert project.lineage("churn:1")["model"]["version"] == 1
        # the run registered in a worker process; reading the aliases opens MLflow here
        assert project.models()[0]["aliases"] == ["challenger", "champion"]
        engines = _mlflow_engines(project.tracking_uri)
        assert engines, "MLflow pooled no engine for the project's URI"
        assert any(engine.pool.checkedin() for engine in engines)
    assert "store" not in project.__dict__ and "tracking" not in project.__dict__
    assert all(engine.pool.checkedin() == 0 for engine in engines)  # MLflow's connections released
    project.close()  # twice is fine


def test_temporary_project_name_and_overrides(tmp_path: Path) -> None:
    with temporary_project(tmp_path, template="tabular-regression", name="sales", rows=200,
                           overrides={"executor.workers": 3}) as project:
        assert project.settings.name == "sales"
        assert project.settings.task == "regression"
        assert project.settings.executor.workers == 3
        assert project.runs() == []
    assert set(HERMETIC) == {"store.database_url", "tracking.uri", "executor.kind"}


def test_manual_clock_is_rungs() -> None:
    assert ManualClock is ClockManualClock
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
    assert clock.advance(3600) == datetime(2026, 3, 1, 1, tzinfo=UTC)


def _post(url: str, body: Any) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_webhook_receiver_records_posts_and_answers_the_given_statuses() -> None:
    with WebhookReceiver(statuses=[503]) as hook:
        assert _post(hook.url + "/hook/a", {"text": "one"}) == 503
        assert _post(hook.url + "/hook/b", {"text": "two"}) == 200
    assert hook.received == [{"text": "one"}, {"text": "two"}]
    assert [path for path, _ in hook.requests] == ["/hook/a", "/hook/b"]
    hook.close()  # twice is fine
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(hook.url, data=b"{}", timeout=2)


def test_webhook_receiver_takes_an_alert_from_a_rung_sink() -> None:
    from rung.config.alerts import SinkSettings
    from rung.monitor.alerts import Notice
    from rung.monitor.notify import deliver

    at = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)
    notice = Notice("feature-drift", "churn:3", "drift.share", 0.45, "> 0.3", "warning", "firing", at, "churn:3 drifted", 2)
    with WebhookReceiver() as hook:
        [result] = deliver(notice, [SinkSettings(name="hook", kind="webhook", url=hook.url + "/alerts")])
    assert result.ok
    assert hook.received[0]["text"] == "churn:3 drifted"
