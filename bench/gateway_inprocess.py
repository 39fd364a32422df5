"""The gateway's own cost per request, without HTTP: its ASGI app called in process, C requests at once.

What it measures is rung's Python path of a prediction (routing, parsing,
batching, predicting, rendering, metrics, request log), not uvicorn's
HTTP parsing nor a load generator sharing the cores: CPU µs per request for
the whole process, all its threads, and requests per second on one event
loop. ``--starlette`` also runs each round with the lean path for
prediction routes turned off, so the cost of Starlette's middleware and
router shows in the same run.

    .venv/bin/python bench/gateway_inprocess.py [--concurrency 64] [--requests 6000] [--rows 1] [--rounds 3]
        [--isolation thread|process] [--starlette] [--model linear|boosted]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from _common import MODELS, console, table, trained_project

ROW = {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north",
       "support_calls": 1, "age": 42, "paperless_billing": "no"}
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def _one(app: App, body: bytes) -> None:
    headers = [(b"host", b"gateway"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/invocations", "raw_path": b"/invocations", "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8700)}
    sent: list[dict[str, Any]] = []
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # never: a disconnect would only come after the answer
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise SystemExit(f"the gateway answered {sent[0]['status']}: {sent[1].get('body', b'')[:300]!r}")


async def _measure(app: App, body: bytes, concurrency: int, requests: int) -> tuple[float, float]:
    """(requests per second, CPU µs per request) of ``requests`` sent ``concurrency`` at a time."""
    async def client(n: int) -> None:
        for _ in range(n):
            await _one(app, body)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    sent = requests // concurrency * concurrency
    return sent / wall, 1e6 * cpu / sent


async def _run(args: argparse.Namespace) -> list[list[str]]:
    from rung.project import Project
    from rung.serving.app import create_app

    project = Project.open(trained_project(Path(args.work), model=args.model), {"serve.isolation": args.isolation})
    app = create_app(project)
    lean = app.predict_routes
    body = orjson.dumps({"dataframe_records": [ROW] * args.rows})
    async with app.router.lifespan_context(app):
        await _measure(app, body, args.concurrency, 400)  # warm: the first batches, the request log's first segment
        figures: dict[str, list[tuple[float, float]]] = {"lean path": [], "through Starlette": []}
        for round_ in range(args.rounds):
            for name in figures if args.starlette else ["lean path"]:
                app.predict_routes = lean if name == "lean path" else []
                figures[name].append(await _measure(app, body, args.concurrency, args.requests))
            console.print(f"round {round_ + 1}: load average {os.getloadavg()[0]:.2f}")
    return [[name, f"{statistics.median(r for r, _ in got):,.0f}", f"{statistics.median(c for _, c in got):.1f}"]
            for name, got in figures.items() if got]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--isolation", choices=["thread", "process"], default="thread")
    parser.add_argument("--model", choices=sorted(MODELS), default="boosted")
    parser.add_argument("--starlette", action="store_true", help="also run each round through Starlette's stack")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        args.work = work
        rows = asyncio.run(_run(args))
    shown = table(f"The gateway in process: {args.concurrency} at once, {args.rows} row(s) a request, isolation "
                  f"{args.isolation}, load {os.getloadavg()[0]:.2f}", ["path", "req/s", "CPU µs/req"])
    for row in rows:
        shown.add_row(*row)
    console.print(shown)


if __name__ == "__main__":
    main()
