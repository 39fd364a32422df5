"""rung's metadata store: runs, steps, cache, model versions and events."""

from __future__ import annotations

from rung.store.records import Deployment, Event, Fence, ModelVersionRecord, PipelineRun, RouteRecord, StepRun, TokenRecord
from rung.store.sql import MetadataStore, normalise_url

__all__ = ["MetadataStore", "normalise_url", "PipelineRun", "StepRun", "ModelVersionRecord", "Event", "RouteRecord", "TokenRecord", "Deployment", "Fence"]
