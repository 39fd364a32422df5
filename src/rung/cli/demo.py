"""``rung demo``: the whole closed loop on a bundled churn scenario, under a simulated clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rung.cli.output import console
from rung.cli.views import show_models, show_timeline

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    keep: Path | None = typer.Option(None, "--keep", help="Create the demo project here and keep it to explore."),
    days: int = typer.Option(20, "--days", min=12, max=120, help="Simulated days to play."),
    drift_day: int = typer.Option(8, "--drift-day", min=1, max=119,
                                  help="The simulated day the world changes (before --days, or the loop has nothing to close)."),
) -> None:
    """The whole loop on a bundled churn scenario, under a simulated clock: drift ▸ alert ▸ retrain ▸ A/B ▸ recovery."""
    import logging
    import tempfile

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from rung.demo.run import loop_gap, run_demo
    from rung.demo.scenario import Scenario
    from rung.errors import ConfigError, LoopNotClosed, ProjectExists
    from rung.project import Project
    from rung.timeline import chains_of

    if drift_day >= days:
        raise ConfigError(f"--drift-day {drift_day} is not before the last day ({days}); give a smaller --drift-day or more --days")
    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise ProjectExists(f"{keep} exists and is not empty; give --keep a new directory")
    alerts_log = logging.getLogger("rung.alerts")  # the demo prints each alert itself, once
    alerts_log.addHandler(logging.NullHandler())
    alerts_log.propagate = False
    console.rule("[bold]rung demo[/]: churn with a drift, under a simulated clock")
    with tempfile.TemporaryDirectory(prefix="rung-demo-") as tmp:
        root = keep or Path(tmp) / "churn"
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("day {task.completed:.0f}/{task.total:.0f}"),
                            TimeElapsedColumn(), console=console)
        with progress:
            task = progress.add_task("training v1", total=days)

            def on_event(kind: str, data: dict) -> None:
                if kind == "v1":
                    verdict = "certified" if data["certified"] else f"[red]not certified[/] ({', '.join(data['failed'])})"
                    progress.console.print(f"[green]v1[/] {data['ref']} trained and {verdict}; deployed as the champion")
                    progress.update(task, description="serving")
                elif kind == "alert":
                    n = data["notice"]
                    colour = "green" if n.status == "resolved" else "yellow"
                    progress.console.print(f"day {data['day']:>2} [{colour}]alert {n.status}[/] {n.message}", highlight=False)
                elif kind == "retrain":
                    r = data["retrain"]
                    progress.console.print(f"day {data['day']:>2} [cyan]retraining[/] ({r.trigger}): {r.status}"
                                           + (f", {r.model}:{r.version} in an A/B test" if r.version and r.status == "deployed" else "")
                                           + (f": {r.error}" if r.error else ""), highlight=False)
                elif kind == "day":
                    if data["promoted"]:
                        progress.console.print(f"day {data['day']:>2} [green]promoted[/]: the A/B test found the winner")
                    progress.update(task, completed=data["day"] + 1, description=_day_line(data))

            result = run_demo(root, days=days, scenario=Scenario(drift_day=drift_day), on_event=on_event)
        project = Project.open(result.root)
        try:
            for record, evs in chains_of(project, project.settings.model_name, 3):
                show_timeline(record, evs)
            show_models(project)
        finally:
            project.close()
        gap = loop_gap(result)
        _demo_summary(result, closed=gap is None)
        if keep:
            console.print(f"Kept in {result.root}: try [bold]cd {result.root} && rung ui[/] (the story in the browser), "
                          "or [bold]rung timeline[/] and [bold]rung monitor --no-check[/]")
        if gap is not None:
            raise LoopNotClosed(f"the demo's loop did not close: {gap}")


def _day_line(data: dict) -> str:
    windows = data.get("windows") or []
    shares = [w.metrics.get("drift.share") for w in windows if "drift.share" in w.metrics]
    return f"serving · drift share {max(shares):.2f}" if shares else "serving"


def _demo_summary(result: Any, *, closed: bool) -> None:
    from rich.table import Table

    table = Table(title="rung demo: the loop, closed without a human" if closed else "rung demo: the loop did NOT close")
    table.add_column("what")
    table.add_column("value", justify="right")
    acc = result.accuracy

    def pct(value: Any) -> str:
        return f"{value:.1%}" if value is not None else "-"

    def day(value: Any) -> str:
        return f"day {value}" if value is not None else "never"

    table.add_row("drift starts", f"day {result.drift_day}")
    detected = (f"{day(result.drift_alert_day)} ({result.drift_alert_day - result.drift_day + 1} day(s) of data)"
                if result.drift_alert_day is not None else "never")
    table.add_row("drift detected (alert)", detected)
    table.add_row("retraining triggered", day(result.retrain_day))
    table.add_row("new version promoted by the A/B test", day(result.promoted_day))
    if result.promoted_day is not None:
        table.add_row("time to recover (drift to promotion)", f"{result.promoted_day - result.drift_day + 1} days")
    table.add_row("live accuracy before the drift", pct(acc.get("before_drift")))
    table.add_row("live accuracy during the drift (old model)", pct(acc.get("after_drift")))
    table.add_row("live accuracy after the promotion", pct(acc.get("after_promotion")))
    table.add_row("requests served over HTTP (failed)", f"{result.requests:,} ({result.failed})")
    table.add_row("wall time", f"{result.seconds:.0f} s")
    console.print(table)
