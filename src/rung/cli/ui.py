"""``rung ui``: the operations dashboard."""

from __future__ import annotations

from pathlib import Path

import typer

from rung.cli.context import PROJECT_OPTION, open_project
from rung.cli.output import console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)


def ui(
    host: str | None = typer.Option(None, "--host", help="Interface (default ui.host, 127.0.0.1: this machine only)."),
    port: int | None = typer.Option(None, "--port", help="Port (default ui.port, 8701)."),
    project_dir: Path | None = PROJECT_OPTION,
) -> None:
    """The operations dashboard in the browser: overview, models, monitoring, timeline, maturity, actions."""
    from rung.ui import serve_ui

    project = open_project(project_dir)
    settings = project.settings.ui
    console.print(f"rung ui: http://{host or settings.host}:{port or settings.port} "
                  f"(reading {'needs a viewer token' if settings.read == 'token' else 'open'}; actions need a deployer "
                  "token). Ctrl-C stops it.")
    serve_ui(project, host=host, port=port)
