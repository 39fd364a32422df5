"""Re-running a model version from its record, and comparing the result.

The data comes from the recorded snapshot (kept in the artifact store, so
the source may have changed since), the parameters from the run record, and
the code from the recorded git commit when the working tree differs from
it and git still has that commit. The pipeline runs up to ``metrics``
without the cache and without registering; each metric must match the
original within ``tolerance`` (relative, or absolute below 1).
"""

from __future__ import annotations

import io
import math
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import PipelineError, RungError
from rung.lineage import code_version
from rung.pipeline.runner import StepUpdate

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["Reproduction", "reproduce", "compare_metrics"]


@dataclass(frozen=True)
class Reproduction:
    ref: str
    run_id: str
    tolerance: float
    code: str
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.comparisons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "run_id": self.run_id,
            "ok": self.ok,
            "tolerance": self.tolerance,
            "code": self.code,
            "metrics": self.comparisons,
            "notes": self.notes,
        }


def compare_metrics(original: dict[str, Any], new: dict[str, Any], tolerance: float) -> list[dict[str, Any]]:
    """One row per metric present in either side, overall and per slice."""

    def flat(result: dict[str, Any]) -> dict[str, float]:
        out = {k: v for k, v in result.get("overall", {}).items()}
        for name, metrics in result.get("slices", {}).items():
            out |= {f"{name}/{k}": v for k, v in metrics.items() if k != "rows"}
        return out

    a, b = flat(original), flat(new)
    rows = []
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        if x is None or y is None:
            rows.append({"metric": name, "original": x, "reproduced": y, "difference": None, "ok": False})
            continue
        if math.isnan(x) and math.isnan(y):
            diff, ok = 0.0, True
        else:
            diff = abs(x - y)
            ok = diff <= tolerance * max(1.0, abs(x))
        rows.append({"metric": name, "original": x, "reproduced": y, "difference": diff, "ok": ok})
    return rows


def reproduce(
    project: Project, ref: str, *, tolerance: float = 1e-6, on_update: Callable[[StepUpdate], None] | None = None
) -> Reproduction:
    record = project.model_version(ref)
    lineage = record.lineage
    if lineage.get("adopted_from"):
        raise RungError(f"{ref} was adopted from {lineage['adopted_from']}, not trained by rung: there is no run to reproduce")
    snapshot = lineage.get("data", {}).get("snapshot")
    if not snapshot or not project.artifacts.exists(snapshot):
        raise RungError(f"{ref}: its data snapshot {snapshot or '(none recorded)'} is not in {project.artifacts.root}")
    notes: list[str] = []
    recorded_code = lineage.get("code", {})
    commit = recorded_code.get("git_commit")
    if recorded_code.get("git_dirty"):
        notes.append("the original run had uncommitted changes: the code may differ from its commit")
    settings = project.settings
    original_run = project.store.get_run(record.run_id) if record.run_id else None
    recorded_settings = original_run.lineage.get("settings") if original_run else None
    if recorded_settings:
        settings = project.settings.with_pipeline_settings(recorded_settings)
        if recorded_settings != project.settings.pipeline_settings():
            notes.append("rung.yaml changed since the original run: reproducing with the settings recorded then")
    with tempfile.TemporaryDirectory(prefix="rung-reproduce-") as tmp:
        code_root, code = _code_root(project.root, commit, Path(tmp), notes)
        pipeline = project.load_pipeline(code_root)
        missing = [o for o in ("data", "metrics") if o not in pipeline.producer]
        if missing:
            raise PipelineError(f"reproduce needs the pipeline outputs 'data' and 'metrics'; missing: {missing}")
        result = project.run(
            trigger="reproduce",
            use_cache=False,
            on_update=on_update,
            params=lineage.get("params", {}),
            pinned={"data": snapshot},
            targets=["metrics"],
            pipeline=pipeline,
            reproduces=ref,
            lineage={"code": recorded_code if code_root != project.root else code_version(project.root)},
            settings=settings,
        )
    comparisons = compare_metrics(record.metrics, result.run.metrics, tolerance)
    return Reproduction(ref=ref, run_id=result.run.id, tolerance=tolerance, code=code, comparisons=comparisons, notes=notes)


def _code_root(root: Path, commit: str | None, tmp: Path, notes: list[str]) -> tuple[Path, str]:
    """The project tree at ``commit`` (via git archive) when the working tree differs from it."""
    if commit is None:
        notes.append("no git commit was recorded: reproducing with the current code")
        return root, "current working tree"
    current = code_version(root)
    if current.get("git_commit") == commit and not current.get("git_dirty"):
        return root, f"commit {commit[:12]} (working tree)"
    prefix = subprocess.run(["git", "rev-parse", "--show-prefix"], cwd=root, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=root, capture_output=True)
    if archive.returncode != 0:
        notes.append(f"commit {commit[:12]} is not in this repository: reproducing with the current code")
        return root, "current working tree"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp, filter="data")
    return tmp / prefix, f"commit {commit[:12]} (checked out from git)"
