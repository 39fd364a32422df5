"""`rung serve` side by side with its peers on the same model: mlflow, MLServer, LitServe, FastAPI, the raw-ASGI ceiling.

Trains the churn template's boosted pipeline once, exports it for each peer
(``peers.py`` says how each is installed, fed, started and asked), starts
every server up-front on its own port of 127.0.0.1, and checks that each
model server answers the same 20 rows of the template's data with the same
labels and, where it gives them, the same probabilities (to 1e-9) as the
pipeline itself; a server that disagrees is marked and left out of the
ratios. Then, in interleaved rounds (each round loads every server in turn,
in a rotated order), wrk loads each with single-row requests at 8 and 64
connections and 100-row requests at 8 connections (``load.py``). The tables
show medians over the rounds, the ratios rung ÷ peer and rung ÷ ceiling,
and the targets of issue 19.

    .venv/bin/python bench/peers/run.py [--duration 10] [--rounds 3] [--only rung,mlflow,...]
        [--rung-args "--processes 2"] [--ceiling-workers 1] [--json FILE] [--check]

Peers: rung, mlflow, mlserver, litserve, litserve-batch, fastapi, asgi. Their
venvs live in ``~/.cache/rung-bench-peers`` (made on first use, from the
package registry), and the servers' output of the last run in its ``logs/``. Needs ``wrk`` (Debian package; installed with apt-get if
missing). Every server started is killed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # bench/: _common, gateway

from _common import MODELS, console, machine, rung_executable, table, trained_project  # noqa: E402
from gateway import free_port  # noqa: E402
from load import SETTINGS, Server, Setting, ask, halt, launch, load, memory, ready  # noqa: E402
from peers import CACHE, CEILING, PEERS, RUNG, Launch, Peer, Unavailable, environment, export, install, installed  # noqa: E402

TOLERANCE = 1e-9
CHECK_ROWS = 20


def main() -> None:
    args = _arguments()
    chosen = [peer for peer in PEERS if peer.key in args.only]
    _ensure_wrk()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the finally that kills the servers
    work = Path(tempfile.mkdtemp(prefix="rung-bench-peers-"))
    servers: list[Server] = []
    report: dict[str, Any] = {"machine": machine(), "model": MODELS["boosted"], "duration_s": args.duration,
                              "rounds": args.rounds, "installed": {}, "skipped": {}, "disagrees": {}, "errors": {},
                              "loadavg": [], "runs": {}, "memory": {}}
    try:
        with console.status("creating and training the churn project (boosted)"):
            project = trained_project(work, model="boosted")
            exports, pipeline = export(project, work)
        import pandas as pd

        frame = pd.read_csv(project / "data" / "train.csv").drop(columns=["churned"])
        rows = json.loads(frame.to_json(orient="records"))
        _start(chosen, exports, args, work, report, servers)
        _agree(servers, rows[:CHECK_ROWS], pipeline, frame.iloc[:CHECK_ROWS], report)
        bodies = _bodies(servers, rows, work)
        for round_ in range(args.rounds):
            report["loadavg"].append(os.getloadavg())
            console.print(f"round {round_ + 1}/{args.rounds}: load average {_loadavg()}")
            order = servers[round_ % len(servers):] + servers[:round_ % len(servers)]
            for setting in SETTINGS:
                for server in order:
                    _measure(server, setting, bodies, args.duration, work, report)
        report["loadavg"].append(os.getloadavg())
        console.print(f"after the last round: load average {_loadavg()}")
    finally:
        for server in servers:
            halt(server)
        shutil.rmtree(work, ignore_errors=True)
    targets = _report(chosen, report, args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        console.print(f"figures written to {args.json}")
    if args.check and not all(target["pass"] for target in targets.values()):
        sys.exit(1)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the tables show medians")
    parser.add_argument("--only", default=",".join(p.key for p in PEERS),
                        help=f"comma-separated servers to run (default all: {','.join(p.key for p in PEERS)})")
    parser.add_argument("--rung-args", default="", help='extra options of rung serve, e.g. "--processes 2"')
    parser.add_argument("--ceiling-workers", type=int, default=1, help="uvicorn workers of the raw-ASGI ceiling")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target of issue 19 is missed")
    args = parser.parse_args()
    args.only = [key.strip() for key in args.only.split(",") if key.strip()]
    unknown = set(args.only) - {p.key for p in PEERS}
    if unknown:
        parser.error(f"unknown servers {sorted(unknown)}; choose from {','.join(p.key for p in PEERS)}")
    return args


def _ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    console.print("[yellow]wrk is missing: apt-get install -y wrk[/]")
    subprocess.run(["apt-get", "update"], check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)


def _rung_args(wanted: str) -> list[str]:
    """``--rung-args`` less the options this ``rung serve`` does not have (each one warned about)."""
    help_text = subprocess.run([rung_executable(), "serve", "--help"], capture_output=True, text=True,
                               env=os.environ | {"COLUMNS": "200"}).stdout
    tokens, kept, i = shlex.split(wanted), [], 0
    while i < len(tokens):
        token = tokens[i]
        takes_value = token.startswith("--") and "=" not in token and i + 1 < len(tokens) \
            and not tokens[i + 1].startswith("-")
        group = tokens[i:i + 2] if takes_value else [token]
        if token.startswith("-") and token.split("=")[0] not in help_text:
            console.print(f"[yellow]warning: rung serve has no {token.split('=')[0]} here; ignored {' '.join(group)}[/]")
        else:
            kept += group
        i += len(group)
    return kept


def _start(chosen: list[Peer], exports: Any, args: argparse.Namespace, work: Path, report: dict[str, Any],
           servers: list[Server]) -> None:
    """Install what each peer needs, start them all into ``servers``, wait for each; one that fails is skipped.

    A server joins ``servers`` as soon as it is started, so that the caller's ``finally`` kills it whatever happens.
    """
    extra = {RUNG: _rung_args(args.rung_args), CEILING: [str(args.ceiling_workers)]}
    bins: dict[str | None, Path | Unavailable] = {}
    for peer in chosen:
        if peer.venv not in bins:
            try:
                bins[peer.venv] = install(peer.venv, console.print)
                name = peer.venv or "rung's venv"
                report["installed"][name] = versions = installed(bins[peer.venv])
                console.print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
            except Unavailable as exc:
                bins[peer.venv] = exc
    for peer in chosen:
        found = bins[peer.venv]
        if isinstance(found, Unavailable):
            report["skipped"][peer.key] = str(found)
            continue
        folder = work / "servers" / peer.key
        folder.mkdir(parents=True)
        port = free_port()
        command, cwd = peer.command(Launch(found, exports, port, folder, extra.get(peer.key, [])))
        console.print(f"starting {peer.label} on :{port}: {shlex.join(command)}")
        log = CACHE / "logs" / f"{peer.key}.log"  # kept after the run, to read why a server failed
        log.parent.mkdir(parents=True, exist_ok=True)
        servers.append(launch(peer, command, cwd, environment(found), port, log))
    for server in list(servers):
        with console.status(f"waiting for {server.peer.label}"):
            try:
                ready(server)
            except Unavailable as exc:
                report["skipped"][server.peer.key] = str(exc)
                halt(server)
                servers.remove(server)
    for key, reason in report["skipped"].items():
        console.print(f"[bold red]SKIPPED {key}: {reason}[/]")


def _agree(servers: list[Server], rows: list[dict[str, Any]], pipeline: Any, frame: Any, report: dict[str, Any]) -> None:
    """Ask every model server the same rows; one whose labels or probabilities differ from the pipeline's is marked."""
    labels, positive = pipeline.predict(frame).tolist(), pipeline.predict_proba(frame)[:, 1].tolist()
    for server in servers:
        if server.peer.answer is None:
            continue
        try:
            answer = server.peer.answer(ask(server.url(server.peer.path), server.peer.body(rows)))
        except Exception as exc:  # any way of not answering is a disagreement, shown as such
            report["disagrees"][server.peer.key] = f"no usable answer: {exc!r}"[:300]
            continue
        if answer.labels != labels:
            report["disagrees"][server.peer.key] = f"labels differ: {answer.labels} vs {labels}"
        elif answer.probabilities is not None:
            # the churn model has two classes: P(churn), whether a server answers it alone (rung) or beside P(stay)
            got = [p[1] if isinstance(p, list) else p for p in answer.probabilities]
            worst = max(abs(a - b) for a, b in zip(got, positive))
            if len(got) != len(positive) or worst > TOLERANCE:
                report["disagrees"][server.peer.key] = f"probabilities differ by up to {worst:.3g}"
        what = "labels and probabilities" if answer.probabilities is not None else "labels"
        verdict = report["disagrees"].get(server.peer.key, f"same {what} on {len(rows)} rows")
        console.print(f"{server.peer.label}: {verdict}")


