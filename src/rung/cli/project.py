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
    name: str = typer.Argument(..., help="Project name (also the registered model's name)."),
    template: str = typer.Option("tabular-classification", "--template", "-t", help="tabular-classification or tabular-regression."),
    directory: Optional[Path] = typer.Option(None, "--dir", help="Where to create it (default: ./NAME)."),
    rows: int = typer.Option(4000, "--rows", min=200, help="Rows of sample data to generate."),
    git: bool = typer.Option(True, "--git/--no-git", help="Start a git repository in the new project."),
) -> None:
    """Create a project that runs green out of the box."""
    from rung.templates import create_project

    root = create_project(name, template, directory, rows=rows, git=git)
    console.print(f"[green]Created[/] {root} ([bold]{template}[/])")
    console.print(f"Next: [bold]cd {root} && rung run[/]")


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
    shown = ", ".join(f"{k} {fmt_metric(v)}" for k, v in list(metrics.items())[:4])
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


def _commit_all(root: Path, message: str) -> None:
    """Commit the demo project so its lineage shows a code version (skipped without git)."""
    import subprocess

    identity = ["-c", "user.name=rung demo", "-c", "user.email=demo@rung.invalid"]
    try:
        subprocess.run(["git", "add", "-A"], cwd=root, check=True, capture_output=True)
        subprocess.run(["git", *identity, "commit", "-qm", message], cwd=root, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pass


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

    from rung.evaluation import PRIMARY_METRIC

    project = open_project(project_dir)
    if run_id:
        record = project.store.get_run(run_id)
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
    metric = project.settings.evaluate.primary_metric or PRIMARY_METRIC[project.settings.task]
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
) -> None:
    """Create a sample project, run its pipeline, and show the registry and lineage."""
    import tempfile

    from rung.cli.models import show_lineage, show_models
    from rung.project import Project
    from rung.templates import create_project

    with tempfile.TemporaryDirectory(prefix="rung-demo-") as tmp:
        root = create_project("churn", "tabular-classification", keep or Path(tmp) / "churn")
        console.rule("[bold]rung demo[/]: churn, tabular classification")
        console.print(f"Project: {root}")
        _commit_all(root, "rung demo: the generated project")
        project = Project.open(root)
        first = run_with_progress(project)
        console.print(f"[green]First run[/] {first.run.id[:8]} in {fmt_duration(first.run.duration_s)}: registered churn:{first.run.model_version}")
        second = run_with_progress(project)
        console.print(
            f"[green]Second run[/] {second.run.id[:8]} in {fmt_duration(second.run.duration_s)}: "
            f"{second.run.cache_hits}/{second.run.steps_total} steps from the cache"
        )
        show_models(project)
        show_lineage(project, f"churn:{first.run.model_version}")
        if keep:
            console.print(f"Kept in {root}: try [bold]cd {root} && rung runs[/]")
        project.close()
