"""Pipeline runs, their steps, and the step cache: what a run's bookkeeping writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from rung.clock import utc
from rung.errors import RunNotFound
from rung.store import schema
from rung.store.engine import StoreBase
from rung.store.records import PipelineRun, StepRun

__all__ = ["RunRecords"]

_RUN_FIELDS = {c.name for c in schema.pipeline_runs.columns}
_STEP_FIELDS = {c.name for c in schema.step_runs.columns} - {"id"}


class RunRecords(StoreBase):
    """Runs by id (or a unique prefix), their steps in order, and step outputs by cache key."""

    def create_run(self, run: PipelineRun, steps: list[str] | None = None) -> None:
        """Record a new run and its steps (pending) in one transaction."""
        values = {k: getattr(run, k) for k in _RUN_FIELDS}
        rows = [
            {"run_id": run.id, "name": n, "status": "pending", "attempts": 0, "outputs": {}, "cached": False}
            for n in steps or []
        ]

        def write(conn: Connection) -> None:
            conn.execute(schema.pipeline_runs.insert().values(**values))
            if rows:
                conn.execute(schema.step_runs.insert(), rows)

        self._write(f"record pipeline run {run.id}", write)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Change some fields of a run; an unknown field name is a ValueError (a bug, not a database problem)."""
        unknown = set(fields) - _RUN_FIELDS
        if unknown:
            raise ValueError(f"unknown pipeline run fields: {sorted(unknown)}")
        table = schema.pipeline_runs
        self._write(f"update pipeline run {run_id}",
                    lambda c: c.execute(table.update().where(table.c.id == run_id).values(**fields)))

    def get_run(self, run_id: str) -> PipelineRun:
        """A run by id, or by a unique prefix of its id (as ``rung runs`` shows it)."""
        table = schema.pipeline_runs
        with self._read(f"read pipeline run {run_id}") as conn:
            rows = conn.execute(table.select().where(table.c.id.startswith(run_id, autoescape=True)).limit(2)).all()
        if not rows:
            raise RunNotFound(f"no pipeline run '{run_id}'; list them with `rung runs`")
        if len(rows) > 1:
            raise RunNotFound(f"'{run_id}' matches several runs; give more characters of the id")
        return _run(rows[0])

    def list_runs(self, *, project: str | None = None, limit: int = 50) -> list[PipelineRun]:
        """The newest ``limit`` runs, optionally of one project."""
        table = schema.pipeline_runs
        query = table.select().order_by(table.c.started_at.desc()).limit(limit)
        if project:
            query = query.where(table.c.project == project)
        with self._read("list pipeline runs") as conn:
            return [_run(row) for row in conn.execute(query)]

    def record_step(self, run_id: str, name: str, **fields: Any) -> None:
        """Create or update the record of one step of one run."""
        unknown = set(fields) - _STEP_FIELDS
        if unknown:
            raise ValueError(f"unknown step fields: {sorted(unknown)}")
        table = schema.step_runs

        def write(conn: Connection) -> None:
            updated = conn.execute(
                table.update().where(table.c.run_id == run_id, table.c.name == name).values(**fields)
            ).rowcount
            if not updated:
                defaults = {"status": "pending", "attempts": 0, "outputs": {}, "cached": False}
                conn.execute(table.insert().values(**(defaults | fields | {"run_id": run_id, "name": name})))

        self._write(f"record step {name} of run {run_id}", write)

    def steps(self, run_id: str) -> list[StepRun]:
        """The steps of a run, in the order they were recorded."""
        table = schema.step_runs
        with self._read(f"read the steps of run {run_id}") as conn:
            rows = conn.execute(table.select().where(table.c.run_id == run_id).order_by(table.c.id)).all()
        out = []
        for row in rows:
            data = {k: v for k, v in row._mapping.items() if k != "id"}
            data["started_at"] = utc(data["started_at"])
            data["finished_at"] = utc(data["finished_at"])
            out.append(StepRun(**data))
        return out

    def cache_get(self, key: str) -> dict[str, str] | None:
        """The outputs a step with this cache key produced, or None."""
        table = schema.cache_entries
        with self._read("read the step cache") as conn:
            value = conn.execute(sa.select(table.c.outputs).where(table.c.key == key)).scalar()
        return dict(value) if value is not None else None

    def cache_put(self, key: str, step: str, outputs: dict[str, str], run_id: str, now: datetime) -> None:
        """Remember a step's outputs under its cache key; the latest computation of a key wins."""
        table = schema.cache_entries
        values = {"step": step, "outputs": outputs, "run_id": run_id, "created_at": now}

        def write(conn: Connection) -> None:
            # The latest computation of a key wins: a forced re-run refreshes the cache.
            updated = conn.execute(table.update().where(table.c.key == key).values(**values)).rowcount
            if not updated:
                try:
                    with conn.begin_nested():
                        conn.execute(table.insert().values(key=key, **values))
                except IntegrityError:
                    pass  # another process cached the same key a moment ago: equally valid

        self._write(f"cache the outputs of step {step}", write)


def _run(row: Any) -> PipelineRun:
    data = dict(row._mapping)
    data["started_at"] = utc(data["started_at"])
    data["finished_at"] = utc(data["finished_at"])
    return PipelineRun(**data)
