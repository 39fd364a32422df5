"""``rung init``, ``rung run`` and ``rung runs``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rung.cli.context import JSON_OPTION, PROJECT_OPTION, open_project
from rung.cli.output import console, err_console, fmt_duration, fmt_metric, fmt_time, print_json
from rung.cli.progress import STATUS_STYLE, run_with_progress

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("run")(run)
    app.command("runs")(runs)


def init(
    name: str | None = typer.Argument(None, help="Project name (also the registered model's name); with --data, default: the directory's name."),
    template: str = typer.Option("tabular-classification", "--template", "-t", help="tabular-classification or tabular-regression."),
    directory: Path | None = typer.Option(None, "--dir", help="Where to create it (default: ./NAME; with --data: here)."),
    rows: int = typer.Option(4000, "--rows", min=200, help="Rows of sample data to generate."),
    git: bool = typer.Option(True, "--git/--no-git", help="Start a git repository (with a first commit) unless already inside one."),
    data: str | None = typer.Option(None, "--data", help="In an existing repository: the training data (CSV or Parquet)."),
    target: str | None = typer.Option(None, "--target", help="With --data: the column to predict."),
    train: str | None = typer.Option(None, "--train", help="With --data: your training function, FILE.py:FUNCTION, "
                                     "called as FUNCTION(X, y) or FUNCTION(frame); default: rung's model."),
    task: str | None = typer.Option(None, "--task", help="With --data: classification or regression (default: guessed from the target)."),
    prepare: str | None = typer.Option(None, "--prepare", help="With --data: FILE.py:FUNCTION preparing raw rows for the model "
                                       "(default: a `prepare` function next to --train)."),
) -> None:
    """Create a project that runs green out of the box, or set rung up around an existing repository.

    Where rung starts the git repository it also makes the first commit, so
    lineage has a commit from the first run; inside an existing repository
    it commits nothing and prints what to commit.
    """
    import os

    from rung.errors import RungError
    from rung.templates import adopt_repository, init_project

    if data is not None or target is not None or train is not None or prepare is not None:
        if not (data and target):
            raise RungError("rung init in an existing repository needs --data FILE and --target COLUMN (and optionally --train FILE.py:FUNCTION)")
        made = adopt_repository(directory or Path.cwd(), data=data, target=target, train=train, name=name, task=task,
                                prepare=prepare, git=git)
        console.print(f"[green]Set up rung[/] in {made.root}: {', '.join(made.files)}", soft_wrap=True)
        for line in made.inferred:
            console.print(f"  inferred: {line}", soft_wrap=True, highlight=False, markup=False)
        for line in made.review:
            console.print(f"  review:   {line}", soft_wrap=True, highlight=False, markup=False)
        to_commit = made.files
    else:
        if name is None:
            raise RungError("give the new project a NAME (rung init churn), or set rung up here with --data and --target")
        made = init_project(name, template, directory, rows=rows, git=git)
        console.print(f"[green]Created[/] {made.root} ([bold]{template}[/])", soft_wrap=True)
        to_commit = [os.path.relpath(made.root)]
    if made.git is not None:
        console.print(made.git.advice(to_commit), soft_wrap=True, highlight=False, markup=False)
    where = "" if made.root == Path.cwd().resolve() else f"cd {made.root} && "
    console.print(f"Next: [bold]{where}rung run[/]", soft_wrap=True)


def run(
    project_dir: Path | None = PROJECT_OPTION,
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
    _print_warnings(project.state_dir / "runs" / record.id / "validation.json")


def _print_warnings(path: Path) -> None:
    """The validation checks that passed with a warning (a column new in the data), one line each."""
    import json

    try:
        checks = json.loads(path.read_text()).get("checks", [])
    except (OSError, ValueError):
        return  # validate was cached or is not part of this pipeline
    for check in checks:
        if check.get("warning"):
            where = f"{check['column']}: " if check.get("column") else ""
            console.print(f"  [yellow]warning[/]: {where}{check['name']} ({check.get('observed')}); expected {check.get('expected')}",
                          soft_wrap=True, highlight=False)


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
    run_id: str | None = typer.Argument(None, help="Show the steps of this run (an id or its prefix)."),
    project_dir: Path | None = PROJECT_OPTION,
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
