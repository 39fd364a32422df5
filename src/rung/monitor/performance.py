"""Model performance in production, with the uncertainty that small label samples carry.

Two situations. Labels arrive (often late, often few): :func:`live_metrics`
computes accuracy, ROC AUC, F1 and log loss (classification) or RMSE and MAE
(regression), each with a confidence interval, because a dashboard that shows
"accuracy 0.81" on 40 labelled rows invites decisions the data cannot carry.
No labels yet: :func:`estimate_performance` estimates a binary classifier's
accuracy, AUC and F1 from its predicted probabilities alone (confidence-based
performance estimation, CBPE, as NannyML does), which is only as good as the
model's calibration.

Intervals: Wilson's for accuracy (a proportion; sound near 0 and 1 and for
small n), DeLong's variance for AUC, and a percentile bootstrap with a fixed
seed for the rest, so the same data always gives the same interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["Estimate", "MetricSet", "live_metrics", "estimate_performance", "wilson_interval", "delong_auc"]

Task = Literal["classification", "regression"]
BOOTSTRAP_RESAMPLES = 200
SEED = 0
CHUNK = 4_000_000  # resampled values held at once, to bound memory on large samples
MIN_LABELLED = 2
EPS = 1e-15  # probabilities are clipped to [EPS, 1 - EPS] for log loss, as scikit-learn does


@dataclass(frozen=True)
class Estimate:
    """A metric's value with a confidence interval over ``n`` rows; ``estimated`` when no label was seen."""

    value: float
    low: float
    high: float
    n: int
    estimated: bool = False
    interval: str = ""  # how the interval was computed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MetricSet(dict[str, Estimate]):
    """Metric name -> :class:`Estimate`; metrics that could not be computed are in ``omitted`` with the reason."""

    def __init__(self) -> None:
        super().__init__()
        self.omitted: dict[str, str] = {}

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": {k: v.to_dict() for k, v in self.items()}, "omitted": dict(self.omitted)}


def _z(confidence: float) -> float:
    from scipy.stats import norm

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion: stays inside [0, 1] and covers well even for small n."""
    if n <= 0:
        raise ValueError("n must be > 0")
    z = _z(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks."""
    from scipy.stats import rankdata

    return rankdata(values, method="average")


def delong_auc(y_true: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """ROC AUC and its DeLong variance, with the fast midrank algorithm (Sun & Xu, 2014).

    ``y_true`` holds 0/1 with both classes present. O(n log n): ranks of the
    positives among all, among themselves, and the negatives likewise.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[y], s[~y]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        raise ValueError("both classes are needed for an AUC")
    all_ranks = _midranks(np.concatenate((pos, neg)))
    pos_ranks, neg_ranks = all_ranks[:m], all_ranks[m:]
    auc = float((pos_ranks.sum() - m * (m + 1) / 2) / (m * n))
    v10 = (pos_ranks - _midranks(pos)) / n  # each positive's share of negatives scored below it
    v01 = 1.0 - (neg_ranks - _midranks(neg)) / m  # each negative's share of positives scored above it
    var = (np.var(v10, ddof=1) / m if m > 1 else 0.0) + (np.var(v01, ddof=1) / n if n > 1 else 0.0)
    return auc, float(var)


def _bootstrap(values: np.ndarray, confidence: float, *, root: bool = False) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` (its square root with ``root``) over resamples of rows."""
    rng = np.random.default_rng(SEED)
    n = values.size
    per_chunk = max(1, CHUNK // max(n, 1))
    means: list[np.ndarray] = []
    done = 0
    while done < BOOTSTRAP_RESAMPLES:
        k = min(per_chunk, BOOTSTRAP_RESAMPLES - done)
        means.append(values[rng.integers(0, n, size=(k, n))].mean(axis=1))
        done += k
    draws = np.concatenate(means)
    if root:
        draws = np.sqrt(draws)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator, dtype=np.float64), where=denominator > 0)


def _f1_interval(cells: np.ndarray, confidence: float) -> tuple[float, float]:
    """Bootstrap of F1: resampling rows is resampling the confusion matrix's four cells, so draw those."""
    rng = np.random.default_rng(SEED)
    n = int(cells.sum())
    draws = rng.multinomial(n, cells / n, size=BOOTSTRAP_RESAMPLES)
    f1 = _f1(draws[:, 0], draws[:, 1], draws[:, 2])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(f1, [tail, 100 - tail])
    return float(low), float(high)


