"""From findings to a level on each maturity model: pure, no I/O.

The rule, for each dimension of a model (Azure's People, Model Creation and
Model Release; GigaOm's five categories; one dimension for Google and AWS):

- the dimension is at level L when every criterion placed at levels 1..L is
  met. A partly met criterion does not count; an optional one never blocks.
- ``unknown`` criteria (unanswered questions, things files cannot show) are
  set aside, never guessed: the level is what the known evidence supports,
  and the result lists what is unknown beside it.
- a dimension where every criterion is unknown is *not assessed*; the
  model's level is the lowest of its assessed dimensions.

The gaps are the criteria that stop the next level; the next steps are
their fixes, for the dimensions that hold the model's level down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rung.assess.catalogue import CRITERIA, MODELS, Criterion, MaturityModel, criterion
from rung.assess.findings import Finding

__all__ = ["DimensionScore", "ModelScore", "Gap", "score_models", "score_model", "next_steps"]


@dataclass(frozen=True)
class Gap:
    criterion: str
    title: str
    dimension: str
    level: int  # the level it stops
    status: str
    next_step: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DimensionScore:
    name: str
    level: int | None  # None: not assessed (every criterion unknown)
    criteria: tuple[str, ...]
    unknown: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "criteria": list(self.criteria), "unknown": list(self.unknown)}


@dataclass(frozen=True)
class ModelScore:
    model: str
    title: str
    level: int | None
    level_name: str | None
    top: int
    dimensions: tuple[DimensionScore, ...]
    gaps: tuple[Gap, ...]
    unknown: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "title": self.title, "level": self.level, "level_name": self.level_name,
                "top": self.top, "dimensions": [d.to_dict() for d in self.dimensions],
                "gaps": [g.to_dict() for g in self.gaps], "unknown": list(self.unknown)}


def _placed(model: MaturityModel, dimension: str) -> list[tuple[int, Criterion]]:
    return sorted(((p.level, c) for c in CRITERIA for p in c.placements
                   if p.model == model.key and p.dimension == dimension), key=lambda item: item[0])


def _dimension(model: MaturityModel, dimension: str, findings: dict[str, Finding]) -> tuple[DimensionScore, list[Gap]]:
    placed = _placed(model, dimension)
    status = {c.id: findings[c.id].status if c.id in findings else "unknown" for _, c in placed}
    blocking = [(level, c) for level, c in placed if not c.optional]
    unknown = tuple(c.id for _, c in blocking if status[c.id] == "unknown")
    if blocking and len(unknown) == len(blocking):
        return DimensionScore(dimension, None, tuple(c.id for _, c in placed), unknown), []
    failing = [(level, c) for level, c in blocking if status[c.id] in ("partial", "not_met")]
    level = failing[0][0] - 1 if failing else model.top
    gaps = [Gap(c.id, c.title, dimension, lvl, status[c.id], c.next_step)
            for lvl, c in blocking if lvl == level + 1 and status[c.id] != "met"]
    return DimensionScore(dimension, level, tuple(c.id for _, c in placed), unknown), gaps


def score_model(model: MaturityModel, findings: dict[str, Finding]) -> ModelScore:
    """Score one model: each dimension, then the lowest assessed one is the model's level."""
    dimensions: list[DimensionScore] = []
    gaps_by_dimension: dict[str, list[Gap]] = {}
    for name in model.dimensions:
        scored, found_gaps = _dimension(model, name, findings)
        dimensions.append(scored)
        gaps_by_dimension[name] = found_gaps
    assessed = [d.level for d in dimensions if d.level is not None]
    level = min(assessed) if assessed else None
    gaps = tuple(g for d in dimensions if d.level is not None and d.level == level for g in gaps_by_dimension[d.name])
    unknown = tuple(dict.fromkeys(u for d in dimensions for u in d.unknown))
    return ModelScore(model.key, model.title, level, model.level_name(level) if level is not None else None,
                      model.top, tuple(dimensions), gaps, unknown)


def score_models(findings: dict[str, Finding]) -> list[ModelScore]:
    return [score_model(m, findings) for m in MODELS]


def next_steps(scores: list[ModelScore]) -> list[dict[str, Any]]:
    """The distinct fixes behind every model's gaps, most widely useful first (they unblock the most models)."""
    by_criterion: dict[str, dict[str, Any]] = {}
    for s in scores:
        for gap in s.gaps:
            entry = by_criterion.setdefault(gap.criterion, {
                "criterion": gap.criterion, "title": gap.title, "status": gap.status,
                "next_step": criterion(gap.criterion).next_step, "unblocks": []})
            entry["unblocks"].append(f"{s.model} level {gap.level}")
    return sorted(by_criterion.values(), key=lambda e: (-len(e["unblocks"]), e["criterion"]))
