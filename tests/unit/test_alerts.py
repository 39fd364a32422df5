"""rung.monitor.alerts: conditions, rules held for N windows, dedup and resolve, state resume, sinks."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rung.clock import ManualClock
from rung.config.alerts import AlertSettings, SinkSettings, mask_url
from rung.config.durations import format_duration, parse_duration
from rung.config.rules import Condition
from rung.monitor.alerts import AlertBook, Notice, RuleTracker
from rung.monitor.notify import deliver, webhook_payload

WINDOW = 600.0


def settings(*rules: dict[str, Any], sinks: list[dict[str, Any]] | None = None) -> AlertSettings:
    return AlertSettings.model_validate({"rules": list(rules), "sinks": sinks or []})


DRIFT = {"name": "feature-drift", "metric": "drift.share", "condition": "> 0.3", "for": 2, "severity": "warning"}


def windows(book: AlertBook, clock: ManualClock, subject: str, values: list[float | None], metric: str = "drift.share") -> list[list[Notice]]:
    """One observe per value (None: the metric is absent from that window), a window apart."""
    out = []
    for value in values:
        clock.advance(WINDOW)
        metrics = {} if value is None else {metric: value}
        out.append(book.observe(subject, metrics, clock.now()))
    return out


def notice(status: str = "firing") -> Notice:
    at = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)
    message = "churn:3 drift.share = 0.45 > 0.3 for 2 windows (warning, rule feature-drift)"
    return Notice("feature-drift", "churn:3", "drift.share", 0.45, "> 0.3", "warning", status, at, message, 2)


# --- conditions and durations -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [("> 0.3", 0.31, True), ("> 0.3", 0.3, False), (">=0.3", 0.3, True), ("< 0.8", 0.79, True), ("<= -1e-3", -0.001, True),
     ("== 1", 1.0 + 1e-12, True), ("!= 1", 1.0, False), ("  >  .5 ", 0.6, True)],
)  # fmt: skip
def test_condition_parses_and_holds(text: str, value: float, expected: bool) -> None:
    assert Condition.parse(text).holds(value) is expected


def test_condition_never_holds_for_nan_and_prints_as_written() -> None:
    condition = Condition.parse(">0.3")
    assert not condition.holds(float("nan"))
    assert str(condition) == "> 0.3"
    assert str(Condition.parse("< 0.123456789")) == "< 0.123456789"


@pytest.mark.parametrize("bad", [">> 0.3", "0.3", "> x", "> 0.3 and < 1", "", "=> 1", 0.3, None, "> nan"])
def test_bad_conditions_say_how_to_write_one(bad: object) -> None:
    with pytest.raises(ValueError, match=r'an operator .* and a number, in quotes: "> 0.3"'):
        Condition.parse(bad)


def test_durations() -> None:
    assert parse_duration("30m") == 1800
    assert parse_duration("6h") == 21600
    assert parse_duration("1d") == 86400
    assert parse_duration("1h30m") == 5400
    assert parse_duration(90) == 90
    assert parse_duration("45") == 45
    assert format_duration(5400) == "1h30m"
    assert format_duration(21600) == "6h"
    for bad in ("6x", "-1h", "h", True, None, -5):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


# --- settings -------------------------------------------------------------------------------


def test_bad_condition_names_the_key() -> None:
    with pytest.raises(ValidationError) as caught:
        settings({**DRIFT, "condition": "more than 0.3"})
    assert "rules.0.condition" in str(caught.value)
    assert '"> 0.3"' in str(caught.value)


def test_unquoted_number_condition_is_refused() -> None:
    with pytest.raises(ValidationError, match="rules.0.condition"):
        settings({**DRIFT, "condition": 0.3})


def test_unknown_sink_names_the_rule_the_key_and_the_known_sinks() -> None:
    with pytest.raises(ValidationError) as caught:
        settings({**DRIFT, "sinks": ["team-slak"]}, sinks=[{"name": "team-slack", "kind": "webhook", "url": "https://hooks.slack.com/x"}])
    text = str(caught.value)
    assert "rule 'feature-drift' sinks: unknown sink 'team-slak'" in text
    assert "alerts.sinks" in text and "team-slack, log" in text


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ({"name": "s", "kind": "webhook"}, "a webhook needs url"),
        ({"name": "s", "kind": "webhook", "url": "ftp://x/y"}, "must start with https://"),
        ({"name": "s", "kind": "command"}, "a command sink needs command"),
        ({"name": "s", "kind": "log", "url": "https://x"}, "url is for kind webhook"),
        ({"name": "log", "kind": "command", "command": "true"}, "reserved for the log sink"),
        ({"name": "s", "kind": "email"}, "kind"),
        ({"name": "s", "kind": "log", "colour": "red"}, "colour"),
    ],
)
def test_sink_settings_are_checked(sink: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(sinks=[sink])


def test_names_are_unique_and_metric_patterns_checked() -> None:
    with pytest.raises(ValidationError, match="'feature-drift' is used twice"):
        settings(DRIFT, DRIFT)
    for metric in ("drift.*.x", "*", "drift feature"):
        with pytest.raises(ValidationError, match="rules.0.metric"):
            settings({**DRIFT, "metric": metric})


def test_rules_go_to_all_sinks_unless_they_name_some_and_log_always_exists() -> None:
    alerts = settings(
        DRIFT,
        {**DRIFT, "name": "pager-only", "sinks": ["pager"]},
        sinks=[{"name": "pager", "kind": "command", "command": "true"}],
    )
    assert [s.name for s in alerts.sinks_for("feature-drift")] == ["pager", "log"]
    assert [s.name for s in alerts.sinks_for("pager-only")] == ["pager"]


# --- deciding -------------------------------------------------------------------------------


def test_fires_only_after_n_consecutive_windows_then_once_then_resolves_once() -> None:
    book, clock = AlertBook(settings(DRIFT)), ManualClock()
    got = windows(book, clock, "churn:3", [0.45, 0.1, 0.45, 0.5, 0.6, 0.7, 0.2, 0.1])
    counts = [[n.status for n in window] for window in got]
    assert counts == [[], [], [], ["firing"], [], [], ["resolved"], []]
    fired = got[3][0]
    assert (fired.rule, fired.subject, fired.metric, fired.value, fired.severity) == ("feature-drift", "churn:3", "drift.share", 0.5, "warning")
    assert fired.message == "churn:3 drift.share = 0.5 > 0.3 for 2 windows (warning, rule feature-drift)"
    assert fired.at == ManualClock().now() + timedelta(seconds=4 * WINDOW)
    resolved = got[6][0]
    assert resolved.value == 0.2 and "resolved" in resolved.message and "no longer > 0.3" in resolved.message
    json.dumps(fired.to_dict())  # JSON-safe


def test_absent_windows_neither_count_nor_reset() -> None:
    book, clock = AlertBook(settings({**DRIFT, "for": 3})), ManualClock()
    got = windows(book, clock, "churn:3", [0.5, None, 0.5, float("nan"), None, 0.5])
    assert [len(w) for w in got] == [0, 0, 0, 0, 0, 1]
    # and a firing alert does not resolve on silence
    assert windows(book, clock, "churn:3", [None, None]) == [[], []]
    assert book.firing() == [("feature-drift", "churn:3", "drift.share")]


def test_subjects_are_judged_apart() -> None:
    book, clock = AlertBook(settings({**DRIFT, "for": 1})), ManualClock()
    clock.advance(WINDOW)
    assert [n.subject for n in book.observe("churn:3", {"drift.share": 0.9}, clock.now())] == ["churn:3"]
    assert book.observe("churn:4", {"drift.share": 0.1}, clock.now()) == []
    assert [n.subject for n in book.observe("churn:4", {"drift.share": 0.8}, clock.now())] == ["churn:4"]


def test_prefix_rules_fire_per_feature() -> None:
    rule = {"name": "any-feature", "metric": "drift.feature.*", "condition": "> 0.2", "for": 2}
    book, clock = AlertBook(settings(rule)), ManualClock()
    window = {"drift.feature.tenure": 0.5, "drift.feature.plan": 0.1, "drift.feature.age": 0.4, "drift.share": 0.9, "drift.feature": 0.9}
    clock.advance(WINDOW)
    assert book.observe("churn:3", window, clock.now()) == []
    clock.advance(WINDOW)
    fired = book.observe("churn:3", window, clock.now())
    assert sorted(n.metric for n in fired) == ["drift.feature.age", "drift.feature.tenure"]
    clock.advance(WINDOW)
    resolved = book.observe("churn:3", {**window, "drift.feature.age": 0.05}, clock.now())
    assert [(n.metric, n.status) for n in resolved] == [("drift.feature.age", "resolved")]


def test_state_round_trips_through_json_and_resumes_without_refiring() -> None:
    alerts, clock = settings(DRIFT), ManualClock()
    book = AlertBook(alerts)
    assert windows(book, clock, "churn:3", [0.5]) == [[]]
    book = AlertBook(alerts, json.loads(json.dumps(book.state())))  # restart mid-streak
    assert [n.status for n in windows(book, clock, "churn:3", [0.5])[0]] == ["firing"]
    book = AlertBook(alerts, json.loads(json.dumps(book.state())))  # restart while firing
    assert windows(book, clock, "churn:3", [0.6, 0.7]) == [[], []]
    book = AlertBook(alerts, json.loads(json.dumps(book.state())))
    assert [n.status for n in windows(book, clock, "churn:3", [0.1])[0]] == ["resolved"]
    assert book.state()["rules"]["feature-drift"] == {}  # nothing kept for quiet subjects


def test_forgetting_a_retired_subject() -> None:
    book, clock = AlertBook(settings({**DRIFT, "for": 1})), ManualClock()
    windows(book, clock, "churn:2", [0.9])
    windows(book, clock, "churn:3", [0.9])
    book.forget("churn:2")
    assert book.firing() == [("feature-drift", "churn:3", "drift.share")]


def test_state_of_a_changed_rule_is_dropped() -> None:
    clock = ManualClock()
    book = AlertBook(settings({**DRIFT, "for": 1}))
    windows(book, clock, "churn:3", [0.9])
    assert book.firing()
    book = AlertBook(settings({**DRIFT, "for": 1, "metric": "drift.feature.*"}), book.state())
    assert book.firing() == []
    assert AlertBook(settings(DRIFT), {"rules": {"feature-drift": {"not json": {}}}}).firing() == []
    broken = {"rules": {"feature-drift": {'["churn:3", "drift.share"]': {"firing": "yes"}}}}
    assert AlertBook(settings(DRIFT), broken).firing() == []


def test_reminders_every_repeat_s_while_firing() -> None:
    book, clock = AlertBook(settings({**DRIFT, "for": 1, "repeat_s": "25m"})), ManualClock()
    got = windows(book, clock, "churn:3", [0.5, 0.5, 0.5, 0.5, 0.5, 0.5])  # 10 minutes apart
    assert [[(n.status, n.reminder) for n in w] for w in got] == [
        [("firing", False)], [], [], [("firing", True)], [], [],
    ]  # fmt: skip
    assert got[3][0].message.startswith("still firing: ")


def test_rule_tracker_state_is_json_and_resets() -> None:
    clock = ManualClock()
    tracker = RuleTracker(2)
    assert tracker.update("k", True, clock.now(), 1.0) is None
    assert tracker.update("k", True, clock.now(), 2.0) == "fired"
    copy = RuleTracker(2, state=json.loads(json.dumps(tracker.state())))
    assert copy.firing("k") and copy.streak("k") == 2 and copy.entry("k")["value"] == 2.0
    assert copy.update("k", False, clock.now()) == "resolved"
    assert copy.update("k", False, clock.now()) is None
    with pytest.raises(ValueError):
        RuleTracker(0)


# --- delivering -----------------------------------------------------------------------------


class Receiver:
    """A local webhook: records each request, answers with the next status in ``statuses``."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.requests = list(statuses), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, self.headers["Content-Type"], json.loads(body)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    started = []

    def start(statuses: list[int] | None = None) -> Receiver:
        receiver = Receiver(statuses or [])
        threading.Thread(target=receiver.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def webhook(url: str, **extra: Any) -> SinkSettings:
    return SinkSettings.model_validate({"name": "hook", "kind": "webhook", "url": url, **extra})


def test_webhook_receives_the_notice_as_json(receiver_factory: Any) -> None:
    receiver = receiver_factory()
    [result] = deliver(notice(), [webhook(receiver.url + "/services/T0/B0/s3cr3t")])
    assert result.ok and result.attempts == 1 and result.detail.endswith("HTTP 200")
    assert "s3cr3t" not in result.detail
    path, content_type, body = receiver.requests[0]
    assert path == "/services/T0/B0/s3cr3t" and content_type == "application/json"
    assert body["text"] == notice().message
    assert body["notice"]["rule"] == "feature-drift" and body["notice"]["status"] == "firing"
    assert body["notice"]["at"] == "2026-01-05T03:00:00+00:00"


def test_webhook_500_is_retried_then_reported_failed_without_raising(receiver_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    receiver, slept = receiver_factory([500, 500, 500, 500]), []
    with caplog.at_level(logging.WARNING):
        [result] = deliver(notice(), [webhook(receiver.url + "/hook/s3cr3t")], sleep=slept.append)
    assert not result.ok and result.attempts == 3 and len(receiver.requests) == 3
    assert "HTTP 500 after 3 attempt(s)" in result.detail
    assert slept == [0.5, 1.0]
    assert "not delivered to sink 'hook'" in caplog.text
    assert "s3cr3t" not in caplog.text and "s3cr3t" not in result.detail


def test_webhook_recovers_after_a_503_and_does_not_retry_a_404(receiver_factory: Any) -> None:
    receiver = receiver_factory([503, 200])
    [result] = deliver(notice(), [webhook(receiver.url)], sleep=lambda s: None)
    assert result.ok and result.attempts == 2
    receiver = receiver_factory([404])
    [result] = deliver(notice(), [webhook(receiver.url)], sleep=lambda s: None)
    assert not result.ok and result.attempts == 1 and "HTTP 404" in result.detail


def test_unreachable_webhook_is_a_failed_result(receiver_factory: Any) -> None:
    receiver = receiver_factory()
    url = receiver.url + "/secret-path"
    receiver.server.shutdown()
    receiver.server.server_close()
    [result] = deliver(notice(), [webhook(url, retries=1)], sleep=lambda s: None)
    assert not result.ok and result.attempts == 2 and "secret-path" not in result.detail


def test_webhook_url_from_the_environment(receiver_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = receiver_factory()
    sink = SinkSettings.model_validate({"name": "hook", "kind": "webhook", "url_env": "RUNG_TEST_HOOK"})
    [missing] = deliver(notice(), [sink])
    assert not missing.ok and "RUNG_TEST_HOOK is not set" in missing.detail
    monkeypatch.setenv("RUNG_TEST_HOOK", receiver.url)
    assert deliver(notice(), [sink])[0].ok and len(receiver.requests) == 1


def test_slack_and_teams_bodies() -> None:
    slack = webhook_payload(notice(), "slack")
    assert slack["text"] == notice().message.replace(">", "&gt;")
    assert slack["blocks"][0]["text"]["type"] == "mrkdwn"
    teams = webhook_payload(notice(), "teams")
    assert teams["type"] == "message"
    [attachment] = teams["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["content"]["type"] == "AdaptiveCard"
    assert attachment["content"]["body"][0]["text"] == notice().message


def test_webhook_format_follows_the_host(receiver_factory: Any) -> None:
    receiver = receiver_factory()
    deliver(notice(), [webhook(receiver.url, format="teams"), webhook(receiver.url, format="slack")])
    assert "attachments" in receiver.requests[0][2] and "blocks" in receiver.requests[1][2]
    from rung.monitor.notify import _format

    assert _format(webhook("https://hooks.slack.com/services/x"), "https://hooks.slack.com/services/x") == "slack"
    teams = "https://prod-01.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=s"
    assert _format(webhook(teams), teams) == "teams"
    assert _format(webhook("https://example.com/h"), "https://example.com/h") == "json"


def test_mask_url_keeps_only_scheme_and_host() -> None:
    assert mask_url("https://hooks.slack.com/services/T0/B0/secret") == "https://hooks.slack.com/***"
    assert mask_url("https://user:pw@example.com:8443/x?token=t") == "https://example.com:8443/***"
    assert mask_url("https://example.com") == "https://example.com"
    assert mask_url("not a url") == "<url>"


def test_command_sink_gets_the_notice_on_stdin_and_in_the_environment(tmp_path: Path) -> None:
    out, env_out = tmp_path / "notice.json", tmp_path / "env.txt"
    command = f'cat > "{out}"; printf "%s|%s|%s" "$RUNG_ALERT_RULE" "$RUNG_ALERT_SEVERITY" "$RUNG_ALERT_VALUE" > "{env_out}"'
    sink = SinkSettings.model_validate({"name": "pager", "kind": "command", "command": command})
    [result] = deliver(notice(), [sink])
    assert result.ok and result.detail == "exit 0"
    assert json.loads(out.read_text()) == notice().to_dict()
    assert env_out.read_text() == "feature-drift|warning|0.45"


def test_failing_and_hanging_commands_are_reported(tmp_path: Path) -> None:
    failing = SinkSettings.model_validate({"name": "a", "kind": "command", "command": "echo broken >&2; exit 3"})
    hanging = SinkSettings.model_validate({"name": "b", "kind": "command", "command": "sleep 30; echo late", "timeout_s": 0.3})
    started = time.monotonic()
    first, second = deliver(notice(), [failing, hanging])
    assert not first.ok and first.detail == "exit 3: broken"
    assert not second.ok and "timed out after 0.3 s" in second.detail
    assert time.monotonic() - started < 10


def test_log_sink_logs_at_the_severity_level(caplog: pytest.LogCaptureFixture) -> None:
    log = SinkSettings(name="log", kind="log")
    with caplog.at_level(logging.INFO, logger="rung.alerts"):
        assert deliver(notice(), [log])[0].ok
        deliver(notice("resolved"), [log])
    firing, resolved = [r for r in caplog.records if r.name == "rung.alerts"]
    assert firing.levelno == logging.WARNING and firing.getMessage() == notice().message
    assert resolved.levelno == logging.INFO


def test_one_broken_sink_does_not_stop_the_others(tmp_path: Path) -> None:
    out = tmp_path / "n.json"
    broken = SinkSettings.model_validate({"name": "a", "kind": "command", "command": "exit 1"})
    good = SinkSettings.model_validate({"name": "b", "kind": "command", "command": f'cat > "{out}"'})
    results = deliver(notice(), [broken, good])
    assert [r.ok for r in results] == [False, True] and out.exists()
    assert os.environ.get("RUNG_ALERT_RULE") is None  # the command's environment stays its own


def test_webhook_backoff_doubles_up_to_eight_seconds_and_sleeps_plain_floats(receiver_factory: Any) -> None:
    receiver, slept = receiver_factory([500] * 7), []
    [result] = deliver(notice(), [webhook(receiver.url, retries=6)], sleep=slept.append)
    assert not result.ok and result.attempts == 7 and len(receiver.requests) == 7
    assert slept == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert all(type(s) is float for s in slept)


def test_webhook_429_is_retried(receiver_factory: Any) -> None:
    receiver, slept = receiver_factory([429, 200]), []
    [result] = deliver(notice(), [webhook(receiver.url)], sleep=slept.append)
    assert result.ok and result.attempts == 2 and slept == [0.5]


def test_webhook_that_never_answers_times_out_is_retried_and_reported() -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (the backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook/s3cr3t"
        started, slept = time.monotonic(), []
        [result] = deliver(notice(), [webhook(url, timeout_s=0.2, retries=1)], sleep=slept.append)
    assert not result.ok and result.attempts == 2 and slept == [0.5]
    assert "timed out" in result.detail and "after 2 attempt(s)" in result.detail
    assert "s3cr3t" not in result.detail
    assert time.monotonic() - started < 5


def test_no_retry_when_retries_is_zero(receiver_factory: Any) -> None:
    receiver, slept = receiver_factory([503]), []
    [result] = deliver(notice(), [webhook(receiver.url, retries=0)], sleep=slept.append)
    assert not result.ok and result.attempts == 1 and slept == [] and "HTTP 503 after 1 attempt(s)" in result.detail
