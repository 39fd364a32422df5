"""rung.delivery.sequential: the mSPRT is right, stays within alpha under peeking, has power.

Simulations are vectorised: each arm's outcomes are drawn as an (experiments, looks,
batch) array, and cumulative sums over looks give the statistics at every look.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.spatial.distance import jensenshannon

from rung.delivery.sequential import ArmStats, log_lambda, msprt, quantile_bins
from rung.monitor.stats import js_distance

ALPHA = 0.05
BATCH, LOOKS = 50, 60  # a look after every 50 per arm, up to 3,000 per arm


def _cumulative(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums and sums of squares at every look, from (experiments, looks, batch) outcomes."""
    return x.sum(axis=2).cumsum(axis=1), (x * x).sum(axis=2).cumsum(axis=1)


def _simulate(xa: np.ndarray, xb: np.ndarray, *, tau: float, min_samples: int = 100):
    """Effect, its variance, and whether the test rejects, at every look of every experiment."""
    n = xa.shape[2] * np.arange(1, xa.shape[1] + 1)
    (sa, qa), (sb, qb) = _cumulative(xa), _cumulative(xb)
    effect = sb / n - sa / n
    with np.errstate(divide="ignore", invalid="ignore"):  # n=1 and V=0 looks are masked below
        var_a, var_b = (qa - sa**2 / n) / (n - 1), (qb - sb**2 / n) / (n - 1)
        v = var_a / n + var_b / n
        ll = log_lambda(effect, v, tau)
    reject = (n >= min_samples) & (v > 0) & (np.exp(-np.maximum(ll, 0.0)) <= ALPHA)
    return n, effect, v, reject


def _bernoulli(rng, p: float, experiments: int, looks: int = LOOKS, batch: int = BATCH):
    return (rng.random((experiments, looks, batch)) < p).astype(float)


def _bound(experiments: int) -> float:
    """alpha plus three standard errors of a rate measured on this many experiments."""
    return ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / experiments)


# -- the formula ------------------------------------------------------------------------


@pytest.mark.parametrize(("effect", "v", "tau"), [(0.03, 4e-4, 0.05), (0.05, 1.4e-4, 0.05), (-0.4, 0.01, 1.0)])
def test_lambda_matches_numerical_integral_over_mixing_prior(effect, v, tau):
    """Lambda = integral of N(effect; theta, V)/N(effect; 0, V) over theta ~ N(0, tau^2)."""
    sd = math.sqrt(v)
    null = stats.norm.pdf(effect, 0.0, sd)

    def integrand(theta: float) -> float:
        return stats.norm.pdf(effect, theta, sd) / null * stats.norm.pdf(theta, 0.0, tau)

    value, _ = integrate.quad(integrand, effect - 40 * sd, effect + 40 * sd, epsabs=0, epsrel=1e-11, limit=200)
    assert math.exp(float(log_lambda(effect, v, tau))) == pytest.approx(value, rel=1e-6)


def test_msprt_p_value_and_interval_follow_from_lambda():
    a, b = ArmStats(n=900, total=270.0, total_sq=270.0), ArmStats(n=880, total=310.0, total_sq=310.0)
    r = msprt(a, b, alpha=ALPHA, tau=0.05)
    v = a.variance / a.n + b.variance / b.n
    assert r.effect == pytest.approx(310 / 880 - 270 / 900)
    assert a.variance == pytest.approx(0.3 * 0.7 * 900 / 899)  # Bernoulli, ddof=1
    assert r.log_lambda == pytest.approx(float(log_lambda(r.effect, v, 0.05)))
    assert r.p_value == pytest.approx(min(1.0, math.exp(-r.log_lambda)))
    # The CI ends are exactly where the mSPRT of H0: theta = theta0 starts rejecting.
    for end in (r.ci_low, r.ci_high):
        assert float(log_lambda(r.effect - end, v, 0.05)) == pytest.approx(-math.log(ALPHA), rel=1e-9)
    assert r.ci_low < r.effect < r.ci_high
    assert (r.n_a, r.n_b, r.alpha, r.tau, r.min_samples) == (900, 880, ALPHA, 0.05, 100)


def test_ci_excludes_zero_exactly_when_p_at_most_alpha():
    rng = np.random.default_rng(11)
    decisions = set()
    for _ in range(400):
        n_a, n_b = rng.integers(100, 5000, size=2)
        p_a = rng.uniform(0.05, 0.9)
        p_b = float(np.clip(p_a + rng.normal(0, 0.05), 0.01, 0.99))
        a, b = ArmStats.of(rng.random(n_a) < p_a), ArmStats.of(rng.random(n_b) < p_b)
        r = msprt(a, b)
        assert (r.ci_low > 0 or r.ci_high < 0) == (r.p_value <= ALPHA), r.reason
        decisions.add(r.decision)
    assert decisions == {"b_better", "a_better", "continue"}  # the check saw every case


