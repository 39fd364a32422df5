"""What a certification found: one :class:`Check` per rule, gathered in a :class:`CertificationReport`.

The report is the verdict's single shape: the CLI prints it, the metadata
store keeps it whole in the ``certification`` event, and MLflow gets its
:meth:`~CertificationReport.summary` as a tag a controller reads.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = ["Check", "CertificationReport", "Status", "TAG_LIMIT"]

Status = Literal["passed", "failed", "skipped"]

TAG_LIMIT = 5000  # MLflow's limit on a tag value


@dataclass(frozen=True)
class Check:
    """One row of a certification: what was measured against what was required."""

    name: str
    status: Status
    observed: float | str | None = None
    expected: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        observed = self.observed
        if isinstance(observed, float) and not math.isfinite(observed):
            observed = None  # JSON (and PostgreSQL) have no NaN
        return {"name": self.name, "status": self.status, "observed": observed, "expected": self.expected, "detail": self.detail}


@dataclass(frozen=True)
class CertificationReport:
    """Every check run on one version; ``certified`` when none failed."""

    name: str
    version: int
    checks: tuple[Check, ...]
    champion: int | None
    started_at: datetime
    duration_s: float

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def certified(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "failed"]

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("passed", "failed", "skipped")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "name": self.name,
            "version": self.version,
            "certified": self.certified,
            "champion": f"{self.name}:{self.champion}" if self.champion is not None else None,
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }

    def summary(self) -> str:
        """The verdict as compact JSON under MLflow's tag limit (the full report is in the event)."""
        failed = [c.name for c in self.failed]
        while True:
            text = json.dumps(
                {"certified": self.certified, "at": self.started_at.isoformat(), "champion": self.champion,
                 "counts": self.counts(), "failed": failed},
                separators=(",", ":"),
            )
            if len(text) < TAG_LIMIT or not failed:
                return text
            failed = failed[: len(failed) // 2] + ["..."] if len(failed) > 1 else []
