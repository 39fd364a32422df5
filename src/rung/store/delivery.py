"""Delivery's records: rollouts (deployments) and routing tables, each moved by compare-and-set with its event.

On PostgreSQL a routing write also announces itself: ``NOTIFY rung_routes``
in the same transaction, delivered by the server when (and only if) it
commits. A gateway's :class:`RouteListener` hears it on a connection of its
own and refreshes at once instead of waiting for its next poll; SQLite has
no such channel, and its gateways poll the revisions (one small query).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rung.clock import utc
from rung.errors import StaleDeployment, StaleRoute, StoreConflict, StoreUnavailable
from rung.store import schema
from rung.store.engine import StoreBase, values_of
from rung.store.events import insert_event
from rung.store.leases import check_fence
from rung.store.records import ACTIVE_STATES, Deployment, Fence, RouteRecord

__all__ = ["DeliveryRecords", "RouteListener", "route_listener", "ROUTES_CHANNEL"]

ROUTES_CHANNEL = "rung_routes"  # PostgreSQL's notification channel of committed routing changes; payload ``model:revision``


class DeliveryRecords(StoreBase):
    """Every change carries a revision: a writer with an old read is refused instead of overwriting."""

    # -- routing tables -------------------------------------------------------------------

    def route(self, model: str) -> RouteRecord | None:
        """``model``'s routing table, or None if it has none yet."""
        table = schema.routes
        with self._read(f"read the routing table of {model}") as conn:
            row = conn.execute(table.select().where(table.c.model == model)).first()
        return _route(row) if row else None

    def routes(self) -> list[RouteRecord]:
        """Every routing table, by model name."""
        table = schema.routes
        with self._read("read the routing tables") as conn:
            return [_route(row) for row in conn.execute(table.select().order_by(table.c.model))]

    def route_revisions(self) -> dict[str, int]:
        """``{model: revision}``: what a gateway polls to notice a changed table."""
        table = schema.routes
        with self._read("read the routing revisions") as conn:
            return {row.model: row.revision for row in conn.execute(sa.select(table.c.model, table.c.revision))}

    def set_route(
        self,
        model: str,
        variants: list[dict[str, Any]],
        shadows: list[dict[str, Any]],
        *,
        actor: str,
        reason: str | None,
        time: datetime,
        expected_revision: int | None = None,
        event: Callable[[RouteRecord], dict[str, Any]] | None = None,
        fence: Fence | None = None,
    ) -> RouteRecord:
        """Replace ``model``'s table and bump its revision; its audit event (``event(record)``) in the same transaction.

        With ``expected_revision``, the write happens only if the stored
        revision is still that one (:class:`~rung.errors.StaleRoute` if not),
        so two writers cannot silently overwrite each other. Two first writes
        of a table at once (nothing yet to lock) collide on its key on
        PostgreSQL: the loser runs again, now updating the winner's row, or
        gets :class:`~rung.errors.StaleRoute` if it expected a new table.
        With ``fence``, :class:`~rung.errors.LeaseLost` refuses the write of
        a lease holder that no longer holds it.
        """
        table = schema.routes

        def write(conn: Connection) -> RouteRecord:
            lease = check_fence(conn, fence)
            # FOR UPDATE serialises writers on PostgreSQL; SQLite's BEGIN IMMEDIATE already does.
            current = conn.execute(sa.select(table.c.revision).where(table.c.model == model).with_for_update()).scalar()
            if expected_revision is not None and (current or 0) != expected_revision:
                raise StaleRoute(f"the routing table of {model} changed meanwhile (revision {current}); read it again")
            values: dict[str, Any] = {
                "revision": (current or 0) + 1,
                "variants": variants,
                "shadows": shadows,
                "updated_at": time,
                "updated_by": actor,
                "reason": reason,
            }
            if current is None:
                conn.execute(table.insert().values(model=model, **values))
            else:
                conn.execute(table.update().where(table.c.model == model).values(**values))
            record = RouteRecord(model=model, **values)
            if event is not None:
                insert_event(conn, event(record), lease)
            if conn.dialect.name == "postgresql":  # sent at commit, never for a write rolled back
                conn.execute(sa.select(sa.func.pg_notify(ROUTES_CHANNEL, f"{model}:{record.revision}")))
            return record

        action = f"write the routing table of {model}"
        try:
            return self._write(action, write)
        except StoreConflict:  # another first write of this table committed in between
            return self._write(action, write)

    # -- deployments (rollouts) ----------------------------------------------------------------

    def create_deployment(self, record: Deployment, *, event: dict[str, Any],
                          superseded_event: dict[str, Any] | None = None) -> list[Deployment]:
        """Insert a rollout and its event; active rollouts of the same model end as ``superseded``, in the same transaction.

        Returns the rollouts it superseded.
        """
        table = schema.deployments

        def write(conn: Connection) -> list[Deployment]:
            active = conn.execute(
                table.select().where(table.c.model == record.model, table.c.state.in_(ACTIVE_STATES)).with_for_update()
            ).all()
            ended = []
            for row in active:
                old = _deployment(row)
                conn.execute(table.update().where(table.c.id == old.id).values(
                    state="superseded", updated_at=record.created_at, revision=old.revision + 1))
                ended.append(old)
                if superseded_event is not None:
                    data = superseded_event["data"] | {"deployment": old.id, "version": old.version, "from": old.state,
                                                       "strategy": old.strategy, "by": record.id}
                    insert_event(conn, superseded_event | {"data": data, "subject": record.model})
            conn.execute(table.insert().values(**values_of(record)))
            insert_event(conn, event)
            return ended

        action = f"record the rollout of {record.ref}"
        try:
            return self._write(action, write)
        except StoreConflict:
            # Another deploy of this model committed in between (the one-active-rollout index
            # refused ours): run again, superseding it.
            return self._write(action, write)

    def transition(self, deployment_id: str, expected_revision: int, changes: dict[str, Any],
                   event: dict[str, Any] | None, *, fence: Fence | None = None) -> Deployment:
        """Move a rollout (compare-and-set on its revision) and record why, in one transaction.

        With ``fence``, :class:`~rung.errors.LeaseLost` refuses the move of a
        lease holder that no longer holds it, checked in this transaction.
        """
        table = schema.deployments

        def write(conn: Connection) -> Deployment:
            lease = check_fence(conn, fence)
            row = conn.execute(table.select().where(table.c.id == deployment_id).with_for_update()).first()
            if row is None or row.revision != expected_revision:
                raise StaleDeployment(f"rollout {deployment_id} changed meanwhile; read it again")
            values = changes | {"revision": expected_revision + 1}
            conn.execute(table.update().where(table.c.id == deployment_id).values(**values))
            if event is not None:
                insert_event(conn, event, lease)
            return dataclasses.replace(_deployment(row), **values)

        return self._write(f"move rollout {deployment_id}", write)

    def deployment(self, deployment_id: str) -> Deployment | None:
        """One rollout by id, or None."""
        table = schema.deployments
        with self._read(f"read rollout {deployment_id}") as conn:
            row = conn.execute(table.select().where(table.c.id == deployment_id)).first()
        return _deployment(row) if row else None

    def deployments(self, model: str | None = None, *, active: bool = False, limit: int = 100) -> list[Deployment]:
        """Newest first."""
        table = schema.deployments
        query = table.select().order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit)
        if model:
            query = query.where(table.c.model == model)
        if active:
            query = query.where(table.c.state.in_(ACTIVE_STATES))
        with self._read("list rollouts") as conn:
            return [_deployment(row) for row in conn.execute(query)]


