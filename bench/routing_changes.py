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
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import console, rung_executable, table, trained_project
from gateway import ROW, free_port, start, stop, wait_ready

TABLES = [
    {"variants": [{"name": "canary", "version": 2, "weight": 1}]},
    {"variants": [{"name": "champion", "version": 1, "weight": 1}]},
    {"variants": [{"name": "b", "version": 2, "weight": 1}, {"name": "a", "version": 1, "weight": 1}]},
    {"variants": [{"name": "champion", "version": 1, "weight": 1}], "shadows": [{"name": "shadow", "version": 2}]},
]


class Client:
    """A lean open-loop HTTP/1.1 client: pre-encoded requests over a pool of keep-alive connections.

    httpx costs about a millisecond of CPU per request; on two cores shared
    with the gateway that skews the very timing being measured, so the load
    comes from raw asyncio streams instead.
    """

    def __init__(self, port: int, connections: int) -> None:
        self.port = port
        self.pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.connections = connections

    async def open(self) -> None:
        for _ in range(self.connections):
            self.pool.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))

    async def close(self) -> None:
        while not self.pool.empty():
            self.pool.get_nowait()[1].close()

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await self.pool.get()
        try:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException:
            writer.close()
            self.pool.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))
            raise
        self.pool.put_nowait((reader, writer))
        return status, headers, body


def http_request(method: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", "content-type: application/json", f"content-length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def run(port: int, token: str, rate: float, changes: int) -> tuple[list[tuple[float, int]], list[tuple[float, int]], int]:
    """Answers as (sent, routing revision); changes as (committed, revision); failed requests."""
    answers: list[tuple[float, int]] = []
    committed: list[tuple[float, int]] = []
    failures = 0
    interval = 1 / rate
    predict = http_request("POST", "/invocations", json.dumps({"dataframe_records": [ROW]}).encode())
    auth = {"authorization": f"Bearer {token}"}
    client = Client(port, connections=64)
    control = Client(port, connections=1)
    await client.open()
    await control.open()

    async def one(sent: float) -> None:
        nonlocal failures
        try:
            status, headers, _ = await client.request(predict)
            if status == 200:
                answers.append((sent, int(headers["x-rung-routing-revision"])))
            else:
                failures += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            failures += 1

    async def load(until: float) -> None:
        tasks = []
        next_at = time.perf_counter()
        while next_at < until:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            tasks.append(asyncio.create_task(one(time.perf_counter())))
            next_at += interval
        await asyncio.gather(*tasks)

    async def put(table: dict) -> int:
        status, _, body = await control.request(http_request("PUT", "/api/routes/churn", json.dumps(table).encode(), auth))
        if status != 200:
            raise SystemExit(f"routing change refused ({status}): {body.decode()}")
        return int(json.loads(body)["revision"])

    async def change() -> None:
        # Both versions loaded before the load starts (weight 0 loads a version without traffic):
        # what is measured is routing, not the first load of a model from the registry.
        await put({"variants": [{"name": "champion", "version": 1, "weight": 1}, {"name": "warm", "version": 2, "weight": 0}]})
        await asyncio.sleep(1.0)
        for i in range(changes):
            revision = await put(TABLES[i % len(TABLES)] | {"reason": f"bench change {i + 1}"})
            committed.append((time.perf_counter(), revision))
            await asyncio.sleep(1.5)

    until = time.perf_counter() + 1.0 + changes * 1.5 + 1.0
    try:
        await asyncio.gather(load(until), change())
    finally:
        await client.close()
        await control.close()
    return answers, committed, failures


def effect_delays(answers: list[tuple[float, int]], committed: list[tuple[float, int]]) -> list[float]:
    """Per change: from its commit to the last request sent after it that still got an older table."""
    delays = []
    for at, revision in committed:
        stale = [sent for sent, seen in answers if sent >= at and seen < revision]
        delays.append(max(stale, default=at) - at)
    return delays


def swap_lags(port: int) -> list[float]:
    """The gateway's own measure: ``rung_routing_swap_lag_seconds`` sum and count."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for name in ("sum", "count"):
        found = re.search(rf'^rung_routing_swap_lag_seconds_{name}{{model="churn"}} ([\d.e+-]+)$', text, re.M)
        values[name] = float(found.group(1)) if found else 0.0
    return [values["sum"], values["count"]]


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
                answers, committed, failures = asyncio.run(run(port, token, args.rate, args.changes))
            lag_sum, lag_count = swap_lags(port)
        finally:
            stop(process)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    delays = effect_delays(answers, committed)
    out = table("Routing changes under steady load", ["measure", "value"])
    out.add_row("requests answered", f"{len(answers):,}")
    out.add_row("failed requests", str(failures))
    out.add_row("routing changes", str(len(committed)))
    out.add_row("time to take effect, median", f"{sorted(delays)[len(delays) // 2] * 1000:.0f} ms")
    out.add_row("time to take effect, max", f"{max(delays) * 1000:.0f} ms")
    out.add_row("per change", " ".join(f"{d * 1000:.0f}" for d in delays) + " ms")
    out.add_row("gateway's swap lag, mean", f"{lag_sum / max(lag_count, 1) * 1000:.0f} ms over {lag_count:.0f} swaps")
    console.print(out)
    ok = failures == 0 and max(delays) <= 1.0
    console.print(f"{'[green]pass[/]' if ok else '[red]FAIL[/]'}  0 failed requests and every change within 1 s")
    if args.check and not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
