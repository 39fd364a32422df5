"""``rung deploy``, ``status``, ``rollback``, ``approve``, ``history``, ``controller`` and ``feedback``: releases."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import typer

from rung.cli.context import JSON_OPTION, PROJECT_OPTION, open_project
from rung.cli.output import console, fmt_time, print_json

__all__ = ["register"]

feedback_app = typer.Typer(help="Ground truth or rewards for served requests.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    for name, command in (("deploy", deploy), ("status", status), ("rollback", rollback), ("approve", approve),
                          ("history", history), ("controller", controller)):
        app.command(name)(command)
    app.add_typer(feedback_app, name="feedback")


def deploy(
    ref: str = typer.Argument(..., help="NAME:VERSION, e.g. churn:3."),
    strategy: str | None = typer.Option(None, "--strategy", help="direct, canary, ab or shadow (default: deploy.strategy)."),
    force: bool = typer.Option(False, "--force", help="Deploy without a passing certification (recorded)."),
    reason: str | None = typer.Option(None, "--reason", help="Why, for the record."),
    project_dir: Path | None = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Roll out a certified version; the controller moves it along and promotes or rolls it back."""
    from rung.delivery.rollout import deploy as start
    from rung.serving.control import deployment_dict

    made = start(open_project(project_dir), ref, strategy=strategy, force=force, reason=reason)
    if as_json:
        print_json(deployment_dict(made))
        return
    from rung.delivery.rollout import weight

    against = f"against champion {made.model}:{made.baseline}" if made.baseline else "(first version: no champion yet)"
    console.print(f"Deploying [bold]{made.ref}[/] with [bold]{made.strategy}[/] {against}; rollout {made.id[:8]}: "
                  f"{weight(made):g}% of traffic now.")
    console.print("The controller (`rung controller`, or `rung up`) carries it on; follow it with `rung status`.")


