"""``rung models``, ``rung lineage`` and ``rung reproduce``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rung.cli.context import JSON_OPTION, PROJECT_OPTION, open_project
from rung.cli.output import console, fmt_duration, fmt_metric, print_json
from rung.cli.progress import step_progress
from rung.cli.views import show_models

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["register", "show_lineage"]

def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("lineage")(lineage)
    app.command("reproduce")(reproduce)


def models(project_dir: Path | None = PROJECT_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Registered models and versions, with aliases and key metrics; which versions load with pickle.

    A PyTorch module or an MLflow python_function model is unpickled when it
    is loaded, which runs code from the file: its sha256 is checked first,
    but whoever can register a version can run code where it is served.
    scikit-learn (skops), XGBoost, LightGBM and ONNX files are data.
    """
    from rung.models.flavours import PICKLED

    project = open_project(project_dir)
    if as_json:
        print_json([row | {"pickle": row["flavor"] in PICKLED} for row in project.models()])
        return
    show_models(project)
    pickled = [f"{row['name']}:{row['version']} ({row['flavor']})" for row in project.models() if row["flavor"] in PICKLED]
    if pickled:
        console.print(f"[yellow]pickle[/]: {', '.join(pickled)} deserialise with pickle when loaded (code from the file runs; "
                      "its sha256 is checked first). scikit-learn, XGBoost, LightGBM and ONNX versions do not.")


def show_lineage(project: Project, ref: str) -> None:
    from rich.tree import Tree

    info = project.lineage(ref)
    model = info["model"]
    tree = Tree(f"[bold]{model['name']}:{model['version']}[/]  {model['flavor']}  sha256 {str(info['sha256'])[:16]}…")
    data = info["data"]
    tree.add(f"[cyan]data[/] snapshot {data.get('snapshot', '-')[:16]}…  {data.get('rows', '?')} training rows  from {data.get('source', '-')}")
    code = info["code"]
    commit = code.get("git_commit")
    dirty = " [yellow](uncommitted changes)[/]" if code.get("git_dirty") else ""
    tree.add(f"[cyan]code[/] {'commit ' + commit[:12] if commit else 'no git commit'}{dirty}")
    params = tree.add("[cyan]params[/]")
    for key, value in info["params"].items():
        params.add(f"{key} = {value}")
    env = info["environment"]
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    tree.add(f"[cyan]environment[/] Python {env.get('python', '?')}; {packages}")
    run = info["pipeline_run"]
    tree.add(f"[cyan]pipeline run[/] {run['id'][:8]} ({run['trigger']}, {run['status']}, {fmt_duration(run['duration_s'])})")
    tree.add(f"[cyan]MLflow run[/] {info['mlflow_run_id']}")
    if info.get("adopted_from"):
        mlflow = info.get("mlflow") or {}
        tree.add(f"[cyan]adopted from[/] {info['adopted_from']} (registered {mlflow.get('registered_at') or '?'} by {mlflow.get('registered_by') or '?'})")
    metrics = ", ".join(f"{k} {fmt_metric(v)}" for k, v in info["metrics"].items())
    tree.add(f"[cyan]metrics[/] {metrics}")
    console.print(tree)


def lineage(
    ref: str = typer.Argument(..., help="NAME:VERSION, e.g. churn:1"),
    project_dir: Path | None = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Data snapshot ▸ code commit ▸ params ▸ environment ▸ run ▸ model version."""
    project = open_project(project_dir)
    if as_json:
        print_json(project.lineage(ref))
    else:
        show_lineage(project, ref)


def reproduce(
    ref: str = typer.Argument(..., help="NAME:VERSION, e.g. churn:1"),
    project_dir: Path | None = PROJECT_OPTION,
    tolerance: float = typer.Option(1e-6, "--tolerance", min=0.0, help="Allowed relative difference per metric."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Re-run from the recorded snapshot, commit and params; compare metrics (exit 1 if they differ)."""
    from rich.table import Table

    from rung.errors import ReproductionMismatch
    from rung.reproduce import reproduce as run_reproduction

    project = open_project(project_dir)
    if as_json:
        result = run_reproduction(project, ref, tolerance=tolerance)
        print_json(result.to_dict())
    else:
        console.print(f"Reproducing [bold]{ref}[/] from its recorded snapshot and params")
        with step_progress(f"reproduce {ref}", len(project.load_pipeline().steps)) as on_update:
            result = run_reproduction(project, ref, tolerance=tolerance, on_update=on_update)
        table = Table(title=f"{ref} reproduced by run {result.run_id[:8]} ({result.code})")
        for column in ("metric", "original", "reproduced", "difference", ""):
            table.add_column(column, justify="right" if column not in ("metric", "") else "left")
        for row in result.comparisons:
            diff = row["difference"]
            table.add_row(
                row["metric"],
                fmt_metric(row["original"]),
                fmt_metric(row["reproduced"]),
                "-" if diff is None else f"{diff:.2e}",
                "[green]✓[/]" if row["ok"] else "[red]✗[/]",
            )
        console.print(table)
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}")
    if not result.ok:
        differing = [r["metric"] for r in result.comparisons if not r["ok"]]
        raise ReproductionMismatch(
            f"{ref} did not reproduce: {len(differing)} metric(s) differ beyond tolerance {tolerance} ({', '.join(differing[:5])})"
        )
    if not as_json:
        console.print(f"[green]{ref} reproduced[/]: every metric within {tolerance}")

