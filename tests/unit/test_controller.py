"""rung.delivery.controller: each tick judges the windows, moves rollouts, and makes routing and aliases follow.

The store is real (SQLite in tmp_path), time is a ManualClock, and the
request log is a list of rows handed to the controller, so each window
holds exactly the requests a test puts in it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.unit.delivery_world import MODEL, World, answered

from rung.delivery.controller import LEASE, Controller
from rung.delivery.rollout import approve, deploy, rollback

DEPLOY = {
    "strategy": "canary",
    "grace_s": 120,
    "canary": {"steps": [10, 50, 100], "window_s": 60, "min_requests": 50, "max_extensions": 2},
    "ab": {"min_samples": 100, "check_every_s": 30, "max_duration_s": 3600, "min_requests": 50},
    "shadow": {"window_s": 60, "min_requests": 50, "min_agreement": 0.8, "max_duration_s": 600},
}
OTHER = "fraud"


def make_world(tmp_path: Path, **deploy_settings: object) -> World:
    """churn:1 is the champion serving alone; churn:2 is certified."""
    world = World(tmp_path / "churn", DEPLOY | deploy_settings)
    world.version(1)
    world.version(2)
    world.champion(1)
    return world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def good_window(world: World, *, candidate: int = 100, champion: int = 400, start: int = 0, **candidate_kw: object) -> None:
    """A window's worth of healthy traffic for both arms, logged a few seconds from now."""
    at = world.clock.now()
    world.log.add(at, answered(2, candidate, start=start, **candidate_kw))  # type: ignore[arg-type]
    world.log.add(at, answered(1, champion, start=start + 100_000))


def moves(world: World) -> list[tuple[str, str, float, float]]:
    return [(e["from"], e["to"], e["weight_before"], e["weight_after"]) for e in world.rollout_events()]


# -- canary ------------------------------------------------------------------------------------------


def test_a_healthy_canary_waits_out_each_window_then_walks_the_steps_to_promotion(world: World) -> None:
    deployment = deploy(world.project, "churn:2", clock=world.clock)
    controller = world.controller()
    good_window(world)
    world.clock.advance(59)
    assert controller.tick() == []  # the window is not over
    assert world.newest().revision == deployment.revision
    world.clock.advance(2)
    [moved] = controller.tick()
    assert (moved.step, moved.state, moved.step_started_at) == (1, "running", world.clock.now())
    assert world.weights() == {2: 50.0, 1: 50.0}  # the same pass routed the new step
    assert moved.evidence["result"] == "pass"
    assert {c["name"] for c in moved.evidence["checks"]} >= {"traffic", "error_rate", "latency_p99_ms", "divergence"}
    assert moved.evidence["window"]["since"] == deployment.step_started_at.isoformat()
    world.clock.advance(30)
    assert controller.tick() == []  # the step's window began at the move: the old traffic no longer counts
    good_window(world, start=1000)
    world.clock.advance(31)
    [promoted] = controller.tick()
    assert promoted.state == "promoted"
    assert moves(world) == [("running", "running", 10.0, 50.0), ("running", "promoted", 50.0, 100.0)]
    assert world.weights() == {2: 100.0, 1: 0.0}  # the old champion stays loaded through the grace period
    assert world.aliases() == {"champion": 2}
    world.clock.advance(121)
    assert controller.tick() == []
    assert world.weights() == {2: 100.0}


def test_a_canary_failing_requests_is_rolled_back_before_its_window_ends(world: World) -> None:
    deploy(world.project, "churn:2", clock=world.clock)
    world.log.add(world.clock.now(), answered(2, 40, errors=20) + answered(1, 400, start=1000))
    world.clock.advance(10)
    [moved] = world.controller().tick()
    assert moved.state == "rolled_back"
    why = world.rollout_events()[-1]["why"]
    assert why.startswith("canary failed error_rate at 10%") and "failed before the window ended" in why
    assert world.weights() == {1: 100.0}
    assert world.aliases() == {"champion": 1}


def test_a_few_errors_on_a_young_canary_are_not_yet_a_failure(world: World) -> None:
    deploy(world.project, "churn:2", clock=world.clock)
    world.log.add(world.clock.now(), answered(2, 19, errors=19) + answered(1, 400, start=1000))
    world.clock.advance(10)
    assert world.controller().tick() == []  # 19 requests: too few to fail before the window
    assert world.newest().state == "running"


