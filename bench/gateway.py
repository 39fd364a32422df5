"""Gateway throughput and latency against `mlflow models serve` and a bare Starlette endpoint.

All three serve the same scikit-learn classifier on the churn template's
data (by default a logistic regression behind the template's one-hot
encoding; ``--model boosted`` for the template's 200 boosted trees) on
loopback, one after the other in one run, loaded by wrk with single-row
requests:

* 8 connections (the issue's setting): requests/s and p99 for
  ``mlflow models serve``, the bare endpoint (JSON parse + ``model.predict``)
  and the gateway (routing and metrics on, MLflow payload and OIP v2);
* 1,000 connections: the gateway with micro-batching against the bare
  endpoint.

``--log both`` (the default) runs two gateways side by side, one with its
request log (Parquet segments, ``monitor.request_log``) and one without,
loads them in turn and reports what the log costs; ``--rounds N`` repeats
the alternation N times and keeps the medians. ``--rung-only`` leaves out
mlflow and the bare endpoint.

    .venv/bin/python bench/gateway.py [--duration 10] [--model linear|boosted] [--log on|off|both] [--check]

Needs ``wrk`` (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import MODELS, REPO, console, rung_executable, table, trained_project

ROW = {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north",
       "support_calls": 1, "age": 42, "paperless_billing": "no"}
TYPES = {"tenure_months": "INT64", "monthly_charges": "FP64", "support_calls": "INT64", "age": "INT64"}
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "r")
wrk.body = f:read("*a")
f:close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def wrk(url: str, body: Path, connections: int, duration: int, workdir: Path) -> dict[str, float]:
    script = workdir / f"{body.stem}.lua"
    script.write_text(LUA.format(body=body))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in errors.groups()) if errors else 0)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale, "failed": failed, "requests": total}


def start(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


LOG_OFF = "\nmonitor:\n  request_log:\n    enabled: false\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--model", choices=sorted(MODELS), default="linear",
                        help="linear: a light scikit-learn classifier (default); boosted: the template's trees")
    parser.add_argument("--workers", type=int, default=None, help="serve.workers for rung (worker processes per version)")
    parser.add_argument("--log", choices=["on", "off", "both"], default="both",
                        help="rung's request log (monitor.request_log.enabled): on, off, or both in the same run")
    parser.add_argument("--rounds", type=int, default=1, help="with --log both: load the two gateways in turn this many times")
    parser.add_argument("--rung-only", action="store_true", help="leave out mlflow models serve and the bare endpoint")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    rung = rung_executable()
    bin_dir = Path(rung).parent
    work = Path(tempfile.mkdtemp(prefix="rung-bench-gateway-"))
    logs = ["on", "off"] if args.log == "both" else [args.log]
    runs: dict[str, list[dict[str, float]]] = {}
    logged: list[tuple[int, int, int]] = []  # (answered, records in the log, segments) of the "log on" gateway
    try:
        with console.status("creating and training the churn project"):
            project = trained_project(work, model=args.model)
            if args.workers:
                with (project / "rung.yaml").open("a") as config:
                    config.write(f"\nserve:\n  workers: {args.workers}\n")
        config_text = (project / "rung.yaml").read_text()
        bodies = {
            "mlflow": work / "mlflow.json",
            "oip": work / "oip.json",
        }
        bodies["mlflow"].write_text(json.dumps({"dataframe_records": [ROW]}))
        bodies["oip"].write_text(json.dumps({"inputs": [{"name": k, "shape": [1], "datatype": TYPES.get(k, "BYTES"), "data": [v]} for k, v in ROW.items()]}))

        baselines = {
            "mlflow models serve": (
                [str(bin_dir / "mlflow"), "models", "serve", "-m", "models:/churn/1", "--env-manager", "local", "-h", "127.0.0.1"],
                {"MLFLOW_TRACKING_URI": f"sqlite:///{project}/.rung/mlflow.db", "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                "/ping", "-p",
            ),
            "bare Starlette + predict": ([sys.executable, str(REPO / "bench" / "_bare_app.py"), str(project)], {}, None, None),
        }
        for name, (cmd, env, ready, port_flag) in ({} if args.rung_only else baselines).items():
            port = free_port()
            with console.status(f"{name}: starting"):
                process = start([*cmd, port_flag, str(port)] if port_flag else [*cmd, str(port)], project, env)
                try:
                    wait_ready(f"http://127.0.0.1:{port}{ready}", process) if ready else _wait_port(port, process)
                    with console.status(f"{name}: 8 connections, {args.duration} s"):
                        runs[f"{name} · 8 conn"] = [wrk(f"http://127.0.0.1:{port}/invocations", bodies["mlflow"], 8, args.duration, work)]
                    if name != "mlflow models serve":
                        with console.status(f"{name}: 1,000 connections"):
                            runs[f"{name} · 1000 conn"] = [wrk(f"http://127.0.0.1:{port}/invocations", bodies["mlflow"], 1000,
                                                               args.duration, work)]
                finally:
                    stop(process)

        # rung: with --log both, a gateway with the log and one without run side by side (the idle one costs
        # nothing), and each load goes to one, then the other, in alternating order: background noise on a
        # shared machine then falls on both alike.
        gateways: dict[str, tuple[subprocess.Popen, int]] = {}
        answered = {mode: 0 for mode in logs}
        shutil.rmtree(project / ".rung" / "requests", ignore_errors=True)
        try:
            for mode in logs:
                (project / "rung.yaml").write_text(config_text + (LOG_OFF if mode == "off" else ""))
                port = free_port()
                with console.status(f"rung serve (log {mode}): starting"):
                    process = start([rung, "serve", "--port", str(port)], project)
                    gateways[mode] = (process, port)
                    wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process)
            loads = [("rung serve", "/invocations", "mlflow", 8), ("rung serve (OIP v2)", "/v2/models/churn/infer", "oip", 8),
                     ("rung serve", "/invocations", "mlflow", 1000)]
            rounds = args.rounds if args.log == "both" else 1
            for round_ in range(rounds):
                for name, path, body, connections in loads:
                    for mode in logs if round_ % 2 == 0 else logs[::-1]:
                        label = f"{name}{f' (log {mode})' if args.log == 'both' else ''} · {connections} conn"
                        with console.status(f"round {round_ + 1}/{rounds}: {label}, {args.duration} s"):
                            before = _cpu_s(gateways[mode][0].pid)
                            result = wrk(f"http://127.0.0.1:{gateways[mode][1]}{path}", bodies[body], connections,
                                         args.duration, work)
                            result["cpu_us"] = (_cpu_s(gateways[mode][0].pid) - before) * 1e6 / max(result["requests"], 1)
                        runs.setdefault(label, []).append(result)
                        answered[mode] += int(result["requests"] - result["failed"])
        finally:
            for process, _ in gateways.values():
                stop(process)  # SIGTERM: the gateway writes out its request log before it exits
        if "on" in gateways:
            logged.append((answered["on"], *_logged(project / ".rung" / "requests")))
        (project / "rung.yaml").write_text(config_text)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results = {label: _median(found) for label, found in runs.items()}
    mlflow_rps = results.get("mlflow models serve · 8 conn", {}).get("rps")
    bare8 = results.get("bare Starlette + predict · 8 conn", {}).get("rps")
    bare1000 = results.get("bare Starlette + predict · 1000 conn", {}).get("rps")
    rounds = f", median of {args.rounds} rounds" if args.log == "both" and args.rounds > 1 else ""
    baseline = [] if args.rung_only else ["× mlflow", "× bare"]
    out = table(f"Gateway vs. mlflow models serve vs. bare Starlette (single-row requests, wrk on loopback{rounds})\n"
                f"model: {MODELS[args.model]}",
                ["server · load", "req/s", "p99", "failed", *baseline, "CPU/req", *(["req/s, rounds"] if rounds else [])])
    for label, r in results.items():
        bare = bare1000 if "1000" in label else bare8
        versus = [] if args.rung_only else [f"{r['rps'] / mlflow_rps:.1f}×" if mlflow_rps else "–",
                                            f"{r['rps'] / bare:.2f}×" if bare else "–"]
        found = [one["rps"] for one in runs[label]]
        each = [f"{min(found):,.0f}–{max(found):,.0f}"] if rounds else []
        out.add_row(label, f"{r['rps']:,.0f}", f"{r['p99_ms']:.1f} ms", str(int(r["failed"])), *versus,
                    f"{r['cpu_us']:.0f} µs" if "cpu_us" in r else "–", *each)
    console.print(out)
    for answered, records, segments in logged:
        console.print(f"request log: {records:,} records in {segments:,} segments for {answered:,} answered requests")
    checks: dict[str, bool] = {}
    on = "rung serve (log on)" if args.log == "both" else "rung serve"
    gateway = results.get(f"{on} · 8 conn")
    if gateway and mlflow_rps and bare8:
        checks |= {
            ">= 15x mlflow models serve": gateway["rps"] >= 15 * mlflow_rps,
            ">= 0.7x bare Starlette": gateway["rps"] >= 0.7 * bare8,
        }
    if gateway:
        checks["p99 <= 10 ms at 8 connections"] = gateway["p99_ms"] <= 10
    checks["no failed requests"] = all(r["failed"] == 0 for k, r in results.items() if "1000" not in k)
    if logged:
        checks["every answered request is in the request log"] = all(records >= answered for answered, records, _ in logged)
    if args.log == "both":
        for name in ("rung serve · 8 conn", "rung serve (OIP v2) · 8 conn", "rung serve · 1000 conn"):
            server, load = name.split(" · ")
            on_runs, off_runs = runs[f"{server} (log on) · {load}"], runs[f"{server} (log off) · {load}"]
            # each round loaded the two gateways back to back: compare them pairwise, then take the median
            cost = statistics.median(1 - a["rps"] / b["rps"] for a, b in zip(on_runs, off_runs))
            on_p99, off_p99 = results[f"{server} (log on) · {load}"]["p99_ms"], results[f"{server} (log off) · {load}"]["p99_ms"]
            cpu = statistics.median(a["cpu_us"] / b["cpu_us"] - 1 for a, b in zip(on_runs, off_runs))
            console.print(f"request log cost, {name}: {cost:+.1%} of req/s (median of {len(on_runs)} pairs), "
                          f"{cpu:+.1%} CPU per request (gateway and its workers); p99 {on_p99:.1f} vs {off_p99:.1f} ms")
            checks[f"request log costs <= 10% of req/s, {name}"] = cost <= 0.10
    for name, ok in checks.items():
        console.print(f"{'[green]pass[/]' if ok else '[red]FAIL[/]'}  {name}")
    if args.check and not all(checks.values()):
        sys.exit(1)


def _median(found: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in found) for key in found[0]}


def _cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process and everything it started (the gateway, its model workers)."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _logged(root: Path) -> tuple[int, int]:
    """Records and segments in a request-log directory."""
    import pyarrow.parquet as pq

    files = list(root.rglob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files), len(files)


def _wait_port(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(0.5)
                return
        time.sleep(0.3)
    raise SystemExit(f"nothing listens on {port} after {timeout} s")


if __name__ == "__main__":
    main()
