"""``rung adopt models:/NAME/VERSION --reference FILE``: a version registered with MLflow's own API joins the loop.

From then on it is certified, deployed, monitored and retrained like a
version ``rung run`` registered (see :mod:`rung.adoption`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from rung.cli.context import JSON_OPTION, PROJECT_OPTION, open_project
from rung.cli.output import console, err_console, fmt_metric, print_json

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Attach ``adopt`` to the root app."""
    app.command("adopt")(adopt)


def adopt(
    ref: str = typer.Argument(..., help="models:/NAME/VERSION or models:/NAME@ALIAS, in the project's MLflow registry."),
    reference: Path = typer.Option(..., "--reference", help="Rows the model was built for (CSV or Parquet), "
                                   "with the target to measure it: its data snapshot and drift reference."),
    project_dir: Path | None = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Adopt a version registered with MLflow's own API: sha256, signature, reference data, lineage."""
    from rich.markup import escape

    from rung.adoption import adopt as adopt_version

    project = open_project(project_dir)
    primary = project.primary_metric
    try:
        if as_json:
            adopted = adopt_version(project, ref, reference, actor="cli")
        else:
            with err_console.status(f"adopting {ref}"):
                adopted = adopt_version(project, ref, reference, actor="cli")
    finally:
        project.close()
    if as_json:
        print_json(adopted.to_dict())
        return
    aliases = " ".join(f"@{a}" for a in adopted.aliases)
    console.print(f"[bold green]Adopted[/] {adopted.source} as [bold]{adopted.ref}[/] {aliases}", highlight=False)
    console.print(f"  {adopted.flavor}, {adopted.files} files (sha256 recorded), signature from its {adopted.signature_from}: "
                  f"{', '.join(adopted.inputs)}", highlight=False)
    ordered = sorted(adopted.metrics.items(), key=lambda item: item[0] != primary)  # the primary metric first
    shown = ", ".join(f"{k} {fmt_metric(v)}" for k, v in ordered[:4]) or "none"
    where = f"on the {adopted.reference_rows} reference rows" if adopted.metrics_from == "reference" else "as logged in its MLflow run"
    console.print(f"  reference: {adopted.reference_rows} rows; metrics {where}: {shown}", highlight=False)
    if adopted.metrics_from != "reference":
        console.print("  [yellow]the reference has no target column: certification compares the metrics its MLflow run logged[/]")
    for note in adopted.notes:
        console.print(f"  [yellow]{escape(note)}[/]", highlight=False)
    console.print(f"Next: rung certify {adopted.ref}", highlight=False)
