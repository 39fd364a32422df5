"""The ``monitor.drift`` section of ``rung.yaml`` (and ``rung drift``'s options): how drift is decided.

The methods and their default thresholds live here because the settings
validate against them (``wasserstein`` is for numbers only);
:mod:`rung.monitor.drift` computes the statistics and reads the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from rung.config.section import Section

__all__ = ["Method", "METHODS", "AUC_ALERT", "FeatureDrift", "DriftSettings"]

Method = Literal["ks", "chisquare", "wasserstein", "jensenshannon", "psi"]


@dataclass(frozen=True)
class _MethodInfo:
    kinds: frozenset[str]
    threshold: float
    p_value: bool  # drift when p < threshold; otherwise when statistic >= threshold


METHODS: dict[str, _MethodInfo] = {
    "ks": _MethodInfo(frozenset({"numeric"}), 0.05, True),
    "chisquare": _MethodInfo(frozenset({"categorical"}), 0.05, True),
    "wasserstein": _MethodInfo(frozenset({"numeric"}), 0.1, False),
    "jensenshannon": _MethodInfo(frozenset({"numeric", "categorical"}), 0.1, False),
    "psi": _MethodInfo(frozenset({"numeric", "categorical"}), 0.1, False),
}
AUC_ALERT = 0.65  # NannyML's upper alert bound for its domain classifier


class FeatureDrift(Section):
    """Per-feature override of the method and threshold."""

    method: Method | None = None
    threshold: float | None = Field(default=None, ge=0)


class DriftSettings(Section):
    """How :func:`rung.monitor.drift.compare` decides; every field has a default that suits most tables.

    Method precedence per feature: ``features[name].method``, then the method
    for its kind (``numeric_method``/``categorical_method``), then ``method``
    where the feature's kind allows it (``wasserstein`` is for numbers only),
    then the default by kind and reference size. Threshold: the feature's,
    then ``threshold``, then the method's default (0.05 for p-values, 0.1 for
    distances).
    """

    method: Method | None = None
    numeric_method: Method | None = None
    categorical_method: Method | None = None
    threshold: float | None = Field(default=None, ge=0)
    features: dict[str, FeatureDrift] = Field(default_factory=dict)
    dataset_share: float = Field(default=0.5, gt=0, le=1)
    multivariate: bool = True
    max_rows_multivariate: int = Field(default=20_000, ge=50)
    auc_threshold: float = Field(default=AUC_ALERT, gt=0.5, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _methods_fit_kinds(self) -> DriftSettings:
        for kind, method in (("numeric", self.numeric_method), ("categorical", self.categorical_method)):
            if method is not None and kind not in METHODS[method].kinds:
                raise ValueError(f"{kind}_method {method!r} does not apply to {kind} features")
        return self
