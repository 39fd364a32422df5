"""Durations as ``rung.yaml`` writes them: seconds (``3600``) or a number and a unit (``30m``, ``6h``, ``1h30m``).

Alert reminders, trigger cooldowns and monitoring windows all take them, and
messages print them back the same way (:func:`format_duration`), so what a
user reads is what they would write.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

__all__ = ["parse_duration", "format_duration", "Duration"]

_DURATION = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a number of seconds, or a number with a unit (``30m``, ``6h``, ``1d``, ``1h30m``)."""
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.fullmatch(value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(value))
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration; write seconds (3600) or a number and a unit: 30m, 6h, 1d")
    return seconds


def format_duration(seconds: float) -> str:
    """``21600`` -> ``"6h"``, ``5400`` -> ``"1h30m"``: the way ``rung.yaml`` writes durations."""
    rest, parts = round(seconds), []
    for unit in ("d", "h", "m", "s"):
        count, rest = divmod(rest, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# Seconds, written as a number or "6h" in rung.yaml.
Duration = Annotated[float, BeforeValidator(parse_duration)]
