"""``rung serve`` and ``rung token``: the gateway and its API tokens."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Attach ``serve`` and ``token`` to the root app."""
