"""Runs a pipeline: schedules ready steps, serves cache hits, records everything.

The runner owns the loop and the record; executors only run steps. A step
whose cache key (its code, its input hashes, its parameters and settings,
and any outside fingerprint it declares) was seen before, with its outputs
still in the artifact store, is a cache hit and does not run. A failed step
fails the run with its error and log; nothing downstream runs, and what was
already running is let finish and recorded. The run's row names this
process as its owner, so that when it dies without a word (``kill -9``) its
workers follow it and the next reader records the run as failed
(:mod:`rung.pipeline.owner`).

A :class:`ParamSearch` (``train.tune``) may choose a step's params before
it runs: the runner calls it in this process when the step is ready, caches
its record like a step's outputs, writes it into the run's lineage under
``tuning``, and gives the chosen params to that step and every step started
after it. A failed search fails that step.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from rung.errors import RungError, StepFailed
from rung.pipeline.artifacts import ArtifactStore
from rung.pipeline.dag import Pipeline
from rung.pipeline.executors import Executor, StepOutcome, StepTask, capture_output
from rung.pipeline.owner import RunOwner
from rung.pipeline.step import Step, StepContext
from rung.store import MetadataStore, PipelineRun, StepRun

__all__ = ["Runner", "RunResult", "StepUpdate", "ParamSearch"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StepUpdate:
    """Sent to the progress callback when a step changes state."""

    run_id: str
    step: str
    status: str  # running | succeeded | cached | failed | skipped | pinned
    outcome: StepOutcome | None = None


@dataclass(frozen=True)
class RunResult:
    run: PipelineRun
    steps: list[StepRun]
    outputs: dict[str, str] = field(default_factory=dict)


class ParamSearch(Protocol):
    """Chooses one step's params before it runs, from its inputs: a hyperparameter search (:class:`rung.tuning.TuneSearch`).

    ``search`` returns a JSON-able record of what it did whose ``params``
    are the params to run with; it runs in the runner's process, its prints
    going to the step's ``<step>.tune.log``. ``fingerprint`` is what the
    record depends on beyond the step's own cache key.
    """

    label: str

    def wants(self, step: Step) -> bool: ...

    def fingerprint(self) -> str: ...

    def search(self, step: Step, values: dict[str, Any], ctx: StepContext) -> dict[str, Any]: ...


class Runner:
    """Executes pipelines against one metadata store, artifact store and executor."""

    def __init__(
        self,
        store: MetadataStore,
        artifacts: ArtifactStore,
        executor: Executor,
        *,
        project_root: Path,
        settings: Any = None,
        clock: Callable[[], datetime] = utcnow,
        on_update: Callable[[StepUpdate], None] | None = None,
        search: ParamSearch | None = None,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.executor = executor
        self.project_root = project_root
        self.settings = settings
        self.clock = clock
        self.on_update = on_update or (lambda update: None)
        self.search = search
        self._settings_json = settings.pipeline_fingerprint() if settings is not None else "{}"

    def run(
        self,
        pipeline: Pipeline,
        *,
        project: str,
        params: Mapping[str, Any] | None = None,
        trigger: str = "manual",
        pinned: Mapping[str, str] | None = None,
        targets: list[str] | None = None,
        use_cache: bool = True,
        lineage: dict[str, Any] | None = None,
        reproduces: str | None = None,
    ) -> RunResult:
        """Run ``pipeline``; raise :class:`StepFailed` (after recording) if a step fails.

        ``pinned`` supplies outputs by reference (e.g. a recorded data snapshot),
        so the steps producing them do not run; ``targets`` runs only what those
        steps or outputs need.
        """
        params = dict(params or {})
        lineage = dict(lineage or {})
        pinned = dict(pinned or {})
        run_id = uuid.uuid4().hex
        needed = pipeline.ancestors(targets) if targets else set(pipeline.steps)
        order = [n for n in pipeline.order() if n in needed]
        owner = RunOwner.current()
        self.store.create_run(
            PipelineRun(
                id=run_id,
                project=project,
                pipeline=pipeline.name,
                status="running",
                trigger=trigger,
                started_at=self.clock(),
                params=params,
                lineage=lineage,
                steps_total=len(order),
                reproduces=reproduces,
                owner_pid=owner.pid,
                owner_host=owner.host,
                owner_started=owner.started,
            ),
            steps=order,
        )
        available: dict[str, str] = {}
        pending: list[str] = []
        for name in order:
            outs = pipeline.steps[name].outputs
            if all(o in pinned for o in outs):
                available.update({o: pinned[o] for o in outs})
                self._record(run_id, name, "pinned", outputs={o: pinned[o] for o in outs})
            else:
                pending.append(name)

        running: dict[Future[StepOutcome], tuple[str, str | None]] = {}
        cache_hits = 0
        failure: StepOutcome | None = None
        searched = self.search is None
        try:
            while pending or running:
                if failure is None:
                    for name in list(pending):
                        step = pipeline.steps[name]
                        if not all(i in available for i in step.inputs):
                            continue
                        pending.remove(name)
                        inputs = {i: available[i] for i in step.inputs}
                        if not searched and self.search is not None and self.search.wants(step):
                            searched = True
                            chosen = self._search(self.search, run_id, step, inputs, params, available, lineage, use_cache)
                            if isinstance(chosen, StepOutcome):
                                failure = chosen
                                self._record(run_id, name, "failed", error=chosen.error, log_path=str(self._tune_log(run_id, step)))
                                break
                            params = chosen
                        ctx = self._context(run_id, step, params, available)
                        key = self._cache_key(step, inputs, params, ctx)  # written even when not read
                        hit = self.store.cache_get(key) if key and use_cache else None
                        if hit is not None and all(self.artifacts.exists(ref) for ref in hit.values()):
                            available.update(hit)
                            cache_hits += 1
                            self._record(run_id, name, "cached", cache_key=key, outputs=hit, cached=True)
                            continue
                        log_path = self.project_root / ".rung" / "logs" / run_id / f"{name}.log"
                        now = self.clock()
                        self.store.record_step(
                            run_id, name, status="running", started_at=now, cache_key=key, log_path=str(log_path)
                        )
                        self.on_update(StepUpdate(run_id, name, "running"))
                        task = StepTask(step, ctx, inputs, self.artifacts.root, log_path, self.artifacts.uri)
                        running[self.executor.submit(task)] = (name, key)
                elif pending:
                    for name in pending:
                        self._record(run_id, name, "skipped", error=f"not run: '{failure.name}' failed")
                    pending.clear()
                if not running:
                    if pending and failure is None:
                        raise AssertionError(f"steps {pending} can never run")  # Pipeline() rules this out
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    name, key = running.pop(future)
                    outcome = _result(future, name)
                    status = "succeeded" if outcome.ok else "failed"
                    self.store.record_step(
                        run_id,
                        name,
                        status=status,
                        finished_at=self.clock(),
                        duration_s=outcome.duration_s,
                        attempts=outcome.attempts,
                        outputs=outcome.outputs,
                        error=outcome.error,
                    )
                    if outcome.ok:
                        available.update(outcome.outputs)
                        if key:
                            self.store.cache_put(key, name, outcome.outputs, run_id, self.clock())
                    elif failure is None:
                        failure = outcome
                    self.on_update(StepUpdate(run_id, name, status, outcome))
        except BaseException as exc:
            self.store.update_run(
                run_id, status="failed", finished_at=self.clock(), error=f"interrupted: {exc!r}", cache_hits=cache_hits
            )
            raise

        summary = self._summary(available)
        if failure is not None:
            log_path = self.project_root / ".rung" / "logs" / run_id / f"{failure.name}.log"
            if not log_path.exists() and self._tune_log(run_id, pipeline.steps[failure.name]).exists():
                log_path = self._tune_log(run_id, pipeline.steps[failure.name])
            self.store.update_run(
                run_id,
                status="failed",
                finished_at=self.clock(),
                error=f"{failure.name}: {failure.error}",
                cache_hits=cache_hits,
                **summary,
            )
            error = StepFailed(failure.name, failure.error or "failed", log_path)
            error.run_id = run_id  # type: ignore[attr-defined]
            error.report = failure.report  # type: ignore[attr-defined]
            error.error_type = failure.error_type  # type: ignore[attr-defined]
            raise error
        self.store.update_run(run_id, status="succeeded", finished_at=self.clock(), cache_hits=cache_hits, **summary)
        return RunResult(run=self.store.get_run(run_id), steps=self.store.steps(run_id), outputs=available)

    def _tune_log(self, run_id: str, step: Step) -> Path:
        return self.project_root / ".rung" / "logs" / run_id / f"{step.name}.tune.log"

    def _search(
        self,
        search: ParamSearch,
        run_id: str,
        step: Step,
        inputs: dict[str, str],
        params: dict[str, Any],
        available: dict[str, str],
        lineage: dict[str, Any],
        use_cache: bool,
    ) -> dict[str, Any] | StepOutcome:
        """The params ``step`` runs with, as ``search`` chooses them (or as it chose them before); a failed outcome if it fails."""
        ctx = self._context(run_id, step, params, available)
        base = self._cache_key(step, inputs, params, ctx)
        key = None
        if base is not None:
            material = json.dumps({"step": base, "search": search.fingerprint()}, sort_keys=True)
            key = hashlib.sha256(material.encode()).hexdigest()
        self.on_update(StepUpdate(run_id, f"{step.name} ({search.label})", "running"))
        hit = self.store.cache_get(key) if key and use_cache else None
        if hit is not None and self.artifacts.exists(hit.get("tuning", "")):
            record = {**self.artifacts.get(hit["tuning"]), "cached": True}
        else:
            log_path = self._tune_log(run_id, step)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            try:
                values = {i: self.artifacts.get(ref) for i, ref in inputs.items()}
                with open(log_path, "a", encoding="utf-8") as log, capture_output(log):
                    try:
                        record = dict(search.search(step, values, ctx))
                    except Exception as exc:
                        if isinstance(exc, RungError):
                            print(f"[rung] {exc}", flush=True)
                        else:
                            traceback.print_exc()
                        raise
            except Exception as exc:
                message = str(exc) if isinstance(exc, RungError) else f"{type(exc).__name__}: {exc}"
                return StepOutcome(name=step.name, ok=False, attempts=1, duration_s=time.perf_counter() - started,
                                   error=f"{search.label} failed: {message}", error_type=type(exc).__name__)
            record = {**record, "searched_in": run_id, "cached": False}
            if key:
                self.store.cache_put(key, f"{step.name}.{search.label}", {"tuning": self.artifacts.put(record)}, run_id,
                                     self.clock())
        lineage["tuning"] = record
        self.store.update_run(run_id, lineage=lineage)
        return dict(record["params"])

    def _record(self, run_id: str, name: str, status: str, **fields: Any) -> None:
        now = self.clock()
        self.store.record_step(run_id, name, status=status, started_at=now, finished_at=now, duration_s=0.0, **fields)
        self.on_update(StepUpdate(run_id, name, status))

    def _context(self, run_id: str, step: Step, params: dict[str, Any], available: dict[str, str]) -> StepContext:
        return StepContext(
            run_id=run_id,
            step=step.name,
            project_root=self.project_root,
            params=params,
            settings=self.settings,
            hashes=dict(available),
            artifact_root=self.artifacts.root,
        )

    def _cache_key(self, step: Step, inputs: dict[str, str], params: dict[str, Any], ctx: StepContext) -> str | None:
        if not step.cache:
            return None
        material: dict[str, Any] = {"code": step.code_hash(), "inputs": inputs}
        if "params" in step.uses or "ctx" in step.uses:
            material["params"] = params
        if "ctx" in step.uses:
            material["settings"] = self._settings_json
        if step.fingerprint is not None:
            outside = step.fingerprint(ctx)
            if outside is None:
                return None
            material["fingerprint"] = outside
        blob = json.dumps(material, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def _summary(self, available: dict[str, str]) -> dict[str, Any]:
        """What the run record shows: the ``metrics`` output and the ``model_version`` output."""
        summary: dict[str, Any] = {}
        if "metrics" in available and available["metrics"].endswith(".json"):
            summary["metrics"] = self.artifacts.get(available["metrics"])
        if "model_version" in available and available["model_version"].endswith(".json"):
            registered = self.artifacts.get(available["model_version"])
            if isinstance(registered, dict):
                summary["model_name"] = registered.get("name")
                summary["model_version"] = registered.get("version")
        return summary


def _result(future: Future[StepOutcome], name: str) -> StepOutcome:
    try:
        return future.result()
    except Exception as exc:  # the worker itself died (OOM, segfault, Ray node lost)
        return StepOutcome(name=name, ok=False, attempts=1, error=f"worker died: {exc}", error_type=type(exc).__name__)
