"""Rollouts under a clock the tests control: canary, A/B, shadow, approval, supersede, leases, crashes.

Traffic is simulated the way the gateway would log it: each request is
routed by the current routing table (the real, pure choice function) and
its outcome written to the request log (Parquet segments, through the
gateway's own writer), with timestamps from the manual clock, so windows of
minutes take no real time.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from rung.clock import ManualClock
from rung.delivery import feedback
from rung.delivery.controller import Controller
from rung.delivery.rollout import approve, current, deploy, rollback
from rung.delivery.routing import RoutingTable, set_routing, single_version
from rung.errors import ConfigError, DeployRefused
from rung.monitor.logreader import RequestLogReader
from rung.monitor.requestlog import RequestLog, log_root
from rung.project import Project
from rung.store import Deployment, schema
from tests.conftest import postgres_database, rung_cli

SETTINGS = """
deploy:
  strategy: canary
  grace_s: 120
  canary: {steps: [10, 50, 100], window_s: 60, min_requests: 50, max_extensions: 2}
  ab: {min_samples: 100, check_every_s: 30, max_duration_s: 86400, tau: 0.1}
  shadow: {window_s: 60, min_requests: 50, min_agreement: 0.8}
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two_versions(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Iterator[Path]:
    """Two registered versions of churn, with the metadata store on SQLite, then on PostgreSQL."""
    import pandas as pd

    with contextlib.ExitStack() as stack:
        root = tmp_path_factory.mktemp(f"delivery-{request.param}") / "churn"
        shutil.copytree(template_project, root)
        with open(root / "rung.yaml", "a") as config:
            config.write(SETTINGS)
            if request.param == "postgresql":
                config.write(f"store:\n  database_url: {stack.enter_context(postgres_database())}\n")
        assert rung_cli("run", cwd=root).returncode == 0
        data = root / "data" / "train.csv"
        pd.read_csv(data).iloc[::-1].to_csv(data, index=False)
        assert rung_cli("run", cwd=root).returncode == 0
        yield root


@pytest.fixture
def project(two_versions: Path) -> Project:
    """The module's project reset to: v1 champion serving alone, no rollouts, empty logs."""
    project = Project.open(two_versions)
    store = project.store
    with store.engine.begin() as conn:
        for table in (schema.deployments, schema.feedback, schema.leases):
            conn.execute(table.delete())
    shutil.rmtree(log_root(project).full(), ignore_errors=True)
    set_routing(store, single_version("churn", 1), actor="test", reason="reset")
    project.tracking.set_alias("churn", "champion", 1)
    if "challenger" in project.tracking.aliases().get("churn", {}):
        project.tracking.delete_alias("churn", "challenger")
    return project


class Traffic:
    """Requests as the gateway would log them, routed by the stored table."""

    def __init__(self, project: Project, clock: ManualClock, seed: int = 0) -> None:
        self.project, self.clock = project, clock
        self.log = RequestLog(log_root(project), clock=clock)  # not started: send() writes its segment itself
        self.rng = np.random.default_rng(seed)
        self.count = 0
        self.served: dict[int, int] = {}

    def send(self, n: int, *, candidate: int = 2, errors: float = 0.0, slow_ms: float = 0.0, shift: float = 0.0,
             accuracy: dict[int, float] | None = None, feedback: bool = False) -> None:
        record = self.project.store.route("churn")
        table = RoutingTable.from_record(record)
        labels = []
        for _ in range(n):
            self.count += 1
            rid = f"r{self.count}"
            variant = table.choose(rid)
            for version, shadow in [(variant.version, False)] + [(s.version, True) for s in table.shadows]:
                bad = version == candidate
                score = float(np.clip(self.rng.beta(2, 5) + (shift if bad else 0.0), 0, 1))
                prediction = int(score > 0.5)
                self.log.record(rid, "churn", version, variant.name if not shadow else "shadow", shadow=shadow,
                                status=500 if bad and self.rng.random() < errors else 200,
                                latency_s=(float(self.rng.gamma(4, 1.0)) + (slow_ms if bad else 0.0)) / 1000,
                                predictions=[prediction], scores=[score])
                if not shadow:
                    self.served[version] = self.served.get(version, 0) + 1
                    if feedback and accuracy:
                        right = self.rng.random() < accuracy[version]
                        labels.append((rid, float(prediction if right else 1 - prediction)))
        self.log.flush()
        if labels:
            self.project.store.add_feedback(labels, source="test", time=self.clock.now())


def run_until_settled(controller: Controller, traffic: Traffic, clock: ManualClock, *, step_s: float = 20, per_step: int = 200,
                      limit: int = 200, **behaviour: Any) -> str:
    for _ in range(limit):
        traffic.send(per_step, **behaviour)
        clock.advance(step_s)
        controller.tick()
        latest = newest(controller.project)
        if not latest.active:
            controller.tick()  # the routing and aliases of the final state
            return latest.state
    raise AssertionError("the rollout never settled")


def newest(project: Project) -> Deployment:
    found = current(project.store.deployments("churn", limit=1000))
    assert found is not None
    return found


def weights(project: Project) -> dict[int, float]:
    record = project.store.route("churn")
    return {v["version"]: v["weight"] for v in record.variants}


def aliases(project: Project) -> dict[str, int]:
    return project.tracking.aliases().get("churn", {})


def rollout_events(project: Project, deployment_id: str | None = None) -> list[dict[str, Any]]:
    """Rollout events of one rollout (default: the newest)."""
    deployment_id = deployment_id or newest(project).id
    return [e.data for e in project.store.events(subject="churn", limit=5000)
            if e.kind == "rollout" and e.data.get("deployment") == deployment_id]


def test_a_good_canary_walks_the_steps_and_is_promoted(project: Project) -> None:
    clock = ManualClock()
    started = clock.now()
    deployment = deploy(project, "churn:2", force=True, clock=clock)
    controller = Controller(project, clock=clock)
    controller.tick()
    assert weights(project) == {2: 10.0, 1: 90.0}
    assert aliases(project) == {"champion": 1, "challenger": 2}
    state = run_until_settled(controller, Traffic(project, clock), clock)
    assert state == "promoted"
    steps = [(e["weight_before"], e["weight_after"]) for e in rollout_events(project)]
    assert steps == [(10.0, 50.0), (50.0, 100.0)]
    assert weights(project) == {2: 100.0, 1: 0.0}  # the old champion stays loaded for the grace period
    assert aliases(project) == {"champion": 2}
    final = project.store.deployment(deployment.id)
    assert final.evidence["result"] == "pass" and {c["name"] for c in final.evidence["checks"]} >= {"traffic", "error_rate"}
    assert (final.updated_at - started).total_seconds() >= 120  # two windows of 60 s
    print(f"deploy to 100% (simulated clock): {(final.updated_at - started).total_seconds():.0f} s")
    clock.advance(121)
    controller.tick()
    assert weights(project) == {2: 100.0}  # grace over: only the champion


def test_a_canary_that_fails_requests_is_rolled_back_before_its_window_ends(project: Project) -> None:
    clock = ManualClock()
    deploy(project, "churn:2", force=True, clock=clock)
    controller = Controller(project, clock=clock)
    controller.tick()
    traffic = Traffic(project, clock)
    state = run_until_settled(controller, traffic, clock, step_s=5, per_step=50, errors=0.5)
    assert state == "rolled_back"
    assert weights(project) == {1: 100.0}
    assert aliases(project) == {"champion": 1}
    last = rollout_events(project)[-1]
    assert last["to"] == "rolled_back" and "error_rate" in last["why"]
    assert last["evidence"]["checks"][0]["n_candidate"] >= 20
    assert traffic.served[2] < 60, f"{traffic.served[2]} requests hit the bad canary"
    print(f"requests that hit the bad canary before its rollback: {traffic.served[2]} of {sum(traffic.served.values())}")


@pytest.mark.parametrize(("behaviour", "check"), [({"slow_ms": 80.0}, "latency_p99_ms"), ({"shift": 0.6}, "divergence")])
def test_a_slow_or_shifted_canary_is_rolled_back_at_its_window(project: Project, behaviour: dict, check: str) -> None:
    clock = ManualClock()
    deploy(project, "churn:2", force=True, clock=clock)
    controller = Controller(project, clock=clock)
    controller.tick()
    assert run_until_settled(controller, Traffic(project, clock), clock, **behaviour) == "rolled_back"
    last = rollout_events(project)[-1]
    failed = [c["name"] for c in last["evidence"]["checks"] if c["status"] == "fail"]
    assert failed == [check], last["evidence"]
    assert weights(project) == {1: 100.0}


def test_a_canary_without_traffic_waits_and_the_wait_never_counts_against_it(project: Project) -> None:
    clock = ManualClock()
    deployment = deploy(project, "churn:2", force=True, clock=clock)
    controller = Controller(project, clock=clock)
    for _ in range(30):  # 15 minutes, far too little traffic for min_requests (max_extensions is 2)
        Traffic(project, clock).send(1)
        clock.advance(30)
        controller.tick()
    waiting = project.store.deployment(deployment.id)
    assert waiting.state == "running" and waiting.step == 0 and waiting.extensions == 0
    assert rollout_events(project) == []  # no extension, no rollback: nothing was judged against it
    assert waiting.evidence["result"] == "inconclusive" and "waiting for traffic" in waiting.evidence["note"]
    assert aliases(project) == {"champion": 1, "challenger": 2}
    Traffic(project, clock).send(1500)  # the traffic comes: judged on it, and it passes
    clock.advance(1)
    controller.tick()
    assert [(e["from"], e["step"]) for e in rollout_events(project)] == [("running", 1)]
    assert weights(project) == {2: 50.0, 1: 50.0}


def test_deploy_routes_the_first_step_before_any_controller_runs(project: Project) -> None:
    made = rung_cli("deploy", "churn:2", "--force", "--strategy", "canary", cwd=project.root)
    assert made.returncode == 0, made.stderr
    assert weights(project) == {2: 10.0, 1: 90.0}  # the canary's first step, with no controller anywhere
    routing = [e for e in project.store.events(subject="churn", limit=50) if e.kind == "routing"][-1]
    assert routing.actor == "cli" and routing.data["variants"][0] == {"name": "candidate", "version": 2, "weight": 10.0,
                                                                       "share": 0.1}


def test_ab_promotes_a_better_candidate_on_feedback(project: Project) -> None:
    clock = ManualClock()
    deploy(project, "churn:2", strategy="ab", force=True, clock=clock)
    controller = Controller(project, clock=clock)
    controller.tick()
    assert weights(project) == {2: 50.0, 1: 50.0}
    state = run_until_settled(controller, Traffic(project, clock), clock, step_s=30,
                              accuracy={1: 0.70, 2: 0.85}, feedback=True)
    assert state == "promoted"
    decision = newest(project).evidence["checks"][0]
    assert decision["name"] == "ab_outcome" and decision["value"] <= 0.05 and decision["effect"] > 0
    assert weights(project)[2] == 100.0 and aliases(project) == {"champion": 2}


def test_ab_keeps_the_champion_when_it_is_better(project: Project) -> None:
    clock = ManualClock()
    deploy(project, "churn:2", strategy="ab", force=True, clock=clock)
    controller = Controller(project, clock=clock)
    controller.tick()
    state = run_until_settled(controller, Traffic(project, clock), clock, step_s=30,
                              accuracy={1: 0.85, 2: 0.70}, feedback=True)
    assert state == "rolled_back" and aliases(project) == {"champion": 1} and weights(project) == {1: 100.0}


def test_shadow_mirrors_without_answering_then_promotes(project: Project) -> None:
    clock = ManualClock()
    deploy(project, "churn:2", strategy="shadow", force=True, clock=clock)
    controller = Controller(project, clock=clock)
    controller.tick()
    record = project.store.route("churn")
    assert [v["version"] for v in record.variants] == [1] and [s["version"] for s in record.shadows] == [2]
    traffic = Traffic(project, clock)
    assert run_until_settled(controller, traffic, clock) == "promoted"
    assert traffic.served.get(2, 0) == 0 or traffic.served[2] <= 40  # answers came from v1 while shadowing
    checks = {c["name"]: c for c in newest(project).evidence["checks"]}
    assert checks["agreement"]["status"] == "pass" and checks["agreement"]["value"] >= 0.8


def test_approval_required_waits_for_a_person(project: Project) -> None:
    clock = ManualClock()
    deploy(Project.open(project.root, overrides={"deploy.approval": "required"}), "churn:2", force=True, clock=clock)
    controller = Controller(project, clock=clock)
    traffic = Traffic(project, clock)
    for _ in range(40):
        traffic.send(200)
        clock.advance(20)
        controller.tick()
    latest = newest(project)
    assert latest.state == "awaiting_approval" and aliases(project)["champion"] == 1
    approve(project, "churn", actor="alice", clock=clock)
    controller.tick()
    assert aliases(project) == {"champion": 2} and weights(project)[2] == 100.0
    assert rollout_events(project)[-1]["why"] == "approved by alice"


def test_a_new_deploy_supersedes_the_running_one_and_rollback_is_immediate(project: Project) -> None:
    clock = ManualClock()
    first = deploy(project, "churn:2", force=True, clock=clock)
    controller = Controller(project, clock=clock)
    controller.tick()
    second = deploy(project, "churn:2", strategy="ab", force=True, clock=clock)
    assert project.store.deployment(first.id).state == "superseded"
    controller.tick()
    assert weights(project) == {2: 50.0, 1: 50.0}
    rollback(project, "churn", actor="bob", clock=clock)
    controller.tick()
    assert project.store.deployment(second.id).state == "rolled_back"
    assert weights(project) == {1: 100.0} and aliases(project) == {"champion": 1}
    with pytest.raises(DeployRefused, match="no rollout"):
        rollback(project, "churn", clock=clock)


def test_deploy_refuses_what_it_cannot_do(project: Project) -> None:
    with pytest.raises(DeployRefused, match="rung certify churn:2"):
        deploy(project, "churn:2")
    with pytest.raises(DeployRefused, match="already the champion"):
        deploy(project, "churn:1", force=True)
    with pytest.raises(ConfigError, match="strategy"):
        deploy(project, "churn:2", strategy="yolo", force=True)
    made = deploy(project, "churn:2", force=True)
    deployed = [e for e in project.store.events(subject="churn") if e.kind == "deploy"][-1]
    assert made.forced and deployed.data["forced"] is True


def test_one_controller_acts_at_a_time(project: Project) -> None:
    clock = ManualClock()
    deploy(project, "churn:2", strategy="direct", force=True, clock=clock)
    leader = Controller(project, clock=clock, holder="a", lease_s=15)
    follower = Controller(project, clock=clock, holder="b", lease_s=15)
    assert leader.store.acquire_lease("controller", "a", now=clock.now(), ttl_s=15)
    assert follower.tick() == []
    assert newest(project).state == "running"
    clock.advance(16)  # the leader died: its lease runs out
    assert [d.state for d in follower.tick()] == ["promoted"]


class Stalling:
    """A clock whose ``at``-th reading comes ``seconds`` late: a pass that stalls there (a slow import, a paused process)."""

    def __init__(self, clock: ManualClock, *, at: int, seconds: float) -> None:
        self.clock, self.at, self.seconds, self.readings = clock, at, seconds, 0

    def now(self) -> datetime:
        self.readings += 1
        if self.readings == self.at:
            self.clock.advance(self.seconds)
        return self.clock.now()


def test_a_controller_whose_lease_runs_out_during_its_pass_writes_nothing(project: Project) -> None:
    clock = ManualClock()
    deployment = deploy(project, "churn:2", strategy="direct", force=True, clock=clock)
    before = len(project.store.events(subject="churn", limit=5000))
    stalled = Controller(project, clock=Stalling(clock, at=2, seconds=16), holder="stalled", lease_s=15)
    assert stalled.tick() == []  # took the lease, stalled 16 s, then found it gone: no promotion after its lease expired
    assert project.store.deployment(deployment.id).state == "running"
    assert len(project.store.events(subject="churn", limit=5000)) == before
    heir = Controller(project, clock=clock, holder="heir")
    assert [d.state for d in heir.tick()] == ["promoted"]
    promoted = rollout_events(project)[-1]
    assert promoted["lease"]["holder"] == "heir" and datetime.fromisoformat(promoted["lease"]["expires_at"]) > clock.now()


class Crash(BaseException):
    """What kill -9 leaves: nothing after this point runs (and nothing is cleaned up)."""


def test_killed_at_every_point_of_a_rollout_it_converges(project: Project) -> None:
    points_seen = 0
    crashed_at = 0
    while True:
        # fresh rollout of v2 against v1, a day after the previous round
        clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=crashed_at))
        deployment = deploy(project, "churn:2", force=True, clock=clock)
        calls = {"n": 0}

        def hook(point: str) -> None:
            calls["n"] += 1
            if calls["n"] == crashed_at + 1:
                raise Crash(point)

        first = Controller(project, clock=clock, holder=f"doomed-{crashed_at}", hook=hook)
        traffic = Traffic(project, clock, seed=crashed_at)
        crashed = False
        for _ in range(100):
            traffic.send(200)
            clock.advance(20)
            try:
                first.tick()
                if not project.store.deployment(deployment.id).active:
                    first.tick()
                    break
            except Crash:
                crashed = True
                break
        points_seen = max(points_seen, calls["n"])
        # a new controller (the old lease must run out) finishes the job
        clock.advance(16)
        second = Controller(project, clock=clock, holder=f"heir-{crashed_at}")
        if project.store.deployment(deployment.id).active:
            run_until_settled(second, traffic, clock)
        second.tick()
        assert project.store.deployment(deployment.id).state == "promoted"
        final = project.store.route("churn")
        assert sum(v["weight"] for v in final.variants) == 100.0
        assert weights(project)[2] == 100.0 and aliases(project) == {"champion": 2}
        promotions = [e for e in rollout_events(project, deployment.id) if e["to"] == "promoted"]
        assert len(promotions) == 1, promotions
        # back to v1 for the next round
        rollback(project, "churn", clock=clock)
        second.tick()
        assert aliases(project) == {"champion": 1}
        if not crashed:
            break
        crashed_at += 1
    assert crashed_at >= 6, f"only {crashed_at} crash points exercised"
    assert points_seen == crashed_at, points_seen  # the last round ran through every point without a crash
    print(f"crash points exercised: {crashed_at}")


