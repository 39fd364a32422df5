"""Feedback (labels) on logged requests, keyed by request id; the first value given for an id stands."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rung.store import schema
from rung.store.engine import StoreBase

__all__ = ["FeedbackRecords"]

WRITE_CHUNK, READ_CHUNK = 500, 1000  # ids per IN list: well under every database's limit on bound parameters


class FeedbackRecords(StoreBase):
    """Idempotent feedback writes and the joins readers of the request log make against them."""

    def add_feedback(self, items: list[tuple[str, float]], *, source: str, time: datetime,
                     models: dict[str, str] | None = None) -> dict[str, list[str]]:
        """Record feedback; ``{"accepted"|"duplicate"|"conflict": [feedback ids]}``.

        Idempotent: the same value again is a duplicate and changes nothing; a
        different value for an id that has feedback is a conflict and is
        refused (the first word stands). Ids are not checked against the
        request log (Parquet files, see :mod:`rung.monitor.requestlog`): the
        join happens when the log is read, so feedback may arrive before the
        segment that holds its request. ``models`` names the model of the ids
        a caller found in the log; the others are kept with model ``""``.
        """
        f = schema.feedback
        models = models or {}

        def write(conn: Connection) -> dict[str, list[str]]:
            out: dict[str, list[str]] = {"accepted": [], "duplicate": [], "conflict": []}
            ids = list({request_id for request_id, _ in items})
            existing: dict[str, float] = {}
            for start in range(0, len(ids), WRITE_CHUNK):
                chunk = ids[start:start + WRITE_CHUNK]
                existing.update(conn.execute(sa.select(f.c.request_id, f.c.value).where(f.c.request_id.in_(chunk))).all())
            rows = []
            for request_id, value in items:
                if request_id in existing:
                    out["duplicate" if existing[request_id] == value else "conflict"].append(request_id)
                else:
                    existing[request_id] = value
                    rows.append({"request_id": request_id, "model": models.get(request_id, ""), "value": value,
                                 "time": time, "source": source})
                    out["accepted"].append(request_id)
            if rows:
                conn.execute(f.insert(), rows)
            return out

        return self._write(f"record feedback from {source}", write)

    def feedback_values(self, ids: list[str]) -> dict[str, float]:
        """``{feedback id: value}`` for those of ``ids`` that have feedback (what readers of the log join)."""
        f = schema.feedback
        found: dict[str, float] = {}
        with self._read("read feedback") as conn:
            for start in range(0, len(ids), READ_CHUNK):
                chunk = ids[start:start + READ_CHUNK]
                found.update(conn.execute(sa.select(f.c.request_id, f.c.value).where(f.c.request_id.in_(chunk))).all())
        return found

    def feedback_count(self) -> int:
        """How many feedback ids are recorded."""
        with self._read("count feedback") as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(schema.feedback)).scalar() or 0)
