"""rung.delivery.rollout: what a deploy, a rollback and an approval write, and the traffic and aliases a rollout implies."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.unit.delivery_world import MODEL, World

from rung.delivery.rollout import (
    ALIASES,
    apply_aliases,
    apply_routing,
    approve,
    certification,
    current,
    deploy,
    desired_aliases,
    desired_routing,
    move,
    rollback,
    weight,
)
from rung.errors import ConfigError, DeployRefused, LeaseLost, StaleDeployment
from rung.store import Deployment, Fence

DEPLOY = {"strategy": "canary", "grace_s": 120, "canary": {"steps": [10, 50, 100], "window_s": 60, "min_requests": 50},
          "ab": {"split": 30}}


@pytest.fixture
def world(tmp_path: Path) -> World:
    """churn:1 is the champion serving alone; churn:2 is certified."""
    world = World(tmp_path / "churn", DEPLOY)
    world.version(1)
    world.version(2)
    world.champion(1)
    return world


def rollout(strategy: str = "canary", state: str = "running", *, step: int = 0, baseline: int | None = 1) -> Deployment:
    """A rollout record as ``deploy`` makes one (plan from DEPLOY), in any state."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    plan = {"approval": "none", "outcome": "accuracy", "grace_s": 120,
            "canary": {"steps": [10.0, 50.0, 100.0]}, "ab": {"split": 30.0}, "shadow": {}}
    return Deployment(id="d1", model=MODEL, version=2, baseline=baseline, strategy=strategy, state=state, step=step,
                      step_started_at=now, extensions=0, plan=plan, evidence={}, forced=False, created_at=now,
                      updated_at=now, created_by="test", reason=None, revision=1)


# -- deploy ------------------------------------------------------------------------------------------


def test_a_canary_deploy_gets_its_first_step_of_traffic_at_once(world: World) -> None:
    deployment = deploy(world.project, "churn:2", clock=world.clock, chain="retrain-1", reason="better data")
    assert (deployment.strategy, deployment.state, deployment.step, deployment.baseline) == ("canary", "running", 0, 1)
    assert deployment.plan["canary"]["steps"] == [10.0, 50.0, 100.0] and deployment.plan["chain"] == "retrain-1"
    assert world.weights() == {2: 10.0, 1: 90.0}  # candidate first, without waiting for the controller
    assert world.aliases() == {"champion": 1, "challenger": 2}
    stored = world.store.deployment(deployment.id)
    assert stored is not None and stored.state == "running"
    event = next(e for e in world.store.events(subject=MODEL) if e.kind == "deploy")
    assert event.chain == "retrain-1"
    assert event.data["certified"] is True and event.data["forced"] is False
    assert event.data["reason"] == "better data" and "note" not in event.data


def test_an_uncertified_version_is_refused_unless_forced(world: World) -> None:
    world.version(3, certified=None)
    world.version(4, certified=False)
    with pytest.raises(DeployRefused, match="has not been certified"):
        deploy(world.project, "churn:3", clock=world.clock)
    with pytest.raises(DeployRefused, match="failed certification; run `rung certify churn:4`"):
        deploy(world.project, "churn:4", clock=world.clock)
    assert world.store.deployments(MODEL) == []
    forced = deploy(world.project, "churn:4", clock=world.clock, force=True)
    assert forced.forced
    event = next(e for e in world.store.events(subject=MODEL) if e.kind == "deploy")
    assert event.data["forced"] is True and event.data["certified"] is False


def test_a_certified_version_deployed_with_force_is_not_recorded_as_forced(world: World) -> None:
    assert not deploy(world.project, "churn:2", clock=world.clock, force=True).forced


def test_the_champion_itself_and_unknown_strategies_are_refused(world: World) -> None:
    with pytest.raises(DeployRefused, match="already the champion"):
        deploy(world.project, "churn:1", clock=world.clock)
    with pytest.raises(ConfigError, match="strategy: 'blue-green' is not one of direct, canary, ab, shadow"):
        deploy(world.project, "churn:2", strategy="blue-green", clock=world.clock)
    assert world.store.deployments(MODEL) == []


