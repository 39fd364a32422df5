"""The request log's records: the tuple the gateway queues per request, and its conversion to Arrow columns.

This exists apart from :mod:`rung.monitor.requestlog` (the writer: its
queue, drops and segments) because it is the part that must be fast: the
conversion runs in the writer thread but holds the GIL the event loop
needs. It also says what a segment holds: :data:`RECORD_COLUMNS`, one row
per input row, then each input feature as ``f_<feature>``
(:data:`FEATURE_PREFIX`).

How it stays cheap: nothing is done per row in Python. A request's own
values (id, time, version, ...) become one Arrow array per column over the
requests, spread to their rows by ``np.repeat`` (text by one ``take``); a
feature whose requests sent numpy arrays of one kind is one
``np.concatenate`` and one ``pa.array`` (numpy to Arrow, no Python
objects), null where a request lacked it; a feature sent as lists is one
``pa.array`` over the chained lists of every request; numpy predictions
become text in Arrow. Only a column whose requests disagree (lists and
arrays, other dtypes, a wrong number of values) takes the general path,
value by value, and only that column; both give the same column. A numpy
float feature's NaN is a missing value, as
:func:`rung.serving.tensors.to_column` makes it when it gives lists.

Why not convert in another process, off the serving process's GIL: the
raw batches would have to cross to it, and pickling a batch of Python
lists costs about half of converting it to Arrow here (measured: 25 against
45 µs per 100-row request of 7 features), while numpy columns convert here
for next to nothing; a second process would also need its own lifecycle,
object-store access and drop accounting. ``bench/request_log_convert.py``
prices the conversion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from numpy.typing import NDArray

__all__ = ["FEATURE_PREFIX", "RECORD_COLUMNS", "records_table", "MODEL", "ROWS", "TIME"]

FEATURE_PREFIX = "f_"
RECORD_COLUMNS = ("request_id", "row", "time", "version", "variant", "shadow", "status", "latency_ms", "prediction", "score")

# What the event loop queues per request: a plain tuple, the cheapest thing to build and append. Its
# features are tuples too (names, then values per feature), not the request's dict of lists: tuples of
# plain values drop out of the garbage collector's view, lists and dicts do not, and thousands of those
# waiting half a second for the writer reach the oldest generation and set off full collections of the
# gateway's heap, 0.1-0.2 s each (measured: the p99 at 8 connections went from 15 to 108 ms). A feature
# given as a numpy array stays that array (never tracked by the collector, and converted whole).
_ID, MODEL, _VERSION, _VARIANT, _SHADOW, _STATUS, _LATENCY, TIME, ROWS, _PREDICTIONS, _SCORES, _NAMES, _VALUES = range(13)

# Numpy kinds converted whole: booleans, numbers, text (not objects, bytes, which Arrow cuts at a NUL, dates or complex)
_NUMPY_KINDS = "biufU"
# Where numpy writes a float positionally (its ``str``), by dtype: from 1e-4 up to 1e16 for a double, 1e6 for a single.
_POSITIONAL = {"float64": (1e-4, 1e16), "float32": (1e-4, 1e6)}


def records_table(items: list[tuple[Any, ...]]) -> pa.Table:
    """The records of ``items`` as one Arrow table, built column by column (see the module's docstring)."""
    import numpy as np
    import pyarrow as pa

    fields = list(zip(*items, strict=False))  # one tuple per field: request ids, models, ...
    counts = np.fromiter(fields[ROWS], np.int64, len(items))
    total = int(counts.sum())
    single = bool((counts == 1).all())
    spread = None if single else pa.array(np.repeat(np.arange(len(items)), counts))

    def per_request(index: int, kind: pa.DataType) -> pa.Array:
        array = pa.array(fields[index], kind)
        if spread is None:
            return array
        if pa.types.is_string(kind):
            return array.take(spread)
        return pa.array(np.repeat(array.to_numpy(zero_copy_only=False), counts), kind)  # faster than take

    if single:
        rows = np.zeros(total, dtype=np.int32)
    else:  # 0, 1, ... within each request: the row's position minus its request's first position
        rows = (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32)
    predictions, scores = _outputs(fields[_PREDICTIONS], fields[_SCORES], counts)
    columns: dict[str, Any] = {
        "request_id": per_request(_ID, pa.string()),
        "row": pa.array(rows, pa.int32()),
        "time": per_request(TIME, pa.timestamp("us", tz="UTC")),
        "version": per_request(_VERSION, pa.int64()),
        "variant": per_request(_VARIANT, pa.string()),
        "shadow": per_request(_SHADOW, pa.bool_()),
        "status": per_request(_STATUS, pa.int32()),
        "latency_ms": per_request(_LATENCY, pa.float64()),
        "prediction": predictions,
        "score": scores,
    }
    for name, pieces in _pieces(fields[_NAMES], fields[_VALUES]).items():
        columns[FEATURE_PREFIX + name] = _feature(pieces, counts, total)
    return pa.table(columns)


def _outputs(predicted: Sequence[Any], scored: Sequence[Any], counts: NDArray[np.int64]) -> tuple[pa.Array, pa.Array]:
    """The prediction (text) and score columns; without scores, numeric predictions are the scores."""
    import numpy as np
    import pyarrow as pa

    joined = _joined(predicted, counts)
    if joined is not None:
        if all(s is None for s in scored):
            if joined.dtype.kind in "biuf":
                return _text(joined), pa.array(joined.astype(np.float64), pa.float64(), from_pandas=True)
        else:
            joined_scores = _joined(scored, counts)
            if joined_scores is not None and joined_scores.dtype.kind in "biuf":
                return _text(joined), pa.array(joined_scores.astype(np.float64), pa.float64(), from_pandas=True)
    labels: list[Any] = []
    values: list[Any] = []
    for given, score, n in zip(predicted, scored, counts.tolist(), strict=False):
        one = _values(given, n)
        labels.extend(None if v is None else str(v) for v in one)
        values.extend(_values(score, n) if score is not None else (v if isinstance(v, (int, float)) else None for v in one))
    return (pa.array(labels, pa.string()),
            pa.array([None if v is None or v != v else float(v) for v in values], pa.float64()))


def _joined(given: Sequence[Any], counts: NDArray[np.int64]) -> NDArray[Any] | None:
    """Every request's 1-D numpy array of one dtype, one value per row, as one array; None for anything else."""
    import numpy as np

    if set(map(type, given)) != {np.ndarray}:
        return None
    dtypes = set(map(attrgetter("dtype"), given))
    if len(dtypes) != 1 or not dtypes.pop().isnative:  # Arrow takes no byte-swapped arrays
        return None
    if set(map(attrgetter("ndim"), given)) != {1} or not np.array_equal(np.fromiter(map(len, given), np.int64, len(given)),
                                                                       counts):
        return None
    return np.concatenate(given) if len(given) > 1 else given[0]


def _text(values: NDArray[Any]) -> pa.Array:
    """Numpy values as the text ``str`` gives each of them, converted by Arrow where its text is the same.

    Arrow writes integers as numpy does. Its floats lack the ``.0`` and
    switch to exponents elsewhere: so a float within numpy's positional
    range (:data:`_POSITIONAL`) that Arrow wrote without an exponent gets
    ``.0`` where it has no point, and numpy writes only the others (tiny,
    huge, NaN, infinite: rare among predictions).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = values.dtype.kind
    if kind in "iu":
        return pa.array(values).cast(pa.string())
    if kind == "U":
        return _from_unicode(values)
    bounds = _POSITIONAL.get(values.dtype.name)
    if bounds is None:
        return pa.array(values.astype(str), pa.string())
    text = pa.array(values).cast(pa.string())
    size = np.abs(values.astype(np.float64))  # numpy's bounds are on the value as a double
    other = ~(((size >= bounds[0]) & (size < bounds[1])) | (size == 0))
    other |= pc.match_substring(text, "e").to_numpy(zero_copy_only=False)
    text = pc.if_else(pc.match_substring(text, "."), text, pc.binary_join_element_wise(text, ".0", ""))
    if other.any():
        text = pc.replace_with_mask(text, pa.array(other), pa.array(values[other].astype(str), pa.string()))
    return text


def _pieces(names: Sequence[Any], values: Sequence[Any]) -> Mapping[str, Sequence[Any]]:
    """Feature name → its values in each request (None where a request did not have that feature)."""
    first = names[0]
    if first and all(n == first for n in names):  # every request had the same features
        return dict(zip(first, zip(*values, strict=False), strict=False))
    by_feature: dict[str, list[Any]] = {}
    for i, (item_names, item_values) in enumerate(zip(names, values, strict=False)):
        for name, given in zip(item_names or (), item_values or (), strict=False):
            column = by_feature.get(name)
            if column is None:
                column = by_feature[name] = [None] * len(names)  # a feature the other requests may not have
            column[i] = given
    return by_feature


def _feature(pieces: Sequence[Any], counts: NDArray[np.int64], total: int) -> pa.Array:
    """One feature column from its requests' values: vectorised when they agree on lists or on a numpy kind."""
    import numpy as np

    kinds = set(map(type, pieces))
    if kinds <= {tuple, list}:
        values = list(chain.from_iterable(pieces))
        if len(values) == total:
            return _inferred(values)
    if np.ndarray in kinds and kinds <= {np.ndarray, type(None)}:
        array = _numpy_feature(pieces, counts, missing=type(None) in kinds)
        if array is not None:
            return array
    return _inferred(list(chain.from_iterable(map(_feature_values, pieces, counts.tolist()))))


def _numpy_feature(pieces: Sequence[NDArray[Any] | None], counts: NDArray[np.int64], *, missing: bool) -> pa.Array | None:
    """A feature given as numpy arrays as one Arrow array, nulls where a request lacked it (``missing``); None if they disagree."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    present: list[NDArray[Any]] = [p for p in pieces if p is not None]
    absent = np.fromiter((p is None for p in pieces), np.bool_, len(pieces)) if missing else np.zeros(len(pieces), np.bool_)
    dtypes = set(map(attrgetter("dtype"), present))
    kinds = {dtype.kind for dtype in dtypes}
    if (len(kinds) != 1 or not kinds <= set(_NUMPY_KINDS) or (len(dtypes) > 1 and kinds != {"U"})
            or not all(dtype.isnative for dtype in dtypes)):
        return None  # one dtype (text of several widths is one still), not byte-swapped (Arrow takes none)
    lengths = np.fromiter(map(len, present), np.int64, len(present))
    if set(map(attrgetter("ndim"), present)) != {1} or not np.array_equal(lengths, counts[~absent]):
        return None
    if not missing:
        return _from_numpy(np.concatenate(present) if len(present) > 1 else present[0])
    dtype = next(iter(dtypes))
    array = _from_numpy(np.concatenate([np.zeros(k, dtype) if p is None else p
                                        for p, k in zip(pieces, counts.tolist(), strict=False)]))
    return pc.if_else(pa.array(np.repeat(absent, counts)), pa.scalar(None, array.type), array)


def _from_numpy(values: NDArray[Any]) -> pa.Array:
    """A 1-D array of a kind in :data:`_NUMPY_KINDS` as Arrow's, NaN as null."""
    import pyarrow as pa

    kind = values.dtype.kind
    if kind == "U":
        return _from_unicode(values)
    return pa.array(values, from_pandas=kind == "f")


def _from_unicode(values: NDArray[Any]) -> pa.Array:
    """Numpy text as Arrow strings, as ``tolist`` would give them (to the last character that is not NUL).

    Numpy holds text as fixed-width UTF-32; when it is all ASCII, each code
    is its UTF-8 byte, so the conversion is a cast to bytes and a trim of
    the padding, three times as fast as Arrow's own from Python strings
    (and Arrow's from numpy text stops at the first NUL, where ``tolist``
    does not).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    width = values.dtype.itemsize // 4
    if width:
        codes = np.ascontiguousarray(values).view(np.uint32)
        if codes.max(initial=0) < 128:
            fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values),
                                                          [None, pa.py_buffer(codes.astype(np.uint8))])
            return pc.utf8_rtrim(fixed.cast(pa.binary()).view(pa.string()), characters="\x00")
    return pa.array(values.tolist(), pa.string())


def _feature_values(given: Any, n: int) -> Sequence[Any]:
    """``n`` values of one request's feature for the general path: a numpy array's as numpy scalars, NaN as None."""
    import numpy as np

    if isinstance(given, np.ndarray):
        values: list[Any] = list(given)
        if given.dtype.kind == "f":
            values = [None if v != v else v for v in values]
        return _values(values, n)
    return _values(given, n)


def _values(given: Any, n: int) -> Sequence[Any]:
    """``n`` plain Python values from a list or tuple, a numpy array, or None."""
    if given is None:
        return [None] * n
    values = given if type(given) in (list, tuple) else given.tolist() if hasattr(given, "tolist") else list(given)
    if len(values) != n:  # a model that answered with another number of rows: keep the row count honest
        values = ([*values] + [None] * n)[:n]
    return values


def _inferred(values: list[Any]) -> pa.Array:
    """One feature column: its natural Arrow type when the values agree on a scalar one, else text."""
    import json

    import pyarrow as pa

    try:
        array = pa.array(values)
        if not pa.types.is_nested(array.type):
            return array
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v, default=_jsonable) for v in values],
                    pa.string())


def _jsonable(value: Any) -> Any:
    """A numpy value as the Python one JSON would have sent (``4``, not ``"4"``); anything else as its text."""
    plain = getattr(value, "tolist", None)
    return plain() if callable(plain) else str(value)
