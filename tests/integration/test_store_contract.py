"""The metadata store behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import inspect
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from rung.delivery.routing import set_routing, single_version
from rung.errors import LeaseLost, RunNotFound, StaleDeployment, StaleRoute, StoreConflict, StoreError, StoreUnavailable
from rung.store import Deployment, Fence, MetadataStore, ModelVersionRecord, PipelineRun, TokenRecord, route_listener
from rung.store.records import MonitorWindow, Retrain
from tests.conftest import postgres_database
from tests.integration import test_loop_store as loop_contract


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/rung.db"
    else:
        url = request.getfixturevalue("postgres_url")
    s = MetadataStore(url)
    yield s
    s.close()


NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


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


def _token(token_id: str, name: str, at: datetime = NOW) -> TokenRecord:
    return TokenRecord(id=token_id, name=name, role="operator", sha256=(token_id * 64)[:64], created_at=at)


def test_tokens_are_found_by_digest_listed_oldest_first_and_revoked_once(store: MetadataStore) -> None:
    store.add_token(_token("b", "ci", NOW + timedelta(minutes=1)))
    store.add_token(_token("a", "laptop"))
    found = store.token_by_hash("a" * 64)
    assert found == _token("a", "laptop") and found.created_at.tzinfo is not None
    assert store.token_by_hash("f" * 64) is None
    assert [t.name for t in store.tokens()] == ["laptop", "ci"]
    assert store.revoke_token("a", NOW + timedelta(hours=1))
    assert not store.revoke_token("a", NOW + timedelta(hours=2))  # the first revocation stands
    assert not store.revoke_token("nope", NOW)
    revoked, kept = store.token_by_hash("a" * 64), store.token_by_hash("b" * 64)
    assert revoked is not None and revoked.revoked_at == NOW + timedelta(hours=1)
    assert kept is not None and kept.revoked_at is None
    with pytest.raises(StoreConflict, match="refused to record API token"):
        store.add_token(_token("a", "again"))


def test_routing_tables_move_by_revision_and_are_listed_with_their_revisions(store: MetadataStore) -> None:
    assert store.route("churn") is None and store.routes() == [] and store.route_revisions() == {}
    champion = [{"name": "champion", "version": 1, "weight": 100.0}]
    first = store.set_route("churn", champion, [], actor="a", reason="first", time=NOW, expected_revision=0)
    assert first.revision == 1 and first.updated_by == "a"
    canary = [{"name": "champion", "version": 1, "weight": 90.0}, {"name": "canary", "version": 2, "weight": 10.0}]
    shadow = [{"name": "shadow", "version": 3, "weight": 100.0}]
    store.set_route("churn", canary, shadow, actor="b", reason=None, time=NOW + timedelta(seconds=1),
                    event=lambda r: {"kind": "routing", "actor": "b", "subject": "churn", "time": NOW,
                                     "data": {"revision": r.revision}})
    with pytest.raises(StaleRoute):  # a writer whose read is old changes nothing
        store.set_route("churn", champion, [], actor="c", reason=None, time=NOW, expected_revision=1)
    store.set_route("accounts", champion, [], actor="a", reason=None, time=NOW)
    stored = store.route("churn")
    assert stored is not None and stored.revision == 2 and stored.variants == canary and stored.shadows == shadow
    assert stored.updated_at == NOW + timedelta(seconds=1) and stored.reason is None
    assert [r.model for r in store.routes()] == ["accounts", "churn"]
    assert store.route_revisions() == {"accounts": 1, "churn": 2}
    assert [e.data for e in store.events(subject="churn", kinds=["routing"])] == [{"revision": 2}]


def _beat(store: MetadataStore, replica: str, at: datetime, revisions: dict[str, int], *, pid: int = 10) -> None:
    store.heartbeat(replica, host="h1", pid=pid, url=f"http://h1:{pid}", started_at=NOW, revisions=revisions, now=at)


def test_replicas_heartbeat_into_one_row_each_and_are_listed_by_how_recently_heard(store: MetadataStore) -> None:
    assert store.replicas() == []
    _beat(store, "h1-8700", NOW, {"churn": 3})
    store.heartbeat("h1-8700", host="h1", pid=11, url="http://h1:11", started_at=NOW,  # the same id: its row, updated
                    revisions={"churn": 4, "accounts": 1}, now=NOW + timedelta(seconds=1))
    _beat(store, "h2-8700", NOW - timedelta(seconds=30), {"churn": 2})
    listed = store.replicas()
    assert [r.id for r in listed] == ["h1-8700", "h2-8700"]
    first = listed[0]
    assert (first.pid, first.url, first.revisions) == (11, "http://h1:11", {"churn": 4, "accounts": 1})
    assert first.started_at == NOW and first.last_seen == NOW + timedelta(seconds=1) and first.last_seen.tzinfo is not None
    now = NOW + timedelta(seconds=2)
    assert [r.id for r in store.replicas(active_within_s=5, now=now)] == ["h1-8700"]
    assert first.age_s(now) == 1.0
    assert first.lag({"churn": 4, "accounts": 1}, now) is None
    assert first.lag({"churn": 5, "accounts": 1}, now) == "churn: revision 4 of 5"
    assert listed[1].lag({"churn": 2, "other": 1}, now) == "not seen for 32 s; other: not served"
    store.forget_replica("h2-8700")
    store.forget_replica("never-there")
    assert [r.id for r in store.replicas()] == ["h1-8700"]


def test_a_committed_routing_change_is_announced_on_postgresql_and_a_refused_one_is_not(store: MetadataStore) -> None:
    """SQLite has no change channel (its gateways poll); PostgreSQL's NOTIFY goes out at commit, not before or without."""
    listener = route_listener(store, name="rung-listen contract")
    if store.dialect == "sqlite":
        assert listener is None
        return
    assert listener is not None
    with pytest.raises(StoreUnavailable, match="not connected"):
        listener.wait(0.01)
    listener.connect()
    try:
        assert listener.wait(0.05) == []
        store.set_route("churn", _CHAMPION, [], actor="t", reason=None, time=NOW)
        assert listener.wait(5) == ["churn:1"]
        with pytest.raises(StaleRoute):
            store.set_route("churn", _CHAMPION, [], actor="t", reason=None, time=NOW, expected_revision=0)
        assert listener.wait(0.3) == []  # rolled back: nothing announced
        with store.engine.begin() as conn:  # the listener's backend is cut off (a server restart, a proxy's idle timeout)
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE application_name = 'rung-listen contract'")
        with pytest.raises(StoreUnavailable, match="is unavailable, so rung could not keep listening for routing changes"):
            for _ in range(20):
                listener.wait(0.1)
        assert not listener.connected
        listener.connect()
        store.set_route("churn", _CHAMPION, [], actor="t", reason=None, time=NOW)
        assert listener.wait(5) == ["churn:2"]
    finally:
        listener.close()


