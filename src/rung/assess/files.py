"""Findings from a repository's files alone: what any ML repository shows, rung or not.

Files show intent and capability, not that something happened: a finding
here is at most ``observed``, below what a rung project's records prove.
What files cannot show at all (a rollback the controller decided) is
``not_met`` with a note saying so, and people questions are left to answers.
"""

from __future__ import annotations

from collections.abc import Callable

from rung.assess.catalogue import CRITERIA
from rung.assess.findings import Evidence, Finding
from rung.assess.scan import Scan

__all__ = ["findings_from_files", "FILE_CHECKS"]


def _files(paths: list[str], detail: str = "") -> tuple[Evidence, ...]:
    return tuple(Evidence("file", p, detail) for p in paths[:5])


def _found(cid: str, status: str, summary: str, paths: list[str] | None = None, detail: str = "") -> Finding:
    return Finding(cid, status, "observed" if status != "not_met" else "none", summary, _files(paths or [], detail))


def _ci_with(scan: Scan, signal: str) -> list[str]:
    return [path for path, signals in scan.ci.items() if signal in signals]


def _code_versioned(scan: Scan) -> Finding:
    if scan.git:
        commits = f"{scan.commits} commits" if scan.commits is not None else "a git repository"
        return _found("code.versioned", "met", f"{commits}", [".git/"])
    return _found("code.versioned", "not_met", "not a git repository")


def _code_modular(scan: Scan) -> Finding:
    tests = set(scan.tests)
    training = [p for p in scan.all("training", "orchestrator") if p.endswith(".py") and p not in tests]
    notebooks = len(scan.notebooks)
    if training and len(scan.scripts) >= notebooks:
        return _found("code.modular", "met", f"training code in {len(scan.scripts)} Python files", training)
    if training or scan.scripts:
        return _found("code.modular", "partial", f"{notebooks} notebooks beside {len(scan.scripts)} Python files",
                      scan.notebooks[:3] + training[:2])
    return _found("code.modular", "not_met", f"{notebooks} notebooks and no training scripts", scan.notebooks)


def _tests_unit(scan: Scan) -> Finding:
    if scan.tests:
        return _found("tests.unit", "met", f"{len(scan.tests)} test files", scan.tests)
    return _found("tests.unit", "not_met", "no test files (test_*.py, tests/)")


def _tests_model(scan: Scan) -> Finding:
    tests = set(scan.tests)
    model_tests = [p for p in scan.all("predict") if p in tests]
    if model_tests and _ci_with(scan, "tests_cmd"):
        return _found("tests.model", "met", "tests load and score the model, and CI runs them", model_tests)
    if model_tests:
        return _found("tests.model", "partial", "tests score the model, but no CI runs them", model_tests)
    return _found("tests.model", "not_met", "no test calls predict or loads a model")


def _ci(scan: Scan) -> Finding:
    testing = _ci_with(scan, "tests_cmd")
    if testing:
        return _found("ci.pipeline", "met", f"CI runs tests ({len(testing)} workflow files)", testing)
    if scan.ci:
        return _found("ci.pipeline", "partial", "CI configured but runs no tests", list(scan.ci))
    return _found("ci.pipeline", "not_met", "no CI configuration")


def _data_pipeline(scan: Scan) -> Finding:
    if scan.has("orchestrator", "managed_data"):
        return _found("data.pipeline", "met", "data loaded by pipeline code", scan.where("orchestrator", "managed_data"))
    if scan.has("training"):
        return _found("data.pipeline", "partial", "training code reads local files", scan.where("training"))
    return _found("data.pipeline", "not_met", "no data loading code found")


def _data_validation(scan: Scan) -> Finding:
    if scan.section("data").get("schema"):
        return _found("data.validation", "met", "rung validates each batch against the declared schema",
                      [scan.rung_yaml or "rung.yaml"], "data.schema")
    if scan.has("validation"):
        return _found("data.validation", "met", "a data validation library is used", scan.where("validation"))
    return _found("data.validation", "not_met", "no data validation library (pandera, Great Expectations, TFDV, ...)")


def _data_versioned(scan: Scan) -> Finding:
    if scan.has("data_versioning") or scan.rung_yaml:
        return _found("data.versioned", "met", "data versioned (DVC or rung snapshots)",
                      scan.where("data_versioning", "rung_project"))
    return _found("data.versioned", "not_met", "no data versioning (DVC, lakeFS, rung snapshots)")


def _data_managed(scan: Scan) -> Finding:
    if scan.has("managed_data"):
        return _found("data.managed", "met", "data read from a database or object store", scan.where("managed_data"))
    if scan.has("training"):
        return _found("data.managed", "partial", "training code reads local files", scan.where("training"))
    return _found("data.managed", "not_met", "no data loading code found")


