"""A rung project: its settings, its state in ``.rung/``, and what you do with it.

This is the composition root: the only place that turns settings into the
adapters (metadata store, artifact store, MLflow, executor). The CLI is a
thin layer over :class:`Project`::

    import rung
    project = rung.Project.open("churn")
    result = project.run()
    print(result.run.metrics["overall"])
    project.lineage("churn:1")
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.config import PROJECT_FILE, Settings, find_project_root, load_settings
from rung.errors import ConfigError, ModelVersionNotFound, PipelineError, ProjectNotFound, StoreError
from rung.pipeline.artifacts import ArtifactStore
from rung.pipeline.dag import Pipeline
from rung.pipeline.executors import PIPELINE_MODULE_PREFIX
from rung.pipeline.owner import settle, settle_all
from rung.pipeline.runner import Runner, RunResult, StepUpdate
from rung.store import MetadataStore, ModelVersionRecord, PipelineRun

if TYPE_CHECKING:
    from types import TracebackType

    import pandas as pd

    from rung.models.loader import ModelLoader
    from rung.pipeline.step import StepContext
    from rung.tracking import Tracking

__all__ = ["Project", "parse_model_ref"]

STATE_DIR = ".rung"


def parse_model_ref(ref: str) -> tuple[str, int]:
    """``churn:3`` → ``("churn", 3)``."""
    name, sep, version = ref.rpartition(":")
    if not sep or not name or not version.isdigit():
        raise ModelVersionNotFound(f"'{ref}' is not a model version; write NAME:VERSION, e.g. churn:1")
    return name, int(version)


class Project:
    """One project directory (with ``rung.yaml``) and its state."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root.resolve()
        self.settings = settings

    @classmethod
    def open(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Project:
        """The project at ``path`` (default: the current directory or the nearest parent with a rung.yaml)."""
        start = Path(path) if path is not None else None
        root = find_project_root(start)
        if root is None:
            where = start or Path.cwd()
            raise ProjectNotFound(f"no {PROJECT_FILE} in {where} or above; run `rung init NAME` or cd into a project")
        return cls(root, load_settings(root, overrides))

    @classmethod
    def from_context(cls, ctx: StepContext) -> Project:
        """The project a running step belongs to (settings as the run resolved them)."""
        return cls(ctx.project_root, ctx.settings)

    # -- adapters ------------------------------------------------------------------------

    @property
    def primary_metric(self) -> str:
        """The metric a person looks at first: ``evaluate.primary_metric``, else the task's (roc_auc, rmse)."""
        from rung.evaluation import PRIMARY_METRIC

        return self.settings.evaluate.primary_metric or PRIMARY_METRIC[self.settings.task]

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def database_url(self) -> str:
        return self.settings.store.database_url or f"sqlite:///{self.state_dir / 'rung.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.settings.tracking.uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @cached_property
    def store(self) -> MetadataStore:
        return MetadataStore(self.database_url, lock_dir=self.state_dir)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        """Step outputs and data snapshots: ``.rung/artifacts``, a cache of ``artifacts.uri`` when that is set."""
        return ArtifactStore(self.state_dir / "artifacts", uri=self.artifacts_uri)

    @property
    def artifacts_uri(self) -> str | None:
        """``artifacts.uri`` as every process can open it: a folder made absolute (from the project), else the URI.

        :class:`~rung.errors.ConfigError` for a location that cannot be
        opened; ``None`` when unset or when it names ``.rung/artifacts`` itself.
        """
        from rung.objectstore import is_remote, open_location

        uri = self.settings.artifacts.uri
        if not uri or is_remote(uri):
            return uri or None
        folder = Path(open_location(uri, root=self.root).full()).resolve()
        return None if folder == (self.state_dir / "artifacts").resolve() else str(folder)

    @cached_property
    def tracking(self) -> Tracking:
        from rung.tracking import Tracking

        return Tracking(self.tracking_uri, artifact_root=self.state_dir / "mlartifacts", lock_path=self.state_dir / "mlflow.lock")

    @cached_property
    def models_loader(self) -> ModelLoader:
        """Loads this project's registered versions through its verified local cache."""
        from rung.models.loader import ModelLoader

        return ModelLoader(self.state_dir / "models", self.tracking, self.settings.task, device=self.settings.serve.device)

    def close(self) -> None:
        """Release what this project opened: the metadata store's connections and MLflow's.

        Safe to call twice; an adapter that was never used is not opened to
        be closed. The project can be used again afterwards (the adapters
        are opened anew), which is what a long-lived caller that closes
        between commands expects.
        """
        store = self.__dict__.pop("store", None)
        tracking = self.__dict__.pop("tracking", None)
        self.__dict__.pop("models_loader", None)
        if store is not None:
            store.close()
        if tracking is not None:
            tracking.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # -- pipelines -------------------------------------------------------------------------

    def load_pipeline(self, root: Path | None = None) -> Pipeline:
        """Import the pipeline named by ``pipeline:`` (``file.py:attribute``)."""
        root = root or self.root
        file_part, _, attr = self.settings.pipeline.partition(":")
        attr = attr or "pipeline"
        path = (root / file_part).resolve()
        if not path.is_file():
            raise ConfigError(f"{PROJECT_FILE}: pipeline: {file_part} not found in {root}")
        module_name = PIPELINE_MODULE_PREFIX + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        if module_name not in sys.modules:
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            try:
                spec.loader.exec_module(module)
            except PipelineError:
                del sys.modules[module_name]
                raise
            except Exception as exc:
                del sys.modules[module_name]
                raise PipelineError(f"{file_part}: importing it failed: {type(exc).__name__}: {exc}") from exc
        pipeline = getattr(sys.modules[module_name], attr, None)
        if not isinstance(pipeline, Pipeline):
            raise PipelineError(f"{file_part}: no Pipeline named '{attr}' (set pipeline: FILE:NAME in {PROJECT_FILE})")
        return pipeline

    def run(
        self,
        *,
        trigger: str = "manual",
        use_cache: bool = True,
        on_update: Callable[[StepUpdate], None] | None = None,
        params: dict[str, Any] | None = None,
        pinned: dict[str, str] | None = None,
        targets: list[str] | None = None,
        pipeline: Pipeline | None = None,
        reproduces: str | None = None,
        lineage: dict[str, Any] | None = None,
        settings: Settings | None = None,
    ) -> RunResult:
        """Run the project's pipeline; raises :class:`~rung.errors.StepFailed` after recording a failure.

        ``settings`` replaces the project's own for this run (reproduction
        runs with the settings recorded back then).
        """
        from rung.lineage import code_version, environment
        from rung.pipeline.executors import make_executor

        pipeline = pipeline or self.load_pipeline()
        if targets is None and any("model_version" in s.outputs for s in pipeline.steps.values()):
            self.tracking.check_reachable()
        settings = settings or self.settings
        store = self.store
        executor_settings = settings.executor
        search = None
        if settings.tune is not None:  # train.tune: checked (metric, Ray installed) before anything runs
            from rung.tuning import TuneSearch

            search = TuneSearch(settings, self.root, tracking=self.tracking, address=executor_settings.address,
                                experiment=settings.tracking.experiment or settings.name)
        executor = make_executor(executor_settings.kind, workers=executor_settings.workers, address=executor_settings.address)
        try:
            runner = Runner(store, self.artifacts, executor, project_root=self.root, settings=settings, on_update=on_update,
                            search=search)
            recorded = {"code": code_version(self.root), "environment": environment(), **(lineage or {})}
            recorded.setdefault("pipeline_file", settings.pipeline)
            recorded["settings"] = settings.pipeline_settings()
            return runner.run(
                pipeline,
                project=settings.name,
                params=settings.params if params is None else params,
                trigger=trigger,
                pinned=pinned,
                targets=targets,
                use_cache=use_cache,
                lineage=recorded,
                reproduces=reproduces,
            )
        finally:
            executor.close()

    def runs(self, limit: int = 50) -> list[PipelineRun]:
        """The latest runs; one whose process died is recorded failed first (see :mod:`rung.pipeline.owner`)."""
        return settle_all(self.store, self.store.list_runs(project=self.settings.name, limit=limit))

    def get_run(self, run_id: str) -> PipelineRun:
        """A run by id or id prefix, settled like :meth:`runs`."""
        return settle(self.store, self.store.get_run(run_id))

    # -- the registry ------------------------------------------------------------------------

    def register_model(
        self,
        model: Any,
        *,
        metrics: dict[str, Any],
        train_set: pd.DataFrame,
        reference_profile: dict[str, Any],
        ctx: StepContext,
        data_source: str,
        fence: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Register ``model`` in MLflow and record its lineage in the metadata store (``fence``: see Tracking.register).

        ``model`` is what the train step returned, or already a
        :class:`~rung.models.trained.TrainedModel`; its prepare hook's file is
        packaged with it, and its classes and inputs go into the MLmodel file.
        """
        import json

        from rung.evaluation import flatten_metrics
        from rung.models.trained import trained_model
        from rung.tracking import manifest_digest

        trained = trained_model(self.settings, self.root, model, train_set)

        run_lineage = self.store.get_run(ctx.run_id).lineage
        code = run_lineage.get("code", {})
        tuning = run_lineage.get("tuning") or {}  # train.tune: the trials searched in this run are child runs of this one
        parent = tuning.get("mlflow_run_id") if tuning.get("searched_in") == ctx.run_id and not tuning.get("cached") else None
        snapshot = ctx.hashes.get("data", "")
        tags = {
            "rung.run_id": ctx.run_id,
            "rung.project": self.settings.name,
            "rung.snapshot": snapshot,
            "mlflow.source.git.commit": code.get("git_commit") or "",
            "rung.git_dirty": str(code.get("git_dirty")),
        }
        rung_meta: dict[str, Any] = {"inputs": trained.inputs, "task": trained.task}
        if trained.classes:
            rung_meta["classes"] = json.loads(json.dumps(trained.classes, default=str))
        if trained.prepare is not None:
            rung_meta["prepare"] = trained.prepare.spec
        registered = self.tracking.register(
            trained.native,
            flavor=trained.flavor,
            inputs=trained.inputs,
            predict=trained.predict,
            code_paths=[trained.prepare.file] if trained.prepare else [],
            metadata={"rung": rung_meta},
            name=self.settings.model_name,
            experiment=self.settings.tracking.experiment or self.settings.name,
            train=train_set,
            target=self.settings.data.target,
            params=ctx.params,
            metrics=flatten_metrics(metrics),
            tags=tags,
            data_digest=snapshot,
            data_source=data_source,
            data_path=self.artifacts.path(snapshot) if snapshot else self.root,
            artifacts={"reference_profile.json": reference_profile, "rung_metrics.json": metrics},
            fence=fence,
            run_id=parent,
        )
        lineage = {
            "pipeline_run": ctx.run_id,
            "data": {"snapshot": snapshot, "source": data_source, "rows": int(len(train_set))},
            "code": code,
            "params": ctx.params,
            "environment": run_lineage.get("environment", {}),
            "mlflow_run_id": registered.mlflow_run_id,
            "model_uri": registered.model_uri,
            "model_sha256": manifest_digest(registered.sha256),
            "reference_profile": ctx.hashes.get("reference_profile"),
            "outputs": {k: v for k, v in ctx.hashes.items()},
        }
        if tuning:
            lineage["tuning"] = tuning
        now = datetime.now(UTC)
        record = ModelVersionRecord(
            name=registered.name,
            version=registered.version,
            run_id=ctx.run_id,
            mlflow_run_id=registered.mlflow_run_id,
            model_uri=registered.model_uri,
            flavor=registered.flavor,
            sha256=registered.sha256,
            metrics=json.loads(json.dumps(metrics, default=float)),
            lineage=lineage,
            created_at=now,
        )
        try:
            self.store.add_model_version(record)
        except StoreError:
            self.tracking.delete_version(registered.name, registered.version)
            raise
        self.store.append_event(
            "model.registered",
            actor="pipeline",
            subject=registered.name,
            data={"version": registered.version, "run_id": ctx.run_id, "aliases": registered.aliases},
            time=now,
        )
        return {"name": registered.name, "version": registered.version, "aliases": registered.aliases}

    def model_version(self, ref: str) -> ModelVersionRecord:
        name, version = parse_model_ref(ref)
        record = self.store.get_model_version(name, version)
        if record is None:
            raise ModelVersionNotFound(f"no model version {name}:{version}; list them with `rung models`")
        return record

    def models(self, *, with_aliases: bool = True) -> list[dict[str, Any]]:
        """Every registered version with its aliases and metrics, newest first."""
        records = self.store.list_model_versions()
        aliases = self.tracking.aliases() if with_aliases and records else {}
        out = []
        for record in records:
            by_alias = aliases.get(record.name, {})
            out.append(
                {
                    "name": record.name,
                    "version": record.version,
                    "aliases": sorted(a for a, v in by_alias.items() if v == record.version),
                    "flavor": record.flavor,
                    "metrics": record.metrics.get("overall", {}),
                    "run_id": record.run_id,
                    "created_at": record.created_at.isoformat(),
                    "adopted_from": record.lineage.get("adopted_from"),  # models:/NAME/VERSION, or None: trained by rung
                }
            )
        return out

    def lineage(self, ref: str) -> dict[str, Any]:
        """Data snapshot ▸ code ▸ params ▸ environment ▸ run ▸ model version, as one record."""
        record = self.model_version(ref)
        run = self.store.get_run(record.run_id)
        return {
            "model": {"name": record.name, "version": record.version, "uri": record.model_uri, "flavor": record.flavor},
            "sha256": record.lineage.get("model_sha256"),
            "files": record.sha256,
            "data": record.lineage.get("data", {}),
            "code": record.lineage.get("code", {}),
            "params": record.lineage.get("params", {}),
            "environment": record.lineage.get("environment", {}),
            "pipeline_run": {
                "id": run.id,
                "status": run.status,
                "trigger": run.trigger,
                "started_at": run.started_at.isoformat(),
                "duration_s": run.duration_s,
            },
            "mlflow_run_id": record.mlflow_run_id,
            "metrics": record.metrics.get("overall", {}),
            "reference_profile": record.lineage.get("reference_profile"),
            # adopted from MLflow's registry (rung.adoption): where from, and what MLflow knew of it
            "adopted_from": record.lineage.get("adopted_from"),
            "mlflow": record.lineage.get("mlflow", {}),
            "tuning": record.lineage.get("tuning"),  # train.tune: metric, trials, best params
        }

