"""``train.tune`` on a 2-node Ray cluster against the same trials one by one in one process.

Makes the template's churn project (``rung init``, ``--rows`` rows), runs its
pipeline up to the train split, and builds the search's objective from it as
``rung run`` does (:class:`rung.tuning.TuneSearch`: the template's own train
function, 20% of the train split held out, scored on ROC AUC). Then:

* **ray, 2 nodes**: a local cluster of two nodes on this machine (``ray
  start --head --num-cpus 1`` and ``ray start --address HEAD --num-cpus 1``,
  each one CPU), joined through its GCS address; ``--trials`` draws from the
  space below, at most 4 at once (``max_concurrent: 4``; the cluster's two
  CPUs allow two), each trial reserving one CPU (:func:`rung.tuning.run_trials`);
* **one process**: the same parameter sets, in the same order, trained and
  scored one after another in this process (:func:`rung.tuning.run_trials_inline`),
  once as they come (scikit-learn's OpenMP threads on every core) and once
  with one thread (threadpoolctl), as each Ray trial runs: Ray sets
  ``OMP_NUM_THREADS`` to a task's CPUs.

The wall time of each excludes starting the cluster and connecting to it
(shown on their own rows); Σ trials is the sum of the trials' own times
(training and scoring), so wall − Σ/parallelism is what Ray adds. The load
average (1 min) is read before and after each phase. Both nodes are stopped
at the end, and the script checks that none of their processes is left.

    .venv/bin/python bench/tune.py [--trials 16] [--rows 3000]

Space: learning_rate loguniform [0.01, 0.3], max_depth randint [2, 8],
max_iter choice [100, 200] over the template's fixed params.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import console, table

RAY = str(Path(sys.executable).with_name("ray"))
SPACE = {"learning_rate": {"loguniform": [0.01, 0.3]}, "max_depth": {"randint": [2, 8]}, "max_iter": {"choice": [100, 200]}}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for sock in sockets:
        sock.close()
    return ports


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_node(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """One ``ray start --block`` node with its own ports (two nodes share this machine), in its own session."""
    node, objects, agent, agent_grpc, runtime_env, metrics = free_ports(6)
    ports = ["--node-manager-port", str(node), "--object-manager-port", str(objects),
             "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
             "--runtime-env-agent-port", str(runtime_env), "--metrics-export-port", str(metrics)]
    return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args, *ports], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def forget_head(port: int) -> None:
    """``ray start --head`` wrote its address where a bare ``ray.init()`` would find it; ``ray stop`` removes it, SIGTERM not."""
    current = Path("/tmp/ray/ray_current_cluster")
    with contextlib.suppress(OSError):
        if current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def stop_node(process: subprocess.Popen[bytes]) -> None:
    group = os.getpgid(process.pid)
    os.killpg(group, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(group, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(group, signal.SIGKILL)


def wait_for_cpus(ray, cpus: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while ray.cluster_resources().get("CPU", 0) < cpus:
        if time.monotonic() > deadline:
            raise SystemExit(f"the cluster did not reach {cpus} CPUs in {timeout:g} s: {ray.cluster_resources()}")
        time.sleep(0.5)


def objective_for(work: Path, rows: int, trials: int):
    """The search's objective for the template project, built as rung's TuneSearch builds it."""
    from rung.project import Project
    from rung.templates import create_project
    from rung.tuning import Objective, holdout, tune_metric

    root = work / "churn"
    create_project("churn", "tabular-classification", root, rows=rows, git=False)
    with Project.open(root, overrides={"train.tune": {"trials": trials, "max_concurrent": 4, "space": SPACE}}) as project:
        result = project.run(targets=["train_set"])
        train_set = project.artifacts.get(result.outputs["train_set"])
        settings = project.settings
        step = project.load_pipeline().steps["train"]
        fit, valid = holdout(train_set, settings)
        metric, mode = tune_metric(settings)
        objective = Objective(func=step.func, uses=step.uses, outputs=step.outputs, inputs={}, train=fit, valid=valid,
                              fixed=settings.params, metric=metric, settings=settings, root=root)
        return objective, settings, step, mode, len(fit), len(valid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--rows", type=int, default=3000)
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("RUNG_")]:
        del os.environ[key]

    from rung.pipeline.cluster import connect_ray
    from rung.tuning import best_trial, run_trials, run_trials_inline

    rows_out = []
    with tempfile.TemporaryDirectory(prefix="rung-bench-tune-") as tmp:
        work = Path(tmp)
        objective, settings, step, mode, fit_rows, valid_rows = objective_for(work, args.rows, args.trials)
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        os.environ.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"})
        (gcs,) = free_ports(1)
        on_ray = []
        nodes: list[subprocess.Popen[bytes]] = []
        try:
            load = os.getloadavg()[0]
            started = time.perf_counter()
            nodes.append(start_node(["--head", "--port", str(gcs), "--num-cpus", "1", "--include-dashboard", "false"],
                                    work / "head.log", env))
            address = f"127.0.0.1:{gcs}"
            deadline = time.monotonic() + 120
            while not listening(gcs):
                if nodes[0].poll() is not None or time.monotonic() > deadline:
                    raise SystemExit((work / "head.log").read_text())
                time.sleep(0.5)
            nodes.append(start_node(["--address", address, "--num-cpus", "1"], work / "worker.log", env))
            connection = connect_ray(address, purpose="bench/tune.py")
            wait_for_cpus(connection.ray, 2)
            nodes_seen = len([n for n in connection.ray.nodes() if n.get("Alive")])
            rows_out.append(("start 2 nodes + connect", 0, time.perf_counter() - started, None, None, load, os.getloadavg()[0]))
            load = os.getloadavg()[0]
            began = time.perf_counter()
            on_ray = run_trials(objective, settings.tune, seed=settings.split.seed, resources=step.resources,
                                storage=work / "tune")
            ray_wall = time.perf_counter() - began
            rows_out.append((f"ray, {nodes_seen} nodes × 1 CPU", len(on_ray), ray_wall,
                             sum(t.duration_s for t in on_ray), best_trial(on_ray, mode), load, os.getloadavg()[0]))
            connection.close()
        finally:
            for node in reversed(nodes):
                stop_node(node)
            forget_head(gcs)
        configs = [{k: t.params[k] for k in SPACE} for t in on_ray]
        load = os.getloadavg()[0]
        began = time.perf_counter()
        inline = run_trials_inline(objective, configs)
        inline_wall = time.perf_counter() - began
        rows_out.append(("one process, one by one", len(inline), inline_wall, sum(t.duration_s for t in inline),
                         best_trial(inline, mode), load, os.getloadavg()[0]))
        from threadpoolctl import threadpool_limits

        load = os.getloadavg()[0]
        began = time.perf_counter()
        with threadpool_limits(1):  # as each Ray trial runs: Ray sets OMP_NUM_THREADS to the trial's one CPU
            single = run_trials_inline(objective, configs)
        rows_out.append(("one process, one by one, 1 thread", len(single), time.perf_counter() - began,
                         sum(t.duration_s for t in single), best_trial(single, mode), load, os.getloadavg()[0]))

    left = subprocess.run(["pgrep", "-f", "--", f":{gcs}|--port {gcs}"], capture_output=True, text=True).stdout
    out = table(f"train.tune: {args.trials} trials, HistGradientBoosting on {fit_rows} rows, ROC AUC on {valid_rows}",
                ["run", "trials", "wall s", "s/trial", "Σ trials s", "best", "trial", "load before", "load after"])
    for name, trials, wall, total, best, before, after in rows_out:
        out.add_row(name, str(trials or ""), f"{wall:.1f}", f"{wall / trials:.2f}" if trials else "",
                    f"{total:.1f}" if total else "", f"{best.value:.4f}" if best else "", str(best.index) if best else "",
                    f"{before:.2f}", f"{after:.2f}" if after else "")
    console.print(out)
    ray_row, threaded, single = rows_out[1], rows_out[2], rows_out[3]
    console.print(f"wall time, one process ÷ ray: {threaded[2] / ray_row[2]:.2f}× (threads as they come), "
                  f"{single[2] / ray_row[2]:.2f}× (1 thread); same best trial in all three: "
                  f"{len({r[4].index if r[4] else None for r in (ray_row, threaded, single)}) == 1}")
    console.print("Ray processes left: " + ("none" if not left.strip() else left.strip().replace("\n", ", ")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
