"""Multivariate drift: can a model tell current rows from reference rows?

A domain classifier catches a change in how features move together, which
per-feature tests cannot see. Its score is the cross-validated ROC AUC, as
NannyML reports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rung.monitor.coercion import as_numbers, looks_numeric

if TYPE_CHECKING:
    import pandas as pd

    from rung.config.drift import DriftSettings

__all__ = ["MultivariateResult", "domain_classifier"]


@dataclass(frozen=True)
class MultivariateResult:
    """The domain classifier's verdict: ROC AUC of telling current rows from reference rows."""

    auc: float | None
    threshold: float
    drifted: bool
    reference_rows: int = 0
    current_rows: int = 0
    folds: int = 3
    features: tuple[str, ...] = ()
    reason: str = ""  # why it was not computed, when auc is None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = list(self.features)
        return out


def domain_classifier(
    reference: pd.DataFrame, current: pd.DataFrame, kinds: Mapping[str, str], settings: DriftSettings
) -> MultivariateResult:
    """3-fold cross-validated ROC AUC of a gradient-boosted classifier telling current rows from reference rows.

    ``kinds`` names the compared features, in order, and says how each was
    compared (numeric or categorical).

    About 0.5 when the two samples are alike. NannyML alerts outside
    0.45-0.65: below 0.5 is chance; above 0.65 the model finds real
    structure that separates the samples, including a change in how features
    relate that no single feature's test sees.
    """
    import numpy as np
    import pandas as pd

    threshold = settings.auc_threshold
    names = list(kinds)
    min_rows = 20
    if not names:
        return MultivariateResult(None, threshold, False, reason="no feature was compared")
    if len(reference) < min_rows or len(current) < min_rows:
        return MultivariateResult(None, threshold, False, reason=f"needs at least {min_rows} rows a side")

    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    rng = np.random.default_rng(settings.seed)
    # as many rows from each side (a balanced task, so 0.5 means "cannot tell"), and no more than the smaller has:
    # a window of 300 rows against a training set of 100,000 costs a fit on 600 rows, not on 100,300
    size = min(settings.max_rows_multivariate, len(reference), len(current))
    ref_rows = np.sort(rng.choice(len(reference), size=size, replace=False))
    cur_rows = np.sort(rng.choice(len(current), size=size, replace=False))
    by_name = {str(c): c for c in reference.columns}
    columns: list[np.ndarray] = []
    categorical_mask: list[bool] = []
    for name in names:
        ref = reference[by_name[name]].iloc[ref_rows]
        cur = current[by_name[name]].iloc[cur_rows]
        if kinds[name] == "numeric" and looks_numeric(reference[by_name[name]]):
            values = np.concatenate((as_numbers(ref)[0], as_numbers(cur)[0]))
            values[~np.isfinite(values)] = np.nan
            columns.append(values)
            categorical_mask.append(False)
        else:
            both = pd.concat((ref.astype(str).where(ref.notna()), cur.astype(str).where(cur.notna())), ignore_index=True)
            codes, uniques = pd.factorize(both, use_na_sentinel=True)
            encoded = codes.astype(np.float64)
            encoded[codes < 0] = np.nan
            columns.append(encoded)
            categorical_mask.append(len(uniques) < 250)  # the model's limit on categories; beyond it, codes as numbers
    x = np.column_stack(columns)
    y = np.concatenate((np.zeros(ref_rows.size), np.ones(cur_rows.size)))
    model = HistGradientBoostingClassifier(
        max_iter=50, categorical_features=np.array(categorical_mask), early_stopping=False, random_state=settings.seed
    )
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=settings.seed)
    auc = float(np.mean(cross_val_score(model, x, y, cv=folds, scoring="roc_auc")))
    return MultivariateResult(
        auc=auc,
        threshold=threshold,
        drifted=auc > threshold,
        reference_rows=int(ref_rows.size),
        current_rows=int(cur_rows.size),
        features=tuple(names),
    )
