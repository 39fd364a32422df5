"""The store's plumbing on SQLAlchemy: the engine, its connections and transactions, retries, error translation.

SQLite runs in WAL mode with a busy timeout, and every write transaction
starts with ``BEGIN IMMEDIATE`` so that two writers queue on the lock
instead of failing with "database is locked" when a read turns into a
write. A short retry covers the rest. Migrations run on open (see
:mod:`rung.store.migrate`). Every read goes through :meth:`StoreBase._read`
and every write through :meth:`StoreBase._write`, the one place where a
database error becomes a :class:`~rung.errors.StoreError` naming the
database and what failed; the per-kind modules hold only their queries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from rung.errors import StoreError, StoreUnavailable
from rung.store.failures import is_transient, is_unavailable, reason, store_error
from rung.store.migrate import migrate

__all__ = ["StoreBase", "normalise_url", "values_of"]

T = TypeVar("T")

WRITE = "rung_write"  # connection flag: the transaction being begun will write
ATTEMPTS = 8  # a write whose transaction keeps meeting a lock runs this many times, ...
FIRST_DELAY_S, MAX_DELAY_S = 0.05, 1.0  # ... sleeping 0.05 s, then twice as long each time, at most 1 s


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def values_of(record: Any) -> dict[str, Any]:
    """A record dataclass as column values (its fields are named as the table's columns)."""
    return {k: getattr(record, k) for k in record.__dataclass_fields__}


def create_engine(url: str) -> Engine:
    """An engine for ``url``; on SQLite with the pragmas and ``BEGIN IMMEDIATE`` writers that concurrency needs."""
    from rung.optional import require_sql_driver

    require_sql_driver(url, purpose="a PostgreSQL metadata store")
    if not url.startswith("sqlite"):
        # Enough for a gateway's database threads (8) beside its version loads and control calls.
        return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=15)
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


class StoreBase:
    """The engine of one metadata store and the two ways in: :meth:`_read` and :meth:`_write`."""

    def __init__(self, url: str, *, lock_dir: Path | None = None) -> None:
        self.url = normalise_url(url)
        try:
            self.engine = create_engine(self.url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open the metadata store {self._safe_url()}: {exc}") from exc
        try:
            migrate(self.engine, lock_dir=lock_dir)
        except (SQLAlchemyError, OSError) as exc:
            unavailable = isinstance(exc, SQLAlchemyError) and is_unavailable(exc)
            raise (StoreUnavailable if unavailable else StoreError)(
                f"cannot open the metadata store {self._safe_url()}: {reason(exc)}; "
                "check the URL (RUNG_DATABASE_URL or store.database_url) and that the server is running"
            ) from exc

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``: the few statements that differ between them ask this."""
        return self.engine.dialect.name

    def close(self) -> None:
        """Close the pooled connections; the store opens new ones if it is used again."""
        self.engine.dispose()

    def _safe_url(self) -> str:
        try:
            return sa.make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # a URL that does not even parse is shown as given
            return self.url

    @contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        """A connection for reads; a database error in the block becomes a StoreError saying it could not ``action``."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise store_error(exc, self._safe_url(), action) from exc

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.info[WRITE] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop(WRITE, None)

    def _write(self, action: str, fn: Callable[[Connection], T]) -> T:
        """``fn`` in one write transaction, run again while the database says it may succeed later.

        Any other database error becomes a StoreError saying it could not
        ``action`` (:class:`~rung.errors.StoreConflict` for a key that
        exists, which the callers that race on purpose catch).
        """
        delay = FIRST_DELAY_S
        for attempt in range(ATTEMPTS):
            try:
                with self._tx() as conn:
                    return fn(conn)
            except SQLAlchemyError as exc:
                if not is_transient(exc) or attempt == ATTEMPTS - 1:
                    raise store_error(exc, self._safe_url(), action) from exc
                time.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
        raise AssertionError("unreachable")
