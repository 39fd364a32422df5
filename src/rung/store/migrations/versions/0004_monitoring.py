"""monitoring: window time series, loop state, retrainings, causal chains of events; the request log moves to Parquet

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("chain", sa.String(32)))
    op.create_index("ix_events_chain", "events", ["chain"])
    op.create_table(
        "monitor_windows",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.UniqueConstraint("model", "version", "start", name="uq_monitor_windows_window"),
    )
    op.create_index("ix_monitor_windows_model_end", "monitor_windows", ["model", "end"])
    op.create_table(
        "loop_state",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "retrains",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("trigger", sa.String(40), nullable=False),
        sa.Column("why", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("run_id", sa.String(32)),
        sa.Column("version", sa.Integer),
        sa.Column("deployment_id", sa.String(32)),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_retrains_model_started", "retrains", ["model", "started_at"])
    op.drop_index("ix_requests_request_id", "requests")
    op.drop_index("ix_requests_model_time", "requests")
    op.drop_table("requests")


def downgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("shadow", sa.Boolean, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("prediction", sa.String(200)),
        sa.Column("score", sa.Float),
    )
    op.create_index("ix_requests_model_time", "requests", ["model", "time"])
    op.create_index("ix_requests_request_id", "requests", ["request_id"])
    op.drop_index("ix_retrains_model_started", "retrains")
    op.drop_table("retrains")
    op.drop_table("loop_state")
    op.drop_index("ix_monitor_windows_model_end", "monitor_windows")
    op.drop_table("monitor_windows")
    op.drop_index("ix_events_chain", "events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("chain")
