"""Per-window monitoring cost grows with the window, not with the total log.

Creates a churn project, trains v1, then writes a request log of
``--days`` days x ``--rows-per-day`` rows (default 100 x 100,000 = 10M rows,
7 features each) through rung's own writer, and times the check of one
closed one-hour window (reading it from the log, drift against the training
data, the domain classifier, quality, estimated performance, ops) after
the first day and after the last day. Both windows have the same number of rows,
so their times should match whatever the size of the log behind them.

    .venv/bin/python bench/monitor_window.py [--days 100] [--rows-per-day 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from _common import console, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np

    from rung.clock import ManualClock
    from rung.demo.scenario import FEATURES, Scenario
    from rung.monitor.requestlog import RequestLog, log_root
    from rung.monitor.windows import Monitor
    from rung.project import Project
    from rung.templates import create_project

    with tempfile.TemporaryDirectory(prefix="rung-bench-monitor-") as tmp:
        root = create_project("churn", "tabular-classification", Path(tmp) / "churn", git=False)
        project = Project.open(root)
        project.run(trigger="bench")
        clock = ManualClock()
        log = RequestLog(log_root(project), clock=clock, segment_rows=250_000)
        scenario = Scenario()
        per_hour = args.rows_per_day // 24
        hour = scenario.days(0, 1 + per_hour // scenario.per_day)  # one hour of customers, replayed every hour
        hour = hour.iloc[:per_hour]
        columns = {name: hour[name].tolist() for name in FEATURES}
        rng = np.random.default_rng(0)
        written = time.perf_counter()
        timings: list[tuple[str, int, float]] = []
        monitor = Monitor(project, clock)
        for day in range(args.days):
            for h in range(24):
                scores = rng.random(per_hour).tolist()
                log.record(f"bench-{day}-{h}", "churn", 1, "champion", status=200, latency_s=0.003, rows=per_hour,
                           predictions=[int(s > 0.5) for s in scores], scores=scores, features=columns)
                clock.advance(3600)
            log.flush()
            if day in (0, args.days - 1):
                end = clock.now()
                start = end - timedelta(hours=1)
                monitor.check_window("churn", start, end)  # warm: the reference is loaded once per version
                samples = []
                for _ in range(args.repeats):
                    began = time.perf_counter()
                    [window] = monitor.check_window("churn", start, end)
                    samples.append(time.perf_counter() - began)
                timings.append((f"after day {day + 1}", (day + 1) * per_hour * 24, min(samples)))
                assert window.rows == per_hour
        console.print(f"wrote {args.days * 24 * per_hour:,} records in {time.perf_counter() - written:.0f} s")
        out = table("Checking one closed 1-hour window", ["log size", "rows in the log", "rows in the window", "check (s)"])
        for label, rows, seconds in timings:
            out.add_row(label, f"{rows:,}", f"{per_hour:,}", f"{seconds:.2f}")
        console.print(out)
        ratio = timings[-1][2] / timings[0][2]
        console.print(f"last / first = {ratio:.2f} (1.0: the cost does not grow with the log)")
        project.close()


if __name__ == "__main__":
    main()
