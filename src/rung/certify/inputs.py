"""Gathering what the certification rules judge: versions, data, loaded models and the project's test run.

This is the gate's I/O side. Each function takes the one adapter it reads
(the metadata store, MLflow, the model loader, the artifact store, the
project root) rather than the whole project, and turns an adapter's failure
into :class:`~rung.errors.CertificationError` where the gate cannot run
without it. The rules themselves are in :mod:`rung.certify.checks`.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rung.certify.checks import fmt, project_tests_check
from rung.certify.report import Check
from rung.errors import CertificationError, IntegrityError, RungError

if TYPE_CHECKING:
    import pandas as pd

    from rung.config import TestsGate
    from rung.models.loaded import LoadedModel
    from rung.pipeline.artifacts import ArtifactStore
    from rung.store.records import ModelVersionRecord

__all__ = [
    "Aliases",
    "Loader",
    "Versions",
    "find_champion",
    "load_candidate",
    "load_champion",
    "run_project_tests",
    "snapshot_inputs",
]


class Aliases(Protocol):
    """What the gate reads from MLflow's registry (:class:`rung.tracking.Tracking`): model → alias → version."""

    def aliases(self) -> dict[str, dict[str, int]]: ...


class Versions(Protocol):
    """What the gate reads from the metadata store (:class:`rung.store.MetadataStore`): a registered version."""

    def get_model_version(self, name: str, version: int) -> ModelVersionRecord | None: ...


class Loader(Protocol):
    """Loads a version, verifying its files (:class:`rung.models.loader.ModelLoader`)."""

    def load(self, record: ModelVersionRecord) -> LoadedModel: ...


def snapshot_inputs(record: ModelVersionRecord, artifacts: ArtifactStore, target: str) -> pd.DataFrame:
    """The rows ``record`` was trained on, without ``target``: what latency and behaviour are measured on."""
    from rung.models.loader import training_inputs

    try:
        return training_inputs(record, artifacts, target)
    except RungError as exc:
        raise CertificationError(str(exc)) from exc


def find_champion(tracking: Aliases, store: Versions, record: ModelVersionRecord) -> tuple[ModelVersionRecord | None, str]:
    """The version with the ``champion`` alias, or why there is none to compare with."""
    from rung.tracking import CHAMPION

    version = tracking.aliases().get(record.name, {}).get(CHAMPION)
    if version is None:
        return None, f"{record.name} has no @{CHAMPION} yet"
    if version == record.version:
        return None, f"{record.ref} is the @{CHAMPION}"
    champion = store.get_model_version(record.name, version)
    if champion is None:
        return None, f"@{CHAMPION} {record.name}:{version} is not in rung's metadata store"
    return champion, ""


def load_candidate(loader: Loader, record: ModelVersionRecord) -> tuple[LoadedModel | None, Check]:
    """The candidate in memory and its ``integrity`` check; files that fail their sha256 fail the check.

    Any other reason it cannot be loaded stops the gate: there would be
    nothing to certify.
    """
    expected = "sha256 as registered"
    try:
        model = loader.load(record)
    except IntegrityError as exc:
        return None, Check("integrity", "failed", None, expected, str(exc))
    except RungError as exc:
        raise CertificationError(f"{record.ref}: the model cannot be loaded: {exc}") from exc
    digest = str(record.lineage.get("model_sha256") or "")[:16]
    return model, Check("integrity", "passed", f"{len(record.sha256)} files", expected, f"sha256 {digest}…" if digest else "")


def load_champion(loader: Loader, champion: ModelVersionRecord | None, no_champion: str) -> tuple[LoadedModel | None, str]:
    """The champion in memory, to compare inputs and latency with; else why there is none."""
    if champion is None:
        return None, no_champion
    try:
        return loader.load(champion), ""
    except RungError as exc:
        return None, f"{champion.ref} cannot be loaded to compare: {exc}"


def run_project_tests(root: Path, gate: TestsGate, skip: bool) -> Check:
    """The project's pytest suite, in a child process in the project ``root``."""
    path = gate.path
    if skip:
        return Check("tests", "skipped", detail="--skip-tests")
    if not gate.enabled:
        return Check("tests", "skipped", detail="certify.tests.enabled is false")
    if not (root / path).exists():
        return Check("tests", "skipped", detail=f"no {path} in the project")
    if importlib.util.find_spec("pytest") is None:
        # rung depends on pytest; an environment that lost it still certifies the rest, and says what was not run
        detail = f"pytest is not installed in {sys.prefix}, so {path} was not run: pip install pytest"
        return Check("tests", "skipped", detail=detail)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path]
    try:
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=gate.timeout_s)
    except subprocess.TimeoutExpired:
        detail = f"pytest {path} ran past certify.tests.timeout_s {fmt(gate.timeout_s)} s"
        return Check("tests", "failed", "timed out", "pytest passes", detail)
    return project_tests_check(path, done.returncode, done.stdout + done.stderr)
