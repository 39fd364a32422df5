"""What the request log costs the gateway's process per request: queueing it, and converting it to Arrow.

Four kinds of traffic, each as ``--batch`` queued requests (what the
writer finds after one ``flush_s`` under load), 7 features each (5 numeric,
2 text), a classifier's numpy outputs (labels and scores):

* ``1 row, lists``: single-row JSON requests;
* ``100 rows, lists``: 100-row JSON requests;
* ``100 rows, numpy``: 100-row requests whose columns are numpy arrays
  (binary tensors, or JSON parsed into arrays);
* ``100 rows, numpy, float out``: the same with a regressor's float
  predictions and no scores (the prediction column is their text).

Each is run through the writer as it is now ("after") and as it is at
``--before`` (a git revision, by default HEAD; its ``records.py`` and
``requestlog.py`` are loaded from git into temporary modules), in
interleaved rounds, and reports the medians (and the best conversion:
the machine may be shared), and the median of the rounds' ratios: ``record`` (the event loop's
``RequestLog.record``), ``convert`` (the queued tuples to one Arrow table,
in the writer thread but holding the GIL) and ``flush`` (conversion and the
Parquet segment, written to a temporary folder). The load average is
printed each round.

    .venv/bin/python bench/request_log_convert.py [--rounds 5] [--batch 2000] [--before HEAD]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from _common import REPO, console, table

FEATURES = 7
CASES = ("1 row, lists", "100 rows, lists", "100 rows, numpy", "100 rows, numpy, float out")


def load_before(revision: str) -> types.ModuleType:
    """``requestlog.py`` at ``revision``, importing ``records.py`` at ``revision``: both as temporary modules."""
    def source(name: str) -> str:
        return subprocess.run(["git", "show", f"{revision}:src/rung/monitor/{name}"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout

    records = types.ModuleType("_before_records")
    exec(compile(source("records.py"), f"{revision}:records.py", "exec"), records.__dict__)
    sys.modules[records.__name__] = records
    requestlog = types.ModuleType("_before_requestlog")
    text = source("requestlog.py").replace("from rung.monitor.records import", "from _before_records import")
    sys.modules[requestlog.__name__] = requestlog  # dataclasses look their module up
    exec(compile(text, f"{revision}:requestlog.py", "exec"), requestlog.__dict__)
    return requestlog


def requests(case: str, batch: int, seed: int = 0) -> list[dict[str, Any]]:
    """``batch`` requests' arguments to ``record``: features, outputs, rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = 1 if case.startswith("1 row") else 100
    out = []
    for _ in range(batch):
        numeric = {"tenure_months": rng.integers(0, 72, rows), "monthly_charges": np.round(rng.uniform(20, 120, rows), 2),
                   "support_calls": rng.integers(0, 9, rows), "age": rng.integers(18, 90, rows),
                   "discount": rng.uniform(0, 1, rows)}
        text = {"contract": rng.choice(["month-to-month", "one-year", "two-year"], rows),
                "region": rng.choice(["north", "south", "east", "west"], rows)}
        features: dict[str, Any] = numeric | text
        if "lists" in case:
            features = {name: values.tolist() for name, values in features.items()}
        if case.endswith("float out"):
            predictions, scores = rng.normal(50, 20, rows), None
        else:
            scores = rng.uniform(0, 1, rows)
            predictions = (scores > 0.5).astype(np.int64)
        out.append({"features": features, "predictions": predictions, "scores": scores, "rows": rows})
    assert len(out[0]["features"]) == FEATURES
    return out


def filled(module: types.ModuleType, folder: str, batch: list[dict[str, Any]]) -> Any:
    """A writer of ``module`` (not started) with ``batch`` recorded into it."""
    from rung.clock import ManualClock

    log = module.RequestLog(folder, clock=ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC)), capacity=10**9,
                            max_request_rows=10**9, segment_rows=10**9)
    for i, request in enumerate(batch):
        log.record(f"req-{i}", "churn", 1, "champion", status=200, latency_s=0.002, **request)
    return log


def measure(module: types.ModuleType, convert: Callable[[list[tuple[Any, ...]]], Any],
            batch: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds to record ``batch``, to convert what it queued, and to flush it as a segment."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        log = filled(module, folder, batch)
        recorded = time.perf_counter()
        convert(list(log._queue))  # the writer's input, as it takes it off the queue
        converted = time.perf_counter()
        log.flush()
        flushed = time.perf_counter()
        assert log.written == sum(r["rows"] for r in batch), "the segment must hold every row"
    return {"record": recorded - started, "convert": converted - recorded, "flush": flushed - converted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2000, help="requests queued per conversion (single-row case; "
                                                                 "a tenth of it for 100-row requests)")
    parser.add_argument("--before", default="HEAD", help="the git revision to compare with")
    args = parser.parse_args()

    from rung.monitor import records, requestlog

    before = load_before(args.before)
    versions = {"before": (before, before.records_table), "after": (requestlog, records.records_table)}
    batches = {case: requests(case, args.batch if case.startswith("1 row") else max(1, args.batch // 10)) for case in CASES}
    with tempfile.TemporaryDirectory() as folder:
        for case, batch in batches.items():  # a warm-up, and the check that both build the same table
            before_table, after_table = (convert(list(filled(module, folder, batch)._queue))
                                         for module, convert in versions.values())
            if not before_table.equals(after_table):
                console.print(f"[yellow]{case}: the tables differ[/]\n  before {before_table.schema}\n"
                              f"  after  {after_table.schema}")
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        console.print(f"round {round_ + 1}/{args.rounds}: load average {os.getloadavg()}")
        for case, batch in batches.items():
            order = list(versions.items())
            for name, (module, convert) in order if round_ % 2 else order[::-1]:  # each goes first in half the rounds
                gc.collect()
                samples.setdefault((case, name), []).append(measure(module, convert, batch))

    out = table(f"Request log per request: before ({args.before}) and after, {args.rounds} interleaved rounds",
                ["traffic", "version", "record µs/req", "convert µs/req", "best", "best ns/row", "flush µs/req",
                 "convert after/before"], left=2)
    for case, batch in batches.items():
        rows = batch[0]["rows"]
        per_request = {name: {k: [s[k] / len(batch) * 1e6 for s in samples[(case, name)]] for k in ("record", "convert", "flush")}
                       for name in versions}
        ratio = statistics.median(a / b for a, b in zip(per_request["after"]["convert"], per_request["before"]["convert"],
                                                       strict=True))
        for name, m in per_request.items():
            out.add_row(case, name, f"{statistics.median(m['record']):.1f}", f"{statistics.median(m['convert']):.1f}",
                        f"{min(m['convert']):.1f}", f"{min(m['convert']) * 1000 / rows:.0f}",
                        f"{statistics.median(m['flush']):.1f}", "" if name == "before" else f"{ratio:.2f}")
    console.print(out)
    console.print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
