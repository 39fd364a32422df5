"""Per-step scheduling overhead of the runner with the local executor.

Builds pipelines of no-op steps in a generated module (as a user's
pipeline.py would be), runs them with rung's Runner against a fresh SQLite
metadata store, an ArtifactStore and a LocalExecutor, wired as
``rung.project.Project.run`` wires them, with ``use_cache=False`` so every
step runs. Shapes:

* chain: 50 steps, each reading the previous one's output;
* fan-out: 1 source step and 49 steps that each read its output (50 steps).

    overhead per step = (wall time of Runner.run - sum of the steps' duration_s) / steps

``duration_s`` is what the step records show: the time inside the worker from
the start of the task (opening the step's log, loading inputs from the
artifact store, calling the function, storing outputs). A no-op's is close to
zero, so the overhead is what the runner adds around each step: the
metadata-store writes, the cache bookkeeping, submitting to the executor and
collecting the result. With workers=2 steps of a fan-out run side by side, so
the sum of durations may exceed what the wall clock saw; the difference is
still taken as is. The clock runs around ``Runner.run`` only: the pool's
worker processes are forked inside it (on the first submit), but building the
executor and shutting it down are outside.

    .venv/bin/python bench/step_overhead.py [--steps 50] [--repeats 3] [--check]

Target: < 10 ms per step.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import console, summary, table, verdict

TARGET_MS = 10.0


def write_module(directory: Path, steps: int) -> str:
    """A module defining the pipelines ``chain`` and ``fanout``, each of ``steps`` no-op steps."""
    lines = [
        "from rung.pipeline import Pipeline, step",
        "",
        "@step(outputs='c0')",
        "def chain_0():",
        "    return 0",
        "",
    ]
    for i in range(1, steps):
        lines += [f"@step(outputs='c{i}')", f"def chain_{i}(c{i - 1}):", f"    return c{i - 1} + 1", ""]
    lines += ["@step(outputs='seed')", "def fan_source():", "    return 0", ""]
    for i in range(1, steps):
        lines += [f"@step(outputs='f{i}')", f"def fan_{i}(seed):", f"    return seed + {i}", ""]
    chain = ", ".join(f"chain_{i}" for i in range(steps))
    fan = ", ".join(["fan_source"] + [f"fan_{i}" for i in range(1, steps)])
    lines += [f"chain = Pipeline('chain', [{chain}])", f"fanout = Pipeline('fanout', [{fan}])", ""]
    name = "rung_bench_noop_steps"
    (directory / f"{name}.py").write_text("\n".join(lines))
    return name


def run_once(module, shape: str, workers: int, root: Path, store) -> dict[str, float]:
    from rung.pipeline.artifacts import ArtifactStore
    from rung.pipeline.executors import make_executor
    from rung.pipeline.runner import Runner

    pipeline = getattr(module, shape)
    artifacts = ArtifactStore(root / ".rung" / "artifacts")
    executor = make_executor("local", workers=workers)  # as Project.run does
    try:
        runner = Runner(store, artifacts, executor, project_root=root, settings=None)
        started = time.perf_counter()
        result = runner.run(pipeline, project="bench", params={}, use_cache=False)
        wall = time.perf_counter() - started
    finally:
        executor.close()
    assert result.run.status == "succeeded", result.run
    ran = [s for s in result.steps if s.status == "succeeded"]
    assert len(ran) == len(pipeline.steps), [s.status for s in result.steps]
    # Σ steps: the steps' own recorded time; the rest of the wall time is the runner's
    step_time = sum(s.duration_s or 0.0 for s in ran)
    return {"wall": wall, "step_time": step_time, "steps": len(ran)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per pipeline (default 50)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the median is shown (default 3)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a case misses the target")
    args = parser.parse_args()

    from rung.store import MetadataStore

    with tempfile.TemporaryDirectory(prefix="rung-bench-steps-") as tmp:
        root = Path(tmp)
        sys.path.insert(0, str(root))
        module = importlib.import_module(write_module(root, args.steps))
        store = MetadataStore(f"sqlite:///{root / '.rung' / 'rung.db'}", lock_dir=root / ".rung")
        try:
            run_once(module, "chain", 1, root, store)  # warm-up: imports, SQL statement caches
            out = table(
                f"Runner overhead per no-op step (use_cache=False, median of {args.repeats})",
                ["shape", "executor", "wall", "Σ steps", "overhead", "per step", "target", ""],
                left=2,
            )
            worst = 0.0
            for workers, label in ((1, "local, 1 (inline)"), (2, "local, 2 (pool)")):
                for shape in ("chain", "fanout"):
                    samples = [run_once(module, shape, workers, root, store) for _ in range(args.repeats)]
                    overheads = [(s["wall"] - s["step_time"]) / s["steps"] * 1000 for s in samples]
                    per_step = statistics.median(overheads)
                    wall = summary([s["wall"] for s in samples])["median"]
                    step_time = statistics.median(s["step_time"] for s in samples)
                    worst = max(worst, per_step)
                    out.add_row(
                        f"{shape} {args.steps}",
                        label,
                        f"{wall * 1000:.0f} ms",
                        f"{step_time * 1000:.0f} ms",
                        f"{(wall - step_time) * 1000:.0f} ms",
                        f"{per_step:.2f} ms",
                        f"< {TARGET_MS:.0f} ms",
                        verdict(per_step, TARGET_MS),
                    )
            console.print(out)
        finally:
            store.close()
    return 1 if args.check and worst >= TARGET_MS else 0


if __name__ == "__main__":
    sys.exit(main())
