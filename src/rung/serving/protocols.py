"""Request bodies as columns: MLflow scoring, KServe v1, and the signature check every protocol shares.

Parsing turns a body into *columns* (``{name: [values]}``, one list per
signature column, all the same length) without pandas: on the single-row
hot path building Python lists is far cheaper than a DataFrame, and the
batcher builds one frame for many requests. :func:`check_columns` then
makes each numeric column one numpy array (one conversion per column, not
per value), which the compiled pipeline, the worker's pipe and the request
log take as they are. Every problem is an :class:`~rung.errors.InputError`
naming the field.

MLflow accepts ``dataframe_split``, ``dataframe_records``, ``instances``
and ``inputs``, and a CSV body (a header row, then one row per prediction),
as ``mlflow models serve`` does; KServe v1 (``:predict``) ``instances`` or
``inputs``, read the same way. The Open Inference Protocol's bodies, JSON
and binary, are :mod:`rung.serving.oip`'s.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from rung.errors import InputError, RequestInvalid
from rung.models.signature import Column, Columns

__all__ = ["parse_mlflow", "parse_kserve", "parse_csv", "check_columns", "to_jsonable"]


# What a CSV cell of a numeric column reads as missing, besides an empty cell: the spellings pandas (and so
# ``mlflow models serve``) reads as NaN. A text column takes them as text: only its empty cells are missing.
CSV_MISSING = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "None", "<NA>", "#N/A", "#NA"})
CSV_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
# The exact types of a column that needs no value-by-value look: JSON's numbers (bool is not among them) or text.
_NUMBERS = frozenset({int, float, type(None)})
_TEXT = frozenset({str, type(None)})
_LOOK_FOR_NAN = 32  # from this many floats up, one np.isnan over the array is cheaper than a test per value


def parse_mlflow(body: Any, columns: list[Column]) -> tuple[Columns, int]:
    """An MLflow ``/invocations`` body → raw columns and row count (check them with :func:`check_columns`)."""
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object with one of dataframe_split, dataframe_records, instances, inputs", field="body")
    keys = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in body]
    if len(keys) != 1:
        raise InputError("give exactly one of dataframe_split, dataframe_records, instances, inputs", field="body")
    key = keys[0]
    value = body[key]
    names = [c.name for c in columns]
    if key == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise InputError("dataframe_split: expected {columns: [...], data: [[...], ...]}", field="dataframe_split.data")
        if not value["data"]:
            raise InputError("the input has no rows", field="inputs")
        cols = value.get("columns", names)
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise InputError("dataframe_split.columns: expected a list of column names", field="dataframe_split.columns")
        return _split(cols, value["data"]), len(value["data"])
    return _records(key, value, names)


def _split(cols: list[str], data: list[Any]) -> Columns:
    """``dataframe_split``'s rows as columns: transposed in one ``zip`` when every row is a list of the right length."""
    if set(map(type, data)) == {list} and set(map(len, data)) == {len(cols)} and len(set(cols)) == len(cols):
        return dict(zip(cols, map(list, zip(*data, strict=True)), strict=True))
    out: Columns = {c: [] for c in cols}
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(cols):
            raise InputError(f"dataframe_split.data[{i}]: expected a list of {len(cols)} values", field=f"dataframe_split.data[{i}]")
        for c, v in zip(cols, row, strict=True):
            out[c].append(v)
    return out


def parse_kserve(body: Any, columns: list[Column]) -> tuple[Columns, int]:
    """A KServe v1 ``:predict`` body (``instances`` or ``inputs``) → raw columns and row count.

    Records are objects of column values or lists in signature order, or
    ``inputs`` is one object of columns, as :func:`parse_mlflow` reads them.
    """
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object with instances or inputs", field="body")
    keys = [k for k in ("instances", "inputs") if k in body]
    if len(keys) != 1:
        raise InputError("give exactly one of instances, inputs", field="body")
    return _records(keys[0], body[keys[0]], [c.name for c in columns])


