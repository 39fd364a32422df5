"""How long `rung --help` takes: the floor under every CLI command.

Runs `rung --help` as a subprocess (after one warm-up run that fills the
bytecode and page caches) and reports the median wall time. For reference it
also times a bare `python -c pass` with the same interpreter: the part of the
start-up that rung cannot shave off.

    .venv/bin/python bench/cli_start.py [--runs 10] [--check]

Target: median < 0.5 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _common import console, rung_executable, summary, table, verdict

TARGET_S = 0.5


def wall_times(command: list[str], runs: int) -> list[float]:
    subprocess.run(command, check=True, capture_output=True)  # warm-up, not counted
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs (default 10)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the median misses the target")
    args = parser.parse_args()

    rows = [
        ("rung --help", summary(wall_times([rung_executable(), "--help"], args.runs)), TARGET_S),
        ("python -c pass (baseline)", summary(wall_times([sys.executable, "-c", "pass"], args.runs)), None),
    ]
    out = table(f"CLI start-up: median of {args.runs} runs (subprocess wall time)", ["command", "median", "min", "max", "target", ""])
    for name, stats, target in rows:
        out.add_row(
            name,
            f"{stats['median']:.3f} s",
            f"{stats['min']:.3f} s",
            f"{stats['max']:.3f} s",
            f"< {target} s" if target else "-",
            verdict(stats["median"], target) if target else "",
        )
    console.print(out)
    ok = rows[0][1]["median"] < TARGET_S
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
