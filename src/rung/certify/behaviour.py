"""Declared behaviour expectations (``certify.behaviour``): how the score moves when one input does.

A directional check adds an amount to a feature and expects the score to
rise or fall; an invariance check sets a feature to other values and
expects the score to stay put. Both run on the loaded model over rows the
caller chose, and fail when too many rows violate the expectation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rung.certify.checks import EPS, finite_number
from rung.certify.report import Check, Status
from rung.config import BehaviourCheck
from rung.errors import CertificationError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from rung.models.loaded import LoadedModel

__all__ = ["EXPECTATION", "behaviour_check", "input_types", "validate_behaviour"]

EXPECTATION = {"increase": "rise", "decrease": "fall", "non_decreasing": "not fall", "non_increasing": "not rise", "same": "not move"}


def _check_key(index: int) -> str:
    return f"rung.yaml: certify.behaviour[{index}]"


def validate_behaviour(checks: Sequence[BehaviourCheck], inputs: dict[str, bool]) -> None:
    """Raise :class:`CertificationError` for a check that cannot run; ``inputs`` maps column → numeric."""
    for index, check in enumerate(checks):
        key = _check_key(index)
        if check.feature not in inputs:
            raise CertificationError(
                f"{key}.feature: '{check.feature}' is not an input of the model (inputs: {', '.join(inputs)})"
            )
        numeric = inputs[check.feature]
        if check.kind == "directional":
            if check.change is None:
                raise CertificationError(f"{key}.change: a directional check needs the amount to add to '{check.feature}'")
            if not numeric:
                raise CertificationError(f"{key}.feature: '{check.feature}' is not numeric; a directional check adds `change` to it")
        else:
            if not check.values:
                raise CertificationError(f"{key}.values: an invariance check needs the values to set '{check.feature}' to")
            if check.expect != "same":
                raise CertificationError(f"{key}.expect: an invariance check expects 'same', not '{check.expect}'")
            if numeric and any(finite_number(v) is None for v in check.values):
                raise CertificationError(f"{key}.values: '{check.feature}' is numeric; give numbers")


def _violations(before: np.ndarray, after: np.ndarray, expect: str, tolerance: float) -> np.ndarray:
    """Rows whose score moved against ``expect``; ``tolerance`` is the band that counts as "no change"."""
    diff = after.astype(float) - before.astype(float)
    if expect == "increase":
        return ~(diff > tolerance)
    if expect == "decrease":
        return ~(diff < -tolerance)
    if expect == "non_decreasing":
        return ~(diff >= -tolerance)
    if expect == "non_increasing":
        return ~(diff <= tolerance)
    return ~(abs(diff) <= tolerance)


def behaviour_check(model: LoadedModel, rows: pd.DataFrame, check: BehaviourCheck, index: int = 0) -> Check:
    """Run one declared expectation on the model's scores over ``rows`` (model inputs only).

    ``directional``: ``change`` is added to ``feature`` (rows where it is
    missing are left out) and each row's score must move as ``expect``
    says. ``invariance``: ``feature`` is set to each of ``values`` in turn
    and no row's score may move by more than ``tolerance``. The check
    fails when the share of violating rows exceeds ``max_violation_rate``.
    """
    import numpy as np

    from rung.errors import InputError

    label = check.name or f"{check.kind} {check.feature}"
    name = f"behaviour.{label}"
    expected = f"≤ {check.max_violation_rate:.1%} violations"
    try:
        if check.kind == "directional":
            subset = rows[rows[check.feature].notna()]
            if subset.empty:
                return Check(name, "skipped", None, expected, f"no rows with a value for {check.feature}")
            before = model.score(model.frame(subset))
            after = model.score(model.frame(subset.assign(**{check.feature: subset[check.feature] + check.change})))
            bad = _violations(before, after, check.expect, check.tolerance)
            what = f"{check.feature} {check.change:+g}: the score should {EXPECTATION[check.expect]}"
        else:
            subset = rows
            before = model.score(model.frame(subset))
            bad = np.zeros(len(subset), dtype=bool)
            for value in check.values or []:
                after = model.score(model.frame(subset.assign(**{check.feature: value})))
                bad |= _violations(before, after, "same", check.tolerance)
            what = f"{check.feature} set to {', '.join(map(str, check.values or []))}: the score should move ≤ {check.tolerance:g}"
    except InputError as exc:
        raise CertificationError(f"{_check_key(index)}: {exc}") from exc
    rate = float(bad.mean()) if len(bad) else 0.0
    status: Status = "passed" if rate <= check.max_violation_rate + EPS else "failed"
    return Check(name, status, round(rate, 6), expected, f"{what}; {int(bad.sum())} of {len(bad)} rows did not")


def input_types(model: LoadedModel | None, inputs: pd.DataFrame) -> dict[str, bool]:
    """Column → numeric, for :func:`validate_behaviour`: the model's signature when it has one, else the frame's dtypes."""
    if model is not None and model.columns:
        return {c.name: c.numeric for c in model.columns}
    return {str(c): inputs[c].dtype.kind in "biuf" for c in inputs.columns}
