"""One version, from the registry to a warm :class:`~rung.serving.batching.Runtime`: the gateway's loading step.

Download and verify the files (sha256), load the model with its flavour,
compile the pipeline where the compiled route gives the estimator's answers
on the version's training rows, start its worker processes (or predict in a
thread where the model cannot go to one) and warm it up. It runs in a
thread, off the event loop; :class:`~rung.serving.pool.VersionPool` decides
when, and what is routed to the result.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rung.errors import ModelVersionNotFound, RungError
from rung.models.compiled import CompiledPipeline, compile_model
from rung.models.loaded import LoadedModel
from rung.models.loader import training_inputs
from rung.serving.batching import Runtime
from rung.serving.metrics import GatewayMetrics
from rung.serving.stats import Stats
from rung.serving.worker import ModelWorker

if TYPE_CHECKING:
    from rung.project import Project
    from rung.store.records import ModelVersionRecord

__all__ = ["VersionLoader"]

log = logging.getLogger("rung.gateway")


class VersionLoader:
    """Loads versions for one gateway with its ``serve`` settings; each version counts into its own ``stats``."""

    def __init__(self, project: Project, metrics: GatewayMetrics, stats: Stats) -> None:
        self.project = project
        self.settings = project.settings.serve
        self.store = project.store
        self.metrics = metrics
        self.stats = stats

    def record(self, model: str, version: int) -> ModelVersionRecord:
        record = self.store.get_model_version(model, version)
        if record is None:
            raise ModelVersionNotFound(f"{model}:{version} is not a registered version")
        return record

    def verify(self, model: str, version: int) -> None:
        """Raise unless ``model:version`` is registered and its files match their sha256 (blocking)."""
        self.project.models_loader.fetch_verified(self.record(model, version))

    def load(self, model: str, version: int) -> Runtime:
        """Download, verify and load a version, start its worker, warm it up (off the event loop).

        OpenMP is held to ``serve.model_threads`` in this thread as in the
        prediction threads: the compile check and the warm-up predict here,
        and a model spreading over every core while other gateway processes
        load beside it spun for 0.2-0.9 s a call instead of a few ms.
        """
        from threadpoolctl import threadpool_limits

        record = self.record(model, version)
        loaded = self.project.models_loader.load(record)  # imports the flavour's libraries: limits reach only those loaded
        with threadpool_limits(limits=self.settings.model_threads, user_api="openmp"):
            return self._prepare(model, version, record, loaded)

    def _prepare(self, model: str, version: int, record: ModelVersionRecord, loaded: LoadedModel) -> Runtime:
        """Compile, start the workers of and warm up a version just loaded."""
        not_compiled = "serve.compile is false"
        if self.settings.compile:
            loaded.compiled, not_compiled = self._compile(loaded, record)
        workers: list[ModelWorker] = []
        if self.settings.isolation == "process":
            try:
                restarted = self.metrics.worker_restarts.labels(model, str(version)).inc
                workers.extend(ModelWorker(loaded, threads=self.settings.model_threads, on_restart=restarted)
                               for _ in range(self.settings.workers))
            except Exception as exc:  # e.g. a pyfunc model that cannot be pickled: predict in a thread instead
                for worker in workers:
                    worker.close()
                workers = []
                log.warning("%s predicts in a thread of the gateway: no worker process (%s)", loaded.ref, exc)
        batching = self.settings.batching
        runtime = Runtime(
            loaded,
            workers=[*workers],
            max_batch_size=batching.max_batch_size,
            max_wait_ms=batching.max_wait_ms,
            batching=batching.enabled,
            threads=self.settings.model_threads,
            on_batch=lambda m, rows: self.metrics.batch_rows.labels(m.name, str(m.version)).observe(rows),
            stats=self.stats.version(model, version),
        )
        runtime.warm_up()
        self.metrics.loaded.labels(model, str(version), loaded.flavor, loaded.device).set(1)
        if loaded.compiled is None:
            runtime.note = f"not compiled: {not_compiled}"
        log.info("loaded %s", runtime.describe())
        return runtime

    def _compile(self, loaded: LoadedModel, record: ModelVersionRecord) -> tuple[CompiledPipeline | None, str]:
        """The compiled route when it gives the estimator's answers on the version's training rows; else why not."""
        try:
            sample = training_inputs(record, self.project.artifacts, self.project.settings.data.target)
        except RungError as exc:
            log.warning("not compiled: %s", exc)
            return None, str(exc)
        return compile_model(loaded, sample)
