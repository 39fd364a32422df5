"""The canary's judgement, pure: divergence on confident multiclass scores, and what a window without traffic costs."""

from __future__ import annotations

from typing import Any

import numpy as np

from rung.config import CanarySettings
from rung.delivery import analysis
from rung.delivery.judgement import judge_canary

RULES = CanarySettings(steps=[10, 50, 100], window_s=60, min_requests=50, max_extensions=3)


def rows(version: int, predicted: np.ndarray, confidence: np.ndarray, *, start: int = 0) -> list[dict[str, Any]]:
    """Request-log rows as a multiclass model's gateway writes them: the class, and its probability as the score."""
    return [{"request_id": f"r{version}-{start + i}", "version": version, "shadow": False, "status": 200,
             "latency_ms": 4.0, "prediction": str(int(c)), "score": float(s), "value": None}
            for i, (c, s) in enumerate(zip(predicted, confidence))]


def multiclass(n: int, *, sharp: bool, seed: int, classes: tuple[float, ...] = (0.5, 0.3, 0.2)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    predicted = rng.choice(len(classes), size=n, p=classes)
    # the better model is near one-hot (accuracy 1.0); the champion's top class gets 0.4-1.0
    confidence = 1 - rng.exponential(0.002, n) if sharp else rng.uniform(0.4, 1.0, n)
    return predicted, np.clip(confidence, 0, 1)


def divergence(candidate_rows: list[dict[str, Any]], champion_rows: list[dict[str, Any]]) -> dict[str, Any]:
    candidate, champion = analysis.arms(candidate_rows + champion_rows, 2, 1, outcome="accuracy")
    return next(c for c in analysis.guardrails(candidate, champion, RULES) if c["name"] == "divergence")


def test_a_more_confident_multiclass_model_deciding_alike_is_not_divergent() -> None:
    check = divergence(rows(2, *multiclass(400, sharp=True, seed=1)), rows(1, *multiclass(3600, sharp=False, seed=2)))
    assert check["status"] == "pass", check
    assert check["value"] < 0.1, check  # the decisions agree; only the confidence differs


def test_a_multiclass_model_that_decides_differently_is_divergent_and_names_the_setting() -> None:
    candidate = rows(2, *multiclass(400, sharp=True, seed=1, classes=(0.1, 0.2, 0.7)))
    check = divergence(candidate, rows(1, *multiclass(3600, sharp=False, seed=2)))
    assert check["status"] == "fail", check
    assert check["value"] > RULES.max_divergence
    assert "deploy.canary.max_divergence" in check["detail"], check["detail"]


def test_a_regressor_is_still_judged_on_its_predicted_values() -> None:
    rng = np.random.default_rng(3)

    def regression(version: int, values: np.ndarray) -> list[dict[str, Any]]:
        return [{"request_id": f"r{version}-{i}", "version": version, "shadow": False, "status": 200, "latency_ms": 4.0,
                 "prediction": repr(float(v)), "score": float(v), "value": None} for i, v in enumerate(values)]

    same = divergence(regression(2, rng.normal(10, 2, 400)), regression(1, rng.normal(10, 2, 2000)))
    moved = divergence(regression(2, rng.normal(16, 2, 400)), regression(1, rng.normal(10, 2, 2000)))
    assert same["status"] == "pass" and moved["status"] == "fail", (same, moved)
    assert "prediction scores" in moved["detail"]


def window(candidate_n: int, champion_n: int, **checks: str) -> analysis.Verdict:
    """A judged window: its traffic, and the status of any other check."""
    candidate = analysis.Arm(2, n=candidate_n, latency_ms=np.full(candidate_n, 4.0))
    champion = analysis.Arm(1, n=champion_n, latency_ms=np.full(champion_n, 4.0))
    found = analysis.guardrails(candidate, champion, RULES)
    extra = [{"name": name, "status": status, "detail": "made up", "value": 1.0, "threshold": 0.5, "direction": "<=",
              "setting": f"deploy.canary.{name}"} for name, status in checks.items()]
    return analysis.Verdict(found + extra)


def test_windows_without_traffic_never_count_against_the_candidate() -> None:
    starved = window(3, 400)
    assert starved.result == "inconclusive" and starved.wants_traffic
    for extensions in range(RULES.max_extensions + 3):  # however long it starves, and after any extensions
        decision = judge_canary(RULES, step=0, extensions=extensions, verdict=starved)
        assert decision.action == "hold", decision
    assert "deploy.canary.min_requests" in decision.why and "3" in decision.why
    assert judge_canary(RULES, step=0, extensions=0, verdict=window(60, 400)).action == "next"  # the traffic came


def test_inconclusive_windows_with_traffic_use_extensions_then_roll_back() -> None:
    unsure = window(100, 400, feedback="inconclusive")
    assert not unsure.wants_traffic
    assert judge_canary(RULES, step=0, extensions=RULES.max_extensions - 1, verdict=unsure).action == "extend"
    last = judge_canary(RULES, step=0, extensions=RULES.max_extensions, verdict=unsure)
    assert last.action == "rollback" and "deploy.canary.max_extensions" in last.why
    # too little traffic *and* another inconclusive check: the other check is what counts
    assert judge_canary(RULES, step=0, extensions=RULES.max_extensions, verdict=window(3, 400, feedback="inconclusive")).action == "rollback"


def test_a_failed_check_rolls_back_naming_its_setting_and_passes_walk_the_steps() -> None:
    failed = judge_canary(RULES, step=1, extensions=0, verdict=window(100, 400, divergence="fail"))
    assert failed.action == "rollback"
    assert failed.why == "canary failed at 50%: divergence 1 > 0.5; the threshold is deploy.canary.divergence"
    early = {"name": "error_rate", "detail": "candidate 12/20 failed"}
    assert judge_canary(RULES, step=0, extensions=0, early=early).action == "rollback"
    assert judge_canary(RULES, step=0, extensions=0).action == "wait"
    assert judge_canary(RULES, step=0, extensions=0, verdict=window(100, 400)).why == "canary passed at 10%: 50%"
    assert judge_canary(RULES, step=1, extensions=2, verdict=window(100, 400)).action == "promote"
