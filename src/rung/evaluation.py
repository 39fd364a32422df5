"""Metrics of a trained model on held-out data, overall and per slice.

Classification: accuracy, balanced accuracy, F1 (macro), precision, recall,
ROC AUC and log loss when the model gives probabilities. Regression: RMSE,
MAE, R². A slice is every value of a declared column (the most frequent
``max_slice_values``), so a model that is good on average and bad for one
region is visible before it ships.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["evaluate_model", "PRIMARY_METRIC", "flatten_metrics", "higher_is_better"]

PRIMARY_METRIC = {"classification": "roc_auc", "regression": "rmse"}

# Which way is better, for every metric rung computes and the usual others a
# custom evaluate step may record. Gates that compare versions read it.
HIGHER_IS_BETTER = {
    "accuracy": True,
    "balanced_accuracy": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "roc_auc": True,
    "average_precision": True,
    "r2": True,
    "rmse": False,
    "mae": False,
    "mse": False,
    "mape": False,
    "log_loss": False,
    "brier": False,
}

MIN_SLICE_ROWS = 5


def evaluate_model(
    model: Any,
    test: pd.DataFrame,
    *,
    target: str,
    task: str,
    slices: list[str] | None = None,
    max_slice_values: int = 20,
) -> dict[str, Any]:
    """``{"overall": {...}, "slices": {"column=value": {..., "rows": n}}, "rows": n}``."""
    X = test.drop(columns=[target])
    y = test[target]
    predictions = model.predict(X)
    proba = model.predict_proba(X) if task == "classification" and hasattr(model, "predict_proba") else None
    classes = list(getattr(model, "classes_", [])) or None
    result: dict[str, Any] = {
        "rows": len(test),
        "overall": _metrics(task, y, predictions, proba, classes),
        "slices": {},
    }
    for column in slices or []:
        if column not in test.columns:
            raise KeyError(f"evaluate.slices: column '{column}' is not in the data")
        for value in test[column].value_counts().head(max_slice_values).index:
            mask = (test[column] == value).to_numpy()
            if mask.sum() < MIN_SLICE_ROWS:
                continue
            metrics = _metrics(task, y[mask], predictions[mask], proba[mask] if proba is not None else None, classes)
            result["slices"][f"{column}={value}"] = metrics | {"rows": int(mask.sum())}
    return result


def _metrics(task: str, y: Any, pred: Any, proba: Any, classes: list[Any] | None) -> dict[str, float]:
    from sklearn import metrics as m

    if task == "regression":
        return {
            "rmse": float(math.sqrt(m.mean_squared_error(y, pred))),
            "mae": float(m.mean_absolute_error(y, pred)),
            "r2": float(m.r2_score(y, pred)) if len(y) > 1 else float("nan"),
        }
    out = {
        "accuracy": float(m.accuracy_score(y, pred)),
        "balanced_accuracy": float(m.balanced_accuracy_score(y, pred)),
        "f1": float(m.f1_score(y, pred, average="macro", zero_division=0)),
        "precision": float(m.precision_score(y, pred, average="macro", zero_division=0)),
        "recall": float(m.recall_score(y, pred, average="macro", zero_division=0)),
    }
    if proba is not None and classes is not None:
        present = set(y.unique()) if hasattr(y, "unique") else set(y)
        if len(present) > 1:
            if len(classes) == 2:
                out["roc_auc"] = float(m.roc_auc_score(y, proba[:, 1]))
            else:
                out["roc_auc"] = float(m.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
        out["log_loss"] = float(m.log_loss(y, proba, labels=classes))
    return out


def flatten_metrics(result: dict[str, Any]) -> dict[str, float]:
    """MLflow metric names: ``auc`` overall, ``slice.region=north.auc`` per slice."""
    flat = {k: v for k, v in result.get("overall", {}).items() if _finite(v)}
    for name, metrics in result.get("slices", {}).items():
        safe = "".join(c if c.isalnum() or c in "_-./ =" else "_" for c in name).replace("=", "_")
        flat |= {f"slice.{safe}.{k}": v for k, v in metrics.items() if k != "rows" and _finite(v)}
    return flat


def higher_is_better(metric: str) -> bool:
    """Whether a larger ``metric`` is a better model; ``KeyError`` for a metric of unknown direction."""
    try:
        return HIGHER_IS_BETTER[metric]
    except KeyError:
        known = ", ".join(sorted(HIGHER_IS_BETTER))
        raise KeyError(f"rung does not know whether a higher or a lower '{metric}' is better (known: {known})") from None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
