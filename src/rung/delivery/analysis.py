"""What the controller judges: a window of the request log, candidate against champion.

Each check says pass, fail, inconclusive or skipped, with the statistic,
its value, the threshold and the sample sizes, so the event that records a
decision carries its own evidence. A window verdict is ``fail`` if any
check failed, ``inconclusive`` if one lacked data (never a promotion), else
``pass``. A failed check names the setting that sets its threshold
(``deploy.canary.max_divergence`` ...), so the message of a rollback says
what to change if the difference is expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rung.config import AbSettings, CanarySettings, Guardrails, ShadowSettings
from rung.delivery.sequential import ArmStats, msprt, quantile_bins
from rung.monitor.stats import js_distance

__all__ = ["Arm", "Verdict", "arms", "guardrails", "early_failure", "ab_decision", "shadow_checks", "setting"]

_SECTIONS = {CanarySettings: "deploy.canary", AbSettings: "deploy.ab", ShadowSettings: "deploy.shadow"}


@dataclass(frozen=True)
class Arm:
    """One version's requests in a window."""

    version: int | None
    n: int = 0
    errors: int = 0
    latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    outcomes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # from feedback: correct (1/0), reward, -|error|
    predictions: dict[str, str] = field(default_factory=dict)  # request id -> prediction (shadow agreement)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))  # a classifier's predicted classes

    @property
    def error_rate(self) -> float:
        return self.errors / self.n if self.n else 0.0

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.latency_ms, 99)) if len(self.latency_ms) else math.nan


@dataclass(frozen=True)
class Verdict:
    checks: list[dict[str, Any]]

    @property
    def result(self) -> str:
        statuses = {c["status"] for c in self.checks}
        return "fail" if "fail" in statuses else "inconclusive" if "inconclusive" in statuses else "pass"

    def failed(self) -> list[str]:
        return [c["name"] for c in self.checks if c["status"] == self.result]

    @property
    def wants_traffic(self) -> bool:
        """Inconclusive only for lack of requests: the window has said nothing yet, for or against the candidate."""
        return self.result == "inconclusive" and self.failed() == ["traffic"]

    def explain(self) -> str:
        """The checks that decided, each with its value, threshold and the setting that sets the threshold."""
        parts = []
        for c in self.checks:
            if c["status"] != self.result:
                continue
            if c.get("value") is None or c.get("threshold") is None:
                parts.append(f"{c['name']} ({c['detail']})")
                continue
            wrong = "<" if c.get("direction") == ">=" else ">"
            where = f"; the threshold is {c['setting']}" if c.get("setting") else ""
            parts.append(f"{c['name']} {c['value']:.4g} {wrong} {c['threshold']:.4g}{where}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "checks": self.checks}


def arms(rows: list[dict[str, Any]], candidate: int, champion: int | None, *, outcome: str, shadow: bool = False) -> tuple[Arm, Arm]:
    """Split logged requests into the candidate's and the champion's arms.

    ``shadow``: the candidate's rows are the shadow copies. ``outcome`` turns
    feedback into one number per request: ``accuracy`` (1 when the label
    matches the prediction; for regression, minus the absolute error) or
    ``reward`` (the feedback value itself).
    """
    picked: dict[int | None, list[dict[str, Any]]] = {candidate: [], champion: []}
    for row in rows:
        is_candidate = row["version"] == candidate and bool(row["shadow"]) == shadow
        is_champion = row["version"] == champion and not row["shadow"]
        if is_candidate:
            picked[candidate].append(row)
        elif is_champion:
            picked[champion].append(row)
    return _arm(candidate, picked[candidate], outcome), _arm(champion, picked[champion], outcome)


def _arm(version: int | None, rows: list[dict[str, Any]], outcome: str) -> Arm:
    if not rows:
        return Arm(version)
    ok = [r for r in rows if r["status"] < 500]
    outcomes = [o for o in (_outcome(r, outcome) for r in ok) if o is not None]
    classifier = any(_is_label(r) for r in ok)
    return Arm(
        version,
        n=len(rows),
        errors=len(rows) - len(ok),
        latency_ms=np.fromiter((r["latency_ms"] for r in ok), float, len(ok)),
        scores=np.array([r["score"] for r in ok if r["score"] is not None], dtype=float),
        outcomes=np.array(outcomes, dtype=float),
        predictions={r["request_id"]: r["prediction"] for r in ok},
        labels=np.array([r["prediction"] for r in ok if r["prediction"] is not None] if classifier else [], dtype=str),
    )


def _is_label(row: dict[str, Any]) -> bool:
    """A classifier's row: its score is a probability, not the prediction itself (as a regressor's is)."""
    if row["score"] is None or row["prediction"] is None:
        return False
    try:
        return float(row["prediction"]) != row["score"]
    except ValueError:
        return True  # a class name


def _outcome(row: dict[str, Any], outcome: str) -> float | None:
    value = row.get("value")
    if value is None:
        return None
    if outcome == "reward":
        return float(value)
    try:
        predicted = float(row["prediction"])
    except (TypeError, ValueError):
        return None
    if row["score"] is not None and predicted in (0.0, 1.0) and float(value).is_integer():
        return 1.0 if predicted == value else 0.0  # a label
    return -abs(predicted - value)


def early_failure(candidate: Arm, champion: Arm, rules: Guardrails) -> dict[str, Any] | None:
    """A candidate whose errors are already clearly worse fails before its window ends.

    One-sided two-proportion z-test at z > 3 (about 1 in 740 by chance per
    look), on top of the margin, once the candidate has 20 requests.
    """
    if candidate.n < 20:
        return None
    check = _errors(candidate, champion, rules)
    if check["status"] != "fail":
        return None
    pooled = (candidate.errors + champion.errors) / max(candidate.n + champion.n, 1)
    spread = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / candidate.n + 1 / max(champion.n, 1)))
    z = (candidate.error_rate - champion.error_rate - rules.error_margin) / spread
    return check | {"detail": check["detail"] + f" (z = {z:.1f} > 3: failed before the window ended)"} if z > 3 else None


