"""Alembic environment: rung runs migrations itself, on a connection it owns."""

from __future__ import annotations

from alembic import context

from rung.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
