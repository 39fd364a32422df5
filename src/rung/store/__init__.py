"""rung's metadata store: runs, steps, cache, model versions, events, rollouts, routes, tokens, leases, the loop's records, replicas."""

from __future__ import annotations

from rung.store.delivery import RouteListener, route_listener
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
from rung.store.replicas import ReplicaRecord

__all__ = ["MetadataStore", "normalise_url", "PipelineRun", "StepRun", "ModelVersionRecord", "Event", "RouteRecord", "TokenRecord", "Deployment", "Fence",
           "ReplicaRecord", "RouteListener", "route_listener"]
