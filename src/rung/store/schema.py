"""The metadata tables, as SQLAlchemy Core. Alembic migrations create them.

``HEAD`` names the newest migration; a store at another revision is upgraded
on open. A test checks it matches the migration scripts.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from rung.store.records import ACTIVE_STATES

__all__ = ["metadata", "pipeline_runs", "step_runs", "cache_entries", "model_versions", "events", "routes", "api_tokens",
           "deployments", "feedback", "leases", "monitor_windows", "loop_state", "retrains", "assessments",
           "replicas", "HEAD"]

HEAD = "0007"

metadata = MetaData()

pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project", String(200), nullable=False),
    Column("pipeline", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("trigger", String(40), nullable=False, default="manual"),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("params", JSON, nullable=False, default=dict),
    Column("metrics", JSON, nullable=False, default=dict),
    Column("lineage", JSON, nullable=False, default=dict),
    Column("error", Text),
    Column("steps_total", Integer, nullable=False, default=0),
    Column("cache_hits", Integer, nullable=False, default=0),
    Column("model_name", String(200)),
    Column("model_version", Integer),
    Column("reproduces", String(64)),
    # the process running it, so a reader can tell when it died (start time defeats PID reuse)
    Column("owner_pid", Integer),
    Column("owner_host", String(255)),
    Column("owner_started", Float),
    Index("ix_pipeline_runs_started", "started_at"),
)

step_runs = Table(
    "step_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("pipeline_runs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_s", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("cache_key", String(64)),
    Column("outputs", JSON, nullable=False, default=dict),
    Column("cached", Boolean, nullable=False, default=False),
    Column("log_path", Text),
    Column("error", Text),
    UniqueConstraint("run_id", "name", name="uq_step_runs_run_name"),
)

cache_entries = Table(
    "cache_entries",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("step", String(200), nullable=False),
    Column("outputs", JSON, nullable=False),
    Column("run_id", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("run_id", String(32), nullable=False),
    Column("mlflow_run_id", String(64), nullable=False),
    Column("model_uri", Text, nullable=False),
    Column("flavor", String(40), nullable=False),
    Column("sha256", JSON, nullable=False),
    Column("metrics", JSON, nullable=False, default=dict),
    Column("lineage", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("kind", String(80), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("data", JSON, nullable=False, default=dict),
    # events of one causal chain (trigger ▸ run ▸ version ▸ certification ▸ rollout ▸ decision) share it
    Column("chain", String(32)),
    Index("ix_events_subject_time", "subject", "time"),
    Index("ix_events_chain", "chain"),
)


# A model's routing table: which versions serve which share of traffic, and
# which get a shadow copy. ``revision`` grows by one with every change, so a
# gateway polls one small row to notice a change.
routes = Table(
    "routes",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("variants", JSON, nullable=False),
    Column("shadows", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("reason", Text),
)

# API tokens for the gateway's control API; only the sha256 of a token is kept.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

_ACTIVE = text("state IN ({})".format(", ".join(f"'{s}'" for s in ACTIVE_STATES)))

# A rollout: the desired state the controller reconciles. ``revision`` makes
# every transition a compare-and-set, so two actors never both move it.
deployments = Table(
    "deployments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("baseline", Integer),  # the champion when the rollout began
    Column("strategy", String(20), nullable=False),
    Column("state", String(24), nullable=False),
    Column("step", Integer, nullable=False),
    Column("step_started_at", DateTime(timezone=True), nullable=False),
    Column("extensions", Integer, nullable=False),
    Column("plan", JSON, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("forced", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("reason", Text),
    Column("revision", Integer, nullable=False),
    Index("ix_deployments_model_state", "model", "state"),
    # at most one active rollout per model, even when two deploys race
    Index("uq_deployments_one_active", "model", unique=True,
          sqlite_where=_ACTIVE, postgresql_where=_ACTIVE),
)

# Ground truth or reward for a request, arriving any time after it.
feedback = Table(
    "feedback",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("model", String(200), nullable=False),
    Column("value", Float, nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("source", String(200), nullable=False),
)

# Leader election: one controller acts at a time.
leases = Table(
    "leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(100), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Monitoring, one row per closed window of one model version: the flat metrics
# (``drift.share``, ``performance.accuracy``, ``ops.p99_ms`` ...) that alerts and
# triggers read and the dashboard draws, and the full report behind them.
monitor_windows = Table(
    "monitor_windows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("start", DateTime(timezone=True), nullable=False),
    Column("end", DateTime(timezone=True), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("report", JSON, nullable=False),
    UniqueConstraint("model", "version", "start", name="uq_monitor_windows_window"),
    Index("ix_monitor_windows_model_end", "model", "end"),
)

# What the loop must remember across restarts: alert states, trigger states,
# the last window checked, the source's fingerprint.
loop_state = Table(
    "loop_state",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("data", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Automated (and manual) retrainings: the guard against storms reads them.
retrains = Table(
    "retrains",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model", String(200), nullable=False),
    Column("trigger", String(40), nullable=False),
    Column("why", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("run_id", String(32)),
    Column("version", Integer),
    Column("deployment_id", String(32)),
    Column("error", Text),
    Index("ix_retrains_model_started", "model", "started_at"),
)

# `rung assess` results: the levels for the history table, the whole result for the report.
assessments = Table(
    "assessments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("target", String(1000), nullable=False),
    Column("mode", String(20), nullable=False),
    Column("levels", JSON, nullable=False),
    Column("result", JSON, nullable=False),
    Index("ix_assessments_target_time", "target", "time"),
)

# The gateway replicas sharing this store, each heartbeating about once a second:
# where it listens and the routing revision it serves per model (``{model: revision}``),
# so that `rung status` shows a replica that lags behind the routing tables or went quiet.
replicas = Table(
    "replicas",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("url", String(1000), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("revisions", JSON, nullable=False),
)