def test_arm_stats_of_and_merge():
    rng = np.random.default_rng(3)
    x, y = rng.normal(2.0, 3.0, 500), rng.normal(2.0, 3.0, 700)
    s = ArmStats.of(x).merge(ArmStats.of(y))
    both = np.concatenate([x, y])
    assert s.n == 1200
    assert s.mean == pytest.approx(both.mean())
    assert s.variance == pytest.approx(both.var(ddof=1))
    assert ArmStats.of([1.0]).variance == 0.0
    assert ArmStats.of([0.1] * 1000).variance == 0.0  # rounding residue is not variance
    with pytest.raises(ValueError, match="finite"):
        ArmStats.of([1.0, float("nan")])


# -- the rules --------------------------------------------------------------------------


def test_continue_before_min_samples_and_without_variance():
    big_gap = msprt(ArmStats.of(np.zeros(99)), ArmStats.of(np.r_[np.ones(90), np.zeros(10)]))
    assert big_gap.decision == "continue" and big_gap.p_value == 1.0
    assert "100 samples" in big_gap.reason and "n=99/100" in big_gap.reason
    flat = msprt(ArmStats.of(np.zeros(500)), ArmStats.of(np.ones(500)))
    assert flat.decision == "continue" and "no variance" in flat.reason
    assert math.isinf(flat.ci_low) and math.isinf(flat.ci_high)


def test_decisions_and_reason():
    rng = np.random.default_rng(5)
    champion, candidate = ArmStats.of(rng.random(3000) < 0.30), ArmStats.of(rng.random(3000) < 0.40)
    r = msprt(champion, candidate)
    assert r.decision == "b_better" and r.p_value <= ALPHA and r.ci_low > 0
    assert r.reason.startswith("candidate better: +") and "95% CI" in r.reason and "<= 0.05" in r.reason
    assert msprt(candidate, champion).decision == "a_better"
    assert msprt(champion, champion).decision == "continue"


