"""The metadata store on SQLAlchemy: SQLite by default, PostgreSQL by URL.

SQLite runs in WAL mode with a busy timeout, and every transaction starts
with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of
failing with "database is locked" when a read turns into a write. A short
retry covers the rest. Migrations run on open, serialised between processes
(a file lock for SQLite, an advisory lock for PostgreSQL), so eight
``rung run`` processes started at once on a new project all succeed.
"""

from __future__ import annotations

import dataclasses
import fcntl
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from rung.errors import LeaseLost, RunNotFound, StaleDeployment, StaleRoute, StoreError
from rung.store import schema
from rung.store.records import (
    ACTIVE_STATES, Deployment, Event, Fence, ModelVersionRecord, MonitorWindow, PipelineRun, Retrain, RouteRecord, StepRun, TokenRecord,
)

__all__ = ["MetadataStore", "normalise_url"]

T = TypeVar("T")
_RUN_FIELDS = {c.name for c in schema.pipeline_runs.columns}
_STEP_FIELDS = {c.name for c in schema.step_runs.columns} - {"id"}


WRITE = "rung_write"  # connection flag: the transaction being begun will write


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class MetadataStore:
    """rung's own records: pipeline runs, steps, the step cache, model versions, events."""

    def __init__(self, url: str, *, lock_dir: Path | None = None) -> None:
        self.url = normalise_url(url)
        self._lock_dir = lock_dir
        try:
            self.engine = self._create_engine(self.url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open the metadata store {self._safe_url()}: {exc}") from exc
        self._migrate()

    # -- connection management -------------------------------------------------

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _safe_url(self) -> str:
        try:
            return sa.make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # a URL that does not even parse is shown as given
            return self.url

    @staticmethod
    def _create_engine(url: str) -> Engine:
        from rung.optional import require_sql_driver

        require_sql_driver(url, purpose="a PostgreSQL metadata store")
        if url.startswith("sqlite"):
            path = sa.make_url(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # A small pool of reused connections: opening one costs more than a step's bookkeeping.
            engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, pool_size=2, max_overflow=8)

            @sa_event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # let SQLAlchemy emit BEGIN itself
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA busy_timeout = 60000")
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
                cur.execute("PRAGMA foreign_keys = ON")
                cur.close()

            @sa_event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                # Writers take the write lock up front (no deadlock-prone lock upgrades);
                # readers never block anyone in WAL mode, so they begin a plain read.
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get(WRITE) else "BEGIN")

            return engine
        # Enough for a gateway's database threads (8) beside its version loads and control calls.
        return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=15)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.info[WRITE] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop(WRITE, None)

    def _retry(self, fn: Callable[[Connection], T]) -> T:
        delay = 0.05
        for attempt in range(8):
            try:
                with self._tx() as conn:
                    return fn(conn)
            except OperationalError as exc:
                transient = "locked" in str(exc) or "could not serialize" in str(exc)
                if not transient or attempt == 7:
                    raise StoreError(f"metadata store {self._safe_url()}: {exc.orig}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    def _migrate(self) -> None:
        try:
            with self.engine.connect() as conn:
                current = self._revision(conn)
            if current == schema.HEAD:
                return
            with self._migration_lock():
                self._upgrade()
        except StoreError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(
                f"cannot open the metadata store {self._safe_url()}: {getattr(exc, 'orig', None) or exc}; "
                "check the URL (RUNG_DATABASE_URL or store.database_url) and that the server is running"
            ) from exc

    @staticmethod
    def _revision(conn: Connection) -> str | None:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.dialect == "sqlite":
            db = sa.make_url(self.url).database or ""
            if self._lock_dir is not None:
                lock_dir = self._lock_dir
            elif db and db != ":memory:":
                lock_dir = Path(db).parent
            else:
                lock_dir = Path(tempfile.gettempdir())
            lock_path = lock_dir / ".rung-migrate.lock"
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with open(lock_path, "w") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        elif self.dialect == "postgresql":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT pg_advisory_lock(72127165)")
                try:
                    yield
                finally:
                    conn.exec_driver_sql("SELECT pg_advisory_unlock(72127165)")
                    conn.commit()
        else:
            yield

    def _upgrade(self) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as conn:
            if self._revision(conn) == schema.HEAD:  # another process migrated while we waited
                return
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    # -- pipeline runs ------------------------------------------------------------

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

        self._retry(write)

    def update_run(self, run_id: str, **fields: Any) -> None:
        unknown = set(fields) - _RUN_FIELDS
        if unknown:
            raise ValueError(f"unknown pipeline run fields: {sorted(unknown)}")
        table = schema.pipeline_runs
        self._retry(lambda c: c.execute(table.update().where(table.c.id == run_id).values(**fields)))

    def get_run(self, run_id: str) -> PipelineRun:
        """A run by id, or by a unique prefix of its id (as ``rung runs`` shows it)."""
        table = schema.pipeline_runs
        with self.engine.connect() as conn:
            rows = conn.execute(table.select().where(table.c.id.startswith(run_id, autoescape=True)).limit(2)).all()
        if not rows:
            raise RunNotFound(f"no pipeline run '{run_id}'; list them with `rung runs`")
        if len(rows) > 1:
            raise RunNotFound(f"'{run_id}' matches several runs; give more characters of the id")
        return self._run(rows[0])

    def list_runs(self, *, project: str | None = None, limit: int = 50) -> list[PipelineRun]:
        table = schema.pipeline_runs
        query = table.select().order_by(table.c.started_at.desc()).limit(limit)
        if project:
            query = query.where(table.c.project == project)
        with self.engine.connect() as conn:
            return [self._run(row) for row in conn.execute(query)]

    @staticmethod
    def _run(row: Any) -> PipelineRun:
        data = dict(row._mapping)
        data["started_at"] = _utc(data["started_at"])
        data["finished_at"] = _utc(data["finished_at"])
        return PipelineRun(**data)

    # -- steps --------------------------------------------------------------------

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

        self._retry(write)

    def steps(self, run_id: str) -> list[StepRun]:
        table = schema.step_runs
        with self.engine.connect() as conn:
            rows = conn.execute(table.select().where(table.c.run_id == run_id).order_by(table.c.id)).all()
        out = []
        for row in rows:
            data = {k: v for k, v in row._mapping.items() if k != "id"}
            data["started_at"] = _utc(data["started_at"])
            data["finished_at"] = _utc(data["finished_at"])
            out.append(StepRun(**data))
        return out

    # -- step cache -----------------------------------------------------------------

    def cache_get(self, key: str) -> dict[str, str] | None:
        table = schema.cache_entries
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(table.c.outputs).where(table.c.key == key)).scalar()
        return dict(value) if value is not None else None

    def cache_put(self, key: str, step: str, outputs: dict[str, str], run_id: str, now: datetime) -> None:
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

        self._retry(write)

    # -- model versions -----------------------------------------------------------------

    def add_model_version(self, record: ModelVersionRecord) -> None:
        values = {k: getattr(record, k) for k in record.__dataclass_fields__}
        self._retry(lambda c: c.execute(schema.model_versions.insert().values(**values)))

    def get_model_version(self, name: str, version: int) -> ModelVersionRecord | None:
        table = schema.model_versions
        with self.engine.connect() as conn:
            row = conn.execute(table.select().where(table.c.name == name, table.c.version == version)).first()
        return self._model_version(row) if row else None

    def list_model_versions(self, name: str | None = None) -> list[ModelVersionRecord]:
        table = schema.model_versions
        query = table.select().order_by(table.c.name, table.c.version.desc())
        if name:
            query = query.where(table.c.name == name)
        with self.engine.connect() as conn:
            return [self._model_version(row) for row in conn.execute(query)]

    @staticmethod
    def _model_version(row: Any) -> ModelVersionRecord:
        data = dict(row._mapping)
        data["created_at"] = _utc(data["created_at"])
        return ModelVersionRecord(**data)

    # -- events (the audit trail) ------------------------------------------------------------

    def append_event(self, kind: str, *, actor: str, subject: str, data: dict[str, Any], time: datetime,
                     chain: str | None = None) -> None:
        values = {"kind": kind, "actor": actor, "subject": subject, "data": data, "time": time, "chain": chain}
        self._retry(lambda c: c.execute(schema.events.insert().values(**values)))

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
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Event(**(dict(r._mapping) | {"time": _utc(r.time)})) for r in reversed(rows)]

    # -- routing tables -------------------------------------------------------------------

    def route(self, model: str) -> RouteRecord | None:
        table = schema.routes
        with self.engine.connect() as conn:
            row = conn.execute(table.select().where(table.c.model == model)).first()
        return self._route(row) if row else None

    def routes(self) -> list[RouteRecord]:
        table = schema.routes
        with self.engine.connect() as conn:
            return [self._route(row) for row in conn.execute(table.select().order_by(table.c.model))]

    def route_revisions(self) -> dict[str, int]:
        """``{model: revision}``: what a gateway polls to notice a changed table."""
        table = schema.routes
        with self.engine.connect() as conn:
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
            lease = self._check_fence(conn, fence)
            # FOR UPDATE serialises writers on PostgreSQL; SQLite's BEGIN IMMEDIATE already does.
            current = conn.execute(sa.select(table.c.revision).where(table.c.model == model).with_for_update()).scalar()
            if expected_revision is not None and (current or 0) != expected_revision:
                raise StaleRoute(f"the routing table of {model} changed meanwhile (revision {current}); read it again")
            values = {
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
                self._insert_event(conn, event(record), lease)
            return record

        try:
            return self._retry(write)
        except IntegrityError:  # another first write of this table committed in between
            try:
                return self._retry(write)
            except IntegrityError as exc:
                raise StoreError(f"the routing table of {model} could not be written: {exc.orig}") from exc

    @staticmethod
    def _route(row: Any) -> RouteRecord:
        data = dict(row._mapping)
        data["updated_at"] = _utc(data["updated_at"])
        return RouteRecord(**data)

    # -- API tokens -----------------------------------------------------------------------------

    def add_token(self, record: TokenRecord) -> None:
        values = {k: getattr(record, k) for k in record.__dataclass_fields__}
        self._retry(lambda c: c.execute(schema.api_tokens.insert().values(**values)))

    def token_by_hash(self, sha256: str) -> TokenRecord | None:
        table = schema.api_tokens
        with self.engine.connect() as conn:
            row = conn.execute(table.select().where(table.c.sha256 == sha256)).first()
        return self._token(row) if row else None

    def tokens(self) -> list[TokenRecord]:
        table = schema.api_tokens
        with self.engine.connect() as conn:
            return [self._token(row) for row in conn.execute(table.select().order_by(table.c.created_at))]

    def revoke_token(self, token_id: str, time: datetime) -> bool:
        table = schema.api_tokens
        query = table.update().where(table.c.id == token_id, table.c.revoked_at.is_(None)).values(revoked_at=time)
        return bool(self._retry(lambda c: c.execute(query).rowcount))

    @staticmethod
    def _token(row: Any) -> TokenRecord:
        data = dict(row._mapping)
        data["created_at"] = _utc(data["created_at"])
        data["revoked_at"] = _utc(data["revoked_at"])
        return TokenRecord(**data)

    # -- deployments (rollouts) ----------------------------------------------------------------

    def create_deployment(self, record: Deployment, *, event: dict[str, Any], superseded_event: dict[str, Any] | None = None) -> list[Deployment]:
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
                old = self._deployment(row)
                conn.execute(table.update().where(table.c.id == old.id).values(
                    state="superseded", updated_at=record.created_at, revision=old.revision + 1))
                ended.append(old)
                if superseded_event is not None:
                    data = superseded_event["data"] | {"deployment": old.id, "version": old.version, "from": old.state,
                                                       "strategy": old.strategy, "by": record.id}
                    self._insert_event(conn, superseded_event | {"data": data, "subject": record.model})
            conn.execute(table.insert().values(**_fields(record)))
            self._insert_event(conn, event)
            return ended

        try:
            return self._retry(write)
        except IntegrityError:
            # Another deploy of this model committed in between (the one-active-rollout index
            # refused ours): run again, superseding it.
            return self._retry(write)

    def transition(self, deployment_id: str, expected_revision: int, changes: dict[str, Any],
                   event: dict[str, Any] | None, *, fence: Fence | None = None) -> Deployment:
        """Move a rollout (compare-and-set on its revision) and record why, in one transaction.

        With ``fence``, :class:`~rung.errors.LeaseLost` refuses the move of a
        lease holder that no longer holds it, checked in this transaction.
        """
        table = schema.deployments

        def write(conn: Connection) -> Deployment:
            lease = self._check_fence(conn, fence)
            row = conn.execute(table.select().where(table.c.id == deployment_id).with_for_update()).first()
            if row is None or row.revision != expected_revision:
                raise StaleDeployment(f"rollout {deployment_id} changed meanwhile; read it again")
            values = changes | {"revision": expected_revision + 1}
            conn.execute(table.update().where(table.c.id == deployment_id).values(**values))
            if event is not None:
                self._insert_event(conn, event, lease)
            return dataclasses.replace(self._deployment(row), **values)

        return self._retry(write)

    def deployment(self, deployment_id: str) -> Deployment | None:
        table = schema.deployments
        with self.engine.connect() as conn:
            row = conn.execute(table.select().where(table.c.id == deployment_id)).first()
        return self._deployment(row) if row else None

    def deployments(self, model: str | None = None, *, active: bool = False, limit: int = 100) -> list[Deployment]:
        """Newest first."""
        table = schema.deployments
        query = table.select().order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit)
        if model:
            query = query.where(table.c.model == model)
        if active:
            query = query.where(table.c.state.in_(ACTIVE_STATES))
        with self.engine.connect() as conn:
            return [self._deployment(row) for row in conn.execute(query)]

    @staticmethod
    def _deployment(row: Any) -> Deployment:
        data = dict(row._mapping)
        for key in ("step_started_at", "created_at", "updated_at"):
            data[key] = _utc(data[key])
        return Deployment(**data)

    @staticmethod
    def _insert_event(conn: Connection, event: dict[str, Any], lease: dict[str, str] | None = None) -> None:
        """One event; a write made under a lease names it (holder, expiry), as the same transaction read it."""
        data = event["data"] | {"lease": lease} if lease is not None else event["data"]
        conn.execute(schema.events.insert().values(
            kind=event["kind"], actor=event["actor"], subject=event["subject"], data=data, time=event["time"],
            chain=event.get("chain")))

    # -- feedback -------------------------------------------------------------------------------

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
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
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

        return self._retry(write)

    def feedback_values(self, ids: list[str]) -> dict[str, float]:
        """``{feedback id: value}`` for those of ``ids`` that have feedback (what readers of the log join)."""
        f = schema.feedback
        found: dict[str, float] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 1000):
                chunk = ids[start:start + 1000]
                found.update(conn.execute(sa.select(f.c.request_id, f.c.value).where(f.c.request_id.in_(chunk))).all())
        return found

    def feedback_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(schema.feedback)).scalar() or 0)

    # -- leases ---------------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, *, now: datetime, ttl_s: float) -> bool:
        """Take or renew ``name`` for ``ttl_s`` if it is free, expired or already ours."""
        from datetime import timedelta

        table = schema.leases
        until = now + timedelta(seconds=ttl_s)

        def write(conn: Connection) -> bool:
            row = conn.execute(table.select().where(table.c.name == name).with_for_update()).first()
            if row is None:
                conn.execute(table.insert().values(name=name, holder=holder, expires_at=until))
                return True
            if row.holder == holder or _utc(row.expires_at) <= now:
                conn.execute(table.update().where(table.c.name == name).values(holder=holder, expires_at=until))
                return True
            return False

        try:
            return self._retry(write)
        except IntegrityError:  # two first-timers raced to insert: the other one won
            return False

    def renew_lease(self, name: str, holder: str, *, now: datetime, ttl_s: float) -> bool:
        """Extend ``holder``'s lease by ``ttl_s`` from ``now``, only while it is still theirs and unexpired.

        Unlike :meth:`acquire_lease` this never starts a new term: a holder
        whose lease ran out must stop its pass and start again.
        """
        from datetime import timedelta

        table = schema.leases
        until = now + timedelta(seconds=ttl_s)

        def write(conn: Connection) -> bool:
            row = conn.execute(table.select().where(table.c.name == name).with_for_update()).first()
            if row is None or row.holder != holder or _utc(row.expires_at) <= now:
                return False
            conn.execute(table.update().where(table.c.name == name).values(expires_at=until))
            return True

        return self._retry(write)

    def _check_fence(self, conn: Connection, fence: Fence | None) -> dict[str, str] | None:
        """The lease a fenced write is made under, or :class:`~rung.errors.LeaseLost`; None for an unfenced write.

        The lease row stays locked (FOR SHARE on PostgreSQL; SQLite's write
        lock covers the whole transaction) until the write commits, so no
        one can take the lease over between this check and the commit.
        """
        if fence is None:
            return None
        table = schema.leases
        row = conn.execute(table.select().where(table.c.name == fence.lease).with_for_update(read=True)).first()
        expires = _utc(row.expires_at) if row is not None else None
        if row is None or row.holder != fence.holder or expires is None or expires <= fence.now:
            held = f"held by {row.holder} until {expires.isoformat()}" if row is not None and expires is not None else "free"
            raise LeaseLost(f"{fence.holder} no longer holds the {fence.lease} lease ({held}) at {fence.now.isoformat()}; "
                            "its write was refused and changed nothing")
        return {"holder": row.holder, "expires_at": expires.isoformat()}

    def release_lease(self, name: str, holder: str) -> None:
        table = schema.leases
        self._retry(lambda c: c.execute(table.delete().where(table.c.name == name, table.c.holder == holder)))


    # -- monitoring windows, loop state, retrainings ----------------------------------------

    def save_window(self, window: MonitorWindow) -> None:
        """Record a closed window; checking the same window again replaces it (idempotent)."""
        t = schema.monitor_windows
        values = _fields(window)
        values.pop("id", None)

        def write(conn: Connection) -> None:
            conn.execute(t.delete().where(t.c.model == window.model, t.c.version == window.version,
                                          t.c.start == window.start))
            conn.execute(t.insert().values(**values))
        self._retry(write)

    def windows(self, model: str, *, version: int | None = None, since: datetime | None = None,
                limit: int = 1000) -> list[MonitorWindow]:
        """Closed windows of ``model`` (oldest first), the newest ``limit``."""
        t = schema.monitor_windows
        query = t.select().where(t.c.model == model).order_by(t.c.end.desc(), t.c.version.desc()).limit(limit)
        if version is not None:
            query = query.where(t.c.version == version)
        if since is not None:
            query = query.where(t.c.end > since)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [MonitorWindow(**(dict(r._mapping) | {"start": _utc(r.start), "end": _utc(r.end)})) for r in reversed(rows)]

    def state(self, name: str) -> dict[str, Any]:
        """A piece of the loop's remembered state ({} when none)."""
        t = schema.loop_state
        with self.engine.connect() as conn:
            row = conn.execute(t.select().where(t.c.name == name)).first()
        return dict(row.data) if row is not None else {}

    def save_state(self, name: str, data: dict[str, Any], *, time: datetime) -> None:
        t = schema.loop_state

        def write(conn: Connection) -> None:
            if conn.execute(t.update().where(t.c.name == name).values(data=data, updated_at=time)).rowcount == 0:
                conn.execute(t.insert().values(name=name, data=data, updated_at=time))
        self._retry(write)

    def add_retrain(self, record: Retrain, *, event: dict[str, Any]) -> None:
        """Start a retraining and write its first event in the same transaction."""
        def write(conn: Connection) -> None:
            conn.execute(schema.retrains.insert().values(**_fields(record)))
            self._insert_event(conn, event)
        self._retry(write)

    def update_retrain(self, retrain_id: str, changes: dict[str, Any], *, event: dict[str, Any] | None = None) -> None:
        def write(conn: Connection) -> None:
            conn.execute(schema.retrains.update().where(schema.retrains.c.id == retrain_id).values(**changes))
            if event is not None:
                self._insert_event(conn, event)
        self._retry(write)

    def retrains(self, model: str | None = None, *, limit: int = 100) -> list[Retrain]:
        """Retrainings, newest first."""
        t = schema.retrains
        query = t.select().order_by(t.c.started_at.desc()).limit(limit)
        if model is not None:
            query = query.where(t.c.model == model)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Retrain(**(dict(r._mapping) | {"started_at": _utc(r.started_at), "finished_at": _utc(r.finished_at)}))
                for r in rows]

    # -- assessments ----------------------------------------------------------------------------

    def add_assessment(self, *, time: datetime, target: str, mode: str, levels: dict[str, Any],
                       result: dict[str, Any]) -> int:
        values = {"time": time, "target": target, "mode": mode, "levels": levels, "result": result}
        return int(self._retry(lambda c: c.execute(schema.assessments.insert().values(**values)).inserted_primary_key[0]))

    def assessments(self, target: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
        """Stored assessments (oldest first), the newest ``limit``; ``result`` is the whole JSON document."""
        t = schema.assessments
        query = t.select().order_by(t.c.time.desc(), t.c.id.desc()).limit(limit)
        if target is not None:
            query = query.where(t.c.target == target)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [dict(r._mapping) | {"time": _utc(r.time)} for r in reversed(rows)]


def _fields(record: Any) -> dict[str, Any]:
    return {k: getattr(record, k) for k in record.__dataclass_fields__}