def test_a_slow_canary_is_rolled_back_at_its_window_naming_the_setting(world: World) -> None:
    deploy(world.project, "churn:2", clock=world.clock)
    good_window(world, latency_ms=40.0)
    world.clock.advance(61)
    [moved] = world.controller().tick()
    assert moved.state == "rolled_back" and moved.evidence["result"] == "fail"
    why = world.rollout_events()[-1]["why"]
    assert "latency_p99_ms" in why and "deploy.canary.latency_slack_ms" in why


def test_a_starved_canary_holds_its_step_and_records_what_it_saw_at_most_once_a_window(world: World) -> None:
    deployment = deploy(world.project, "churn:2", clock=world.clock)
    controller = world.controller()
    good_window(world, candidate=10)
    world.clock.advance(61)
    assert controller.tick() == []
    held = world.newest()
    assert (held.state, held.step, held.extensions) == ("running", 0, 0)  # no extension used up
    assert held.revision == deployment.revision + 1  # the evidence was kept ...
    assert world.rollout_events() == []  # ... without a move or an event
    assert held.evidence["result"] == "inconclusive" and "waiting for traffic at 10%" in held.evidence["note"]
    assert held.evidence["checked_at"] == world.clock.now().isoformat()
    world.clock.advance(30)
    controller.tick()
    assert world.newest().revision == held.revision  # looked again within the window: not rewritten
    world.clock.advance(31)
    controller.tick()
    assert world.newest().revision == held.revision + 1
    good_window(world, candidate=100, start=5000)  # the traffic came: judged on the whole, longer window
    world.clock.advance(1)
    [moved] = controller.tick()
    assert moved.step == 1


def test_a_canary_that_passes_waits_for_approval_when_one_is_required(tmp_path: Path) -> None:
    world = make_world(tmp_path, approval="required")
    deploy(world.project, "churn:2", clock=world.clock)
    controller = world.controller()
    good_window(world)
    world.clock.advance(61)
    controller.tick()
    good_window(world, start=1000)
    world.clock.advance(61)
    [waiting] = controller.tick()
    assert waiting.state == "awaiting_approval"
    assert world.rollout_events()[-1]["why"] == "passed; waiting for `rung approve`"
    world.clock.advance(3600)
    assert controller.tick() == []  # waits for a person however long it takes
    assert world.weights() == {2: 50.0, 1: 50.0} and world.aliases() == {"champion": 1, "challenger": 2}
    approve(world.project, MODEL, actor="alice", clock=world.clock)
    controller.tick()
    assert world.weights() == {2: 100.0, 1: 0.0} and world.aliases() == {"champion": 2}


def test_a_direct_rollout_is_promoted_at_the_first_tick(tmp_path: Path) -> None:
    world = World(tmp_path / "new", DEPLOY)
    world.version(1)
    deploy(world.project, "churn:1", clock=world.clock)
    [moved] = world.controller().tick()
    assert moved.state == "promoted" and moved.evidence["note"] == "direct: no analysis"
    assert world.weights() == {1: 100.0}
    assert world.aliases() == {"champion": 1}
    assert world.log.reads == 0  # nothing to judge


def test_without_a_request_source_the_controller_reads_the_projects_request_log(world: World) -> None:
    deploy(world.project, "churn:2", clock=world.clock)
    controller = Controller(world.project, clock=world.clock, holder="one")
    world.clock.advance(61)
    assert controller.tick() == []  # no log written yet: no traffic, the step holds
    assert world.newest().evidence["checks"][0]["detail"].startswith("0 candidate and 0 champion requests")


# -- A/B ---------------------------------------------------------------------------------------------


def ab_window(world: World, candidate: float, champion: float, n: int = 300) -> None:
    at = world.clock.now()
    world.log.add(at, answered(2, n, correct=candidate, seed=1) + answered(1, n, start=100_000, correct=champion, seed=2))


