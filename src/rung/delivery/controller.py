"""The reconciling controller: moves rollouts along, and makes traffic and aliases follow them.

Each :meth:`Controller.tick` is level-triggered and idempotent:

1. hold the lease (one controller acts at a time; a second one waits);
2. for every active rollout, judge its window from the request log and, if
   the evidence says so, move it: next step, promotion, awaiting approval or
   rollback. Each move is one transaction (compare-and-set on the rollout's
   revision, with its event and evidence);
3. for every model with a rollout, set the routing table and the registry's
   ``champion``/``challenger`` aliases to what its newest rollout implies.

Step 3 derives everything from step 2's rows, so a controller killed at any
point (even between a move and its routing change) leaves a state the next
tick completes: nothing is double-promoted, weights always sum to 100, no
rollout is left stuck.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rung.config import AbSettings, CanarySettings, ShadowSettings
from rung.delivery import analysis
from rung.delivery.clock import SYSTEM, Clock
from rung.delivery.rollout import current, desired_aliases, desired_routing, move
from rung.errors import StaleDeployment, StaleRoute
from rung.store import Deployment

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["Controller", "LEASE"]

LEASE = "controller"
log = logging.getLogger(__name__)


class Controller:
    """Reconciles the rollouts of one project's store.

    ``hook`` is called at each point where a crash would leave the most
    work half done (after a move, after a routing change, after aliases);
    tests use it to kill the controller there.
    """

    def __init__(self, project: Project, *, clock: Clock = SYSTEM, holder: str | None = None, lease_s: float = 15.0,
                 hook: Callable[[str], None] | None = None) -> None:
        self.project = project
        self.store = project.store
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.lease_s = lease_s
        self.hook = hook or (lambda point: None)

    # -- the loop --------------------------------------------------------------------------

    def tick(self) -> list[Deployment]:
        """One reconciliation pass; returns the rollouts it moved (empty when another controller leads)."""
        now = self.clock.now()
        if not self.store.acquire_lease(LEASE, self.holder, now=now, ttl_s=self.lease_s):
            return []
        moved = []
        for deployment in self.store.deployments(active=True, limit=1000):
            try:
                after = self.advance(deployment)
            except StaleDeployment:
                continue  # a user or a deploy moved it meanwhile: judged again next tick
            if after is not None:
                moved.append(after)
                self.hook("moved")
        self.sync()
        return moved

    def run(self, interval_s: float = 1.0, stop: Callable[[], bool] = lambda: False) -> None:
        """Tick until ``stop()``; a failing tick is logged and retried, never fatal."""
        while not stop():
            try:
                self.tick()
            except Exception:
                log.exception("controller tick failed; trying again in %.0f s", interval_s)
            time.sleep(interval_s)

    def release(self) -> None:
        self.store.release_lease(LEASE, self.holder)

    # -- judging ---------------------------------------------------------------------------

    def advance(self, deployment: Deployment) -> Deployment | None:
        """Move one active rollout if its evidence says so; None when it stays where it is."""
        if deployment.state == "awaiting_approval":
            return None
        if deployment.strategy == "direct":
            return self._promote(deployment, {"result": "pass", "checks": [], "note": "direct: no analysis"})
        if deployment.strategy == "canary":
            return self._canary(deployment)
        if deployment.strategy == "ab":
            return self._ab(deployment)
        return self._shadow(deployment)

    def _window(self, deployment: Deployment, *, shadow: bool = False) -> tuple[analysis.Arm, analysis.Arm, dict[str, Any]]:
        from rung.monitor.logreader import request_window  # the Parquet request log, with feedback joined

        now = self.clock.now()
        since = deployment.step_started_at
        rows = request_window(self.project, deployment.model, since, now)
        candidate, champion = analysis.arms(rows, deployment.version, deployment.baseline,
                                            outcome=deployment.plan["outcome"], shadow=shadow)
        return candidate, champion, {"since": since.isoformat(), "until": now.isoformat()}

    def _canary(self, deployment: Deployment) -> Deployment | None:
        rules = CanarySettings(**deployment.plan["canary"])
        candidate, champion, window = self._window(deployment)
        early = analysis.early_failure(candidate, champion, rules)
        if early is not None:
            return self._rollback(deployment, {"result": "fail", "checks": [early], "window": window},
                                  f"canary failed {early['name']} at {rules.steps[deployment.step]:g}%")
        elapsed = (self.clock.now() - deployment.step_started_at).total_seconds()
        if elapsed < rules.window_s * (1 + deployment.extensions):
            return None
        verdict = analysis.Verdict(analysis.guardrails(candidate, champion, rules))
        evidence = verdict.to_dict() | {"window": window}
        step = rules.steps[deployment.step]
        if verdict.result == "fail":
            return self._rollback(deployment, evidence, f"canary failed {', '.join(verdict.failed())} at {step:g}%")
        if verdict.result == "inconclusive":
            if deployment.extensions >= rules.max_extensions:
                return self._rollback(deployment, evidence, f"canary inconclusive at {step:g}% after "
                                                            f"{deployment.extensions} extensions: {', '.join(verdict.failed())}")
            return move(self.project, deployment, {"extensions": deployment.extensions + 1}, actor="controller",
                        clock=self.clock, evidence=evidence, why=f"inconclusive at {step:g}%: window extended")
        if deployment.step + 1 >= len(rules.steps) - 1:
            return self._promote(deployment, evidence)
        nxt = rules.steps[deployment.step + 1]
        return move(self.project, deployment,
                    {"step": deployment.step + 1, "step_started_at": self.clock.now(), "extensions": 0},
                    actor="controller", clock=self.clock, evidence=evidence, why=f"canary passed at {step:g}%: {nxt:g}%")

    def _ab(self, deployment: Deployment) -> Deployment | None:
        rules = AbSettings(**deployment.plan["ab"])
        now = self.clock.now()
        last = deployment.evidence.get("checked_at")
        if last is not None and (now - _parse(last)).total_seconds() < rules.check_every_s:
            return None
        candidate, champion, window = self._window(deployment)
        early = analysis.early_failure(candidate, champion, rules)
        if early is not None:
            return self._rollback(deployment, {"result": "fail", "checks": [early], "window": window}, "A/B candidate failing")
        previous_p = float(deployment.evidence.get("p_value", 1.0))
        decision = analysis.ab_decision(candidate, champion, rules, previous_p)
        evidence = {"result": decision["decision"], "checks": [decision], "window": window, "checked_at": now.isoformat(),
                    "p_value": decision["value"]}
        if decision["decision"] == "candidate":
            return self._promote(deployment, evidence)
        if decision["decision"] == "champion":
            return self._rollback(deployment, evidence, "A/B: the champion is better")
        if (now - deployment.created_at).total_seconds() >= rules.max_duration_s:
            return self._rollback(deployment, evidence, f"A/B: no winner within {rules.max_duration_s:g} s; the champion stays")
        # remember the look (running-minimum p-value, when) without an event per look
        self.store.transition(deployment.id, deployment.revision, {"evidence": evidence}, event=None)
        return None

    def _shadow(self, deployment: Deployment) -> Deployment | None:
        rules = ShadowSettings(**deployment.plan["shadow"])
        elapsed = (self.clock.now() - deployment.step_started_at).total_seconds()
        if elapsed < rules.window_s * (1 + deployment.extensions):
            return None
        candidate, champion, window = self._window(deployment, shadow=True)
        verdict = analysis.Verdict(analysis.shadow_checks(candidate, champion, rules))
        evidence = verdict.to_dict() | {"window": window}
        if verdict.result == "pass":
            return self._promote(deployment, evidence)
        if verdict.result == "fail":
            return self._rollback(deployment, evidence, f"shadow failed {', '.join(verdict.failed())}")
        if elapsed >= rules.max_duration_s:
            return self._rollback(deployment, evidence, f"shadow inconclusive after {rules.max_duration_s:g} s")
        return move(self.project, deployment, {"extensions": deployment.extensions + 1}, actor="controller", clock=self.clock,
                    evidence=evidence, why="shadow inconclusive: window extended")

    def _promote(self, deployment: Deployment, evidence: dict[str, Any]) -> Deployment:
        if deployment.plan.get("approval") == "required":
            return move(self.project, deployment, {"state": "awaiting_approval"}, actor="controller", clock=self.clock,
                        evidence=evidence, why="passed; waiting for `rung approve`")
        return move(self.project, deployment, {"state": "promoted"}, actor="controller", clock=self.clock, evidence=evidence,
                    why=f"{deployment.strategy}: {deployment.model}:{deployment.version} promoted to champion")

    def _rollback(self, deployment: Deployment, evidence: dict[str, Any], why: str) -> Deployment:
        return move(self.project, deployment, {"state": "rolled_back"}, actor="controller", clock=self.clock,
                    evidence=evidence, why=why)

    # -- making the world follow -----------------------------------------------------------

    def sync(self) -> None:
        """Routing tables and aliases to what each model's newest rollout implies."""
        from rung.serving.routing import RoutingTable, set_routing

        by_model: dict[str, list[Deployment]] = {}
        for deployment in self.store.deployments(limit=1000):
            by_model.setdefault(deployment.model, []).append(deployment)
        newest = {model: current(found) for model, found in by_model.items()}
        if not newest:
            return
        aliases = self.project.tracking.aliases()
        now = self.clock.now()
        for model, deployment in newest.items():
            assert deployment is not None
            wanted = desired_routing(deployment, now)
            stored = self.store.route(model)
            if wanted is not None and (stored is None or _table(stored.variants, stored.shadows) != _table(*wanted)):
                table = RoutingTable.build(model, wanted[0], wanted[1])
                why = f"{deployment.strategy} of {deployment.ref}: {deployment.state}"
                try:
                    set_routing(self.store, table, actor="controller", reason=why,
                                expected_revision=stored.revision if stored else 0)
                except StaleRoute:
                    continue  # someone else wrote it: next tick compares again
                self.hook("routed")
            for alias, version in desired_aliases(deployment).items():
                have = aliases.get(model, {}).get(alias)
                if version is not None and have != version:
                    self.project.tracking.set_alias(model, alias, version)
                elif version is None and have is not None:
                    self.project.tracking.delete_alias(model, alias)
            self.hook("aliased")


def _table(variants: list[dict[str, Any]], shadows: list[dict[str, Any]]) -> tuple[Any, ...]:
    return (tuple((v["name"], int(v["version"]), round(float(v.get("weight", 1.0)), 6)) for v in variants),
            tuple((s["name"], int(s["version"])) for s in shadows))


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)

