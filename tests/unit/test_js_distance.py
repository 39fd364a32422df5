"""The one Jensen-Shannon distance (:func:`rung.monitor.stats.js_distance`) against the two it replaced.

Drift detection had its own (natural log, via ``rel_entr``) and delivery its
own (base 2, via ``log2``). Both formulas are kept here as oracles, verbatim,
so that the shared function is shown to give the same numbers on random
counts, on sparse and near-identical ones, and through each caller's binning.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import rel_entr

from rung.delivery.sequential import quantile_bins
from rung.monitor.stats import evidently_bins, js_distance


def _old_drift_js(p: np.ndarray, q: np.ndarray) -> float:
    """rung.monitor.stats._js_from_shares, as it was: natural log."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / p.sum() if p.sum() else np.zeros(p.shape)
    q = q / q.sum() if q.sum() else np.zeros(q.shape)
    m = (p + q) / 2.0
    divergence = (np.sum(rel_entr(p, m)) + np.sum(rel_entr(q, m))) / 2.0
    return float(math.sqrt(max(divergence, 0.0)))


def _old_delivery_js_counts(a_counts: np.ndarray, b_counts: np.ndarray) -> float:
    """rung.delivery.sequential.jensen_shannon_counts, as it was: base 2, at most 1."""
    p_counts = np.asarray(a_counts, dtype=float).ravel()
    q_counts = np.asarray(b_counts, dtype=float).ravel()
    p, q = p_counts / p_counts.sum(), q_counts / q_counts.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return min(1.0, math.sqrt(max(0.0, (kl(p) + kl(q)) / 2)))


def _old_delivery_js(a_values: np.ndarray, b_values: np.ndarray, bins: int = 20) -> float:
    """rung.delivery.sequential.jensen_shannon, as it was: quantile bins of the pooled sample."""
    a, b = np.asarray(a_values, dtype=float).ravel(), np.asarray(b_values, dtype=float).ravel()
    edges = np.unique(np.quantile(np.concatenate([a, b]), np.linspace(0.0, 1.0, bins + 1)))
    if edges.size < 2:
        return 0.0
    return _old_delivery_js_counts(np.histogram(a, edges)[0], np.histogram(b, edges)[0])


def _count_pairs(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random count vectors: dense, sparse (zeros on one side or both), near-identical, disjoint, one bin."""
    rng = np.random.default_rng(seed)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for size in (1, 2, 3, 7, 20, 64, 500):
        p, q = rng.integers(0, 1000, size), rng.integers(0, 1000, size)
        p[0], q[-1] = max(p[0], 1), max(q[-1], 1)
        pairs.append((p, q))
        sparse_p, sparse_q = p * (rng.random(size) < 0.5), q * (rng.random(size) < 0.5)
        sparse_p[0], sparse_q[-1] = max(sparse_p[0], 1), max(sparse_q[-1], 1)
        pairs.append((sparse_p, sparse_q))
        near = p.copy()
        near[rng.integers(0, size)] += 1
        pairs.append((p, near))
        pairs.append((p, p.copy()))
        pairs.append((rng.random(size) + 1e-3, rng.random(size) + 1e-3))  # shares, not counts
    pairs.append((np.array([5, 0]), np.array([0, 7])))  # disjoint
    return pairs


@pytest.mark.parametrize("seed", range(5))
def test_natural_log_is_what_drift_computed(seed: int) -> None:
    for p, q in _count_pairs(seed):
        assert js_distance(p, q, base=math.e) == pytest.approx(_old_drift_js(p, q), abs=1e-12, rel=1e-12), (p, q)


@pytest.mark.parametrize("seed", range(5))
def test_base_2_is_what_delivery_computed(seed: int) -> None:
    for p, q in _count_pairs(seed):
        assert js_distance(p, q, base=2) == pytest.approx(_old_delivery_js_counts(p, q), abs=1e-12, rel=1e-12), (p, q)


@pytest.mark.parametrize("seed", range(5))
def test_each_callers_binning_gives_the_old_numbers(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    for n_a, n_b in ((10, 10), (300, 700), (5000, 5000)):
        a, b = rng.normal(0, 1, n_a), rng.normal(rng.uniform(-1, 1), rng.uniform(0.5, 2), n_b)
        for bins in (1, 4, 20, 50):
            assert js_distance(*quantile_bins(a, b, bins=bins), base=2) == pytest.approx(
                _old_delivery_js(a, b, bins), abs=1e-12)
        assert js_distance(*evidently_bins(a, b), base=math.e) == pytest.approx(
            _old_drift_js(*evidently_bins(a, b)), abs=1e-12)
    ties = rng.integers(0, 5, 400).astype(float)
    assert js_distance(*quantile_bins(ties, ties[::-1]), base=2) == _old_delivery_js(ties, ties[::-1]) == 0.0


def test_it_is_scipys_distance_within_its_bound() -> None:
    from scipy.spatial.distance import jensenshannon

    p, q = np.array([10, 20, 30, 0]), np.array([5, 5, 30, 10])
    for base in (2, math.e, 10):
        assert js_distance(p, q, base=base) == pytest.approx(float(jensenshannon(p, q, base=base)), abs=1e-15)
        assert js_distance([1, 0], [0, 1], base=base) <= math.sqrt(math.log(2) / math.log(base))
    assert js_distance([1, 0], [0, 1], base=2) == 1.0
    assert js_distance(p, p, base=2) == 0.0


def test_counts_it_cannot_compare_are_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        js_distance([1, 2], [1, 2, 3], base=2)
    with pytest.raises(ValueError, match="aligned"):
        js_distance([], [], base=2)
    with pytest.raises(ValueError, match="zero"):
        js_distance([0, 0], [1, 2], base=math.e)
    with pytest.raises(ValueError, match="non-negative"):
        js_distance([-1, 2], [1, 2], base=2)
