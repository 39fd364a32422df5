"""Tables and trees that more than one command prints: the registered models, a retraining's chain.

``rung models`` and ``rung timeline`` print them, and so does ``rung demo`` at
its end; keeping them here lets those commands share them without importing
one another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rung.cli.output import console, fmt_metric, fmt_time
from rung.timeline import ICONS, describe

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["KEY_METRICS", "show_models", "show_timeline"]

KEY_METRICS = {"classification": ("roc_auc", "accuracy"), "regression": ("rmse", "r2")}


def show_models(project: Project) -> None:
    from rich.table import Table

    rows = project.models()
    table = Table(title="Registered models")
    metric_names = list(KEY_METRICS[project.settings.task])
    primary = project.settings.evaluate.primary_metric
    if primary and primary not in metric_names:
        metric_names.insert(0, primary)
    for column in ("model", "version", "aliases", "flavor", *metric_names, "run", "created"):
        table.add_column(column, justify="right" if column in metric_names or column == "version" else "left")
    for row in rows:
        table.add_row(
            row["name"],
            str(row["version"]),
            ", ".join(f"@{a}" for a in row["aliases"]) or "-",
            row["flavor"],
            *(fmt_metric(row["metrics"].get(m, "-")) for m in metric_names),
            row["run_id"][:8],
            row["created_at"][:16].replace("T", " "),
        )
    console.print(table)
    if not rows:
        console.print("No registered models yet: [bold]rung run[/] registers one.")


def show_timeline(record: Any, evs: list[Any]) -> None:
    from rich.tree import Tree

    tree = Tree(f"[bold]{record.model}[/] retraining {record.id[:8]} · {record.trigger} · {record.status}")
    for e in evs:
        tree.add(f"{ICONS.get(e.kind, '•')} [dim]{fmt_time(e.time)}[/] [bold]{e.kind}[/] {describe(e)}")
    console.print(tree)
