"""The rule vocabulary of ``rung.yaml``: a condition on a metric, held for some consecutive windows.

Alert rules (:mod:`rung.config.alerts`) and the drift and performance
retraining triggers (:mod:`rung.config.triggers`) share this shape, so a user
writes ``{metric: drift.share, condition: "> 0.3", for: 2}`` the same way in
both places, and both judge it the same way.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from rung.config.section import Section

__all__ = ["Condition", "MetricRule"]

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
    "!=": lambda a, b: not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}
_CONDITION = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_CONDITION_HELP = 'write an operator (>, >=, <, <=, ==, !=) and a number, in quotes: "> 0.3"'


@dataclass(frozen=True)
class Condition:
    """A comparison of a metric with a threshold, written ``"> 0.3"`` in ``rung.yaml``.

    ``==`` and ``!=`` compare with a relative tolerance of 1e-9, because
    metrics are computed floats.
    """

    op: str
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in _OPERATORS or not math.isfinite(self.threshold):
            raise ValueError(f"{self.op} {self.threshold} is not a condition; {_CONDITION_HELP}")

    @classmethod
    def parse(cls, text: object) -> Condition:
        if not isinstance(text, str):
            # YAML reads `condition: > 0.3` unquoted as a folded string and `0.3` as a number.
            raise ValueError(f"{text!r} is not a condition; {_CONDITION_HELP}")
        match = _CONDITION.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a condition; {_CONDITION_HELP}")
        return cls(match[1], float(match[2]))

    def holds(self, value: float) -> bool:
        """Whether ``value`` satisfies the condition; never for NaN (nothing was measured)."""
        return not math.isnan(value) and _OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.op} {_exact(self.threshold)}"


class MetricRule(Section):
    """A condition on one metric, or on a family (``drift.feature.*``), held ``for`` consecutive windows.

    Metric names are free-form dotted strings (``drift.share``,
    ``performance.accuracy``, ``ops.p99_ms``). A name ending in ``.*`` is a
    prefix: each metric under it (each feature) is followed on its own.
    """

    metric: str
    condition: str
    windows: int = Field(default=1, ge=1, le=10_000, alias="for")

    @field_validator("metric")
    @classmethod
    def _metric(cls, metric: str) -> str:
        if not re.fullmatch(r"[^\s*]+(?:\.\*)?", metric):
            raise ValueError(f"{metric!r} is not a metric name; write a dotted name (drift.share) or a prefix (drift.feature.*)")
        return metric

    @field_validator("condition", mode="before")
    @classmethod
    def _condition(cls, condition: object) -> str:
        return str(Condition.parse(condition))

    @property
    def predicate(self) -> Condition:
        return Condition.parse(self.condition)

    def covers(self, name: str) -> bool:
        """Whether this rule looks at the metric called ``name``."""
        if self.metric.endswith(".*"):
            prefix = self.metric[:-1]
            return name.startswith(prefix) and len(name) > len(prefix)
        return name == self.metric

    def measured(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """The metrics of one window this rule looks at that carry a number (absent and NaN left out)."""
        found = {}
        for name, value in metrics.items():
            if self.covers(name):
                number = _number(value)
                if number is not None:
                    found[name] = number
        return found


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _exact(x: float) -> str:
    """A threshold as short as possible without changing it."""
    short = f"{x:.6g}"
    return short if float(short) == x else repr(x)
