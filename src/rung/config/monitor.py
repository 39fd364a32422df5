"""The ``monitor:`` section of ``rung.yaml``: the request log and what the loop watches, window by window."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from rung.config.drift import DriftSettings
from rung.config.durations import Duration
from rung.config.section import Section

__all__ = ["RequestLogSettings", "MonitorSettings"]


_STORES = ("s3", "gs", "gcs", "abfs", "az")  # the object stores rung.objectstore opens


class RequestLogSettings(Section):
    """The gateway's request log: Parquet segments under ``uri``, one file per replica, model and day every ``flush_s``.

    ``uri`` is a folder (relative to the project) or an object store
    (``s3://bucket/prefix``, ``gs://``, ``abfs://``); ``path``, its old name,
    is still read.
    """

    enabled: bool = True  # false: nothing is recorded (rollouts then have no evidence to judge)
    uri: str | None = None  # a folder (relative to the project) or s3://bucket/prefix ...; default .rung/requests
    capacity: int = Field(default=100_000, ge=1)  # records queued in memory; beyond it they are dropped and counted
    max_request_rows: int | None = Field(default=None, ge=1)  # rows one request may queue (None: capacity / 4); more: dropped whole
    flush_s: float = Field(default=0.5, gt=0, le=60)  # a segment is written this often (when there is something to write)

    @model_validator(mode="before")
    @classmethod
    def _old_name(cls, data: Any) -> Any:
        """``path:`` (rung.yaml files written before object stores) is ``uri:``; both at once, differing, is an error."""
        if not isinstance(data, dict) or "path" not in data:
            return data
        data = dict(data)
        path = data.pop("path")
        if path is not None:
            if data.get("uri") not in (None, path):
                raise ValueError("give uri or path (its old name), not both")
            data["uri"] = path
        return data

    @field_validator("uri")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        scheme = parts.scheme.lower()
        if not value.strip():
            raise ValueError("a folder or an object store URI (s3://bucket/prefix), not empty")
        if len(scheme) > 1 and scheme != "file":  # one letter: a Windows drive
            if scheme not in _STORES:
                raise ValueError(f"{value!r}: use a folder or s3://, gs://, abfs:// (not {scheme}://)")
            if not parts.netloc:
                raise ValueError(f"{value!r}: name the bucket (s3://my-bucket/requests)")
        return value


class MonitorSettings(Section):
    """What the loop watches in production, window by window (see ``docs/monitoring.md``)."""

    request_log: RequestLogSettings = Field(default_factory=RequestLogSettings)
    window_s: Duration = Field(default=3600.0, gt=0, alias="window")  # length of a monitoring window: 1h, 1d ...
    label_delay_s: Duration = Field(default=86400.0, ge=0, alias="label_delay")  # windows are re-checked as labels arrive, this long
    min_rows: int = Field(default=100, ge=1)  # answered requests a window needs before drift is computed
    min_labels: int = Field(default=30, ge=1)  # requests with feedback a window needs before live metrics are computed
    max_backfill: int = Field(default=48, ge=1)  # windows caught up at most, after the scheduler was down
    drift: DriftSettings = Field(default_factory=DriftSettings)  # windows use distances unless a method is set here