def _pipeline(scan: Scan) -> Finding:
    if scan.has("orchestrator"):
        return _found("pipeline.training", "met", "a pipeline framework runs training", scan.where("orchestrator"))
    if [p for p in scan.all("training") if p.endswith(".py")]:
        return _found("pipeline.training", "partial", "a training script, not a pipeline", scan.where("training"))
    return _found("pipeline.training", "not_met", "no training pipeline")


def _compute(scan: Scan) -> Finding:
    if scan.has("distributed", "orchestrator"):
        return _found("compute.managed", "met", "runs on a managed executor", scan.where("distributed", "orchestrator"))
    if scan.has("container"):
        return _found("compute.managed", "partial", "containerised, but no managed executor", scan.where("container"))
    return _found("compute.managed", "not_met", "no managed compute")


def _infra(scan: Scan) -> Finding:
    if scan.has("infra", "distributed"):
        return _found("infra.scalable", "met", "infrastructure as code or a distributed executor",
                      scan.where("infra", "distributed"))
    if scan.has("container"):
        return _found("infra.scalable", "partial", "containers, on one machine", scan.where("container"))
    return _found("infra.scalable", "not_met", "no infrastructure as code, containers or cluster")


def _tracking(scan: Scan) -> Finding:
    if scan.has("mlflow", "tracking", "rung_project"):
        return _found("tracking.experiments", "met", "experiment tracking (MLflow, W&B, ..., or rung's MLflow runs)",
                      scan.where("mlflow", "tracking", "rung_project"))
    return _found("tracking.experiments", "not_met", "no experiment tracking (MLflow, W&B, Neptune, ...)")


def _reproducible(scan: Scan) -> Finding:
    pinned = scan.has("pinned")
    versioned = scan.has("data_versioning") or scan.rung_yaml is not None
    if pinned and versioned and scan.git and scan.has("mlflow", "tracking", "rung_project"):
        return _found("runs.reproducible", "met", "pinned environment, versioned data and code, tracked runs",
                      scan.where("pinned", "data_versioning", "rung_project"))
    if pinned or scan.has("container"):
        return _found("runs.reproducible", "partial", "the environment is pinned; data or runs are not versioned",
                      scan.where("pinned", "container"))
    return _found("runs.reproducible", "not_met", "no pinned environment")


def _feature_store(scan: Scan) -> Finding:
    if scan.has("feature_store"):
        return _found("features.store", "met", "a feature store is used", scan.where("feature_store"))
    return _found("features.store", "not_met", "no feature store (optional)")


def _registry(scan: Scan) -> Finding:
    if scan.has("registry") or scan.rung_yaml:
        return _found("registry.models", "met", "models registered as versions", scan.where("registry", "rung_project"))
    if scan.has("log_model", "model_file"):
        return _found("registry.models", "partial", "model files saved, not registered", scan.where("log_model", "model_file"))
    return _found("registry.models", "not_met", "no model registry use")


def _lineage(scan: Scan) -> Finding:
    if scan.rung_yaml or (scan.has("registry") and scan.has("data_versioning")):
        return _found("lineage.recorded", "met", "versions link to runs and data", scan.where("rung_project", "registry"))
    if scan.has("mlflow", "tracking"):
        return _found("lineage.recorded", "partial", "runs tracked; data versions not linked", scan.where("mlflow", "tracking"))
    return _found("lineage.recorded", "not_met", "no lineage")


def _packaged(scan: Scan) -> Finding:
    if scan.has("log_model", "container") or scan.rung_yaml:
        return _found("model.packaged", "met", "models packaged with their environment",
                      scan.where("log_model", "container", "rung_project"))
    if scan.has("model_file"):
        return _found("model.packaged", "partial", "bare model files", scan.where("model_file"))
    return _found("model.packaged", "not_met", "no model packaging")


def _certified(scan: Scan) -> Finding:
    if scan.rung_yaml and (_ci_with(scan, "deploy_cmd") or "certify" in scan.rung_config):
        return _found("release.certified", "met", "rung certifies versions before they are deployed", [scan.rung_yaml])
    tests = set(scan.tests)
    gates = [p for p in scan.all("gate") if p not in tests or p in scan.ci]
    if gates:
        return _found("release.certified", "met", "a quality gate in the pipeline or CI stops a worse model", gates)
    if scan.rung_yaml or (scan.tests and scan.has("predict")):
        return _found("release.certified", "partial", "models are evaluated; no gate seen in files",
                      [scan.rung_yaml] if scan.rung_yaml else scan.where("predict"))
    return _found("release.certified", "not_met", "no evaluation gate")


def _automated_release(scan: Scan) -> Finding:
    deploying = _ci_with(scan, "deploy_cmd")
    if deploying:
        return _found("release.automated", "met", "CI deploys", deploying)
    if scan.has("serving", "container"):
        return _found("release.automated", "partial", "serving code exists; releases by hand", scan.where("serving", "container"))
    return _found("release.automated", "not_met", "no automated release")


