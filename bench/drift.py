"""Data drift on 1,000,000 rows x 20 numeric features: rung's compare against Evidently's DataDriftPreset.

The script generates a reference and a current table of the same size (some
columns shifted in mean or scale, some not, two with 1% missing values),
writes both to Parquet in a temporary directory, and then runs each tool in
its own subprocess, so that each one's peak memory (``ru_maxrss``) is its
own:

* rung: ``compare`` with ``method="wasserstein"``, threshold 0.1,
  multivariate off; and a second line with the domain classifier on;
* Evidently: ``Report([DataDriftPreset(num_method="wasserstein",
  num_threshold=0.1)]).run(current, reference)`` (the 0.7 API), in a separate
  virtual environment, since rung does not depend on Evidently.

Both load the same Parquet files the same way (pyarrow, one column at a
time), so the figures compare the drift computation. Timings: the
interpreter with imports, loading, and the comparison itself, separately.
The table ends with the per-column decisions of both tools and any
disagreement.

    .venv/bin/python bench/drift.py [--rows 1000000] [--features 20] [--repeats 3]
                                    [--evidently-python /tmp/evidently-venv/bin/python] [--check]

Evidently's environment, for measuring only:

    python3 -m venv /tmp/evidently-venv
    /tmp/evidently-venv/bin/pip install evidently "pandas<3" pyarrow
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, console, table

THRESHOLD = 0.1

# Peak RSS of this process. Not ru_maxrss: Linux carries the parent's high-water mark across fork and
# exec into the child's ru_maxrss, so a child started by a big parent would report the parent's peak.
PEAK = """
import resource
def peak_mib():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

# Both workers print one JSON line: seconds for imports, loading and comparing, peak RSS, per-column values.
LOADER = """
import pyarrow as pa, pyarrow.parquet as pq
def load(path):
    source = pq.ParquetFile(path, memory_map=False, pre_buffer=False)
    columns = {name: source.read(columns=[name]).column(0) for name in source.schema_arrow.names}
    return pa.table(columns).to_pandas(self_destruct=True, split_blocks=True)
"""

RUNG_WORKER = PEAK + """
import json, sys, time
started = time.perf_counter()
from pathlib import Path
from rung.cli.drift import read_frame
from rung.config.drift import DriftSettings
from rung.monitor.drift import compare
imported = time.perf_counter()
reference, current = read_frame(Path(sys.argv[1])), read_frame(Path(sys.argv[2]))
loaded = time.perf_counter()
report = compare(reference, current, settings=DriftSettings(method="wasserstein", threshold=float(sys.argv[3]),
                                                            multivariate=sys.argv[4] == "1"))
done = time.perf_counter()
print(json.dumps({
    "import_s": imported - started, "load_s": loaded - imported, "compute_s": done - loaded,
    "peak_mib": peak_mib(),
    "values": {f.name: f.statistic for f in report.features},
    "drifted": report.drifted_features,
    "auc": report.multivariate.auc if report.multivariate else None,
}))
"""

EVIDENTLY_WORKER = PEAK + """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
started = time.perf_counter()
from evidently import Report
from evidently.presets import DataDriftPreset
""" + LOADER + """
imported = time.perf_counter()
reference, current = load(sys.argv[1]), load(sys.argv[2])
loaded = time.perf_counter()
threshold = float(sys.argv[3])
snapshot = Report([DataDriftPreset(num_method="wasserstein", num_threshold=threshold)]).run(current, reference)
done = time.perf_counter()
values, count = {}, None
for metric in snapshot.dict()["metrics"]:
    kind = metric["config"]["type"]
    if kind.endswith("ValueDrift"):
        values[metric["config"]["column"]] = metric["value"]
    elif kind.endswith("DriftedColumnsCount"):
        count = metric["value"]["count"]
print(json.dumps({
    "import_s": imported - started, "load_s": loaded - imported, "compute_s": done - loaded,
    "peak_mib": peak_mib(),
    "values": values,
    "drifted": [name for name, value in values.items() if value >= threshold],  # Evidently's rule for "wasserstein"
    "drifted_count": count,
}))
"""

# (family, change) per feature, cycled: which columns drift is known in advance
CHANGES = [
    ("normal", "shift 0.3 sd"),
    ("lognormal", "none"),
    ("uniform", "scale x1.3"),
    ("exponential", "shift 0.05 sd"),
    ("normal", "none"),
]