def guardrails(candidate: Arm, champion: Arm, rules: Guardrails) -> list[dict[str, Any]]:
    """Traffic, errors, latency, prediction divergence and (with enough feedback) the outcome."""
    checks = [_traffic(candidate, champion, rules)]
    enough = checks[0]["status"] == "pass"
    checks.append(_errors(candidate, champion, rules) if enough else _skip("errors", "not enough requests"))
    if enough and len(candidate.latency_ms) and len(champion.latency_ms):
        limit = max(champion.p99_ms * rules.latency_ratio, champion.p99_ms + rules.latency_slack_ms)
        checks.append(_check("latency_p99_ms", candidate.p99_ms <= limit, candidate.p99_ms, limit, candidate, champion,
                             f"candidate p99 {candidate.p99_ms:.1f} ms, champion {champion.p99_ms:.1f} ms",
                             setting=setting(rules, "latency_ratio" if limit == champion.p99_ms * rules.latency_ratio
                                             else "latency_slack_ms")))
    if enough and len(candidate.scores) and len(champion.scores):
        checks.append(_divergence(candidate, champion, rules))
    checks.append(_outcome_check(candidate, champion, rules))
    return checks


def ab_decision(candidate: Arm, champion: Arm, rules: AbSettings, previous_p: float = 1.0) -> dict[str, Any]:
    """The mSPRT on the outcome: ``decision`` is ``candidate``, ``champion`` or ``continue``."""
    result = msprt(ArmStats.of(champion.outcomes), ArmStats.of(candidate.outcomes), alpha=rules.alpha, tau=rules.tau,
                   min_samples=rules.min_samples, previous_p=previous_p)
    decision = {"b_better": "candidate", "a_better": "champion"}.get(result.decision, "continue")
    return {
        "name": "ab_outcome", "statistic": "mSPRT always-valid p-value", "decision": decision,
        "value": result.p_value, "threshold": rules.alpha, "effect": _finite(result.effect),
        "ci": [_finite(result.ci_low), _finite(result.ci_high)],  # None: unbounded yet (JSON has no infinity)
        "n_candidate": result.n_b, "n_champion": result.n_a,
        "detail": result.reason,
    }


def shadow_checks(candidate: Arm, champion: Arm, rules: ShadowSettings) -> list[dict[str, Any]]:
    """Guardrails plus agreement: the share of mirrored requests where the candidate said what the champion said."""
    checks = guardrails(candidate, champion, rules)
    both = [rid for rid in candidate.predictions if rid in champion.predictions]
    if len(both) < rules.min_requests:
        checks.append(_skip("agreement", f"{len(both)} mirrored requests with both answers, fewer than {rules.min_requests}",
                            status="inconclusive"))
    else:
        agreement = sum(candidate.predictions[r] == champion.predictions[r] for r in both) / len(both)
        checks.append(_check("agreement", agreement >= rules.min_agreement, agreement, rules.min_agreement, candidate, champion,
                             f"same answer on {agreement:.1%} of {len(both)} mirrored requests", higher=True,
                             setting=setting(rules, "min_agreement")))
    return checks


