"""Batch scoring: `rung predict` against `mlflow models predict` on the same model and input, and rung's peak memory.

One run, one after the other on the same machine:

* the comparison: the churn template's model (ColumnTransformer + 200
  boosted trees, trained by ``rung run``) scores the same CSV of ``--rows``
  rows (default 1,000,000) with ``rung predict churn:1 in.csv --out
  out.parquet`` and with ``mlflow models predict -m models:/churn/1 -i in.csv
  -o out.json --env-manager local -t csv``. Wall time of each command as a
  subprocess, start-up included (what a user waits for), so rows/s = rows /
  wall seconds;
* the large file: ``rung predict`` on a Parquet file of ``--big-rows`` rows
  (default 10,000,000), wall time and peak RSS of the process
  (``ru_maxrss`` from ``wait4``).

Rows are drawn at random (with replacement, seed 0) from the template's
training data. The load average is printed before and after, since the
machine may be shared.

    .venv/bin/python bench/batch_predict.py [--rows 1000000] [--big-rows 10000000] [--skip-mlflow] [--check]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import VENV_BIN, console, rung_executable, table, trained_project

TARGET_SPEEDUP = 5.0
TARGET_RSS_MB = 1024.0
CHUNK = 1_000_000


def write_input(project: Path, path: Path, rows: int) -> None:
    """``rows`` rows drawn from the training data, written ``CHUNK`` at a time (the benchmark's own memory stays small)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    train = pd.read_csv(project / "data" / "train.csv").drop(columns=["churned"])
    rng = np.random.default_rng(0)
    writer = None
    try:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            chunk = pa.Table.from_pandas(train.iloc[rng.integers(0, len(train), n)].reset_index(drop=True),
                                         preserve_index=False)
            if writer is None:
                writer = (pq.ParquetWriter(path, chunk.schema) if path.suffix == ".parquet"
                          else pcsv.CSVWriter(path, chunk.schema))
            if path.suffix == ".parquet":
                writer.write_table(chunk, row_group_size=128 * 1024)
            else:
                writer.write_table(chunk)
    finally:
        if writer is not None:
            writer.close()


def timed(command: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[float, float, str | None]:
    """(wall seconds, peak RSS in MB, the last stderr line if it failed) of ``command`` as a child process."""
    with tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)  # ru_maxrss of this child alone
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        lines = stderr.read().strip().splitlines()
    failed = f"exit {process.returncode}: {lines[-1] if lines else ''}" if process.returncode else None
    return seconds, usage.ru_maxrss / 1024, failed


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the CSV both tools score")
    parser.add_argument("--big-rows", type=int, default=10_000_000, help="rows of the Parquet file rung scores alone")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 when a figure misses its target")
    args = parser.parse_args()

    rung = rung_executable()
    mlflow = str(VENV_BIN / "mlflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNG_")}
    work = Path(tempfile.mkdtemp(prefix="rung-batch-bench-"))
    try:
        console.print(f"load average before: {loadavg()}")
        project = trained_project(work)
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / '.rung' / 'mlflow.db'}"
        rows: list[tuple[str, str, int, float, float]] = []
        failures: list[str] = []

        def record(label: str, source: str, n: int, command: list[str]) -> float:
            seconds, rss, failed = timed(command, cwd=project, env=env)
            if failed is not None:
                failures.append(f"{label}: {failed}")
            rows.append((label, source, n, seconds, rss))
            console.print(f"  {label} on {source}: {seconds:.1f} s, peak RSS {rss:,.0f} MB (load {loadavg()})")
            return seconds

        csv_in = work / "in.csv"
        write_input(project, csv_in, args.rows)
        small = work / "small.parquet"
        write_input(project, small, 1000)
        subprocess.run([rung, "predict", "churn:1", str(small), "--out", str(work / "warm.parquet")], cwd=project,
                       env=env, check=True, capture_output=True)  # the verified model cache, as after any first use
        record("rung predict", "Parquet, 1,000 rows (the floor)", 1000,
               [rung, "predict", "churn:1", str(small), "--out", str(work / "small-out.parquet")])
        rung_s = record("rung predict", f"CSV, {args.rows:,} rows", args.rows,
                        [rung, "predict", "churn:1", str(csv_in), "--out", str(work / "out.parquet")])
        mlflow_s = None
        if not args.skip_mlflow:
            mlflow_s = record("mlflow models predict", f"CSV, {args.rows:,} rows", args.rows,
                              [mlflow, "models", "predict", "-m", "models:/churn/1", "-i", str(csv_in),
                               "-o", str(work / "out.json"), "--env-manager", "local", "-t", "csv"])
        csv_in.unlink()
        big = work / "big.parquet"
        write_input(project, big, args.big_rows)
        size = big.stat().st_size / 1024**2
        record("rung predict", f"Parquet, {args.big_rows:,} rows ({size:,.0f} MB)", args.big_rows,
               [rung, "predict", "churn:1", str(big), "--out", str(work / "big-out.parquet")])

        out = table("rung predict vs mlflow models predict (template model, same input, same run)",
                    ["command", "input", "rows", "seconds", "rows/s", "peak RSS"], left=2)
        for label, source, n, seconds, rss in rows:
            out.add_row(label, source, f"{n:,}", f"{seconds:.1f}", f"{n / seconds:,.0f}", f"{rss:,.0f} MB")
        console.print(out)
        ok = not failures
        if mlflow_s is not None:
            speedup = mlflow_s / rung_s
            ok &= speedup >= TARGET_SPEEDUP
            console.print(f"rung / mlflow rows/s: {speedup:.1f}x (target ≥ {TARGET_SPEEDUP:g}x)")
        peak = rows[-1][4]
        ok &= peak <= TARGET_RSS_MB
        console.print(f"peak RSS on {args.big_rows:,} rows: {peak:,.0f} MB (target ≤ {TARGET_RSS_MB:,.0f} MB)")
        console.print(f"load average after: {loadavg()}")
        for failure in failures:
            console.print(f"[red]failed[/] {failure}")
        return 1 if args.check and not ok else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
