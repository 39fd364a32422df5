"""Feedback: the ground truth (or reward) for a request, arriving any time after it.

One item is ``{"request_id": ..., "value": number}``: the true label of a
classifier with numeric classes, the true value of a regression, or a
reward/conversion (``deploy.outcome: reward``). The id is the request id for
a single-row request (or row 0 of any request), ``REQ#<row>`` for another
row of a multi-row request (see :mod:`rung.monitor.requestlog`).

Feedback is stored in the metadata store and joined to the request log when
the log is read, so it may arrive before the log segment holding its
request (another gateway's segment, written a moment later), or long after.
Sending the same value again is harmless (``duplicate``); a different value
for an id that has one is refused (``conflict``: the first word stands).

Whether the request is in the log is checked only where a scan is affordable:
``rung feedback import`` looks the ids up in the last ``lookback_days`` of
the log (one DuckDB join over those days' ``request_id`` and ``row``
columns) and reports those it did not find as ``unmatched`` (kept all the
same). ``POST /v2/feedback`` does not scan the log on a request path: its
answer says ``"unmatched": null`` (not checked).
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.clock import SYSTEM, Clock
from rung.errors import ConfigError, DataError
from rung.store import MetadataStore

if TYPE_CHECKING:
    from rung.monitor.logreader import RequestLogReader

__all__ = ["parse_items", "record", "read_file"]

MAX_ITEMS = 100_000


def parse_items(body: Any) -> list[tuple[str, float]]:
    """``{"request_id", "value"}`` or ``{"feedback": [...]}`` → pairs; :class:`ConfigError` names the bad field."""
    items = body.get("feedback") if isinstance(body, dict) and "feedback" in body else [body]
    if not isinstance(items, list) or not items:
        raise ConfigError("feedback: a non-empty list of {request_id, value} objects", field="feedback")
    if len(items) > MAX_ITEMS:
        raise ConfigError(f"feedback: at most {MAX_ITEMS:,} items per call", field="feedback")
    pairs = []
    for i, item in enumerate(items):
        where = "" if len(items) == 1 and "feedback" not in (body or {}) else f"feedback[{i}]."
        if not isinstance(item, dict):
            raise ConfigError(f"{where or 'body'}: expected an object with request_id and value", field=where.rstrip(".") or "body")
        unknown = set(item) - {"request_id", "value"}
        if unknown:
            raise ConfigError(f"{where}{sorted(unknown)[0]}: unknown field (expected request_id and value)",
                              field=f"{where}{sorted(unknown)[0]}")
        request_id, value = item.get("request_id"), item.get("value")
        if not isinstance(request_id, str) or not 0 < len(request_id) <= 128:
            raise ConfigError(f"{where}request_id: a request id as returned by the gateway (1-128 characters)",
                              field=f"{where}request_id")
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}value: a finite number (the true label, value or reward)", field=f"{where}value")
        pairs.append((request_id, float(value)))
    return pairs


def record(store: MetadataStore, items: list[tuple[str, float]], *, source: str, clock: Clock = SYSTEM,
           log: RequestLogReader | None = None, lookback_days: float = 7.0) -> dict[str, list[str]]:
    """Store feedback; what happened to each id: ``accepted``, ``duplicate``, ``conflict``.

    With ``log``, also ``unmatched``: the accepted ids not answered in the
    last ``lookback_days`` of the request log (kept: they join when read).
    """
    now = clock.now()
    models = log.match([request_id for request_id, _ in items], since=now - timedelta(days=lookback_days)) if log else {}
    outcome = store.add_feedback(items, source=source, time=now, models=models)
    if log is not None:
        outcome["unmatched"] = [request_id for request_id in outcome["accepted"] if request_id not in models]
    return outcome


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
    return list(zip(frame["request_id"].astype(str), values.astype(float), strict=True))