def test_an_ab_test_promotes_a_clearly_better_candidate(tmp_path: Path) -> None:
    world = make_world(tmp_path, strategy="ab")
    deploy(world.project, "churn:2", clock=world.clock)
    assert world.weights() == {2: 50.0, 1: 50.0}
    ab_window(world, candidate=0.95, champion=0.5)
    world.clock.advance(31)
    [moved] = world.controller().tick()
    assert moved.state == "promoted"
    [check] = moved.evidence["checks"]
    assert check["name"] == "ab_outcome" and check["decision"] == "candidate"
    assert moved.evidence["p_value"] < 0.05 and check["n_candidate"] == check["n_champion"] == 300
    assert world.aliases() == {"champion": 2}


def test_an_ab_test_keeps_a_better_champion(tmp_path: Path) -> None:
    world = make_world(tmp_path, strategy="ab")
    deploy(world.project, "churn:2", clock=world.clock)
    ab_window(world, candidate=0.5, champion=0.95)
    world.clock.advance(31)
    [moved] = world.controller().tick()
    assert moved.state == "rolled_back" and world.rollout_events()[-1]["why"] == "A/B: the champion is better"
    assert world.weights() == {1: 100.0}


def test_an_ab_test_looks_at_most_once_per_check_interval_and_gives_up_at_its_maximum(tmp_path: Path) -> None:
    world = make_world(tmp_path, strategy="ab")
    deploy(world.project, "churn:2", clock=world.clock)
    controller = world.controller()
    ab_window(world, candidate=0.7, champion=0.7, n=40)  # fewer outcomes than min_samples: no decision
    world.clock.advance(31)
    assert controller.tick() == []
    looked = world.newest()
    assert looked.evidence["result"] == "continue" and looked.evidence["checked_at"] == world.clock.now().isoformat()
    assert looked.evidence["p_value"] == 1.0
    reads = world.log.reads
    world.clock.advance(29)
    assert controller.tick() == [] and world.log.reads == reads  # too soon to look again
    world.clock.advance(3600)
    [moved] = controller.tick()
    assert moved.state == "rolled_back"
    assert world.rollout_events()[-1]["why"] == "A/B: no winner within 3600 s; the champion stays"


def test_an_ab_candidate_failing_requests_is_rolled_back_at_once(tmp_path: Path) -> None:
    world = make_world(tmp_path, strategy="ab")
    deploy(world.project, "churn:2", clock=world.clock)
    world.log.add(world.clock.now(), answered(2, 100, errors=50) + answered(1, 100, start=1000))
    world.clock.advance(31)
    [moved] = world.controller().tick()
    assert moved.state == "rolled_back" and world.rollout_events()[-1]["why"] == "A/B candidate failing"
    assert moved.evidence["checks"][0]["name"] == "error_rate"


# -- shadow ------------------------------------------------------------------------------------------


def shadow_window(world: World, n: int, *, prediction: str | None = None) -> None:
    """``n`` requests answered by the champion, each mirrored to the candidate (same ids)."""
    at = world.clock.now()
    world.log.add(at, answered(1, n) + answered(2, n, shadow=True, prediction=prediction))


def test_a_shadow_that_agrees_with_the_champion_is_promoted(tmp_path: Path) -> None:
    world = make_world(tmp_path, strategy="shadow")
    deploy(world.project, "churn:2", clock=world.clock)
    assert world.weights() == {1: 100.0} and world.shadows() == [2]
    shadow_window(world, 200)
    world.clock.advance(59)
    controller = world.controller()
    assert controller.tick() == [] and world.log.reads == 0  # not even read before the window is over
    world.clock.advance(2)
    [moved] = controller.tick()
    assert moved.state == "promoted"
    agreement = next(c for c in moved.evidence["checks"] if c["name"] == "agreement")
    assert agreement["status"] == "pass" and agreement["value"] == 1.0
    assert world.weights() == {2: 100.0, 1: 0.0} and world.shadows() == []


def test_a_shadow_that_disagrees_is_rolled_back(tmp_path: Path) -> None:
    world = make_world(tmp_path, strategy="shadow")
    deploy(world.project, "churn:2", clock=world.clock)
    shadow_window(world, 200, prediction="1")
    world.clock.advance(61)
    [moved] = world.controller().tick()
    assert moved.state == "rolled_back"
    assert "agreement" in world.rollout_events()[-1]["why"].removeprefix("shadow failed ")
    assert world.shadows() == [] and world.weights() == {1: 100.0}


