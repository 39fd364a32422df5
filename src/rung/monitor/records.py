"""The request log's records: the tuple the gateway queues per request, and its conversion to Arrow columns.

This exists apart from :mod:`rung.monitor.requestlog` (the writer: its
queue, drops and segments) because it is the part that must be fast: the
conversion runs in the writer thread but holds the GIL the event loop
needs. It also says what a segment holds: :data:`RECORD_COLUMNS`, one row
per input row, then each input feature as ``f_<feature>``
(:data:`FEATURE_PREFIX`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FEATURE_PREFIX", "RECORD_COLUMNS", "records_table", "MODEL", "ROWS", "TIME"]

FEATURE_PREFIX = "f_"
RECORD_COLUMNS = ("request_id", "row", "time", "version", "variant", "shadow", "status", "latency_ms", "prediction", "score")

# What the event loop queues per request: a plain tuple, the cheapest thing to build and append. Its
# features are tuples too (names, then values per feature), not the request's dict of lists: tuples of
# plain values drop out of the garbage collector's view, lists and dicts do not, and thousands of those
# waiting half a second for the writer reach the oldest generation and set off full collections of the
# gateway's heap, 0.1-0.2 s each (measured: the p99 at 8 connections went from 15 to 108 ms).
_ID, MODEL, _VERSION, _VARIANT, _SHADOW, _STATUS, _LATENCY, TIME, ROWS, _PREDICTIONS, _SCORES, _NAMES, _VALUES = range(13)


def records_table(items: list[tuple[Any, ...]]) -> pa.Table:
    """The records of ``items`` as one Arrow table, built column by column.

    This runs in the writer thread but holds the GIL the event loop needs,
    so the common case (every request one row, numpy outputs of one dtype,
    the same features) goes through C-level transposes and numpy, and only
    the rest takes the general, per-request path.
    """
    import pyarrow as pa

    fields = list(zip(*items, strict=False))  # one tuple per field: request ids, models, ...
    counts = fields[ROWS]
    single = all(n == 1 for n in counts)
    total = len(items) if single else sum(counts)

    def repeat(index: int) -> Sequence[Any]:
        if single:
            return fields[index]
        out: list[Any] = []
        for value, n in zip(fields[index], counts, strict=False):
            out.extend([value] * n)
        return out

    predictions, scores = _outputs(fields[_PREDICTIONS], fields[_SCORES], counts)
    columns: dict[str, Any] = {
        "request_id": pa.array(repeat(_ID), pa.string()),
        "row": pa.array(_rows(counts, total, single), pa.int32()),
        "time": pa.array(repeat(TIME), pa.timestamp("us", tz="UTC")),
        "version": pa.array(repeat(_VERSION), pa.int64()),
        "variant": pa.array(repeat(_VARIANT), pa.string()),
        "shadow": pa.array(repeat(_SHADOW), pa.bool_()),
        "status": pa.array(repeat(_STATUS), pa.int32()),
        "latency_ms": pa.array(repeat(_LATENCY), pa.float64()),
        "prediction": predictions,
        "score": scores,
    }
    for name, values in _features(fields[_NAMES], fields[_VALUES], counts, total).items():
        columns[FEATURE_PREFIX + name] = _feature(values)
    return pa.table(columns)


def _rows(counts: Sequence[int], total: int, single: bool) -> Any:
    import numpy as np

    if single:
        return np.zeros(total, dtype=np.int32)
    return np.concatenate([np.arange(n, dtype=np.int32) for n in counts])


def _outputs(predicted: Sequence[Any], scored: Sequence[Any], counts: Sequence[int]) -> tuple[pa.Array, pa.Array]:
    """The prediction (text) and score columns; without scores, numeric predictions are the scores."""
    import numpy as np
    import pyarrow as pa

    arrays = [p for p in predicted if isinstance(p, np.ndarray)]
    if len(arrays) == len(predicted) and len({a.dtype for a in arrays}) == 1 and sum(map(len, arrays)) == sum(counts):
        joined = np.concatenate(arrays)
        text = pa.array(joined.astype(str), pa.string())
        if all(isinstance(s, np.ndarray) for s in scored) and sum(map(len, scored)) == len(joined):
            return text, pa.array(np.concatenate(scored).astype(np.float64), pa.float64(), from_pandas=True)
        if all(s is None for s in scored) and joined.dtype.kind in "biuf":
            return text, pa.array(joined.astype(np.float64), pa.float64(), from_pandas=True)
    labels: list[Any] = []
    values: list[Any] = []
    for given, score, n in zip(predicted, scored, counts, strict=False):
        one = _values(given, n)
        labels.extend(None if v is None else str(v) for v in one)
        values.extend(_values(score, n) if score is not None else (v if isinstance(v, (int, float)) else None for v in one))
    return (pa.array(labels, pa.string()),
            pa.array([None if v is None or v != v else float(v) for v in values], pa.float64()))


def _features(names: Sequence[Any], values: Sequence[Any], counts: Sequence[int], total: int) -> dict[str, list[Any]]:
    """Feature name → one value per record, None where a request did not have that feature."""
    from itertools import chain

    first = names[0]
    if first and all(n == first for n in names):  # every request had the same features
        by_feature = [list(chain.from_iterable(column)) for column in zip(*values, strict=False)]
        if all(len(column) == total for column in by_feature):
            return dict(zip(first, by_feature, strict=False))
    features: dict[str, list[Any]] = {}
    filled = 0
    for item_names, item_values, n in zip(names, values, counts, strict=False):
        item_names = item_names or ()
        for name, given in zip(item_names, item_values or (), strict=False):
            column = features.get(name)
            if column is None:
                column = features[name] = [None] * filled  # a feature the earlier requests did not have
            column.extend(_values(given, n))
        filled += n
        if len(item_names) != len(features):  # this request lacked some feature
            for column in features.values():
                column.extend([None] * (filled - len(column)))
    return features


def _values(given: Any, n: int) -> Sequence[Any]:
    """``n`` plain Python values from a list or tuple, a numpy array, or None."""
    if given is None:
        return [None] * n
    values = given if type(given) in (list, tuple) else given.tolist() if hasattr(given, "tolist") else list(given)
    if len(values) != n:  # a model that answered with another number of rows: keep the row count honest
        values = ([*values] + [None] * n)[:n]
    return values


def _feature(values: list[Any]) -> pa.Array:
    """One feature column: its natural Arrow type when the values agree on a scalar one, else text."""
    import json

    import pyarrow as pa

    try:
        array = pa.array(values)
        if not pa.types.is_nested(array.type):
            return array
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v, default=str) for v in values],
                    pa.string())
