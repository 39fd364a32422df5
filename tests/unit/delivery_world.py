"""A small world for the delivery unit tests: a project on a real SQLite store, a registry in memory, a request log in a list.

Only the model registry (MLflow) is replaced: it is slow to start and the
rollout code talks to it through four calls (``aliases``, ``set_alias``,
``delete_alias``). Everything the decisions depend on (rollouts, routing
tables, events, leases, feedback) lives in the real
:class:`~rung.store.MetadataStore`, and time comes from a
:class:`~rung.clock.ManualClock`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from rung.clock import ManualClock
from rung.config import Settings
from rung.delivery.controller import Controller
from rung.delivery.rollout import current
from rung.delivery.routing import set_routing, single_version
from rung.project import Project
from rung.store import Deployment, MetadataStore, ModelVersionRecord

MODEL = "churn"
_TEMPLATE = tempfile.TemporaryDirectory(prefix="rung-delivery-")  # one migrated database, copied for each world


def _copy_migrated(target: Path) -> None:
    """A fresh store at ``target`` without running the migrations again (they take most of a test's time)."""
    template = Path(_TEMPLATE.name) / "rung.db"
    if not template.exists():
        MetadataStore(f"sqlite:///{template}", lock_dir=template.parent).close()
    with contextlib.closing(sqlite3.connect(template)) as source, contextlib.closing(sqlite3.connect(target)) as copy:
        source.backup(copy)


class Registry:
    """The registry's aliases, in memory; counts how often they are read (each read is an MLflow call in real life)."""

    def __init__(self) -> None:
        self.by_model: dict[str, dict[str, int]] = {}
        self.reads = 0
        self.writes: list[tuple[str, str, int | None]] = []
        self.on_read: Callable[[], None] = lambda: None  # what else happens while the registry is read (a slow MLflow)

    def aliases(self) -> dict[str, dict[str, int]]:
        self.reads += 1
        self.on_read()
        return {model: dict(found) for model, found in self.by_model.items()}

    def set_alias(self, model: str, alias: str, version: int) -> None:
        self.writes.append((model, alias, version))
        self.by_model.setdefault(model, {})[alias] = version

    def delete_alias(self, model: str, alias: str) -> None:
        self.writes.append((model, alias, None))
        self.by_model.get(model, {}).pop(alias, None)


@dataclass
class LoggedRequests:
    """Logged requests with their time, as :func:`rung.monitor.logreader.request_window` returns them for a window."""

    rows: list[tuple[datetime, str, dict[str, Any]]] = field(default_factory=list)
    reads: int = 0
    failing: bool = False
    on_read: Callable[[], None] = lambda: None  # what else happens while the log is read (a slow scan)

    def __call__(self, project: Project, model: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
        self.reads += 1
        self.on_read()
        if self.failing:
            raise OSError("the request log cannot be read")
        return [dict(row) for time, name, row in self.rows if name == model and since <= time < until]

    def add(self, time: datetime, rows: list[dict[str, Any]], model: str = MODEL) -> None:
        self.rows.extend((time, model, row) for row in rows)


def answered(version: int, n: int, *, start: int = 0, errors: int = 0, latency_ms: float = 4.0, shadow: bool = False,
             correct: float | None = None, seed: int = 0, prediction: str | None = None) -> list[dict[str, Any]]:
    """``n`` requests answered by ``version``: the first ``errors`` failed; with ``correct``, feedback on each
    (the share ``correct`` of them right). Scores come from one distribution, so versions never diverge."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        score = float(rng.beta(2, 5))
        predicted = prediction if prediction is not None else str(int(score > 0.5))
        value = None
        if correct is not None:
            right = rng.random() < correct
            value = float(predicted) if right else 1.0 - float(predicted)
        out.append({"request_id": f"r{start + i}", "version": version, "variant": "x", "shadow": shadow,
                    "status": 500 if i < errors else 200, "latency_ms": latency_ms + float(rng.uniform(0, 1)),
                    "prediction": predicted, "score": score, "value": value})
    return out


class World:
    """One project named ``churn`` in ``root``: versions, certifications, a champion, and a controller to drive it."""

    def __init__(self, root: Path, deploy: dict[str, Any] | None = None) -> None:
        self.clock = ManualClock()
        settings = Settings.model_validate({"name": MODEL, "deploy": deploy or {}})
        root.mkdir(parents=True, exist_ok=True)
        self.project = Project(root, settings)
        self.project.state_dir.mkdir(exist_ok=True)
        _copy_migrated(self.project.state_dir / "rung.db")
        self.registry = Registry()
        self.project.tracking = self.registry  # type: ignore[assignment]
        self.store = self.project.store
        self.log = LoggedRequests()

    def version(self, version: int, *, certified: bool | None = True, model: str = MODEL) -> str:
        """Register ``model:version`` and (unless ``certified`` is None) record its certification report."""
        self.store.add_model_version(ModelVersionRecord(
            name=model, version=version, run_id=f"run{version}", mlflow_run_id=f"ml{version}", model_uri=f"models:/{model}/{version}",
            flavor="sklearn", sha256={}, metrics={}, lineage={}, created_at=self.clock.now()))
        ref = f"{model}:{version}"
        if certified is not None:
            self.store.append_event("certification", actor="test", subject=ref, data={"certified": certified},
                                    time=self.clock.now())
        return ref

    def champion(self, version: int, model: str = MODEL) -> None:
        """``version`` is the champion and serves alone, as after an earlier promotion."""
        self.registry.by_model.setdefault(model, {})["champion"] = version
        set_routing(self.store, single_version(model, version), actor="test", reason="start")

    def controller(self, **kwargs: Any) -> Controller:
        return Controller(self.project, clock=self.clock, requests=self.log, **({"holder": "one"} | kwargs))

    def newest(self, model: str = MODEL) -> Deployment:
        found = current(self.store.deployments(model, limit=1000))
        assert found is not None
        return found

    def weights(self, model: str = MODEL) -> dict[int, float]:
        record = self.store.route(model)
        assert record is not None
        return {v["version"]: v["weight"] for v in record.variants}

    def shadows(self, model: str = MODEL) -> list[int]:
        record = self.store.route(model)
        assert record is not None
        return [s["version"] for s in record.shadows]

    def aliases(self, model: str = MODEL) -> dict[str, int]:
        return dict(self.registry.by_model.get(model, {}))

    def rollout_events(self, deployment_id: str | None = None, model: str = MODEL) -> list[dict[str, Any]]:
        wanted = deployment_id or self.newest(model).id
        return [e.data for e in self.store.events(subject=model, limit=5000)
                if e.kind == "rollout" and e.data.get("deployment") == wanted]