class RouteListener:
    """Routing changes as PostgreSQL announces them at commit (``LISTEN rung_routes``), on a connection of its own.

    Not pooled: the connection waits for notifications for as long as the
    gateway lives. :meth:`wait` raises :class:`~rung.errors.StoreUnavailable`
    when the connection drops (the server restarted, the backend was
    terminated); the caller falls back to polling and calls :meth:`connect`
    again. A change committed while no connection listened is not announced
    later, so a caller refreshes once after each (re)connection.
    """

    def __init__(self, store: StoreBase, *, name: str = "rung-listen") -> None:
        self._store = store
        self._name = name[:63]  # PostgreSQL's limit for application_name
        self._conn: Any = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def connect(self) -> None:
        """Open the connection and LISTEN; :class:`~rung.errors.StoreUnavailable` if the server is out of reach."""
        import psycopg

        self.close()
        engine = self._store.engine
        args, params = engine.dialect.create_connect_args(engine.url)
        params = {**params, "autocommit": True, "application_name": self._name, "connect_timeout": 5,
                  # a peer that vanished without a word (a cut network) is noticed within about 10 s
                  "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
        try:
            conn = psycopg.connect(*args, **params)
            conn.execute(f"LISTEN {ROUTES_CHANNEL}")
        except psycopg.Error as exc:
            raise self._unavailable("listen for routing changes", exc) from exc
        self._conn = conn

    def wait(self, timeout_s: float) -> list[str]:
        """The announcements (``model:revision``) that arrive within ``timeout_s``: as soon as the first one does.

        An empty list after a quiet ``timeout_s``, once the connection has
        answered a ping (a dead one is found out here, not at the next change).
        """
        import psycopg

        if self._conn is None:
            raise StoreUnavailable("the routing listener is not connected; call connect() first")
        try:
            heard = [n.payload for n in self._conn.notifies(timeout=timeout_s, stop_after=1)]
            if heard:
                heard += [n.payload for n in self._conn.notifies(timeout=0.001)]
            else:
                self._conn.execute("SELECT 1")
            return heard
        except psycopg.Error as exc:
            self.close()
            raise self._unavailable("keep listening for routing changes", exc) from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a connection already broken has nothing left to close
                conn.close()

    def _unavailable(self, action: str, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"the metadata store {self._store._safe_url()} is unavailable, so rung could not {action}: "
                                f"{str(exc).strip() or type(exc).__name__}")


def route_listener(store: StoreBase, *, name: str = "rung-listen") -> RouteListener | None:
    """A :class:`RouteListener` on ``store``'s database where it announces changes (PostgreSQL); ``None`` elsewhere."""
    return RouteListener(store, name=name) if store.dialect == "postgresql" else None


def _route(row: Any) -> RouteRecord:
    data = dict(row._mapping)
    data["updated_at"] = utc(data["updated_at"])
    return RouteRecord(**data)


def _deployment(row: Any) -> Deployment:
    data = dict(row._mapping)
    for key in ("step_started_at", "created_at", "updated_at"):
        data[key] = utc(data[key])
    return Deployment(**data)