def live_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike | None = None,
    scores: ArrayLike | None = None,
    *,
    task: Task = "classification",
    confidence: float = 0.95,
    positive: Any = None,
) -> MetricSet:
    """Metrics on labelled production rows, each with a ``confidence`` interval.

    Classification: ``y_pred`` the predicted labels and/or ``scores`` the
    predicted probability of the positive class (binary; labels 0/1, or any
    two values, the larger one positive unless ``positive`` names it).
    Without ``y_pred``, labels are ``scores >= 0.5``. Rows whose label is missing are left out. A metric
    that cannot be computed (fewer than 2 labelled rows, one class only for
    AUC, no scores for AUC and log loss) is in ``result.omitted`` with why.
    Regression: ``y_pred`` the predictions; RMSE and MAE.
    """
    z = _z(confidence)
    out = MetricSet()
    if task == "regression":
        _regression(out, y_true, y_pred, confidence)
        return out
    if task != "classification":
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if y_pred is None and scores is None:
        raise ValueError("pass y_pred, scores or both")
    import pandas as pd

    truth = pd.Series(np.asarray(y_true, dtype=object) if np.ndim(y_true) else [y_true])
    labelled = truth.notna().to_numpy()
    pred = None if y_pred is None else np.asarray(y_pred, dtype=object)[labelled]
    prob = None if scores is None else np.asarray(scores, dtype=np.float64)[labelled]
    truth = truth[labelled]
    n = len(truth)
    names = ["accuracy", "f1"] + (["roc_auc", "log_loss"] if prob is not None else [])
    if n < MIN_LABELLED:
        for name in names:
            out.omitted[name] = f"{n} labelled row(s); at least {MIN_LABELLED} are needed"
        if prob is None:
            out.omitted["roc_auc"] = out.omitted["log_loss"] = "no scores given"
        return out
    seen = pd.unique(truth).tolist() + ([] if pred is None else pd.unique(pd.Series(pred)).tolist())
    classes = sorted(set(seen), key=_sort_key)
    binary = len(classes) <= 2
    if positive is None:
        positive = 1 if set(classes) <= {0, 1} else classes[-1]
    y = truth.to_numpy() == positive
    if pred is None:
        assert prob is not None
        hits = prob >= 0.5
        correct = hits == y
    else:
        hits = pred == positive
        correct = pred == truth.to_numpy()

    k = int(np.count_nonzero(correct))
    low, high = wilson_interval(k, n, confidence=confidence)
    out["accuracy"] = Estimate(k / n, low, high, n, interval="wilson")

    if not binary:
        out.omitted["f1"] = f"{len(classes)} classes: F1 here is for binary classifiers"
    else:
        tp = int(np.count_nonzero(hits & y))
        fp = int(np.count_nonzero(hits & ~y))
        fn = int(np.count_nonzero(~hits & y))
        if tp + fp + fn == 0:
            out.omitted["f1"] = "no positive label and no positive prediction: F1 is undefined"
        else:
            cells = np.array([tp, fp, fn, n - tp - fp - fn], dtype=np.float64)
            low, high = _f1_interval(cells, confidence)
            out["f1"] = Estimate(float(_f1(np.array(tp), np.array(fp), np.array(fn))), low, high, n, interval="bootstrap")

    if prob is None:
        out.omitted["roc_auc"] = out.omitted["log_loss"] = "no scores given"
        return out
    if not binary:
        out.omitted["roc_auc"] = out.omitted["log_loss"] = "scores of a binary classifier are needed"
        return out
    if not np.all(np.isfinite(prob)):
        raise ValueError("scores must be finite")
    if y.all() or not y.any():
        out.omitted["roc_auc"] = "one class only among the labels: AUC is undefined"
    else:
        auc, var = delong_auc(y, prob)
        half = z * math.sqrt(var)
        out["roc_auc"] = Estimate(auc, max(0.0, auc - half), min(1.0, auc + half), n, interval="delong")
    clipped = np.clip(prob, EPS, 1 - EPS)
    losses = -np.where(y, np.log(clipped), np.log1p(-clipped))
    low, high = _bootstrap(losses, confidence)
    out["log_loss"] = Estimate(float(losses.mean()), low, high, n, interval="bootstrap")
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float, np.integer, np.floating, bool)) else (1, str(value))


def _regression(out: MetricSet, y_true: ArrayLike, y_pred: ArrayLike | None, confidence: float) -> None:
    if y_pred is None:
        raise ValueError("regression needs y_pred")
    truth = np.asarray(y_true, dtype=np.float64).ravel()
    pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length ({truth.size} and {pred.size})")
    keep = np.isfinite(truth) & np.isfinite(pred)
    error = pred[keep] - truth[keep]
    n = int(error.size)
    if n < MIN_LABELLED:
        out.omitted["rmse"] = out.omitted["mae"] = f"{n} labelled row(s); at least {MIN_LABELLED} are needed"
        return
    squared = error * error
    low, high = _bootstrap(squared, confidence, root=True)
    out["rmse"] = Estimate(float(math.sqrt(squared.mean())), low, high, n, interval="bootstrap")
    absolute = np.abs(error)
    low, high = _bootstrap(absolute, confidence)
    out["mae"] = Estimate(float(absolute.mean()), low, high, n, interval="bootstrap")