def _records(key: str, value: Any, names: list[str]) -> tuple[Columns, int]:
    """``instances`` / ``inputs``: a list of records (objects, or lists in signature order), or an object of columns."""
    if isinstance(value, dict):  # {"inputs": {"col": [..], ...}}: columnar
        out: Columns = {}
        for c, v in value.items():
            out[c] = v if isinstance(v, list) else [v]
        lengths = {len(v) for v in out.values()}
        if len(lengths) > 1:
            raise InputError(f"{key}: every column needs the same number of values", field=key)
        return out, lengths.pop() if lengths else 0
    if not isinstance(value, list):
        raise InputError(f"{key}: expected a list of records", field=key)
    if not value:
        raise InputError("the input has no rows", field="inputs")
    out = {}
    for i, record in enumerate(value):
        if isinstance(record, dict):
            for c, v in record.items():
                out.setdefault(c, []).append(v)
        elif isinstance(record, list) and len(record) == len(names):
            for c, v in zip(names, record, strict=True):
                out.setdefault(c, []).append(v)
        else:
            raise InputError(f"{key}[{i}]: expected an object of column values or a list of {len(names)} values", field=f"{key}[{i}]")
    for c, v in out.items():
        if len(v) != len(value):
            raise InputError(f"{key}: column {c} is missing in some records", field=c)
    return out, len(value)


def parse_csv(content: bytes, columns: list[Column]) -> tuple[Columns, int]:
    """A ``text/csv`` body (UTF-8, a header row) → raw columns and row count (check them with :func:`check_columns`).

    Cells are read as the signature says: numbers for its numeric columns
    (empty or ``NA``-like cells missing), text for the others (empty cells
    missing); columns it does not name stay text. A header cell left empty
    (the index column of ``DataFrame.to_csv()``) is not a column. A body that
    is not a CSV table is a :class:`~rung.errors.RequestInvalid` saying
    where; a cell of the wrong kind an :class:`InputError` naming its column.
    """
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RequestInvalid(f"the CSV body is not UTF-8 text (byte {exc.start}); send it encoded as UTF-8", "body") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for row in reader:
            if not row:  # a blank line, as pandas skips it
                continue
            if header is None:
                header = row
                continue
            if len(row) != len(header):
                raise RequestInvalid(f"CSV line {reader.line_num} has {len(row)} values; the header has {len(header)} columns",
                                     "body")
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise RequestInvalid(f"the CSV body cannot be read at line {reader.line_num}: {exc}", "body") from None
    if header is None:
        raise RequestInvalid("the CSV body is empty; send a header row, then one row per prediction", "body")
    named = [(i, name) for i, name in enumerate(header) if name != ""]
    if not named:
        raise RequestInvalid("the CSV header names no columns; its first row must name them", "body")
    seen: set[str] = set()
    for _, name in named:
        if name in seen:
            raise RequestInvalid(f"column {name!r} appears twice in the CSV header", "body")
        seen.add(name)
    by_name = {c.name: c for c in columns}
    if columns and not seen & set(by_name):
        shown = ", ".join(header[:8]) + (", ..." if len(header) > 8 else "")
        raise InputError(f"the CSV header ({shown}) names none of the model's columns ({', '.join(by_name)}); "
                         "the first row must be the header", field=columns[0].name)
    if not rows:
        raise InputError("the input has no rows", field="inputs")
    cells = list(zip(*rows, strict=True))
    out: Columns = {}
    for i, name in named:
        column = by_name.get(name)
        values = cells[i]
        if column is None:
            out[name] = _csv_guess(values) if not columns else [v if v != "" else None for v in values]
        elif column.type == "boolean":
            out[name] = [_csv_boolean(v, name, lines[j]) for j, v in enumerate(values)]
        elif column.numeric:
            whole = column.type in ("long", "integer")
            out[name] = [_csv_number(v, name, lines[j], whole) for j, v in enumerate(values)]
        else:
            out[name] = [v if v != "" else None for v in values]
    return out, len(rows)


def _csv_number(cell: str, name: str, line: int, whole: bool) -> int | float | None:
    if cell in CSV_MISSING or not cell.strip():
        return None
    try:
        return int(cell) if whole else float(cell)
    except ValueError:
        pass
    try:
        return float(cell)
    except ValueError:
        raise InputError(f"column {name!r}: expected a number, got {cell[:40]!r} (CSV line {line})", field=name) from None


