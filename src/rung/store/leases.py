"""Leases: which one of several processes (controllers, schedulers) may act, and fencing of its writes."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from rung.clock import utc
from rung.errors import LeaseLost, StoreConflict
from rung.store import schema
from rung.store.engine import StoreBase
from rung.store.records import Fence

__all__ = ["LeaseRecords", "check_fence"]


def check_fence(conn: Connection, fence: Fence | None) -> dict[str, str] | None:
    """The lease a fenced write is made under, or :class:`~rung.errors.LeaseLost`; None for an unfenced write.

    The lease row stays locked (FOR SHARE on PostgreSQL; SQLite's write
    lock covers the whole transaction) until the write commits, so no
    one can take the lease over between this check and the commit.
    """
    if fence is None:
        return None
    table = schema.leases
    row = conn.execute(table.select().where(table.c.name == fence.lease).with_for_update(read=True)).first()
    expires = utc(row.expires_at) if row is not None else None
    if row is None or row.holder != fence.holder or expires is None or expires <= fence.now:
        held = f"held by {row.holder} until {expires.isoformat()}" if row is not None and expires is not None else "free"
        raise LeaseLost(f"{fence.holder} no longer holds the {fence.lease} lease ({held}) at {fence.now.isoformat()}; "
                        "its write was refused and changed nothing")
    return {"holder": row.holder, "expires_at": expires.isoformat()}


class LeaseRecords(StoreBase):
    """A named lease has one holder until its expiry; times come from the caller's clock."""

    def acquire_lease(self, name: str, holder: str, *, now: datetime, ttl_s: float) -> bool:
        """Take or renew ``name`` for ``ttl_s`` if it is free, expired or already ours."""
        table = schema.leases
        until = now + timedelta(seconds=ttl_s)

        def write(conn: Connection) -> bool:
            row = conn.execute(table.select().where(table.c.name == name).with_for_update()).first()
            if row is None:
                conn.execute(table.insert().values(name=name, holder=holder, expires_at=until))
                return True
            if row.holder == holder or utc(row.expires_at) <= now:
                conn.execute(table.update().where(table.c.name == name).values(holder=holder, expires_at=until))
                return True
            return False

        try:
            return self._write(f"take the {name} lease", write)
        except StoreConflict:  # two first-timers raced to insert: the other one won
            return False

    def renew_lease(self, name: str, holder: str, *, now: datetime, ttl_s: float) -> bool:
        """Extend ``holder``'s lease by ``ttl_s`` from ``now``, only while it is still theirs and unexpired.

        Unlike :meth:`acquire_lease` this never starts a new term: a holder
        whose lease ran out must stop its pass and start again.
        """
        table = schema.leases
        until = now + timedelta(seconds=ttl_s)

        def write(conn: Connection) -> bool:
            row = conn.execute(table.select().where(table.c.name == name).with_for_update()).first()
            if row is None or row.holder != holder or utc(row.expires_at) <= now:
                return False
            conn.execute(table.update().where(table.c.name == name).values(expires_at=until))
            return True

        return self._write(f"renew the {name} lease", write)

    def release_lease(self, name: str, holder: str) -> None:
        """Give ``name`` up if ``holder`` holds it (a clean shutdown, so the next process need not wait)."""
        table = schema.leases
        self._write(f"release the {name} lease",
                    lambda c: c.execute(table.delete().where(table.c.name == name, table.c.holder == holder)))
