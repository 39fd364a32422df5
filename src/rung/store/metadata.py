"""The metadata store callers use: one class over every record kind, on SQLite by default or PostgreSQL by URL.

Each record kind keeps its queries in its own module (runs, model
versions, events, leases, delivery, tokens, feedback, the loop,
assessments, gateway replicas) as a mixin over :class:`~rung.store.engine.StoreBase`,
which owns the engine, the transactions, the retries and the
translation of database errors; this class only puts them together.
Everything it returns is a record from :mod:`rung.store.records` (a
replica's from :mod:`rung.store.replicas`) or a plain dict, never an ORM row.
"""

from __future__ import annotations

from rung.store.assessments import AssessmentRecords
from rung.store.delivery import DeliveryRecords
from rung.store.events import EventRecords
from rung.store.feedback import FeedbackRecords
from rung.store.leases import LeaseRecords
from rung.store.loop import LoopRecords
from rung.store.models import ModelVersionRecords
from rung.store.replicas import ReplicaRecords
from rung.store.runs import RunRecords
from rung.store.tokens import TokenRecords

__all__ = ["MetadataStore"]


class MetadataStore(
    RunRecords,
    ModelVersionRecords,
    EventRecords,
    LeaseRecords,
    DeliveryRecords,
    TokenRecords,
    FeedbackRecords,
    LoopRecords,
    AssessmentRecords,
    ReplicaRecords,
):
    """rung's own records: pipeline runs, steps, the step cache, model versions, events, rollouts, routes,
    tokens, leases, feedback, the loop's windows, state and retrainings, assessments, and the gateway replicas.

    Opening it migrates the schema; every method raises
    :class:`~rung.errors.StoreError` (or a subclass) for a database failure,
    naming the database and what could not be done.
    """
