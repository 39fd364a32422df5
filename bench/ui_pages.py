"""Dashboard pages with real volumes: 10M logged predictions of 50 features (target: the monitoring page < 1 s).

Creates a project, writes ``--days`` x 24 hours of request log through rung's
own writer (default 100 days x 100,000 rows = 10M records, 50 features
each) and one stored monitoring window per hour (2,400 windows, each with a
drift report of the 50 features, as the scheduler stores them), then
starts `rung ui` as a user would and times each page over HTTP (median of
``--repeats`` loads after one warm-up).

    .venv/bin/python bench/ui_pages.py [--days 100] [--rows-per-day 100000] [--features 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import console, rung_executable, table, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import httpx
    import numpy as np

    from rung.clock import ManualClock
    from rung.monitor.requestlog import RequestLog, log_root
    from rung.project import Project
    from rung.store.records import MonitorWindow
    from rung.templates import create_project

    with tempfile.TemporaryDirectory(prefix="rung-bench-ui-") as tmp:
        root = create_project("churn", "tabular-classification", Path(tmp) / "churn", git=False)
        project = Project.open(root)
        clock = ManualClock()
        log = RequestLog(log_root(project), clock=clock, segment_rows=250_000)
        rng = np.random.default_rng(0)
        per_hour = args.rows_per_day // 24
        names = [f"x{i:02d}" for i in range(args.features)]
        columns = {n: rng.normal(size=per_hour).round(3).tolist() for n in names}
        scores = rng.random(per_hour).tolist()
        predictions = [int(s > 0.5) for s in scores]
        written = time.perf_counter()
        windows = 0
        with console.status("writing the request log and the windows…"):
            for day in range(args.days):
                for _ in range(24):
                    start = clock.now()
                    log.record(f"bench-{windows}", "churn", 1, "champion", status=200, latency_s=0.003, rows=per_hour,
                               predictions=predictions, scores=scores, features=columns)
                    clock.advance(3600)
                    stats = rng.random(args.features) * 0.15
                    features = [{"name": n, "kind": "numeric", "method": "wasserstein", "statistic": float(s),
                                 "threshold": 0.1, "p_value": None, "drifted": bool(s > 0.1), "missing_current": 0.0}
                                for n, s in zip(names, stats)]
                    metrics = {f"drift.feature.{n}": float(s) for n, s in zip(names, stats)} | {
                        "drift.share": float((stats > 0.1).mean()), "ops.p99_ms": 9.0, "ops.error_rate": 0.0,
                        "ops.throughput_rps": per_hour / 3600, "ops.requests": per_hour, "estimated.accuracy": 0.8,
                        "performance.accuracy": 0.8 + rng.normal() * 0.01}
                    report = {"drift": {"features": features, "drift_share": metrics["drift.share"]},
                              "performance": {"accuracy": {"value": metrics["performance.accuracy"],
                                                           "low": 0.78, "high": 0.82}}}
                    project.store.save_window(MonitorWindow("churn", 1, start, clock.now(), per_hour, metrics, report))
                    windows += 1
                log.flush()

        records = args.days * 24 * per_hour
        console.print(f"wrote {records:,} records ({args.features} features) and {windows:,} windows in "
                      f"{time.perf_counter() - written:.0f} s")
        port = 18700 + os.getpid() % 500
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNG_")}
        server = subprocess.Popen([rung_executable(), "ui", "--port", str(port)], cwd=root, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/api/state", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            out = table(f"Dashboard pages: {records:,} logged predictions, {args.features} features, {windows:,} windows",
                        ["page", "median load", "min", "max", "size", "target"])
            for path, target in (("/models/churn/monitoring", 1.0), ("/", 1.0), ("/timeline", 1.0)):
                httpx.get(url + path, timeout=60)  # warm-up: imports, first query
                samples = []
                for _ in range(args.repeats):
                    began = time.perf_counter()
                    answer = httpx.get(url + path, timeout=60)
                    samples.append(time.perf_counter() - began)
                    assert answer.status_code == 200, answer.text[:300]
                out.add_row(path, f"{statistics.median(samples):.3f} s", f"{min(samples):.3f} s", f"{max(samples):.3f} s",
                            f"{len(answer.content) / 1024:.0f} KB", verdict(statistics.median(samples), target))
            console.print(out)
        finally:
            server.terminate()
            server.wait(timeout=30)
            project.close()


if __name__ == "__main__":
    main()
