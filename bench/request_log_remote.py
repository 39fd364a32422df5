"""The request log on an object store: what it costs the gateway, and what a monitoring window costs to read.

Starts moto's S3-compatible server on loopback (``moto_server``, in rung's
dev extras) and a trained churn project (a logistic regression behind the
template's encoding), then:

(a) **gateway throughput at 8 connections** (wrk, single-row MLflow
    requests): three ``rung serve`` side by side, the request log off, on a
    folder, and on the S3 server (``RUNG_REQUEST_LOG_URI=s3://...``), loaded
    in turn, in alternating order for ``--rounds`` rounds; the cost is the
    median of the pairwise drops against "off". The S3 server shares the
    machine's cores with the gateway and wrk, so its own work is in the
    figure too. Every answered request must be in the log afterwards.
(b) **one closed 1-hour monitoring window** (``Monitor.check_window``: read,
    drift with the domain classifier, quality, estimates, ops) over a log of
    ``--days`` x ``--rows-per-day`` rows written by rung's writer, once as
    three replicas' prefixes on the S3 server and once as one writer in a
    folder; the fastest of ``--repeats``, and the read alone
    (``RequestLogReader.window``) beside it.

    .venv/bin/python bench/request_log_remote.py [--duration 10] [--rounds 2] [--days 20] [--rows-per-day 100000]

Needs ``wrk`` (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from _common import console, rung_executable, table, trained_project
from gateway import LOG_OFF, ROW, _cpu_s, free_port, start, stop, wait_ready, wrk

KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """moto's server on a free port; the environment a process needs to reach it."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        raise SystemExit("moto_server is not installed: pip install 'moto[server]' (rung's dev extras)")
    port = free_port()
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/moto-api/", process, timeout=60)
        yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", **KEYS}
    finally:
        stop(process)


def make_bucket(env: dict[str, str], name: str) -> str:
    import pyarrow.fs as pafs

    pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"].removeprefix("http://"), scheme="http",
                      access_key=KEYS["AWS_ACCESS_KEY_ID"], secret_key=KEYS["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                      allow_bucket_creation=True).create_dir(name)
    return f"s3://{name}"


def gateway_cost(project: Path, env: dict[str, str], duration: int, rounds: int, work: Path) -> None:
    """(a): req/s and p99 at 8 connections with the log off, on a folder, on S3."""
    from rung.monitor.logreader import RequestLogReader

    rung = rung_executable()
    body = work / "mlflow.json"
    body.write_text(json.dumps({"dataframe_records": [ROW]}))
    config_text = (project / "rung.yaml").read_text()
    s3_uri = make_bucket(env, "gateway-log") + "/requests"
    folder = project / ".rung" / "requests"
    shutil.rmtree(folder, ignore_errors=True)
    modes = {"off": ({}, LOG_OFF), "folder": ({}, ""), "s3": ({**env, "RUNG_REQUEST_LOG_URI": s3_uri}, "")}
    gateways: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    answered = dict.fromkeys(modes, 0)
    try:
        for mode, (extra, yaml) in modes.items():
            (project / "rung.yaml").write_text(config_text + yaml)
            port = free_port()
            with console.status(f"rung serve (log {mode}): starting"):
                process = start([rung, "serve", "--port", str(port)], project,
                                {"RUNG_GRPC_PORT": "0", "RUNG_REPLICA": f"bench-{mode}", **extra})
                gateways[mode] = (process, port)
                wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process)
        order = list(modes)
        for round_ in range(rounds):
            for mode in order if round_ % 2 == 0 else order[::-1]:
                process, port = gateways[mode]
                with console.status(f"round {round_ + 1}/{rounds}: log {mode}, 8 connections, {duration} s"):
                    before = _cpu_s(process.pid)
                    result = wrk(f"http://127.0.0.1:{port}/invocations", body, 8, duration, work)
                    result["cpu_us"] = (_cpu_s(process.pid) - before) * 1e6 / max(result["requests"], 1)
                runs[mode].append(result)
                answered[mode] += int(result["requests"] - result["failed"])
    finally:
        for process, _ in gateways.values():
            stop(process)  # SIGTERM: each gateway writes out its request log before it exits
        (project / "rung.yaml").write_text(config_text)
    logged = {"folder": len(RequestLogReader(folder).window("churn", *_EVER(), columns=[])),
              "s3": len(RequestLogReader(s3_uri).window("churn", *_EVER(), columns=[]))}
    out = table(f"(a) Gateway at 8 connections, request log off / folder / S3 server (wrk, {duration} s, {rounds} rounds)",
                ["request log", "req/s (median)", "p99", "CPU/req", "cost vs off", "failed", "answered", "in the log"])
    off = runs["off"]
    for mode, found in runs.items():
        cost = statistics.median(1 - a["rps"] / b["rps"] for a, b in zip(found, off, strict=True))
        out.add_row(mode, f"{statistics.median(r['rps'] for r in found):,.0f}",
                    f"{statistics.median(r['p99_ms'] for r in found):.1f} ms",
                    f"{statistics.median(r['cpu_us'] for r in found):.0f} µs",
                    "–" if mode == "off" else f"{cost:+.1%}", str(int(sum(r["failed"] for r in found))),
                    f"{answered[mode]:,}", f"{logged[mode]:,}" if mode in logged else "–")
    console.print(out)
    for mode in ("folder", "s3"):
        if logged[mode] < answered[mode]:
            console.print(f"[red]log {mode}: {answered[mode] - logged[mode]:,} answered requests are not in the log[/]")


