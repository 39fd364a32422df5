"""Scoring a file or a query with one registered version, batch by batch, into a file that appears whole.

The version is loaded as the gateway loads it (files checked against their
sha256 first) and every batch goes through the same :meth:`LoadedModel.frame`
checks a request does, so a row the gateway would refuse is refused here too,
with its column and its row offset in the input. Memory holds one batch at a
time (``batch_rows``, 65,536 by default), whatever the size of the input.

Each run is recorded as a ``batch.scored`` event on the model, with its
lineage: what was read (a file's sha256, or the query's), the version, what
was written (its sha256), how many rows and how long.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.batch.rows import score_batch
from rung.batch.sinks import AtomicOutput, output_kind
from rung.batch.sources import FileSource, Source, file_sha256, open_source
from rung.errors import ModelVersionNotFound, RungError

if TYPE_CHECKING:
    import pyarrow as pa

    from rung.models.loaded import LoadedModel
    from rung.project import Project
    from rung.store import ModelVersionRecord

__all__ = ["BatchResult", "predict_file", "resolve_version"]

BATCH_ROWS = 65_536
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class BatchResult:
    """One finished batch run: what was read, which version scored it, what was written."""

    name: str
    version: int
    rows: int
    seconds: float
    output: Path
    output_sha256: str
    input: dict[str, Any] = field(default_factory=dict)
    executor: str = "local"

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, "version": self.version, "rows": self.rows, "seconds": round(self.seconds, 3),
                "rows_per_s": round(self.rows_per_s, 1), "input": self.input,
                "output": {"path": str(self.output), "sha256": self.output_sha256}, "executor": self.executor}


def resolve_version(project: Project, ref: str) -> ModelVersionRecord:
    """``churn:3``, ``churn@challenger`` or ``churn`` (its ``@champion``) → that version's record."""
    if ":" in ref:
        return project.model_version(ref)
    name, _, alias = ref.partition("@")
    alias = alias or "champion"
    if not name:
        raise ModelVersionNotFound(f"'{ref}' names no model; write NAME, NAME:VERSION or NAME@ALIAS, e.g. churn@champion")
    version = project.tracking.alias_version(name, alias)
    if version is None:
        raise ModelVersionNotFound(f"{name} has no @{alias}; name a version (e.g. {name}:1) or see `rung models`")
    return project.model_version(f"{name}:{version}")


def predict_file(
    project: Project,
    ref: str,
    input: str | Path,
    output: str | Path,
    *,
    sql_url: str | None = None,
    keep: Sequence[str] | None = None,
    batch_rows: int = BATCH_ROWS,
    executor: str = "local",
    threads: int | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    actor: str = "cli",
) -> BatchResult:
    """Score every row of ``input`` (a CSV or Parquet file, or a query on ``sql_url``) with ``ref`` into ``output``.

    ``output`` (``.parquet`` or ``.csv``) holds the input's columns (only
    ``keep`` if given), then ``prediction``, ``score`` (classifiers: P(positive),
    or the predicted class's probability for more than two classes) and
    ``model_version`` (``NAME:VERSION``). ``on_progress(rows_done, total_rows)``
    is called after each batch; ``total_rows`` is ``None`` when the input does
    not say (CSV, SQL). A failure leaves no file at ``output``. ``threads``
    batches are scored at once (default: one per CPU), in order.
    """
    if executor not in EXECUTORS:
        raise RungError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if batch_rows < 1:
        raise RungError("batch rows must be at least 1")
    started = time.perf_counter()
    out = Path(output)
    output_kind(out)  # a wrong name or a missing input is said before the model is loaded
    open_source(input, [], batch_rows=batch_rows, keep=keep, sql_url=sql_url)
    record = resolve_version(project, ref)
    model = project.models_loader.load(record)
    source = open_source(input, model.columns, batch_rows=batch_rows, keep=keep, sql_url=sql_url)
    with AtomicOutput(out) as sink:
        if executor == "ray":
            if not isinstance(source, FileSource) or source.kind != "parquet":
                raise RungError("--executor ray reads a Parquet file; convert the input or use --executor local")
            from rung.batch.distributed import score_on_ray

            rows = score_on_ray(project, model, source, sink, on_progress=on_progress)
        else:
            rows = _score_local(model, source, sink, keep=keep, threads=threads or os.cpu_count() or 1,
                                on_progress=on_progress)
        sink.commit()
    digest = file_sha256(out)
    seconds = time.perf_counter() - started
    result = BatchResult(name=record.name, version=record.version, rows=rows, seconds=seconds, output=out.resolve(),
                         output_sha256=digest, input=source.lineage(), executor=executor)
    project.store.append_event(
        "batch.scored",
        actor=actor,
        subject=record.name,
        data={"version": record.version, "input": result.input, "output": {"path": str(result.output), "sha256": digest},
              "rows": rows, "seconds": round(seconds, 3), "executor": executor},
        time=datetime.now(UTC),
    )
    return result


def _score_local(model: LoadedModel, source: Source, sink: AtomicOutput, *, keep: Sequence[str] | None, threads: int,
                 on_progress: Callable[[int, int | None], None] | None) -> int:
    """Score ``source``'s batches on ``threads`` threads, writing them in order; at most ``threads + 1`` in memory.

    The estimators release the GIL while they compute, so batches scored
    side by side use the CPUs; each is told to use one thread itself
    (OpenMP, BLAS). Splitting work by batch rather than inside each tree of a
    boosted model (scikit-learn's default) avoids a thread barrier per tree,
    which a busy machine makes costly: 200 trees are 200 barriers a batch.
    """
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    total = source.total_rows
    rows = written = 0
    pending: deque[tuple[Future[pa.RecordBatch], int]] = deque()

    def write_oldest() -> None:
        nonlocal written
        future, n = pending.popleft()
        sink.write(future.result())
        written += n
        if on_progress is not None:
            on_progress(written, total)

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rung-batch")
    try:
        with threadpool_limits(limits=1 if threads > 1 else None):
            for batch in source.batches():
                if batch.num_rows == 0:
                    continue
                pending.append((pool.submit(score_batch, model, batch, offset=rows, label=source.label, keep=keep),
                                batch.num_rows))
                rows += batch.num_rows
                if len(pending) > threads:
                    write_oldest()
            while pending:
                write_oldest()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return written