def test_a_released_lease_is_free_for_anyone_but_only_its_holder_releases_it(store: MetadataStore) -> None:
    assert store.acquire_lease("scheduler", "a", now=NOW, ttl_s=60)
    store.release_lease("scheduler", "b")  # not b's to release
    assert not store.acquire_lease("scheduler", "b", now=NOW, ttl_s=60)
    store.release_lease("scheduler", "a")
    assert not store.renew_lease("scheduler", "a", now=NOW, ttl_s=60)  # released: nothing left to renew
    assert store.acquire_lease("scheduler", "b", now=NOW, ttl_s=60)


def test_a_second_record_of_the_same_key_is_a_conflict(store: MetadataStore) -> None:
    store.create_run(_run("r1"))
    version = ModelVersionRecord(name="m", version=1, run_id="r1", mlflow_run_id="ml", model_uri="models:/m/1",
                                 flavor="sklearn", sha256={}, metrics={}, lineage={}, created_at=NOW)
    store.add_model_version(version)
    assert store.get_model_version("m", 1) == version
    with pytest.raises(StoreConflict, match="m:1"):
        store.add_model_version(version)
    with pytest.raises(StoreConflict, match="pipeline run r1"):
        store.create_run(_run("r1"))


def test_a_closed_store_opens_new_connections_when_used_again(store: MetadataStore) -> None:
    store.create_run(_run("r1"))
    store.close()
    assert [r.id for r in store.list_runs()] == ["r1"]
    assert store.dialect in ("sqlite", "postgresql")


