"""Alert rules on monitored metrics, judged window by window, and delivered to sinks.

A monitoring loop computes metrics for each subject (a model version
``"churn:3"`` or an endpoint ``"churn"``) once per window and hands them to an
:class:`AlertBook`, which decides; :func:`deliver` then sends. Deciding is pure
and its whole memory is a JSON-safe dict (:meth:`AlertBook.state`), so the loop
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

:class:`Condition`, :class:`MetricRule`, :class:`RuleTracker` and durations are
shared with the retraining triggers (:mod:`rung.triggers`), which use the same
rule shape. Delivery never raises into the caller's loop: a sink that fails is
reported in its :class:`DeliveryResult` and logged.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Condition",
    "parse_duration",
    "format_duration",
    "Duration",
    "MetricRule",
    "AlertRule",
    "SinkSettings",
    "AlertSettings",
    "RuleTracker",
    "Notice",
    "AlertBook",
    "DeliveryResult",
    "deliver",
    "webhook_payload",
    "mask_url",
]

logger = logging.getLogger(__name__)
notices_logger = logging.getLogger("rung.alerts")  # the ``log`` sink: route it apart from rung's own logs

Severity = Literal["info", "warning", "critical"]
Transition = Literal["fired", "reminded", "resolved"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the rule vocabulary: conditions and durations ------------------------------------------

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
    "!=": lambda a, b: not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}
_CONDITION = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_CONDITION_HELP = 'write an operator (>, >=, <, <=, ==, !=) and a number, in quotes: "> 0.3"'


@dataclass(frozen=True)
class Condition:
    """A comparison of a metric with a threshold, written ``"> 0.3"`` in ``rung.yaml``.

    ``==`` and ``!=`` compare with a relative tolerance of 1e-9, because
    metrics are computed floats.
    """

    op: str
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in _OPERATORS or not math.isfinite(self.threshold):
            raise ValueError(f"{self.op} {self.threshold} is not a condition; {_CONDITION_HELP}")

    @classmethod
    def parse(cls, text: object) -> Condition:
        if not isinstance(text, str):
            # YAML reads `condition: > 0.3` unquoted as a folded string and `0.3` as a number.
            raise ValueError(f"{text!r} is not a condition; {_CONDITION_HELP}")
        match = _CONDITION.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a condition; {_CONDITION_HELP}")
        return cls(match[1], float(match[2]))

    def holds(self, value: float) -> bool:
        """Whether ``value`` satisfies the condition; never for NaN (nothing was measured)."""
        return not math.isnan(value) and _OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.op} {_exact(self.threshold)}"


_DURATION = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a number of seconds, or a number with a unit (``30m``, ``6h``, ``1d``, ``1h30m``)."""
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.fullmatch(value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(value))
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration; write seconds (3600) or a number and a unit: 30m, 6h, 1d")
    return seconds


