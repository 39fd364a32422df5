"""Consoles, JSON output and small formatting helpers shared by the CLI modules."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console

__all__ = ["console", "err_console", "print_json", "one_line", "fmt_duration", "fmt_time", "fmt_metric", "WIDE"]

WIDE = 240


def _width(stream: TextIO) -> int | None:
    """The width to render for: ``None`` lets Rich ask the terminal or read ``COLUMNS``.

    With neither (a pipe, a CI log, ``| less``) Rich assumes 80 columns and
    cuts table cells to ``@champ…`` and ``2026-1…``; such output is read by
    a person or a script later, so it gets a wide width instead.
    """
    if os.environ.get("COLUMNS", "").strip().isdigit():
        return None
    try:
        return None if stream.isatty() else WIDE
    except (AttributeError, ValueError):  # a replaced or closed stream
        return WIDE


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def fmt_time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def fmt_metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
