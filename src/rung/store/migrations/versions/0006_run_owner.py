"""run owner: the PID, host and process start time of the process running a pipeline run

A reader tells a run whose process died (kill -9, OOM, a lost machine) from
one still running by these, and marks it failed.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_runs") as batch:
        batch.add_column(sa.Column("owner_pid", sa.Integer))
        batch.add_column(sa.Column("owner_host", sa.String(255)))
        batch.add_column(sa.Column("owner_started", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("pipeline_runs") as batch:
        batch.drop_column("owner_started")
        batch.drop_column("owner_host")
        batch.drop_column("owner_pid")