def format_duration(seconds: float) -> str:
    """``21600`` -> ``"6h"``, ``5400`` -> ``"1h30m"``: the way ``rung.yaml`` writes durations."""
    rest, parts = round(seconds), []
    for unit in ("d", "h", "m", "s"):
        count, rest = divmod(rest, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# Seconds, written as a number or "6h" in rung.yaml.
Duration = Annotated[float, BeforeValidator(parse_duration)]


# --- settings -----------------------------------------------------------------------------------


class MetricRule(_Section):
    """A condition on one metric, or on a family (``drift.feature.*``), held ``for`` consecutive windows.

    Metric names are free-form dotted strings (``drift.share``,
    ``performance.accuracy``, ``ops.p99_ms``). A name ending in ``.*`` is a
    prefix: each metric under it (each feature) is followed on its own.
    """

    metric: str
    condition: str
    windows: int = Field(default=1, ge=1, le=10_000, alias="for")

    @field_validator("metric")
    @classmethod
    def _metric(cls, metric: str) -> str:
        if not re.fullmatch(r"[^\s*]+(?:\.\*)?", metric):
            raise ValueError(f"{metric!r} is not a metric name; write a dotted name (drift.share) or a prefix (drift.feature.*)")
        return metric

    @field_validator("condition", mode="before")
    @classmethod
    def _condition(cls, condition: object) -> str:
        return str(Condition.parse(condition))

    @property
    def predicate(self) -> Condition:
        return Condition.parse(self.condition)

    def covers(self, name: str) -> bool:
        """Whether this rule looks at the metric called ``name``."""
        if self.metric.endswith(".*"):
            prefix = self.metric[:-1]
            return name.startswith(prefix) and len(name) > len(prefix)
        return name == self.metric

    def measured(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """The metrics of one window this rule looks at that carry a number (absent and NaN left out)."""
        found = {}
        for name, value in metrics.items():
            if self.covers(name):
                number = _number(value)
                if number is not None:
                    found[name] = number
        return found


class AlertRule(MetricRule):
    """One ``alerts.rules`` entry."""

    name: str = Field(pattern=_NAME)
    severity: Severity = "warning"
    sinks: list[str] | None = None  # None: every sink
    repeat_s: Duration | None = None  # while still firing, a reminder this often

    @field_validator("repeat_s")
    @classmethod
    def _repeat(cls, repeat_s: float | None) -> float | None:
        if repeat_s is not None and repeat_s <= 0:
            raise ValueError("must be more than 0 seconds (or left out for no reminders)")
        return repeat_s


class SinkSettings(_Section):
    """Where notices go: ``webhook`` (Slack, Teams, or any JSON receiver), ``command`` or ``log``.

    A webhook URL is a secret: ``url_env`` names an environment variable that
    holds it, so ``rung.yaml`` can be committed. ``format: auto`` picks the
    body from the URL's host (Slack, Teams/Power Automate, else plain JSON).
    """

    name: str = Field(pattern=_NAME)
    kind: Literal["webhook", "command", "log"]
    url: str | None = None
    url_env: str | None = None
    format: Literal["auto", "slack", "teams", "json"] = "auto"
    command: str | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=300)
    retries: int = Field(default=2, ge=0, le=10)  # webhooks only: a command is never run twice

    @model_validator(mode="after")
    def _fits_kind(self) -> SinkSettings:
        where = f"sink '{self.name}'"
        if self.kind == "webhook":
            if (self.url is None) == (self.url_env is None):
                raise ValueError(f"{where}: a webhook needs url, or url_env naming an environment variable that holds it")
            if self.url is not None and not self.url.startswith(("https://", "http://")):
                raise ValueError(f"{where}: url must start with https:// (got {mask_url(self.url)})")
        elif self.url is not None or self.url_env is not None:
            raise ValueError(f"{where}: url is for kind webhook; remove it or set kind: webhook")
        if self.kind == "command" and not (self.command or "").strip():
            raise ValueError(f"{where}: a command sink needs command, e.g. command: \"notify-send rung\"")
        if self.kind != "command" and self.command is not None:
            raise ValueError(f"{where}: command is for kind command; remove it or set kind: command")
        if self.name == "log" and self.kind != "log":
            raise ValueError("sink name 'log' is reserved for the log sink; give this sink another name")
        return self


LOG_SINK = SinkSettings(name="log", kind="log")


class AlertSettings(_Section):
    """The ``alerts:`` section: rules and sinks. A sink named ``log`` always exists."""

    rules: list[AlertRule] = Field(default_factory=list)
    sinks: list[SinkSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> AlertSettings:
        for what, names in (("rules", [r.name for r in self.rules]), ("sinks", [s.name for s in self.sinks])):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{what}: name {twice[0]!r} is used twice; names must be unique")
        known = [s.name for s in self.all_sinks()]
        for rule in self.rules:
            for name in rule.sinks or []:
                if name not in known:
                    raise ValueError(
                        f"rules: rule '{rule.name}' sinks: unknown sink {name!r}; "
                        f"define it under alerts.sinks or use one of: {', '.join(known)}"
                    )
        return self

    def all_sinks(self) -> list[SinkSettings]:
        declared = list(self.sinks)
        return declared if any(s.name == "log" for s in declared) else [*declared, LOG_SINK]

    def sinks_for(self, rule: str) -> list[SinkSettings]:
        """The sinks a notice of rule ``rule`` goes to (all of them when the rule names none)."""
        wanted = next((r.sinks for r in self.rules if r.name == rule), None)
        return [s for s in self.all_sinks() if wanted is None or s.name in wanted]


# --- deciding -----------------------------------------------------------------------------------


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
        if self.repeat_s is not None and _utc(at) - _parse(entry["notified"]) >= timedelta(seconds=self.repeat_s):
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
        rule.name, subject, metric, value, rule.condition, rule.severity, status, _utc(at), message,
        rule.windows, transition == "reminded",
    )  # fmt: skip


# --- delivering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryResult:
    """What became of one notice at one sink; ``detail`` never holds a webhook's secret path."""

    sink: str
    kind: str
    ok: bool
    attempts: int
    detail: str


Sleep = Callable[[float], None]


def deliver(notice: Notice, sinks: Sequence[SinkSettings], *, sleep: Sleep = time.sleep) -> list[DeliveryResult]:
    """Send ``notice`` to each sink in turn; failures are returned and logged, never raised.

    Webhooks are retried ``retries`` times (0.5 s, then 1 s, ... apart) on
    connection errors, timeouts, 429 and 5xx answers; a command runs once.
    """
    results = []
    for sink in sinks:
        try:
            result = _SENDERS[sink.kind](notice, sink, sleep)
        except Exception as exc:  # a broken sink must not stop the monitoring loop
            result = DeliveryResult(sink.name, sink.kind, False, 1, _scrub(f"{type(exc).__name__}: {exc}", sink))
        if not result.ok:
            logger.warning("alert %s (%s) not delivered to sink '%s': %s", notice.rule, notice.subject, sink.name, result.detail)
        results.append(result)
    return results


def webhook_payload(notice: Notice, style: Literal["slack", "teams", "json"]) -> dict[str, Any]:
    """The JSON body a webhook receives.

    Slack takes ``text`` (with ``blocks`` for layout). Teams' Workflows
    webhooks (which replace the retired Office 365 connectors) take only an
    Adaptive Card in ``attachments``, which the older connectors accept too, so
    no single body suits both. ``json`` is ``text`` plus the whole notice.
    """
    if style == "slack":
        text = _slack_escape(notice.message)
        context = _slack_escape(f"rung · rule {notice.rule} · {notice.severity} · {_iso(notice.at)}")
        return {
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
            ],
        }
    if style == "teams":
        color = "Good" if notice.status == "resolved" else {"info": "Default", "warning": "Warning", "critical": "Attention"}[notice.severity]
        facts = [("Rule", notice.rule), ("Subject", notice.subject), ("Metric", notice.metric), ("Value", f"{notice.value:.4g}"),
                 ("Condition", notice.condition), ("Severity", notice.severity), ("At", _iso(notice.at))]  # fmt: skip
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.2",
            "body": [
                {"type": "TextBlock", "text": notice.message, "wrap": True, "weight": "Bolder", "color": color},
                {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts]},
            ],
        }
        return {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}
    return {"text": notice.message, "notice": notice.to_dict()}


