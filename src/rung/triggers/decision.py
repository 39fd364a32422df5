"""Which retraining triggers fire on a tick, and the state that carries their memory from tick to tick.

:func:`evaluate` is pure: settings, the clock's now, the latest window's
metrics and the data fingerprint in; reasons and a new JSON-safe state out.
A trigger that fired stays *pending*, reported on every tick, until the caller
records that a retraining started (:func:`record_start`). So a trigger that
the guard refuses (cooldown, a retraining in flight) is not lost: it fires
when the guard next allows. The retraining loop::

    reasons, state = evaluate(settings.triggers, now=now, metrics=window, data=fp, state=state)
    if reasons:
        ok, why = Guard.from_settings(settings.triggers).allow(history, now)
        if ok:
            start_retraining(reasons)
            state = record_start(state, now=now, data=fp)
    save(state)

A start satisfies every pending trigger at once: it trains on the latest data,
the schedule counts from it, and drift or under-performance must show again
for ``for`` windows before they ask for another. The ``triggers:`` section
itself is :class:`rung.config.triggers.TriggerSettings`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from rung.clock import utc
from rung.config.rules import MetricRule
from rung.config.triggers import TriggerSettings
from rung.monitor.alerts import RuleTracker
from rung.triggers.newdata import DataFingerprint, changed
from rung.triggers.schedule import Schedule

__all__ = ["TriggerReason", "TriggerKind", "evaluate", "record_start"]

TriggerKind = Literal["schedule", "new_data", "drift", "performance", "manual"]


@dataclass(frozen=True)
class TriggerReason:
    """Why a retraining is wanted: the kind, one line with the numbers, and the details behind it."""

    kind: TriggerKind
    why: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "why": self.why, "details": copy.deepcopy(self.details)}

    @classmethod
    def manual(cls, why: str, by: str | None = None) -> TriggerReason:
        """``rung retrain --reason WHY``."""
        return cls("manual", why, {"by": by} if by else {})


def evaluate(
    settings: TriggerSettings,
    *,
    now: datetime,
    metrics: Mapping[str, float] | None = None,
    data: DataFingerprint | None = None,
    state: Mapping[str, Any] | None = None,
) -> tuple[list[TriggerReason], dict[str, Any]]:
    """The triggers pending at ``now`` and the new state; apply the guard, then :func:`record_start`.

    ``metrics`` is the window that closed since the last tick (the champion's
    drift and performance), or None when none did: a window must be passed
    once, or it would count twice towards ``for``. ``data`` is the source's
    fingerprint (None: not checked this tick, or a SQL source). The first tick
    only sets baselines: the schedule counts from it and the data seen then is
    taken as the data the current model was trained on.
    """
    now = utc(now)
    new: dict[str, Any] = {**copy.deepcopy(dict(state or {})), "version": 1}
    reasons = []

    if settings.schedule:
        schedule = Schedule(settings.schedule)
        if new.get("schedule_from") is None:
            new["schedule_from"] = now.isoformat()
        else:
            since = _parse(new["schedule_from"])
            due = schedule.due(since, now)
            if due is not None:
                missed = schedule.missed(since, now)
                folded = f"; {missed} slots passed, run once" if missed > 1 else ""
                why = f'scheduled run of {due:%Y-%m-%d %H:%M} UTC (cron "{schedule.cron}"){folded}'
                reasons.append(TriggerReason("schedule", why, {"cron": schedule.cron, "scheduled_for": due.isoformat(), "slots": missed}))

    if settings.new_data and data is not None:
        new["data_latest"] = data.to_dict()
        if new.get("data") is None:
            new["data"] = data.to_dict()
        else:
            what = changed(new["data"], data)
            if what is not None:
                details = {"source": data.source, "change": what, "rows": data.rows, "files": len(data.files), "hash": data.content_hash}
                reasons.append(TriggerReason("new_data", f"new data in {data.source}: {what}", details))

    rules = new.setdefault("rules", {})
    metric_rules: tuple[tuple[TriggerKind, MetricRule | None], ...] = (("drift", settings.drift), ("performance", settings.performance))
    for kind, rule in metric_rules:
        if rule is None:
            rules.pop(kind, None)
            continue
        tracker = RuleTracker(rule.windows, state=rules.get(kind))
        tracker.keep(rule.covers)  # the rule's metric may have changed since the state was saved
        if metrics is not None:
            predicate = rule.predicate
            for name, value in sorted(rule.measured(metrics).items()):
                tracker.update(name, predicate.holds(value), now, value)
        rules[kind] = tracker.state()
        firing = tracker.firing_keys()
        if firing:
            reasons.append(_rule_reason(kind, rule, tracker, firing))
    return reasons, new


def record_start(state: Mapping[str, Any] | None, *, now: datetime, data: DataFingerprint | None = None) -> dict[str, Any]:
    """The state after a retraining started at ``now`` (whatever its trigger, manual included).

    ``data`` is the fingerprint of what it trains on (default: the last one
    :func:`evaluate` saw).
    """
    new = {**copy.deepcopy(dict(state or {})), "version": 1}
    new["schedule_from"] = utc(now).isoformat()
    if data is not None:
        new["data_latest"] = data.to_dict()
    if new.get("data_latest") is not None:
        new["data"] = copy.deepcopy(new["data_latest"])
    new["rules"] = {}
    return new


def _rule_reason(kind: TriggerKind, rule: MetricRule, tracker: RuleTracker, firing: list[str]) -> TriggerReason:
    seen = {name: tracker.entry(name) or {} for name in firing}
    worst = firing[0] if len(firing) == 1 else max(firing, key=lambda n: (seen[n].get("streak", 0), n))
    entry = seen[worst]
    value = entry.get("value")
    shown = f"{value:.4g}" if isinstance(value, (int, float)) else "?"
    streak = int(entry.get("streak", 0))
    why = f"{worst} = {shown} {rule.condition} for {streak} window{'s' if streak != 1 else ''}"
    others = [n for n in firing if n != worst]
    if others:
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        why += f" (and {len(others)} more: {listed})"
    details = {
        "rule": rule.metric,
        "condition": rule.condition,
        "for": rule.windows,
        "metrics": {n: {"value": seen[n].get("value"), "windows": seen[n].get("streak"), "since": seen[n].get("since")} for n in firing},
    }
    return TriggerReason(kind, why, details)


def _parse(text: str) -> datetime:
    return utc(datetime.fromisoformat(text))
