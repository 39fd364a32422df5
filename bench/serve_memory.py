"""Memory of `rung serve`: RSS, PSS and USS of each process of its tree with 1, 2 and 3 versions loaded.

Trains the churn template's boosted model three times (versions 1 to 3 of
``churn``), then, for each configuration (``serve.isolation: process``, the
default, and ``thread``), starts ``rung serve`` (gRPC off), waits for
``/v2/health/ready``, routes one, two, then three versions through the
control API (``PUT /api/routes/churn``), waits until the repository index
says they are ready, sends predictions, and measures each process of the
tree (the gateway, multiprocessing's resource tracker and fork server, the
model workers) with ``psutil``'s ``memory_full_info``.

RSS counts a page shared by several processes (what a worker inherits from
the fork server, copy-on-write; a library's code) once in each; PSS shares
it out among them, so the sum of PSS is what the tree takes from the
machine; USS is what a process alone holds. The targets are on the sum of
RSS, what an outside observer adds up: ≤ 450 MiB with one model, ≤ 150 MiB
for each further one.

The project's first start is measured on its own, before the others: the
gateway finds no routing table and asks MLflow for the ``@champion``
alias, which imports MLflow into it; every later start reads the table.

It also times how long a model worker takes to start, in a child Python
that loads version 1 as the gateway does: the first one (which starts the
fork server), the next ones, and one started again after ``kill -9``.

``--cold`` empties the verified model cache before each start, so the
gateway fetches each version from the registry, as on a host that did not
train it. ``--baseline SRC`` runs every configuration a second time with
``PYTHONPATH=SRC`` (another checkout's ``src``, e.g. from ``git worktree``),
in alternating order, for a before/after in one run; ``--rounds N``
repeats it all and keeps the medians.

    .venv/bin/python bench/serve_memory.py [--isolation process thread] [--cold] [--baseline SRC] [--rounds 1] [--check]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _common import console, rung_executable, table, trained_project

ROW = {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north",
       "support_calls": 1, "age": 42, "paperless_billing": "no"}
MIB = 1024 * 1024
TARGET_FIRST_MIB = 450
TARGET_FURTHER_MIB = 150
COUNTS = (1, 2, 3)
ORDER = {"gateway": 0, "resource tracker": 1, "fork server": 2, "model worker": 3}
STARTS = 5  # workers started, and restarted after kill -9, per timing


def http(method: str, url: str, body: Any = None, token: str | None = None, headers: dict[str, str] | None = None) -> Any:
    headers = {"content-type": "application/json", **(headers or {})}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers, method=method), timeout=30) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {url}: {exc.code} {exc.read().decode()[:300]}") from exc


def wait_for(what: str, predicate: Any, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"rung serve exited with {process.returncode} while waiting for {what}")
        with contextlib.suppress(OSError, ValueError, KeyError):
            if predicate():
                return
        time.sleep(0.1)
    raise SystemExit(f"{what}: not within {timeout} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def label(process: Any) -> str:
    """What a process of the tree is: the gateway, the resource tracker, the fork server or a model worker."""
    cmdline = " ".join(process.cmdline())
    parent = process.parent()
    if parent is not None and "forkserver" in " ".join(parent.cmdline()):
        return "model worker"  # forked by the fork server: its command line is the fork server's
    if "forkserver" in cmdline:
        return "fork server"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if " serve " in f"{cmdline} ":
        return "gateway"
    return cmdline[:40]


def tree(pid: int) -> list[dict[str, Any]]:
    """Each live process of the tree under ``pid``, ``pid`` first: what it is, its RSS, PSS and USS in bytes."""
    import psutil

    root = psutil.Process(pid)
    found = []
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            info = process.memory_full_info()
            found.append({"name": label(process), "rss": info.rss, "pss": info.pss, "uss": info.uss})
    return found


def serve(project: Path, isolation: str, token: str, env: dict[str, str], cold: bool,
          counts: tuple[int, ...] = COUNTS) -> dict[int, list[dict[str, Any]]]:
    """Start ``rung serve``, route ``counts`` versions in turn, measure the tree after each; stop it."""
    config = project / "rung.yaml"
    text = config.read_text()
    config.write_text(text + f"\nserve:\n  isolation: {isolation}\n  refresh_s: 0.2\n")
    if cold:
        shutil.rmtree(project / ".rung" / "models", ignore_errors=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([rung_executable(), "serve", "--port", str(port), "--grpc-port", "0"], cwd=project,
                               env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    measured: dict[int, list[dict[str, Any]]] = {}
    try:
        wait_for("/v2/health/ready", lambda: http("GET", f"{url}/v2/health/ready")["ready"], process)
        for count in counts:
            versions = set(range(1, count + 1))
            variants = [{"name": f"v{v}", "version": v, "weight": 1} for v in sorted(versions)]
            http("PUT", f"{url}/api/routes/churn", {"variants": variants, "reason": "bench"}, token)

            def ready(versions: set[int] = versions) -> bool:
                index = http("POST", f"{url}/v2/repository/index", {"ready": True})
                return {int(e["version"]) for e in index if e["name"] == "churn"} >= versions

            wait_for(f"{count} versions ready", ready, process)
            for i in range(30):  # keyed: the requests spread over every routed version
                http("POST", f"{url}/invocations", {"dataframe_records": [ROW]}, headers={"x-rung-key": f"k{i}"})
            measured[count] = tree(process.pid)
        # the next configuration starts from one routed version
        http("PUT", f"{url}/api/routes/churn", {"variants": [{"name": "v1", "version": 1}], "reason": "bench"}, token)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        config.write_text(text)
    return measured


def worker_starts(project: Path, env: dict[str, str]) -> dict[str, Any]:
    """Start times of a model worker of version 1, timed in a child Python (see :func:`_time_worker_starts`)."""
    done = subprocess.run([sys.executable, __file__, "--time-worker-starts", str(project)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"timing worker starts failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _time_worker_starts(root: Path) -> None:
    """Version 1 loaded and compiled as the gateway does; a worker started, started again, restarted after kill -9."""
    from rung.models.compiled import compile_model
    from rung.models.loader import training_inputs
    from rung.project import Project
    from rung.serving.worker import ModelWorker

    project = Project.open(root)
    record = project.store.get_model_version("churn", 1)
    model = project.models_loader.load(record)
    model.compiled, _ = compile_model(model, training_inputs(record, project.artifacts, project.settings.data.target))
    columns = {name: [value] for name, value in ROW.items()}

    def timed(start: Any) -> float:
        began = time.perf_counter()
        start()
        return (time.perf_counter() - began) * 1000

    workers: list[ModelWorker] = []
    first = timed(lambda: workers.append(ModelWorker(model)))
    new = [timed(lambda: workers.append(ModelWorker(model))) for _ in range(STARTS)]
    worker = workers[0]
    revived = []
    for _ in range(STARTS):
        worker(columns)
        process = worker._process
        os.kill(process.pid, signal.SIGKILL)
        process.join()  # dead: revive() starts the next one at once
        revived.append(timed(worker.revive))
    worker(columns)
    for one in workers:
        one.close()
    print(json.dumps({"first": first, "new": statistics.median(new), "revived": statistics.median(revived)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isolation", nargs="+", choices=["process", "thread"], default=["process", "thread"])
    parser.add_argument("--cold", action="store_true", help="empty the verified model cache before each start")
    parser.add_argument("--baseline", type=Path, help="another checkout's src directory, run as PYTHONPATH in alternation")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything this many times (medians kept)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--time-worker-starts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_worker_starts:
        return _time_worker_starts(args.time_worker_starts)
    trees = {"this tree": {}, **({"baseline": {"PYTHONPATH": str(args.baseline.resolve())}} if args.baseline else {})}
    runs: dict[tuple[str, str], list[dict[int, list[dict[str, Any]]]]] = {}
    starts: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    work = Path(tempfile.mkdtemp(prefix="rung-bench-serve-memory-"))
    try:
        with console.status("creating the churn project and training 3 versions"):
            import pandas as pd

            project = trained_project(work, versions=2, model="boosted")
            data = project / "data" / "train.csv"  # a third order: reversing once more would be version 1's cache hit
            pd.read_csv(data).sample(frac=1.0, random_state=3).to_csv(data, index=False)
            subprocess.run([rung_executable(), "run"], cwd=project, check=True, capture_output=True)
            made = subprocess.run([rung_executable(), "token", "create", "--role", "deployer", "--json"], cwd=project,
                                  check=True, capture_output=True, text=True)
            token = json.loads(made.stdout)["token"]
        with console.status("the project's first rung serve: no routing table yet"):
            first = serve(project, "process", token, {}, args.cold, counts=(1,))[1]
        configurations = [(name, mode) for name in trees for mode in args.isolation]
        for round_ in range(args.rounds):
            for name, mode in configurations if round_ % 2 == 0 else configurations[::-1]:
                with console.status(f"round {round_ + 1}/{args.rounds}: {name}, isolation {mode}"):
                    runs.setdefault((name, mode), []).append(serve(project, mode, token, trees[name], args.cold))
                console.print(f"round {round_ + 1}, {name}, isolation {mode}: load average {os.getloadavg()[0]:.2f}")
            for name in trees if round_ % 2 == 0 else list(trees)[::-1]:
                with console.status(f"round {round_ + 1}/{args.rounds}: {name}, worker start times"):
                    starts[name].append(worker_starts(project, trees[name]))
                console.print(f"round {round_ + 1}, {name}, worker starts: load average {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    console.print("first start of the project (no routing table yet, the gateway reads @champion from MLflow), "
                  "this tree, isolation process, 1 version: "
                  + ", ".join(f"{p['name']} {p['rss'] / MIB:.0f}" for p in first)
                  + f" MiB RSS; {sum(p['rss'] for p in first) / MIB:.0f} in all")
    checks: dict[str, bool] = {}
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    for (name, mode), found in runs.items():
        out = table(f"rung serve, {name}, serve.isolation: {mode}{', cold cache' if args.cold else ''} (MiB{rounds})\n"
                    "churn template's boosted model, 1 to 3 versions routed",
                    ["versions · process", "count", "RSS", "PSS", "USS"])
        totals: dict[int, float] = {}
        for count in COUNTS:
            names = sorted({p["name"] for run in found for p in run[count]}, key=lambda n: (ORDER.get(n, len(ORDER)), n))
            for process in names:
                each = [[p for p in run[count] if p["name"] == process] for run in found]
                figures = {k: statistics.median(sum(p[k] for p in ps) for ps in each) / MIB for k in ("rss", "pss", "uss")}
                out.add_row(f"{count} · {process}", str(len(each[0])), *(f"{figures[k]:.0f}" for k in ("rss", "pss", "uss")))
            total = {k: statistics.median(sum(p[k] for p in run[count]) for run in found) / MIB for k in ("rss", "pss", "uss")}
            totals[count] = total["rss"]
            out.add_row(f"[bold]{count} · total[/]", str(len(found[0][count])),
                        *(f"[bold]{total[k]:.0f}[/]" for k in ("rss", "pss", "uss")), end_section=True)
        console.print(out)
        further = [totals[c] - totals[c - 1] for c in COUNTS[1:]]
        console.print(f"{name}, isolation {mode}: one version {totals[1]:.0f} MiB RSS in all; each further version "
                      + ", ".join(f"{f:+.0f}" for f in further) + " MiB")
        checks[f"{name}, {mode}: one version ≤ {TARGET_FIRST_MIB} MiB RSS"] = totals[1] <= TARGET_FIRST_MIB
        checks[f"{name}, {mode}: each further version ≤ {TARGET_FURTHER_MIB} MiB RSS"] = max(further) <= TARGET_FURTHER_MIB
    out = table(f"model worker start, version 1 (ms{rounds})", ["tree", "first (starts the fork server)", "next",
                                                                  "after kill -9"])
    for name, found in starts.items():
        out.add_row(name, *(f"{statistics.median(s[k] for s in found):.0f}" for k in ("first", "new", "revived")))
    console.print(out)
    for check, ok in checks.items():
        console.print(f"{'[green]pass[/]' if ok else '[red]FAIL[/]'}  {check}")
    if args.check and not all(checks.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
