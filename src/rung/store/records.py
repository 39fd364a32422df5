"""What the store hands out: frozen records, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["PipelineRun", "StepRun", "ModelVersionRecord", "Event", "RouteRecord", "TokenRecord", "Deployment", "Fence"]


@dataclass(frozen=True)
class PipelineRun:
    id: str
    project: str
    pipeline: str
    status: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    steps_total: int = 0
    cache_hits: int = 0
    model_name: str | None = None
    model_version: int | None = None
    reproduces: str | None = None
    owner_pid: int | None = None  # the process running it (see rung.pipeline.owner)
    owner_host: str | None = None
    owner_started: float | None = None

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class StepRun:
    run_id: str
    name: str
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    attempts: int = 0
    cache_key: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    log_path: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ModelVersionRecord:
    name: str
    version: int
    run_id: str
    mlflow_run_id: str
    model_uri: str
    flavor: str
    sha256: dict[str, str]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Event:
    id: int
    time: datetime
    kind: str
    actor: str
    subject: str
    data: dict[str, Any]
    chain: str | None = None  # the causal chain this event belongs to (a retraining and what followed)


@dataclass(frozen=True)
class RouteRecord:
    """A model's routing table as stored; :mod:`rung.delivery.routing` gives it behaviour."""

    model: str
    revision: int
    variants: list[dict[str, Any]]
    shadows: list[dict[str, Any]]
    updated_at: datetime
    updated_by: str
    reason: str | None = None


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    role: str
    sha256: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Fence:
    """A write made on behalf of a lease: the store refuses it unless ``holder`` still holds ``lease`` at ``now``.

    The check runs in the write's own transaction, with the lease row
    locked, so a holder whose lease ran out (a pass that stalled, a paused
    process) cannot write after another one took over.
    """

    lease: str
    holder: str
    now: datetime


ACTIVE_STATES = ("running", "awaiting_approval")


@dataclass(frozen=True)
class Deployment:
    """A rollout of ``version`` of ``model`` against ``baseline`` (the champion when it began)."""

    id: str
    model: str
    version: int
    baseline: int | None
    strategy: str
    state: str  # running | awaiting_approval | promoted | rolled_back | superseded
    step: int
    step_started_at: datetime
    extensions: int
    plan: dict[str, Any]
    evidence: dict[str, Any]
    forced: bool
    created_at: datetime
    updated_at: datetime
    created_by: str
    reason: str | None
    revision: int

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def ref(self) -> str:
        return f"{self.model}:{self.version}"


@dataclass(frozen=True)
class MonitorWindow:
    """One closed monitoring window of one model version: flat metrics and the report behind them."""

    model: str
    version: int
    start: datetime
    end: datetime
    rows: int
    metrics: dict[str, float]
    report: dict[str, Any]
    id: int | None = None


@dataclass(frozen=True)
class Retrain:
    """One retraining: what triggered it, and how far its chain got."""

    id: str
    model: str
    trigger: str
    why: str
    status: str  # running | succeeded | failed | refused
    started_at: datetime
    finished_at: datetime | None = None
    run_id: str | None = None
    version: int | None = None
    deployment_id: str | None = None
    error: str | None = None

    @property
    def chain(self) -> str:
        return self.id
