"""Stored ``rung assess`` results, kept per target so a later assessment can be compared with earlier ones."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from rung.clock import utc
from rung.store import schema
from rung.store.engine import StoreBase

__all__ = ["AssessmentRecords"]


class AssessmentRecords(StoreBase):
    """Assessments as plain dicts: ``result`` is the whole JSON document the assessment wrote."""

    def add_assessment(self, *, time: datetime, target: str, mode: str, levels: dict[str, Any],
                       result: dict[str, Any]) -> int:
        """Store one assessment; its id."""
        values = {"time": time, "target": target, "mode": mode, "levels": levels, "result": result}

        def write(conn: Connection) -> int:
            key = conn.execute(schema.assessments.insert().values(**values)).inserted_primary_key
            assert key is not None  # an INSERT of one row always has one
            return int(key[0])

        return self._write(f"record an assessment of {target}", write)

    def assessments(self, target: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
        """Stored assessments (oldest first), the newest ``limit``; ``result`` is the whole JSON document."""
        t = schema.assessments
        query = t.select().order_by(t.c.time.desc(), t.c.id.desc()).limit(limit)
        if target is not None:
            query = query.where(t.c.target == target)
        with self._read("read assessments") as conn:
            rows = conn.execute(query).all()
        return [dict(r._mapping) | {"time": utc(r.time)} for r in reversed(rows)]
