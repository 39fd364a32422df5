"""Cron schedules for retraining, read in UTC.

A schedule is asked "is a run due?" with the time of the last scheduled run
and the clock's now, rather than sleeping until the next slot: a process that
was down over several slots then runs once when it comes back, not once per
missed slot, and a restart never runs a slot twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

__all__ = ["Schedule", "cron_problem"]

_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_HELP = 'write five fields (minute hour day-of-month month day-of-week), e.g. "0 3 * * 1" for Mondays at 03:00 UTC'


def cron_problem(cron: object) -> str | None:
    """What is wrong with ``cron`` as a schedule, or None when it is valid."""
    from croniter import croniter

    if not isinstance(cron, str):
        return f"{cron!r} is not a cron expression; {_HELP}"
    fields = cron.split()
    if fields and fields[0].lower() in _ALIASES and len(fields) == 1:
        return None
    if len(fields) != 5:
        return f"{cron!r} has {len(fields)} fields, not 5; {_HELP}"
    if not croniter.is_valid(cron):
        return f"{cron!r} is not a valid cron expression (a field is out of range or misspelt); {_HELP}"
    return None


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
        return latest if latest > _utc(last_fired) else None

    def missed(self, last_fired: datetime, now: datetime, *, limit: int = 1000) -> int:
        """How many slots fell in ``(last_fired, now]`` (counting stops at ``limit``)."""
        from croniter import croniter

        count, it, end = 0, croniter(self.cron, _utc(last_fired)), _utc(now)
        while count < limit and it.get_next(datetime) <= end:
            count += 1
        return count

    def next_after(self, when: datetime) -> datetime:
        """The first scheduled time strictly after ``when``."""
        from croniter import croniter

        return croniter(self.cron, _utc(when)).get_next(datetime)  # type: ignore[no-any-return]

    def _previous(self, now: datetime) -> datetime:
        from croniter import croniter

        # croniter's get_prev is strictly before its start: start just after now to include now.
        return croniter(self.cron, _utc(now) + timedelta(microseconds=1)).get_prev(datetime)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Schedule({self.cron!r})"


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