def generate(rows: int, features: int, directory: Path) -> None:
    """reference.parquet, current.parquet and plan.json (what was done to each column) in ``directory``."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(2024)
    draw = {
        "normal": lambda n: rng.normal(50.0, 10.0, n),
        "lognormal": lambda n: rng.lognormal(3.0, 0.6, n),
        "uniform": lambda n: rng.uniform(-1.0, 1.0, n),
        "exponential": lambda n: rng.exponential(2.0, n),
    }
    reference: dict[str, np.ndarray] = {}
    current: dict[str, np.ndarray] = {}
    plan: dict[str, str] = {}
    for i in range(features):
        family, change = CHANGES[i % len(CHANGES)]
        name = f"f{i:02d}_{family}"
        ref, cur = draw[family](rows), draw[family](rows)
        sd = float(ref.std())
        if change == "shift 0.3 sd":
            cur += 0.3 * sd
        elif change == "shift 0.05 sd":
            cur += 0.05 * sd
        elif change == "scale x1.3":
            cur = cur.mean() + (cur - cur.mean()) * 1.3
        if i in (1, 6):  # some missing values on both sides
            ref[rng.random(rows) < 0.01] = np.nan
            cur[rng.random(rows) < 0.01] = np.nan
        reference[name], current[name] = ref, cur
        plan[name] = f"{family}, {change}"
    pd.DataFrame(reference).to_parquet(directory / "reference.parquet")
    pd.DataFrame(current).to_parquet(directory / "current.parquet")
    (directory / "plan.json").write_text(json.dumps(plan))


def run_worker(python: str, code: str, args: list[str]) -> dict:
    started = time.perf_counter()
    out = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"worker {python} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def typical(runs: list[dict]) -> dict:
    """Median of each timing and of the peak memory across runs; values and decisions from the first."""
    keys = ("import_s", "load_s", "compute_s", "wall_s", "peak_mib")
    return {**runs[0], **{k: statistics.median(r[k] for r in runs) for k in keys}, "runs": len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in each of reference and current")
    parser.add_argument("--features", type=int, default=20, help="numeric columns")
    parser.add_argument("--repeats", type=int, default=3, help="runs of rung per line (median reported)")
    parser.add_argument("--evidently-repeats", type=int, default=1, help="runs of Evidently (about a minute each)")
    parser.add_argument("--evidently-python", default="/tmp/evidently-venv/bin/python",
                        help="python of a virtual environment with evidently, pandas<3 and pyarrow")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--generate", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(args.rows, args.features, Path(args.generate))
        return

    evidently = Path(args.evidently_python)
    work = Path(tempfile.mkdtemp(prefix="rung-bench-drift-"))
    try:
        with console.status(f"generating {args.rows:,} x {args.features} twice"):
            # in a child process, so that this one stays small while the workers run
            subprocess.run([sys.executable, __file__, "--generate", str(work), "--rows", str(args.rows),
                            "--features", str(args.features)], check=True)
            ref_path, cur_path = work / "reference.parquet", work / "current.parquet"
            plan = json.loads((work / "plan.json").read_text())
        common = [str(ref_path), str(cur_path), str(THRESHOLD)]
        results: dict[str, dict] = {}
        for label, multivariate in (("rung · multivariate off", "0"), ("rung · domain classifier on", "1")):
            runs = []
            for i in range(args.repeats):
                with console.status(f"{label}: run {i + 1} of {args.repeats}"):
                    runs.append(run_worker(sys.executable, RUNG_WORKER, [*common, multivariate]))
            results[label] = typical(runs)
        if evidently.exists():
            runs = []
            for i in range(args.evidently_repeats):
                with console.status(f"Evidently DataDriftPreset: run {i + 1} of {args.evidently_repeats}"):
                    runs.append(run_worker(str(evidently), EVIDENTLY_WORKER, common))
            results["Evidently DataDriftPreset"] = typical(runs)
        else:
            console.print(f"[yellow]note:[/] no Evidently python at {evidently}: measuring rung only "
                          "(see the docstring to create one)")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results.get("Evidently DataDriftPreset")
    out = table(f"Drift, {args.rows:,} rows x {args.features} numeric features a side, wasserstein >= {THRESHOLD} "
                f"(median of runs)", ["tool", "runs", "imports", "load", "compare", "process", "peak MiB",
                                      "× compare", "× process", "memory"])
    for label, r in results.items():
        faster = f"{base['compute_s'] / r['compute_s']:.0f}×" if base else "-"
        faster_wall = f"{base['wall_s'] / r['wall_s']:.1f}×" if base else "-"
        memory = f"{r['peak_mib'] / base['peak_mib']:.2f}" if base else "-"
        out.add_row(label, str(r["runs"]), f"{r['import_s']:.2f}", f"{r['load_s']:.2f}", f"{r['compute_s']:.2f}",
                    f"{r['wall_s']:.2f}", f"{r['peak_mib']:,.0f}", faster, faster_wall, memory)
    console.print("seconds; × compare and × process: Evidently's time / this line's (the comparison alone, the whole "
                  "subprocess); memory: peak RSS / Evidently's", highlight=False)
    console.print(out)
    rung = results["rung · multivariate off"]
    auc = results["rung · domain classifier on"]["auc"]
    console.print(f"domain classifier ROC AUC: {auc:.3f}")

    decisions = table("Per-column decisions", ["column", "data", "rung", "Evidently", "|Δ value|"])
    disagreements = []
    for name, description in plan.items():
        mine = name in rung["drifted"]
        theirs = (name in base["drifted"]) if base else None
        delta = abs(rung["values"][name] - base["values"][name]) if base else None
        if base and mine != theirs:
            disagreements.append(name)
        decisions.add_row(name, description, _word(mine), "-" if theirs is None else _word(theirs),
                          "-" if delta is None else f"{delta:.1e}")
    console.print(decisions)
    checks: dict[str, bool] = {}
    if base:
        console.print(f"decisions agree on {len(plan) - len(disagreements)} of {len(plan)} columns"
                      + (f"; disagree on {', '.join(disagreements)}" if disagreements else ""))
        console.print(f"Evidently's DriftedColumnsCount: {base.get('drifted_count')}; rung: {len(rung['drifted'])}")
        checks = {
            ">= 30x faster than Evidently (compare)": base["compute_s"] / rung["compute_s"] >= 30,
            "<= 1/3 of Evidently's peak memory": rung["peak_mib"] <= base["peak_mib"] / 3,
            "same per-column decisions": not disagreements,
        }
        for name, ok in checks.items():
            console.print(f"{'[green]pass[/]' if ok else '[red]FAIL[/]'}  {name}")
    if args.check and not all(checks.values()):
        sys.exit(1)


def _word(drifted: bool) -> str:
    return "[red]drift[/]" if drifted else "no"


if __name__ == "__main__":
    main()
