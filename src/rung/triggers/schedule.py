"""Cron schedules for retraining, read in UTC.

A schedule is asked "is a run due?" with the time of the last scheduled run
and the clock's now, rather than sleeping until the next slot: a process that
was down over several slots then runs once when it comes back, not once per
missed slot, and a restart never runs a slot twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from rung.clock import utc
from rung.config.triggers import cron_problem

__all__ = ["Schedule"]

class Schedule:
    """A cron expression (``"0 3 * * 1"``, ``"@daily"``) in UTC; seconds fields are not accepted."""

    def __init__(self, cron: str) -> None:
        problem = cron_problem(cron)
        if problem is not None:
            raise ValueError(f"triggers.schedule: {problem}")
        fields = cron.split()
        self.cron = fields[0].lower() if len(fields) == 1 else " ".join(fields)

    def due(self, last_fired: datetime | None, now: datetime) -> datetime | None:
        """The latest scheduled time in ``(last_fired, now]``, or None when no slot passed since.

        With no ``last_fired`` nothing is due: a schedule starts counting
        from the first time it is asked (the caller records ``now`` then).
        """
        if last_fired is None:
            return None
        latest = self._previous(now)
        return latest if latest > utc(last_fired) else None

    def missed(self, last_fired: datetime, now: datetime, *, limit: int = 1000) -> int:
        """How many slots fell in ``(last_fired, now]`` (counting stops at ``limit``)."""
        from croniter import croniter

        count, it, end = 0, croniter(self.cron, utc(last_fired)), utc(now)
        while count < limit and it.get_next(datetime) <= end:
            count += 1
        return count

    def next_after(self, when: datetime) -> datetime:
        """The first scheduled time strictly after ``when``."""
        from croniter import croniter

        return croniter(self.cron, utc(when)).get_next(datetime)

    def _previous(self, now: datetime) -> datetime:
        from croniter import croniter

        # croniter's get_prev is strictly before its start: start just after now to include now.
        return croniter(self.cron, utc(now) + timedelta(microseconds=1)).get_prev(datetime)

    def __repr__(self) -> str:
        return f"Schedule({self.cron!r})"


