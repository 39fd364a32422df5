"""The ``triggers:`` section of ``rung.yaml``: when to retrain, and how often at most.

:mod:`rung.triggers.decision` decides which triggers fire on a tick and
:class:`rung.triggers.guards.Guard` (``Guard.from_settings``) applies the
cooldown and the daily cap; this module only says what a valid section is,
cron expressions included.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from rung.config.durations import Duration
from rung.config.rules import MetricRule
from rung.config.section import Section

__all__ = ["TriggerSettings", "cron_problem"]

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


class TriggerSettings(Section):
    """When to retrain, and the guard against retraining too often. Everything is off by default."""

    schedule: str | None = None  # cron, UTC: "0 3 * * 1"
    new_data: bool = False  # the data source changed: new files, more rows, other contents
    drift: MetricRule | None = None  # {metric: drift.share, condition: "> 0.3", for: 2}
    performance: MetricRule | None = None  # {metric: performance.accuracy, condition: "< 0.8", for: 1}
    cooldown: Duration = Field(default=6 * 3600.0)  # "6h", "30m", "1d" or seconds
    max_per_day: int | None = Field(default=4, ge=1)  # None: no cap
    stale_after: Duration = Field(default=6 * 3600.0)  # a retraining unfinished this long is dead

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, cron: str | None) -> str | None:
        problem = None if cron is None else cron_problem(cron)
        if problem is not None:
            raise ValueError(problem)
        return cron

    @field_validator("stale_after")
    @classmethod
    def _stale_after(cls, seconds: float) -> float:
        if seconds <= 0:
            raise ValueError("must be more than 0 seconds, e.g. 6h")
        return seconds

    @property
    def enabled(self) -> bool:
        return bool(self.schedule or self.new_data or self.drift or self.performance)
