"""The ``certify:`` section of ``rung.yaml``: the gate a version passes to become a release."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rung.config.section import Section

__all__ = [
    "Bound",
    "ChampionMargin",
    "SliceGate",
    "LatencyBudget",
    "SchemaGate",
    "TestsGate",
    "BehaviourCheck",
    "CertifySettings",
]


class Bound(Section):
    """An absolute bound on a metric: ``{min: 0.8}``, ``{max: 12.5}`` or both."""

    min: float | None = None
    max: float | None = None


class ChampionMargin(Section):
    """How much worse than the champion a candidate may be on one metric.

    "Worse" follows the metric's direction (lower AUC, higher RMSE). A
    relative margin is a fraction of the champion's value.
    """

    max_drop: float | None = Field(default=None, ge=0)
    max_relative_drop: float | None = Field(default=None, ge=0)


class SliceGate(Section):
    """Per-slice rules, on ``metric`` (default: the primary metric)."""

    metric: str | None = None
    min: float | None = None
    max: float | None = None
    max_drop_vs_champion: float | None = Field(default=0.05, ge=0)
    min_rows: int = Field(default=30, ge=1)


class LatencyBudget(Section):
    """p99 of in-process prediction, one row and 1,000 rows at a time."""

    single_row_p99_ms: float = Field(default=50.0, gt=0)
    batch_1000_p99_ms: float = Field(default=1000.0, gt=0)
    repeats: int = Field(default=200, ge=10)


class SchemaGate(Section):
    """Inputs must match the champion's, except columns listed as declared changes."""

    declared_changes: list[str] = Field(default_factory=list)


class TestsGate(Section):
    """The project's own pytest tests for its scoring code."""

    enabled: bool = True
    path: str = "tests"
    timeout_s: float = Field(default=600.0, gt=0)


class BehaviourCheck(Section):
    """An invariance or directional expectation on the model's score.

    ``directional``: adding ``change`` to ``feature`` moves the score as
    ``expect`` says (``increase``, ``decrease``, ``non_decreasing``,
    ``non_increasing``). ``invariance``: setting ``feature`` to each of
    ``values`` leaves the score unchanged (within ``tolerance``).
    """

    name: str | None = None
    kind: Literal["directional", "invariance"]
    feature: str
    change: float | None = None
    values: list[Any] | None = None
    expect: Literal["increase", "decrease", "non_decreasing", "non_increasing", "same"] = "same"
    tolerance: float = Field(default=1e-9, ge=0)
    max_violation_rate: float = Field(default=0.0, ge=0, le=1)
    rows: int = Field(default=200, ge=1)


class CertifySettings(Section):
    """``rung certify``: the gate a version passes to become a release."""

    thresholds: dict[str, Bound] = Field(default_factory=dict)
    versus_champion: dict[str, ChampionMargin] | None = None  # None: the primary metric, max_drop 0.01
    slices: SliceGate = Field(default_factory=SliceGate)
    latency: LatencyBudget = Field(default_factory=LatencyBudget)
    schema_check: SchemaGate = Field(default_factory=SchemaGate, alias="schema")
    tests: TestsGate = Field(default_factory=TestsGate)
    behaviour: list[BehaviourCheck] = Field(default_factory=list)
