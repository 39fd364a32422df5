"""The registry of gateway replicas: who serves from this store, and which routing revision each one applied.

Every gateway (``rung serve``) upserts its row about once a second and
again right after it swaps a routing table in, so a reader compares each
replica's revisions with the routing tables' and its ``last_seen`` with the
clock: a replica that lags behind a change, or went quiet (killed, cut off
from the database), is visible (``rung status``). A replica that stops
cleanly removes its row; one that was killed leaves it, and its growing
``last_seen`` age says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from rung.clock import utc, utcnow
from rung.store import schema
from rung.store.engine import StoreBase

__all__ = ["ReplicaRecord", "ReplicaRecords", "QUIET_AFTER_S"]

QUIET_AFTER_S = 5.0  # a replica not heard of for longer lags (it heartbeats every second)


@dataclass(frozen=True)
class ReplicaRecord:
    """One gateway replica as last heard of: ``revisions`` is ``{model: routing revision it serves}``."""

    id: str
    host: str
    pid: int
    url: str
    started_at: datetime
    last_seen: datetime
    revisions: dict[str, int] = field(default_factory=dict)

    def age_s(self, now: datetime | None = None) -> float:
        """Seconds since its last heartbeat."""
        return max(0.0, ((now or utcnow()) - self.last_seen).total_seconds())

    def lag(self, revisions: dict[str, int], now: datetime | None = None, *, quiet_after_s: float = QUIET_AFTER_S) -> str | None:
        """Why this replica lags behind the routing tables' ``revisions`` (``{model: revision}``), or None when it does not.

        Lagging: not heard of for more than ``quiet_after_s``, or serving an
        older revision of a table (or none of it).
        """
        why = []
        age = self.age_s(now)
        if age > quiet_after_s:
            why.append(f"not seen for {age:.0f} s")
        for model, revision in sorted(revisions.items()):
            served = self.revisions.get(model)
            if served is None:
                why.append(f"{model}: not served")
            elif served < revision:
                why.append(f"{model}: revision {served} of {revision}")
        return "; ".join(why) or None


class ReplicaRecords(StoreBase):
    """Heartbeats are upserts of one row per replica id: no history is kept, only the latest word."""

    def heartbeat(self, replica: str, *, host: str, pid: int, url: str, started_at: datetime,
                  revisions: dict[str, int], now: datetime) -> None:
        """Record that ``replica`` is alive at ``now`` and serves ``revisions`` (``{model: revision}``).

        A replica id that another process used before (a restart on the same
        host and port) takes its row over: the id names the place, not the
        process.
        """
        table = schema.replicas
        values: dict[str, Any] = {"host": host, "pid": pid, "url": url, "started_at": started_at, "last_seen": now,
                                  "revisions": {str(k): int(v) for k, v in revisions.items()}}
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert  # type: ignore[assignment]
        statement = upsert(table).values(id=replica, **values).on_conflict_do_update(index_elements=["id"], set_=values)
        self._write(f"record the heartbeat of replica {replica}", lambda conn: conn.execute(statement))

    def replicas(self, active_within_s: float | None = None, *, now: datetime | None = None) -> list[ReplicaRecord]:
        """The replicas by id; with ``active_within_s``, only those heard of in that many seconds before ``now``."""
        table = schema.replicas
        query = table.select().order_by(table.c.id)
        if active_within_s is not None:
            query = query.where(table.c.last_seen >= (now or utcnow()) - timedelta(seconds=active_within_s))
        with self._read("read the gateway replicas") as conn:
            return [_replica(row) for row in conn.execute(query)]

    def forget_replica(self, replica: str) -> None:
        """Remove ``replica``'s row (a clean shutdown: it serves nothing any more)."""
        table = schema.replicas

        def write(conn: Connection) -> None:
            conn.execute(table.delete().where(table.c.id == replica))

        self._write(f"remove replica {replica}", write)


def _replica(row: Any) -> ReplicaRecord:
    data = dict(row._mapping)
    data["started_at"], data["last_seen"] = utc(data["started_at"]), utc(data["last_seen"])
    data["revisions"] = {str(k): int(v) for k, v in (data["revisions"] or {}).items()}
    return ReplicaRecord(**data)