def status(project_dir: Path | None = PROJECT_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Models, their traffic, each rollout's step and latest evidence, and the gateway replicas with the revision each serves."""
    from rich.table import Table

    from rung.clock import utcnow
    from rung.delivery.rollout import current
    from rung.delivery.routing import RoutingTable
    from rung.serving.control import deployment_dict

    project = open_project(project_dir)
    by_model: dict[str, list[Any]] = {}
    for deployment in project.store.deployments(limit=1000):
        by_model.setdefault(deployment.model, []).append(deployment)
    rollouts = {m: current(found) for m, found in by_model.items()}
    tables = {r.model: RoutingTable.from_record(r) for r in project.store.routes()}
    aliases = project.tracking.aliases()
    now = utcnow()
    replicas = project.store.replicas(active_within_s=REPLICAS_SHOWN_S, now=now)
    revisions = {m: t.revision for m, t in tables.items()}
    if as_json:
        print_json([{"model": m, "aliases": aliases.get(m, {}), "routing": tables[m].to_dict() if m in tables else None,
                     "rollout": deployment_dict(rollouts[m]) if rollouts.get(m) else None,
                     "replicas": [{"id": r.id, "url": r.url, "last_seen": r.last_seen.isoformat(),
                                   "revision": r.revisions.get(m),
                                   "lagging": r.lag({m: revisions[m]} if m in revisions else {}, now)} for r in replicas]}
                    for m in sorted(set(tables) | set(rollouts))])
        return
    table = Table(title="Status")
    for column in ("model", "aliases", "traffic", "rollout", "state", "decision so far"):
        table.add_column(column)
    for model in sorted(set(tables) | set(rollouts)):
        routing = tables.get(model)
        traffic = ", ".join(f"v{v.version} {routing.share(v.name):.0%}" for v in routing.variants) if routing else "-"
        if routing and routing.shadows:
            traffic += ", " + ", ".join(f"v{v.version} shadow" for v in routing.shadows)
        d = rollouts.get(model)
        named = ", ".join(f"@{a}=v{v}" for a, v in sorted(aliases.get(model, {}).items()))
        if d is None:
            table.add_row(model, named, traffic, "-", "-", "")
            continue
        evidence = d.evidence or {}
        decision = evidence.get("result", "waiting for the first window")
        checks = [f"{c['name']} {c['status']}" for c in evidence.get("checks", []) if c.get("status") not in (None, "skipped")]
        table.add_row(model, named, traffic, f"{d.strategy} v{d.version} vs v{d.baseline}" if d.baseline else f"{d.strategy} v{d.version}",
                      f"{d.state} (step {d.step})" if d.strategy == "canary" and d.active else d.state,
                      f"{decision}: {', '.join(checks)}" if checks else str(decision))
    console.print(table)
    _show_replicas(replicas, revisions, now)


REPLICAS_SHOWN_S = 3600.0  # `rung status` lists the replicas heard of within this; a clean stop removes a replica at once


def _show_replicas(replicas: list[Any], revisions: dict[str, int], now: Any) -> None:
    """The gateway replicas, the revision each serves per model, and LAGGING on one behind the store or gone quiet."""
    from rich.table import Table

    if not replicas:
        console.print("No gateway replicas heard of in the last hour (`rung serve` records itself while it runs).")
        return
    table = Table(title="Gateway replicas")
    for column in ("replica", "url", "last seen", *(f"{m} (rev {r})" for m, r in sorted(revisions.items())), "state"):
        table.add_column(column)
    for r in replicas:
        served = [str(r.revisions.get(m, "-")) for m in sorted(revisions)]
        lag = r.lag(revisions, now)
        table.add_row(r.id, r.url, f"{r.age_s(now):.1f} s ago", *served, f"[red]LAGGING[/]: {lag}" if lag else "in step")
    console.print(table)


def rollback(
    name: str = typer.Argument(..., help="Model name."),
    reason: str | None = typer.Option(None, "--reason", help="Why, for the record."),
    project_dir: Path | None = PROJECT_OPTION,
) -> None:
    """All traffic back to the previous champion now (the controller applies it within a tick)."""
    from rung.delivery.controller import Controller
    from rung.delivery.rollout import rollback as undo

    project = open_project(project_dir)
    done = undo(project, name, reason=reason)
    Controller(project, holder="cli").sync()  # traffic follows at once, controller running or not
    console.print(f"Rolled back {done.ref}: all traffic to {done.model}:{done.baseline}.")


def approve(name: str = typer.Argument(..., help="Model name."), project_dir: Path | None = PROJECT_OPTION) -> None:
    """Promote a rollout that passed its analysis and waits for approval (deploy.approval: required)."""
    from rung.delivery.controller import Controller
    from rung.delivery.rollout import approve as promote

    project = open_project(project_dir)
    done = promote(project, name)
    Controller(project, holder="cli").sync()
    console.print(f"Approved: {done.ref} is the champion.")


def history(
    name: str = typer.Argument(..., help="Model name."),
    request: str | None = typer.Option(None, "--request", help="Which version answered this request id (REQ#3: row 3 of it)."),
    project_dir: Path | None = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Which version served which share of traffic, when, and why; or who answered one request."""
    from rich.table import Table

    project = open_project(project_dir)
    if request:
        from rung.monitor.logreader import served as who_served

        served = who_served(project, request, model=name)
        if as_json:
            print_json(served)
            return
        if not served:
            raise typer.BadParameter(f"no request {request!r} of {name} in the request log", param_hint="--request")
        rows = any(r["row"] for r in served)
        for r in served:
            role = "shadow copy" if r["shadow"] else "answered"
            row = f" row {r['row']}" if rows else ""
            console.print(f"{fmt_time(r['time'])}  {name}:{r['version']} ({r['variant']}) {role}{row}: status {r['status']}, "
                          f"{r['latency_ms']:.1f} ms, prediction {r['prediction']}"
                          + (f", feedback {r['feedback']:g}" if r["feedback"] is not None else ""))
        return
    kinds = ("deploy", "rollout", "routing", "batch.scored")
    events = [e for e in project.store.events(subject=name, limit=2000) if e.kind in kinds]
    if as_json:
        print_json([{"time": e.time.isoformat(), "kind": e.kind, "actor": e.actor, "data": e.data} for e in events])
        return
    table = Table(title=f"History of {name}")
    for column in ("time", "what", "by", "traffic", "why"):
        table.add_column(column)
    for e in events:
        table.add_row(fmt_time(e.time), _what(e), e.actor, _traffic(e), str(e.data.get("why") or e.data.get("reason") or e.data.get("note") or ""))
    console.print(table)


def _what(event: Any) -> str:
    data = event.data
    if event.kind == "deploy":
        return f"deploy v{data['version']} ({data['strategy']})" + (" forced" if data.get("forced") else "")
    if event.kind == "rollout":
        return f"v{data.get('version', '?')} {data.get('from', 'running')} → {data.get('to', '?')}"
    if event.kind == "batch.scored":
        return f"batch v{data['version']}: {data['rows']:,} rows → {Path(data['output']['path']).name}"
    return f"routing revision {data.get('revision', '')}".strip()


def _traffic(event: Any) -> str:
    data = event.data
    if event.kind == "routing":
        from rung.timeline import traffic

        return traffic(data)
    if event.kind == "rollout" and data.get("weight_after") is not None:
        return f"candidate {data['weight_before']:g}% → {data['weight_after']:g}%"
    return ""


def controller(
    interval: float = typer.Option(1.0, "--interval", help="Seconds between reconciliation passes."),
    lease: float = typer.Option(15.0, "--lease", min=0.5,
                                help="Seconds the lease lasts without renewal; another controller takes over after it."),
    once: bool = typer.Option(False, "--once", help="One pass, then exit."),
    project_dir: Path | None = PROJECT_OPTION,
) -> None:
    """Run the reconciling controller: judge rollouts, move traffic, promote or roll back."""
    from rung.delivery.controller import Controller

    project = open_project(project_dir)
    ctl = Controller(project, lease_s=lease)
    if once:
        moved = ctl.tick()
        console.print(f"{len(moved)} rollout(s) moved.")
        return
    stopping = {"now": False}

    def stop(*_: Any) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    console.print(f"rung controller ({ctl.holder}): a pass every {interval:g} s; Ctrl-C stops it.")
    try:
        ctl.run(interval, stop=lambda: stopping["now"])
    finally:
        ctl.release()


@feedback_app.command("import")
def feedback_import(
    file: Path = typer.Argument(..., help="CSV or Parquet with columns request_id and value."),
    lookback_days: float = typer.Option(7.0, "--lookback-days", min=0,
                                        help="How many days of the request log to look the ids up in."),
    project_dir: Path | None = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Record feedback in bulk: accepted, duplicates (no change), conflicts, and ids not (yet) in the request log."""
    from rung.delivery import feedback
    from rung.monitor.logreader import RequestLogReader
    from rung.monitor.requestlog import log_root

    project = open_project(project_dir)
    outcome = feedback.record(project.store, feedback.read_file(file), source=f"file:{file.name}",
                              log=RequestLogReader(log_root(project)), lookback_days=lookback_days)
    counts = {k: len(v) for k, v in outcome.items()}
    if as_json:
        print_json(counts | {"unmatched_ids": outcome["unmatched"][:100], "conflict_ids": outcome["conflict"][:100]})
        return
    console.print(", ".join(f"{v:,} {k}" for k, v in counts.items()))
    if outcome["unmatched"]:
        console.print(f"unmatched: not answered in the last {lookback_days:g} days of the request log (kept; joined when "
                      f"their request is read). First 5: {', '.join(outcome['unmatched'][:5])}")
