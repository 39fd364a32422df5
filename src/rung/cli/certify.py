"""``rung certify NAME:VERSION``: the release gate (filled in by the certification module)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Attach ``certify`` to the root app."""
