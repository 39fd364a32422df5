"""The ``monitor:`` section of ``rung.yaml``: the request log and what the loop watches, window by window."""

from __future__ import annotations

from pydantic import Field

from rung.config.drift import DriftSettings
from rung.config.durations import Duration
from rung.config.section import Section

__all__ = ["RequestLogSettings", "MonitorSettings"]


class RequestLogSettings(Section):
    """The gateway's request log: Parquet segments under ``path``, one file per model and day every ``flush_s``."""

    enabled: bool = True  # false: nothing is recorded (rollouts then have no evidence to judge)
    path: str | None = None  # relative to the project; default .rung/requests
    capacity: int = Field(default=100_000, ge=1)  # records queued in memory; beyond it they are dropped and counted
    max_request_rows: int | None = Field(default=None, ge=1)  # rows one request may queue (None: capacity / 4); more: dropped whole
    flush_s: float = Field(default=0.5, gt=0, le=60)  # a segment is written this often (when there is something to write)


class MonitorSettings(Section):
    """What the loop watches in production, window by window (see ``docs/monitoring.md``)."""

    request_log: RequestLogSettings = Field(default_factory=RequestLogSettings)
    window_s: Duration = Field(default=3600.0, gt=0, alias="window")  # length of a monitoring window: 1h, 1d ...
    label_delay_s: Duration = Field(default=86400.0, ge=0, alias="label_delay")  # windows are re-checked as labels arrive, this long
    min_rows: int = Field(default=100, ge=1)  # answered requests a window needs before drift is computed
    min_labels: int = Field(default=30, ge=1)  # requests with feedback a window needs before live metrics are computed
    max_backfill: int = Field(default=48, ge=1)  # windows caught up at most, after the scheduler was down
    drift: DriftSettings = Field(default_factory=DriftSettings)  # windows use distances unless a method is set here
