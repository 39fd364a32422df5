""":func:`certify`: gather a version's evidence, run every rule on it, record the verdict.

The composition point of the gate: it takes the :class:`~rung.project.Project`
and hands each gathering function in :mod:`rung.certify.inputs` the one
adapter it reads, the rules in :mod:`rung.certify.checks` the numbers they
judge, and the outcome to the metadata store and MLflow. The order matters:
settings errors (a threshold on a metric the version lacks, a behaviour
check on a missing column) surface before the slow part (loading, timing,
pytest).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rung.certify.behaviour import behaviour_check, input_types, validate_behaviour
from rung.certify.checks import metric_checks, schema_check
from rung.certify.inputs import Loader, find_champion, load_candidate, load_champion, run_project_tests, snapshot_inputs
from rung.certify.report import CertificationReport, Check
from rung.certify.timing import Timer, latency_checks

if TYPE_CHECKING:
    import pandas as pd

    from rung.clock import Clock
    from rung.config import CertifySettings
    from rung.models.loaded import LoadedModel
    from rung.project import Project
    from rung.store import MetadataStore
    from rung.store.records import ModelVersionRecord
    from rung.tracking import Tracking

__all__ = ["certify", "record_verdict"]


def certify(project: Project, ref: str, *, actor: str = "cli", skip_tests: bool = False, clock: Clock | None = None,
            chain: str | None = None, timer: Timer = time.perf_counter) -> CertificationReport:
    """Run every check on ``ref`` (``NAME:VERSION``), record the verdict, return the report.

    Raises :class:`~rung.errors.ModelVersionNotFound`,
    :class:`~rung.errors.TrackingError` or :class:`~rung.errors.CertificationError`
    when the gate cannot run; a version that fails a check is a report
    with ``certified`` false, never an exception. ``clock`` stamps the verdict
    (the demo's simulated time); ``chain`` ties it to the retraining that asked;
    ``timer`` (seconds) measures the gate's duration and the model's latency.
    """
    started_at = clock.now() if clock is not None else datetime.now(UTC)
    started = timer()
    settings = project.settings.certify
    record = project.model_version(ref)
    snapshot = inputs = snapshot_inputs(record, project.artifacts, project.settings.data.target)
    project.tracking.check_reachable()
    champion, no_champion = find_champion(project.tracking, project.store, record)
    # settings errors surface before the slow part
    metrics = metric_checks(settings, project.primary_metric, record, champion, no_champion)
    validate_behaviour(settings.behaviour, input_types(None, inputs))
    model, integrity = load_candidate(project.models_loader, record)
    if model is not None and model.columns:
        inputs = inputs[[c.name for c in model.columns if c.name in inputs.columns]]
        validate_behaviour(settings.behaviour, input_types(model, inputs))

    checks = [integrity, *metrics]
    if model is None:
        why = "the model was not loaded: its integrity check failed"
        checks += [Check(name, "skipped", detail=why) for name in ("latency", "schema", "behaviour")]
    else:
        checks += _model_checks(settings, project.models_loader, model, champion, no_champion, snapshot, inputs, timer)
    checks.append(run_project_tests(project.root, settings.tests, skip_tests))

    report = CertificationReport(
        name=record.name,
        version=record.version,
        checks=tuple(checks),
        champion=champion.version if champion else None,
        started_at=started_at,
        duration_s=timer() - started,
    )
    record_verdict(project.store, project.tracking, report, actor, chain)
    return report


def _model_checks(settings: CertifySettings, loader: Loader, model: LoadedModel, champion: ModelVersionRecord | None,
                  no_champion: str, snapshot: pd.DataFrame, inputs: pd.DataFrame, timer: Timer) -> list[Check]:
    """The checks that need the candidate in memory: latency, schema against the champion, behaviour.

    ``snapshot`` has every column of the data snapshot (a champion with
    other inputs is timed on it); ``inputs`` only the candidate's.
    """
    rival, no_rival = load_champion(loader, champion, no_champion)
    checks = latency_checks(model, rival, snapshot, settings.latency, no_rival, timer=timer)
    if rival is None:
        checks.append(Check("schema", "skipped", detail=no_rival))
    else:
        checks.append(schema_check(model.columns, rival.columns, settings.schema_check.declared_changes,
                                   champion_ref=f"{rival.name}:{rival.version}"))
    if not settings.behaviour:
        checks.append(Check("behaviour", "skipped", detail="no certify.behaviour checks declared"))
    for index, check in enumerate(settings.behaviour):
        sample = inputs.sample(min(check.rows, len(inputs)), random_state=0) if len(inputs) else inputs
        checks.append(behaviour_check(model, sample, check, index))
    return checks


def record_verdict(store: MetadataStore, tracking: Tracking, report: CertificationReport, actor: str, chain: str | None) -> None:
    """The audit event first (it holds the whole report), then the tags a controller reads from MLflow."""
    store.append_event("certification", actor=actor, subject=report.ref, data=report.to_dict(), time=report.started_at,
                       chain=chain)
    tracking.set_version_tags(
        report.name,
        report.version,
        {
            "rung.certified": "true" if report.certified else "false",
            "rung.certification": report.summary(),
            "rung.certified_at": report.started_at.isoformat(),
        },
    )
