"""The guard against retraining storms: one retraining at a time, a cooldown, a daily cap.

Triggers say a retraining is wanted; the guard says whether one may start now,
from the history of retrainings. A failed retraining counts like any other
start, because a retraining that keeps failing is exactly the storm to stop.
A retraining with no end after ``stale_after_s`` is taken for dead (its process
was killed before it could record the end), so it cannot block the next one
forever. A manual retraining (``rung retrain --reason``) skips the cooldown and
the daily cap, never the one-at-a-time rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from rung.clock import utc
from rung.config.durations import format_duration
from rung.config.triggers import TriggerSettings

__all__ = ["Guard", "RetrainLike", "NOT_STARTED", "FINISHED"]

NOT_STARTED = frozenset({"refused", "skipped"})  # recorded, but no retraining ran: they count for nothing
FINISHED = frozenset({"succeeded", "deployed", "rejected", "failed", "cancelled", "canceled", "error"})  # even with no finished_at


class RetrainLike(Protocol):
    """A retraining as the store records it (a mapping with these keys does too)."""

    @property
    def started_at(self) -> datetime: ...

    @property
    def finished_at(self) -> datetime | None: ...

    @property
    def status(self) -> str: ...


@dataclass(frozen=True)
class Guard:
    cooldown_s: float = 6 * 3600.0  # after a start, the next may start this much later
    max_per_day: int | None = 4  # starts in any 24 h; None: no cap
    stale_after_s: float = 6 * 3600.0  # unfinished for longer than this: dead

    @classmethod
    def from_settings(cls, settings: TriggerSettings) -> Guard:
        """The guard the ``triggers:`` section asks for (cooldown, max_per_day, stale_after)."""
        return cls(cooldown_s=settings.cooldown, max_per_day=settings.max_per_day, stale_after_s=settings.stale_after)

    def __post_init__(self) -> None:
        if self.cooldown_s < 0 or self.stale_after_s <= 0 or (self.max_per_day is not None and self.max_per_day < 1):
            raise ValueError(f"invalid guard: {self}")

    def allow(self, history: Sequence[RetrainLike | Mapping[str, Any]], now: datetime, *, manual: bool = False) -> tuple[bool, str]:
        """Whether a retraining may start at ``now``, and why (a refusal says until when)."""
        now = utc(now)
        starts = sorted(
            (
                (utc(_get(r, "started_at")), _get(r, "finished_at"), str(_get(r, "status") or ""))
                for r in history
                if _get(r, "started_at") is not None and str(_get(r, "status") or "") not in NOT_STARTED
            ),
            key=lambda start: start[0],
        )
        note = ""
        for started, finished, status in reversed(starts):
            if finished is not None or status in FINISHED:
                continue
            dead_at = started + timedelta(seconds=self.stale_after_s)
            if now < dead_at:
                return False, (
                    f"in flight: a retraining started {_when(started)} has not finished; "
                    f"wait for it (with no end it counts as dead at {_when(dead_at)})"
                )
            note = f"; the retraining started {_when(started)} never finished and counts as dead (over {format_duration(self.stale_after_s)})"
            break
        if manual:
            return True, "allowed: manual retraining (cooldown and max_per_day do not apply)" + note
        if starts and self.cooldown_s > 0:
            last = starts[-1][0]
            until = last + timedelta(seconds=self.cooldown_s)
            if now < until:
                return False, f"cooldown: the last retraining started {_when(last)}; the next may start at {_when(until)} (cooldown {format_duration(self.cooldown_s)})"
        if self.max_per_day is not None:
            day = [s for s, _, _ in starts if s > now - timedelta(days=1)]
            if len(day) >= self.max_per_day:
                until = day[len(day) - self.max_per_day] + timedelta(days=1)
                return False, (
                    f"max_per_day: {len(day)} retrainings started in the last 24 h (limit {self.max_per_day}); "
                    f"the next may start at {_when(until)}"
                )
        return True, "allowed" + note


def _get(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)




def _when(when: datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M} UTC"