def _progressive(scan: Scan) -> Finding:
    strategy = scan.section("deploy").get("strategy")
    if strategy in ("canary", "ab", "shadow"):
        return _found("delivery.progressive", "met", f"deploy.strategy: {strategy}", [scan.rung_yaml or "rung.yaml"])
    if scan.has("progressive"):
        return _found("delivery.progressive", "partial", "canary or traffic-split configuration", scan.where("progressive"))
    return _found("delivery.progressive", "not_met", "no canary, A/B or shadow configuration")


def _rollback(scan: Scan) -> Finding:
    if scan.rung_yaml and scan.section("deploy").get("strategy") in ("canary", "ab"):
        return _found("rollback.automatic", "partial", "the controller would decide; files cannot show it did",
                      [scan.rung_yaml])
    return _found("rollback.automatic", "not_met", "files do not show automatic rollback")


def _serving(scan: Scan) -> Finding:
    if scan.has("serving"):
        return _found("serving.service", "met", "serving code", scan.where("serving"))
    if scan.rung_yaml:
        return _found("serving.service", "partial", "a rung project can be served (`rung serve`); files cannot show it is",
                      [scan.rung_yaml])
    return _found("serving.service", "not_met", "no serving code")


def _monitoring(scan: Scan) -> Finding:
    if scan.has("monitoring") or "monitor" in scan.rung_config:
        return _found("monitoring.production", "met", "drift or model monitoring", scan.where("monitoring", "rung_project"))
    if scan.has("ops_metrics"):
        return _found("monitoring.production", "partial", "ops metrics only", scan.where("ops_metrics"))
    return _found("monitoring.production", "not_met", "no monitoring")


def _live(scan: Scan) -> Finding:
    monitoring = set(scan.all("monitoring"))
    joined = [p for p in scan.all("feedback") if p in monitoring]
    if joined or (scan.rung_yaml and scan.has("feedback")):
        return _found("performance.live", "partial", "feedback handled in monitoring code; files cannot show it flows",
                      joined or scan.where("feedback"))
    return _found("performance.live", "not_met", "no feedback collection")


def _alerts(scan: Scan) -> Finding:
    rules = scan.section("alerts").get("rules")
    if rules:
        return _found("alerts.configured", "met", f"{len(rules)} alert rules in rung.yaml", [scan.rung_yaml or "rung.yaml"])
    if scan.has("alerting"):
        return _found("alerts.configured", "met", "alert rules or sinks", scan.where("alerting"))
    return _found("alerts.configured", "not_met", "no alerting")


def _triggered(scan: Scan) -> Finding:
    scheduled = _ci_with(scan, "schedule")
    if scan.rung_config.get("triggers") or scheduled or (scan.has("orchestrator") and scan.has("schedule")):
        return _found("pipeline.triggered", "met", "training runs on a schedule or trigger",
                      scheduled or scan.where("schedule", "rung_project"))
    return _found("pipeline.triggered", "not_met", "training starts only by hand")


def _production_triggered(scan: Scan) -> Finding:
    triggers = scan.section("triggers")
    if triggers.get("drift") or triggers.get("performance"):
        return _found("retrain.production-triggered", "partial", "drift or performance triggers configured",
                      [scan.rung_yaml or "rung.yaml"])
    monitoring = set(scan.all("monitoring"))
    both = [p for p in scan.all("retrain") if p in monitoring]
    if both:
        return _found("retrain.production-triggered", "partial", "monitoring code mentions retraining", both)
    return _found("retrain.production-triggered", "not_met", "no production-triggered retraining")


def _audit(scan: Scan) -> Finding:
    if scan.rung_yaml:
        return _found("governance.audit", "partial", "rung records every decision; files cannot show it was used",
                      [scan.rung_yaml])
    return _found("governance.audit", "not_met", "no audit trail in files")


FILE_CHECKS: dict[str, Callable[[Scan], Finding]] = {
    "code.versioned": _code_versioned, "code.modular": _code_modular, "tests.unit": _tests_unit,
    "tests.model": _tests_model, "ci.pipeline": _ci, "data.pipeline": _data_pipeline,
    "data.validation": _data_validation, "data.versioned": _data_versioned, "data.managed": _data_managed,
    "pipeline.training": _pipeline, "compute.managed": _compute, "infra.scalable": _infra,
    "tracking.experiments": _tracking, "runs.reproducible": _reproducible, "features.store": _feature_store,
    "registry.models": _registry, "lineage.recorded": _lineage, "model.packaged": _packaged,
    "release.certified": _certified, "release.automated": _automated_release,
    "delivery.progressive": _progressive, "rollback.automatic": _rollback, "serving.service": _serving,
    "monitoring.production": _monitoring, "performance.live": _live, "alerts.configured": _alerts,
    "pipeline.triggered": _triggered, "retrain.production-triggered": _production_triggered,
    "governance.audit": _audit,
}
def findings_from_files(scan: Scan) -> dict[str, Finding]:
    """Every criterion that files can speak to; answer-only criteria are left out."""
    return {c.id: FILE_CHECKS[c.id](scan) for c in CRITERIA if c.id in FILE_CHECKS}
