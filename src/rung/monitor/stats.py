"""Drift statistics: how far a current sample has moved from a reference sample.

numpy, with scipy for p-value distributions and small-sample exact tests;
one function per statistic, so each can be checked against scipy and
against distributions with a known answer. Numeric functions drop NaN and
infinities first, as Evidently does, and accept ``presorted=True`` when the
caller already holds both samples sorted and finite:
:mod:`rung.monitor.drift` sorts every column once and computes whatever
statistic it needs from the two sorted arrays, which is most of why it is
fast on millions of rows. Reductions over a column run in chunks, so no
temporary is as large as the column.

Categorical functions work on count vectors aligned on the same categories
(:func:`category_counts` builds them), so a category seen on one side only
is a zero on the other, never a dropped key.

The definitions follow Evidently's stattests where they have one, so that
drift decisions agree with it: the normalised Wasserstein distance divides
by the reference's standard deviation (at least 0.001); Jensen-Shannon uses
the natural logarithm (values in [0, sqrt(ln 2)] ~ [0, 0.833]) and, for a
numeric column with more than 20 distinct reference values, Sturges
histogram bins over the range of both samples together.

:func:`js_distance` is the one Jensen-Shannon distance of the package:
delivery compares two versions' outputs with it too, on its own bins and
in base 2, so each caller names its base.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "TestResult",
    "finite_sorted",
    "distinct_values",
    "category_counts",
    "sturges_edges",
    "psi",
    "psi_categorical",
    "ks_2samp",
    "wasserstein_norm",
    "evidently_bins",
    "js_distance",
    "chi_square",
    "PSI_EPSILON",
    "JS_CATEGORICAL_MAX_UNIQUE",
]

PSI_EPSILON = 1e-4  # stands in for an empty bin's share: ln(0) is -inf
JS_CATEGORICAL_MAX_UNIQUE = 20  # Evidently bins by value, not by histogram, up to this many reference values
WASSERSTEIN_MIN_STD = 0.001  # Evidently's floor, so a constant reference does not divide by zero
KS_EXACT_MAX_N = 10_000  # scipy's "auto": exact p-values up to this sample size, asymptotic above
CHUNK = 1 << 16  # values per step of the chunked reductions: temporaries stay at a few hundred KiB


@dataclass(frozen=True)
class TestResult:
    """A test statistic and its p-value (small p: the samples differ)."""

    __test__ = False  # not a pytest class, despite the name

    statistic: float
    p_value: float


def finite_sorted(values: ArrayLike) -> np.ndarray:
    """The finite values of ``values``, sorted, as a float64 array (a view of one new array).

    One copy only: numpy sorts -inf first and +inf then NaN last, so the
    finite values are one slice of the sorted array.
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64).ravel())
    low = int(np.searchsorted(ordered, -np.inf, side="right"))
    high = int(np.searchsorted(ordered, np.inf, side="left"))
    return ordered[low:high]


def _prepare(reference: ArrayLike, current: ArrayLike, presorted: bool) -> tuple[np.ndarray, np.ndarray]:
    if presorted:
        ref, cur = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    else:
        ref, cur = finite_sorted(reference), finite_sorted(current)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("reference and current need at least one finite value each")
    return ref, cur


