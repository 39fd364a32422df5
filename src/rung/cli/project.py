"""``rung init``, ``rung run``, ``rung runs`` and ``rung demo``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from rung.cli.output import console, err_console, fmt_duration, fmt_metric, fmt_time, print_json

if TYPE_CHECKING:
    from rung.pipeline.runner import RunResult, StepUpdate
    from rung.project import Project

__all__ = ["register", "open_project", "run_with_progress", "step_progress"]

PROJECT_OPTION = typer.Option(None, "--project", "-C", help="Project directory (default: here or the nearest parent with rung.yaml).")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")

STATUS_STYLE = {
    "succeeded": "[green]✓ ran[/]",
    "cached": "[cyan]↺ cached[/]",
    "pinned": "[cyan]⇣ pinned[/]",
    "failed": "[red]✗ failed[/]",
    "skipped": "[dim]- skipped[/]",
    "running": "[yellow]… running[/]",
    "pending": "[dim]pending[/]",
}


def open_project(path: Optional[Path]) -> Project:
    from rung.project import Project

    return Project.open(path)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("run")(run)
    app.command("runs")(runs)
    app.command("demo")(demo)


def init(
    name: Optional[str] = typer.Argument(None, help="Project name (also the registered model's name); with --data, default: the directory's name."),
    template: str = typer.Option("tabular-classification", "--template", "-t", help="tabular-classification or tabular-regression."),
    directory: Optional[Path] = typer.Option(None, "--dir", help="Where to create it (default: ./NAME; with --data: here)."),
    rows: int = typer.Option(4000, "--rows", min=200, help="Rows of sample data to generate."),
    git: bool = typer.Option(True, "--git/--no-git", help="Start a git repository (with a first commit) unless already inside one."),
    data: Optional[str] = typer.Option(None, "--data", help="In an existing repository: the training data (CSV or Parquet)."),
    target: Optional[str] = typer.Option(None, "--target", help="With --data: the column to predict."),
    train: Optional[str] = typer.Option(None, "--train", help="With --data: your training function, FILE.py:FUNCTION, called as FUNCTION(X, y)."),
    task: Optional[str] = typer.Option(None, "--task", help="With --data: classification or regression (default: guessed from the target)."),
) -> None:
    """Create a project that runs green out of the box, or set rung up around an existing repository.

    Where rung starts the git repository it also makes the first commit, so
    lineage has a commit from the first run; inside an existing repository
    it commits nothing and prints what to commit.
    """
    import os

    from rung.errors import RungError
    from rung.templates import adopt_repository, init_project

    if data is not None or target is not None or train is not None:
        if not (data and target and train):
            raise RungError("rung init in an existing repository needs --data FILE, --target COLUMN and --train FILE.py:FUNCTION")
        if task is not None and task not in ("classification", "regression"):
            raise RungError(f"--task {task}: use classification or regression")
        made = adopt_repository(directory or Path.cwd(), data=data, target=target, train=train, name=name, task=task, git=git)
        console.print(f"[green]Set up rung[/] in {made.root}: {', '.join(made.files)}", soft_wrap=True)
        to_commit = made.files
    else:
        if name is None:
            raise RungError("give the new project a NAME (rung init churn), or set rung up here with --data, --target and --train")
        made = init_project(name, template, directory, rows=rows, git=git)
        console.print(f"[green]Created[/] {made.root} ([bold]{template}[/])", soft_wrap=True)
        to_commit = [os.path.relpath(made.root)]
    if made.git is not None:
        console.print(made.git.advice(to_commit), soft_wrap=True, highlight=False, markup=False)
    where = "" if made.root == Path.cwd().resolve() else f"cd {made.root} && "
    console.print(f"Next: [bold]{where}rung run[/]", soft_wrap=True)


@contextmanager
def step_progress(title: str, total: int, *, quiet: bool = False) -> Iterator[Callable[[StepUpdate], None]]:
    """A progress bar and one line per finished step; yields the runner's callback."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=quiet,
    ) as progress:
        task = progress.add_task(title, total=total)

        def on_update(update: StepUpdate) -> None:
            if update.status == "running":
                progress.update(task, description=update.step)
                return
            progress.advance(task)
            if quiet:
                return
            outcome = update.outcome
            took = f" {fmt_duration(outcome.duration_s)}" if outcome else ""
            retries = f" after {outcome.attempts} attempts" if outcome and outcome.attempts > 1 else ""
            progress.console.print(f"  {STATUS_STYLE.get(update.status, update.status)} {update.step}{took}{retries}")

        yield on_update


def run_with_progress(project: Project, *, quiet: bool = False, **options: Any) -> RunResult:
    """Run the pipeline, showing progress."""
    total = len(project.load_pipeline().steps)
    with step_progress(f"pipeline {project.settings.name}", total, quiet=quiet) as on_update:
        return project.run(on_update=on_update, **options)


