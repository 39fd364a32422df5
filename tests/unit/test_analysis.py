"""rung.delivery.analysis: which requests count for which arm, what feedback means, and what each check decides."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rung.config import AbSettings, CanarySettings, Guardrails, ShadowSettings
from rung.delivery import analysis
from rung.delivery.analysis import Arm, Verdict

RULES = CanarySettings(steps=[10, 50, 100], min_requests=50, min_feedback=50)


def row(request_id: str, version: int, *, shadow: bool = False, status: int = 200, latency_ms: float = 4.0,
        prediction: str | None = "1", score: float | None = 0.8, value: float | None = None) -> dict[str, Any]:
    return {"request_id": request_id, "version": version, "shadow": shadow, "status": status, "latency_ms": latency_ms,
            "prediction": prediction, "score": score, "value": value}


def arm(version: int, n: int, *, errors: int = 0, latency_ms: float = 4.0, outcomes: list[float] | None = None,
        predictions: dict[str, str] | None = None) -> Arm:
    return Arm(version, n=n, errors=errors, latency_ms=np.full(n - errors, latency_ms),
               outcomes=np.array(outcomes or [], dtype=float), predictions=predictions or {})


def named(checks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(c for c in checks if c["name"] == name)


# -- arms --------------------------------------------------------------------------------------------


def test_rows_are_split_into_arms_by_version_and_by_whether_they_were_a_shadow_copy() -> None:
    rows = [row("a", 2), row("b", 2, status=503, latency_ms=900.0), row("c", 1), row("c", 2, shadow=True),
            row("d", 3), row("e", 1, shadow=True)]
    candidate, champion = analysis.arms(rows, 2, 1, outcome="accuracy")
    assert (candidate.version, candidate.n, candidate.errors, champion.n) == (2, 2, 1, 1)
    assert candidate.error_rate == 0.5 and champion.error_rate == 0.0
    assert candidate.latency_ms.tolist() == [4.0]  # a failed request's latency says nothing about the model
    assert set(candidate.predictions) == {"a"}
    shadow, answered = analysis.arms(rows, 2, 1, outcome="accuracy", shadow=True)
    assert (shadow.n, set(shadow.predictions), answered.n) == (1, {"c"}, 1)


def test_an_arm_without_rows_is_empty_and_has_no_p99() -> None:
    candidate, champion = analysis.arms([row("a", 1)], 2, None, outcome="accuracy")
    assert (candidate.version, candidate.n, len(candidate.latency_ms), candidate.predictions) == (2, 0, 0, {})
    assert candidate.error_rate == 0.0 and np.isnan(candidate.p99_ms)
    assert champion.n == 0  # no champion (a first rollout): nothing is its


def test_feedback_becomes_one_outcome_per_request() -> None:
    rows = [row("right", 2, prediction="1", value=1.0), row("wrong", 2, prediction="0", score=0.3, value=1.0),
            row("none", 2, value=None), row("class", 2, prediction="cat", value=1.0),
            row("failed", 2, status=500, value=1.0)]
    candidate, _ = analysis.arms(rows, 2, 1, outcome="accuracy")
    assert candidate.outcomes.tolist() == [1.0, 0.0]  # a class name or a failed request has no outcome
    rewards, _ = analysis.arms([row("a", 2, value=0.25), row("b", 2, prediction="cat", value=3.0)], 2, 1, outcome="reward")
    assert rewards.outcomes.tolist() == [0.25, 3.0]  # a reward is taken as it is
    regression = [row("a", 2, prediction="10.5", score=10.5, value=12.0), row("b", 2, prediction="1", score=None, value=0.0)]
    regressor, _ = analysis.arms(regression, 2, 1, outcome="accuracy")
    assert regressor.outcomes.tolist() == [-1.5, -1.0]  # minus the absolute error


def test_a_classifiers_predicted_classes_are_kept_a_regressors_values_are_not() -> None:
    classifier, _ = analysis.arms([row("a", 2, prediction="cat", score=0.9), row("b", 2, prediction="1", score=0.6),
                                   row("c", 2, prediction=None, score=None)], 2, 1, outcome="accuracy")
    assert classifier.labels.tolist() == ["cat", "1"] and classifier.scores.tolist() == [0.9, 0.6]
    regressor, _ = analysis.arms([row("a", 2, prediction="3.5", score=3.5)], 2, 1, outcome="accuracy")
    assert regressor.labels.tolist() == [] and regressor.scores.tolist() == [3.5]


# -- verdicts ----------------------------------------------------------------------------------------


def check(name: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "status": status, "detail": f"{name} detail"} | extra


def test_a_verdict_fails_on_any_failure_and_is_inconclusive_on_any_missing_evidence() -> None:
    assert Verdict([check("a", "pass"), check("b", "skipped")]).result == "pass"
    unsure = Verdict([check("traffic", "inconclusive"), check("b", "pass")])
    assert (unsure.result, unsure.failed(), unsure.wants_traffic) == ("inconclusive", ["traffic"], True)
    failed = Verdict([check("traffic", "inconclusive"), check("b", "fail"), check("c", "fail")])
    assert (failed.result, failed.failed(), failed.wants_traffic) == ("fail", ["b", "c"], False)
    assert failed.to_dict() == {"result": "fail", "checks": failed.checks}


def test_explain_names_value_threshold_and_setting_of_the_deciding_checks() -> None:
    verdict = Verdict([
        check("error_rate", "fail", value=0.2, threshold=0.05, direction="<=", setting="deploy.canary.error_margin"),
        check("outcome", "fail", value=0.7, threshold=0.8, direction=">="),
        check("agreement", "fail", value=None, threshold=0.9),
        check("traffic", "pass", value=500, threshold=50),
    ])
    assert verdict.explain() == ("error_rate 0.2 > 0.05; the threshold is deploy.canary.error_margin, "
                                 "outcome 0.7 < 0.8, agreement (agreement detail)")


# -- checks ------------------------------------------------------------------------------------------


def test_too_little_traffic_skips_the_other_checks() -> None:
    checks = analysis.guardrails(arm(2, 10, errors=10), arm(1, 400), RULES)
    assert [(c["name"], c["status"]) for c in checks] == [("traffic", "inconclusive"), ("errors", "skipped"), ("outcome", "skipped")]
    assert named(checks, "traffic")["setting"] == "deploy.canary.min_requests"


def test_errors_beyond_the_margin_fail_and_name_it() -> None:
    good = named(analysis.guardrails(arm(2, 100, errors=1), arm(1, 100), RULES), "error_rate")
    assert good["status"] == "pass" and good["threshold"] == pytest.approx(0.01)
    bad = named(analysis.guardrails(arm(2, 100, errors=5), arm(1, 100), RULES), "error_rate")
    assert bad["status"] == "fail" and bad["setting"] == "deploy.canary.error_margin"
    assert bad["detail"] == "candidate 5/100 failed, champion 0/100"


def test_latency_is_allowed_the_larger_of_the_ratio_and_the_slack() -> None:
    fast = arm(1, 100, latency_ms=4.0)
    slack = named(analysis.guardrails(arm(2, 100, latency_ms=8.0), fast, RULES), "latency_p99_ms")
    assert slack["status"] == "pass" and slack["threshold"] == 9.0 and slack["setting"] == "deploy.canary.latency_slack_ms"
    slow = arm(1, 100, latency_ms=100.0)
    ratio = named(analysis.guardrails(arm(2, 100, latency_ms=160.0), slow, RULES), "latency_p99_ms")
    assert ratio["status"] == "fail" and ratio["threshold"] == 150.0 and ratio["setting"] == "deploy.canary.latency_ratio"


def test_the_outcome_counts_once_both_arms_have_enough_feedback() -> None:
    few = named(analysis.guardrails(arm(2, 100, outcomes=[1.0] * 49), arm(1, 100, outcomes=[1.0] * 100), RULES), "outcome")
    assert few["status"] == "skipped" and "49/100 outcomes with feedback, fewer than 50 per arm" in few["detail"]
    champion = arm(1, 100, outcomes=[1.0] * 90 + [0.0] * 10)
    close = named(analysis.guardrails(arm(2, 100, outcomes=[1.0] * 89 + [0.0] * 11), champion, RULES), "outcome")
    assert close["status"] == "pass" and close["threshold"] == pytest.approx(0.88)
    worse = named(analysis.guardrails(arm(2, 100, outcomes=[1.0] * 80 + [0.0] * 20), champion, RULES), "outcome")
    assert worse["status"] == "fail" and worse["direction"] == ">=" and worse["setting"] == "deploy.canary.outcome_margin"


def test_early_failure_needs_twenty_requests_and_a_clear_difference() -> None:
    champion = arm(1, 1000, errors=10)
    assert analysis.early_failure(arm(2, 19, errors=19), champion, RULES) is None
    assert analysis.early_failure(arm(2, 100, errors=1), champion, RULES) is None  # within the margin
    assert analysis.early_failure(arm(2, 40, errors=2), champion, RULES) is None  # over the margin, but could be chance
    early = analysis.early_failure(arm(2, 40, errors=20), champion, RULES)
    assert early is not None and early["name"] == "error_rate" and early["status"] == "fail"
    assert "failed before the window ended" in early["detail"]


def test_ab_decision_continues_until_the_samples_are_there_and_stays_json_safe() -> None:
    rules = AbSettings(min_samples=100)
    early = analysis.ab_decision(arm(2, 50, outcomes=[1.0] * 50), arm(1, 50, outcomes=[0.0] * 50), rules)
    assert early["decision"] == "continue" and early["threshold"] == 0.05
    assert all(v is None or np.isfinite(v) for v in early["ci"])
    rng = np.random.default_rng(0)
    better = analysis.ab_decision(arm(2, 400, outcomes=list(rng.random(400) < 0.9)), arm(1, 400, outcomes=list(rng.random(400) < 0.5)),
                                  rules)
    assert better["decision"] == "candidate" and better["value"] < 0.05 and better["effect"] > 0.2
    assert (better["n_candidate"], better["n_champion"]) == (400, 400)
    worse = analysis.ab_decision(arm(2, 400, outcomes=list(rng.random(400) < 0.5)), arm(1, 400, outcomes=list(rng.random(400) < 0.9)),
                                 rules)
    assert worse["decision"] == "champion"


def test_shadow_agreement_is_judged_on_requests_both_answered() -> None:
    rules = ShadowSettings(min_requests=50, min_agreement=0.9)
    champion = arm(1, 100, predictions={f"r{i}": "1" for i in range(100)})
    few = named(analysis.shadow_checks(arm(2, 40, predictions={f"r{i}": "1" for i in range(40)}), champion, rules), "agreement")
    assert few["status"] == "inconclusive" and few["detail"].startswith("40 mirrored requests with both answers")
    same = {f"r{i}": "1" if i < 95 else "0" for i in range(100)}
    agree = named(analysis.shadow_checks(arm(2, 100, predictions=same), champion, rules), "agreement")
    assert agree["status"] == "pass" and agree["value"] == pytest.approx(0.95)
    differ = {f"r{i}": "1" if i < 80 else "0" for i in range(100)}
    disagree = named(analysis.shadow_checks(arm(2, 100, predictions=differ), champion, rules), "agreement")
    assert disagree["status"] == "fail" and disagree["setting"] == "deploy.shadow.min_agreement"


def test_a_setting_is_named_as_the_user_writes_it() -> None:
    assert analysis.setting(RULES, "max_divergence") == "deploy.canary.max_divergence"
    assert analysis.setting(AbSettings(), "error_margin") == "deploy.ab.error_margin"
    assert analysis.setting(ShadowSettings(), "min_agreement") == "deploy.shadow.min_agreement"
    assert analysis.setting(Guardrails(), "min_requests") == "deploy.min_requests"
