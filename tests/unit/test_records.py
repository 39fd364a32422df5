"""rung.monitor.records through the request log's writer: what a segment holds, whatever form the columns came in.

Numpy columns are converted whole and lists in one call per column; the
segment must not depend on which: each test writes the same requests once
as numpy arrays and once as lists of the same values (numpy scalars, NaN
as None, as the writer took them before it converted arrays whole), which
the general path writes, and compares the segments.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rung.clock import ManualClock
from rung.monitor.requestlog import RequestLog

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def segment(folder: Path, requests: list[dict[str, Any]]) -> pa.Table:
    """The one segment a fresh writer in ``folder`` writes for ``requests`` (``record``'s keyword arguments)."""
    log = RequestLog(folder, clock=ManualClock(NOW), capacity=10**6)
    for i, request in enumerate(requests):
        log.record(request.get("request_id", f"req-{i}"), "churn", request.get("version", 1),
                   request.get("variant", "champion"), status=200, latency_s=0.002,
                   **{k: v for k, v in request.items() if k not in ("request_id", "version", "variant")})
    assert log.flush() == sum(r.get("rows", 1) for r in requests)
    (path,) = folder.rglob("*.parquet")
    return pq.ParquetFile(path).read()


def as_lists(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same requests with every numpy feature as a list of its numpy scalars, NaN as None."""
    def plain(values: Any) -> Any:
        if not isinstance(values, np.ndarray):
            return values
        return [None if values.dtype.kind == "f" and v != v else v for v in values]

    return [r | {"features": {k: plain(v) for k, v in r["features"].items()}} if "features" in r else r for r in requests]


def both(tmp_path: Path, requests: list[dict[str, Any]]) -> tuple[pa.Table, pa.Table]:
    return segment(tmp_path / "numpy", requests), segment(tmp_path / "lists", as_lists(requests))


def many(rows: int, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` requests of ``rows`` rows: numbers of several dtypes, text of several widths, NaN, a classifier's outputs."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        charges = rng.uniform(20, 120, rows)
        charges[rng.uniform(size=rows) < 0.2] = np.nan
        scores = rng.uniform(size=rows)
        out.append({"rows": rows, "shadow": i % 3 == 2, "version": 2 if i % 3 == 2 else 1,
                    "predictions": (scores > 0.5).astype(np.int64), "scores": scores,
                    "features": {"age": rng.integers(18, 90, rows), "calls": rng.integers(0, 9, rows).astype(np.int32),
                                 "charges": charges, "ratio": rng.uniform(size=rows).astype(np.float32),
                                 "paperless": rng.uniform(size=rows) < 0.5,
                                 "contract": rng.choice(["month-to-month", "one-year"] if i % 2 else ["two-year", "x"], rows),
                                 "city": rng.choice(["Zürich", "Genève", "Oslo"], rows)}})
    return out


@pytest.mark.parametrize(("rows", "count"), [(1, 50), (100, 8), (3, 1)])
def test_numpy_columns_make_the_segment_their_values_make(tmp_path: Path, rows: int, count: int) -> None:
    fast, general = both(tmp_path, many(rows, count))
    assert fast.schema.equals(general.schema)
    assert fast.equals(general)
    assert fast.schema.field("f_calls").type == pa.int32() and fast.schema.field("f_ratio").type == pa.float32()
    assert fast.schema.field("f_contract").type == pa.string() and fast.schema.field("f_paperless").type == pa.bool_()
    assert fast.column("f_charges").null_count > 0  # NaN in a float column is a missing value


def test_a_feature_some_requests_lack_is_null_in_their_rows(tmp_path: Path) -> None:
    requests = [{"rows": 2, "features": {"age": np.array([30, 31]), "city": np.array(["Oslo", "Bergen"])}},
                {"rows": 3, "features": {"city": np.array(["Zürich", "x", "y"])}},
                {"rows": 1, "features": {"age": np.array([50]), "plan": np.array([1.5])}},
                {"rows": 1}]
    fast, general = both(tmp_path, requests)
    assert fast.equals(general)
    assert fast.column("f_age").to_pylist() == [30, 31, None, None, None, 50, None]
    assert fast.column("f_city").to_pylist() == ["Oslo", "Bergen", "Zürich", "x", "y", None, None]
    assert fast.column("f_plan").to_pylist() == [None] * 5 + [1.5, None]
    assert fast.column("row").to_pylist() == [0, 1, 0, 1, 2, 0, 0]
    assert fast.column("request_id").to_pylist() == ["req-0"] * 2 + ["req-1"] * 3 + ["req-2", "req-3"]


def test_columns_that_mix_lists_arrays_and_types_are_written_value_by_value(tmp_path: Path) -> None:
    requests = [{"rows": 2, "features": {"age": np.array([30, 31]), "code": [1, "a"], "size": np.array([1, 2], np.int32),
                                         "text": np.array(["a\x00b", "c"]), "tag": [None, None],
                                         "swapped": np.array([1, 2], ">i8")}},
                {"rows": 2, "features": {"age": [40, None], "code": [2, 3], "size": np.array([1.5, 2.5]),
                                         "text": np.array(["longer text", ""]), "tag": ["x", None]}},
                {"rows": 2, "features": {"age": np.array([50]), "code": np.array([4, 5]), "size": np.array([3], np.int8),
                                         "text": np.array(["d", "e"]), "tag": np.array([7, 8])}}]  # one value short
    fast, general = both(tmp_path, requests)
    assert fast.equals(general)
    assert fast.column("f_age").to_pylist() == [30, 31, 40, None, 50, None]
    assert fast.column("f_code").to_pylist() == ["1", "a", "2", "3", "4", "5"]  # numbers and text: text
    assert fast.column("f_text").to_pylist() == ["a\x00b", "c", "longer text", "", "d", "e"]
    assert fast.column("f_swapped").to_pylist() == [1, 2] + [None] * 4


def test_the_records_own_columns_follow_each_request(tmp_path: Path) -> None:
    requests = [{"request_id": "a", "rows": 2, "version": 3, "variant": "challenger", "shadow": True,
                 "predictions": np.array(["yes", "no"]), "scores": np.array([0.75, np.nan])},
                {"request_id": "b", "rows": 1, "predictions": np.array([7]), "features": {"age": [1]}},
                {"request_id": "c", "rows": 3, "predictions": [1, "no", None]}]
    table = segment(tmp_path, requests)
    assert table.column_names[:10] == ["request_id", "row", "time", "version", "variant", "shadow", "status",
                                       "latency_ms", "prediction", "score"]
    assert table.column("request_id").to_pylist() == ["a", "a", "b", "c", "c", "c"]
    assert table.column("row").to_pylist() == [0, 1, 0, 0, 1, 2]
    assert table.column("version").to_pylist() == [3, 3, 1, 1, 1, 1]
    assert table.column("variant").to_pylist() == ["challenger"] * 2 + ["champion"] * 4
    assert table.column("shadow").to_pylist() == [True, True, False, False, False, False]
    assert table.column("time").to_pylist() == [NOW] * 6
    assert table.column("prediction").to_pylist() == ["yes", "no", "7", "1", "no", None]
    assert table.column("score").to_pylist() == [0.75, None, 7.0, 1.0, None, None]
    assert table.column("f_age").to_pylist() == [None, None, 1, None, None, None]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_float_predictions_are_their_numpy_text(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(1)
    with np.errstate(over="ignore"):
        values = (rng.normal(size=4000) * 10.0 ** rng.integers(-40, 40, 4000)).astype(dtype)
    edges = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -2.5, 1e-4, 1e6, 1e16, 1e21], dtype)
    edges = np.concatenate([edges, np.nextafter(edges, dtype(np.inf)), np.nextafter(edges, dtype(-np.inf))])
    values = np.concatenate([values, edges])
    halves = np.array_split(values, 2)
    table = segment(tmp_path, [{"rows": len(h), "predictions": h} for h in halves])
    assert table.column("prediction").to_pylist() == [str(v) for v in values]
    assert table.column("score").to_pylist() == [None if v != v else float(v) for v in values]