# -- a database that went away -----------------------------------------------------------------

_RETRAIN = Retrain(id="c" * 32, model="churn", trigger="drift", why="test", status="running", started_at=NOW)
_WINDOW = MonitorWindow(model="churn", version=1, start=NOW, end=NOW + timedelta(hours=1), rows=1, metrics={}, report={})
_CHAMPION = [{"name": "champion", "version": 1, "weight": 100.0}]

# One call of every public method (but close and dialect, which touch no table).
CALLS: dict[str, Callable[[MetadataStore], object]] = {
    "acquire_lease": lambda s: s.acquire_lease("controller", "a", now=NOW, ttl_s=10),
    "add_assessment": lambda s: s.add_assessment(time=NOW, target="t", mode="repo", levels={}, result={}),
    "add_feedback": lambda s: s.add_feedback([("r1", 1.0)], source="t", time=NOW),
    "add_model_version": lambda s: s.add_model_version(ModelVersionRecord(
        name="m", version=1, run_id="r1", mlflow_run_id="ml", model_uri="models:/m/1", flavor="sklearn", sha256={},
        metrics={}, lineage={}, created_at=NOW)),
    "add_retrain": lambda s: s.add_retrain(_RETRAIN, event=_event()),
    "add_token": lambda s: s.add_token(_token("a", "laptop")),
    "append_event": lambda s: s.append_event("x", actor="t", subject="churn", data={}, time=NOW),
    "assessments": lambda s: s.assessments(),
    "cache_get": lambda s: s.cache_get("k" * 64),
    "cache_put": lambda s: s.cache_put("k" * 64, "train", {}, "r1", NOW),
    "create_deployment": lambda s: s.create_deployment(_deployment("d1"), event=_event()),
    "create_run": lambda s: s.create_run(_run("r1"), steps=["one"]),
    "deployment": lambda s: s.deployment("d1"),
    "deployments": lambda s: s.deployments(),
    "events": lambda s: s.events(),
    "forget_replica": lambda s: s.forget_replica("h1-8700"),
    "feedback_count": lambda s: s.feedback_count(),
    "feedback_values": lambda s: s.feedback_values(["r1"]),
    "get_model_version": lambda s: s.get_model_version("m", 1),
    "get_run": lambda s: s.get_run("r1"),
    "heartbeat": lambda s: _beat(s, "h1-8700", NOW, {"churn": 1}),
    "list_model_versions": lambda s: s.list_model_versions(),
    "list_runs": lambda s: s.list_runs(),
    "record_step": lambda s: s.record_step("r1", "one", status="running"),
    "release_lease": lambda s: s.release_lease("controller", "a"),
    "renew_lease": lambda s: s.renew_lease("controller", "a", now=NOW, ttl_s=10),
    "replicas": lambda s: s.replicas(),
    "retrains": lambda s: s.retrains(),
    "revoke_token": lambda s: s.revoke_token("a", NOW),
    "route": lambda s: s.route("churn"),
    "route_revisions": lambda s: s.route_revisions(),
    "routes": lambda s: s.routes(),
    "save_state": lambda s: s.save_state("x", {}, time=NOW),
    "save_window": lambda s: s.save_window(_WINDOW),
    "set_route": lambda s: s.set_route("churn", _CHAMPION, [], actor="t", reason=None, time=NOW),
    "state": lambda s: s.state("x"),
    "steps": lambda s: s.steps("r1"),
    "token_by_hash": lambda s: s.token_by_hash("a" * 64),
    "tokens": lambda s: s.tokens(),
    "transition": lambda s: s.transition("d1", 1, {"step": 1}, None),
    "update_retrain": lambda s: s.update_retrain(_RETRAIN.id, {"status": "failed"}),
    "update_run": lambda s: s.update_run("r1", status="failed"),
    "windows": lambda s: s.windows("churn"),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def gone(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[MetadataStore, str]]:
    """A store that worked, whose database then went away: its directory removed, or the database dropped."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path}/home/rung.db"
        else:
            url = stack.enter_context(postgres_database())
        s = MetadataStore(url)
        stack.callback(s.close)
        s.create_run(_run("r1"))
        if request.param == "sqlite":
            s.close()
            shutil.rmtree(tmp_path / "home")
        else:
            admin = sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE "{sa.make_url(url).database}" WITH (FORCE)')
            admin.dispose()
        yield s, str(sa.make_url(url).database)


def test_every_method_of_a_store_whose_database_went_away_says_so(gone: tuple[MetadataStore, str]) -> None:
    store, database = gone
    wrong: dict[str, str] = {}
    for method, call in sorted(CALLS.items()):
        try:
            call(store)
        except StoreUnavailable as exc:
            message = str(exc)
            clear = message.startswith("the metadata store ") and database in message and "is unavailable" in message \
                and "RUNG_DATABASE_URL" in message and "[SQL:" not in message  # the driver's words, not SQLAlchemy's dump
            if not clear or not isinstance(exc.__cause__, sa.exc.SQLAlchemyError):
                wrong[method] = message
        except BaseException as exc:  # noqa: BLE001 (reported below)
            wrong[method] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        else:
            wrong[method] = "returned"
    assert wrong == {}


def test_a_store_on_a_closed_port_does_not_open_and_hides_the_password() -> None:
    with pytest.raises(StoreUnavailable, match="cannot open the metadata store .*127.0.0.1:1/rung") as raised:
        MetadataStore("postgresql://rung:s3cret@127.0.0.1:1/rung")
    assert "s3cret" not in str(raised.value) and "RUNG_DATABASE_URL" in str(raised.value)


def test_a_failed_write_is_a_store_error_naming_what_failed(store: MetadataStore) -> None:
    store.create_deployment(_deployment("d1"), event=_event("deploy"))
    with pytest.raises(StoreError, match="failed to move rollout d1: .*colour") as raised:
        store.transition("d1", 1, {"colour": "red"}, None)  # no such column
    assert not isinstance(raised.value, (StoreUnavailable, StoreConflict))
    unchanged = store.deployment("d1")
    assert unchanged is not None and unchanged.revision == 1


# -- the suite covers every public method --------------------------------------------------------

CONTRACT: dict[str, tuple[Callable[..., None], ...]] = {
    "acquire_lease": (test_feedback_and_lease, test_a_released_lease_is_free_for_anyone_but_only_its_holder_releases_it),
    "add_assessment": (loop_contract.test_assessments_are_kept_per_target_oldest_first,),
    "add_feedback": (test_feedback_and_lease,),
    "add_model_version": (test_model_versions_and_events, test_a_second_record_of_the_same_key_is_a_conflict),
    "add_retrain": (loop_contract.test_retrainings_and_their_chain_of_events,),
    "add_token": (test_tokens_are_found_by_digest_listed_oldest_first_and_revoked_once,),
    "append_event": (test_model_versions_and_events,),
    "assessments": (loop_contract.test_assessments_are_kept_per_target_oldest_first,),
    "cache_get": (test_cache_latest_writer_wins,),
    "cache_put": (test_cache_latest_writer_wins,),
    "close": (test_a_closed_store_opens_new_connections_when_used_again,),
    "create_deployment": (test_rollouts_move_by_compare_and_set_and_a_deploy_supersedes,),
    "create_run": (test_runs_and_steps_round_trip,),
    "deployment": (test_rollouts_move_by_compare_and_set_and_a_deploy_supersedes,),
    "deployments": (test_rollouts_move_by_compare_and_set_and_a_deploy_supersedes,),
    "dialect": (test_a_routing_write_whose_event_fails_changes_nothing,),
    "events": (test_model_versions_and_events, loop_contract.test_retrainings_and_their_chain_of_events),
    "feedback_count": (loop_contract.test_feedback_is_counted,),
    "forget_replica": (test_replicas_heartbeat_into_one_row_each_and_are_listed_by_how_recently_heard,),
    "feedback_values": (test_feedback_and_lease,),
    "get_model_version": (test_model_versions_and_events,),
    "get_run": (test_runs_and_steps_round_trip,),
    "heartbeat": (test_replicas_heartbeat_into_one_row_each_and_are_listed_by_how_recently_heard,),
    "list_model_versions": (test_model_versions_and_events,),
    "list_runs": (test_runs_and_steps_round_trip,),
    "record_step": (test_runs_and_steps_round_trip,),
    "release_lease": (test_a_released_lease_is_free_for_anyone_but_only_its_holder_releases_it,),
    "renew_lease": (test_a_holder_whose_lease_expired_is_refused_in_the_same_transaction,),
    "replicas": (test_replicas_heartbeat_into_one_row_each_and_are_listed_by_how_recently_heard,),
    "retrains": (loop_contract.test_retrainings_and_their_chain_of_events,),
    "revoke_token": (test_tokens_are_found_by_digest_listed_oldest_first_and_revoked_once,),
    "route": (test_routing_tables_move_by_revision_and_are_listed_with_their_revisions,),
    "route_revisions": (test_routing_tables_move_by_revision_and_are_listed_with_their_revisions,),
    "routes": (test_routing_tables_move_by_revision_and_are_listed_with_their_revisions,),
    "save_state": (loop_contract.test_loop_state_round_trips_and_is_overwritten,),
    "save_window": (loop_contract.test_windows_are_replaced_when_checked_again_and_listed_oldest_first,),
    "set_route": (test_routing_tables_move_by_revision_and_are_listed_with_their_revisions,
                  test_a_holder_whose_lease_expired_is_refused_in_the_same_transaction),
    "state": (loop_contract.test_loop_state_round_trips_and_is_overwritten,),
    "steps": (test_runs_and_steps_round_trip,),
    "token_by_hash": (test_tokens_are_found_by_digest_listed_oldest_first_and_revoked_once,),
    "tokens": (test_tokens_are_found_by_digest_listed_oldest_first_and_revoked_once,),
    "transition": (test_rollouts_move_by_compare_and_set_and_a_deploy_supersedes,),
    "update_retrain": (loop_contract.test_retrainings_and_their_chain_of_events,),
    "update_run": (test_runs_and_steps_round_trip,),
    "windows": (loop_contract.test_windows_are_replaced_when_checked_again_and_listed_oldest_first,),
}


def test_every_public_method_of_the_store_has_a_contract_test_that_calls_it() -> None:
    public = {name for name in dir(MetadataStore) if not name.startswith("_")}
    assert sorted(public - set(CONTRACT)) == [], "add a contract test for these methods and list it in CONTRACT"
    assert sorted(set(CONTRACT) - public) == [], "CONTRACT names methods the store no longer has"
    for name, tests in CONTRACT.items():
        assert any(re.search(rf"\bstore\.{name}\b", inspect.getsource(test)) for test in tests), \
            f"none of {[t.__name__ for t in tests]} calls store.{name}"
        # a contract test takes the `store` fixture, which runs it on SQLite and on PostgreSQL
        assert all(list(inspect.signature(test).parameters) == ["store"] for test in tests), name
    assert set(CALLS) == public - {"close", "dialect"}, "CALLS needs one call of every method that uses the database"
