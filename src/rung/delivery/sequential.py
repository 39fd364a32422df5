"""Always-valid A/B decisions between a champion (arm "a") and a candidate (arm "b").

A rollout controller looks at the data again and again. A fixed-horizon test
read that way declares false winners far more often than its alpha, so this
module uses the mixture sequential probability ratio test (mSPRT) with a normal
mixing distribution (Johari, Pekelis & Walsh, "Always valid inference", 2017/2022;
Optimizely's Stats Engine): its p-value and confidence interval stay valid at
every look, so the controller may stop as soon as p <= alpha.

The test is on the difference in means of two independent samples, with each
arm's variance plugged in from the data (the Bernoulli variance for 0/1
outcomes). Plugging in the variance is only approximately valid while samples
are small, which is why no decision is made before ``min_samples`` per arm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["ArmStats", "SequentialResult", "log_lambda", "msprt", "quantile_bins"]

Decision = Literal["b_better", "a_better", "continue"]


@dataclass(frozen=True)
class ArmStats:
    """Sufficient statistics of one arm: count, sum and sum of squares.

    Three numbers are all the test needs, so serving replicas can count
    outcomes per batch and merge them without keeping the outcomes.
    """

    n: int
    total: float
    total_sq: float

    @classmethod
    def of(cls, values: ArrayLike) -> ArmStats:
        """Statistics of an array-like of outcomes (0/1, conversions or rewards)."""
        x = np.asarray(values, dtype=float).ravel()
        if not np.all(np.isfinite(x)):
            raise ValueError("values must be finite")
        return cls(int(x.size), float(x.sum()), float(np.square(x).sum()))

    def merge(self, other: ArmStats) -> ArmStats:
        """Statistics of both samples together (e.g. two replicas, or two batches)."""
        return ArmStats(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); 0 when n < 2 or every value is the same."""
        if self.n < 2:
            return 0.0
        ss = self.total_sq - self.total * self.total / self.n
        # Rounding leaves a tiny (even negative) residue when all values are equal.
        return ss / (self.n - 1) if ss > 1e-12 * abs(self.total_sq) else 0.0


@dataclass(frozen=True)
class SequentialResult:
    """One look at the experiment: the decision and everything that explains it."""

    decision: Decision  # the caller decides when to give up ("inconclusive")
    p_value: float  # always-valid, and never above the previous_p passed in
    effect: float  # mean(b) - mean(a)
    ci_low: float  # always-valid CI for the effect at this look; +-inf before testing
    ci_high: float
    n_a: int
    n_b: int
    log_lambda: float  # log mixture likelihood ratio; 0 before testing
    alpha: float
    tau: float
    min_samples: int
    reason: str  # one sentence for logs and dashboards


def log_lambda(effect: ArrayLike, variance: ArrayLike, tau: float) -> np.ndarray:
    """Log of the mSPRT mixture likelihood ratio for an effect estimate with variance V.

    Lambda = sqrt(V/(V+tau^2)) * exp(effect^2 tau^2 / (2 V (V+tau^2))), kept in log
    space so that large samples do not overflow. Vectorised over numpy arrays so a
    simulation or dashboard can evaluate many looks at once; V must be > 0.
    """
    theta, v, t2 = np.asarray(effect, float), np.asarray(variance, float), tau * tau
    return 0.5 * np.log(v / (v + t2)) + theta**2 * t2 / (2 * v * (v + t2))


def msprt(
    a: ArmStats,
    b: ArmStats,
    *,
    alpha: float = 0.05,
    tau: float = 0.05,
    min_samples: int = 100,
    previous_p: float = 1.0,
) -> SequentialResult:
    """Test H0 "same mean" on everything seen so far; safe to call after every batch.

    ``tau`` is the standard deviation of the normal mixing distribution over effects:
    set it near the smallest effect worth detecting, on the outcome's scale. Pass the
    last look's p-value as ``previous_p`` so the p-value is the running minimum.
    The CI is the set of effects theta0 whose own mSPRT does not reject at this look;
    intersecting the CIs of successive looks is still valid.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if min_samples < 2:
        raise ValueError(f"min_samples must be >= 2, got {min_samples}")
    if not 0 <= previous_p <= 1:
        raise ValueError(f"previous_p must be in [0, 1], got {previous_p}")
    effect = b.mean - a.mean
    counts = f"n={a.n}/{b.n}"

    def wait(reason: str) -> SequentialResult:
        return SequentialResult("continue", previous_p, effect, -math.inf, math.inf, a.n, b.n,
                                0.0, alpha, tau, min_samples, reason)

    if min(a.n, b.n) < min_samples:
        return wait(f"waiting for {min_samples} samples per arm before testing, {counts}")
    v = a.variance / a.n + b.variance / b.n
    if v <= 0:
        return wait(f"no variance in the outcomes (all values identical within each arm), "
                    f"nothing to test yet, {counts}")
    t2 = tau * tau
    ll = float(log_lambda(effect, v, tau))
    p = min(previous_p, math.exp(-ll) if ll > 0 else 1.0)
    # Lambda(theta0) < 1/alpha  <=>  (effect - theta0)^2 < half^2, solved for theta0.
    half = math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) - 2 * math.log(alpha)))
    decision: Decision = "continue"
    label = "no significant difference yet"
    if p <= alpha and effect > 0:
        decision, label = "b_better", "candidate better"
    elif p <= alpha and effect < 0:
        decision, label = "a_better", "champion better"
    reason = (f"{label}: {effect:+.3g} (always-valid {100 * (1 - alpha):g}% CI "
              f"{effect - half:.3g}..{effect + half:.3g}), p={p:.3g} {'<=' if p <= alpha else '>'} "
              f"{alpha:g}, {counts}")
    return SequentialResult(decision, p, effect, effect - half, effect + half, a.n, b.n, ll,
                            alpha, tau, min_samples, reason)


def quantile_bins(a_values: ArrayLike, b_values: ArrayLike, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Both samples of scores histogrammed on common edges at quantiles of the pooled sample.

    Canary checks compare a regressor's predictions with the champion's by
    passing these counts to :func:`rung.monitor.stats.js_distance` in base 2
    (distances in [0, 1]). Quantile edges follow the data's scale; ties merge
    edges, and all values equal make one bin (distance 0).
    """
    a = np.asarray(a_values, dtype=float).ravel()
    b = np.asarray(b_values, dtype=float).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("a_values and b_values must not be empty")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    pooled = np.concatenate([a, b])
    if not np.all(np.isfinite(pooled)):
        raise ValueError("a_values and b_values must be finite")
    edges = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, bins + 1)))
    if edges.size < 2:
        return np.array([a.size]), np.array([b.size])
    return np.histogram(a, edges)[0], np.histogram(b, edges)[0]
