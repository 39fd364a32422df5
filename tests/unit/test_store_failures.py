"""The store decides what a database error means by the driver's codes, and retries only what may pass."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import psycopg.errors
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from rung.errors import StoreConflict, StoreError, StoreUnavailable
from rung.store import MetadataStore
from rung.store.failures import is_transient, is_unavailable, store_error


def _sqlite_error(message: str, code: int, name: str) -> OperationalError:
    orig = sqlite3.OperationalError(message)
    orig.sqlite_errorcode = code
    orig.sqlite_errorname = name
    return OperationalError("SELECT 1", {}, orig)


def _real_sqlite_error(tmp_path: Path, statement: str, *, hold_lock: bool = False) -> sa.exc.DBAPIError:
    """The error SQLite itself raises for ``statement`` (while another connection holds the write lock)."""
    path = tmp_path / "raw.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)")
        holder.execute("INSERT OR IGNORE INTO t VALUES ('a')")
        if hold_lock:
            holder.execute("BEGIN IMMEDIATE")
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
        except sa.exc.DBAPIError as exc:
            return exc
        finally:
            engine.dispose()
    raise AssertionError(f"{statement} did not fail")


def test_a_held_sqlite_write_lock_is_transient_by_its_code(tmp_path: Path) -> None:
    locked = _real_sqlite_error(tmp_path, "INSERT INTO t VALUES ('b')", hold_lock=True)
    assert locked.orig.sqlite_errorname == "SQLITE_BUSY"  # type: ignore[union-attr]
    assert is_transient(locked) and not is_unavailable(locked)


def test_a_duplicate_key_is_a_conflict_and_never_retried(tmp_path: Path) -> None:
    duplicate = _real_sqlite_error(tmp_path, "INSERT INTO t VALUES ('a')")
    assert isinstance(duplicate, IntegrityError) and not is_transient(duplicate)
    assert isinstance(store_error(duplicate, "sqlite:///x.db", "add a thing"), StoreConflict)


def test_the_words_of_a_message_decide_nothing() -> None:
    assert not is_transient(_sqlite_error("no such table: locked", 1, "SQLITE_ERROR"))
    assert is_transient(_sqlite_error("busy, in other words", 5, "SQLITE_BUSY"))
    assert is_transient(_sqlite_error("database table is locked", 262, "SQLITE_LOCKED_SHAREDCACHE"))
    assert is_unavailable(_sqlite_error("unable to open database file", 14, "SQLITE_CANTOPEN"))


def test_postgres_errors_are_told_apart_by_sqlstate() -> None:
    def wrapped(orig: Exception) -> OperationalError:
        return OperationalError("SELECT 1", {}, orig)

    assert is_transient(wrapped(psycopg.errors.SerializationFailure("could not serialize access")))
    assert not is_transient(wrapped(psycopg.errors.LockNotAvailable("database is locked, says the message")))
    assert is_unavailable(wrapped(psycopg.errors.AdminShutdown("terminating connection")))
    assert is_unavailable(wrapped(psycopg.OperationalError("connection failed: Connection refused")))  # no SQLSTATE
    assert not is_unavailable(wrapped(psycopg.errors.SerializationFailure("could not serialize access")))


def test_a_write_that_meets_a_lock_runs_again_with_the_same_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path}/rung.db")
    sleeps: list[float] = []
    monkeypatch.setattr("rung.store.engine.time.sleep", sleeps.append)
    calls = []

    def locked_twice(_conn: object) -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise _sqlite_error("database is locked", 5, "SQLITE_BUSY")
        return "written"

    try:
        assert store._write("write a thing", locked_twice) == "written"
        assert sleeps == [0.05, 0.1]

        def always_locked(_conn: object) -> None:
            raise _sqlite_error("database is locked", 5, "SQLITE_BUSY")

        sleeps.clear()
        with pytest.raises(StoreError, match=r"stayed locked by other writers, so rung could not write a thing") as raised:
            store._write("write a thing", always_locked)
        assert sleeps == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]  # eight attempts
        assert type(raised.value) is StoreError

        def broken(_conn: object) -> None:
            raise _sqlite_error("disk I/O error", 10, "SQLITE_IOERR")

        sleeps.clear()
        with pytest.raises(StoreUnavailable):
            store._write("write a thing", broken)
        assert sleeps == []  # not transient: no retry
    finally:
        store.close()
