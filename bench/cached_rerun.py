"""`rung run` when nothing changed: every step is a cache hit.

Creates a tabular-classification project with `rung init` in a temporary
directory (committed to git, as a real project would be, so the run records
its commit), runs `rung run` once to fill the cache (the first run trains and
registers the model), then times `rung run` again as a subprocess, CLI start
included. Every timed run is checked afterwards to have served all its steps
from the cache.

    .venv/bin/python bench/cached_rerun.py [--runs 5] [--check]

Target: median < 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import console, rung_executable, summary, table, verdict

TARGET_S = 1.5


def sh(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return took


def commit(root: Path) -> None:
    if shutil.which("git") is None or not (root / ".git").is_dir():
        return
    who = ["-c", "user.name=rung bench", "-c", "user.email=bench@rung.local"]
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, capture_output=True)
    subprocess.run(["git", *who, "commit", "-q", "-m", "project"], cwd=root, check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed cached runs (default 5)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the median misses the target")
    args = parser.parse_args()

    rung = rung_executable()
    for var in ("RUNG_DATABASE_URL", "RUNG_TRACKING_URI", "RUNG_EXECUTOR", "RUNG_RAY_ADDRESS"):
        os.environ.pop(var, None)  # the embedded defaults: SQLite, local MLflow, local executor
    with tempfile.TemporaryDirectory(prefix="rung-bench-cached-") as tmp:
        root = Path(tmp) / "churn"
        init_s = sh([rung, "init", "churn", "--template", "tabular-classification", "--dir", str(root)], Path(tmp))
        commit(root)
        first_s = sh([rung, "run"], root)
        samples = [sh([rung, "run"], root) for _ in range(args.runs)]
        listed = subprocess.run([rung, "runs", "--json", "-n", str(args.runs + 1)], cwd=root, capture_output=True, text=True, check=True)
        runs = json.loads(listed.stdout)  # newest first
        timed, first = runs[: args.runs], runs[args.runs]
        if first["cache_hits"] != 0 or any(r["status"] != "succeeded" or r["cache_hits"] != r["steps_total"] for r in timed):
            raise SystemExit(f"expected {args.runs} fully cached runs after one uncached run, got {[(r['status'], r['cache_hits'], r['steps_total']) for r in runs]}")
        steps = timed[0]["steps_total"]

    stats = summary(samples)
    out = table(f"Cached re-run of a new tabular-classification project (median of {args.runs})", ["command", "median", "min", "max", "target", ""])
    out.add_row("rung init (for reference)", f"{init_s:.2f} s", "-", "-", "-", "")
    out.add_row(f"rung run, first (0/{steps} cached)", f"{first_s:.2f} s", "-", "-", "-", "")
    out.add_row(
        f"rung run, again ({steps}/{steps} cached)",
        f"{stats['median']:.2f} s",
        f"{stats['min']:.2f} s",
        f"{stats['max']:.2f} s",
        f"< {TARGET_S} s",
        verdict(stats["median"], TARGET_S),
    )
    console.print(out)
    return 1 if args.check and stats["median"] >= TARGET_S else 0


if __name__ == "__main__":
    sys.exit(main())