def _divergence(candidate: Arm, champion: Arm, rules: Guardrails, permutations: int = 200) -> dict[str, Any]:
    """Jensen-Shannon distance of what the versions predict, failing only when it is both large and real.

    For a classifier the distributions compared are of the predicted
    classes: the logged score of a multiclass model is its top probability,
    and comparing those penalises a sharper model (a near one-hot, better
    model against a smoother champion is 0.5-0.9 apart) where the decisions
    agree. For a regressor they are of the predicted values, on a histogram.

    On a few hundred requests two samples of one distribution are already
    0.1-0.3 apart on a 20-bin histogram, so a bare threshold would roll back
    good candidates at small canary shares. The distance must exceed
    ``max_divergence`` and the 99th percentile of the distances between
    random splits of the pooled sample (a permutation test at 1%).
    """
    rng = np.random.default_rng(0)
    labelled = bool(len(candidate.labels) and len(champion.labels))
    a, b = (candidate.labels, champion.labels) if labelled else (candidate.scores, champion.scores)
    # 5,000 a side say all 20 bins (or a few classes) can; more only slows the permutations
    a, b = (x if len(x) <= 5000 else rng.choice(x, 5000, replace=False) for x in (a, b))
    if labelled:
        classes, codes = np.unique(np.concatenate([a, b]), return_inverse=True)
        a, b = codes[:len(a)], codes[len(a):]

        def distance(x: np.ndarray, y: np.ndarray) -> float:
            return js_distance(np.bincount(x, minlength=len(classes)), np.bincount(y, minlength=len(classes)), base=2)

        what = f"Jensen-Shannon distance of the predicted classes ({len(classes)} classes)"
    else:
        bins = int(min(20, max(4, min(len(a), len(b)) // 10)))

        def distance(x: np.ndarray, y: np.ndarray) -> float:
            return js_distance(*quantile_bins(x, y, bins=bins), base=2)

        what = f"Jensen-Shannon distance of the prediction scores ({bins} bins)"
    observed = distance(a, b)
    pooled = np.concatenate([a, b])
    null = []
    for _ in range(permutations):
        rng.shuffle(pooled)
        null.append(distance(pooled[:len(a)], pooled[len(a):]))
    noise = float(np.quantile(null, 0.99))
    limit = max(rules.max_divergence, noise)
    name = setting(rules, "max_divergence")
    return _check("divergence", observed <= limit, observed, limit, candidate, champion,
                  f"{what}; chance alone gives up to {noise:.3f} at these sample sizes (99th percentile of {permutations} "
                  f"permutations); if a difference this large is expected, raise {name} (now {rules.max_divergence:g})",
                  setting=name)


def setting(rules: Guardrails, key: str) -> str:
    """The configuration key of a guardrail setting, as a user writes it in rung.yaml (``deploy.canary.max_divergence``)."""
    return f"{_SECTIONS.get(type(rules), 'deploy')}.{key}"


def _traffic(candidate: Arm, champion: Arm, rules: Guardrails) -> dict[str, Any]:
    low = min(candidate.n, champion.n)
    status = "pass" if low >= rules.min_requests else "inconclusive"
    return {"name": "traffic", "status": status, "value": low, "threshold": rules.min_requests, "direction": ">=",
            "n_candidate": candidate.n, "n_champion": champion.n, "setting": setting(rules, "min_requests"),
            "detail": f"{candidate.n} candidate and {champion.n} champion requests (at least {rules.min_requests} each)"}


def _errors(candidate: Arm, champion: Arm, rules: Guardrails) -> dict[str, Any]:
    limit = champion.error_rate + rules.error_margin
    return _check("error_rate", candidate.error_rate <= limit, candidate.error_rate, limit, candidate, champion,
                  f"candidate {candidate.errors}/{candidate.n} failed, champion {champion.errors}/{champion.n}",
                  setting=setting(rules, "error_margin"))


def _outcome_check(candidate: Arm, champion: Arm, rules: Guardrails) -> dict[str, Any]:
    low = min(len(candidate.outcomes), len(champion.outcomes))
    if low < rules.min_feedback:
        return _skip("outcome", f"{len(candidate.outcomes)}/{len(champion.outcomes)} outcomes with feedback, "
                                f"fewer than {rules.min_feedback} per arm")
    ours, theirs = float(candidate.outcomes.mean()), float(champion.outcomes.mean())
    limit = theirs - rules.outcome_margin
    return _check("outcome", ours >= limit, ours, limit, candidate, champion,
                  f"candidate {ours:.4f} vs champion {theirs:.4f} on {low}+ outcomes", higher=True,
                  setting=setting(rules, "outcome_margin"))


def _check(name: str, ok: bool, value: float, threshold: float, candidate: Arm, champion: Arm, detail: str,
           higher: bool = False, setting: str | None = None) -> dict[str, Any]:
    check = {"name": name, "status": "pass" if ok else "fail", "value": _finite(value), "threshold": _finite(threshold),
             "direction": ">=" if higher else "<=", "n_candidate": candidate.n, "n_champion": champion.n, "detail": detail}
    return check | ({"setting": setting} if setting else {})


def _skip(name: str, detail: str, status: str = "skipped") -> dict[str, Any]:
    return {"name": name, "status": status, "detail": detail}


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
