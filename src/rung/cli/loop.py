"""``rung monitor``, ``retrain``, ``timeline``, ``events``, ``scheduler`` and ``up``: the closed loop."""

from __future__ import annotations

import gc
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import typer

from rung.cli.context import JSON_OPTION, PROJECT_OPTION, open_project
from rung.cli.output import console, fmt_time, print_json
from rung.cli.views import show_timeline
from rung.timeline import chains_of, describe

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    for name, command in (("monitor", monitor), ("retrain", retrain), ("timeline", timeline), ("events", events),
                          ("scheduler", scheduler), ("up", up)):
        app.command(name)(command)


def monitor(
    name: str | None = typer.Argument(None, help="The model (default: the project's)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Check the windows closed since the last look first."),
    last: int = typer.Option(7, "--last", "-n", min=1, help="How many windows to show per version."),
    project_dir: Path | None = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Drift, data quality, live and estimated performance and ops of each served version, window by window."""
    from rich.table import Table

    from rung.clock import SYSTEM
    from rung.monitor.logreader import describe_replicas
    from rung.monitor.windows import Monitor

    project = open_project(project_dir)
    model = name or project.settings.model_name
    if check:
        Monitor(project, SYSTEM).check(model)
    windows = project.store.windows(model, limit=last * 10)
    if as_json:
        print_json([w.__dict__ for w in windows])
        return
    if not windows:
        console.print(f"No monitoring windows for {model} yet: serve it (`rung serve` or `rung up`) and check again "
                      f"after a window of {project.settings.monitor.window_s:g} s closes.")
        return
    table = Table(title=f"Monitoring of {model} (windows of {project.settings.monitor.window_s:g} s)")
    columns = ("window end", "version", "rows", "drift share", "drifted features", "accuracy (live)", "accuracy (est.)",
               "p99 ms", "errors", "replicas")
    for column in columns:
        table.add_column(column, justify="left" if column in ("window end", "drifted features", "replicas") else "right")
    for w in windows[-last * 3:]:
        m = w.metrics
        drifted = [f["name"] for f in (w.report.get("drift") or {}).get("features", []) if f.get("drifted")]
        live = (w.report.get("performance") or {}).get("accuracy")
        live_text = f"{live['value']:.3f} [{live['low']:.3f}, {live['high']:.3f}]" if live else "-"
        table.add_row(fmt_time(w.end), str(w.version), str(w.rows), _num(m.get("drift.share")),
                      ", ".join(drifted[:4]) + ("…" if len(drifted) > 4 else "") or "-", live_text,
                      _num(m.get("estimated.accuracy")), _num(m.get("ops.p99_ms"), 1), _num(m.get("ops.error_rate")),
                      describe_replicas(w.report.get("replicas") or []))
    console.print(table)
    console.print("[dim]live: from feedback, with a 95% interval; est.: from the scores alone (CBPE), before labels arrive[/]")


def retrain(
    reason: str = typer.Option(..., "--reason", help="Why, for the record (e.g. 'new labelled data from finance')."),
    project_dir: Path | None = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Retrain now: run ▸ certify ▸ roll out with the configured strategy (cooldowns do not apply; one at a time)."""
    from rung.clock import SYSTEM
    from rung.triggers.decision import TriggerReason
    from rung.triggers.retrain import retrain as run_chain

    project = open_project(project_dir)
    record = run_chain(project, TriggerReason.manual(reason), clock=SYSTEM, actor="cli", manual=True)
    if as_json:
        print_json(record.__dict__)
    else:
        _say_retrain(record)
    if record.status in ("failed", "refused"):
        raise typer.Exit(1)


def _say_retrain(record: Any) -> None:
    if record.status == "refused":
        console.print(f"[yellow]Not retrained:[/] {record.error}")
    elif record.status == "failed":
        console.print(f"[red]Retraining failed:[/] {record.error}")
    else:
        console.print(f"[green]Retrained[/]: {record.model}:{record.version} certified and rolling out "
                      f"(see `rung timeline {record.model}`).")


def timeline(
    name: str | None = typer.Argument(None, help="The model (default: the project's)."),
    last: int = typer.Option(3, "--last", "-n", min=1, help="How many retraining chains to show."),
    project_dir: Path | None = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Each retraining's causal chain: trigger ▸ run ▸ version ▸ certification ▸ rollout steps ▸ decision."""
    project = open_project(project_dir)
    model = name or project.settings.model_name
    chains = chains_of(project, model, last)
    if as_json:
        print_json([{"retrain": r.__dict__, "events": [e.__dict__ for e in evs]} for r, evs in chains])
        return
    if not chains:
        console.print(f"No retraining of {model} yet: triggers are set under `triggers:` in rung.yaml, or run "
                      "`rung retrain --reason ...`.")
        return
    for record, evs in chains:
        show_timeline(record, evs)


def events(
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events as they happen (Ctrl-C stops)."),
    last: int = typer.Option(20, "--last", "-n", min=1, help="How many past events to show first."),
    subject: str | None = typer.Option(None, "--subject", help="Only events about this model or version."),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between looks when following."),
    project_dir: Path | None = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The event log: who did what, when and why (one JSON object per line with --json)."""
    import json

    project = open_project(project_dir)
    seen = None
    stopping = threading.Event()
    if follow:
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while True:
            batch = project.store.events(subject, limit=last if seen is None else 1000, after_id=seen)
            for e in batch:
                if as_json:
                    print(json.dumps(e.__dict__, default=str), flush=True)
                else:
                    chain = f" [dim]{e.chain[:8]}[/]" if e.chain else ""
                    console.print(f"[dim]{fmt_time(e.time)}[/] [bold]{e.kind}[/] {e.subject}{chain} · {describe(e)}",
                                  highlight=False)
                seen = e.id
            if seen is None:
                seen = 0
            if not follow or stopping.wait(interval):
                return
    except KeyboardInterrupt:
        return


def scheduler(
    interval: float = typer.Option(30.0, "--interval", help="Seconds between ticks."),
    once: bool = typer.Option(False, "--once", help="One tick, then exit."),
    project_dir: Path | None = PROJECT_OPTION,
) -> None:
    """Run the scheduler alone: monitoring windows, alerts, retraining triggers (one per database holds the lease)."""
    from rung.triggers.scheduler import Scheduler

    project = open_project(project_dir)
    sched = Scheduler(project, on_update=_say)
    if once:
        tick = sched.tick()
        console.print(f"{len(tick.windows)} window(s) checked, {len(tick.notices)} alert notice(s), "
                      f"retraining: {tick.retrain.status if tick.retrain else 'none'}.")
        return
    stop = _stop_on_signals()
    console.print(f"rung scheduler ({sched.holder}): a tick every {interval:g} s; Ctrl-C stops it.")
    try:
        sched.run(interval, stop=stop.is_set, wait=stop.wait)
    finally:
        sched.release()


def up(
    host: str | None = typer.Option(None, "--host", help="Gateway address (default serve.host, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Gateway port (default serve.port, 8700)."),
    grpc_port: int | None = typer.Option(None, "--grpc-port", min=0, max=65535,
                                         help="The gateway's OIP gRPC port (default serve.grpc_port, 8702; 0 turns it off)."),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between controller passes."),
    schedule_interval: float = typer.Option(30.0, "--schedule-interval", help="Seconds between scheduler ticks."),
    ui: bool = typer.Option(True, "--ui/--no-ui", help="Serve the dashboard too (ui.port, 8701)."),
    ui_port: int | None = typer.Option(None, "--ui-port", help="Dashboard port (default ui.port, 8701)."),
    project_dir: Path | None = PROJECT_OPTION,
) -> None:
    """Gateway + controller + scheduler (+ dashboard) for this project, in one process; Ctrl-C stops everything."""
    from contextlib import nullcontext

    from rung.delivery.controller import Controller
    from rung.serving.server import start_gateway
    from rung.triggers.scheduler import Scheduler

    project = open_project(project_dir)
    stop = _stop_on_signals()
    ctl = Controller(project)
    sched = Scheduler(project, on_update=_say, sample_resources=True)  # the gateway is in this process
    threads = [
        threading.Thread(target=ctl.run, kwargs={"interval_s": interval, "stop": stop.is_set}, name="rung-controller",
                         daemon=True),
        threading.Thread(target=sched.run, kwargs={"interval_s": schedule_interval, "stop": stop.is_set, "wait": stop.wait},
                         name="rung-scheduler", daemon=True),
    ]
    serve = project.settings.serve
    sys.setswitchinterval(0.001)  # as `rung serve`: the event loop answers while predictions and the loop's threads run
    from rung.ui import start_ui

    dashboard = start_ui(project, port=ui_port) if ui else nullcontext(None)
    # the dashboard first: once the gateway answers ready, everything `rung up` serves is up
    with dashboard as ui_url, start_gateway(project, host=host or serve.host, port=port or serve.port,
                                                  grpc_port=grpc_port) as gateway:
        gc.freeze()  # as `rung serve`: what startup loaded stays out of the collector's full passes
        for thread in threads:
            thread.start()
        grpc = f" (gRPC on {gateway.grpc_target})" if gateway.grpc_target else ""
        console.print(f"rung up: gateway on {gateway.url}{grpc}, controller every {interval:g} s, scheduler every "
                      f"{schedule_interval:g} s" + (f", dashboard on {ui_url}" if ui_url else "") + ". Ctrl-C stops everything.")
        while not stop.wait(0.5):
            pass
        console.print("stopping: the gateway drains, the controller and scheduler finish their pass …")
    for thread in threads:
        thread.join(timeout=60)
    ctl.release()
    sched.release()
    console.print("stopped.")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def _say(kind: str, value: Any) -> None:
    if kind == "alert":
        console.print(f"[yellow]alert[/] {value.status}: {value.message}", highlight=False)
    elif kind == "retrain":
        _say_retrain(value)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"