def test_the_newest_certification_report_is_the_one_that_counts(world: World) -> None:
    world.store.append_event("certification", actor="test", subject="churn:2", data={"certified": False}, time=world.clock.now())
    assert certification(world.project, "churn:2") == {"certified": False}
    assert certification(world.project, "churn:9") is None
    with pytest.raises(DeployRefused, match="failed certification"):
        deploy(world.project, "churn:2", clock=world.clock)


def test_the_first_deploy_of_a_model_goes_direct_and_says_why(tmp_path: Path) -> None:
    world = World(tmp_path / "new", DEPLOY)
    world.version(1)
    deployment = deploy(world.project, "churn:1", strategy="ab", clock=world.clock)
    assert deployment.strategy == "direct" and deployment.baseline is None
    note = next(e for e in world.store.events(subject=MODEL) if e.kind == "deploy").data["note"]
    assert note == "ab asked, but churn has no champion to compare with: direct"
    assert world.weights() == {1: 100.0}
    assert world.aliases() == {"challenger": 1}  # champion only once the controller promotes it


def test_a_new_deploy_supersedes_the_running_rollout(world: World) -> None:
    world.version(3)
    first = deploy(world.project, "churn:2", clock=world.clock)
    world.clock.advance(5)
    second = deploy(world.project, "churn:3", strategy="ab", clock=world.clock)
    old = world.store.deployment(first.id)
    assert old is not None and old.state == "superseded" and not old.active
    assert [d.id for d in world.store.deployments(MODEL, active=True)] == [second.id]
    ended = world.rollout_events(first.id)
    assert ended[-1]["to"] == "superseded" and ended[-1]["by"] == second.id and "churn:3" in ended[-1]["why"]
    assert world.weights() == {3: 30.0, 1: 70.0}
    assert world.aliases() == {"champion": 1, "challenger": 3}


# -- rollback and approve ----------------------------------------------------------------------------


def test_rollback_undoes_a_running_rollout_and_then_has_nothing_left_to_undo(world: World) -> None:
    deployment = deploy(world.project, "churn:2", clock=world.clock)
    world.clock.advance(10)
    after = rollback(world.project, MODEL, actor="alice", clock=world.clock)
    assert after.state == "rolled_back" and after.revision == deployment.revision + 1
    assert after.updated_at == world.clock.now()
    last = world.rollout_events()[-1]
    assert (last["from"], last["to"], last["weight_before"], last["weight_after"]) == ("running", "rolled_back", 10.0, 0.0)
    assert last["why"] == "rolled back by alice: all traffic to churn:1"
    assert apply_routing(world.project, after, actor="test", now=world.clock.now())
    assert world.weights() == {1: 100.0}
    with pytest.raises(DeployRefused, match="no rollout or promotion to roll back"):
        rollback(world.project, MODEL, clock=world.clock)


def test_rollback_needs_a_rollout_and_a_previous_champion(tmp_path: Path) -> None:
    world = World(tmp_path / "new", DEPLOY)
    world.version(1)
    with pytest.raises(DeployRefused, match="no rollout or promotion"):
        rollback(world.project, MODEL, clock=world.clock)
    deploy(world.project, "churn:1", clock=world.clock)
    with pytest.raises(DeployRefused, match="was the first version deployed"):
        rollback(world.project, MODEL, clock=world.clock)


def test_a_promotion_can_be_rolled_back_with_the_given_reason(world: World) -> None:
    deployment = deploy(world.project, "churn:2", clock=world.clock)
    move(world.project, deployment, {"state": "promoted"}, actor="controller", clock=world.clock, why="passed")
    after = rollback(world.project, MODEL, clock=world.clock, reason="complaints")
    assert after.state == "rolled_back" and world.rollout_events()[-1]["why"] == "complaints"


def test_approve_promotes_only_a_rollout_that_waits_for_it(world: World) -> None:
    deployment = deploy(world.project, "churn:2", clock=world.clock)
    with pytest.raises(DeployRefused, match="no rollout of churn is waiting for approval"):
        approve(world.project, MODEL, clock=world.clock)
    waiting = move(world.project, deployment, {"state": "awaiting_approval"}, actor="controller", clock=world.clock, why="passed")
    promoted = approve(world.project, MODEL, actor="bob", clock=world.clock)
    assert promoted.id == waiting.id and promoted.state == "promoted"
    assert world.rollout_events()[-1]["why"] == "approved by bob"


