"""rung.demo.run.loop_gap: whether the demo's loop closed, decided from what the demo saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rung.demo.run import DemoResult, loop_gap


def _result(**seen: Any) -> DemoResult:
    return DemoResult(root=Path("."), days=20, drift_day=8, **seen)


def test_a_promoted_retraining_closes_the_loop() -> None:
    assert loop_gap(_result(drift_alert_day=9, retrain_day=10, chain="c" * 32, promoted_day=12)) is None


def test_no_retraining_is_a_gap_that_says_whether_the_drift_was_seen() -> None:
    assert loop_gap(_result()) == "no retraining was triggered in 20 days (no drift alert fired)"
    assert "the drift alert fired on day 9" in (loop_gap(_result(drift_alert_day=9)) or "")


def test_retrainings_that_all_failed_certification_are_a_gap_with_the_first_reason() -> None:
    failures = ["day 10: churn:2 failed certification (tests)", "day 13: churn:3 failed certification (tests)"]
    gap = loop_gap(_result(drift_alert_day=9, retrain_day=10, retrain_failures=failures, v1_failed=["tests"]))
    assert gap == ("no retraining reached an A/B test (2 failed; the first: day 10: churn:2 failed certification (tests))"
                   " (v1 was not certified either: tests failed)")


def test_an_ab_test_that_never_promoted_is_a_gap() -> None:
    gap = loop_gap(_result(drift_alert_day=9, retrain_day=10, chain="c" * 32))
    assert gap == "the A/B test did not promote the retrained version within 20 days"
