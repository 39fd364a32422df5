"""Data drift: has production input moved away from the data the model learned from?

:func:`compare` takes a reference frame (training or a known-good period) and
a current frame, compares each common column with one statistic and a
threshold, and reports per feature the decision and the data-quality facts
that often explain it (missing values, values out of the reference range,
unseen categories, values that are not numbers). The dataset drifts when at
least ``dataset_share`` of the compared features drift. A domain classifier
(can a model tell reference rows from current rows?) adds a multivariate view
that catches a change in how features move together, which per-feature tests
cannot see.

Default methods follow Evidently's, so teams moving from it see the same
decisions: a reference of at most 1,000 values gets p-value tests
(Kolmogorov-Smirnov for numbers, chi-square for categories, drift at
p < 0.05); a larger one gets distances with thresholds (normalised
Wasserstein for numbers, Jensen-Shannon for categories, drift at >= 0.1).
With large samples a p-value test flags shifts far too small to matter, so a
distance, whose size does not grow with the sample, is the better alarm.
``docs/drift.md`` explains the choice.

The work is numpy on float64 arrays: each numeric column is sorted once per
side, in threads (numpy's sort releases the GIL), and every statistic is read
from the two sorted arrays.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from rung.config.drift import METHODS, DriftSettings, Method
from rung.errors import DriftError
from rung.monitor import stats
from rung.monitor.coercion import as_numbers, looks_numeric
from rung.monitor.multivariate import MultivariateResult, domain_classifier

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "Kind",
    "FeatureReport",
    "MultivariateResult",
    "DriftReport",
    "compare",
    "default_method",
]

Kind = Literal["numeric", "categorical"]

SMALL_REFERENCE = 1000  # at most this many reference values: p-value tests (Evidently's rule)
FEW_VALUES = 5  # a numeric column with at most this many distinct values is compared as categories
UNSEEN_LISTED = 10
MAX_THREADS = 8  # columns compared at once; each holds its two sorted copies
NOTE_OUT_OF_RANGE = 0.01  # below this, values beyond the reference's extremes are sampling, not news


@dataclass(frozen=True)
class FeatureReport:
    """One feature's comparison: the decision, the number behind it, and data quality on both sides."""

    name: str
    kind: Kind
    method: str | None  # None when nothing was computed (all values missing)
    statistic: float | None
    threshold: float | None
    p_value: float | None
    drifted: bool
    reference_values: int  # values compared (present and valid)
    current_values: int
    missing_reference: float  # share of rows missing (NaN, None, infinite)
    missing_current: float
    out_of_range: float | None = None  # numeric: share of current values outside [min, max] of the reference
    unseen: tuple[str, ...] = ()  # categorical: current categories the reference never had (the most frequent)
    unseen_share: float | None = None  # ... and the share of current values in any unseen category
    type_errors: int = 0  # current values that are not numbers, in a numeric feature
    type_errors_reference: int = 0
    all_missing: bool = False  # a side had no usable value: reported, not compared
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["unseen"] = list(self.unseen)
        out["notes"] = list(self.notes)
        return out


@dataclass
class DriftReport:
    """Everything :func:`compare` found; ``to_dict()`` is JSON-safe."""

    features: list[FeatureReport]
    dataset_drifted: bool
    drift_share: float  # share of compared features that drifted
    dataset_share: float  # the share at which the dataset counts as drifted
    reference_rows: int
    current_rows: int
    multivariate: MultivariateResult | None = None
    missing_columns: list[str] = field(default_factory=list)  # in the reference, not in current
    extra_columns: list[str] = field(default_factory=list)  # in current, not in the reference
    skipped: dict[str, str] = field(default_factory=dict)  # common columns not compared, with the reason

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def compared(self) -> list[FeatureReport]:
        return [f for f in self.features if f.method is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_drifted": self.dataset_drifted,
            "drift_share": self.drift_share,
            "dataset_share": self.dataset_share,
            "drifted_features": self.drifted_features,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "features": [f.to_dict() for f in self.features],
            "multivariate": self.multivariate.to_dict() if self.multivariate else None,
            "missing_columns": list(self.missing_columns),
            "extra_columns": list(self.extra_columns),
            "skipped": dict(self.skipped),
        }