# -- moves are compare-and-set, and fenced ----------------------------------------------------------


def test_a_move_from_a_stale_read_is_refused_and_changes_nothing(world: World) -> None:
    read = deploy(world.project, "churn:2", clock=world.clock)
    move(world.project, read, {"step": 1}, actor="controller", clock=world.clock, why="next step")
    events = len(world.rollout_events(read.id))
    with pytest.raises(StaleDeployment):
        move(world.project, read, {"state": "rolled_back"}, actor="alice", clock=world.clock, why="from an old read")
    stored = world.store.deployment(read.id)
    assert stored is not None and (stored.state, stored.step, stored.revision) == ("running", 1, 2)
    assert len(world.rollout_events(read.id)) == events


def test_a_move_fenced_by_a_lease_that_is_gone_is_refused(world: World) -> None:
    deployment = deploy(world.project, "churn:2", clock=world.clock)
    now = world.clock.now()
    assert world.store.acquire_lease("controller", "one", now=now, ttl_s=15)
    with pytest.raises(LeaseLost, match="two no longer holds the controller lease"):
        move(world.project, deployment, {"step": 1}, actor="controller", clock=world.clock, why="x",
             fence=Fence("controller", "two", now))
    later = now + timedelta(seconds=16)
    with pytest.raises(LeaseLost):  # the holder itself, once its lease has run out
        move(world.project, deployment, {"step": 1}, actor="controller", clock=world.clock, why="x",
             fence=Fence("controller", "one", later))
    with pytest.raises(LeaseLost):
        apply_routing(world.project, dataclasses.replace(deployment, step=1), actor="controller", now=later,
                      fence=Fence("controller", "one", later))
    assert world.weights() == {2: 10.0, 1: 90.0}
    moved = move(world.project, deployment, {"step": 1}, actor="controller", clock=world.clock, why="next",
                 fence=Fence("controller", "one", now), evidence={"result": "pass"})
    assert moved.step == 1 and moved.evidence == {"result": "pass"}
    assert world.rollout_events()[-1]["evidence"] == {"result": "pass"}


# -- routing and aliases follow the rollout ---------------------------------------------------------


def test_apply_routing_writes_only_when_the_table_differs(world: World) -> None:
    deployment = deploy(world.project, "churn:2", clock=world.clock)
    revision = world.store.route(MODEL).revision  # type: ignore[union-attr]
    assert not apply_routing(world.project, deployment, actor="controller", now=world.clock.now())
    assert world.store.route(MODEL).revision == revision  # type: ignore[union-attr]
    assert apply_routing(world.project, dataclasses.replace(deployment, step=1), actor="controller", now=world.clock.now())
    route = world.store.route(MODEL)
    assert route is not None and route.revision == revision + 1 and route.reason == "canary of churn:2: running"
    assert world.weights() == {2: 50.0, 1: 50.0}


def test_a_model_without_a_table_gets_one_and_a_rollback_without_baseline_leaves_it_alone(tmp_path: Path) -> None:
    world = World(tmp_path / "new", DEPLOY)
    first = rollout("direct", baseline=None)
    assert apply_routing(world.project, first, actor="test", now=first.updated_at)
    assert world.weights() == {2: 100.0}
    assert not apply_routing(world.project, dataclasses.replace(first, state="rolled_back"), actor="test", now=first.updated_at)
    assert world.weights() == {2: 100.0}


