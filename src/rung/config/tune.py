"""``train.tune``: a hyperparameter search before training, as ``rung.yaml`` declares it.

::

    train:
      params: {learning_rate: 0.1, max_iter: 200}     # fixed, as without a search
      tune:
        metric: roc_auc          # default: evaluate.primary_metric, else the task's (roc_auc, rmse)
        trials: 16
        max_concurrent: 4
        space:
          learning_rate: {loguniform: [0.01, 0.3]}
          max_depth: {randint: [2, 8]}              # both ends included
          max_iter: {choice: [100, 200]}

Only the shape is checked here (a leaf: no Ray, no metrics); whether the
metric is one rung computes for the task is checked by :mod:`rung.tuning`
before the run starts.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ConfigDict, Field, model_serializer, model_validator, with_config
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from rung.config.section import Section

__all__ = ["Distribution", "TuneSettings", "TrainSection", "DISTRIBUTIONS"]

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")

Scalar = str | int | float | bool | None


class Distribution(Section):
    """One parameter's search range: exactly one of ``uniform``, ``loguniform``, ``randint`` (ends included), ``choice``."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[Scalar] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}  # as model_dump wrote it, or as written
        kinds = ", ".join(DISTRIBUTIONS)
        if not isinstance(value, dict) or len(value) != 1:
            raise _invalid(f"write one distribution, e.g. {{loguniform: [0.01, 0.3]}}; one of {kinds}")
        (kind,) = value
        if kind not in DISTRIBUTIONS:
            raise _invalid(f"{kind!r} is not a distribution; use one of {kinds}")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> Distribution:
        if self.choice is not None:
            if not self.choice:
                raise _invalid("choice: give at least one value")
            return self
        kind, (low, high) = self.kind, self.bounds
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise _invalid(f"{kind}: [{low:g}, {high:g}]: the low bound must be below the high one")
        if kind == "loguniform" and low <= 0:
            raise _invalid(f"loguniform: [{low:g}, {high:g}]: both bounds must be > 0")
        return self

    @model_serializer
    def _as_written(self) -> dict[str, Any]:
        return {self.kind: getattr(self, self.kind)}

    @property
    def kind(self) -> str:
        return next(k for k in DISTRIBUTIONS if getattr(self, k) is not None)

    @property
    def bounds(self) -> tuple[float, float]:
        value = getattr(self, self.kind)
        return float(value[0]), float(value[1])


def _invalid(message: str) -> PydanticCustomError:
    """A one-line error in the loader's words (without pydantic's "Value error," in front)."""
    return PydanticCustomError("tune", message)


class TuneSettings(Section):
    """The search: ``trials`` random draws from ``space``, at most ``max_concurrent`` at once, scored on ``metric``.

    Each trial trains on the train split less ``validation_size`` of it
    (drawn with ``seed``, default ``split.seed``) and is scored on that
    held-out part; the test split stays untouched for ``evaluate``.
    """

    metric: str | None = None
    trials: int = Field(default=16, ge=1, le=10_000)
    max_concurrent: int | None = Field(default=None, ge=1, le=1024)
    space: dict[str, Distribution] = Field(min_length=1)
    validation_size: float = Field(default=0.2, gt=0, lt=1)
    seed: int | None = None


@with_config(ConfigDict(extra="allow"))
class TrainSection(TypedDict, total=False):
    """``train:``: a free mapping (what a team's own steps read stays theirs) with three keys rung knows."""

    params: dict[str, Any]
    prepare: str | None
    tune: TuneSettings