def test_an_inconclusive_shadow_extends_its_window_until_its_maximum(tmp_path: Path) -> None:
    world = make_world(tmp_path, strategy="shadow")
    deploy(world.project, "churn:2", clock=world.clock)
    controller = world.controller()
    shadow_window(world, 10)
    world.clock.advance(61)
    [extended] = controller.tick()
    assert (extended.state, extended.extensions) == ("running", 1)
    assert world.rollout_events()[-1]["why"] == "shadow inconclusive: window extended"
    world.clock.advance(58)
    assert controller.tick() == []  # the extended window runs to 2 x 60 s
    world.clock.advance(600)
    [moved] = controller.tick()
    assert moved.state == "rolled_back"
    assert world.rollout_events()[-1]["why"] == "shadow inconclusive after 600 s"


# -- leases, stale reads and crashes -----------------------------------------------------------------


def test_one_controller_acts_at_a_time_until_its_lease_runs_out_or_is_released(world: World) -> None:
    leader, second = world.controller(), world.controller(holder="two")
    assert leader.tick() == []
    deploy(world.project, "churn:2", strategy="direct", clock=world.clock)
    world.clock.advance(10)
    assert second.tick() == []  # the leader's lease still runs
    assert world.newest().state == "running"
    world.clock.advance(6)
    [moved] = second.tick()  # the leader stopped ticking: its lease ran out
    assert moved.state == "promoted"
    assert leader.tick() == []  # now the leader waits
    second.release()
    assert world.store.acquire_lease(LEASE, "one", now=world.clock.now(), ttl_s=15)