def test_previous_p_makes_p_non_increasing():
    rng = np.random.default_rng(8)
    a, b, p = ArmStats(0, 0.0, 0.0), ArmStats(0, 0.0, 0.0), 1.0
    ps = []
    for _ in range(60):
        a, b = a.merge(ArmStats.of(rng.random(50) < 0.3)), b.merge(ArmStats.of(rng.random(50) < 0.33))
        fresh = msprt(a, b).p_value
        p = msprt(a, b, previous_p=p).p_value
        assert p <= fresh
        ps.append(p)
    assert all(later <= earlier for earlier, later in zip(ps, ps[1:], strict=False))
    assert len(set(ps)) > 2  # the sequence did move


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"tau": 0.0}, "tau"),
        ({"tau": float("nan")}, "tau"),
        ({"min_samples": 1}, "min_samples"),
        ({"previous_p": 1.5}, "previous_p"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    a = ArmStats.of(np.r_[np.ones(100), np.zeros(100)])
    with pytest.raises(ValueError, match=name):
        msprt(a, a, **kwargs)


# -- behaviour under continuous monitoring ----------------------------------------------


def test_vectorised_simulation_agrees_with_msprt():
    """The simulations below use log_lambda on arrays; msprt must decide the same."""
    rng = np.random.default_rng(21)
    xa, xb = _bernoulli(rng, 0.30, 40), _bernoulli(rng, 0.34, 40)
    _, effect, _, reject = _simulate(xa, xb, tau=0.05)
    for e in range(40):
        a, b, p = ArmStats(0, 0.0, 0.0), ArmStats(0, 0.0, 0.0), 1.0
        for look in range(LOOKS):
            a, b = a.merge(ArmStats.of(xa[e, look])), b.merge(ArmStats.of(xb[e, look]))
            r = msprt(a, b, tau=0.05, previous_p=p)
            p = r.p_value
            assert (p <= ALPHA) == bool(reject[e, : look + 1].any())
            assert r.effect == pytest.approx(effect[e, look], abs=1e-12)


def test_aa_bernoulli_false_positive_rate_within_alpha():
    rng = np.random.default_rng(1)
    experiments = 2000
    *_, reject = _simulate(_bernoulli(rng, 0.3, experiments), _bernoulli(rng, 0.3, experiments), tau=0.05)
    rate = reject.any(axis=1).mean()
    assert rate <= _bound(experiments), f"A/A Bernoulli false-positive rate {rate:.4f} > {_bound(experiments):.4f}"
    print(f"A/A Bernoulli(0.3), 60 looks: false-positive rate {rate:.4f}")


def test_aa_normal_reward_false_positive_rate_within_alpha():
    rng = np.random.default_rng(2)
    experiments, shape = 2000, (2000, LOOKS, BATCH)
    xa, xb = rng.normal(1.0, 2.0, shape), rng.normal(1.0, 2.0, shape)
    *_, reject = _simulate(xa, xb, tau=0.2)
    rate = reject.any(axis=1).mean()
    assert rate <= _bound(experiments), f"A/A normal false-positive rate {rate:.4f} > {_bound(experiments):.4f}"
    print(f"A/A Normal(1, 2), 60 looks: false-positive rate {rate:.4f}")


def test_burn_in_is_what_keeps_plug_in_variance_valid():
    """Looking at every sample from n=2 with a plug-in variance breaks alpha; min_samples fixes it."""
    rng = np.random.default_rng(4)
    experiments, shape = 2000, (2000, 300, 1)
    xa, xb = rng.normal(0.0, 1.0, shape), rng.normal(0.0, 1.0, shape)
    early = _simulate(xa, xb, tau=1.0, min_samples=2)[3].any(axis=1).mean()
    burned_in = _simulate(xa, xb, tau=1.0, min_samples=100)[3].any(axis=1).mean()
    assert early > _bound(experiments), f"expected inflation without burn-in, got {early:.4f}"
    assert burned_in <= _bound(experiments), f"with min_samples=100: {burned_in:.4f} > {_bound(experiments):.4f}"
    print(f"A/A Normal, every sample looked at: rate {early:.4f} from n=2, {burned_in:.4f} from n=100")


def test_power_candidate_035_vs_champion_030():
    rng = np.random.default_rng(6)
    experiments = 500
    n, effect, _, reject = _simulate(_bernoulli(rng, 0.30, experiments), _bernoulli(rng, 0.35, experiments), tau=0.05)
    ever = reject.any(axis=1)
    first = reject.argmax(axis=1)
    sign = effect[np.arange(experiments), first]
    b_better, a_better = (ever & (sign > 0)).mean(), (ever & (sign < 0)).mean()
    median_n = float(np.median(n[first[ever & (sign > 0)]]))
    assert b_better >= 0.80, f"power {b_better:.3f} < 0.80 (median n at decision {median_n:.0f})"
    assert a_better <= 0.01, f"wrong-direction decisions {a_better:.3f}"
    print(f"power {b_better:.3f}, wrong direction {a_better:.3f}, median n per arm at decision {median_n:.0f}")


def test_always_valid_ci_covers_true_effect_at_every_look():
    """Coverage holds uniformly over looks: the CI must cover 0.05 at all 60 looks at once."""
    rng = np.random.default_rng(9)
    experiments = 2000
    xa, xb = _bernoulli(rng, 0.30, experiments), _bernoulli(rng, 0.35, experiments)
    (sa, qa), (sb, qb) = _cumulative(xa), _cumulative(xb)
    n = BATCH * np.arange(1, LOOKS + 1)
    covered = np.ones(experiments, dtype=bool)
    for look in range(1, LOOKS):  # the first look (n=50) is below min_samples
        for e in range(experiments):
            if covered[e]:
                r = msprt(ArmStats(int(n[look]), sa[e, look], qa[e, look]),
                          ArmStats(int(n[look]), sb[e, look], qb[e, look]))
                covered[e] = r.ci_low < 0.05 < r.ci_high
    rate = covered.mean()
    assert rate >= 1 - _bound(experiments), f"uniform coverage {rate:.4f} < {1 - _bound(experiments):.4f}"
    print(f"always-valid CI covered the true effect at all looks in {rate:.4f} of experiments")


# -- Jensen-Shannon -----------------------------------------------------------------------


def jensen_shannon(a_values: object, b_values: object, bins: int = 20) -> float:
    """Delivery's distance of two score samples: quantile bins, base 2."""
    return js_distance(*quantile_bins(a_values, b_values, bins=bins), base=2)  # type: ignore[arg-type]


def test_jensen_shannon_same_distribution_is_near_zero_and_symmetric():
    rng = np.random.default_rng(12)
    x, y = rng.beta(2, 5, 5000), rng.beta(2, 5, 5000)
    d = jensen_shannon(x, y)
    assert 0.0 <= d < 0.05
    assert jensen_shannon(y, x) == pytest.approx(d, abs=1e-12)
    assert jensen_shannon(x, x) == pytest.approx(0.0, abs=1e-7)
    shifted = rng.beta(5, 2, 5000)
    assert jensen_shannon(x, shifted) == pytest.approx(jensen_shannon(shifted, x), abs=1e-12)
    assert jensen_shannon(x, shifted) > 0.5


def test_jensen_shannon_disjoint_is_one():
    rng = np.random.default_rng(13)
    assert jensen_shannon(rng.uniform(0, 1, 1000), rng.uniform(2, 3, 1000)) == pytest.approx(1.0, abs=1e-9)


def test_jensen_shannon_matches_scipy_on_the_same_histograms():
    rng = np.random.default_rng(14)
    x, y = rng.normal(0, 1, 3000), rng.normal(0.3, 1.2, 2000)
    for bins in (5, 20, 50):
        edges = np.unique(np.quantile(np.concatenate([x, y]), np.linspace(0, 1, bins + 1)))
        p, q = np.histogram(x, edges)[0], np.histogram(y, edges)[0]
        assert jensen_shannon(x, y, bins=bins) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-9)


def test_jensen_shannon_edge_cases():
    assert jensen_shannon([0.7] * 10, [0.7] * 5) == 0.0
    with pytest.raises(ValueError, match="empty"):
        jensen_shannon([], [0.1, 0.2])
    with pytest.raises(ValueError, match="bins"):
        jensen_shannon([0.1], [0.2], bins=0)
