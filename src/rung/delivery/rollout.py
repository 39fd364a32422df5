"""Rollouts as desired state: deploy, roll back, approve; and what routing and aliases they imply.

A deploy writes one row (and its event), then applies the routing its
first step implies (:func:`apply_routing`), so a canary gets its traffic
at once rather than at the controller's next pass. With gateway replicas
alive (the store's registry), the candidate is first routed at weight 0
and the deploy waits, bounded, until every live replica has loaded it
(:func:`stage_candidate`): its first step then reaches every replica at
once, instead of each one as its own load finishes. Everything after is
the controller's: it turns rows into routing tables and registry aliases
(:func:`desired_routing`, :func:`desired_aliases`), so a crash between
any two writes leaves nothing a later pass cannot finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rung.clock import SYSTEM, Clock
from rung.errors import ConfigError, DeployRefused, StaleRoute
from rung.store import Deployment, Fence

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["STRATEGIES", "current", "deploy", "rollback", "approve", "move", "apply_routing", "apply_aliases", "desired_routing",
           "desired_aliases",
           "certification", "weight"]

log = logging.getLogger(__name__)

STRATEGIES = ("direct", "canary", "ab", "shadow")
STAGE_WAIT_S = 30.0  # how long a deploy waits for the live replicas to load its candidate before going on
LIVE_S = 5.0  # a replica heard of this recently is alive (it heartbeats every second)
ALIASES = "rollout:aliases"  # loop state: {model: {"deployment": id, "aliases": {...}}}, as last set in the registry


def current(deployments: list[Deployment]) -> Deployment | None:
    """The rollout that defines a model's traffic now: the active one, else the one that ended last.

    A superseded rollout never does (its successor speaks for the model).
    """
    if not deployments:
        return None
    return max(deployments, key=lambda d: (d.active, d.state != "superseded", d.updated_at, d.created_at))


def certification(project: Project, ref: str) -> dict[str, Any] | None:
    """The newest certification report of ``ref`` (from the event log), or None."""
    events = [e for e in project.store.events(subject=ref, limit=500) if e.kind == "certification"]
    return events[-1].data if events else None


def deploy(project: Project, ref: str, *, strategy: str | None = None, force: bool = False, actor: str = "cli",
           reason: str | None = None, clock: Clock = SYSTEM, chain: str | None = None) -> Deployment:
    """Start rolling out ``ref`` (``NAME:VERSION``); a running rollout of the same model is superseded.

    Refused (:class:`~rung.errors.DeployRefused`) for a version that is not
    certified, unless ``force`` (recorded in the event), and for the version
    that is already the champion. The first deploy of a model has nothing to
    compare against and goes ``direct``. ``chain`` ties the rollout's events to
    the retraining that started it (``rung timeline``).
    """
    record = project.model_version(ref)
    settings = project.settings.deploy
    strategy = strategy or settings.strategy
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy: '{strategy}' is not one of {', '.join(STRATEGIES)}", field="strategy")
    report = certification(project, record.ref)
    certified = bool(report and report.get("certified"))
    if not certified and not force:
        why = "it failed certification" if report else "it has not been certified"
        raise DeployRefused(f"{record.ref} cannot be deployed: {why}; run `rung certify {record.ref}` (or deploy with --force)")
    registry = project.tracking.aliases()
    champion = registry.get(record.name, {}).get("champion")
    if champion == record.version:
        raise DeployRefused(f"{record.ref} is already the champion; nothing to roll out")
    requested = strategy
    if champion is None:
        strategy = "direct"
    elif strategy != "shadow":  # a shadow's answers never wait: it loads wherever it is routed
        stage_candidate(project, record.name, record.version, actor=actor)
    now = clock.now()
    plan = _plan(project, strategy) | ({"chain": chain} if chain else {})
    deployment = Deployment(
        id=uuid.uuid4().hex, model=record.name, version=record.version, baseline=champion, strategy=strategy,
        state="running", step=0, step_started_at=now, extensions=0, plan=plan, evidence={}, forced=force and not certified,
        created_at=now, updated_at=now, created_by=actor, reason=reason, revision=1,
    )
    data: dict[str, Any] = {"deployment": deployment.id, "version": record.version, "strategy": strategy, "champion": champion,
                            "certified": certified, "forced": deployment.forced, "reason": reason}
    if requested != strategy:
        data["note"] = f"{requested} asked, but {record.name} has no champion to compare with: direct"
    project.store.create_deployment(
        deployment,
        event={"kind": "deploy", "actor": actor, "subject": record.name, "data": data, "time": now, "chain": chain},
        superseded_event={"kind": "rollout", "actor": actor, "time": now,
                          "data": {"to": "superseded", "why": f"superseded by a deploy of {record.ref}"}},
    )
    with contextlib.suppress(StaleRoute):  # someone wrote the table meanwhile: the controller compares again
        apply_routing(project, deployment, actor=actor, now=now)
    apply_aliases(project, deployment, now=now, registry=lambda: registry)  # MLflow is loaded here already
    return deployment


def rollback(project: Project, model: str, *, actor: str = "cli", reason: str | None = None, clock: Clock = SYSTEM) -> Deployment:
    """All traffic back to the previous champion, at once: the running rollout, or else the last promotion, is undone."""
    latest = current(project.store.deployments(model, limit=20))
    if latest is None or latest.state in ("rolled_back", "superseded"):
        raise DeployRefused(f"{model} has no rollout or promotion to roll back (see `rung history {model}`)")
    if latest.baseline is None:
        raise DeployRefused(f"{model}:{latest.version} was the first version deployed; there is no previous champion to go back to")
    return move(project, latest, {"state": "rolled_back"}, actor=actor, clock=clock,
                 why=reason or f"rolled back by {actor}: all traffic to {model}:{latest.baseline}")


def approve(project: Project, model: str, *, actor: str = "cli", clock: Clock = SYSTEM) -> Deployment:
    """Promote a rollout that passed its analysis and waits for a person (``deploy.approval: required``)."""
    waiting = [d for d in project.store.deployments(model, active=True) if d.state == "awaiting_approval"]
    if not waiting:
        raise DeployRefused(f"no rollout of {model} is waiting for approval (see `rung status`)")
    return move(project, waiting[0], {"state": "promoted"}, actor=actor, clock=clock, why=f"approved by {actor}")


def move(project: Project, deployment: Deployment, changes: dict[str, Any], *, actor: str, clock: Clock, why: str,
          evidence: dict[str, Any] | None = None, fence: Fence | None = None) -> Deployment:
    """One transition of a rollout (compare-and-set) with its event: from, to, weights before and after, why, evidence.

    ``fence``: the move of a lease holder (the controller), refused once the lease is no longer theirs.
    """
    now = clock.now()
    changes = changes | {"updated_at": now}
    if evidence is not None:
        changes["evidence"] = evidence
    after = dataclasses.replace(deployment, **changes)
    data = {"deployment": deployment.id, "version": deployment.version, "strategy": deployment.strategy,
            "from": deployment.state, "to": after.state, "step": after.step,
            "weight_before": weight(deployment), "weight_after": weight(after), "why": why}
    if evidence is not None:
        data["evidence"] = evidence
    event = {"kind": "rollout", "actor": actor, "subject": deployment.model, "time": now, "data": data,
             "chain": deployment.plan.get("chain")}
    return project.store.transition(deployment.id, deployment.revision, changes, event, fence=fence)


def stage_candidate(project: Project, model: str, version: int, *, actor: str, wait_s: float = STAGE_WAIT_S) -> bool:
    """Route ``version`` at weight 0 beside what serves, then wait until every live replica serves that table.

    A replica loads (and warms) a version before it swaps in a table that
    names it, so a step that gives a new version traffic reaches each
    replica only when its own load is done (seconds apart). Loading first at
    weight 0 makes the step that follows a swap of loaded versions, which
    every replica applies within a second. Nothing happens without live
    replicas, or when the version is in the table already. After ``wait_s``
    the deploy goes on, with a warning naming the replicas still behind (they
    serve their previous table meanwhile, and `rung status` marks them).
    True when every live replica caught up.
    """
    from rung.delivery.routing import RoutingTable, set_routing

    stored = project.store.route(model)
    if stored is None or version in {v["version"] for v in [*stored.variants, *stored.shadows]}:
        return True
    if not project.store.replicas(active_within_s=LIVE_S):
        return True
    taken = {v["name"] for v in [*stored.variants, *stored.shadows]}
    name = "candidate" if "candidate" not in taken else f"v{version}"
    table = RoutingTable.build(model, [*stored.variants, {"name": name, "version": version, "weight": 0.0}], stored.shadows)
    try:
        revision = set_routing(project.store, table, actor=actor, expected_revision=stored.revision,
                               reason=f"loading {model}:{version} on every replica before it takes traffic").revision
    except StaleRoute:
        return False  # someone changed the table meanwhile: the deploy goes on without staging
    deadline = time.monotonic() + wait_s
    while True:
        behind = [r.id for r in project.store.replicas(active_within_s=LIVE_S) if r.revisions.get(model, 0) < revision]
        if not behind:
            return True
        if time.monotonic() >= deadline:
            log.warning("%s:%s is not loaded on %s after %g s; deploying anyway (they serve their previous table until "
                        "it is)", model, version, ", ".join(behind), wait_s)
            return False
        time.sleep(0.1)


def apply_routing(project: Project, deployment: Deployment, *, actor: str, now: datetime, fence: Fence | None = None) -> bool:
    """Make the model's routing table what ``deployment`` implies; False when it already is (or it leaves the table alone).

    A compare-and-set on the table's revision: :class:`~rung.errors.StaleRoute`
    when another writer changed it since it was read.
    """
    from rung.delivery.routing import RoutingTable, set_routing

    wanted = desired_routing(deployment, now)
    stored = project.store.route(deployment.model)
    if wanted is None or (stored is not None and _table(stored.variants, stored.shadows) == _table(*wanted)):
        return False
    set_routing(project.store, RoutingTable.build(deployment.model, wanted[0], wanted[1]), actor=actor,
                reason=f"{deployment.strategy} of {deployment.ref}: {deployment.state}",
                expected_revision=stored.revision if stored else 0, fence=fence)
    return True


def apply_aliases(project: Project, deployment: Deployment, *, now: datetime,
                  registry: Callable[[], dict[str, dict[str, int]]] | None = None) -> bool:
    """Set ``champion``/``challenger`` to what ``deployment`` implies; False when they are what was last set for it.

    What was last set is remembered in the store (:data:`ALIASES`), so the
    registry is read (``registry()``, default: MLflow) only when a rollout's
    aliases change: a pass with nothing to change never imports MLflow. An
    alias changed by hand in the registry is put back at the rollout's next move.
    """
    applied = project.store.state(ALIASES)
    wanted = desired_aliases(deployment)
    marker = {"deployment": deployment.id, "aliases": wanted}
    if applied.get(deployment.model) == marker:
        return False
    have = (registry or project.tracking.aliases)().get(deployment.model, {})
    for alias, version in wanted.items():
        if version is not None and have.get(alias) != version:
            project.tracking.set_alias(deployment.model, alias, version)
        elif version is None and have.get(alias) is not None:
            project.tracking.delete_alias(deployment.model, alias)
    project.store.save_state(ALIASES, applied | {deployment.model: marker}, time=now)
    return True


def _table(variants: list[dict[str, Any]], shadows: list[dict[str, Any]]) -> tuple[Any, ...]:
    return (tuple((v["name"], int(v["version"]), round(float(v.get("weight", 1.0)), 6)) for v in variants),
            tuple((s["name"], int(s["version"])) for s in shadows))


def _plan(project: Project, strategy: str) -> dict[str, Any]:
    settings = project.settings.deploy
    plan: dict[str, Any] = {"approval": settings.approval, "outcome": settings.outcome, "grace_s": settings.grace_s}
    if strategy in ("canary", "ab", "shadow"):
        plan[strategy] = getattr(settings, strategy).model_dump()
    return plan


def weight(deployment: Deployment) -> float:
    """The candidate's share of traffic (percent) in the deployment's current state."""
    if deployment.state == "promoted":
        return 100.0
    if deployment.state in ("rolled_back", "superseded"):
        return 0.0
    if deployment.strategy == "direct":
        return 100.0
    if deployment.strategy == "canary":
        return float(deployment.plan["canary"]["steps"][deployment.step])
    if deployment.strategy == "ab":
        return float(deployment.plan["ab"]["split"])
    return 0.0  # shadow: a copy of the traffic, none of the answers


def desired_routing(deployment: Deployment, now: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """The routing table (variants, shadows) the model's newest rollout asks for; None: leave the table alone."""
    candidate, baseline = deployment.version, deployment.baseline
    grace = deployment.updated_at + timedelta(seconds=float(deployment.plan.get("grace_s", 0)))
    if deployment.state in ("rolled_back", "superseded"):
        return ([{"name": "champion", "version": baseline, "weight": 100.0}], []) if baseline is not None else None
    share = weight(deployment)
    if deployment.state == "promoted" or share >= 100:
        variants = [{"name": "champion" if deployment.state == "promoted" else "candidate", "version": candidate, "weight": 100.0}]
        if baseline is not None and (deployment.state != "promoted" or now < grace):
            variants.append({"name": "previous" if deployment.state == "promoted" else "champion", "version": baseline, "weight": 0.0})
        return variants, []
    if deployment.strategy == "shadow":
        return [{"name": "champion", "version": baseline, "weight": 100.0}], [{"name": "shadow", "version": candidate}]
    # candidate first: raising its weight only moves keys onto it (sticky ramps)
    return [{"name": "candidate", "version": candidate, "weight": share},
            {"name": "champion", "version": baseline, "weight": 100.0 - share}], []


def desired_aliases(deployment: Deployment) -> dict[str, int | None]:
    """``champion`` and ``challenger`` on the registry, as the newest rollout of the model implies."""
    if deployment.state == "promoted":
        return {"champion": deployment.version, "challenger": None}
    if deployment.active:
        return {"champion": deployment.baseline, "challenger": deployment.version}
    return {"champion": deployment.baseline, "challenger": None}
