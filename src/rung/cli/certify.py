"""``rung certify NAME:VERSION``: the release gate, for CI and deployment controllers.

Exit codes are the contract: 0 certified, 1 a check failed (the failing
checks named on stderr), 2 the gate could not run (unknown version,
MLflow unreachable, a model that cannot be loaded, bad settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from rung.cli.context import JSON_OPTION, PROJECT_OPTION, open_project
from rung.cli.output import console, err_console, fmt_metric, print_json

if TYPE_CHECKING:
    from rung.certify import CertificationReport

__all__ = ["register", "show_report"]

STATUS_STYLE = {"passed": "[green]passed[/]", "failed": "[red]failed[/]", "skipped": "[dim]skipped[/]"}


def register(app: typer.Typer) -> None:
    """Attach ``certify`` to the root app."""
    app.command("certify")(certify)


def show_report(report: CertificationReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    champion = f"champion {report.name}:{report.champion}" if report.champion is not None else "no champion to compare"
    table = Table(title=f"Certification of {report.ref} ({champion})")
    table.add_column("check", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("observed", justify="right", overflow="fold")
    table.add_column("expected", overflow="fold")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        dim = check.status == "skipped"
        cells = [_cell(check.observed), check.expected, check.detail]
        table.add_row(
            check.name,
            STATUS_STYLE[check.status],
            *(f"[dim]{escape(c)}[/]" if dim else escape(c) for c in cells),
        )
    console.print(table)
    counts = report.counts()
    tally = f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped in {report.duration_s:.1f} s"
    if report.certified:
        console.print(f"[bold green]{report.ref} certified[/]: {tally}")
    else:
        console.print(f"[bold red]{report.ref} not certified[/]: {tally}")


def _cell(value: Any) -> str:
    return "-" if value is None else fmt_metric(value)


def certify(
    ref: str = typer.Argument(..., help="NAME:VERSION, e.g. churn:2"),
    project_dir: Path | None = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
    skip_tests: bool = typer.Option(False, "--skip-tests", help="Do not run the project's own pytest tests."),
) -> None:
    """Gate a version: integrity, thresholds, vs champion, slices, latency, schema, tests, behaviour."""
    from rung.certify import certify as certify_version
    from rung.errors import CertificationError, RungError

    try:
        project = open_project(project_dir)
        if as_json:
            report = certify_version(project, ref, actor="cli", skip_tests=skip_tests)
        else:
            with err_console.status(f"certifying {ref}"):
                report = certify_version(project, ref, actor="cli", skip_tests=skip_tests)
    except CertificationError:
        raise
    except RungError as exc:
        # whatever kept the gate from running is "could not run" (2), never "failed" (1)
        raise CertificationError(str(exc)) from exc
    if as_json:
        print_json(report.to_dict())
    else:
        show_report(report)
    if not report.certified:
        names = ", ".join(c.name for c in report.failed)
        err_console.print(
            f"[bold red]error:[/] {report.ref} is not certified: {len(report.failed)} check(s) failed ({names})",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
