"""assessments: each `rung assess` result, so that `--history` shows how the levels moved

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assessments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("target", sa.String(1000), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("levels", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
    )
    op.create_index("ix_assessments_target_time", "assessments", ["target", "time"])


def downgrade() -> None:
    op.drop_index("ix_assessments_target_time", "assessments")
    op.drop_table("assessments")
