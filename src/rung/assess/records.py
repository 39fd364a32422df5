"""Findings from a rung project's own records: what happened, not what the files intend.

Every finding here is ``proven`` and points at the run, event, version,
deployment or window that shows it. A check returns None where the records
cannot tell (no deploy has happened yet, so nothing says whether releases
are automated); the files and the answers then speak.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.assess.findings import Evidence, Finding
from rung.store.records import Deployment, Event, ModelVersionRecord, MonitorWindow, PipelineRun, Retrain

if TYPE_CHECKING:
    from rung.objectstore import Location
    from rung.project import Project

__all__ = ["RecordFacts", "findings_from_records", "pin_to_commit", "summary", "RECORD_CHECKS"]

AUTOMATION_ACTORS = ("scheduler", "controller", "ci")  # who acts when no person does
TRIGGERED = ("schedule", "new_data", "drift", "performance")
PRODUCTION_SIGNALS = ("drift", "performance")


@dataclass(frozen=True)
class RecordFacts:
    """The slice of the store an assessment reads, gathered once."""

    runs: list[PipelineRun]
    steps: dict[str, list[str]]  # run id -> succeeded step names
    versions: list[ModelVersionRecord]
    events: list[Event]
    deployments: list[Deployment]
    windows: list[MonitorWindow]
    retrains: list[Retrain]
    feedback: int
    log_segments: int
    settings: Any
    database_url: str
    tracking_uri: str

    @classmethod
    def gather(cls, project: Project, *, limit: int = 5000) -> RecordFacts:
        from rung.monitor.requestlog import log_root
        from rung.pipeline.owner import settle_all

        store = project.store
        runs = settle_all(store, store.list_runs(limit=limit))  # a run whose process died counts as failed
        versions = store.list_model_versions()
        models = sorted({v.name for v in versions} | {project.settings.model_name})
        root = log_root(project)
        return cls(
            runs=runs,
            steps={r.id: [s.name for s in store.steps(r.id) if s.status in ("succeeded", "cached")] for r in runs[:50]},
            versions=versions,
            events=store.events(limit=limit),
            deployments=store.deployments(limit=limit),
            windows=[w for m in models for w in store.windows(m, limit=limit)],
            retrains=store.retrains(limit=limit),
            feedback=store.feedback_count(),
            log_segments=_segments(root),
            settings=project.settings,
            database_url=project.database_url,
            tracking_uri=project.tracking_uri,
        )

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


def _segments(root: Location) -> int:
    """The request log's segments, every replica's (a folder or an object store); 0 when it cannot be listed."""
    try:
        return len(root.list(suffix=".parquet"))
    except OSError:
        return 0


def _run(r: PipelineRun, detail: str = "") -> Evidence:
    return Evidence("run", r.id[:8], detail or f"{r.pipeline} run, trigger {r.trigger}, {r.status}")


def _event(e: Event, detail: str = "") -> Evidence:
    return Evidence("event", f"#{e.id}", detail or f"{e.kind} by {e.actor} on {e.subject}, {e.time:%Y-%m-%d %H:%M}")


def _version(v: ModelVersionRecord, detail: str) -> Evidence:
    return Evidence("version", v.ref, detail)


def _proven(cid: str, status: str, summary: str, evidence: list[Evidence]) -> Finding:
    return Finding(cid, status, "proven" if status in ("met", "partial") else "none", summary, tuple(evidence[:5]))


def _succeeded(facts: RecordFacts) -> list[PipelineRun]:
    return [r for r in facts.runs if r.status == "succeeded"]


def _code_versioned(f: RecordFacts) -> Finding | None:
    if not f.runs:
        return None
    with_commit = [r for r in f.runs if (r.lineage.get("code") or {}).get("git_commit")]
    if not with_commit:
        return _proven("code.versioned", "not_met", "runs record no git commit", [])
    clean = [r for r in with_commit if not r.lineage["code"].get("git_dirty")]
    return _proven("code.versioned", "met", f"{len(with_commit)} of {len(f.runs)} runs record their commit "
                   f"({len(clean)} from a clean tree)",
                   [_run(r, f"commit {r.lineage['code']['git_commit'][:10]}") for r in with_commit])


def _code_modular(f: RecordFacts) -> Finding | None:
    runs = _succeeded(f)
    if not runs:
        return None
    return _proven("code.modular", "met", f"training runs as the pipeline {f.settings.pipeline}", [_run(r) for r in runs])


def _certifications(f: RecordFacts) -> list[Event]:
    return [e for e in f.of("certification") if e.data.get("certified")]


def _tests_unit(f: RecordFacts) -> Finding | None:
    passed = [e for e in f.of("certification")
              if any(c.get("name") == "tests" and c.get("status") == "passed" for c in e.data.get("checks", []))]
    if not passed:
        return None
    return _proven("tests.unit", "met", f"the project's tests passed in {len(passed)} certifications",
                   [_event(e, f"certification of {e.subject}: tests passed") for e in passed])


def _tests_model(f: RecordFacts) -> Finding | None:
    certified = _certifications(f)
    if not certified:
        return None
    return _proven("tests.model", "met", f"{len(certified)} releases loaded, scored and tested by `rung certify`",
                   [_event(e, f"{e.subject} certified") for e in certified])


def _ci(f: RecordFacts) -> Finding | None:
    ci_runs = [r for r in f.runs if r.trigger == "ci"]
    if ci_runs:
        return _proven("ci.pipeline", "met", f"{len(ci_runs)} pipeline runs started by CI", [_run(r) for r in ci_runs])
    return None


def _data_pipeline(f: RecordFacts) -> Finding | None:
    ingested = [r for r in f.runs if "ingest" in f.steps.get(r.id, [])]
    if not ingested:
        return None
    source = f.settings.data.source
    where = source if isinstance(source, str) else f"SQL query on {source.url.split('@')[-1]}"
    return _proven("data.pipeline", "met", f"the ingest step reads {where} in every run",
                   [_run(r, "ingest step succeeded") for r in ingested])


def _data_validation(f: RecordFacts) -> Finding | None:
    validated = [r for r in f.runs if "validate" in f.steps.get(r.id, [])]
    stopped = [r for r in f.runs if r.status == "failed" and r.error and "validat" in r.error.lower()]
    if not validated and not stopped:
        return None
    evidence = [_run(r, "validate step stopped a bad batch") for r in stopped] + [_run(r, "validate step passed")
                                                                                  for r in validated]
    return _proven("data.validation", "met", f"{len(validated)} runs validated their data against "
                   f"{f.settings.data.schema_file}" + (f"; {len(stopped)} stopped on bad data" if stopped else ""),
                   evidence)


def _snapshot(v: ModelVersionRecord) -> str | None:
    return (v.lineage.get("data") or {}).get("snapshot")


def _data_versioned(f: RecordFacts) -> Finding | None:
    if not f.versions:
        return None
    snap = [v for v in f.versions if _snapshot(v)]
    status = "met" if len(snap) == len(f.versions) else "partial" if snap else "not_met"
    return _proven("data.versioned", status, f"{len(snap)} of {len(f.versions)} versions name their data snapshot",
                   [_version(v, f"data {_snapshot(v)[:12]}…") for v in snap])  # type: ignore[index]


def _data_managed(f: RecordFacts) -> Finding | None:
    source = f.settings.data.source
    if not isinstance(source, str) or source.split("://")[0] in ("s3", "gs", "gcs", "abfs", "abfss", "az", "hdfs"):
        return _proven("data.managed", "met", "training data comes from a database or object store",
                       [Evidence("config", "rung.yaml", "data.source")])
    return _proven("data.managed", "partial", f"training data is the local file {source} (snapshotted by hash)",
                   [Evidence("config", "rung.yaml", f"data.source: {source}")])


def _pipeline(f: RecordFacts) -> Finding | None:
    full = [r for r in _succeeded(f) if {"train", "register"} <= set(f.steps.get(r.id, []))]
    if not full:
        return None
    return _proven("pipeline.training", "met", f"{len(full)} pipeline runs from ingest to a registered version",
                   [_run(r, " ▸ ".join(f.steps[r.id])) for r in full])


def _compute(f: RecordFacts) -> Finding | None:
    if not f.runs:
        return None
    executor = f.settings.executor
    return _proven("compute.managed", "met", f"runs execute on rung's {executor.kind} executor "
                   f"({executor.workers} workers, retries, cache)", [_run(r) for r in f.runs])


def _infra(f: RecordFacts) -> Finding | None:
    shared = []
    if f.settings.executor.kind == "ray":
        shared.append(Evidence("config", "rung.yaml", "executor.kind: ray"))
    if f.database_url.startswith("postgresql"):
        shared.append(Evidence("config", "rung.yaml", "store: PostgreSQL, shared by every process"))
    if f.tracking_uri.startswith(("http://", "https://")):
        shared.append(Evidence("config", "rung.yaml", "tracking: an MLflow server"))
    if shared:
        return _proven("infra.scalable", "met", "runs and records can span machines", shared)
    return _proven("infra.scalable", "not_met", "one machine: local executor, SQLite metadata, file-based MLflow", [])


def _tracking(f: RecordFacts) -> Finding | None:
    tracked = [v for v in f.versions if v.mlflow_run_id]
    if not tracked:
        return None
    return _proven("tracking.experiments", "met", f"{len(tracked)} versions trained in tracked MLflow runs",
                   [_version(v, f"MLflow run {v.mlflow_run_id[:10]}") for v in tracked])


def _reproducible(f: RecordFacts) -> Finding | None:
    if not f.runs:
        return None

    def complete(r: PipelineRun) -> bool:
        return bool((r.lineage.get("code") or {}).get("git_commit") and (r.lineage.get("environment") or {}).get("packages")
                    and r.lineage.get("settings"))

    full = [r for r in f.runs if complete(r)]
    reproduced = [r for r in f.runs if r.reproduces]
    evidence = [_run(r, f"reproduces {r.reproduces[:8]}") for r in reproduced if r.reproduces] + [
        _run(r, "commit, packages, settings and data recorded") for r in full]
    if full and f.versions and all(_snapshot(v) for v in f.versions):
        return _proven("runs.reproducible", "met", f"{len(full)} runs record code, data, settings and packages"
                       + (f"; {len(reproduced)} reproductions" if reproduced else ""), evidence)
    return _proven("runs.reproducible", "partial" if full else "not_met", "runs record only part of what repeats them",
                   evidence)


def _registry(f: RecordFacts) -> Finding | None:
    if not f.versions:
        return None
    return _proven("registry.models", "met", f"{len(f.versions)} versions in MLflow's registry",
                   [_version(v, f"registered {v.created_at:%Y-%m-%d}") for v in f.versions])


def _lineage(f: RecordFacts) -> Finding | None:
    if not f.versions:
        return None
    linked = [v for v in f.versions if v.run_id and _snapshot(v) and (v.lineage.get("code") or {}).get("git_commit")]
    status = "met" if len(linked) == len(f.versions) else "partial" if linked else "not_met"
    return _proven("lineage.recorded", status, f"{len(linked)} of {len(f.versions)} versions link data ▸ code ▸ run",
                   [_version(v, f"run {v.run_id[:8]}, data {_snapshot(v)[:10]}…") for v in linked])  # type: ignore[index]


def _packaged(f: RecordFacts) -> Finding | None:
    if not f.versions:
        return None
    packaged = [v for v in f.versions if v.flavor and v.sha256]
    return _proven("model.packaged", "met" if len(packaged) == len(f.versions) else "partial",
                   f"{len(packaged)} versions packaged as MLflow {packaged[0].flavor if packaged else ''} models "
                   "with signature, requirements and sha256",
                   [_version(v, f"{v.flavor}, {len(v.sha256)} files hashed") for v in packaged])


def _certified(f: RecordFacts) -> Finding | None:
    deploys = f.of("deploy")
    if not deploys:
        certified = _certifications(f)
        if not certified:
            return None
        return _proven("release.certified", "partial", "versions were certified, but none deployed through rung yet",
                       [_event(e) for e in certified])
    gated = [e for e in deploys if e.data.get("certified") and not e.data.get("forced")]
    forced = [e for e in deploys if e.data.get("forced") or not e.data.get("certified")]
    status = "met" if not forced else "partial" if gated else "not_met"
    return _proven("release.certified", status, f"{len(gated)} of {len(deploys)} deploys passed the gate"
                   + (f"; {len(forced)} forced past it" if forced else ""),
                   [_event(e, f"deploy of {e.subject}:{e.data.get('version')}, certified") for e in gated]
                   + [_event(e, "forced") for e in forced])


def _automated(actor: str) -> bool:
    return actor.split(":")[0] in AUTOMATION_ACTORS


def _release(f: RecordFacts) -> Finding | None:
    deploys = f.of("deploy")
    if not deploys:
        return None
    auto = [e for e in deploys if _automated(e.actor)]
    if auto:
        return _proven("release.automated", "met", f"{len(auto)} of {len(deploys)} deploys started by automation",
                       [_event(e, f"deploy of {e.subject}:{e.data.get('version')} by {e.actor}") for e in auto])
    return _proven("release.automated", "partial", f"{len(deploys)} deploys, each started by a person",
                   [_event(e) for e in deploys])


def _progressive(f: RecordFacts) -> Finding | None:
    used = [d for d in f.deployments if d.strategy in ("canary", "ab", "shadow")]
    if used:
        return _proven("delivery.progressive", "met", f"{len(used)} rollouts by canary, A/B or shadow",
                       [Evidence("deployment", d.id[:8], f"{d.ref} {d.strategy}: {d.state}") for d in used])
    if f.settings.deploy.strategy in ("canary", "ab", "shadow") and not f.deployments:
        return None
    return _proven("delivery.progressive", "not_met" if f.deployments else "partial",
                   "every rollout was direct" if f.deployments else "configured, not yet used", [])


def _rollback(f: RecordFacts) -> Finding | None:
    decided = [e for e in f.of("rollout") if e.data.get("to") in ("promoted", "rolled_back")]
    if not decided:
        return None
    auto = [e for e in decided if _automated(e.actor)]
    status = "met" if auto else "partial"
    return _proven("rollback.automatic", status, f"{len(auto)} of {len(decided)} promotions or rollbacks decided by "
                   "the controller", [_event(e, f"{e.data.get('from')} → {e.data.get('to')}: {e.data.get('why', '')}")
                                      for e in (auto or decided)])


def _serving(f: RecordFacts) -> Finding | None:
    routed = f.of("routing")
    if not routed and not f.log_segments:
        return None
    status = "met" if f.log_segments else "partial"
    return _proven("serving.service", status, f"the gateway served from {f.log_segments} request-log segments"
                   if f.log_segments else "routing tables exist; no request logged yet",
                   ([Evidence("file", ".rung/requests/", f"{f.log_segments} Parquet segments")] if f.log_segments else [])
                   + [_event(e) for e in routed[:3]])


def _monitoring(f: RecordFacts) -> Finding | None:
    if not f.windows:
        return None
    last = f.windows[-1]
    return _proven("monitoring.production", "met", f"{len(f.windows)} monitoring windows checked (drift, quality, "
                   "performance, ops)", [Evidence("window", f"{w.model}:{w.version}@{w.end:%Y-%m-%d %H:%M}",
                                                  f"{w.rows} rows, drift share {w.metrics.get('drift.share', 0):.2f}")
                                         for w in (last, *f.windows[:3])])


def _live(f: RecordFacts) -> Finding | None:
    scored = [w for w in f.windows if any(k.startswith("performance.") for k in w.metrics)]
    if scored:
        return _proven("performance.live", "met", f"{len(scored)} windows measured live performance from "
                       f"{f.feedback:,} feedback labels",
                       [Evidence("window", f"{w.model}:{w.version}@{w.end:%Y-%m-%d}",
                                 ", ".join(f"{k} {v:.3f}" for k, v in w.metrics.items()
                                           if k.startswith("performance.") and isinstance(v, float))[:120])
                        for w in scored[-3:]])
    if f.feedback:
        return _proven("performance.live", "partial", f"{f.feedback:,} feedback labels, no window joined them yet", [])
    return None


def _alerts(f: RecordFacts) -> Finding | None:
    rules = f.settings.alerts.rules
    fired = f.of("alert")
    if not rules:
        return _proven("alerts.configured", "not_met", "no alert rules in rung.yaml", [])
    sinks = ", ".join(s.name for s in f.settings.alerts.all_sinks())
    return _proven("alerts.configured", "met", f"{len(rules)} alert rules to {sinks}; {len(fired)} notices sent",
                   [Evidence("config", "rung.yaml", f"alerts.rules: {', '.join(r.name for r in rules)}")]
                   + [_event(e, f"{e.data.get('rule')} {e.data.get('status')}: {e.data.get('metric')}") for e in fired])


def _triggered(f: RecordFacts) -> Finding | None:
    runs = [r for r in f.runs if r.trigger in TRIGGERED]
    if runs:
        return _proven("pipeline.triggered", "met", f"{len(runs)} runs started by a trigger",
                       [_run(r) for r in runs])
    t = f.settings.triggers
    if t.schedule or t.new_data or t.drift or t.performance:
        return _proven("pipeline.triggered", "partial", "triggers configured; none has started a run yet",
                       [Evidence("config", "rung.yaml", "triggers")])
    return None


def _production_triggered(f: RecordFacts) -> Finding | None:
    fired = [r for r in f.retrains if r.trigger in PRODUCTION_SIGNALS and r.status != "refused"]
    if fired:
        return _proven("retrain.production-triggered", "met", f"{len(fired)} retrainings started by "
                       + " or ".join(sorted({r.trigger for r in fired})),
                       [Evidence("retrain", r.id[:8], f"{r.trigger}: {r.why} → {r.status}"
                                 + (f", version {r.version}" if r.version else "")) for r in fired])
    t = f.settings.triggers
    if t.drift or t.performance:
        return _proven("retrain.production-triggered", "partial", "drift or performance triggers configured; "
                       "none has fired yet", [Evidence("config", "rung.yaml", "triggers.drift / triggers.performance")])
    return None


def _audit(f: RecordFacts) -> Finding | None:
    decisions = [e for e in f.events if e.kind in ("deploy", "rollout", "certification", "retrain.triggered")]
    if not f.events:
        return None
    if decisions:
        actors = sorted({e.actor for e in decisions})
        return _proven("governance.audit", "met", f"{len(f.events)} events on the append-only log; decisions by "
                       + ", ".join(actors), [_event(e) for e in decisions])
    return _proven("governance.audit", "partial", f"{len(f.events)} events, none of them a release decision",
                   [_event(e) for e in f.events[:3]])


RECORD_CHECKS: dict[str, Callable[[RecordFacts], Finding | None]] = {
    "code.versioned": _code_versioned, "code.modular": _code_modular, "tests.unit": _tests_unit,
    "tests.model": _tests_model, "ci.pipeline": _ci, "data.pipeline": _data_pipeline,
    "data.validation": _data_validation, "data.versioned": _data_versioned, "data.managed": _data_managed,
    "pipeline.training": _pipeline, "compute.managed": _compute, "infra.scalable": _infra,
    "tracking.experiments": _tracking, "runs.reproducible": _reproducible, "registry.models": _registry,
    "lineage.recorded": _lineage, "model.packaged": _packaged, "release.certified": _certified,
    "release.automated": _release, "delivery.progressive": _progressive, "rollback.automatic": _rollback,
    "serving.service": _serving, "monitoring.production": _monitoring, "performance.live": _live,
    "alerts.configured": _alerts, "pipeline.triggered": _triggered,
    "retrain.production-triggered": _production_triggered, "governance.audit": _audit,
}


def findings_from_records(facts: RecordFacts) -> dict[str, Finding]:
    """Every criterion the records speak to (those that return None are left to files and answers)."""
    found = {cid: check(facts) for cid, check in RECORD_CHECKS.items()}
    return {cid: finding for cid, finding in found.items() if finding is not None}


def pin_to_commit(finding: Finding, facts: RecordFacts, root: Path) -> Finding:
    """Raise a file finding to ``proven`` when its files are in the commit a recorded run ran.

    A CI workflow in the working tree is only observed; the same file in the
    commit that a pipeline run recorded in its lineage is part of the code
    that produced a model, and the run is the record that shows it.
    """
    if finding.confidence != "observed":
        return finding
    files = [e.ref for e in finding.evidence if e.kind == "file" and not e.ref.endswith("/")]
    for run in reversed(facts.runs):
        commit = (run.lineage.get("code") or {}).get("git_commit")
        if commit and files and all(_in_commit(root, commit, path) for path in files):
            pinned = Evidence("run", run.id[:8], f"recorded commit {commit[:10]}, which holds {', '.join(files)}")
            return Finding(finding.criterion, finding.status, "proven", finding.summary, (pinned, *finding.evidence))
    return finding


def _in_commit(root: Path, commit: str, path: str) -> bool:
    try:
        done = subprocess.run(["git", "-C", str(root), "cat-file", "-e", f"{commit}:{path}"], capture_output=True,
                              timeout=3)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def summary(facts: RecordFacts) -> dict[str, Any]:
    """Counts for the report's header."""
    return {"runs": len(facts.runs), "versions": len(facts.versions), "events": len(facts.events),
            "deployments": len(facts.deployments), "windows": len(facts.windows), "retrains": len(facts.retrains),
            "feedback": facts.feedback, "request_log_segments": facts.log_segments}
