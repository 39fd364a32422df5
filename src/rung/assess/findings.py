"""What a collector found for one criterion, and the evidence behind it.

Statuses: ``met``, ``partial``, ``not_met`` and ``unknown`` (nobody could
tell: an unanswered people question, a criterion that files cannot show).
Confidence says where a finding comes from, strongest first: ``proven``
(rung's own records: a run, an event, a window), ``observed`` (files in the
repository), ``stated`` (the team's answers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["STATUSES", "CONFIDENCES", "Evidence", "Finding", "merge"]

STATUSES = ("met", "partial", "not_met", "unknown")
CONFIDENCES = ("proven", "observed", "stated", "none")
_RANK = {"met": 3, "partial": 2, "not_met": 1, "unknown": 0}


@dataclass(frozen=True)
class Evidence:
    """One thing that shows a finding: ``kind`` is run, event, version, window, deployment, file, config or answer."""

    kind: str
    ref: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "ref": self.ref, "detail": self.detail}


@dataclass(frozen=True)
class Finding:
    criterion: str
    status: str
    confidence: str
    summary: str
    evidence: tuple[Evidence, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"unknown confidence {self.confidence!r}")

    @property
    def met(self) -> bool:
        return self.status == "met"

    def to_dict(self) -> dict[str, Any]:
        return {"criterion": self.criterion, "status": self.status, "confidence": self.confidence,
                "summary": self.summary, "evidence": [e.to_dict() for e in self.evidence]}


def merge(*candidates: Finding | None) -> Finding | None:
    """The finding to keep among several for one criterion, strongest source first.

    Candidates come in order of confidence (records, files, answers). The
    first one that is met wins; otherwise the best status wins, and a
    stronger source wins a tie: an answer of "yes" lifts a criterion that
    files could not show, but never hides what records proved.
    """
    present = [c for c in candidates if c is not None]
    if not present:
        return None
    for candidate in present:
        if candidate.met:
            return candidate
    return max(present, key=lambda c: _RANK[c.status])  # max keeps the first of equals