def _bodies(servers: list[Server], rows: list[dict[str, Any]], work: Path) -> dict[tuple[str, str], Path]:
    bodies = {}
    (work / "bodies").mkdir()
    for server in servers:
        for setting in SETTINGS:
            path = work / "bodies" / f"{server.peer.key}-{setting.key}.json"
            path.write_text(json.dumps(server.peer.body(rows[:setting.rows])))
            bodies[server.peer.key, setting.key] = path
    return bodies


def _measure(server: Server, setting: Setting, bodies: dict[tuple[str, str], Path], duration: int, work: Path,
             report: dict[str, Any]) -> None:
    key = server.peer.key
    with console.status(f"{server.peer.label}: {setting.label}, {duration} s"):
        try:
            result = load(server, bodies[key, setting.key], setting, duration, work)
        except (subprocess.CalledProcessError, AttributeError) as exc:  # wrk failed, or printed no figures
            report["errors"].setdefault(key, []).append(f"wrk failed on {setting.key}: {exc}")
            console.print(f"[bold red]{server.peer.label}: wrk failed on {setting.label}: {exc}[/]")
            return
    report["runs"].setdefault(key, {}).setdefault(setting.key, []).append(result)
    if key not in report["memory"]:
        report["memory"][key] = memory(server.process.pid)


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the report -----------------------------------------------------------------------------------------------------

