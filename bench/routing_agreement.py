"""Routing agreement across gateway replicas: how long after a change's commit every replica applies it.

Three `rung serve` replicas share one metadata store (a fresh PostgreSQL
database by default, where each replica hears changes through LISTEN/NOTIFY;
`--store sqlite` for the revision poll). An open-loop load of 200 requests/s
in all (a third to each replica, whatever the answers do) runs while the
routing table of the model is changed 20 times through the replicas' control
APIs in turn, both versions loaded beforehand. For every change and replica
the script measures when it took effect there: the last request sent after
the commit that still got an older revision. It prints the max and the
median over all (change, replica) pairs, the failed requests, the replicas'
own swap lag (`rung_routing_swap_lag_seconds`), and the load average.

    .venv/bin/python bench/routing_agreement.py [--rate 200] [--changes 20] [--replicas 3] [--store postgresql|sqlite] [--check]

PostgreSQL: RUNG_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres)
is where the script creates, then drops, its database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from _common import console, rung_executable, table, trained_project
from gateway import ROW, free_port, start, stop, wait_ready
from routing_changes import TABLES, Client, effect_delays, http_request

ADMIN_URL = os.environ.get("RUNG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def run(ports: list[int], token: str, rate: float, changes: int
              ) -> tuple[dict[int, list[tuple[float, int]]], list[tuple[float, int]], int]:
    """Answers per replica as (sent, routing revision); changes as (time just before the write, revision); failures."""
    answers: dict[int, list[tuple[float, int]]] = {p: [] for p in ports}
    committed: list[tuple[float, int]] = []
    failures = 0
    interval = len(ports) / rate
    predict = http_request("POST", "/invocations", json.dumps({"dataframe_records": [ROW]}).encode())
    auth = {"authorization": f"Bearer {token}"}
    clients = {p: Client(p, connections=16) for p in ports}
    controls = {p: Client(p, connections=1) for p in ports}
    for client in [*clients.values(), *controls.values()]:
        await client.open()

    async def one(port: int, sent: float) -> None:
        nonlocal failures
        try:
            status, headers, _ = await clients[port].request(predict)
            if status == 200:
                answers[port].append((sent, int(headers["x-rung-routing-revision"])))
            else:
                failures += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            failures += 1

    async def load(port: int, offset: float, until: float) -> None:
        tasks = []
        next_at = time.perf_counter() + offset
        while next_at < until:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            tasks.append(asyncio.create_task(one(port, time.perf_counter())))
            next_at += interval
        await asyncio.gather(*tasks)

    async def put(port: int, body: dict) -> int:
        status, _, raw = await controls[port].request(http_request("PUT", "/api/routes/churn", json.dumps(body).encode(), auth))
        if status != 200:
            raise SystemExit(f"routing change refused ({status}): {raw.decode()}")
        return int(json.loads(raw)["revision"])

    async def change() -> None:
        await asyncio.sleep(1.0)
        for i in range(changes):
            before = time.perf_counter()
            revision = await put(ports[i % len(ports)], TABLES[i % len(TABLES)] | {"reason": f"bench change {i + 1}"})
            committed.append((before, revision))
            await asyncio.sleep(1.5)

    until = time.perf_counter() + 1.0 + changes * 1.5 + 1.0
    try:
        await asyncio.gather(*(load(p, i * interval / len(ports), until) for i, p in enumerate(ports)), change())
    finally:
        for client in [*clients.values(), *controls.values()]:
            await client.close()
    return answers, committed, failures


def swap_lag(port: int) -> tuple[float, float]:
    """The replica's own measure: ``rung_routing_swap_lag_seconds`` sum and count."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = []
    for name in ("sum", "count"):
        found = re.search(rf'^rung_routing_swap_lag_seconds_{name}{{model="churn"}} ([\d.e+-]+)$', text, re.M)
        values.append(float(found.group(1)) if found else 0.0)
    return values[0], values[1]


def listening(port: int) -> bool:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return re.search(r"^rung_routing_listening 1\.0$", text, re.M) is not None


