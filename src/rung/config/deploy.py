"""The ``deploy:`` section of ``rung.yaml``: how a certified version reaches traffic, and the guardrails it is judged by."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from rung.config.section import Section

__all__ = ["Guardrails", "CanarySettings", "AbSettings", "ShadowSettings", "DeploySettings"]


class Guardrails(Section):
    """Checks of a candidate against the champion over one analysis window (canary, A/B, shadow)."""

    min_requests: int = Field(default=100, ge=1)  # per arm, in the window; fewer: inconclusive
    error_margin: float = Field(default=0.01, ge=0, le=1)  # candidate error rate may exceed the champion's by this much
    latency_ratio: float = Field(default=1.5, ge=1)  # candidate p99 may be this many times the champion's ...
    latency_slack_ms: float = Field(default=5.0, ge=0)  # ... or this many ms above it, whichever is larger
    max_divergence: float = Field(default=0.2, ge=0, le=1)  # Jensen-Shannon distance of the score distributions
    outcome_margin: float = Field(default=0.02, ge=0)  # candidate outcome may be this much below the champion's
    min_feedback: int = Field(default=50, ge=1)  # per arm, before the outcome check counts


class CanarySettings(Guardrails):
    steps: list[float] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0])  # candidate's % of traffic
    window_s: float = Field(default=300.0, gt=0)  # each step is held at least this long
    max_extensions: int = Field(default=3, ge=0)  # inconclusive windows tolerated per step before rolling back

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[0] >= 100:
            raise ValueError("increasing percentages in (0, 100], at least one below 100, e.g. [5, 25, 50, 100]")
        return steps if steps[-1] == 100 else [*steps, 100.0]


class AbSettings(Guardrails):
    split: float = Field(default=50.0, gt=0, lt=100)  # candidate's % of traffic
    alpha: float = Field(default=0.05, gt=0, lt=1)  # false-positive rate of the winner, however often it is looked at
    tau: float = Field(default=0.05, gt=0)  # mixing scale of the mSPRT: about the smallest effect worth finding
    min_samples: int = Field(default=100, ge=2)  # outcomes per arm before a decision may be taken
    check_every_s: float = Field(default=60.0, gt=0)
    max_duration_s: float = Field(default=14 * 86400.0, gt=0)  # no winner by then: the champion stays


class ShadowSettings(Guardrails):
    window_s: float = Field(default=600.0, gt=0)
    min_agreement: float = Field(default=0.9, ge=0, le=1)  # share of requests where the candidate says what the champion said
    max_duration_s: float = Field(default=86400.0, gt=0)  # not enough traffic by then: rolled back


class DeploySettings(Section):
    """``rung deploy`` and the controller: how a certified version reaches traffic."""

    strategy: Literal["direct", "canary", "ab", "shadow"] = "canary"
    approval: Literal["none", "required"] = "none"  # required: promotion waits for `rung approve`
    outcome: Literal["accuracy", "reward"] = "accuracy"  # feedback is the true label, or a reward/conversion number
    grace_s: float = Field(default=600.0, ge=0)  # the previous champion stays loaded (weight 0) this long after a promotion
    canary: CanarySettings = Field(default_factory=CanarySettings)
    ab: AbSettings = Field(default_factory=AbSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
