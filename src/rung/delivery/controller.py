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

The lease is renewed between the steps of a pass, and every move and
routing write is fenced with it (:class:`~rung.store.Fence`): the store
checks, in the write's own transaction, that this controller still holds
an unexpired lease, and refuses the write with
:class:`~rung.errors.LeaseLost` otherwise. A pass that stalls past its
lease (a slow MLflow, a paused process) therefore writes nothing after
another controller took over; it stops, and its next pass starts afresh.

The registry (MLflow) is only touched when a rollout implies aliases
other than the ones last set for it (remembered in the store; ``rung
deploy`` sets a new rollout's own), so most passes, and the first pass of a
new controller, never import MLflow or create its client.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rung.clock import SYSTEM, Clock
from rung.config import AbSettings, CanarySettings, ShadowSettings
from rung.delivery import analysis
from rung.delivery.judgement import judge_canary
from rung.delivery.rollout import apply_aliases, apply_routing, current, move
from rung.errors import LeaseLost, StaleDeployment, StaleRoute
from rung.store import Deployment, Fence

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["Controller", "LEASE"]

LEASE = "controller"
log = logging.getLogger(__name__)

# Where a window's requests come from: (project, model, since, until) -> request-log rows with their feedback ``value``.
Requests = Callable[["Project", str, datetime, datetime], list[dict[str, Any]]]


class Controller:
    """Reconciles the rollouts of one project's store.

    ``hook`` is called at each point where a crash would leave the most
    work half done (after a move, after a routing change, after aliases);
    tests use it to kill the controller there. ``requests(project, model,
    since, until)`` gives the logged requests a window is judged on
    (default: :func:`rung.monitor.logreader.request_window`, the Parquet
    request log with feedback joined); tests hand it rows directly.
    """

    def __init__(self, project: Project, *, clock: Clock = SYSTEM, holder: str | None = None, lease_s: float = 15.0,
                 hook: Callable[[str], None] | None = None, requests: Requests | None = None) -> None:
        self.project = project
        self.store = project.store
        self.clock = clock
        self.requests = requests
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.lease_s = lease_s
        self.hook = hook or (lambda point: None)
        self._renewed: datetime | None = None  # while a pass holds the lease: when it was last taken or renewed
        self._registry: dict[str, dict[str, int]] | None = None  # the registry's aliases, read at most once a pass

    # -- the loop --------------------------------------------------------------------------

    def tick(self) -> list[Deployment]:
        """One reconciliation pass; returns the rollouts it moved (empty when another controller leads)."""
        now = self.clock.now()
        if not self.store.acquire_lease(LEASE, self.holder, now=now, ttl_s=self.lease_s):
            return []
        self._renewed = now
        moved = []
        try:
            for deployment in self.store.deployments(active=True, limit=1000):
                self._hold()
                try:
                    after = self.advance(deployment)
                except StaleDeployment:
                    continue  # a user or a deploy moved it meanwhile: judged again next tick
                if after is not None:
                    moved.append(after)
                    self.hook("moved")
            self.sync()
        except LeaseLost as exc:
            log.warning("controller pass stopped: %s", exc)
        finally:
            self._renewed = None
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

    def _hold(self, *, force: bool = False) -> None:
        """Renew the lease between steps of a pass (once a third of it has gone, or now with ``force``).

        :class:`~rung.errors.LeaseLost` when it ran out meanwhile: the pass
        must stop, since another controller may be acting already. Outside a
        pass (``rung rollback`` syncing traffic at once) there is no lease to hold.
        """
        if self._renewed is None:
            return
        now = self.clock.now()
        if not force and (now - self._renewed).total_seconds() < self.lease_s / 3:
            return
        if not self.store.renew_lease(LEASE, self.holder, now=now, ttl_s=self.lease_s):
            raise LeaseLost(f"{self.holder}'s {LEASE} lease of {self.lease_s:g} s ran out during a pass; "
                            "another controller may lead now")
        self._renewed = now

    def _fence(self) -> Fence | None:
        """What the store checks each write of a pass against; None outside a pass (a person's command)."""
        return Fence(LEASE, self.holder, self.clock.now()) if self._renewed is not None else None

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
        if self.requests is None:
            from rung.monitor.logreader import request_window  # the Parquet request log, with feedback joined

            self.requests = request_window
        now = self.clock.now()
        since = deployment.step_started_at
        rows = self.requests(self.project, deployment.model, since, now)
        candidate, champion = analysis.arms(rows, deployment.version, deployment.baseline,
                                            outcome=deployment.plan["outcome"], shadow=shadow)
        window: dict[str, Any] = {"since": since.isoformat(), "until": now.isoformat()}
        seen = getattr(rows, "replicas", None)  # whose request logs were read: rows each, newest record, late
        if seen is not None:
            window["replicas"] = [one.to_dict() for one in seen]
        return candidate, champion, window

    def _canary(self, deployment: Deployment) -> Deployment | None:
        rules = CanarySettings(**deployment.plan["canary"])
        candidate, champion, window = self._window(deployment)
        early = analysis.early_failure(candidate, champion, rules)
        elapsed = (self.clock.now() - deployment.step_started_at).total_seconds()
        due = early is None and elapsed >= rules.window_s * (1 + deployment.extensions)
        verdict = analysis.Verdict(analysis.guardrails(candidate, champion, rules)) if due else None
        decision = judge_canary(rules, step=deployment.step, extensions=deployment.extensions, early=early, verdict=verdict)
        if decision.action == "wait":
            return None
        evidence = (verdict.to_dict() if verdict else {"result": "fail", "checks": [early]}) | {"window": window}
        if decision.action == "hold":
            self._remember(deployment, evidence | {"note": decision.why}, every_s=rules.window_s)
            return None
        if decision.action == "rollback":
            return self._rollback(deployment, evidence, decision.why)
        if decision.action == "promote":
            return self._promote(deployment, evidence)
        changes: dict[str, Any] = {"extensions": deployment.extensions + 1}
        if decision.action == "next":
            changes = {"step": deployment.step + 1, "step_started_at": self.clock.now(), "extensions": 0}
        return move(self.project, deployment, changes, actor="controller", clock=self.clock, evidence=evidence,
                    why=decision.why, fence=self._fence())

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
        self._remember(deployment, evidence)  # the running-minimum p-value, and when it was looked at
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
                    evidence=evidence, why="shadow inconclusive: window extended", fence=self._fence())

    def _promote(self, deployment: Deployment, evidence: dict[str, Any]) -> Deployment:
        if deployment.plan.get("approval") == "required":
            return move(self.project, deployment, {"state": "awaiting_approval"}, actor="controller", clock=self.clock,
                        evidence=evidence, why="passed; waiting for `rung approve`", fence=self._fence())
        return move(self.project, deployment, {"state": "promoted"}, actor="controller", clock=self.clock, evidence=evidence,
                    why=f"{deployment.strategy}: {deployment.model}:{deployment.version} promoted to champion",
                    fence=self._fence())

    def _rollback(self, deployment: Deployment, evidence: dict[str, Any], why: str) -> Deployment:
        return move(self.project, deployment, {"state": "rolled_back"}, actor="controller", clock=self.clock,
                    evidence=evidence, why=why, fence=self._fence())

    def _remember(self, deployment: Deployment, evidence: dict[str, Any], every_s: float = 0.0) -> None:
        """Keep a look's evidence on the rollout (for ``rung status``) without a move or an event; at most once per ``every_s``."""
        now = self.clock.now()
        last = deployment.evidence.get("checked_at")
        if every_s and last is not None and (now - _parse(last)).total_seconds() < every_s:
            return
        self.store.transition(deployment.id, deployment.revision, {"evidence": evidence | {"checked_at": now.isoformat()}},
                              event=None, fence=self._fence())

    # -- making the world follow -----------------------------------------------------------

    def sync(self) -> None:
        """Routing tables and aliases to what each model's newest rollout implies."""
        by_model: dict[str, list[Deployment]] = {}
        for deployment in self.store.deployments(limit=1000):
            by_model.setdefault(deployment.model, []).append(deployment)
        newest = {model: current(found) for model, found in by_model.items()}
        if not newest:
            return
        now = self.clock.now()
        self._registry = None
        for latest in newest.values():
            assert latest is not None
            self._hold()
            try:
                if apply_routing(self.project, latest, actor="controller", now=now, fence=self._fence()):
                    self.hook("routed")
            except StaleRoute:
                continue  # someone else wrote it: next tick compares again
            apply_aliases(self.project, latest, now=now, registry=self._aliases)
            self.hook("aliased")

    def _aliases(self) -> dict[str, dict[str, int]]:
        """The registry's aliases, read once a pass and only when one must change (the first read imports MLflow)."""
        if self._registry is None:
            self._registry = self.project.tracking.aliases()
            self._hold(force=True)  # that may have been slow: the lease must still be ours before aliases are written
        return self._registry


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)