def test_aliases_are_set_once_per_change_and_the_registry_is_read_only_then(world: World) -> None:
    deployment = rollout()
    now = deployment.updated_at
    assert apply_aliases(world.project, deployment, now=now)
    assert world.aliases() == {"champion": 1, "challenger": 2} and world.registry.reads == 1
    assert not apply_aliases(world.project, deployment, now=now)
    assert world.registry.reads == 1  # nothing changed: the registry is not even read
    assert world.store.state(ALIASES)[MODEL] == {"deployment": "d1", "aliases": {"champion": 1, "challenger": 2}}
    world.registry.by_model[MODEL]["champion"] = 7  # changed by hand: put back at the rollout's next move
    assert apply_aliases(world.project, dataclasses.replace(deployment, state="promoted"), now=now)
    assert world.aliases() == {"champion": 2}
    writes = len(world.registry.writes)
    assert apply_aliases(world.project, dataclasses.replace(deployment, state="rolled_back"), now=now,
                         registry=lambda: {MODEL: {"champion": 1}})
    assert len(world.registry.writes) == writes  # the given registry already says so: nothing written


def test_desired_aliases_for_each_state() -> None:
    assert desired_aliases(rollout()) == {"champion": 1, "challenger": 2}
    assert desired_aliases(rollout(state="awaiting_approval")) == {"champion": 1, "challenger": 2}
    assert desired_aliases(rollout(state="promoted")) == {"champion": 2, "challenger": None}
    assert desired_aliases(rollout(state="rolled_back")) == {"champion": 1, "challenger": None}
    assert desired_aliases(rollout(state="superseded")) == {"champion": 1, "challenger": None}


def test_the_candidates_share_in_each_state_and_strategy() -> None:
    assert [weight(rollout(step=s)) for s in range(3)] == [10.0, 50.0, 100.0]
    assert weight(rollout("ab")) == 30.0
    assert weight(rollout("shadow")) == 0.0
    assert weight(rollout("direct")) == 100.0
    assert weight(rollout("shadow", "promoted")) == 100.0
    assert weight(rollout("direct", "rolled_back")) == weight(rollout(state="superseded")) == 0.0
    assert weight(rollout("ab", "awaiting_approval")) == 30.0


def test_desired_routing_lists_the_candidate_first_and_keeps_the_old_champion_through_the_grace() -> None:
    canary = rollout(step=1)
    now = canary.updated_at
    assert desired_routing(canary, now) == ([{"name": "candidate", "version": 2, "weight": 50.0},
                                             {"name": "champion", "version": 1, "weight": 50.0}], [])
    assert desired_routing(rollout(step=2), now) == ([{"name": "candidate", "version": 2, "weight": 100.0},
                                                      {"name": "champion", "version": 1, "weight": 0.0}], [])
    assert desired_routing(rollout("shadow"), now) == ([{"name": "champion", "version": 1, "weight": 100.0}],
                                                       [{"name": "shadow", "version": 2}])
    promoted = rollout(state="promoted")
    assert desired_routing(promoted, now + timedelta(seconds=119)) == (
        [{"name": "champion", "version": 2, "weight": 100.0}, {"name": "previous", "version": 1, "weight": 0.0}], [])
    assert desired_routing(promoted, now + timedelta(seconds=120)) == ([{"name": "champion", "version": 2, "weight": 100.0}], [])
    assert desired_routing(rollout("direct", baseline=None), now) == ([{"name": "candidate", "version": 2, "weight": 100.0}], [])
    assert desired_routing(rollout(state="rolled_back"), now) == ([{"name": "champion", "version": 1, "weight": 100.0}], [])
    assert desired_routing(rollout(state="superseded", baseline=None), now) is None


def test_current_is_the_active_rollout_else_the_last_one_to_end_never_a_superseded_one() -> None:
    base = rollout()
    later = base.updated_at + timedelta(seconds=10)
    promoted = dataclasses.replace(base, id="old", state="promoted")
    rolled_back = dataclasses.replace(base, id="newer", state="rolled_back", updated_at=later)
    superseded = dataclasses.replace(base, id="gone", state="superseded", updated_at=later + timedelta(seconds=5))
    running = dataclasses.replace(base, id="now", state="running")
    assert current([]) is None
    assert current([promoted, rolled_back, superseded]).id == "newer"  # type: ignore[union-attr]
    assert current([superseded, promoted, running]).id == "now"  # type: ignore[union-attr]
    assert current([superseded]).id == "gone"  # type: ignore[union-attr]