def _medians(report: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    return {key: {setting: {metric: statistics.median(run[metric] for run in runs) for metric in runs[0]}
                  for setting, runs in by_setting.items()}
            for key, by_setting in report["runs"].items()}


def _report(chosen: list[Peer], report: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    medians = report["medians"] = _medians(report)
    usable = {key for key in medians if key not in report["disagrees"]}
    rounds = f"median of {args.rounds} rounds" if args.rounds > 1 else "1 round"
    for setting in SETTINGS:
        figure = "rows_s" if setting.rows > 1 else "rps"
        unit = "rows/s" if setting.rows > 1 else "req/s"
        out = table(f"{setting.label}: {rounds} of {args.duration} s, wrk on loopback\nmodel: {MODELS['boosted']}",
                    ["server", unit, "p99", "failed", "CPU ms/req", "rung ÷ it", "note"])
        rung = medians.get(RUNG, {}).get(setting.key) if RUNG in usable else None
        for peer in chosen:
            found = medians.get(peer.key, {}).get(setting.key)
            if found is None:
                out.add_row(peer.label, "–", "–", "–", "–", "–", _note(peer.key, report) or "[red]not measured[/]")
                continue
            ratio = "–"
            if peer.key != RUNG and rung and peer.key in usable:
                ratio = f"{rung[figure] / found[figure]:.2f}×"
            elif peer.key in report["disagrees"]:
                ratio = "excluded"
            out.add_row(peer.label, f"{found[figure]:,.0f}", f"{found['p99_ms']:.1f} ms", f"{found['failed']:.0f}",
                        f"{found['cpu_ms']:.3f}", ratio, _note(peer.key, report))
        console.print(out)
    memory_table = table("memory of each server's process tree after its first load (one model)",
                         ["server", "processes", "RSS", "PSS", "note"])
    for peer in chosen:
        found = report["memory"].get(peer.key)
        if found is None:
            memory_table.add_row(peer.label, "–", "–", "–", _note(peer.key, report))
            continue
        pss = f"{found['pss_mib']:.0f} MiB" if found["pss_mib"] is not None else "unreadable"
        memory_table.add_row(peer.label, str(found["processes"]), f"{found['rss_mib']:.0f} MiB", pss, _note(peer.key, report))
    console.print(memory_table)
    targets = report["targets"] = _targets(medians, usable, report["memory"], {peer.key for peer in chosen})
    out = table("targets of issue 19 (rung serve)", ["target", "measured", "verdict"])
    for name, target in targets.items():
        verdict = "[green]PASS[/]" if target["pass"] else "[red]FAIL[/]"
        out.add_row(name, target["measured"], verdict)
    console.print(out)
    return targets


def _note(key: str, report: dict[str, Any]) -> str:
    """Why a row is missing or left out of the ratios, short enough for a table cell (the whole reason was printed)."""
    for kind, reasons in (("SKIPPED", report["skipped"]), ("DISAGREES", report["disagrees"]),
                          ("FAILED", report["errors"])):
        if key in reasons:
            reason = "; ".join(reasons[key]) if isinstance(reasons[key], list) else reasons[key]
            return f"[bold red]{kind}: {reason[:90]}{'…' if len(reason) > 90 else ''}[/]"
    return ""


def _targets(medians: dict[str, dict[str, dict[str, float]]], usable: set[str], memory_found: dict[str, dict[str, Any]],
             chosen: set[str]) -> dict[str, dict[str, Any]]:
    """Each target of issue 19 that the servers chosen can judge: what was measured, whether it passes."""
    def figure(key: str, setting: str, metric: str) -> float | None:
        return medians.get(key, {}).get(setting, {}).get(metric) if key in usable else None

    def ratio(setting: str, peer: str, metric: str) -> float | None:
        mine, theirs = figure(RUNG, setting, metric), figure(peer, setting, metric)
        return mine / theirs if mine is not None and theirs else None

    def at_least(value: float | None, bound: float, shown: str) -> dict[str, Any]:
        return {"value": value, "bound": bound, "pass": value is not None and value >= bound,
                "measured": shown.format(value) if value is not None else "not measured"}

    def at_most(value: float | None, bound: float, shown: str) -> dict[str, Any]:
        return {"value": value, "bound": bound, "pass": value is not None and value <= bound,
                "measured": shown.format(value) if value is not None else "not measured"}

    rss = memory_found.get(RUNG, {}).get("rss_mib") if RUNG in usable else None
    targets = {
        "c64 single rows: ≥ 35% of the raw-ASGI ceiling": (CEILING, at_least(ratio("c64", CEILING, "rps"), 0.35, "{:.0%}")),
        "c64 single rows: ≤ 0.08 CPU ms per request": (RUNG, at_most(figure(RUNG, "c64", "cpu_ms"), 0.08, "{:.3f} ms")),
        "c8 single rows: ≥ 5× LitServe with batching":
            ("litserve-batch", at_least(ratio("c8", "litserve-batch", "rps"), 5, "{:.2f}×")),
        "c8 single rows: p99 ≤ 10 ms": (RUNG, at_most(figure(RUNG, "c8", "p99_ms"), 10, "{:.1f} ms")),
        "100-row requests: ≥ 5× MLServer (rows/s)":
            ("mlserver", at_least(ratio("rows100", "mlserver", "rows_s"), 5, "{:.2f}×")),
        "100-row requests: ≥ 5× mlflow (rows/s)": ("mlflow", at_least(ratio("rows100", "mlflow", "rows_s"), 5, "{:.2f}×")),
        "memory, one model: RSS of rung's tree ≤ 450 MiB": (RUNG, at_most(rss, 450, "{:.0f} MiB")),
    }
    # a target whose peer --only left out is not judged; one whose peer was chosen but not measured fails
    return {name: found for name, (peer, found) in targets.items() if {peer, RUNG} <= chosen}


if __name__ == "__main__":
    main()
