"""Bring a store's schema to :data:`rung.store.schema.HEAD` when it is opened, once, whoever opens it first.

Migrations are serialised between processes (a file lock for SQLite, an
advisory lock for PostgreSQL), so eight ``rung run`` processes started at
once on a new project all succeed and only one of them migrates.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from rung.store import schema

__all__ = ["migrate"]

ADVISORY_LOCK = 72127165  # PostgreSQL's session lock around migrations; any constant all rung processes share


def migrate(engine: Engine, *, lock_dir: Path | None = None) -> None:
    """Upgrade to HEAD unless already there; raises SQLAlchemy's or the OS's errors for the caller to word."""
    with engine.connect() as conn:
        current = _revision(conn)
    if current == schema.HEAD:
        return
    with _migration_lock(engine, lock_dir):
        _upgrade(engine)


def _revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


@contextmanager
def _migration_lock(engine: Engine, lock_dir: Path | None) -> Iterator[None]:
    dialect = engine.dialect.name
    if dialect == "sqlite":
        db = engine.url.database or ""
        if lock_dir is None:
            lock_dir = Path(db).parent if db and db != ":memory:" else Path(tempfile.gettempdir())
        lock_path = lock_dir / ".rung-migrate.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif dialect == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({ADVISORY_LOCK})")
            try:
                yield
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({ADVISORY_LOCK})")
                conn.commit()
    else:
        yield


def _upgrade(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        if _revision(conn) == schema.HEAD:  # another process migrated while we waited
            return
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