def test_a_pass_that_outlives_its_lease_stops_and_writes_nothing_more(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.version(1, model=OTHER)
    deploy(world.project, "churn:2", strategy="direct", clock=world.clock)
    world.clock.advance(1)
    deploy(world.project, f"{OTHER}:1", clock=world.clock)  # the newest: judged first

    def stall(point: str) -> None:
        world.clock.advance(20)  # the pass stalls past its 15 s lease, and another controller takes over
        assert world.store.acquire_lease(LEASE, "two", now=world.clock.now(), ttl_s=15)

    routing = world.store.route(MODEL)
    with caplog.at_level(logging.WARNING, logger="rung.delivery.controller"):
        moved = world.controller(hook=stall).tick()
    assert [d.model for d in moved] == [OTHER]
    assert world.newest().state == "running"  # churn was not judged after the lease was lost
    assert world.store.route(MODEL) == routing  # and nothing was routed
    assert "controller pass stopped" in caplog.text and "one's controller lease of 15 s ran out" in caplog.text


def test_a_window_read_that_outlives_the_lease_moves_nothing(world: World, caplog: pytest.LogCaptureFixture) -> None:
    deployment = deploy(world.project, "churn:2", clock=world.clock)
    good_window(world)
    world.clock.advance(61)

    def slow() -> None:  # the log scan stalls past the lease (renewed just before it), and another controller takes over
        world.clock.advance(20)
        assert world.store.acquire_lease(LEASE, "two", now=world.clock.now(), ttl_s=15)

    world.log.on_read = slow
    with caplog.at_level(logging.WARNING, logger="rung.delivery.controller"):
        assert world.controller().tick() == []
    after = world.newest()
    assert (after.step, after.revision) == (0, deployment.revision)  # the move was refused in its own transaction
    assert world.rollout_events() == [] and world.weights() == {2: 10.0, 1: 90.0}
    assert "one no longer holds the controller lease (held by two" in caplog.text


def test_a_registry_read_that_outlives_the_lease_sets_no_aliases(world: World, caplog: pytest.LogCaptureFixture) -> None:
    deploy(world.project, "churn:2", strategy="direct", clock=world.clock)

    def slow() -> None:
        world.clock.advance(20)
        world.store.acquire_lease(LEASE, "two", now=world.clock.now(), ttl_s=15)

    world.registry.on_read = slow
    writes = len(world.registry.writes)
    with caplog.at_level(logging.WARNING, logger="rung.delivery.controller"):
        [moved] = world.controller().tick()
    assert moved.state == "promoted"
    assert len(world.registry.writes) == writes and world.aliases() == {"champion": 1, "challenger": 2}
    assert "controller pass stopped" in caplog.text
    world.registry.on_read = lambda: None
    world.clock.advance(16)
    world.controller(holder="two").tick()  # the next leader finishes the job
    assert world.aliases() == {"champion": 2}


def test_a_rollout_moved_by_a_person_during_a_pass_is_left_to_them(world: World) -> None:
    world.version(1, model=OTHER)
    deploy(world.project, "churn:2", strategy="direct", clock=world.clock)
    world.clock.advance(1)
    deploy(world.project, f"{OTHER}:1", clock=world.clock)

    def person(point: str) -> None:
        if point == "moved" and world.newest().state == "running":
            rollback(world.project, MODEL, actor="alice", clock=world.clock)

    moved = world.controller(hook=person).tick()
    assert [d.model for d in moved] == [OTHER]  # churn's read was stale: skipped, not overwritten
    assert world.newest().state == "rolled_back"
    assert [e["to"] for e in world.rollout_events()] == ["rolled_back"]
    assert world.weights() == {1: 100.0}  # and the same pass routed what the person asked for
    assert world.weights(OTHER) == {1: 100.0}


@pytest.mark.parametrize("point", ["moved", "routed", "aliased"])
def test_a_controller_killed_mid_pass_leaves_work_the_next_one_finishes_once(world: World, point: str) -> None:
    deploy(world.project, "churn:2", strategy="direct", clock=world.clock)

    def crash(where: str) -> None:
        if where == point:
            raise RuntimeError(f"killed after {where}")

    with pytest.raises(RuntimeError, match="killed"):
        world.controller(hook=crash).tick()
    world.clock.advance(16)  # the dead controller's lease runs out
    world.controller(holder="two").tick()
    assert world.newest().state == "promoted"
    assert [e["to"] for e in world.rollout_events()] == ["promoted"]  # promoted once
    assert world.weights() == {2: 100.0, 1: 0.0} and world.aliases() == {"champion": 2}


def test_the_registry_is_read_once_a_pass_and_not_at_all_when_nothing_changes(world: World) -> None:
    world.version(1, model=OTHER)
    deploy(world.project, "churn:2", strategy="direct", clock=world.clock)
    deploy(world.project, f"{OTHER}:1", clock=world.clock)
    controller = world.controller()
    reads = world.registry.reads
    assert len(controller.tick()) == 2
    assert world.registry.reads == reads + 1  # two models' aliases changed, one read
    assert world.aliases() == {"champion": 2} and world.aliases(OTHER) == {"champion": 1}
    world.clock.advance(5)
    assert controller.tick() == []
    assert world.registry.reads == reads + 1


def test_a_tick_with_no_rollouts_touches_nothing(world: World) -> None:
    revision = world.store.route(MODEL).revision  # type: ignore[union-attr]
    assert world.controller().tick() == []
    assert world.store.route(MODEL).revision == revision and world.registry.reads == 0  # type: ignore[union-attr]


def test_sync_outside_a_pass_writes_unfenced(world: World) -> None:
    deployment = deploy(world.project, "churn:2", clock=world.clock)
    world.store.acquire_lease(LEASE, "someone-else", now=world.clock.now(), ttl_s=15)
    rollback(world.project, MODEL, clock=world.clock)
    world.controller().sync()  # `rung rollback` moves traffic at once, whoever leads
    assert world.weights() == {1: 100.0} and world.aliases() == {"champion": 1}
    assert world.store.deployment(deployment.id).state == "rolled_back"  # type: ignore[union-attr]


def test_run_keeps_ticking_through_a_failing_tick(world: World, caplog: pytest.LogCaptureFixture) -> None:
    deploy(world.project, "churn:2", clock=world.clock)
    world.clock.advance(61)
    world.log.failing = True
    ticks = iter(range(3))

    def stop() -> bool:
        return next(ticks) == 2

    with caplog.at_level(logging.ERROR, logger="rung.delivery.controller"):
        world.controller().run(interval_s=0, stop=stop)
    assert world.log.reads == 2
    assert caplog.text.count("controller tick failed") == 2
