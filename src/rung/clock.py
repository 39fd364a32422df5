"""One clock for windows, leases, grace periods and cooldowns, and one idea of UTC.

The controller reads time only through a :class:`Clock`, so tests and the
demo can run weeks of rollouts in seconds with a :class:`ManualClock`.
Every time rung stores or compares is aware UTC; :func:`utc` is the one
place that decides what a naive time (as SQLite returns them) means.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol, overload

__all__ = ["Clock", "SystemClock", "ManualClock", "SYSTEM", "utc", "utcnow"]


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock time, UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """Time that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now


SYSTEM = SystemClock()


def utcnow() -> datetime:
    """The wall clock, aware UTC: for records that say when something happened, not for decisions."""
    return datetime.now(UTC)


@overload
def utc(moment: datetime) -> datetime: ...
@overload
def utc(moment: None) -> None: ...
def utc(moment: datetime | None) -> datetime | None:
    """``moment`` as aware UTC; a naive time is taken to be UTC already (SQLite drops the zone)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)