def _csv_boolean(cell: str, name: str, line: int) -> bool | None:
    if cell in CSV_MISSING or not cell.strip():
        return None
    value = CSV_BOOLEANS.get(cell.strip().lower())
    if value is None:
        raise InputError(f"column {name!r}: expected true or false, got {cell[:40]!r} (CSV line {line})", field=name)
    return value


def _csv_guess(cells: tuple[str, ...]) -> list[Any]:
    """A column no signature types (the model has none): numbers when every present cell is one, else text."""
    out: list[Any] = []
    for cell in cells:
        if cell in CSV_MISSING or not cell.strip():
            out.append(None)
            continue
        try:
            out.append(int(cell))
        except ValueError:
            try:
                out.append(float(cell))
            except ValueError:
                return [v if v != "" else None for v in cells]
    return out


def check_columns(data: Columns, columns: list[Column]) -> Columns:
    """The signature's columns, in order, with values of the right kind; else :class:`InputError`.

    Columns the model does not take are left out, not refused: a client may
    send a whole record (ids, columns kept for reports, a routing key) and a
    version that takes fewer columns than the last one must not break it.
    What the model takes is required, and a missing one is named.

    A numeric column of JSON numbers (or of a numeric tensor) comes out as
    one numpy array, of the dtype pandas would give the same values: int64
    when all are integers, float64 with NaN for a missing value when any is
    a float. So ``to_frame`` and the estimator see what they saw from the
    list, and the compiled route and the request log take it without
    converting. Anything else (integers with a missing value, booleans,
    text, numbers beyond int64) stays a list.
    """
    if not columns:
        return data
    ordered: Columns = {}
    for column in columns:
        values = data.get(column.name)
        if values is None:
            raise InputError(f"missing input column {column.name!r}; the model takes {', '.join(c.name for c in columns)}",
                             field=column.name)
        ordered[column.name] = _checked_array(values, column) if isinstance(values, np.ndarray) else _checked_list(values, column)
    lengths = {len(v) for v in ordered.values()}
    if len(lengths) > 1:
        raise InputError("every input column needs the same number of values", field="inputs")
    if lengths == {0}:
        raise InputError("the input has no rows", field="inputs")
    return ordered


def _checked_list(values: list[Any], column: Column) -> Any:
    """One column's list, its kinds told apart by one pass over its types; a numeric column as an array where it can be."""
    if column.numeric:
        kinds = set(map(type, values))
        if kinds <= _NUMBERS:
            return _numbers(values, kinds)
        for v in values:
            if v is not None and (isinstance(v, bool) and column.type != "boolean" or not isinstance(v, (int, float))):
                raise InputError(f"column {column.name!r}: expected a number, got {v!r}", field=column.name)
    elif not set(map(type, values)) <= _TEXT:
        for v in values:
            if v is not None and not isinstance(v, str):
                raise InputError(f"column {column.name!r}: expected text, got {v!r}", field=column.name)
    return values


def _numbers(values: list[Any], kinds: set[type]) -> Any:
    """A list of JSON numbers as one array: int64 if only ints, float64 (None: NaN) if a float is among them.

    Integers with a missing value stay a list, as do integers beyond int64:
    pandas (and the request log's Arrow) make them what they always have.
    """
    if float not in kinds and kinds != {int}:
        return values
    try:
        return np.array(values, dtype=np.int64 if kinds == {int} else np.float64)
    except OverflowError:
        return values


def _checked_array(values: np.ndarray, column: Column) -> Any:
    """A column that came as an array (a decoded tensor): numbers stay the array; anything else is checked as a list."""
    kind = values.dtype.kind
    if column.numeric and kind in "iuf":
        return values
    if not column.numeric and kind in "biuf" and values.size:
        raise InputError(f"column {column.name!r}: expected text, got {values[0].item()!r}", field=column.name)
    return _checked_list(values.tolist(), column)


def to_jsonable(values: Any) -> list[Any]:
    """A numpy array as plain JSON values (NaN becomes null): one ``tolist``, and a pass for NaN only if there is one."""
    out = values.tolist() if hasattr(values, "tolist") else list(values)
    if not out or not isinstance(out[0], float):
        return out
    if len(out) > _LOOK_FOR_NAN and isinstance(values, np.ndarray) and not np.isnan(values).any():
        return out
    return [None if v != v else v for v in out]
