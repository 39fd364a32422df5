"""Delivering alert notices to sinks: webhooks (Slack, Teams, any JSON receiver), commands and the log.

:class:`rung.monitor.alerts.AlertBook` decides which notices a window causes;
this module sends them. Delivery never raises into the caller's loop: a sink
that fails is reported in its :class:`DeliveryResult` and logged, and neither
ever shows a webhook's secret path (:func:`rung.config.alerts.mask_url`).

Webhooks go out with httpx; their retry policy (which answers are worth a
second try, and how long to wait) is a tenacity policy whose ``sleep`` the
caller may replace, so tests count the waits instead of sleeping them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import tenacity

from rung.clock import utc
from rung.config.alerts import SinkSettings, mask_url
from rung.monitor.alerts import Notice

__all__ = ["DeliveryResult", "Sleep", "deliver", "webhook_payload"]

logger = logging.getLogger(__name__)
notices_logger = logging.getLogger("rung.alerts")  # the ``log`` sink: route it apart from rung's own logs

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class DeliveryResult:
    """What became of one notice at one sink; ``detail`` never holds a webhook's secret path."""

    sink: str
    kind: str
    ok: bool
    attempts: int
    detail: str


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
    at = utc(notice.at).isoformat()
    if style == "slack":
        text = _slack_escape(notice.message)
        context = _slack_escape(f"rung · rule {notice.rule} · {notice.severity} · {at}")
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
                 ("Condition", notice.condition), ("Severity", notice.severity), ("At", at)]  # fmt: skip
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


# --- webhooks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """One attempt at a webhook: its HTTP status, or None when no answer came (refused, timed out, reset)."""

    status: int | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def worth_retrying(self) -> bool:
        # A 4xx other than 429 means the request itself was refused; sending it again will not help.
        return not self.ok and (self.status is None or self.status == 429 or self.status >= 500)


def _send_webhook(notice: Notice, sink: SinkSettings, sleep: Sleep) -> DeliveryResult:
    url = sink.url or os.environ.get(sink.url_env or "", "")
    if not url:
        return DeliveryResult(sink.name, sink.kind, False, 0, f"environment variable {sink.url_env} is not set")
    where = mask_url(url)
    if not url.startswith(("https://", "http://")):
        return DeliveryResult(sink.name, sink.kind, False, 0, f"{where} is not an http(s) URL")
    body = json.dumps(webhook_payload(notice, _format(sink, url))).encode()
    attempts = 0
    headers = {"Content-Type": "application/json", "User-Agent": "rung"}
    # A timeout bounds each step (connecting, each read), as a socket timeout does.
    with httpx.Client(timeout=sink.timeout_s, headers=headers, follow_redirects=True) as client:

        def post() -> _Answer:
            nonlocal attempts
            attempts += 1
            try:
                response = client.post(url, content=body)
            except (httpx.RequestError, httpx.InvalidURL) as exc:  # connection refused, timeouts, resets
                return _Answer(None, f"{where}: {str(exc) or type(exc).__name__}")
            return _Answer(response.status_code, f"{where}: HTTP {response.status_code}")

        answer = _retry_policy(sink.retries, sleep)(post)
    if answer.ok:
        return DeliveryResult(sink.name, sink.kind, True, attempts, answer.detail)
    return DeliveryResult(sink.name, sink.kind, False, attempts, _scrub(f"{answer.detail} after {attempts} attempt(s)", sink))


def _retry_policy(retries: int, sleep: Sleep) -> tenacity.Retrying:
    """Up to ``retries`` more attempts, 0.5 s, 1 s, 2 s ... (at most 8 s) apart, while the answer is worth retrying.

    When the attempts run out the last answer is returned, not raised: a
    failed delivery is a result.
    """
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(retries + 1),
        wait=tenacity.wait_exponential(multiplier=0.5, max=8.0),
        retry=tenacity.retry_if_result(lambda answer: answer.worth_retrying),
        retry_error_callback=_last_answer,
        sleep=lambda seconds: sleep(float(seconds)),
    )


def _last_answer(state: tenacity.RetryCallState) -> _Answer:
    if state.outcome is None:  # pragma: no cover - tenacity sets it before giving up
        raise RuntimeError("no attempt was made")
    answer: _Answer = state.outcome.result()
    return answer


def _format(sink: SinkSettings, url: str) -> Literal["slack", "teams", "json"]:
    if sink.format != "auto":
        return sink.format
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


# --- commands and the log -----------------------------------------------------------------------


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
