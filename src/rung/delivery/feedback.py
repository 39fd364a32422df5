"""Feedback: the ground truth (or reward) for a request, arriving any time after it.

One item is ``{"request_id": ..., "value": number}``: the true label of a
classifier with numeric classes, the true value of a regression, or a
reward/conversion (``deploy.outcome: reward``). It joins the request log by
request id. Sending the same value again is harmless (``duplicate``); a
different value for a request that has one is refused (``conflict``: the
first word stands); an id the request log does not know is ``unknown``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rung.delivery.clock import SYSTEM, Clock
from rung.errors import ConfigError, DataError
from rung.store import MetadataStore

__all__ = ["parse_items", "record", "read_file"]

MAX_ITEMS = 100_000


def parse_items(body: Any) -> list[tuple[str, float]]:
    """``{"request_id", "value"}`` or ``{"feedback": [...]}`` → pairs; :class:`ConfigError` names the bad field."""
    items = body.get("feedback") if isinstance(body, dict) and "feedback" in body else [body]
    if not isinstance(items, list) or not items:
        raise ConfigError("feedback: a non-empty list of {request_id, value} objects")
    if len(items) > MAX_ITEMS:
        raise ConfigError(f"feedback: at most {MAX_ITEMS:,} items per call")
    pairs = []
    for i, item in enumerate(items):
        where = "" if len(items) == 1 and "feedback" not in (body or {}) else f"feedback[{i}]."
        if not isinstance(item, dict):
            raise ConfigError(f"{where or 'body'}: expected an object with request_id and value")
        unknown = set(item) - {"request_id", "value"}
        if unknown:
            raise ConfigError(f"{where}{sorted(unknown)[0]}: unknown field (expected request_id and value)")
        request_id, value = item.get("request_id"), item.get("value")
        if not isinstance(request_id, str) or not 0 < len(request_id) <= 128:
            raise ConfigError(f"{where}request_id: a request id as returned by the gateway (1-128 characters)")
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}value: a finite number (the true label, value or reward)")
        pairs.append((request_id, float(value)))
    return pairs


def record(store: MetadataStore, items: list[tuple[str, float]], *, source: str, clock: Clock = SYSTEM) -> dict[str, list[str]]:
    """Store feedback; what happened to each request id (accepted, duplicate, conflict, unknown)."""
    return store.add_feedback(items, source=source, time=clock.now())


def read_file(path: Path) -> list[tuple[str, float]]:
    """A CSV or Parquet file with columns ``request_id`` and ``value``."""
    import pandas as pd

    if not path.exists():
        raise DataError(f"{path}: no such file")
    frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    missing = [c for c in ("request_id", "value") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (expected request_id and value)")
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = values.isna() | frame["request_id"].isna()
    if bad.any():
        raise DataError(f"{path}: row {int(bad.idxmax()) + 2} has no request_id or a value that is not a number")
    return list(zip(frame["request_id"].astype(str), values.astype(float)))
