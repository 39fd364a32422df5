"""The ``serve:`` and ``ui:`` sections of ``rung.yaml``: the two HTTP servers rung runs, the gateway and the dashboard."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import Field, field_validator

from rung.config.section import Section

__all__ = ["BatchingSettings", "ServeSettings", "UiSettings", "REPLICA_ID"]

# A replica id names a folder (the request log's ``replica=<id>/`` prefix) and a row: a safe path component.
AUTO_PROCESSES_MAX = 8
REPLICA_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class BatchingSettings(Section):
    """Micro-batching of concurrent single-row requests to one version."""

    enabled: bool = True
    max_batch_size: int = Field(default=64, ge=1, le=100_000)
    # How long a batch waits for company. Unset: 1 ms when one predict call costs 2 ms or more
    # (the batch shares that cost), else 0 (measured at load time; see rung.serving.batching).
    max_wait_ms: float | None = Field(default=None, ge=0, le=1000)


class ServeSettings(Section):
    """``rung serve``: the gateway."""

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=1, le=65535)
    # The Open Inference Protocol's gRPC service, on the same host; 0 turns it off.
    grpc_port: int = Field(default=8702, ge=0, le=65535)
    key_field: str | None = None  # an input column that makes routing sticky when no X-Rung-Key header is sent
    protect_predict: bool = False  # require a viewer token on prediction routes too
    max_body_mb: float = Field(default=16.0, gt=0)
    refresh_s: float = Field(default=0.1, gt=0, le=60)  # the routing poll (PostgreSQL: only while its NOTIFY channel is down)
    # This gateway's name among the replicas sharing the store (`rung status`, the request log's prefix).
    # Unset: <hostname>-<port>. RUNG_REPLICA overrides it.
    replica: str | None = None
    # Gateway processes on the port (SO_REUSEPORT: the kernel spreads connections across them), each a
    # replica of its own (<replica>.<i>). One process answers on one core at most; auto: one per core, up to 8.
    processes: int | Literal["auto"] = Field(default=1)
    # Threads each predict call may use (OpenMP/BLAS). One is right for a gateway: concurrency
    # comes from batching, and on a small machine multi-threaded predict of a few rows is slower.
    model_threads: int = Field(default=1, ge=1, le=256)
    # process: each loaded version predicts in a worker process of its own, so a model's Python
    # work never holds the gateway's GIL; thread: in a thread of the gateway (less memory).
    isolation: Literal["process", "thread"] = "process"
    workers: int = Field(default=1, ge=1, le=64)  # worker processes per loaded version (isolation: process)
    # Predict through a compiled route of a scikit-learn pipeline (rung.serving.compiled) when, at
    # load time, it gives the estimator's exact answers on the version's training rows.
    compile: bool = True
    # Where PyTorch and ONNX Runtime models predict: auto puts them on the GPU when the runtime sees one.
    # cuda refuses to load them where there is none; the other flavours always predict on the CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batching: BatchingSettings = Field(default_factory=BatchingSettings)

    @field_validator("processes")
    @classmethod
    def _processes(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError("serve.processes is a number from 1 to 64, or auto (one per core, up to 8)")
        return value

    def process_count(self) -> int:
        """How many gateway processes ``processes`` means on this machine."""
        if self.processes == "auto":
            return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                              AUTO_PROCESSES_MAX))
        return int(self.processes)

    @field_validator("replica")
    @classmethod
    def _replica(cls, value: str | None) -> str | None:
        if value is not None and (not REPLICA_ID.match(value) or value in (".", "..")):
            raise ValueError("a replica id (serve.replica or RUNG_REPLICA) is 1 to 100 letters, digits, '.', '_' or '-' "
                             "and not '.' or '..': it names a folder")
        return value


class UiSettings(Section):
    """``rung ui``: the operations dashboard."""

    host: str = "127.0.0.1"
    port: int = Field(default=8701, ge=1, le=65535)
    read: Literal["open", "token"] = "open"  # token: every page needs a viewer token too
    mlflow_url: str | None = None  # the MLflow UI, for links to run details (e.g. http://127.0.0.1:5000)
    refresh_s: float = Field(default=3.0, gt=0, le=3600)  # how often open pages look for new events