def create_database() -> str:
    import sqlalchemy as sa

    name = f"rung_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{sa.make_url(url).database}" WITH (FORCE)')
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200, help="requests/s over all replicas")
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--store", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    rung = rung_executable()
    for name in ("RUNG_DATABASE_URL", "RUNG_REPLICA", "RUNG_GRPC_PORT"):
        os.environ.pop(name, None)
    os.environ["RUNG_GRPC_PORT"] = "0"
    load_before = loadavg()
    work = Path(tempfile.mkdtemp(prefix="rung-bench-agreement-"))
    database = create_database() if args.store == "postgresql" else None
    if database:
        os.environ["RUNG_DATABASE_URL"] = database
    processes: list[subprocess.Popen] = []
    try:
        with console.status("creating the churn project and two model versions"):
            project = trained_project(work, versions=2, model="linear")
            made = subprocess.run([rung, "token", "create", "--role", "deployer", "--json"], cwd=project, check=True,
                                  capture_output=True, text=True)
            token = json.loads(made.stdout)["token"]
            warm = {"variants": [{"name": "champion", "version": 1, "weight": 1}, {"name": "warm", "version": 2, "weight": 0}]}
        ports = [free_port() for _ in range(args.replicas)]
        with console.status(f"starting {args.replicas} replicas"):
            for i, port in enumerate(ports):
                processes.append(start([rung, "serve", "--port", str(port)], project, env={"RUNG_REPLICA": f"bench-{i}"}))
            for port, process in zip(ports, processes, strict=True):
                wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process)
            # Both versions loaded everywhere first (weight 0 loads one without traffic): what is measured is
            # routing, not the first load of a version.
            body = json.dumps(warm).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{ports[0]}/api/routes/churn", data=body, method="PUT",
                                             headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
            revision = json.loads(urllib.request.urlopen(request, timeout=30).read())["revision"]
            deadline = time.monotonic() + 120
            while not all(_serves(port, revision) for port in ports):
                if time.monotonic() > deadline:
                    raise SystemExit("the replicas did not all load both versions within 120 s")
                time.sleep(0.2)
        heard = [listening(p) for p in ports]
        with console.status(f"{args.rate:.0f} requests/s over {args.replicas} replicas with {args.changes} routing changes"):
            answers, committed, failures = asyncio.run(run(ports, token, args.rate, args.changes))
        lags = [swap_lag(p) for p in ports]
        status = subprocess.run([rung, "status", "--json"], cwd=project, capture_output=True, text=True, check=True)
    finally:
        for process in processes:
            stop(process)
        shutil.rmtree(work, ignore_errors=True)
        if database:
            drop_database(database)
    per_replica = {p: effect_delays(answers[p], committed) for p in ports}
    delays = sorted(d for found in per_replica.values() for d in found)
    (churn,) = [m for m in json.loads(status.stdout) if m["model"] == "churn"]
    in_step = sum(1 for r in churn["replicas"] if r["lagging"] is None)
    channel = "LISTEN/NOTIFY" if all(heard) else ("the revision poll" if not any(heard) else "mixed")
    out = table(f"Routing agreement: {args.replicas} replicas on {args.store} ({channel})", ["measure", "value"])
    out.add_row("requests answered", f"{sum(len(a) for a in answers.values()):,} ({args.rate:.0f}/s offered)")
    out.add_row("failed requests", str(failures))
    out.add_row("routing changes", str(len(committed)))
    out.add_row("commit to applied, median", f"{statistics.median(delays) * 1000:.0f} ms over {len(delays)} (change, replica)")
    out.add_row("commit to applied, max", f"{max(delays) * 1000:.0f} ms")
    for i, port in enumerate(ports):
        found = per_replica[port]
        out.add_row(f"  bench-{i}, max / median", f"{max(found) * 1000:.0f} / {statistics.median(found) * 1000:.0f} ms")
    total, count = sum(s for s, _ in lags), sum(c for _, c in lags)
    out.add_row("replicas' own swap lag, mean", f"{total / max(count, 1) * 1000:.0f} ms over {count:.0f} swaps")
    out.add_row("in step at the end (rung status)", f"{in_step} of {len(churn['replicas'])}")
    out.add_row("load average before / after", f"{load_before} / {loadavg()}")
    console.print(out)
    ok = failures == 0 and max(delays) <= 1.0
    console.print(f"{'[green]pass[/]' if ok else '[red]FAIL[/]'}  0 failed requests and every change on every replica within 1 s")
    if args.check and not ok:
        sys.exit(1)


def _serves(port: int, revision: int) -> bool:
    """Whether the replica at ``port`` answers with ``revision`` (or a later one) now."""
    body = json.dumps({"dataframe_records": [ROW]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.headers["x-rung-routing-revision"]) >= revision
    except OSError:
        return False


if __name__ == "__main__":
    main()
