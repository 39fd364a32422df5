"""What a database error means for the store, decided by the driver's error codes, never by its wording.

Three questions matter: may the transaction simply run again (another
writer holds the lock, PostgreSQL could not serialise it), did the
database go away (its server, its file), and did a write collide with a
key. The answers come from ``sqlite3`` result codes (Python 3.11 sets
``sqlite_errorcode``) and psycopg's ``sqlstate``, so a reworded or
translated server message changes nothing. :func:`store_error` turns any
SQLAlchemy error into the :class:`~rung.errors.StoreError` a user reads.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import OperationalError as SAOperationalError

from rung.errors import StoreConflict, StoreError, StoreUnavailable

__all__ = ["is_transient", "is_unavailable", "store_error", "reason"]

# SQLite primary result codes (the low byte of an extended code).
SQLITE_PERM = 3
SQLITE_BUSY = 5  # "database is locked": another connection holds the write lock
SQLITE_LOCKED = 6  # "database table is locked": a conflict within one connection's shared cache
SQLITE_IOERR = 10
SQLITE_CANTOPEN = 14

# PostgreSQL SQLSTATEs (psycopg.errors.SerializationFailure and the connection classes).
SERIALIZATION_FAILURE = "40001"
UNAVAILABLE_STATES = ("57P01", "57P02", "57P03", "57P04", "3D000")  # shutdown, crash, starting up, dropped, no such database
CONNECTION_EXCEPTION_CLASS = "08"


def _sqlite_code(exc: SQLAlchemyError) -> int | None:
    code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _sqlstate(exc: SQLAlchemyError) -> str | None:
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return state if isinstance(state, str) else None


def _is_postgres(exc: SQLAlchemyError) -> bool:
    return type(getattr(exc, "orig", None)).__module__.startswith("psycopg")


def is_transient(exc: SQLAlchemyError) -> bool:
    """Whether running the whole transaction again may succeed: a lock held elsewhere, a serialisation failure."""
    if not isinstance(exc, DBAPIError):
        return False
    return _sqlite_code(exc) in (SQLITE_BUSY, SQLITE_LOCKED) or _sqlstate(exc) == SERIALIZATION_FAILURE


def is_unavailable(exc: SQLAlchemyError) -> bool:
    """Whether the database itself is out of reach: its file cannot be opened, its server refused or dropped us."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if _sqlite_code(exc) in (SQLITE_CANTOPEN, SQLITE_IOERR, SQLITE_PERM):
        return True
    state = _sqlstate(exc)
    if state is not None:
        return state.startswith(CONNECTION_EXCEPTION_CLASS) or state in UNAVAILABLE_STATES
    # psycopg gives no SQLSTATE when it never reached a server (refused, unknown host, wrong port).
    return isinstance(exc, SAOperationalError) and _is_postgres(exc)


def reason(exc: BaseException) -> str:
    """The driver's own words for a failure, without SQLAlchemy's statement dump."""
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip()


def store_error(exc: SQLAlchemyError, where: str, action: str) -> StoreError:
    """The error a user reads for ``exc``, raised while trying to ``action`` on the store at ``where``."""
    why = reason(exc)
    if is_unavailable(exc):
        return StoreUnavailable(
            f"the metadata store {where} is unavailable, so rung could not {action}: {why}; "
            "check that the database server is running (or the database file is reachable) and the URL "
            "(RUNG_DATABASE_URL or store.database_url)"
        )
    if isinstance(exc, IntegrityError):
        return StoreConflict(f"the metadata store {where} refused to {action}: {why}")
    if is_transient(exc):
        return StoreError(f"the metadata store {where} stayed locked by other writers, so rung could not {action}: "
                          f"{why}; try again")
    return StoreError(f"the metadata store {where} failed to {action}: {why}")