def _EVER() -> tuple[object, object]:  # noqa: N802
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def window_cost(project_root: Path, env: dict[str, str], days: int, rows_per_day: int, repeats: int) -> None:
    """(b): a 1-hour window over days x rows_per_day rows, three replicas on S3 against one folder."""
    import numpy as np

    from rung.clock import ManualClock
    from rung.demo.scenario import FEATURES, Scenario
    from rung.monitor.logreader import RequestLogReader
    from rung.monitor.requestlog import RequestLog
    from rung.monitor.windows import Monitor
    from rung.objectstore import open_location
    from rung.project import Project

    s3_uri = make_bucket(env, "window-log") + "/requests"
    folder = Path(tempfile.mkdtemp(prefix="rung-bench-window-"))
    per_hour = rows_per_day // 24
    scenario = Scenario()
    hour = scenario.days(0, 1 + per_hour // scenario.per_day).iloc[:per_hour]
    columns = {name: hour[name].tolist() for name in FEATURES}
    thirds = [{name: values[i::3] for name, values in columns.items()} for i in range(3)]
    clock = ManualClock()
    single = RequestLog(folder, clock=clock, replica="one", segment_rows=250_000, capacity=10**7)
    s3 = open_location(s3_uri)
    replicas = [RequestLog(s3, clock=clock, replica=f"replica-{i}", segment_rows=250_000, capacity=10**7) for i in range(3)]
    rng = np.random.default_rng(0)
    began = time.perf_counter()
    with console.status(f"writing {days * 24 * per_hour:,} rows to a folder and as 3 replicas to the S3 server"):
        for day in range(days):
            for h in range(24):
                scores = rng.random(per_hour)
                single.record(f"bench-{day}-{h}", "churn", 1, "champion", status=200, latency_s=0.003, rows=per_hour,
                              predictions=(scores > 0.5).astype(int), scores=scores,
                              features=columns)
                for i, (log, part) in enumerate(zip(replicas, thirds, strict=True)):
                    share = scores[i::3]
                    log.record(f"bench-{day}-{h}-{i}", "churn", 1, "champion", status=200, latency_s=0.003,
                               rows=len(share), predictions=(share > 0.5).astype(int), scores=share, features=part)
                clock.advance(3600)
            single.flush()
            for log in replicas:
                log.flush()
    console.print(f"wrote {days * 24 * per_hour:,} rows twice in {time.perf_counter() - began:.0f} s")
    end = clock.now()
    start = end - timedelta(hours=1)
    results = []
    try:
        for label, uri in (("one folder, 1 writer", str(folder)), ("S3 server, 3 replicas", s3_uri)):
            project = Project.open(project_root, overrides={"monitor.request_log.uri": uri})
            monitor = Monitor(project, clock)
            [window] = monitor.check_window("churn", start, end)  # warm: the reference is loaded once per version
            assert window.rows == per_hour, (label, window.rows)
            checks, reads = [], []
            for _ in range(repeats):
                began = time.perf_counter()
                monitor.check_window("churn", start, end)
                checks.append(time.perf_counter() - began)
                began = time.perf_counter()
                frame = RequestLogReader(uri).window("churn", start, end, shadow=False)
                reads.append(time.perf_counter() - began)
            replicas_seen = ", ".join(f"{r['replica']} {r['rows']:,}" for r in window.report["replicas"])
            results.append((label, len(frame), min(reads), min(checks), replicas_seen))
            project.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = table(f"(b) One closed 1-hour window over a {days * 24 * per_hour:,}-row log (fastest of {repeats})",
                ["log", "rows in the window", "read (s)", "check (s)", "replicas (rows)"])
    for label, rows, read, check, seen in results:
        out.add_row(label, f"{rows:,}", f"{read:.3f}", f"{check:.3f}", seen)
    console.print(out)
    console.print(f"S3 / folder: read {results[1][2] / results[0][2]:.2f}x, check {results[1][3] / results[0][3]:.2f}x "
                  "(target: check <= 2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["gateway", "window"], default=None)
    args = parser.parse_args()
    if args.only != "window" and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="rung-bench-remote-log-"))
    try:
        with console.status("creating and training the churn project"):
            project = trained_project(work, model="linear")
        with s3_server() as env:
            os.environ.update(env)  # this process reads (and writes) the S3 server too
            if args.only != "window":
                gateway_cost(project, env, args.duration, args.rounds, work)
            if args.only != "gateway":
                window_cost(project, env, args.days, args.rows_per_day, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