def estimate_performance(scores: ArrayLike, *, threshold: float = 0.5, confidence: float = 0.95) -> MetricSet:
    """Expected accuracy, ROC AUC and F1 of a binary classifier from its probabilities alone (CBPE).

    Assumes calibrated probabilities: a row scored p is positive with
    probability p. Then the confusion matrix has an expected value (a
    positive prediction contributes p to TP and 1 - p to FP; a negative one
    p to FN and 1 - p to TN), and so do the metrics: accuracy
    ``mean(max(p, 1 - p))`` at threshold 0.5; AUC the area under the
    expected ROC curve swept over every threshold; F1 from the expected
    cells. The interval is where the realised metric falls when labels are
    drawn as Bernoulli(p) (200 simulations, fixed seed). A model that is no
    longer calibrated, which drift often causes, makes the estimate wrong
    without any warning: check calibration on the labels you do get.
    """
    p = np.asarray(scores, dtype=np.float64).ravel()
    out = MetricSet()
    p = p[np.isfinite(p)]
    n = int(p.size)
    if n < MIN_LABELLED:
        for name in ("accuracy", "roc_auc", "f1"):
            out.omitted[name] = f"{n} score(s); at least {MIN_LABELLED} are needed"
        return out
    if np.any((p < 0) | (p > 1)):
        raise ValueError("scores must be probabilities in [0, 1]")
    hits = p >= threshold
    tp, fp = float(p[hits].sum()), float((1 - p[hits]).sum())
    fn, tn = float(p[~hits].sum()), float((1 - p[~hits]).sum())
    accuracy = (tp + tn) / n
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 0.0
    auc = _expected_auc(p)

    simulated = _simulate(p, hits)
    tail = (1 - confidence) / 2 * 100
    for name, value in (("accuracy", accuracy), ("roc_auc", auc), ("f1", f1)):
        draws = simulated[name]
        draws = draws[np.isfinite(draws)]
        if value is None or draws.size == 0:
            out.omitted[name] = "every score is 0 or 1 on one side: undefined"
            continue
        low, high = np.percentile(draws, [tail, 100 - tail])
        out[name] = Estimate(float(value), float(min(low, value)), float(max(high, value)), n, estimated=True,
                             interval="simulated labels")
    return out


def _expected_auc(p: np.ndarray) -> float | None:
    """Area under the expected ROC curve: thresholds swept from the highest score down, ties as one step."""
    order = np.argsort(-p, kind="stable")
    sorted_p = p[order]
    expected_pos = np.cumsum(sorted_p)
    expected_neg = np.cumsum(1 - sorted_p)
    total_pos, total_neg = expected_pos[-1], expected_neg[-1]
    if total_pos <= 0 or total_neg <= 0:
        return None
    ends = np.append(np.flatnonzero(np.diff(sorted_p) != 0), p.size - 1)
    tpr = np.concatenate(([0.0], expected_pos[ends] / total_pos))
    fpr = np.concatenate(([0.0], expected_neg[ends] / total_neg))
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _simulate(p: np.ndarray, hits: np.ndarray) -> dict[str, np.ndarray]:
    """Realised accuracy, AUC and F1 under labels drawn as Bernoulli(p), in chunks of rows x draws."""
    rng = np.random.default_rng(SEED)
    n = p.size
    ranks = _midranks(p)
    per_chunk = max(1, CHUNK // n)
    results: dict[str, list[np.ndarray]] = {"accuracy": [], "roc_auc": [], "f1": []}
    done = 0
    while done < BOOTSTRAP_RESAMPLES:
        k = min(per_chunk, BOOTSTRAP_RESAMPLES - done)
        labels = rng.random((k, n)) < p
        positives = labels.sum(axis=1).astype(np.float64)
        negatives = n - positives
        tp = (labels & hits).sum(axis=1).astype(np.float64)
        fn = positives - tp
        fp = float(hits.sum()) - tp
        tn = negatives - fp
        results["accuracy"].append((tp + tn) / n)
        results["f1"].append(_f1(tp, fp, fn))
        rank_sum = labels.astype(np.float64) @ ranks
        with np.errstate(divide="ignore", invalid="ignore"):
            results["roc_auc"].append((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))
        done += k
    return {name: np.concatenate(parts) for name, parts in results.items()}
