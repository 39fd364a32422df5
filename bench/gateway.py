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

    .venv/bin/python bench/gateway.py [--duration 10] [--model linear|boosted] [--check]

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
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale, "failed": failed}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--model", choices=sorted(MODELS), default="linear",
                        help="linear: a light scikit-learn classifier (default); boosted: the template's trees")
    parser.add_argument("--workers", type=int, default=None, help="serve.workers for rung (worker processes per version)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    rung = rung_executable()
    bin_dir = Path(rung).parent
    work = Path(tempfile.mkdtemp(prefix="rung-bench-gateway-"))
    try:
        with console.status("creating and training the churn project"):
            project = trained_project(work, model=args.model)
            if args.workers:
                with (project / "rung.yaml").open("a") as config:
                    config.write(f"\nserve:\n  workers: {args.workers}\n")
        bodies = {
            "mlflow": work / "mlflow.json",
            "oip": work / "oip.json",
        }
        bodies["mlflow"].write_text(json.dumps({"dataframe_records": [ROW]}))
        bodies["oip"].write_text(json.dumps({"inputs": [{"name": k, "shape": [1], "datatype": TYPES.get(k, "BYTES"), "data": [v]} for k, v in ROW.items()]}))

        results: dict[str, dict[str, float]] = {}
        servers = {
            "mlflow models serve": (
                [str(bin_dir / "mlflow"), "models", "serve", "-m", "models:/churn/1", "--env-manager", "local", "-h", "127.0.0.1"],
                {"MLFLOW_TRACKING_URI": f"sqlite:///{project}/.rung/mlflow.db", "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                "/invocations", "/ping", "-p",
            ),
            "bare Starlette + predict": (
                [sys.executable, str(REPO / "bench" / "_bare_app.py"), str(project)], {}, "/invocations", None, None,
            ),
            "rung serve": ([rung, "serve"], {}, "/invocations", "/v2/health/ready", "--port"),
        }
        for name, (cmd, env, path, ready, port_flag) in servers.items():
            port = free_port()
            full = [*cmd, port_flag, str(port)] if port_flag else [*cmd, str(port)]
            with console.status(f"{name}: starting"):
                process = start(full, project, env)
                try:
                    wait_ready(f"http://127.0.0.1:{port}{ready or '/'}", process) if ready else _wait_port(port, process)
                    with console.status(f"{name}: 8 connections, {args.duration} s"):
                        results[f"{name} · 8 conn"] = wrk(f"http://127.0.0.1:{port}{path}", bodies["mlflow"], 8, args.duration, work)
                    if name == "rung serve":
                        results["rung serve (OIP v2) · 8 conn"] = wrk(f"http://127.0.0.1:{port}/v2/models/churn/infer", bodies["oip"], 8, args.duration, work)
                    if name != "mlflow models serve":
                        with console.status(f"{name}: 1,000 connections"):
                            results[f"{name} · 1000 conn"] = wrk(f"http://127.0.0.1:{port}{path}", bodies["mlflow"], 1000, args.duration, work)
                finally:
                    stop(process)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mlflow_rps = results["mlflow models serve · 8 conn"]["rps"]
    bare8 = results["bare Starlette + predict · 8 conn"]["rps"]
    bare1000 = results["bare Starlette + predict · 1000 conn"]["rps"]
    out = table(f"Gateway vs. mlflow models serve vs. bare Starlette (single-row requests, wrk on loopback)\n"
                f"model: {MODELS[args.model]}", ["server · load", "req/s", "p99", "failed", "× mlflow", "× bare"])
    for label, r in results.items():
        bare = bare1000 if "1000" in label else bare8
        out.add_row(label, f"{r['rps']:,.0f}", f"{r['p99_ms']:.1f} ms", str(int(r["failed"])),
                    f"{r['rps'] / mlflow_rps:.1f}×", f"{r['rps'] / bare:.2f}×")
    console.print(out)
    gateway = results["rung serve · 8 conn"]
    checks = {
        ">= 15x mlflow models serve": gateway["rps"] >= 15 * mlflow_rps,
        ">= 0.7x bare Starlette": gateway["rps"] >= 0.7 * bare8,
        "p99 <= 10 ms at 8 connections": gateway["p99_ms"] <= 10,
        "no failed requests": all(r["failed"] == 0 for k, r in results.items() if "1000" not in k),
    }
    for name, ok in checks.items():
        console.print(f"{'[green]pass[/]' if ok else '[red]FAIL[/]'}  {name}")
    if args.check and not all(checks.values()):
        sys.exit(1)


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
