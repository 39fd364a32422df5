"""The loop's records: closed monitoring windows, its remembered state, and retrainings with their events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from rung.clock import utc
from rung.store import schema
from rung.store.engine import StoreBase, values_of
from rung.store.events import insert_event
from rung.store.records import MonitorWindow, Retrain

__all__ = ["LoopRecords"]


class LoopRecords(StoreBase):
    """What monitoring and the retrain triggers keep between passes, so a restarted loop carries on."""

    def save_window(self, window: MonitorWindow) -> None:
        """Record a closed window; checking the same window again replaces it (idempotent)."""
        t = schema.monitor_windows
        values = values_of(window)
        values.pop("id", None)

        def write(conn: Connection) -> None:
            conn.execute(t.delete().where(t.c.model == window.model, t.c.version == window.version,
                                          t.c.start == window.start))
            conn.execute(t.insert().values(**values))
        self._write(f"record a monitoring window of {window.model}:{window.version}", write)

    def windows(self, model: str, *, version: int | None = None, since: datetime | None = None,
                limit: int = 1000) -> list[MonitorWindow]:
        """Closed windows of ``model`` (oldest first), the newest ``limit``."""
        t = schema.monitor_windows
        query = t.select().where(t.c.model == model).order_by(t.c.end.desc(), t.c.version.desc()).limit(limit)
        if version is not None:
            query = query.where(t.c.version == version)
        if since is not None:
            query = query.where(t.c.end > since)
        with self._read(f"read the monitoring windows of {model}") as conn:
            rows = conn.execute(query).all()
        return [MonitorWindow(**(dict(r._mapping) | {"start": utc(r.start), "end": utc(r.end)})) for r in reversed(rows)]

    def state(self, name: str) -> dict[str, Any]:
        """A piece of the loop's remembered state ({} when none)."""
        t = schema.loop_state
        with self._read(f"read loop state {name}") as conn:
            row = conn.execute(t.select().where(t.c.name == name)).first()
        return dict(row.data) if row is not None else {}

    def save_state(self, name: str, data: dict[str, Any], *, time: datetime) -> None:
        """Replace a piece of the loop's remembered state."""
        t = schema.loop_state

        def write(conn: Connection) -> None:
            if conn.execute(t.update().where(t.c.name == name).values(data=data, updated_at=time)).rowcount == 0:
                conn.execute(t.insert().values(name=name, data=data, updated_at=time))
        self._write(f"save loop state {name}", write)

    def add_retrain(self, record: Retrain, *, event: dict[str, Any]) -> None:
        """Start a retraining and write its first event in the same transaction."""
        def write(conn: Connection) -> None:
            conn.execute(schema.retrains.insert().values(**values_of(record)))
            insert_event(conn, event)
        self._write(f"record a retraining of {record.model}", write)

    def update_retrain(self, retrain_id: str, changes: dict[str, Any], *, event: dict[str, Any] | None = None) -> None:
        """Change a retraining (its status, what it produced) and record why, in one transaction."""
        def write(conn: Connection) -> None:
            conn.execute(schema.retrains.update().where(schema.retrains.c.id == retrain_id).values(**changes))
            if event is not None:
                insert_event(conn, event)
        self._write(f"update retraining {retrain_id}", write)

    def retrains(self, model: str | None = None, *, limit: int = 100) -> list[Retrain]:
        """Retrainings, newest first."""
        t = schema.retrains
        query = t.select().order_by(t.c.started_at.desc()).limit(limit)
        if model is not None:
            query = query.where(t.c.model == model)
        with self._read("list retrainings") as conn:
            rows = conn.execute(query).all()
        return [Retrain(**(dict(r._mapping) | {"started_at": utc(r.started_at), "finished_at": utc(r.finished_at)}))
                for r in rows]
