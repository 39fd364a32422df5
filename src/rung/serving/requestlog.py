"""The gateway's request log: every answer (and shadow answer) recorded off the request path.

Records go to a bounded in-memory queue; a background thread writes them to
the metadata store in batches every ``flush_s``. A request never waits for
the store: when the queue is full, records are dropped and counted
(``rung_request_log_dropped_total``), never silently. Stopping flushes what
is queued. The controller judges rollouts from this log, feedback joins it
by request id, and ``rung history --request ID`` reads it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from rung.store import MetadataStore

__all__ = ["RequestLog"]

log = logging.getLogger(__name__)


class RequestLog:
    def __init__(self, store: MetadataStore, *, capacity: int = 100_000, flush_s: float = 0.25,
                 on_drop: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.capacity = capacity
        self.flush_s = flush_s
        self.on_drop = on_drop or (lambda n: None)
        self._queue: deque[dict[str, Any]] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rung-request-log", daemon=True)
        self.dropped = 0

    def start(self) -> None:
        self._thread.start()

    def record(self, request_id: str, model: str, version: int, variant: str, *, status: int, latency_s: float,
               prediction: Any = None, score: Any = None, shadow: bool = False) -> None:
        """Queue one record (called on the event loop: an append, nothing more)."""
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            self.on_drop(1)
            return
        self._queue.append({
            "request_id": request_id, "time": datetime.now(timezone.utc), "model": model, "version": version,
            "variant": variant, "shadow": shadow, "status": status, "latency_ms": latency_s * 1000.0,
            "prediction": None if prediction is None else str(prediction)[:200],
            "score": None if score is None else float(score),
        })

    def flush(self) -> int:
        batch = []
        while self._queue and len(batch) < 5000:
            batch.append(self._queue.popleft())
        if batch:
            try:
                self.store.log_requests(batch)
            except Exception:  # the store is away: count the loss, keep serving
                log.exception("request log: %d records lost", len(batch))
                self.dropped += len(batch)
                self.on_drop(len(batch))
        return len(batch)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            while self.flush() >= 5000:
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        while self.flush():
            pass
