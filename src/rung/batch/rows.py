"""One batch of rows scored: the model's columns checked as the gateway checks them, its outputs appended.

What both the local scorer (:mod:`rung.batch.scoring`) and a Ray task
(:mod:`rung.batch.distributed`) run on each batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rung.errors import DataError, DataValidationError, InputError, PredictionFailed, RungError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from rung.models.loaded import LoadedModel

__all__ = ["OUTPUT_COLUMNS", "score_batch"]

OUTPUT_COLUMNS = ("prediction", "score", "model_version")


def score_batch(model: LoadedModel, batch: pa.RecordBatch, *, offset: int, label: str,
                keep: Sequence[str] | None = None) -> pa.RecordBatch:
    """``batch``'s columns (or those in ``keep``) followed by the model's outputs for its rows.

    ``offset`` is the first row's in the whole input, for the messages.
    """
    import pyarrow as pa

    kept = list(keep) if keep is not None else batch.schema.names
    taken = [name for name in OUTPUT_COLUMNS if name in kept]
    if taken:
        raise DataError(f"{label}: the input already has a column {taken[0]}, which the output adds; "
                        "leave it out with --keep COLUMN ...")
    frame = _model_frame(model, batch)
    try:
        checked = model.frame(frame)
    except InputError as exc:
        raise DataValidationError(f"{label}{_where(model, frame, exc, offset)}: {exc}") from None
    try:
        outputs = model.predict(checked)
    except RungError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PredictionFailed(f"{model.ref} raised on the rows from offset {offset} of {label}: {type(exc).__name__}: {first}") from exc
    arrays = [*(batch.column(name) for name in kept), pa.array(outputs["predict"])]
    names = [*kept, "prediction"]
    if "proba" in outputs:
        arrays.append(pa.array(outputs["proba"], type=pa.float64()))
        names.append("score")
    arrays.append(pa.repeat(pa.scalar(model.ref), batch.num_rows))
    names.append("model_version")
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _model_frame(model: LoadedModel, batch: pa.RecordBatch) -> pd.DataFrame:
    """The model's columns of ``batch`` as pandas: text as Python strings, as the gateway gives its estimators."""
    import pandas as pd

    wanted = [c.name for c in model.columns] or batch.schema.names
    data: dict[str, Any] = {}
    for name in wanted:
        if name not in batch.schema.names:
            continue  # model.frame names the missing column
        values = batch.column(name).to_numpy(zero_copy_only=False)
        data[name] = pd.Series(values, dtype=object) if values.dtype.kind in "OUS" else values
    return pd.DataFrame(data, copy=False)


def _where(model: LoadedModel, frame: pd.DataFrame, exc: InputError, offset: int) -> str:
    """`` at row offset N`` for a value of the wrong type, or the batch's offset for a missing column."""
    import numpy as np
    import pandas as pd

    column = next((c for c in model.columns if c.name == exc.field), None)
    if column is None or column.name not in frame.columns:
        return f" (rows from offset {offset})"
    values = frame[column.name]
    bad = pd.to_numeric(values, errors="coerce").isna() & values.notna() if column.numeric else values.notna()
    positions = np.flatnonzero(bad.to_numpy())
    return f" at row offset {offset + int(positions[0]) if len(positions) else offset}"
