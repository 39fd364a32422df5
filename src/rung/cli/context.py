"""The options every project command takes, and opening the project they name.

Command modules import these from here, never from one another, so each verb
group can be registered (and read) on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["PROJECT_OPTION", "JSON_OPTION", "open_project"]

PROJECT_OPTION = typer.Option(None, "--project", "-C", help="Project directory (default: here or the nearest parent with rung.yaml).")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")


def open_project(path: Path | None, overrides: dict[str, Any] | None = None) -> Project:
    """The project at ``path`` or the nearest parent with rung.yaml; imported here so ``rung --help`` stays fast.

    ``overrides`` are a command's flags as dotted settings (``{"serve.processes": "2"}``).
    """
    from rung.project import Project

    return Project.open(path, overrides)
