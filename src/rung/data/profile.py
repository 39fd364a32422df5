"""The reference profile of training data, kept with each model version.

Monitoring compares production inputs with it later, so it holds what drift
statistics need without the raw rows: for numeric features, quantiles and a
histogram on fixed edges; for categorical ones, category frequencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["reference_profile"]

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
BINS = 20
TOP_CATEGORIES = 50


def reference_profile(frame: pd.DataFrame, *, target: str | None = None) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    features: dict[str, Any] = {}
    for name in frame.columns:
        series = frame[name]
        entry: dict[str, Any] = {
            "count": int(series.notna().sum()),
            "missing_rate": float(series.isna().mean()),
            "role": "target" if name == target else "feature",
        }
        values = series.dropna()
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            numbers = values.to_numpy(dtype=float)
            if len(numbers):
                edges = np.linspace(numbers.min(), numbers.max(), BINS + 1)
                counts, _ = np.histogram(numbers, bins=edges)
                entry |= {
                    "kind": "numeric",
                    "mean": float(numbers.mean()),
                    "std": float(numbers.std()),
                    "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, np.quantile(numbers, QUANTILES), strict=False)},
                    "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
                }
            else:
                entry["kind"] = "numeric"
        else:
            freq = values.astype(str).value_counts(normalize=True)
            top = freq.head(TOP_CATEGORIES)
            entry |= {
                "kind": "categorical",
                "unique": int(values.nunique()),
                "frequencies": {str(k): float(v) for k, v in top.items()},
                "other_rate": float(max(0.0, 1.0 - top.sum())),
            }
        features[str(name)] = entry
    return {"rows": len(frame), "features": features}
