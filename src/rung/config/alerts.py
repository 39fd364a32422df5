"""The ``alerts:`` section of ``rung.yaml``: rules on monitored metrics, and the sinks their notices go to.

The rules are judged by :mod:`rung.monitor.alerts` and the notices sent by
:mod:`rung.monitor.notify`; this module only says what a valid section is. A
webhook URL is a secret (its path is the credential), so every message about
one, here and in delivery, shows it through :func:`mask_url`.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from rung.config.durations import Duration
from rung.config.rules import MetricRule
from rung.config.section import Section

__all__ = ["Severity", "AlertRule", "SinkSettings", "LOG_SINK", "AlertSettings", "mask_url"]

Severity = Literal["info", "warning", "critical"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


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


class SinkSettings(Section):
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


class AlertSettings(Section):
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


def mask_url(url: str) -> str:
    """``https://hooks.slack.com/services/T0/B0/secret`` -> ``https://hooks.slack.com/***``: safe to log."""
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
