"""rung's metadata store: runs, steps, cache, model versions, events, rollouts, routes, tokens, leases and the loop's records."""

from __future__ import annotations

from rung.store.engine import normalise_url
from rung.store.metadata import MetadataStore
from rung.store.records import (
    Deployment,
    Event,
    Fence,
    ModelVersionRecord,
    PipelineRun,
    RouteRecord,
    StepRun,
    TokenRecord,
)

__all__ = ["MetadataStore", "normalise_url", "PipelineRun", "StepRun", "ModelVersionRecord", "Event", "RouteRecord", "TokenRecord", "Deployment", "Fence"]
