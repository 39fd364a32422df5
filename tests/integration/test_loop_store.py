"""The loop's tables (monitoring windows, loop state, retrainings, event chains) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rung.store import MetadataStore
from rung.store.records import MonitorWindow, Retrain

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    url = f"sqlite:///{tmp_path}/rung.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = MetadataStore(url)
    yield s
    s.close()


def _window(version: int, hour: int, **metrics: float) -> MonitorWindow:
    start = NOW + timedelta(hours=hour)
    return MonitorWindow(model="churn", version=version, start=start, end=start + timedelta(hours=1), rows=10,
                         metrics=metrics, report={"drift": {"drift_share": metrics.get("drift.share")}})


def test_windows_are_replaced_when_checked_again_and_listed_oldest_first(store: MetadataStore) -> None:
    store.save_window(_window(1, 0, **{"drift.share": 0.1}))
    store.save_window(_window(1, 1, **{"drift.share": 0.2}))
    store.save_window(_window(2, 1, **{"drift.share": 0.3}))
    store.save_window(_window(1, 1, **{"drift.share": 0.5, "performance.accuracy": 0.8}))  # labels arrived
    found = store.windows("churn")
    assert [(w.version, w.start, w.metrics.get("drift.share")) for w in found] == [
        (1, NOW, 0.1), (1, NOW + timedelta(hours=1), 0.5), (2, NOW + timedelta(hours=1), 0.3)]
    assert found[1].metrics["performance.accuracy"] == 0.8 and found[1].start.tzinfo is not None
    assert [w.version for w in store.windows("churn", version=2)] == [2]
    assert [w.start for w in store.windows("churn", since=NOW + timedelta(hours=1))] == [NOW + timedelta(hours=1)] * 2
    assert store.windows("other") == []


def test_loop_state_round_trips_and_is_overwritten(store: MetadataStore) -> None:
    assert store.state("alerts:churn") == {}
    store.save_state("alerts:churn", {"rules": {"a": {"streak": 2}}}, time=NOW)
    store.save_state("alerts:churn", {"rules": {"a": {"streak": 3}}}, time=NOW)
    assert store.state("alerts:churn") == {"rules": {"a": {"streak": 3}}}


def test_retrainings_and_their_chain_of_events(store: MetadataStore) -> None:
    record = Retrain(id="c" * 32, model="churn", trigger="drift", why="drift.share > 0.3", status="running", started_at=NOW)
    store.add_retrain(record, event={"kind": "retrain.triggered", "actor": "scheduler", "subject": "churn", "data": {},
                                     "time": NOW, "chain": record.id})
    store.append_event("unrelated", actor="x", subject="churn", data={}, time=NOW)
    store.update_retrain(record.id, {"status": "deployed", "finished_at": NOW, "version": 2},
                         event={"kind": "retrain.run", "actor": "scheduler", "subject": "churn", "data": {"version": 2},
                                "time": NOW, "chain": record.id})
    [stored] = store.retrains("churn")
    assert stored == replace(record, status="deployed", finished_at=NOW, version=2)
    chain = store.events(chain=record.id)
    assert [e.kind for e in chain] == ["retrain.triggered", "retrain.run"] and {e.chain for e in chain} == {record.id}
    first = store.events()[0].id
    assert [e.kind for e in store.events(after_id=first)] == ["unrelated", "retrain.run"]
    assert [e.kind for e in store.events(kinds=["unrelated"])] == ["unrelated"]


def test_assessments_are_kept_per_target_oldest_first(store: MetadataStore) -> None:
    for hours, level in ((2, 3), (0, 1), (1, 2)):
        store.add_assessment(time=NOW + timedelta(hours=hours), target="/repo/a", mode="repo",
                             levels={"azure": level, "google": None}, result={"schema": "rung.assess/1", "n": level})
    store.add_assessment(time=NOW, target="/repo/b", mode="repo", levels={"azure": 0}, result={})
    kept = store.assessments("/repo/a")
    assert [a["levels"]["azure"] for a in kept] == [1, 2, 3]
    assert kept[0]["levels"]["google"] is None and kept[-1]["result"]["n"] == 3 and kept[0]["time"].tzinfo is not None
    assert [a["levels"]["azure"] for a in store.assessments("/repo/a", limit=2)] == [2, 3]
    assert len(store.assessments()) == 4 and store.assessments("/repo/c") == []


def test_feedback_is_counted(store: MetadataStore) -> None:
    assert store.feedback_count() == 0
    store.add_feedback([("r1", 1.0), ("r2", 0.0)], source="test", time=NOW)
    assert store.feedback_count() == 2
