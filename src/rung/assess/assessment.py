"""Put the pieces together: collect findings, score them, keep the result.

Two ways in: :func:`assess_project` reads a rung project's records (and its
files, for what records cannot show: CI, tests); :func:`assess_repo` reads
any repository's files. Answers add what only the team knows. The result
is one JSON document (schema ``rung.assess/1``, documented in
docs/assess.md) that every report format is drawn from and the store keeps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.assess.answers import findings_from_answers
from rung.assess.catalogue import CRITERIA, MODELS
from rung.assess.files import findings_from_files
from rung.assess.findings import Finding, merge
from rung.assess.records import RecordFacts, findings_from_records, pin_to_commit, summary
from rung.assess.scan import Scan, scan_repository
from rung.assess.scoring import next_steps, score_models
from rung.version import __version__

if TYPE_CHECKING:
    from rung.project import Project
    from rung.store import MetadataStore

__all__ = ["SCHEMA", "MODEL_KEYS", "Assessment", "assess_project", "assess_repo", "user_store", "save"]

SCHEMA = "rung.assess/1"
MODEL_KEYS = tuple(m.key for m in MODELS)


@dataclass
class Assessment:
    target: str
    mode: str  # project | repo
    time: datetime
    findings: dict[str, Finding]
    partial: list[str] = field(default_factory=list)  # why the result may be incomplete
    facts: dict[str, Any] = field(default_factory=dict)  # counts for the header

    def to_dict(self) -> dict[str, Any]:
        scores = score_models(self.findings)
        criteria = []
        for c in CRITERIA:
            finding = self.findings.get(c.id)
            criteria.append({
                "id": c.id, "title": c.title, "met_when": c.met, "partly_when": c.partial,
                "answer_only": c.answer_only, "optional": c.optional, "next_step": c.next_step,
                "placements": [{"model": p.model, "dimension": p.dimension, "level": p.level} for p in c.placements],
                **(finding.to_dict() if finding else {"status": "unknown", "confidence": "none",
                                                      "summary": "not answered" if c.answer_only else "no evidence",
                                                      "evidence": []}),
            })
        return {
            "schema": SCHEMA, "rung": __version__, "target": self.target, "mode": self.mode,
            "time": self.time.isoformat(), "partial": self.partial, "facts": self.facts,
            "models": [s.to_dict() for s in scores],
            "levels": {s.model: s.level for s in scores},
            "criteria": criteria,
            "next_steps": next_steps(scores),
        }


def _combine(*sources: dict[str, Finding]) -> dict[str, Finding]:
    combined: dict[str, Finding] = {}
    for c in CRITERIA:
        found = merge(*(source.get(c.id) for source in sources))
        if found is not None:
            combined[c.id] = found
    return combined


def _scan_notes(scan: Scan) -> list[str]:
    notes = []
    if scan.partial:
        notes.append(scan.partial)
    if scan.unreadable:
        notes.append(f"{len(scan.unreadable)} files or directories could not be read: "
                     + ", ".join(scan.unreadable[:3]) + ("…" if len(scan.unreadable) > 3 else ""))
    if not scan.git:
        notes.append(f"{scan.root} is not a git repository: version control cannot be shown")
    return notes


def _scan_facts(scan: Scan) -> dict[str, Any]:
    return {"files": scan.files, "python_files": len(scan.scripts), "notebooks": len(scan.notebooks),
            "test_files": len(scan.tests), "ci_files": len(scan.ci), "scan_s": round(scan.elapsed_s, 3),
            "skipped_dirs": scan.skipped[:20]}


def assess_repo(path: str | Path, answers: dict[str, tuple[str, str]] | None = None, *, budget_s: float = 8.0,
                now: datetime | None = None, answers_source: str = "answers") -> Assessment:
    """Assess any repository from its files (and answers): rung need not be used in it."""
    scan = scan_repository(path, budget_s=budget_s)
    found = _combine(findings_from_files(scan), findings_from_answers(answers or {}, answers_source))
    return Assessment(str(scan.root), "repo", now or datetime.now(UTC), found, _scan_notes(scan),
                      _scan_facts(scan))


def assess_project(project: Project, answers: dict[str, tuple[str, str]] | None = None, *, budget_s: float = 8.0,
                   now: datetime | None = None, answers_source: str = "answers") -> Assessment:
    """Assess a rung project from its records first, its files second, answers last."""
    facts = RecordFacts.gather(project)
    scan = scan_repository(project.root, budget_s=budget_s)
    from_files = {cid: pin_to_commit(f, facts, project.root) for cid, f in findings_from_files(scan).items()}
    found = _combine(findings_from_records(facts), from_files, findings_from_answers(answers or {}, answers_source))
    notes = [n for n in _scan_notes(scan) if "not a git repository" not in n or not facts.runs]
    return Assessment(str(project.root), "project", now or datetime.now(UTC), found, notes,
                      summary(facts) | _scan_facts(scan))


def user_store() -> MetadataStore:
    """Where ``rung assess --repo`` keeps results outside a project: ``$RUNG_HOME`` (default ~/.rung)."""
    from rung.store import MetadataStore

    home = Path(os.environ.get("RUNG_HOME") or Path.home() / ".rung").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return MetadataStore(f"sqlite:///{home / 'rung.db'}")


def save(store: MetadataStore, doc: dict[str, Any]) -> int:
    return store.add_assessment(time=datetime.fromisoformat(doc["time"]), target=doc["target"], mode=doc["mode"],
                                levels=doc["levels"], result=doc)

