"""delivery: deployments, the request log, feedback and the controller's lease

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("baseline", sa.Integer),
        sa.Column("strategy", sa.String(20), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("extensions", sa.Integer, nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("forced", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("revision", sa.Integer, nullable=False),
    )
    op.create_index("ix_deployments_model_state", "deployments", ["model", "state"])
    active = sa.text("state IN ('running', 'awaiting_approval')")
    op.create_index("uq_deployments_one_active", "deployments", ["model"], unique=True,
                    sqlite_where=active, postgresql_where=active)
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
    op.create_table(
        "feedback",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("holder", sa.String(100), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("feedback")
    op.drop_index("ix_requests_request_id", "requests")
    op.drop_index("ix_requests_model_time", "requests")
    op.drop_table("requests")
    op.drop_index("uq_deployments_one_active", "deployments")
    op.drop_index("ix_deployments_model_state", "deployments")
    op.drop_table("deployments")
