"""``--executor ray``: a Parquet file's row groups scored as Ray tasks, the parts joined into one file.

Each task reads its own row groups straight from the file (nothing but their
indices travels), scores them batch by batch with the version the driver
loaded and verified (shipped once through Ray's object store) and writes a
Parquet part in a hidden folder next to the output. The driver then copies
the parts, in the input's order, into the output's temporary file, which
becomes the output only when the last part is in: a failed task or an
interrupted run leaves no file under the final name. The parts folder is
removed either way.

Ray starts a local instance unless ``executor.address`` (or
``RUNG_RAY_ADDRESS``) names a cluster, connected to as pipeline steps are
(:func:`rung.pipeline.cluster.connect_ray`); the input, the parts folder and
the model's cache must then be on storage every node sees.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.batch.sinks import AtomicOutput, copy_parquet
from rung.errors import RungError

if TYPE_CHECKING:
    from rung.batch.sources import FileSource
    from rung.models.loaded import LoadedModel
    from rung.project import Project

__all__ = ["score_on_ray", "score_row_groups"]

TASKS_PER_CPU = 2


def score_row_groups(model: LoadedModel, path: str, groups: list[int], offset: int, batch_rows: int, part: str,
                     label: str, keep: list[str] | None) -> tuple[int, str | None, str | None]:
    """One task: ``(rows, None, None)`` once ``groups`` of ``path`` are scored into ``part``, else ``(0, error class, message)``.

    A :class:`~rung.errors.RungError` comes back as data, not raised: Ray
    would wrap it in a traceback the one-line message must not carry.
    """
    import pyarrow.parquet as pq

    from rung.batch.rows import score_batch

    writer = None
    rows = 0
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        columns = None if keep is None else list(dict.fromkeys([*keep, *(c.name for c in model.columns if c.name in names)]))
        for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns):
            if batch.num_rows == 0:
                continue
            scored = score_batch(model, batch, offset=offset + rows, label=label, keep=keep)
            if writer is None:
                writer = pq.ParquetWriter(part, scored.schema, compression="snappy")
            writer.write_batch(scored)
            rows += batch.num_rows
    except RungError as exc:
        return 0, type(exc).__name__, str(exc)
    finally:
        if writer is not None:
            writer.close()
    return rows, None, None


def score_on_ray(project: Project, model: LoadedModel, source: FileSource, sink: AtomicOutput,
                 *, on_progress: Callable[[int, int | None], None] | None = None) -> int:
    """Score ``source`` over Ray into ``sink`` (not committed); the number of rows."""
    from rung import errors
    from rung.pipeline.cluster import connect_ray

    parquet = source._parquet()
    source._wanted(parquet.schema_arrow.names)  # a column to keep that is not there: the same error as locally
    metadata = parquet.metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    total = sum(sizes)
    connection = connect_ray(project.settings.executor.address, purpose="rung predict --executor ray",
                             local_cpus=max(1, project.settings.executor.workers))
    ray = connection.ray
    parts_dir = sink.path.parent / f".{sink.path.name}.{uuid.uuid4().hex[:8]}.parts"
    try:
        parts_dir.mkdir()
        tasks = _split(sizes, connection.cluster_cpus() * TASKS_PER_CPU)
        remote = ray.remote(max_retries=0)(score_row_groups)
        shared = ray.put(model)
        pending: dict[Any, int] = {}
        parts: list[Path] = []
        for i, (groups, offset) in enumerate(tasks):
            part = parts_dir / f"part-{i:05d}.parquet"
            parts.append(part)
            ref = remote.remote(shared, str(source.path.resolve()), groups, offset, source.batch_rows, str(part),
                                source.label, None if source.keep is None else list(source.keep))
            pending[ref] = sum(sizes[g] for g in groups)
        done = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                rows, kind, message = ray.get(ref)
                if kind is not None:
                    raise getattr(errors, kind, RungError)(message)
                done += rows
                if on_progress is not None:
                    on_progress(done, total)
        copy_parquet([p for p in parts if p.exists()], sink)
        return done
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
        connection.close()


def _split(sizes: list[int], tasks: int) -> list[tuple[list[int], int]]:
    """Consecutive row groups in about ``tasks`` runs of similar size: ``(group indices, first row's offset)``."""
    total = sum(sizes)
    per_task = max(1, -(-total // max(1, tasks)))
    out: list[tuple[list[int], int]] = []
    groups: list[int] = []
    start = offset = rows = 0
    for i, n in enumerate(sizes):
        if not groups:
            start = offset
        groups.append(i)
        rows += n
        offset += n
        if rows >= per_task:
            out.append((groups, start))
            groups, rows = [], 0
    if groups:
        out.append((groups, start))
    return out
