"""``rung predict``: score a CSV, a Parquet file or a SQL query with a registered version, into a file."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import typer

from rung.cli.context import JSON_OPTION, PROJECT_OPTION, open_project
from rung.cli.output import console, err_console, fmt_duration, print_json

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)


def predict(
    model: str = typer.Argument(..., help="NAME (its @champion), NAME:VERSION or NAME@ALIAS."),
    input: str = typer.Argument(..., help="A .csv or .parquet file; with --sql, the query to run."),
    out: Path = typer.Option(..., "--out", "-o", help="The file to write: .parquet or .csv."),
    sql: str | None = typer.Option(None, "--sql", help="SQLAlchemy URL of the database INPUT is a query on."),
    keep: list[str] | None = typer.Option(None, "--keep", help="An input column to copy to the output (repeat it); default: all."),
    batch_rows: int = typer.Option(65_536, "--batch-rows", min=1, help="Rows read, scored and written at a time."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Batches scored at once (default: one per CPU)."),
    executor: str = typer.Option("local", "--executor", help="local, or ray: a Parquet file's row groups as Ray tasks."),
    project_dir: Path | None = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Score a file or a query with a model version; the output holds prediction, score and model_version columns."""
    from rung.batch import predict_file

    project = open_project(project_dir)
    _interrupt_on_sigterm()
    with _progress(quiet=as_json) as on_progress:
        result = predict_file(project, model, input, out, sql_url=sql, keep=keep or None, batch_rows=batch_rows,
                              threads=threads, executor=executor, on_progress=on_progress)
    if as_json:
        print_json(result.to_dict())
        return
    console.print(f"Scored {result.rows:,} rows with {result.ref} in {fmt_duration(result.seconds)} "
                  f"({result.rows_per_s:,.0f} rows/s) → {out} (sha256 {result.output_sha256[:12]}…)", highlight=False)


def _interrupt_on_sigterm() -> None:
    """``kill`` stops the run as Ctrl-C does: the temporary output is removed, nothing is left under the final name."""

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


class _progress:
    """A Rich progress bar of rows on a terminal; nothing otherwise. Used as ``with _progress() as on_progress``."""

    def __init__(self, *, quiet: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("[bold]scoring"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}{task.fields[of]} rows"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            disable=quiet or not err_console.is_terminal,
        )
        self._task: Any = None

    def __enter__(self) -> Any:
        self._bar.__enter__()
        self._task = self._bar.add_task("scoring", total=None, of="")

        def on_progress(done: int, total: int | None) -> None:
            self._bar.update(self._task, completed=done, total=total, of=f"/{total:,}" if total else "")

        return on_progress

    def __exit__(self, *exc: Any) -> None:
        self._bar.__exit__(*exc)