def default_method(kind: Kind, reference_values: int) -> Method:
    """Evidently's defaults: p-value tests for a small reference, distances for a large one."""
    if reference_values <= SMALL_REFERENCE:
        return "ks" if kind == "numeric" else "chisquare"
    return "wasserstein" if kind == "numeric" else "jensenshannon"


def compare(
    reference: pd.DataFrame | None,
    current: pd.DataFrame | None,
    *,
    settings: DriftSettings | None = None,
    categorical: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
) -> DriftReport:
    """Compare every column the two frames share (bar ``ignore``) and decide which drifted.

    ``categorical`` names columns to compare as categories whatever their
    type (codes stored as numbers); other columns are numeric when the
    reference holds numbers, categorical otherwise. Raises
    :class:`~rung.errors.DriftError` when there is nothing to compare with.
    """
    settings = settings or DriftSettings()
    _check_present(reference, "reference")
    _check_present(current, "current")
    assert reference is not None and current is not None
    ignored = set(ignore)
    names = set(map(str, reference.columns))
    for what, asked in (("settings name features", set(settings.features)), ("categorical names columns", set(categorical or ()))):
        unknown = set(map(str, asked)) - names
        if unknown:
            raise DriftError(f"{what} the reference does not have: {', '.join(sorted(unknown))}")
    for side, frame in (("reference", reference), ("current", current)):
        repeated = frame.columns[frame.columns.duplicated()]
        if len(repeated):
            raise DriftError(f"the {side} data has more than one column named {', '.join(map(str, repeated.unique()))}")
    ref_columns = [c for c in reference.columns if c not in ignored]
    cur_columns = [c for c in current.columns if c not in ignored]
    common = [c for c in ref_columns if c in set(cur_columns)]
    missing = [str(c) for c in ref_columns if c not in set(cur_columns)]
    extra = [str(c) for c in cur_columns if c not in set(ref_columns)]
    if not common:
        raise DriftError(
            f"the reference and current data have no column in common "
            f"(reference: {_preview(ref_columns)}; current: {_preview(cur_columns)})"
        )
    forced = set(map(str, categorical or ()))

    skipped: dict[str, str] = {}
    jobs = []
    for name in common:
        reason = _unsupported(reference[name])
        if reason:
            skipped[str(name)] = reason
        else:
            jobs.append(name)

    def run(name: Any) -> FeatureReport:
        return _compare_feature(str(name), reference[name], current[name], settings, str(name) in forced)

    workers = max(1, min(len(jobs), os.cpu_count() or 1, MAX_THREADS))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            features = list(pool.map(run, jobs))
    else:
        features = [run(name) for name in jobs]

    compared = [f for f in features if f.method is not None]
    share = sum(f.drifted for f in compared) / len(compared) if compared else 0.0
    multivariate = None
    if settings.multivariate:
        multivariate = domain_classifier(reference, current, {f.name: f.kind for f in compared}, settings)
    return DriftReport(
        features=features,
        dataset_drifted=bool(compared) and share >= settings.dataset_share,
        drift_share=share,
        dataset_share=settings.dataset_share,
        reference_rows=len(reference),
        current_rows=len(current),
        multivariate=multivariate,
        missing_columns=missing,
        extra_columns=extra,
        skipped=skipped,
    )


def _check_present(frame: pd.DataFrame | None, side: str) -> None:
    if frame is None:
        raise DriftError(f"no {side} data: pass the {side} rows as a DataFrame")
    if len(frame.columns) == 0:
        raise DriftError(f"the {side} data has no columns")
    if len(frame) == 0:
        raise DriftError(f"the {side} data has no rows (columns: {_preview(list(frame.columns))})")


