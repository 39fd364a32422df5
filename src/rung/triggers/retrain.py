"""One retraining, start to finish: trigger ▸ run ▸ version ▸ certification ▸ rollout.

Every step writes an event with the same ``chain`` id (the retraining's id),
so ``rung timeline`` tells the whole story and the rollout's own events
(written by the controller as it moves the deployment) join it. Whatever
fails, the champion keeps serving: a failed pipeline run or a candidate
that fails certification ends the chain with an event and an alert, and
nothing reaches traffic.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rung.errors import RungError
from rung.store.records import Retrain
from rung.triggers.guards import Guard

if TYPE_CHECKING:
    from rung.clock import Clock
    from rung.project import Project
    from rung.triggers.decision import TriggerReason

__all__ = ["retrain", "in_flight"]

log = logging.getLogger(__name__)


def in_flight(project: Project, model: str) -> Retrain | None:
    running = [r for r in project.store.retrains(model, limit=20) if r.status == "running"]
    return running[0] if running else None


def retrain(project: Project, reason: TriggerReason, *, clock: Clock, actor: str = "scheduler", manual: bool = False,
            on_update: Any = None) -> Retrain:
    """Run the chain once, if the guards allow it; returns the retraining as recorded.

    Refused (status ``refused``, with the guard's reason, and an event) when
    one is in flight, or, unless ``manual``, within the cooldown or over the
    daily maximum of ``triggers`` in ``rung.yaml``.
    """
    model = project.settings.model_name
    now = clock.now()
    allowed, why_not = Guard.from_settings(project.settings.triggers).allow(project.store.retrains(model, limit=100), now, manual=manual)
    chain = uuid.uuid4().hex
    record = Retrain(id=chain, model=model, trigger=reason.kind, why=reason.why, status="running", started_at=now)
    if not allowed:
        record = replace(record, status="refused", finished_at=now, error=why_not)
        project.store.append_event("retrain.refused", actor=actor, subject=model, time=now, chain=chain,
                                   data={"trigger": reason.kind, "why": reason.why, "refused": why_not})
        return record
    project.store.add_retrain(record, event=_event("retrain.triggered", actor, model, clock, chain,
                                                   {"trigger": reason.kind, "why": reason.why, "details": reason.details}))
    try:
        return _chain(project, record, clock=clock, actor=actor, on_update=on_update)
    except Exception as exc:  # anything unexpected still ends the chain: the champion keeps serving
        log.exception("retraining %s failed", chain)
        return _fail(project, record, clock, actor, "retrain.failed",
                     f"{type(exc).__name__}: {exc}; the champion keeps serving")


def _chain(project: Project, record: Retrain, *, clock: Clock, actor: str, on_update: Any) -> Retrain:
    from rung.certify import certify
    from rung.delivery.rollout import deploy

    model, chain = record.model, record.id
    try:
        result = project.run(trigger=record.trigger, on_update=on_update)
    except RungError as exc:
        return _fail(project, record, clock, actor, "retrain.failed",
                     f"the training pipeline failed: {exc}; the champion keeps serving")
    version = result.run.model_version
    if version is None:
        return _fail(project, record, clock, actor, "retrain.failed",
                     "the pipeline registered no model version; the champion keeps serving")
    ref = f"{model}:{version}"
    project.store.update_retrain(chain, {"run_id": result.run.id, "version": version}, event=_event(
        "retrain.run", actor, model, clock, chain,
        {"run_id": result.run.id, "version": version, "metrics": result.run.metrics.get("overall", {}),
         "duration_s": result.run.duration_s}))
    report = certify(project, ref, actor=actor, clock=clock, chain=chain)
    if not report.certified:
        failed = ", ".join(c.name for c in report.checks if c.status == "failed")
        return _fail(project, replace(record, version=version), clock, actor, "retrain.rejected",
                     f"{ref} failed certification ({failed}); the champion keeps serving")
    deployment = deploy(project, ref, actor=actor, clock=clock, chain=chain, reason=f"retrained: {record.why}")
    now = clock.now()
    done = replace(record, status="deployed", finished_at=now, run_id=result.run.id, version=version,
                   deployment_id=deployment.id)
    project.store.update_retrain(chain, {"status": "deployed", "finished_at": now, "deployment_id": deployment.id})
    return done


def _fail(project: Project, record: Retrain, clock: Clock, actor: str, kind: str, error: str) -> Retrain:
    from rung.monitor.alerts import Notice
    from rung.monitor.notify import deliver

    now = clock.now()
    project.store.update_retrain(record.id, {"status": "failed", "finished_at": now, "error": error},
                                 event=_event(kind, actor, record.model, clock, record.id, {"error": error}))
    notice = Notice(rule="retraining", subject=record.model, metric="retrain.failed", value=1.0, condition="== 1",
                    severity="critical", status="firing", at=now,
                    message=f"{record.model}: retraining ({record.trigger}) failed: {error}")
    try:
        deliver(notice, project.settings.alerts.all_sinks())
    except Exception:  # a broken sink must not hide the failure: the event above stands
        log.exception("alert for the failed retraining could not be delivered")
    project.store.append_event("alert", actor="scheduler", subject=record.model, time=now, chain=record.id,
                               data=notice.to_dict())
    return replace(record, status="failed", finished_at=now, error=error)


def _event(kind: str, actor: str, subject: str, clock: Clock, chain: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "actor": actor, "subject": subject, "data": data, "time": clock.now(), "chain": chain}
