"""Routing changes under steady load: failed requests and how fast each change takes effect.

A steady 200 requests/s (open loop: a request every 5 ms, whatever the
answers do) goes to `rung serve` while the routing table of the model is
changed 20 times through the control API: shift all traffic between two
versions, split 50/50, add and remove a version. For every change the
script measures when it took effect: the first request after which every
answer comes from the versions the new table names.

    .venv/bin/python bench/routing_changes.py [--rate 200] [--changes 20] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _common import console, rung_executable, table, trained_project
from gateway import ROW, free_port, start, stop, wait_ready

TABLES = [
    ({"variants": [{"name": "canary", "version": 2, "weight": 1}]}, {2}),
    ({"variants": [{"name": "champion", "version": 1, "weight": 1}]}, {1}),
    ({"variants": [{"name": "b", "version": 2, "weight": 1}, {"name": "a", "version": 1, "weight": 1}]}, {1, 2}),
    ({"variants": [{"name": "champion", "version": 1, "weight": 1}], "shadows": [{"name": "shadow", "version": 2}]}, {1}),
]


async def run(url: str, token: str, rate: float, changes: int) -> tuple[list[tuple[float, int]], list[float], list[set[int]], int]:
    answers: list[tuple[float, int]] = []
    failures = 0
    interval = 1 / rate
    change_times: list[float] = []
    expected: list[set[int]] = []
    body = {"dataframe_records": [ROW]}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:

        async def one(sent: float) -> None:
            nonlocal failures
            try:
                response = await client.post("/invocations", json=body)
                if response.status_code == 200:
                    answers.append((sent, int(response.headers["x-rung-model-version"])))
                else:
                    failures += 1
            except httpx.HTTPError:
                failures += 1

        async def load(until: float) -> None:
            tasks = []
            next_at = time.perf_counter()
            while next_at < until:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                tasks.append(asyncio.create_task(one(time.perf_counter())))
                next_at += interval
            await asyncio.gather(*tasks)

        async def change() -> None:
            headers = {"authorization": f"Bearer {token}"}
            # Both versions loaded before the load starts (weight 0 loads a version without traffic):
            # what is measured is routing, not the first load of a model from the registry.
            warm = {"variants": [{"name": "champion", "version": 1, "weight": 1}, {"name": "warm", "version": 2, "weight": 0}]}
            (await client.put("/api/routes/churn", json=warm, headers=headers)).raise_for_status()
            await asyncio.sleep(1.0)
            for i in range(changes):
                body_i, versions = TABLES[i % len(TABLES)]
                response = await client.put("/api/routes/churn", json=body_i | {"reason": f"bench change {i + 1}"}, headers=headers)
                response.raise_for_status()
                change_times.append(time.perf_counter())
                expected.append(versions)
                await asyncio.sleep(1.5)

        until = time.perf_counter() + 1.0 + changes * 1.5 + 1.0
        await asyncio.gather(load(until), change())
    return answers, change_times, expected, failures


def effect_delays(answers: list[tuple[float, int]], change_times: list[float], expected: list[set[int]]) -> list[float]:
    """Per change: from the change to the first request after which all answers are in the new set."""
    delays = []
    answers = sorted(answers)
    for i, (at, versions) in enumerate(zip(change_times, expected)):
        end = change_times[i + 1] if i + 1 < len(change_times) else float("inf")
        window = [(sent, v) for sent, v in answers if at <= sent < end]
        last_wrong = max((sent for sent, v in window if v not in versions), default=at)
        delays.append(last_wrong - at)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    rung = rung_executable()
    work = Path(tempfile.mkdtemp(prefix="rung-bench-routing-"))
    try:
        with console.status("creating the churn project and two model versions"):
            project = trained_project(work, versions=2)
            made = subprocess.run([rung, "token", "create", "--role", "deployer", "--json"], cwd=project, check=True,
                                  capture_output=True, text=True)
            token = json.loads(made.stdout)["token"]
        port = free_port()
        process = start([rung, "serve", "--port", str(port)], project)
        try:
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process)
            with console.status(f"{args.rate:.0f} requests/s with {args.changes} routing changes"):
                answers, change_times, expected, failures = asyncio.run(
                    run(f"http://127.0.0.1:{port}", token, args.rate, args.changes)
                )
        finally:
            stop(process)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    delays = effect_delays(answers, change_times, expected)
    out = table("Routing changes under steady load", ["measure", "value"])
    out.add_row("requests answered", f"{len(answers):,}")
    out.add_row("failed requests", str(failures))
    out.add_row("routing changes", str(len(change_times)))
    out.add_row("time to take effect, median", f"{sorted(delays)[len(delays) // 2] * 1000:.0f} ms")
    out.add_row("time to take effect, max", f"{max(delays) * 1000:.0f} ms")
    out.add_row("per change", " ".join(f"{d * 1000:.0f}" for d in delays) + " ms")
    console.print(out)
    ok = failures == 0 and max(delays) <= 1.0
    console.print(f"{'[green]pass[/]' if ok else '[red]FAIL[/]'}  0 failed requests and every change within 1 s")
    if args.check and not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