def mask_url(url: str) -> str:
    """``https://hooks.slack.com/services/T0/B0/secret`` -> ``https://hooks.slack.com/***``: safe to log."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<url>"
    if not parts.scheme or not host:
        return "<url>"
    hidden = "/***" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


def _send_webhook(notice: Notice, sink: SinkSettings, sleep: Sleep) -> DeliveryResult:
    import http.client
    import urllib.error
    import urllib.request

    url = sink.url or os.environ.get(sink.url_env or "", "")
    if not url:
        return DeliveryResult(sink.name, sink.kind, False, 0, f"environment variable {sink.url_env} is not set")
    where = mask_url(url)
    if not url.startswith(("https://", "http://")):
        return DeliveryResult(sink.name, sink.kind, False, 0, f"{where} is not an http(s) URL")
    body = json.dumps(webhook_payload(notice, _format(sink, url))).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "rung"})
    detail, attempts = "", 0
    for attempt in range(sink.retries + 1):
        if attempt:
            sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
        attempts += 1
        try:
            with urllib.request.urlopen(request, timeout=sink.timeout_s) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            detail = f"{where}: {getattr(exc, 'reason', None) or exc}"
            continue
        if 200 <= status < 300:
            return DeliveryResult(sink.name, sink.kind, True, attempts, f"{where}: HTTP {status}")
        detail = f"{where}: HTTP {status}"
        if status != 429 and status < 500:
            break  # the request itself was refused; sending it again will not help
    return DeliveryResult(sink.name, sink.kind, False, attempts, _scrub(f"{detail} after {attempts} attempt(s)", sink))


def _run_command(notice: Notice, sink: SinkSettings, sleep: Sleep) -> DeliveryResult:
    import signal
    import subprocess

    env = {**os.environ, **{f"RUNG_ALERT_{k.upper()}": str(v) for k, v in notice.to_dict().items()}}
    with subprocess.Popen(
        sink.command or "", shell=True, env=env, text=True, start_new_session=True,
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    ) as process:  # fmt: skip
        try:
            _, stderr = process.communicate(json.dumps(notice.to_dict()), timeout=sink.timeout_s)
        except subprocess.TimeoutExpired:
            # The shell's children would keep the pipes open: end the whole process group.
            if hasattr(os, "killpg"):
                os.killpg(process.pid, signal.SIGKILL)
            else:  # pragma: no cover - Windows
                process.kill()
            process.communicate()
            return DeliveryResult(sink.name, sink.kind, False, 1, f"timed out after {sink.timeout_s:g} s")
    if process.returncode:
        tail = " ".join((stderr or "").split())[-200:]
        return DeliveryResult(sink.name, sink.kind, False, 1, f"exit {process.returncode}" + (f": {tail}" if tail else ""))
    return DeliveryResult(sink.name, sink.kind, True, 1, "exit 0")


def _log(notice: Notice, sink: SinkSettings, sleep: Sleep) -> DeliveryResult:
    levels = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}
    level = logging.INFO if notice.status == "resolved" else levels[notice.severity]
    notices_logger.log(level, "%s", notice.message, extra={"notice": notice.to_dict()})
    return DeliveryResult(sink.name, sink.kind, True, 1, "logged")


_SENDERS: dict[str, Callable[[Notice, SinkSettings, Sleep], DeliveryResult]] = {
    "webhook": _send_webhook,
    "command": _run_command,
    "log": _log,
}


def _format(sink: SinkSettings, url: str) -> Literal["slack", "teams", "json"]:
    if sink.format != "auto":
        return sink.format
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    if host == "slack.com" or host.endswith(".slack.com"):
        return "slack"
    teams_hosts = (".webhook.office.com", ".logic.azure.com", ".powerplatform.com", "outlook.office.com", "outlook.office365.com")
    if any(host == h.lstrip(".") or host.endswith(h) for h in teams_hosts):
        return "teams"
    return "json"


def _scrub(text: str, sink: SinkSettings) -> str:
    url = sink.url or (os.environ.get(sink.url_env) if sink.url_env else None)
    return text.replace(url, mask_url(url)) if url else text


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- small helpers ------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _exact(x: float) -> str:
    """A threshold as short as possible without changing it."""
    short = f"{x:.6g}"
    return short if float(short) == x else repr(x)


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


def _utc(when: datetime) -> datetime:
    """Aware UTC; a naive time (as SQLite returns them) is taken to be UTC already."""
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def _iso(when: datetime) -> str:
    return _utc(when).isoformat()


def _parse(text: str) -> datetime:
    return _utc(datetime.fromisoformat(text))
