"""Alert rules on monitored metrics, judged window by window: which notices a window causes.

A monitoring loop computes metrics for each subject (a model version
``"churn:3"`` or an endpoint ``"churn"``) once per window and hands them to an
:class:`AlertBook`, which decides; :func:`rung.monitor.notify.deliver` then
sends. Deciding is pure (no I/O, no clock: the window's time is passed in) and
its whole memory is a JSON-safe dict (:meth:`AlertBook.state`), so the loop
keeps it in the metadata store and a restart neither repeats a notice nor
forgets a streak. Per rule, subject and metric:

- the rule *fires* once its condition held in ``for`` consecutive windows in
  which the metric was measured;
- a window where the metric is absent (or NaN) neither counts nor resets the
  streak: live accuracy, say, is missing whenever too few labels arrived, and a
  problem measured only every other window must still fire;
- while firing there is no further notice, except a reminder every ``repeat_s``
  if set;
- the first measured window where the condition no longer holds sends one
  "resolved" notice and clears the streak.

The rules themselves are settings (:mod:`rung.config.alerts`).
:class:`RuleTracker` is shared with the retraining triggers
(:mod:`rung.triggers.decision`), which use the same rule shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from rung.clock import utc
from rung.config.alerts import AlertRule, AlertSettings, Severity
from rung.config.rules import MetricRule

__all__ = ["Transition", "RuleTracker", "Notice", "AlertBook"]

Transition = Literal["fired", "reminded", "resolved"]


class RuleTracker:
    """Consecutive-window streaks of one rule, per key, and whether each key is firing.

    Call :meth:`update` once per window in which the key's metric was
    measured. Only keys with a streak are kept, so the state stays small while
    subjects come and go. The state is JSON-safe.
    """

    def __init__(self, windows: int, *, repeat_s: float | None = None, state: Mapping[str, Any] | None = None) -> None:
        if windows < 1:
            raise ValueError(f"windows must be >= 1, got {windows}")
        self.windows = windows
        self.repeat_s = repeat_s
        self._entries: dict[str, dict[str, Any]] = {
            str(k): dict(v) for k, v in (state or {}).items()
            if isinstance(v, Mapping) and isinstance(v.get("streak"), int) and isinstance(v.get("firing"), bool)
            and (not v["firing"] or isinstance(v.get("notified"), str))
        }  # fmt: skip

    def update(self, key: str, holds: bool, at: datetime, value: float | None = None) -> Transition | None:
        """Record one window; the transition it causes, if any."""
        entry = self._entries.get(key)
        if not holds:
            if entry is None:
                return None
            del self._entries[key]
            return "resolved" if entry["firing"] else None
        if entry is None:
            entry = self._entries[key] = {"streak": 0, "firing": False, "since": _iso(at), "notified": None}
        entry["streak"] += 1
        entry["value"] = value
        if not entry["firing"]:
            if entry["streak"] < self.windows:
                return None
            entry["firing"], entry["notified"] = True, _iso(at)
            return "fired"
        if self.repeat_s is not None and utc(at) - _parse(entry["notified"]) >= timedelta(seconds=self.repeat_s):
            entry["notified"] = _iso(at)
            return "reminded"
        return None

    def streak(self, key: str) -> int:
        return int(self._entries.get(key, {}).get("streak", 0))

    def firing(self, key: str) -> bool:
        return bool(self._entries.get(key, {}).get("firing", False))

    def firing_keys(self) -> list[str]:
        return sorted(k for k, e in self._entries.items() if e["firing"])

    def entry(self, key: str) -> dict[str, Any] | None:
        """A copy of what is known of ``key``: streak, firing, since, notified, value."""
        found = self._entries.get(key)
        return dict(found) if found is not None else None

    def keep(self, predicate: Callable[[str], bool]) -> None:
        """Forget every key ``predicate`` rejects (a rule's metric changed, a subject retired)."""
        self._entries = {k: e for k, e in self._entries.items() if predicate(k)}

    def reset(self) -> None:
        self._entries.clear()

    def state(self) -> dict[str, Any]:
        return {k: dict(e) for k, e in self._entries.items()}


@dataclass(frozen=True)
class Notice:
    """One alert event: a rule started firing, is still firing (a reminder), or resolved."""

    rule: str
    subject: str
    metric: str
    value: float
    condition: str
    severity: Severity
    status: Literal["firing", "resolved"]
    at: datetime
    message: str  # one line a person can act on
    windows: int = 1
    reminder: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": _iso(self.at)}


class AlertBook:
    """Judges every alert rule on each window of each subject; its state resumes after a restart.

    >>> book = AlertBook(settings, state=store.load("alerts"))   # doctest: +SKIP
    >>> for notice in book.observe("churn:3", {"drift.share": 0.45}, at=clock.now()):
    ...     deliver(notice, settings.sinks_for(notice.rule))
    >>> store.save("alerts", book.state())
    """

    def __init__(self, settings: AlertSettings, state: Mapping[str, Any] | None = None) -> None:
        self._rules = list(settings.rules)
        saved = (state or {}).get("rules", {}) if isinstance(state, Mapping) else {}
        self._trackers = {}
        for rule in self._rules:
            tracker = RuleTracker(rule.windows, repeat_s=rule.repeat_s, state=saved.get(rule.name))
            tracker.keep(_covered_by(rule))
            self._trackers[rule.name] = tracker

    def observe(self, subject: str, metrics: Mapping[str, float], at: datetime) -> list[Notice]:
        """Judge one window of ``subject``; the notices to deliver (often none)."""
        notices = []
        for rule in self._rules:
            tracker, predicate = self._trackers[rule.name], rule.predicate
            for metric, value in sorted(rule.measured(metrics).items()):
                transition = tracker.update(_key(subject, metric), predicate.holds(value), at, value)
                if transition is not None:
                    notices.append(_notice(rule, subject, metric, value, transition, at))
        return notices

    def forget(self, subject: str) -> None:
        """Drop all state of ``subject`` (a retired model version), silently: no "resolved" notice."""
        for tracker in self._trackers.values():
            tracker.keep(lambda key: _split(key)[0] != subject)

    def firing(self) -> list[tuple[str, str, str]]:
        """(rule, subject, metric) of every alert firing now, for status pages."""
        return [(name, *_split(key)) for name, t in self._trackers.items() for key in t.firing_keys()]

    def state(self) -> dict[str, Any]:
        return {"version": 1, "rules": {name: t.state() for name, t in self._trackers.items()}}


def _covered_by(rule: MetricRule) -> Callable[[str], bool]:
    """Whether a saved (subject, metric) key still belongs to ``rule``."""
    return lambda key: _valid_key(key) and rule.covers(_split(key)[1])


def _notice(rule: AlertRule, subject: str, metric: str, value: float, transition: Transition, at: datetime) -> Notice:
    shown = f"{subject} {metric} = {value:.4g}"
    status: Literal["firing", "resolved"]
    if transition == "resolved":
        status, message = "resolved", f"resolved: {shown}, no longer {rule.condition} (rule {rule.name})"
    else:
        status = "firing"
        windows = "1 window" if rule.windows == 1 else f"{rule.windows} windows"
        still = "still firing: " if transition == "reminded" else ""
        message = f"{still}{shown} {rule.condition} for {windows} ({rule.severity}, rule {rule.name})"
    return Notice(
        rule.name, subject, metric, value, rule.condition, rule.severity, status, utc(at), message,
        rule.windows, transition == "reminded",
    )  # fmt: skip


def _key(subject: str, metric: str) -> str:
    return json.dumps([subject, metric])


def _split(key: str) -> tuple[str, str]:
    subject, metric = json.loads(key)
    return subject, metric


def _valid_key(key: str) -> bool:
    try:
        loaded = json.loads(key)
    except ValueError:
        return False
    return isinstance(loaded, list) and len(loaded) == 2 and all(isinstance(p, str) for p in loaded)


def _iso(when: datetime) -> str:
    return utc(when).isoformat()


def _parse(text: str) -> datetime:
    return utc(datetime.fromisoformat(text))