def _counts_below(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram of sorted values on ``edges``: bins [e_i, e_i+1), the last one closed, as np.histogram."""
    below = np.searchsorted(sorted_values, edges[1:-1], side="left")
    return np.diff(np.concatenate(([0], below, [sorted_values.size])))


def _distinct(sorted_values: np.ndarray) -> np.ndarray:
    keep = np.empty(sorted_values.size, dtype=bool)
    keep[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=keep[1:])
    return sorted_values[keep]


def _distinct_count(sorted_values: np.ndarray) -> int:
    if sorted_values.size == 0:
        return 0
    return 1 + int(np.count_nonzero(sorted_values[1:] != sorted_values[:-1]))


def _quantiles(sorted_values: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """np.quantile's default (linear) on an array already sorted, without sorting again."""
    pos = probs * (sorted_values.size - 1)
    low = np.floor(pos).astype(np.intp)
    high = np.minimum(low + 1, sorted_values.size - 1)
    frac = pos - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * frac


def category_counts(reference: ArrayLike, current: ArrayLike) -> tuple[list[object], np.ndarray, np.ndarray]:
    """Categories of both samples (reference's first, by frequency) and each side's counts on them.

    Missing values (None, NaN) are not a category; callers report them as missing.
    """
    import pandas as pd

    ref = pd.Series(np.asarray(reference, dtype=object) if not isinstance(reference, pd.Series) else reference)
    cur = pd.Series(np.asarray(current, dtype=object) if not isinstance(current, pd.Series) else current)
    ref_counts = ref.value_counts(dropna=True)
    cur_counts = cur.value_counts(dropna=True)
    aligned = pd.concat([ref_counts.rename("reference"), cur_counts.rename("current")], axis=1, sort=False)
    aligned = aligned.fillna(0).astype(np.int64)
    return list(aligned.index), aligned["reference"].to_numpy(), aligned["current"].to_numpy()


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(counts.shape, dtype=np.float64)


def _psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float) -> float:
    p = np.maximum(_shares(np.asarray(ref_counts, dtype=np.float64)), eps)
    q = np.maximum(_shares(np.asarray(cur_counts, dtype=np.float64)), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def psi(
    reference: ArrayLike, current: ArrayLike, *, bins: int = 10, eps: float = PSI_EPSILON, presorted: bool = False
) -> float:
    """Population stability index on ``bins`` reference-quantile bins.

    Quantile bins hold about the same share of the reference each, so every bin
    carries weight; the outer bins are open so no current value falls outside.
    Tied quantiles merge bins. An empty bin counts as ``eps`` instead of 0.
    Conventional reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    ref, cur = _prepare(reference, current, presorted)
    inner = np.unique(_quantiles(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    edges = np.concatenate(([-np.inf], inner, [np.inf]))
    ref_counts = _counts_below(ref, edges)
    cur_counts = _counts_below(cur, edges)
    return _psi_from_counts(ref_counts, cur_counts, eps)


def psi_categorical(reference_counts: ArrayLike, current_counts: ArrayLike, *, eps: float = PSI_EPSILON) -> float:
    """PSI on category frequencies; counts aligned on the same categories (see :func:`category_counts`)."""
    ref, cur = _aligned(reference_counts, current_counts)
    return _psi_from_counts(ref, cur, eps)


def _chunks(size: int) -> range:
    return range(0, size, CHUNK)


def _std(values: np.ndarray) -> float:
    """np.std (ddof=0), in chunks so that no temporary the size of the column is made."""
    mean = float(values.mean())
    total = 0.0
    for start in _chunks(values.size):
        deviation = values[start : start + CHUNK] - mean
        total += float(np.dot(deviation, deviation))
    return math.sqrt(total / values.size)


def _ks_statistic(ref: np.ndarray, cur: np.ndarray) -> float:
    """Largest |F_ref - F_cur| over every value of both samples: scipy's arithmetic, a chunk at a time."""
    best = 0.0
    for sample in (ref, cur):
        for start in _chunks(sample.size):
            points = sample[start : start + CHUNK]
            gap = np.searchsorted(ref, points, side="right") / ref.size - np.searchsorted(cur, points, side="right") / cur.size
            best = max(best, float(np.abs(gap).max()))
    return best


def ks_2samp(reference: ArrayLike, current: ArrayLike, *, presorted: bool = False) -> TestResult:
    """Two-sample two-sided Kolmogorov-Smirnov test: the largest gap between the two empirical CDFs.

    Same statistic as ``scipy.stats.ks_2samp``; the p-value as its ``method="auto"``:
    exact up to 10,000 values a side, Smirnov's asymptotic distribution above.
    """
    ref, cur = _prepare(reference, current, presorted)
    if max(ref.size, cur.size) <= KS_EXACT_MAX_N:
        from scipy import stats

        result = stats.ks_2samp(ref, cur)
        return TestResult(float(result.statistic), float(result.pvalue))
    statistic = _ks_statistic(ref, cur)
    return TestResult(statistic, _ks_asymptotic_p(statistic, ref.size, cur.size))


def _ks_asymptotic_p(statistic: float, n_ref: int, n_cur: int) -> float:
    from scipy.stats import kstwo

    m, n = max(n_ref, n_cur), min(n_ref, n_cur)
    effective = round(m * n / (m + n))
    return float(np.clip(kstwo.sf(statistic, effective), 0.0, 1.0))


def wasserstein_norm(reference: ArrayLike, current: ArrayLike, *, presorted: bool = False) -> float:
    """Wasserstein-1 distance divided by the reference's standard deviation (Evidently's "wasserstein").

    In reference standard deviations, so one threshold (0.1) fits every feature
    whatever its unit. Equal to ``scipy.stats.wasserstein_distance(ref, cur) /
    np.std(ref)`` (the divisor at least 0.001), computed from the sorted
    samples as the area between their quantile functions.
    """
    ref, cur = _prepare(reference, current, presorted)
    norm = max(_std(ref), WASSERSTEIN_MIN_STD)
    return _wasserstein_sorted(ref, cur) / norm


def _wasserstein_sorted(ref: np.ndarray, cur: np.ndarray) -> float:
    """W1 = integral over t in (0, 1] of |Q_ref(t) - Q_cur(t)|, both quantile functions steps.

    With equal sizes the steps coincide: the mean absolute difference of the
    sorted samples. Otherwise the steps are at i/n_ref and j/n_cur; scaled by
    n_ref * n_cur they are the integers i * n_cur and j * n_ref, merged exactly
    a chunk of t at a time, so memory stays a few chunks whatever the size
    (sizes up to about 3 billion a side, where the product still fits int64).
    """
    n_ref, n_cur = ref.size, cur.size
    if n_ref == n_cur:
        total = 0.0
        for start in _chunks(n_ref):
            total += float(np.abs(ref[start : start + CHUNK] - cur[start : start + CHUNK]).sum())
        return total / n_ref
    total = 0.0
    previous = 0
    for start in _chunks(n_ref):
        stop = min(n_ref, start + CHUNK)
        ref_steps = np.arange(start + 1, stop + 1, dtype=np.int64) * n_cur
        cur_steps = np.arange(start * n_cur // n_ref + 1, stop * n_cur // n_ref + 1, dtype=np.int64) * n_ref
        steps = np.sort(np.concatenate((ref_steps, cur_steps)), kind="stable")  # a shared step gets width 0 once
        widths = np.diff(steps, prepend=previous).astype(np.float64)
        previous = int(steps[-1])
        # on (previous step, step], Q(t) is the value at index ceil(t * n) - 1
        gap = ref[(steps + n_cur - 1) // n_cur - 1] - cur[(steps + n_ref - 1) // n_ref - 1]
        total += float(np.dot(np.abs(gap), widths))
    return total / n_ref / n_cur


def sturges_edges(low: float, high: float, size: int) -> np.ndarray:
    """``np.histogram_bin_edges(x, "sturges")`` for any ``x`` with this min, max and size."""
    if high == low:
        return np.linspace(low - 0.5, high + 0.5, 2)
    width = (high - low) / (math.log2(size) + 1.0)
    bins = max(1, int(np.ceil((high - low) / width)))
    return np.linspace(low, high, bins + 1)


def evidently_bins(
    reference: ArrayLike, current: ArrayLike, *, presorted: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Both numeric samples' counts on the bins Evidently uses for Jensen-Shannon.

    More than 20 distinct reference values: Sturges bins over the range of both
    samples together (about 22 bins for two million values); fewer: the values
    themselves are the bins. Drift detection passes the counts to
    :func:`js_distance` with the natural log, as Evidently does.
    """
    ref, cur = _prepare(reference, current, presorted)
    if _distinct_count(ref) > JS_CATEGORICAL_MAX_UNIQUE:
        edges = sturges_edges(min(ref[0], cur[0]), max(ref[-1], cur[-1]), ref.size + cur.size)
        return _counts_below(ref, edges), _counts_below(cur, edges)
    values = np.union1d(_distinct(ref), _distinct(cur))
    ref_counts = np.diff(np.searchsorted(ref, values, side="left"), append=ref.size)
    cur_counts = np.diff(np.searchsorted(cur, values, side="left"), append=cur.size)
    return ref_counts, cur_counts


def js_distance(p_counts: ArrayLike, q_counts: ArrayLike, *, base: float) -> float:
    """Jensen-Shannon distance of two count (or share) vectors on the same bins, with logarithms to ``base``.

    ``scipy.spatial.distance.jensenshannon``: the square root of the divergence,
    so bounded by sqrt(log_base 2): 1 in base 2 (delivery's comparisons of two
    versions' outputs), sqrt(ln 2) ~ 0.833 in base e (drift detection,
    Evidently's scale). The base is the caller's to state because the two
    scales differ and a threshold is only meaningful on its own scale. Rounding
    that would take the divergence a hair below 0 gives 0, and the distance
    never exceeds its bound.
    """
    from scipy.spatial.distance import jensenshannon

    p = np.asarray(p_counts, dtype=np.float64).ravel()
    q = np.asarray(q_counts, dtype=np.float64).ravel()
    if p.shape != q.shape or p.size == 0:
        raise ValueError(f"counts must be aligned on the same bins, got {p.size} and {q.size}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q)) and p.min() >= 0 and q.min() >= 0):
        raise ValueError("counts must be finite and non-negative")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("counts must not all be zero on either side")
    with np.errstate(invalid="ignore"):  # sqrt of a divergence rounded below 0
        distance = float(jensenshannon(p, q, base=base))
    return 0.0 if math.isnan(distance) else min(distance, math.sqrt(math.log(2.0) / math.log(base)))


def chi_square(reference_counts: ArrayLike, current_counts: ArrayLike) -> TestResult:
    """Chi-square test of homogeneity on the 2 x k table of category counts.

    Both samples are samples, so expected counts come from the pooled
    frequencies (``scipy.stats.chi2_contingency`` without Yates' correction).
    A category unseen in the reference then has a finite expected count: it
    raises the statistic in proportion to how often it appears, where a
    goodness-of-fit test against the reference's shares would divide by zero.
    Categories absent on both sides are ignored; one category in all: no test, p = 1.
    """
    from scipy.stats import chi2

    ref, cur = _aligned(reference_counts, current_counts)
    keep = (ref + cur) > 0
    ref, cur = ref[keep], cur[keep]
    if ref.size < 2 or ref.sum() == 0 or cur.sum() == 0:
        return TestResult(0.0, 1.0)
    table = np.vstack((ref, cur)).astype(np.float64)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return TestResult(statistic, float(chi2.sf(statistic, ref.size - 1)))


def _aligned(reference_counts: ArrayLike, current_counts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference_counts, dtype=np.float64).ravel()
    cur = np.asarray(current_counts, dtype=np.float64).ravel()
    if ref.shape != cur.shape:
        raise ValueError(f"counts must be aligned on the same categories, got {ref.size} and {cur.size}")
    if np.any(ref < 0) or np.any(cur < 0):
        raise ValueError("counts must be >= 0")
    return ref, cur


def distinct_values(sorted_values: np.ndarray, limit: int) -> np.ndarray | None:
    """The distinct values of a sorted array, or None once there are more than ``limit``."""
    if _distinct_count(sorted_values) > limit:
        return None
    return _distinct(sorted_values)