def test_feedback_is_idempotent_and_keeps_ids_the_log_does_not_hold(project: Project) -> None:
    clock = ManualClock()
    Traffic(project, clock).send(3)
    store = project.store
    reader = RequestLogReader(log_root(project))
    first = feedback.record(store, [("r1", 1.0), ("r2", 0.0)], source="test", clock=clock, log=reader)
    assert first == {"accepted": ["r1", "r2"], "duplicate": [], "conflict": [], "unmatched": []}
    again = feedback.record(store, [("r1", 1.0), ("r2", 1.0), ("nope", 1.0)], source="test", clock=clock, log=reader)
    assert again == {"accepted": ["nope"], "duplicate": ["r1"], "conflict": ["r2"], "unmatched": ["nope"]}
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(schema.feedback.c.value).where(schema.feedback.c.request_id == "r2")).scalar() == 0.0
        models = dict(conn.execute(sa.select(schema.feedback.c.request_id, schema.feedback.c.model)).all())
    assert models == {"r1": "churn", "r2": "churn", "nope": ""}  # the model, when the log named it


def test_cli_errors_are_one_line_and_change_nothing(project: Project) -> None:
    root = project.root
    for args, needle in [
        (["deploy", "churn:99", "--force"], "churn:99"),
        (["deploy", "churn:2", "--strategy", "yolo", "--force"], "strategy"),
        (["deploy", "churn:2"], "rung certify churn:2"),
        (["rollback", "churn"], "no rollout"),
        (["approve", "churn"], "waiting for approval"),
    ]:
        result = rung_cli(*args, cwd=root)
        assert result.returncode != 0 and needle in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert project.store.deployments("churn") == []
    made = rung_cli("deploy", "churn:2", "--strategy", "direct", "--force", cwd=root)
    assert made.returncode == 0, made.stderr
    assert rung_cli("controller", "--once", cwd=root).returncode == 0
    status = rung_cli("status", "--json", cwd=root)
    assert json.loads(status.stdout)[0]["rollout"]["state"] == "promoted"
    assert rung_cli("rollback", "churn", cwd=root).returncode == 0
    assert weights(project) == {1: 100.0} and aliases(project) == {"champion": 1}
    shown = rung_cli("history", "churn", cwd=root)
    assert shown.returncode == 0 and "promoted" in shown.stdout and "rolled_back" in shown.stdout
