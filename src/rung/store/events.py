"""The audit trail: one event per decision, appended, never changed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from rung.clock import utc
from rung.store import schema
from rung.store.engine import StoreBase
from rung.store.records import Event

__all__ = ["EventRecords", "insert_event"]


def insert_event(conn: Connection, event: dict[str, Any], lease: dict[str, str] | None = None) -> None:
    """One event in the caller's transaction; a write made under a lease names it (holder, expiry), as that
    transaction read it, so the event commits or rolls back with the change it explains."""
    data = event["data"] | {"lease": lease} if lease is not None else event["data"]
    conn.execute(schema.events.insert().values(
        kind=event["kind"], actor=event["actor"], subject=event["subject"], data=data, time=event["time"],
        chain=event.get("chain")))


class EventRecords(StoreBase):
    """Events by subject, causal chain, kind, or after an id (how followers read the trail incrementally)."""

    def append_event(self, kind: str, *, actor: str, subject: str, data: dict[str, Any], time: datetime,
                     chain: str | None = None) -> None:
        """Record one event on its own (a decision that changes nothing else in the store)."""
        values = {"kind": kind, "actor": actor, "subject": subject, "data": data, "time": time, "chain": chain}
        self._write(f"record a {kind} event", lambda c: c.execute(schema.events.insert().values(**values)))

    def events(self, subject: str | None = None, limit: int = 200, *, chain: str | None = None,
               after_id: int | None = None, kinds: Sequence[str] | None = None) -> list[Event]:
        """The newest ``limit`` events (oldest first), optionally of one subject, one chain, or after an id."""
        table = schema.events
        query = table.select().order_by(table.c.id.desc()).limit(limit)
        if subject:
            query = query.where(table.c.subject == subject)
        if chain:
            query = query.where(table.c.chain == chain)
        if after_id is not None:
            query = query.where(table.c.id > after_id)
        if kinds:
            query = query.where(table.c.kind.in_(list(kinds)))
        with self._read("read events") as conn:
            rows = conn.execute(query).all()
        return [Event(**(dict(r._mapping) | {"time": utc(r.time)})) for r in reversed(rows)]
