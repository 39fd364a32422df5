"""The metadata store behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from rung.errors import LeaseLost, RunNotFound, StaleDeployment, StaleRoute
from rung.serving.routing import set_routing, single_version
from rung.store import Deployment, Fence, MetadataStore, ModelVersionRecord, PipelineRun


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/rung.db"
    else:
        url = request.getfixturevalue("postgres_url")
    s = MetadataStore(url)
    yield s
    s.close()


NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def _run(run_id: str, minutes: int = 0) -> PipelineRun:
    return PipelineRun(
        id=run_id, project="p", pipeline="p", status="running", trigger="manual",
        started_at=NOW.replace(minute=minutes), params={"a": 1}, lineage={"code": {"git_commit": None}},
    )


def test_runs_and_steps_round_trip(store: MetadataStore) -> None:
    store.create_run(_run("aaaa1111"), steps=["one", "two"])
    store.create_run(_run("bbbb2222", minutes=5))
    store.record_step("aaaa1111", "one", status="succeeded", attempts=2, outputs={"x": "ref.json"})
    store.update_run("aaaa1111", status="succeeded", metrics={"overall": {"auc": 0.9}}, finished_at=NOW.replace(minute=1))
    run = store.get_run("aaaa")
    assert run.status == "succeeded" and run.metrics["overall"]["auc"] == 0.9
    assert run.started_at == NOW and run.duration_s == 60.0
    steps = {s.name: s for s in store.steps("aaaa1111")}
    assert steps["one"].attempts == 2 and steps["one"].outputs == {"x": "ref.json"} and steps["two"].status == "pending"
    assert [r.id for r in store.list_runs(project="p")] == ["bbbb2222", "aaaa1111"]
    with pytest.raises(RunNotFound):
        store.get_run("zzzz")
    store.create_run(_run("aaaa3333"))
    with pytest.raises(RunNotFound, match="several"):
        store.get_run("aaaa")


def test_cache_latest_writer_wins(store: MetadataStore) -> None:
    store.cache_put("k" * 64, "train", {"model": "a.pickle"}, "r1", NOW)
    store.cache_put("k" * 64, "train", {"model": "b.pickle"}, "r2", NOW)
    assert store.cache_get("k" * 64) == {"model": "b.pickle"}
    assert store.cache_get("x" * 64) is None


def test_model_versions_and_events(store: MetadataStore) -> None:
    store.create_run(_run("r1"))
    for version in (1, 2):
        store.add_model_version(ModelVersionRecord(
            name="m", version=version, run_id="r1", mlflow_run_id="ml", model_uri=f"models:/m/{version}",
            flavor="sklearn", sha256={"model.skops": "ab"}, metrics={"overall": {}}, lineage={}, created_at=NOW,
        ))
    assert [v.version for v in store.list_model_versions("m")] == [2, 1]
    assert store.get_model_version("m", 3) is None
    store.append_event("model.registered", actor="pipeline", subject="m", data={"version": 1}, time=NOW)
    events = store.events("m")
    assert len(events) == 1 and events[0].data == {"version": 1} and events[0].time == NOW


def test_reopening_does_not_migrate_twice(store: MetadataStore) -> None:
    again = MetadataStore(store.url)
    assert again.list_runs() == []
    again.close()


def _deployment(deployment_id: str, at: datetime = NOW) -> Deployment:
    return Deployment(id=deployment_id, model="churn", version=2, baseline=1, strategy="canary", state="running", step=0,
                      step_started_at=at, extensions=0, plan={"outcome": "accuracy"}, evidence={}, forced=False,
                      created_at=at, updated_at=at, created_by="test", reason=None, revision=1)


def _event(kind: str = "rollout") -> dict:
    return {"kind": kind, "actor": "test", "subject": "churn", "data": {"why": "test"}, "time": NOW}


def test_rollouts_move_by_compare_and_set_and_a_deploy_supersedes(store: MetadataStore) -> None:
    store.create_deployment(_deployment("d1"), event=_event("deploy"))
    moved = store.transition("d1", 1, {"step": 1}, _event())
    assert moved.step == 1 and moved.revision == 2
    with pytest.raises(StaleDeployment):
        store.transition("d1", 1, {"state": "promoted"}, _event())  # a second actor with an old read changes nothing
    assert store.deployment("d1").state == "running"
    ended = store.create_deployment(_deployment("d2"), event=_event("deploy"), superseded_event=_event())
    assert [d.id for d in ended] == ["d1"]
    assert store.deployment("d1").state == "superseded"
    assert [d.id for d in store.deployments("churn", active=True)] == ["d2"]
    kinds = [e.kind for e in store.events(subject="churn")]
    assert kinds == ["deploy", "rollout", "rollout", "deploy"]


def test_feedback_and_lease(store: MetadataStore) -> None:
    # Feedback is not checked against the request log (Parquet files): any id is kept, first value stands.
    outcome = store.add_feedback([("r0", 1.0), ("r0", 1.0), ("r1", 0.0), ("zz", 1.0)], source="t", time=NOW,
                                 models={"r0": "churn", "r1": "churn"})
    assert outcome == {"accepted": ["r0", "r1", "zz"], "duplicate": ["r0"], "conflict": []}
    assert store.add_feedback([("r1", 1.0)], source="t", time=NOW)["conflict"] == ["r1"]
    assert store.feedback_values(["r0", "r1", "zz", "r2#3", "nope"]) == {"r0": 1.0, "r1": 0.0, "zz": 1.0}
    assert store.feedback_values([f"id{i}" for i in range(2500)]) == {}  # chunked IN lists
    assert store.acquire_lease("controller", "a", now=NOW, ttl_s=10)
    assert not store.acquire_lease("controller", "b", now=NOW.replace(second=5), ttl_s=10)
    assert store.acquire_lease("controller", "a", now=NOW.replace(second=5), ttl_s=10)  # renewal
    assert store.acquire_lease("controller", "b", now=NOW.replace(second=16), ttl_s=10)  # expired: taken over


def test_racing_deploys_leave_exactly_one_active_rollout(store: MetadataStore) -> None:
    import threading

    for round_ in range(5):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def one(deployment_id: str) -> None:
            barrier.wait()
            try:
                store.create_deployment(_deployment(deployment_id), event=_event("deploy"), superseded_event=_event())
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(f"r{round_}{side}",)) for side in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(store.deployments("churn", active=True)) == 1
    states = sorted(d.state for d in store.deployments("churn"))
    assert states == ["running"] + ["superseded"] * 9


def test_a_holder_whose_lease_expired_is_refused_in_the_same_transaction(store: MetadataStore) -> None:
    later = lambda s: NOW + timedelta(seconds=s)  # noqa: E731
    assert store.acquire_lease("controller", "a", now=NOW, ttl_s=10)
    store.create_deployment(_deployment("d1"), event=_event("deploy"))
    moved = store.transition("d1", 1, {"step": 1}, _event(), fence=Fence("controller", "a", later(5)))
    assert moved.revision == 2
    # the write names the lease it was made under, as read in its own transaction
    assert store.events(subject="churn")[-1].data["lease"] == {"holder": "a", "expires_at": later(10).isoformat()}
    expired = Fence("controller", "a", later(11))
    with pytest.raises(LeaseLost, match="controller lease"):
        store.transition("d1", 2, {"state": "promoted"}, _event(), fence=expired)
    with pytest.raises(LeaseLost):
        store.set_route("churn", [{"name": "champion", "version": 1, "weight": 100.0}], [], actor="controller",
                        reason="late", time=later(11), fence=expired)
    assert not store.renew_lease("controller", "a", now=later(11), ttl_s=10)  # an expired term is not renewed
    assert store.acquire_lease("controller", "b", now=later(12), ttl_s=10)
    with pytest.raises(LeaseLost, match="held by b"):
        store.transition("d1", 2, {"state": "rolled_back"}, _event(), fence=Fence("controller", "a", later(12)))
    assert store.deployment("d1").revision == 2 and store.deployment("d1").state == "running"
    assert store.route("churn") is None
    assert [e.kind for e in store.events(subject="churn")] == ["deploy", "rollout"]  # refused writes left no event
    assert store.renew_lease("controller", "b", now=later(15), ttl_s=10)
    store.transition("d1", 2, {"state": "promoted"}, _event(), fence=Fence("controller", "b", later(16)))
    assert store.deployment("d1").state == "promoted"


def test_racing_first_routing_writes_all_land_or_conflict_each_with_one_event(store: MetadataStore) -> None:
    writers = 6
    for round_ in range(5):
        model = f"m{round_}"
        barrier = threading.Barrier(writers)
        results: list[object] = []
        errors: list[BaseException] = []

        def one(i: int) -> None:
            barrier.wait()
            try:
                # half write blindly, half only if the table is still new (as a gateway starting up does)
                results.append(set_routing(store, single_version(model, i + 1), actor=f"w{i}",
                                           expected_revision=0 if i % 2 else None))
            except StaleRoute:
                results.append("stale")
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], errors
        written = [r for r in results if r != "stale"]
        assert len(written) >= writers // 2  # every blind write landed
        assert store.route(model).revision == len(written)
        events = [e for e in store.events(subject=model) if e.kind == "routing"]
        assert sorted(e.data["revision"] for e in events) == list(range(1, len(written) + 1))


def test_a_routing_write_whose_event_fails_changes_nothing(store: MetadataStore) -> None:
    with store.engine.begin() as conn:  # a real failure of the events insert, inside the database
        if store.dialect == "sqlite":
            conn.exec_driver_sql("CREATE TRIGGER no_events BEFORE INSERT ON events WHEN NEW.subject = 'boom' "
                                 "BEGIN SELECT RAISE(ABORT, 'events refused'); END")
        else:
            conn.exec_driver_sql("CREATE FUNCTION no_events() RETURNS trigger AS $$ BEGIN "
                                 "IF NEW.subject = 'boom' THEN RAISE EXCEPTION 'events refused'; END IF; RETURN NEW; END "
                                 "$$ LANGUAGE plpgsql")
            conn.exec_driver_sql("CREATE TRIGGER no_events BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION no_events()")
    with pytest.raises(Exception, match="events refused"):
        set_routing(store, single_version("boom", 1), actor="test")
    assert store.route("boom") is None
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM routes")).scalar() == 0
