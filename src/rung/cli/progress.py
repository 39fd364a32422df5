"""Showing a pipeline's steps as they run: the progress bar and one line per finished step.

``rung run`` and ``rung reproduce`` both run the pipeline, and ``rung runs``
lists step and run statuses in the same words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rung.cli.output import err_console, fmt_duration

if TYPE_CHECKING:
    from rung.pipeline.runner import RunResult, StepUpdate
    from rung.project import Project

__all__ = ["STATUS_STYLE", "step_progress", "run_with_progress"]

STATUS_STYLE = {
    "succeeded": "[green]✓ ran[/]",
    "cached": "[cyan]↺ cached[/]",
    "pinned": "[cyan]⇣ pinned[/]",
    "failed": "[red]✗ failed[/]",
    "skipped": "[dim]- skipped[/]",
    "running": "[yellow]… running[/]",
    "pending": "[dim]pending[/]",
}


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
