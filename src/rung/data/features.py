"""Which columns of the data the model takes: its inputs, not the CSV's.

A data file carries more than a model needs: the target, row ids, columns
kept for reports. The model's inputs are the declared ``data.features`` when
there are any; otherwise every column the schema knows, but the target, the
``data.id`` column(s) and ``data.drop``. A column that appears in new data
and not in the schema is reported by validation and never becomes an input
by itself: adding an input is a decision (declare it in the schema or in
``features``), not a side effect of a new CSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rung.errors import ConfigError

__all__ = ["model_inputs", "project_inputs"]


def model_inputs(columns: Sequence[str], data: Any, *, known: Sequence[str] | None = None) -> list[str]:
    """The model's input columns among ``columns``, in their order; ``data`` is the ``data:`` settings.

    ``known`` is the schema's columns (``None``: no schema, every column is known).
    """
    columns = [str(c) for c in columns]
    if data.features:
        missing = [c for c in data.features if c not in columns]
        if missing:
            raise ConfigError(f"data.features: {', '.join(missing)} not in the data; its columns are: {', '.join(columns)}")
        if data.target in data.features:
            raise ConfigError(f"data.features: {data.target} is the target; a model cannot take it as an input")
        return list(data.features)
    left_out = {data.target, *data.id_columns, *data.drop}
    allowed = set(columns) if known is None else set(known)
    inputs = [c for c in columns if c not in left_out and c in allowed]
    if not inputs:
        raise ConfigError("the model has no input columns: every column is the target, an id, dropped or not in the schema")
    return inputs


def project_inputs(columns: Sequence[str], data: Any, root: Path) -> list[str]:
    """:func:`model_inputs` with the project's schema file (under ``root``) as the known columns."""
    from rung.data.validation import schema_columns

    return model_inputs(columns, data, known=schema_columns(root / data.schema_file))