def _preview(names: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(map(str, names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "") if names else "none"


def _unsupported(series: pd.Series) -> str:
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
        return "date/time column: moves with the calendar, not compared"
    return ""


def _settled_method(name: str, kind: Kind, reference_values: int, settings: DriftSettings) -> tuple[str, float]:
    override = settings.features.get(name)
    method: str | None = override.method if override else None
    if method is not None and kind not in METHODS[method].kinds:
        raise DriftError(f"feature '{name}' is {kind}: method '{method}' does not apply to it")
    if method is None:
        method = settings.numeric_method if kind == "numeric" else settings.categorical_method
    if method is None and settings.method is not None and kind in METHODS[settings.method].kinds:
        method = settings.method
    if method is None:
        method = default_method(kind, reference_values)
    threshold = override.threshold if override and override.threshold is not None else None
    if threshold is None:
        threshold = settings.threshold if settings.threshold is not None else METHODS[method].threshold
    return method, float(threshold)


def _compare_feature(
    name: str, reference: pd.Series, current: pd.Series, settings: DriftSettings, force_categorical: bool
) -> FeatureReport:
    if not force_categorical and looks_numeric(reference):
        return _compare_numeric(name, reference, current, settings)
    return _compare_categorical(name, reference, current, settings)


def _compare_numeric(name: str, reference: pd.Series, current: pd.Series, settings: DriftSettings) -> FeatureReport:
    import numpy as np

    ref_values, ref_errors = as_numbers(reference)
    cur_values, cur_errors = as_numbers(current)
    # the one copy of a column this module makes: its finite values, sorted
    ref, cur = stats.finite_sorted(ref_values), stats.finite_sorted(cur_values)
    ref_bad, cur_bad = ref_values.size - ref.size, cur_values.size - cur.size
    del ref_values, cur_values
    notes: list[str] = []
    # values that were not numbers are type errors, not missing values
    missing_ref = (ref_bad - ref_errors) / max(len(reference), 1)
    missing_cur = (cur_bad - cur_errors) / max(len(current), 1)
    if cur_errors:
        notes.append(f"{cur_errors:,} current values not numbers")
    if ref_errors:
        notes.append(f"{ref_errors:,} reference values not numbers")
    base = dict(
        name=name,
        reference_values=int(ref.size),
        current_values=int(cur.size),
        missing_reference=missing_ref,
        missing_current=missing_cur,
        type_errors=cur_errors,
        type_errors_reference=ref_errors,
    )
    if ref.size == 0 or cur.size == 0:
        side = "reference and current" if ref.size == cur.size == 0 else ("reference" if ref.size == 0 else "current")
        what = "all missing" if not (ref_errors if ref.size == 0 else cur_errors) else "missing or not numbers"
        notes.append(f"{side} values {what}: not compared")
        return FeatureReport(kind="numeric", method=None, statistic=None, threshold=None, p_value=None,
                             drifted=False, all_missing=True, notes=tuple(notes), **base)  # type: ignore[arg-type]
    low, high = ref[0], ref[-1]
    outside = int(np.searchsorted(cur, low, side="left")) + int(cur.size - np.searchsorted(cur, high, side="right"))
    out_of_range = outside / cur.size

    few = stats.distinct_values(ref, FEW_VALUES)
    if few is not None:
        cur_few = stats.distinct_values(cur, FEW_VALUES)
        values = np.union1d(few, cur_few) if cur_few is not None else None
        if values is not None and values.size <= FEW_VALUES:
            ref_counts = np.diff(np.searchsorted(ref, values, side="left"), append=ref.size)
            cur_counts = np.diff(np.searchsorted(cur, values, side="left"), append=cur.size)
            notes.append(f"{values.size} distinct values: compared as categories")
            labels = [_label(v) for v in values.tolist()]
            report = _decide_categorical(name, labels, ref_counts, cur_counts, settings, base, notes)
            return report

    if out_of_range >= NOTE_OUT_OF_RANGE:
        notes.append(f"{out_of_range:.1%} outside the reference range")
    method, threshold = _settled_method(name, "numeric", int(ref.size), settings)
    p_value: float | None = None
    if method == "ks":
        result = stats.ks_2samp(ref, cur, presorted=True)
        statistic, p_value = result.statistic, result.p_value
    elif method == "wasserstein":
        statistic = stats.wasserstein_norm(ref, cur, presorted=True)
    elif method == "jensenshannon":
        statistic = stats.js_distance(*stats.evidently_bins(ref, cur, presorted=True), base=math.e)
    else:
        statistic = stats.psi(ref, cur, presorted=True)
    return FeatureReport(
        kind="numeric",
        method=method,
        statistic=statistic,
        threshold=threshold,
        p_value=p_value,
        drifted=_drifted(method, statistic, p_value, threshold),
        out_of_range=out_of_range,
        notes=tuple(notes),
        **base,  # type: ignore[arg-type]
    )


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_text(series: pd.Series) -> pd.Series:
    import numpy as np
    import pandas as pd

    present = series.dropna()
    if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
        numbers = present.astype(np.float64)
        if bool((numbers == np.floor(numbers)).all()):
            return numbers.astype(np.int64).astype(str)
        return numbers.astype(str)
    return present.astype(str)


def _drifted(method: str, statistic: float, p_value: float | None, threshold: float) -> bool:
    if METHODS[method].p_value:
        return p_value is not None and p_value < threshold
    return statistic >= threshold


def _compare_categorical(name: str, reference: pd.Series, current: pd.Series, settings: DriftSettings) -> FeatureReport:
    ref_missing = int(reference.isna().sum())
    cur_missing = int(current.isna().sum())
    ref, cur = reference, current
    if ref.dtype != cur.dtype:  # 1 and "1" are one category when one file was read as numbers
        ref, cur = _as_text(ref), _as_text(cur)
    categories, ref_counts, cur_counts = stats.category_counts(ref, cur)
    base = dict(
        name=name,
        reference_values=int(ref_counts.sum()),
        current_values=int(cur_counts.sum()),
        missing_reference=ref_missing / max(len(reference), 1),
        missing_current=cur_missing / max(len(current), 1),
    )
    notes: list[str] = []
    if ref_counts.sum() == 0 or cur_counts.sum() == 0:
        both = ref_counts.sum() == cur_counts.sum() == 0
        side = "reference and current" if both else ("reference" if ref_counts.sum() == 0 else "current")
        notes.append(f"{side} values all missing: not compared")
        return FeatureReport(kind="categorical", method=None, statistic=None, threshold=None, p_value=None,
                             drifted=False, all_missing=True, notes=tuple(notes), **base)  # type: ignore[arg-type]
    labels = [c if isinstance(c, str) else _label(c) for c in categories]
    return _decide_categorical(name, labels, ref_counts, cur_counts, settings, base, notes)


def _decide_categorical(
    name: str,
    labels: list[str],
    ref_counts: np.ndarray,
    cur_counts: np.ndarray,
    settings: DriftSettings,
    base: dict[str, Any],
    notes: list[str],
) -> FeatureReport:
    import numpy as np

    unseen_mask = (ref_counts == 0) & (cur_counts > 0)
    unseen_share = float(cur_counts[unseen_mask].sum() / cur_counts.sum())
    order = np.argsort(-cur_counts[unseen_mask], kind="stable")[:UNSEEN_LISTED]
    unseen_labels = [labels[i] for i in np.flatnonzero(unseen_mask)[order]]
    if unseen_mask.any():
        count = int(unseen_mask.sum())
        notes.append(f"{count} unseen {'category' if count == 1 else 'categories'} ({unseen_share:.1%} of current)")
    method, threshold = _settled_method(name, "categorical", int(ref_counts.sum()), settings)
    p_value: float | None = None
    if method == "chisquare":
        result = stats.chi_square(ref_counts, cur_counts)
        statistic, p_value = result.statistic, result.p_value
    elif method == "jensenshannon":
        statistic = stats.js_distance(ref_counts, cur_counts, base=math.e)
    else:
        statistic = stats.psi_categorical(ref_counts, cur_counts)
    return FeatureReport(
        kind="categorical",
        method=method,
        statistic=statistic,
        threshold=threshold,
        p_value=p_value,
        drifted=_drifted(method, statistic, p_value, threshold),
        unseen=tuple(unseen_labels),
        unseen_share=unseen_share,
        notes=tuple(notes),
        **base,
    )