def run(
    project_dir: Optional[Path] = PROJECT_OPTION,
    no_cache: bool = typer.Option(False, "--no-cache", help="Run every step even if its inputs are unchanged."),
    trigger: str = typer.Option("manual", "--trigger", help="Why this run starts (recorded): manual, schedule, ci, ..."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run the pipeline: ingest ▸ validate ▸ train ▸ evaluate ▸ register."""
    from rung.errors import StepFailed

    project = open_project(project_dir)
    try:
        result = run_with_progress(project, quiet=as_json, use_cache=not no_cache, trigger=trigger)
    except StepFailed as failure:
        report = getattr(failure, "report", None)
        if report and not as_json:
            _print_validation(report)
        raise
    record = result.run
    if as_json:
        print_json(_run_dict(record) | {"steps": [s.__dict__ for s in result.steps]})
        return
    metrics = record.metrics.get("overall", {})
    primary = project.primary_metric
    ordered = ([primary] if primary in metrics else []) + [k for k in metrics if k != primary]
    shown = ", ".join(f"{k} {fmt_metric(metrics[k])}" for k in ordered[:4])
    console.print(
        f"[green]Run {record.id[:8]} succeeded[/] in {fmt_duration(record.duration_s)} "
        f"({record.cache_hits}/{record.steps_total} steps cached)"
    )
    if shown:
        console.print(f"  metrics: {shown}")
    if record.model_version is not None:
        console.print(f"  model: [bold]{record.model_name}:{record.model_version}[/]  (see `rung lineage {record.model_name}:{record.model_version}`)")


def _print_validation(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="Data validation failed: every failing check", title_style="bold red")
    for column in ("check", "column", "observed", "expected", "failures", "samples"):
        table.add_column(column)
    for check in report.get("checks", []):
        if check.get("passed"):
            continue
        samples = ", ".join(str(s) for s in check.get("samples", [])[:5])
        table.add_row(
            check["name"],
            check.get("column") or "-",
            str(check.get("observed") if check.get("observed") is not None else "-"),
            str(check.get("expected") or "-"),
            str(check.get("failures") or "-"),
            samples[:120] or "-",
        )
    err_console.print(table)


def _run_dict(record: Any) -> dict[str, Any]:
    data = dict(record.__dict__)
    data["duration_s"] = record.duration_s
    return data


def runs(
    run_id: Optional[str] = typer.Argument(None, help="Show the steps of this run (an id or its prefix)."),
    project_dir: Optional[Path] = PROJECT_OPTION,
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many runs to list."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Pipeline runs: status, duration, trigger, cache hits, metrics, model version."""
    from rich.table import Table

    project = open_project(project_dir)
    if run_id:
        record = project.get_run(run_id)
        steps = project.store.steps(record.id)
        if as_json:
            print_json(_run_dict(record) | {"steps": [s.__dict__ for s in steps]})
            return
        table = Table(title=f"Run {record.id} · {record.status} · {record.trigger}")
        for column in ("step", "status", "duration", "attempts", "log / error"):
            table.add_column(column)
        for s in steps:
            detail = s.error or (s.log_path if s.status in ("succeeded", "failed") else "")
            table.add_row(s.name, STATUS_STYLE.get(s.status, s.status), fmt_duration(s.duration_s), str(s.attempts), detail or "")
        console.print(table)
        return
    records = project.runs(limit)
    if as_json:
        print_json([_run_dict(r) for r in records])
        return
    metric = project.primary_metric
    table = Table(title=f"Pipeline runs of {project.settings.name}")
    for column in ("run", "started", "status", "trigger", "duration", "cached", metric, "model"):
        table.add_column(column, justify="right" if column in ("duration", "cached", metric) else "left")
    for r in records:
        value = r.metrics.get("overall", {}).get(metric)
        table.add_row(
            r.id[:8],
            fmt_time(r.started_at),
            STATUS_STYLE.get(r.status, r.status),
            r.trigger,
            fmt_duration(r.duration_s),
            f"{r.cache_hits}/{r.steps_total}",
            fmt_metric(value) if value is not None else "-",
            f"{r.model_name}:{r.model_version}" if r.model_version else "-",
        )
    console.print(table)
    if not records:
        console.print("No runs yet: start one with [bold]rung run[/].")


def demo(
    keep: Optional[Path] = typer.Option(None, "--keep", help="Create the demo project here and keep it to explore."),
    days: int = typer.Option(20, "--days", min=12, max=120, help="Simulated days to play."),
) -> None:
    """The whole loop on a bundled churn scenario, under a simulated clock: drift ▸ alert ▸ retrain ▸ A/B ▸ recovery."""
    import logging
    import tempfile

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from rung.cli.loop import chains_of, show_timeline
    from rung.cli.models import show_models
    from rung.demo.run import loop_gap, run_demo
    from rung.errors import LoopNotClosed, ProjectExists
    from rung.project import Project

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

            result = run_demo(root, days=days, on_event=on_event)
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
